//! TLS on client and peer URLs, driven by the real etcdctl with `--cacert/--cert/--key` and
//! compared with etcd 3.4 started with the same flags: client-certificate auth, the clients it
//! refuses (no certificate, another CA, expired, revoked through `--client-crl-file`), a
//! three-member cluster with TLS between peers, auto TLS, the start-up errors of an `https://`
//! URL without a certificate, and the certificates certs/make-certs.sh makes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ketch_tests::{
    compare_scenario, BackgroundCtl, ClientTls, Cluster, CtlOutput, Kind, Server, ServerBuilder,
    TestCerts,
};

const WAIT: Duration = Duration::from_secs(20);

/// A member serving clients on `https://` with client certificates required, reached by the
/// harness as `client`.
fn tls_member(kind: Kind, certs: &TestCerts, extra: &[String]) -> ServerBuilder {
    let mut b = Server::builder(kind).client_tls(certs.client(Some("client")));
    for flag in certs
        .client_auth_flags()
        .into_iter()
        .chain(extra.iter().cloned())
    {
        b = b.arg(flag);
    }
    b
}

/// etcdctl against `server`'s https URL as the client `tls` (not the harness's own client).
fn ctl_as(server: &Server, tls: &ClientTls, args: &[&str]) -> CtlOutput {
    let mut all = tls.etcdctl_flags();
    all.extend(args.iter().map(|s| s.to_string()));
    ketch_tests::Etcdctl::new(&server.client_url()).run(&all)
}

#[test]
fn etcdctl_with_a_client_certificate_puts_gets_and_watches() {
    let certs = TestCerts::generate();
    compare_scenario(
        |kind| tls_member(kind, &certs, &[]),
        |s| {
            let ctl = s.etcdctl();
            let mut runs = vec![
                ctl.run(&["put", "k1", "v1"]),
                ctl.run(&["put", "k2", "v2"]),
                ctl.run(&["get", "k", "--prefix", "-w", "json"]),
                ctl.run(&["get", "k1"]),
                // etcdctl 3.4 dials an endpoint given with its scheme with the whole URL as
                // :authority; over TLS the fix sits inside the TLS stream
                ctl.run(&["endpoint", "health"]),
                ctl.run(&["endpoint", "status", "-w", "json"]),
            ];
            let mut watch_args = s.client_tls().expect("tls").etcdctl_flags();
            watch_args.extend(["watch", "k", "--prefix", "--rev=1"].map(String::from));
            let watch = BackgroundCtl::spawn(&s.client_url(), &watch_args, &[]);
            watch.wait_stdout(WAIT, |out| out.matches("PUT").count() >= 2);
            runs.push(watch.kill());
            runs
        },
    );
}

#[test]
fn refused_client_certificates_fail_in_etcdctl_as_against_etcd() {
    let certs = TestCerts::generate();
    let crl = format!("--client-crl-file={}", certs.path("crl.pem"));
    let comparison = compare_scenario(
        |kind| tls_member(kind, &certs, std::slice::from_ref(&crl)),
        |s| {
            let put = ["--command-timeout=2s", "--dial-timeout=1s", "put", "k", "v"];
            let mut runs = vec![];
            for who in [None, Some("foreign"), Some("expired"), Some("revoked")] {
                runs.push(ctl_as(s, &certs.client(who), &put));
            }
            // the CRL does not block the others
            runs.push(ctl_as(s, &certs.client(Some("client")), &put));
            runs
        },
    );
    for (i, run) in comparison.ketch.iter().enumerate().take(4) {
        assert!(
            !run.success(),
            "refused case {i} succeeded: {}",
            run.transcript()
        );
    }
    assert!(
        comparison.ketch[4].success(),
        "{}",
        comparison.ketch[4].transcript()
    );
}

#[test]
fn three_members_with_tls_peers_form_a_cluster_and_replicate() {
    let certs = TestCerts::generate();
    let mut cluster = Cluster::start_custom(Kind::Ketch, 3, true, |b| {
        let mut b = b.client_tls(certs.client(Some("client")));
        for flag in certs
            .peer_auth_flags()
            .into_iter()
            .chain(certs.client_auth_flags())
        {
            b = b.arg(flag);
        }
        b
    });
    cluster.wait_leader(WAIT);
    let first = cluster.members[0].etcdctl();
    first.run(&["put", "replicated", "yes"]).assert_success();
    let list = first.run(&["member", "list", "-w", "json"]);
    list.assert_success();
    let members = list.json()["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 3, "{}", list.transcript());
    for m in &members {
        let url = m["peerURLs"][0].as_str().unwrap_or("");
        assert!(url.starts_with("https://127.0.0.1:"), "peer URL {url}");
    }
    // every member serves the write locally (serializable reads see what was applied there)
    for member in &cluster.members[1..] {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = member.etcdctl().run(&[
                "get",
                "replicated",
                "--print-value-only",
                "--consistency=s",
            ]);
            if got.stdout_str() == "yes\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not replicated to {}: {}",
                member.name(),
                got.transcript()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // a linearizable read through a follower goes through the leader over TLS
    let last = cluster.members[2].etcdctl();
    let got = last.run(&["get", "replicated", "--print-value-only"]);
    assert_eq!(got.stdout_str(), "yes\n", "{}", got.transcript());
}

#[test]
fn the_peer_port_refuses_clients_without_a_certificate_from_the_ca() {
    let certs = TestCerts::generate();
    let mut b = Server::builder(Kind::Ketch).peer_https();
    for flag in certs.peer_auth_flags() {
        b = b.arg(flag);
    }
    let server = b.start();
    let peer = ([127, 0, 0, 1], server.peer_port()).into();
    for who in [None, Some("foreign"), Some("expired")] {
        let probe =
            ketch_tests::tls::https_get(peer, "/", &certs.client(who), Duration::from_secs(5));
        assert!(probe.is_err(), "peer port answered {who:?}: {probe:?}");
    }
    // and etcd's line for each refusal
    let deadline = Instant::now() + WAIT;
    while server
        .current_log()
        .matches("rejected connection from")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "refusals not logged:\n{}",
            server.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn auto_tls_serves_etcdctl_with_insecure_skip_tls_verify() {
    compare_scenario(
        |kind| {
            Server::builder(kind)
                .client_tls(ClientTls::insecure())
                .peer_https()
                .arg("--auto-tls")
                .arg("--peer-auto-tls")
        },
        |s| {
            let ctl = s.etcdctl();
            let runs = vec![
                ctl.run(&["put", "a", "1"]),
                ctl.run(&["get", "a", "-w", "json"]),
                ctl.run(&["member", "list", "-w", "json"]),
            ];
            for side in ["client", "peer"] {
                for file in ["cert.pem", "key.pem"] {
                    let path = s.data_dir().join("fixtures").join(side).join(file);
                    assert!(
                        path.exists(),
                        "{} made no {}",
                        s.kind().label(),
                        path.display()
                    );
                }
            }
            runs
        },
    );
}

/// Starts `binary` with `args`, expects it to exit within the time limit, returns (exit code,
/// combined output).
fn run_to_exit(kind: Kind, args: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all = vec![format!("--data-dir={}", dir.path().join("data").display())];
    all.extend(args.iter().cloned());
    let mut child = Command::new(kind.binary())
        .args(&all)
        .current_dir(dir.path())
        .env_remove("ETCD_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            return (status.code(), text);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{} did not exit within {WAIT:?}:\n{}",
                kind.label(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn https_urls_without_a_certificate_stop_the_start_with_etcds_messages() {
    let (c, p) = ketch_tests::server::two_free_ports();
    let base = |client: &str, peer: &str| {
        vec![
            format!("--listen-client-urls={client}://127.0.0.1:{c}"),
            format!("--advertise-client-urls={client}://127.0.0.1:{c}"),
            format!("--listen-peer-urls={peer}://127.0.0.1:{p}"),
            format!("--initial-advertise-peer-urls={peer}://127.0.0.1:{p}"),
            format!("--initial-cluster=default={peer}://127.0.0.1:{p}"),
        ]
    };
    let cases = [
        (
            base("https", "http"),
            format!("TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:{c} with HTTPS scheme"),
        ),
        (base("http", "https"), format!("cannot listen on TLS for 127.0.0.1:{p}: KeyFile and CertFile are not presented")),
        (
            [base("http", "http"), vec!["--cipher-suites=TLS_NOPE".into()]].concat(),
            "unexpected TLS cipher suite \"TLS_NOPE\"".into(),
        ),
    ];
    for (args, message) in cases {
        for kind in [Kind::Etcd, Kind::Ketch] {
            let (code, out) = run_to_exit(kind, &args);
            assert_eq!(code, Some(1), "{} {args:?}:\n{out}", kind.label());
            assert!(
                out.contains(&message),
                "{} {args:?}: no {message:?} in\n{out}",
                kind.label()
            );
        }
    }
}

#[test]
fn certificates_from_make_certs_sh_work_and_revocation_takes_effect() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/make-certs.sh");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    let made = Command::new("sh")
        .arg(&script)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run make-certs.sh (needs openssl)");
    assert!(
        made.status.success(),
        "make-certs.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let p = |name: &str| out.join(name);
    let client = ClientTls {
        ca: Some(p("ca.pem")),
        cert: Some((p("client.pem"), p("client.key"))),
        skip_verify: false,
    };
    // revoke the client certificate, then start with the CRL: the client is refused, and a new
    // client certificate from the same CA is accepted
    let revoke = Command::new("sh")
        .arg(&script)
        .arg("-o")
        .arg(&out)
        .args(["revoke", "client"])
        .output()
        .expect("revoke");
    assert!(
        revoke.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    std::fs::rename(p("client.pem"), p("old-client.pem")).expect("rename");
    std::fs::rename(p("client.key"), p("old-client.key")).expect("rename");
    let again = Command::new("sh")
        .arg(&script)
        .arg("-o")
        .arg(&out)
        .args(["-c", "alice"])
        .output()
        .expect("rerun");
    assert!(
        again.status.success(),
        "rerun: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let path = |name: &str| p(name).display().to_string();
    let server = Server::builder(Kind::Ketch)
        .client_tls(client.clone())
        .peer_https()
        .arg(format!("--cert-file={}", path("server.pem")))
        .arg(format!("--key-file={}", path("server.key")))
        .arg(format!("--trusted-ca-file={}", path("ca.pem")))
        .arg("--client-cert-auth")
        .arg(format!("--client-crl-file={}", path("crl.pem")))
        .arg(format!("--peer-cert-file={}", path("peer.pem")))
        .arg(format!("--peer-key-file={}", path("peer.key")))
        .arg(format!("--peer-trusted-ca-file={}", path("ca.pem")))
        .arg("--peer-client-cert-auth")
        .start();
    server.etcdctl().run(&["put", "x", "1"]).assert_success();
    let old = ClientTls {
        cert: Some((p("old-client.pem"), p("old-client.key"))),
        ..client
    };
    let refused = ctl_as(
        &server,
        &old,
        &["--command-timeout=2s", "--dial-timeout=1s", "get", "x"],
    );
    assert!(
        !refused.success(),
        "revoked certificate accepted: {}",
        refused.transcript()
    );
}

#[test]
fn http_and_https_client_urls_can_be_mixed() {
    let certs = TestCerts::generate();
    let (tls_port, peer_port) = ketch_tests::server::two_free_ports();
    let (plain_port, _) = ketch_tests::server::two_free_ports();
    let urls = format!("https://127.0.0.1:{tls_port},http://127.0.0.1:{plain_port}");
    let mut b = Server::builder(Kind::Ketch)
        .cluster_member(
            (tls_port, peer_port),
            &format!("m1=http://127.0.0.1:{peer_port}"),
        )
        .client_tls(certs.client(Some("client")));
    for flag in certs.client_auth_flags() {
        b = b.arg(flag);
    }
    // later flags win, as with Go's flag package
    let server = b
        .arg(format!("--listen-client-urls={urls}"))
        .arg(format!("--advertise-client-urls={urls}"))
        .start();
    server
        .etcdctl()
        .run(&["put", "over", "tls"])
        .assert_success();
    let plain = ketch_tests::Etcdctl::new(&format!("127.0.0.1:{plain_port}"));
    let got = plain.run(&["get", "over", "--print-value-only"]);
    assert_eq!(got.stdout_str(), "tls\n", "{}", got.transcript());
    let log = server.current_log();
    assert!(
        log.contains(&format!("serving client requests on 127.0.0.1:{tls_port}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("serving insecure client requests on 127.0.0.1:{plain_port}, this is strongly discouraged!")),
        "{log}"
    );
}
