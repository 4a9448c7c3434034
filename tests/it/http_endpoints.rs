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

/// `/metrics`: every metric Ketch exposes is one etcd exposes under the same name and type,
/// and the values say what a single healthy member is.
#[test]
fn metrics_use_etcds_names_and_types() {
    let (k, e) = both("/metrics");
    assert_eq!((k.status, e.status), (200, 200));
    let types = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let (ours, etcds) = (types(&k.body_str()), types(&e.body_str()));
    assert!(ours.len() >= 10, "{}", k.body_str());
    for m in &ours {
        assert!(etcds.contains(m), "{m:?} is not one of etcd's metrics");
    }
    let value = |name: &str| {
        k.body_str()
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(value("etcd_server_has_leader"), "1");
    assert_eq!(value("etcd_server_is_leader"), "1");
    assert_eq!(value("etcd_server_leader_changes_seen_total"), "1");
}
