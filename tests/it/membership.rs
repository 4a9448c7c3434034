//! Membership changes with the real etcdctl: add (voter and learner), join with
//! `--initial-cluster-state existing`, promote, update, remove (the removed member stops), and
//! etcd's refusals. Runs on ketch, or on etcd with `KETCH_TESTS_TARGET=etcd`.

use std::time::{Duration, Instant};

use ketch_tests::server::two_free_ports;
use ketch_tests::{Cluster, Kind, Server};

const WAIT: Duration = Duration::from_secs(20);

fn member_id_of(list: &str, peer_url: &str) -> String {
    list.lines()
        .find(|l| l.contains(peer_url))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{peer_url} not in member list:\n{list}"))
        .to_string()
}

/// `member add`, retried while etcd's rule refuses it: a peer counts as healthy only once
/// connected for 5 s, so right after a start or join an add answers "unhealthy cluster".
fn member_add(ctl: &ketch_tests::Etcdctl, args: &[&str]) -> ketch_tests::CtlOutput {
    let deadline = Instant::now() + WAIT;
    let mut full = vec!["member", "add"];
    full.extend_from_slice(args);
    loop {
        let out = ctl.run(&full);
        if out.success() || !out.stderr_str().contains("etcdserver: unhealthy cluster") {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "member add refused for {WAIT:?}: {}",
            out.transcript()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn add_join_promote_update_and_remove() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let ctl = c.members[0].etcdctl().timeout(Duration::from_secs(15));
    ctl.run(&["put", "before-join", "1"]).assert_success();

    // a voter joins
    let ports = two_free_ports();
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let added = member_add(&ctl, &["m4", &format!("--peer-urls={peer}")]);
    added.assert_success();
    let out = added.stdout_str();
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = format!("{},m4={peer}", c.initial_cluster());
    assert!(
        out.contains(&format!("ETCD_INITIAL_CLUSTER=\"{}\"", initial))
            || out.contains("ETCD_INITIAL_CLUSTER="),
        "{out}"
    );
    let m4 = Server::builder(Kind::Ketch)
        .name("m4")
        .cluster_member(ports, &initial)
        .joining()
        .start();
    let got = m4
        .etcdctl()
        .run(&["get", "before-join", "--print-value-only"]);
    assert_eq!(got.stdout_str(), "1\n", "{}", got.transcript());
    // m4 publishes its name once it serves clients; that reaches m1 through the log
    let want = format!(", started, m4, {peer}, {}, false", m4.client_url());
    let deadline = Instant::now() + WAIT;
    loop {
        let list = ctl.run(&["member", "list"]).stdout_str();
        if list.contains(&want) {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.members.push(m4);

    // a learner that never starts cannot be promoted; a second learner is refused
    let lport = two_free_ports().1;
    let lpeer = format!("http://127.0.0.1:{lport}");
    member_add(&ctl, &["l5", "--learner", &format!("--peer-urls={lpeer}")]).assert_success();
    let list = ctl.run(&["member", "list"]).stdout_str();
    assert!(
        list.contains(&format!(", unstarted, , {lpeer}, , true")),
        "{list}"
    );
    let learner = member_id_of(&list, &lpeer);
    ctl.run(&["member", "promote", &learner])
        .assert_failure_contains(
            "etcdserver: can only promote a learner member which is in sync with leader",
        );
    ctl.run(&[
        "member",
        "add",
        "l6",
        "--learner",
        &format!("--peer-urls=http://127.0.0.1:{}", two_free_ports().1),
    ])
    .assert_failure_contains("etcdserver: too many learner members in cluster");
    // its peer URL can be changed, and then it is removed
    let moved = format!("http://127.0.0.1:{}", two_free_ports().1);
    ctl.run(&[
        "member",
        "update",
        &learner,
        &format!("--peer-urls={moved}"),
    ])
    .assert_success();
    assert!(ctl.run(&["member", "list"]).stdout_str().contains(&moved));
    ctl.run(&["member", "remove", &learner]).assert_success();

    // refusals
    let m1_peer = c.members[0].peer_url();
    ctl.run(&["member", "add", "dup", &format!("--peer-urls={m1_peer}")])
        .assert_failure_contains("etcdserver: Peer URLs already exists");
    ctl.run(&["member", "remove", "1234abcd"])
        .assert_failure_contains("etcdserver: member not found");
    let list = ctl.run(&["member", "list"]).stdout_str();
    let m1 = member_id_of(&list, &m1_peer);
    ctl.run(&["member", "promote", &m1])
        .assert_failure_contains("etcdserver: can only promote a learner member");

    // removing m4 stops it
    let m4_id = member_id_of(&list, &peer);
    ctl.run(&["member", "remove", &m4_id]).assert_success();
    let deadline = Instant::now() + WAIT;
    while c.members[3].is_running() {
        assert!(Instant::now() < deadline, "a removed member kept running");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ctl.run(&["member", "list"]).stdout_str().lines().count(), 3);
    ctl.run(&["put", "after-remove", "1"]).assert_success();
}

#[test]
fn a_learner_serves_only_serializable_reads_and_status_until_promoted() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let ctl = c.members[0].etcdctl().timeout(Duration::from_secs(15));
    ctl.run(&["put", "k", "v"]).assert_success();
    let ports = two_free_ports();
    let peer = format!("http://127.0.0.1:{}", ports.1);
    member_add(&ctl, &["l4", "--learner", &format!("--peer-urls={peer}")]).assert_success();
    let initial = format!("{},l4={peer}", c.initial_cluster());
    let learner = Server::builder(Kind::Ketch)
        .name("l4")
        .cluster_member(ports, &initial)
        .joining()
        .start();
    let lctl = learner.etcdctl().timeout(Duration::from_secs(15));
    // a serializable read is served once the learner has caught up
    let deadline = Instant::now() + WAIT;
    while lctl
        .run(&["get", "k", "--consistency=s", "--print-value-only"])
        .stdout_str()
        != "v\n"
    {
        assert!(Instant::now() < deadline, "learner did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    lctl.run(&["endpoint", "status"]).assert_success();
    for args in [
        vec!["put", "k", "x"],
        vec!["get", "k"],
        vec!["member", "list"],
        vec!["compaction", "1"],
    ] {
        lctl.run(&args)
            .assert_failure_contains("etcdserver: rpc not supported for learner");
    }
    // caught up: it can be promoted, and then serves everything
    let list = ctl.run(&["member", "list"]).stdout_str();
    let id = member_id_of(&list, &peer);
    ctl.run(&["member", "promote", &id]).assert_success();
    let deadline = Instant::now() + WAIT;
    while !lctl.run(&["put", "k", "from-promoted"]).success() {
        assert!(
            Instant::now() < deadline,
            "promoted member still refuses writes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
