//! The per-host proxy in front of a three-member cluster, driven by the real etcdctl: the same
//! answers as a member gives, read-only mode, a member dying under it, a member joining later,
//! and a restart from what it learnt into its data dir.

use std::time::{Duration, Instant};

use ketch_tests::normalize::{normalize, Ports};
use ketch_tests::proxy::ProxyProcess;
use ketch_tests::server::two_free_ports;
use ketch_tests::{
    http_get, http_request, BackgroundCtl, Cluster, CtlOutput, Etcdctl, Kind, Server,
};

const WAIT: Duration = Duration::from_secs(20);

fn proxy_for(c: &Cluster, mode: &str, extra: &[&str]) -> ProxyProcess {
    let mut args = vec![
        format!("--proxy={mode}"),
        format!("--initial-cluster={}", c.initial_cluster()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyProcess::start(&args)
}

fn ok(ctl: &Etcdctl, args: &[&str]) -> CtlOutput {
    let out = ctl.run(args);
    out.assert_success();
    out
}

/// What a command prints through the proxy and straight from a member, normalised (ids,
/// terms, ports), must be the same.
fn same_through_proxy(proxy: &ProxyProcess, member: &Server, args: &[&str]) {
    let via = proxy.etcdctl().run(args);
    let direct = member.etcdctl().run(args);
    // (the member's own port is written as a placeholder in both)
    let ports = Ports {
        client: member.client_port(),
        peer: 0,
    };
    let (a, b) = (normalize(&via, ports), normalize(&direct, ports));
    assert!(
        a == b,
        "{args:?} differs through the proxy:\n--- proxy\n{}\n--- member\n{}",
        a.transcript(),
        b.transcript()
    );
}

#[test]
fn etcdctl_through_the_proxy_answers_as_a_member_does() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let proxy = proxy_for(&c, "on", &[]);
    let ctl = proxy.etcdctl();
    let watch = BackgroundCtl::spawn(&proxy.endpoint(), &["watch", "--prefix", "k"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        assert_eq!(
            ok(&ctl, &["put", &format!("k{i:02}"), &format!("v{i}")]).stdout_str(),
            "OK\n"
        );
    }
    ok(&ctl, &["del", "k00", "--prev-kv"]);
    let txn = ctl.run_stdin(
        &["txn"],
        "value(\"k01\") = \"v1\"\n\nput k01 changed\n\nput k01 other\n\n",
    );
    assert_eq!(txn.stdout_str(), "SUCCESS\n\nOK\n", "{}", txn.transcript());
    let m = &c.members[0];
    for args in [
        &["get", "k", "--prefix", "-w", "json"][..],
        &[
            "get",
            "k",
            "--prefix",
            "--limit",
            "3",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
        ],
        &["get", "k05", "--rev", "3"],
        &["get", "k", "--prefix", "--count-only", "-w", "fields"],
        &["member", "list", "-w", "table"],
        &["put", "", "empty key"],
        &["get", "k01", "--rev", "99999"],
    ] {
        same_through_proxy(&proxy, m, args);
    }
    // leases, locks and elections work through it
    let granted = ok(&ctl, &["lease", "grant", "60"]).stdout_str();
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    ok(&ctl, &["put", "--lease", &lease, "leased", "x"]);
    let ttl = ok(&ctl, &["lease", "timetolive", &lease, "--keys"]).stdout_str();
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(ok(&ctl, &["lease", "keep-alive", "--once", &lease])
        .stdout_str()
        .contains("keepalived with TTL(60)"));
    assert_eq!(
        ok(&ctl, &["lock", "a-lock", "--", "echo", "held"]).stdout_str(),
        "held\n"
    );
    let elect = BackgroundCtl::spawn(&proxy.endpoint(), &["elect", "an-election", "me"], &[]);
    elect.wait_stdout(WAIT, |o| o.contains("me"));
    drop(elect);
    // the watch saw every put, the delete and the txn's put, in order
    watch.wait_stdout(WAIT, |o| o.contains("changed"));
    let seen = watch.kill().stdout_str();
    let events: Vec<&str> = seen
        .lines()
        .filter(|l| *l == "PUT" || *l == "DELETE")
        .collect();
    assert_eq!(events.len(), 22, "{seen}");
    // HTTP goes through as well
    let version = http_get(proxy.addr(), "/version", Duration::from_secs(5)).unwrap();
    assert_eq!(version.status, 200);
    assert!(
        version.body_str().contains("etcdcluster"),
        "{}",
        version.body_str()
    );
}

#[test]
fn a_readonly_proxy_refuses_every_write_and_serves_every_read() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    ok(&c.members[0].etcdctl(), &["put", "k", "v"]);
    let proxy = proxy_for(&c, "readonly", &[]);
    let ctl = proxy.etcdctl();
    let refusals: Vec<(Vec<&str>, &str)> = vec![
        (vec!["put", "k", "x"], ""),
        (vec!["del", "k"], ""),
        (vec!["txn"], "\n\nput k x\n\n"),
        (vec!["compaction", "1"], ""),
        (vec!["lease", "grant", "10"], ""),
        (vec!["lease", "revoke", "1234"], ""),
        (vec!["lease", "keep-alive", "--once", "1234"], ""),
        (
            vec!["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
            "",
        ),
        (vec!["defrag"], ""),
        (vec!["lock", "l", "--", "true"], ""),
    ];
    for (args, stdin) in refusals {
        let out = ctl
            .clone()
            .timeout(Duration::from_secs(20))
            .run_with_stdin(&args, (!stdin.is_empty()).then_some(stdin.as_bytes()));
        assert!(
            !out.success(),
            "{args:?} went through a read-only proxy:\n{}",
            out.transcript()
        );
        assert!(
            out.stderr_str().contains("read-only"),
            "{args:?}: {}",
            out.transcript()
        );
    }
    assert_eq!(
        ok(&ctl, &["get", "k", "--print-value-only"]).stdout_str(),
        "v\n"
    );
    let read_txn = ctl.run_stdin(&["txn"], "\nget k\n\n\n");
    assert_eq!(
        read_txn.stdout_str(),
        "SUCCESS\n\nk\nv\n",
        "{}",
        read_txn.transcript()
    );
    ok(&ctl, &["member", "list"]);
    ok(&ctl, &["endpoint", "status"]);
    ok(&ctl, &["endpoint", "health"]);
    let watch = BackgroundCtl::spawn(&proxy.endpoint(), &["watch", "k"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    ok(&c.members[1].etcdctl(), &["put", "k", "from a member"]);
    watch.wait_stdout(WAIT, |o| o.contains("from a member"));
    // HTTP: anything but GET is 501 with an empty body
    let post = http_request(
        proxy.addr(),
        "POST",
        "/v3/kv/put",
        r#"{"key":"aw==","value":"eA=="}"#,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!((post.status, post.body.len()), (501, 0));
    assert_eq!(
        http_get(proxy.addr(), "/health", Duration::from_secs(5))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        ok(&c.members[0].etcdctl(), &["get", "k", "--print-value-only"]).stdout_str(),
        "from a member\n"
    );
}

#[test]
fn reads_writes_and_watches_continue_when_a_member_dies() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, _) = c.wait_leader(WAIT);
    let proxy = proxy_for(
        &c,
        "on",
        &["--proxy-failure-wait=2000", "--proxy-dial-timeout=500"],
    );
    let deadline = Instant::now() + WAIT;
    while proxy.endpoints().len() < 3 {
        // (a member that has not published its client URLs yet is picked up within a second)
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            proxy.endpoints(),
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ctl = proxy.etcdctl();
    for i in 0..10 {
        ok(&ctl, &["put", &format!("before{i}"), "1"]);
    }
    let watch = BackgroundCtl::spawn(&proxy.endpoint(), &["watch", "--prefix", "after"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    // a follower dies: the quorum stays, the proxy must route around it
    let victim = (leader + 1) % 3;
    let victim_url = c.members[victim].client_url();
    c.members[victim].kill9();
    let started = Instant::now();
    for i in 0..20 {
        ok(&ctl, &["put", &format!("after{i:02}"), "2"]);
        assert_eq!(
            ok(
                &ctl,
                &["get", &format!("before{}", i % 10), "--print-value-only"]
            )
            .stdout_str(),
            "1\n"
        );
    }
    assert!(
        started.elapsed() < WAIT,
        "40 calls took {:?}",
        started.elapsed()
    );
    assert!(
        !proxy.endpoints().contains(&victim_url) || proxy.log().contains("unavailable"),
        "the dead member was never marked: {:?}",
        proxy.endpoints()
    );
    // the watch (wherever it was) resumes and misses nothing
    watch.wait_stdout(WAIT, |o| o.contains("after19"));
    let seen = watch.kill().stdout_str();
    let keys: Vec<&str> = seen.lines().filter(|l| l.starts_with("after")).collect();
    let want: Vec<String> = (0..20).map(|i| format!("after{i:02}")).collect();
    assert_eq!(keys, want, "each event once, in order:\n{seen}");
    // the member comes back and is used again after the failure wait
    c.members[victim].restart();
    let deadline = Instant::now() + WAIT;
    while !proxy.endpoints().contains(&victim_url) {
        assert!(
            Instant::now() < deadline,
            "the restarted member is not used again: {:?}\n{}",
            proxy.endpoints(),
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_proxy_follows_membership_and_restarts_from_its_data_dir() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let mut proxy = proxy_for(&c, "on", &["--proxy-refresh-interval=300"]);
    let deadline = Instant::now() + WAIT;
    while proxy.endpoints().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", proxy.endpoints());
        std::thread::sleep(Duration::from_millis(100));
    }
    // a fourth member joins; the next refresh adds it
    let ports = two_free_ports();
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let ctl = c.members[0].etcdctl().timeout(Duration::from_secs(15));
    let deadline = Instant::now() + WAIT;
    loop {
        let out = ctl.run(&["member", "add", "m4", &format!("--peer-urls={peer}")]);
        if out.success() {
            break;
        }
        assert!(
            out.stderr_str().contains("unhealthy cluster") && Instant::now() < deadline,
            "{}",
            out.transcript()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let initial = format!("{},m4={peer}", c.initial_cluster());
    let m4 = Server::builder(Kind::Ketch)
        .name("m4")
        .cluster_member(ports, &initial)
        .joining()
        .start();
    let deadline = Instant::now() + WAIT;
    while !proxy.endpoints().contains(&m4.client_url()) {
        assert!(
            Instant::now() < deadline,
            "m4 never reached the proxy: {:?}",
            proxy.endpoints()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = std::fs::read_to_string(proxy.data_dir().join("proxy/cluster")).unwrap();
    assert!(
        file.starts_with("{\"PeerURLs\":[") && file.contains(&peer),
        "{file}"
    );
    // restarted without --initial-cluster, it knows the cluster from its data dir
    proxy.restart_with(&["--proxy=on"]);
    assert_eq!(proxy.endpoints().len(), 4, "{:?}", proxy.endpoints());
    ok(&proxy.etcdctl(), &["put", "after-restart", "1"]);
    assert_eq!(
        ok(
            &m4.etcdctl(),
            &["get", "after-restart", "--print-value-only"]
        )
        .stdout_str(),
        "1\n"
    );
}

#[test]
fn the_l4_gateway_passes_etcdctl_through_and_skips_a_dead_member() {
    use ketch_tests::proxy::GatewayProcess;
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, _) = c.wait_leader(WAIT);
    let endpoints = c
        .members
        .iter()
        .map(|m| m.endpoint())
        .collect::<Vec<_>>()
        .join(",");
    let gw = GatewayProcess::start(&endpoints, &["--retry-delay=1s"]);
    let ctl = gw.etcdctl();
    ok(&ctl, &["put", "through", "gateway"]);
    assert_eq!(
        ok(&ctl, &["get", "through", "--print-value-only"]).stdout_str(),
        "gateway\n"
    );
    let dead = (leader + 1) % 3;
    c.members[dead].kill9();
    // every connection finds a live member, whichever the turn falls on
    for i in 0..6 {
        ok(&ctl, &["put", &format!("after{i}"), "x"]);
    }
    assert!(gw.log().contains("deactivated endpoint"), "{}", gw.log());
    c.members[dead].restart();
    let deadline = Instant::now() + WAIT;
    // (": activated", not "deactivated")
    while !gw.log().contains(&format!(
        ": activated endpoint [{}]",
        c.members[dead].endpoint()
    )) {
        assert!(
            Instant::now() < deadline,
            "the restarted member was not taken back:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three members requiring client certificates on client and peer URLs (and `extra` flags),
/// with a leader.
fn tls_cluster(certs: &ketch_tests::tls::TestCerts, extra: &[&str]) -> Cluster {
    let mut c = Cluster::start_custom(Kind::Ketch, 3, true, |b| {
        let mut b = b.client_tls(certs.client(Some("client")));
        for flag in certs
            .peer_auth_flags()
            .into_iter()
            .chain(certs.client_auth_flags())
        {
            b = b.arg(flag);
        }
        for flag in extra {
            b = b.arg(*flag);
        }
        b
    });
    c.wait_leader(WAIT);
    c
}

/// A proxy with an https listener requiring client certificates, in front of `c`; its own
/// certificate (server.pem) serves its listener and identifies it to the members.
fn tls_proxy(certs: &ketch_tests::tls::TestCerts, c: &Cluster) -> ProxyProcess {
    let mut args = vec![
        "--proxy=on".to_string(),
        format!("--initial-cluster={}", c.initial_cluster()),
    ];
    args.extend(certs.client_auth_flags());
    args.extend(certs.peer_auth_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyProcess::start_tls(&args, certs.client(Some("client")))
}

/// The user's line: a proxy on every host with TLS and client-certificate auth on its listener,
/// in front of members that require client certificates on their client and peer URLs.
#[test]
fn a_tls_proxy_with_client_cert_auth_in_front_of_a_tls_cluster() {
    use ketch_tests::tls::TestCerts;
    let certs = TestCerts::generate();
    let c = tls_cluster(&certs, &[]);
    let proxy = tls_proxy(&certs, &c);
    let ctl = proxy.etcdctl();
    assert_eq!(ok(&ctl, &["put", "secure", "yes"]).stdout_str(), "OK\n");
    assert_eq!(
        ok(&ctl, &["get", "secure", "--print-value-only"]).stdout_str(),
        "yes\n"
    );
    let ep = format!("https://{}", proxy.endpoint());
    let mut watch_args = certs.client(Some("client")).etcdctl_flags();
    watch_args.extend(["watch", "secure", "--rev=1"].map(str::to_string));
    let watch = BackgroundCtl::spawn(&ep, &watch_args, &[]);
    watch.wait_stdout(WAIT, |o| o.contains("yes"));
    drop(watch);
    // refused at the proxy: no client certificate, one from another CA, an expired one
    for cert in [None, Some("foreign"), Some("expired")] {
        let out = Etcdctl::new(&ep)
            .global_flags(certs.client(cert).etcdctl_flags())
            .run(&["--command-timeout=2s", "get", "secure"]);
        assert!(!out.success(), "{cert:?} was let in:\n{}", out.transcript());
    }
    let m = &c.members[0];
    assert_eq!(
        ok(&m.etcdctl(), &["get", "secure", "--print-value-only"]).stdout_str(),
        "yes\n"
    );
}

/// With auth on, a member that trusts the proxy's certificate takes the user from the client's
/// certificate at the proxy (the proxy passes its name on); one that does not trust it sees
/// only the proxy, which is no user.
#[test]
fn through_a_trusted_proxy_the_clients_certificate_name_is_the_user() {
    use ketch_tests::tls::TestCerts;
    let certs = TestCerts::generate();
    // the proxy presents server.pem, whose name is ketch-tests-member
    let c = tls_cluster(
        &certs,
        &["--experimental-trusted-proxy-cn=ketch-tests-member"],
    );
    let direct = c.members[0].etcdctl();
    ok(&direct, &["user", "add", "root:rootpw"]);
    ok(&direct, &["auth", "enable"]);
    // the client's certificate (client.pem) is named root: through the proxy it acts as root
    let proxy = tls_proxy(&certs, &c);
    let ctl = proxy.etcdctl();
    assert_eq!(ok(&ctl, &["put", "as-root", "yes"]).stdout_str(), "OK\n");
    assert_eq!(ok(&ctl, &["user", "list"]).stdout_str(), "root\n");
    assert_eq!(
        ok(&direct, &["get", "as-root", "--print-value-only"]).stdout_str(),
        "yes\n"
    );
}
