//! Multi-member clusters (the seeds' three-member walkthrough): replication to every member,
//! failover when the leader is killed, the old leader catching up, and a member without a
//! quorum refusing service. Runs on ketch, or on etcd with `KETCH_TESTS_TARGET=etcd`.

use std::time::{Duration, Instant};

use ketch_tests::{Cluster, Kind};

const ELECTION: Duration = Duration::from_secs(15);

fn put(cluster: &Cluster, i: usize, key: &str, value: &str) -> bool {
    cluster.members[i]
        .etcdctl()
        .timeout(Duration::from_secs(5))
        .run(&["put", key, value, "--command-timeout=2s"])
        .success()
}

fn get_value(cluster: &Cluster, i: usize, key: &str, serializable: bool) -> Option<String> {
    let mut args = vec!["get", key, "--print-value-only", "--command-timeout=2s"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = cluster.members[i]
        .etcdctl()
        .timeout(Duration::from_secs(5))
        .run(&args);
    out.success()
        .then(|| out.stdout_str().trim_end().to_string())
}

#[test]
fn writes_on_any_member_are_read_on_every_member() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, _) = c.wait_leader(ELECTION);
    for i in 0..3 {
        assert!(
            put(&c, i, &format!("from-{i}"), &format!("v{i}")),
            "put through member {i}"
        );
    }
    for reader in 0..3 {
        for writer in 0..3 {
            assert_eq!(
                get_value(&c, reader, &format!("from-{writer}"), false).as_deref(),
                Some(format!("v{writer}").as_str()),
                "linearizable read on member {reader} (leader is {leader})"
            );
        }
    }
    // `member list` shows all three, and `endpoint status --cluster` one leader.
    let list = c.members[0].etcdctl().run(&["member", "list"]);
    list.assert_success();
    assert_eq!(
        list.stdout_str().lines().count(),
        3,
        "{}",
        list.stdout_str()
    );
    for (i, m) in c.members.iter().enumerate() {
        assert!(list.stdout_str().contains(&format!(
            ", m{}, {}, {}, false",
            i + 1,
            m.peer_url(),
            m.client_url()
        )));
    }
    let status = c.members[1]
        .etcdctl()
        .run(&["endpoint", "status", "--cluster", "-w", "json"]);
    status.assert_success();
    let v = status.json();
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    let leaders = rows
        .iter()
        .filter(|r| r["Status"]["leader"] == r["Status"]["header"]["member_id"])
        .count();
    assert_eq!(leaders, 1, "{v}");
    let eps = c.endpoints();
    c.members[0]
        .etcdctl()
        .run(&["--endpoints", &eps, "endpoint", "health", "--cluster"])
        .assert_success();
}

#[test]
fn killing_the_leader_elects_another_and_loses_nothing() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, term) = c.wait_leader(ELECTION);
    let mut acked = Vec::new();
    for n in 0..20 {
        let via = n % 3;
        let (k, v) = (format!("k{n:02}"), format!("v{n}"));
        assert!(put(&c, via, &k, &v));
        acked.push((k, v));
    }
    c.members[leader].kill9();
    let killed = Instant::now();
    let survivor = (leader + 1) % 3;
    let mut n = 20;
    let first_write = loop {
        if put(&c, survivor, &format!("k{n:02}"), &format!("v{n}")) {
            acked.push((format!("k{n:02}"), format!("v{n}")));
            n += 1;
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < ELECTION,
            "no write succeeded within {ELECTION:?} of killing the leader"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("failover: first acknowledged put {first_write:?} after kill -9 of the leader");
    let (new_leader, new_term) = c.wait_leader(ELECTION);
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {term} -> {new_term}");
    for _ in 0..10 {
        let via = if n % 2 == 0 {
            survivor
        } else {
            (leader + 2) % 3
        };
        assert!(put(&c, via, &format!("k{n:02}"), &format!("v{n}")));
        acked.push((format!("k{n:02}"), format!("v{n}")));
        n += 1;
    }
    // the old leader comes back and catches up
    c.members[leader].restart();
    let deadline = Instant::now() + ELECTION;
    let (last_k, last_v) = acked.last().cloned().unwrap();
    while get_value(&c, leader, &last_k, true).as_deref() != Some(last_v.as_str()) {
        assert!(
            Instant::now() < deadline,
            "restarted member did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let want: String = acked.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect();
    for i in 0..3 {
        let out = c.members[i]
            .etcdctl()
            .run(&["get", "k", "--prefix", "--consistency=s"]);
        assert_eq!(
            out.stdout_str(),
            want,
            "every acknowledged write on member {i}"
        );
    }
}

#[test]
fn move_leader_hands_leadership_to_the_named_member() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, term) = c.wait_leader(ELECTION);
    let target = (leader + 1) % 3;
    let (_, _, target_id) = c.status_of(target).expect("status");
    let (_, _, leader_id) = c.status_of(leader).expect("status");
    let eps = c.endpoints();
    // etcdctl needs the leader among its endpoints
    c.members[target]
        .etcdctl()
        .run(&["move-leader", &format!("{target_id:x}")])
        .assert_failure_contains("no leader endpoint given at");
    let out = c.members[0].etcdctl().run(&[
        "--endpoints",
        &eps,
        "move-leader",
        &format!("{target_id:x}"),
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_str(),
        format!("Leadership transferred from {leader_id:x} to {target_id:x}\n")
    );
    let (now, new_term) = c.wait_leader(ELECTION);
    assert_eq!(now, target);
    assert!(new_term > term);
    c.members[0]
        .etcdctl()
        .run(&["--endpoints", &eps, "move-leader", "1234"])
        .assert_failure_contains("etcdserver: bad leader transferee");
}

#[test]
fn a_member_without_quorum_refuses_linearizable_requests() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, _) = c.wait_leader(ELECTION);
    assert!(put(&c, leader, "before", "1"));
    let keep = (leader + 1) % 3;
    for i in 0..3 {
        if i != keep {
            c.members[i].kill9();
        }
    }
    let out = c.members[keep]
        .etcdctl()
        .timeout(Duration::from_secs(20))
        .run(&["put", "after", "2", "--command-timeout=10s"]);
    assert!(
        !out.success(),
        "a lone member of three acknowledged a write"
    );
    let err = out.stderr_str();
    assert!(
        err.contains("etcdserver: no leader")
            || err.contains("etcdserver: request timed out")
            || err.contains("context deadline exceeded"),
        "{err}"
    );
    let out = c.members[keep]
        .etcdctl()
        .timeout(Duration::from_secs(20))
        .run(&["get", "before", "--command-timeout=10s"]);
    assert!(
        !out.success(),
        "a lone member of three served a linearizable read"
    );
    // serializable reads are still served locally
    assert_eq!(get_value(&c, keep, "before", true).as_deref(), Some("1"));
    assert_eq!(get_value(&c, keep, "after", true).as_deref(), Some(""));
}

/// A member stopped while the others moved far past what they keep of the log catches up by
/// receiving a snapshot of the backend (ketch only: etcd 3.4 has no flag to shrink the 5000
/// entries it keeps, etcd 3.5 calls it `--experimental-snapshot-catchup-entries` too).
#[test]
fn a_member_far_behind_catches_up_by_snapshot() {
    if ketch_tests::ketch_is_substituted() {
        return;
    }
    let mut c = Cluster::start_with(
        Kind::Ketch,
        3,
        &["--experimental-snapshot-catchup-entries=5"],
    );
    let (leader, _) = c.wait_leader(ELECTION);
    let lagging = (leader + 1) % 3;
    c.members[lagging].stop();
    let mut want = String::new();
    for n in 0..40 {
        assert!(put(&c, leader, &format!("k{n:02}"), &format!("v{n}")));
        want.push_str(&format!("k{n:02}\nv{n}\n"));
    }
    c.members[lagging].restart();
    let deadline = Instant::now() + ELECTION;
    loop {
        let out = c.members[lagging]
            .etcdctl()
            .run(&["get", "k", "--prefix", "--consistency=s"]);
        if out.stdout_str() == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lagging member has:\n{}",
            out.stdout_str()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.members[lagging]
            .current_log()
            .contains("received database snapshot"),
        "caught up without a snapshot:\n{}",
        c.members[lagging].log_tail(30)
    );
    // and it keeps up with new writes
    assert!(put(&c, lagging, "after", "snap"));
    assert_eq!(
        get_value(&c, lagging, "after", false).as_deref(),
        Some("snap")
    );
}

/// A slow disk does not cause elections: once every WAL sync on every member takes longer
/// than the election timeout, writes still succeed and the term never changes (ketch only: the
/// slow disk is injected through ketch's fault hook). etcd sends heartbeats from the loop that
/// waits for the disk, and elects new leaders in this situation.
#[test]
fn slow_disks_do_not_cause_elections() {
    if ketch_tests::ketch_is_substituted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let knob = dir.path().join("sync-delay-ms");
    std::fs::write(&knob, "0").unwrap();
    let knob_env = knob.to_string_lossy().into_owned();
    let mut c = Cluster::start_with_env(
        Kind::Ketch,
        3,
        &[],
        &[("KETCH_FAULT_WAL_SYNC_DELAY_FILE", knob_env.as_str())],
    );
    let (leader, term) = c.wait_leader(ELECTION);
    std::fs::write(&knob, "1500").unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the members re-read it every 100 ms
    let started = Instant::now();
    for n in 0..4 {
        let out = c.members[n % 3]
            .etcdctl()
            .timeout(Duration::from_secs(30))
            .run(&["put", &format!("slow{n}"), "v", "--command-timeout=20s"]);
        out.assert_success();
    }
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the injected slow sync did not slow the writes down ({:?})",
        started.elapsed()
    );
    let (now, new_term) = c.wait_leader(ELECTION);
    std::fs::write(&knob, "0").unwrap();
    assert_eq!(
        (now, new_term),
        (leader, term),
        "leadership changed while disks were slow"
    );
}

fn refuses(c: &Cluster, i: usize, args: &[&str]) {
    let mut full = args.to_vec();
    full.push("--command-timeout=3s");
    let out = c.members[i]
        .etcdctl()
        .timeout(Duration::from_secs(10))
        .run(&full);
    assert!(
        !out.success(),
        "a cut-off member served {args:?}:\n{}",
        out.transcript()
    );
    let err = out.stderr_str();
    assert!(
        [
            "etcdserver: no leader",
            "etcdserver: request timed out",
            "context deadline exceeded"
        ]
        .iter()
        .any(|e| err.contains(e)),
        "{err}"
    );
}

/// Network partitions through relays on the peer links: a member nothing can reach (first a
/// follower, then the leader) refuses linearizable reads and writes while the others carry on,
/// and after healing the cluster converges, the cut-off follower not disturbing the leader
/// (pre-vote). Ketch only: a relay cuts the connections made *to* a member, which isolates a
/// ketch member (each side dials to send), but not an etcd member, which receives over
/// streams it dials itself.
#[test]
fn partitioned_members_refuse_service_and_converge_after_healing() {
    if ketch_tests::ketch_is_substituted() {
        return;
    }
    let mut c = Cluster::start_relayed(Kind::Ketch, 3);
    let (leader, term) = c.wait_leader(ELECTION);

    let follower = (leader + 1) % 3;
    c.relays[follower].cut();
    assert!(put(&c, leader, "p1", "during-follower-cut"));
    std::thread::sleep(Duration::from_secs(2)); // longer than the election timeout
    refuses(&c, follower, &["get", "p1"]);
    refuses(&c, follower, &["put", "p1", "from-the-cut-follower"]);
    c.relays[follower].heal();
    let deadline = Instant::now() + ELECTION;
    while get_value(&c, follower, "p1", true).as_deref() != Some("during-follower-cut") {
        assert!(
            Instant::now() < deadline,
            "healed follower did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (same, same_term) = c.wait_leader(ELECTION);
    assert_eq!(
        (same, same_term),
        (leader, term),
        "a cut-off follower disturbed the leader"
    );

    c.relays[leader].cut();
    let other = (leader + 2) % 3;
    let deadline = Instant::now() + ELECTION;
    while !put(&c, other, "p2", "after-leader-cut") {
        assert!(
            Instant::now() < deadline,
            "the majority did not elect a new leader"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    refuses(&c, leader, &["get", "p2"]);
    refuses(&c, leader, &["put", "p2", "from-the-old-leader"]);
    c.relays[leader].heal();
    let deadline = Instant::now() + ELECTION;
    while get_value(&c, leader, "p2", true).as_deref() != Some("after-leader-cut") {
        assert!(
            Instant::now() < deadline,
            "healed old leader did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (new_leader, new_term) = c.wait_leader(ELECTION);
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    for i in 0..3 {
        assert_eq!(
            get_value(&c, i, "p1", false).as_deref(),
            Some("during-follower-cut")
        );
        assert_eq!(
            get_value(&c, i, "p2", false).as_deref(),
            Some("after-leader-cut")
        );
    }
}

/// `--force-new-cluster`: after losing the other members for good, one member restarts as a
/// cluster of its own with all the data (as etcd's disaster recovery). Runs on etcd too.
#[test]
fn force_new_cluster_recovers_one_member_with_its_data() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, _) = c.wait_leader(ELECTION);
    let mut want = String::new();
    for n in 0..10 {
        assert!(put(&c, leader, &format!("k{n}"), &format!("v{n}")));
        want.push_str(&format!("k{n}\nv{n}\n"));
    }
    let survivor = (leader + 1) % 3;
    // make sure the survivor has applied everything before the disaster
    let deadline = Instant::now() + ELECTION;
    while get_value(&c, survivor, "k9", true).as_deref() != Some("v9") {
        assert!(Instant::now() < deadline, "survivor did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // the others are lost for good; the survivor stops cleanly (after a kill -9 its last
    // commit index may not be on disk yet, and etcd then drops those entries too)
    for (i, m) in c.members.iter_mut().enumerate() {
        if i == survivor {
            m.stop();
        } else {
            m.kill9();
        }
    }
    c.members[survivor].add_arg("--force-new-cluster");
    c.members[survivor].restart();
    let ctl = c.members[survivor]
        .etcdctl()
        .timeout(Duration::from_secs(15));
    let list = ctl.run(&["member", "list"]);
    list.assert_success();
    assert_eq!(
        list.stdout_str().lines().count(),
        1,
        "{}",
        list.stdout_str()
    );
    assert_eq!(ctl.run(&["get", "k", "--prefix"]).stdout_str(), want);
    ctl.run(&["put", "after", "recovery"]).assert_success();
    // and keeps it across another restart
    c.members[survivor].stop();
    c.members[survivor].restart();
    let out = c.members[survivor]
        .etcdctl()
        .run(&["get", "after", "--print-value-only"]);
    assert_eq!(out.stdout_str(), "recovery\n", "{}", out.transcript());
}
