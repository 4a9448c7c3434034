//! `/health` and `/version` on the client port, compared with etcd's answers.

use std::time::Duration;

use ketch_tests::{http_get, HttpResponse, Kind, Server};

const TIMEOUT: Duration = Duration::from_secs(5);

fn both(path: &str) -> (HttpResponse, HttpResponse) {
    let mut servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let etcd = servers.pop().unwrap();
    let ketch = servers.pop().unwrap();
    let k = http_get(ketch.client_addr(), path, TIMEOUT).expect("GET from ketch");
    let e = http_get(etcd.client_addr(), path, TIMEOUT).expect("GET from etcd");
    (k, e)
}

fn content_type(r: &HttpResponse) -> Option<String> {
    r.header("content-type").map(str::to_string)
}

#[test]
fn version_endpoint_answers_like_etcd() {
    let (k, e) = both("/version");
    assert_eq!(e.status, 200);
    assert_eq!(
        e.json().unwrap(),
        serde_json::json!({"etcdserver": "3.4.23", "etcdcluster": "3.4.0"})
    );
    assert_eq!(k.status, e.status, "status of /version");
    assert_eq!(k.json().unwrap(), e.json().unwrap(), "/version JSON");
    assert_eq!(content_type(&k), content_type(&e), "/version Content-Type");
}

#[test]
fn health_endpoint_answers_like_etcd() {
    let (k, e) = both("/health");
    assert_eq!(e.status, 200);
    assert_eq!(e.json().unwrap(), serde_json::json!({"health": "true"}));
    assert_eq!(k.status, e.status, "status of /health");
    assert_eq!(k.json().unwrap(), e.json().unwrap(), "/health JSON");
    assert_eq!(content_type(&k), content_type(&e), "/health Content-Type");
}

#[test]
fn unknown_path_is_not_found_like_etcd() {
    let (k, e) = both("/no-such-path");
    assert_eq!(e.status, 404);
    assert_eq!(k.status, e.status, "status of an unknown path");
}
