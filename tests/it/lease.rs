//! `etcdctl lease ...` and `put --lease`, compared with etcd; expiry, keep-alive, restarts and
//! leader changes.
//!
//! Lease ids are chosen by each server, so scenarios grant first, read the id from etcdctl's
//! answer, and write it as `<lease>` (hex) and 4242424242 (decimal, so JSON stays JSON) in what
//! they compare.

use std::time::{Duration, Instant};

use ketch_tests::cluster::Cluster;
use ketch_tests::{compare_scenario, BackgroundCtl, CtlOutput, Kind, Server};

fn plain(kind: Kind) -> ketch_tests::server::ServerBuilder {
    Server::builder(kind)
}

/// Grants a lease of `ttl` seconds and returns its id (hex, as etcdctl prints it).
fn grant(s: &Server, ttl: u32) -> (String, CtlOutput) {
    let out = s.etcdctl().run(&["lease", "grant", &ttl.to_string()]);
    out.assert_success();
    let id = out
        .stdout_str()
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {:?}", out.stdout_str()))
        .to_string();
    (id, out)
}

const LEASE_DEC: &str = "4242424242";
const REMAINING: &str = "-42";

/// Writes lease ids as placeholders, and a `remaining(Ns)` / `"ttl":N` that counts down as
/// `-42` once it is checked to be within `slack` seconds below `ttl` (a -1 for a lease
/// that does not exist stays).
fn hide_lease(mut out: CtlOutput, id: &str, ttl: i64, slack: i64) -> CtlOutput {
    let dec = i64::from_str_radix(id, 16)
        .expect("hex lease id")
        .to_string();
    let mut text = out
        .stdout_str()
        .replace(id, "<lease>")
        .replace(&dec, LEASE_DEC);
    for (open, close) in [("remaining(", "s)"), ("\"ttl\":", ",")] {
        if let Some(start) = text.find(open).map(|i| i + open.len()) {
            if let Some(len) = text[start..].find(close) {
                let n: i64 = text[start..start + len].parse().expect("a TTL");
                if n < 0 {
                    continue; // -1: no such lease, compared as it is
                }
                assert!(
                    (ttl - slack..=ttl).contains(&n),
                    "remaining TTL {n} not within {slack}s below {ttl}: {text}"
                );
                text.replace_range(start..start + len, REMAINING);
            }
        }
    }
    out.stdout = text.into_bytes();
    for a in &mut out.args {
        *a = a.replace(id, "<lease>");
    }
    out.stderr = String::from_utf8_lossy(&out.stderr)
        .replace(id, "<lease>")
        .replace(&dec, LEASE_DEC)
        .into_bytes();
    out
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn value(s: &Server, key: &str) -> String {
    let out = s.etcdctl().run(&["get", key, "--print-value-only"]);
    out.assert_success();
    out.stdout_str()
}

#[test]
fn lease_grant_attach_inspect_renew_and_revoke_match_etcd() {
    compare_scenario(plain, |s| {
        let ctl = s.etcdctl();
        let (id, granted) = grant(s, 60);
        let hide = |o: CtlOutput| hide_lease(o, &id, 60, 10);
        let lease_flag = format!("--lease={id}");
        vec![
            hide(granted),
            hide(ctl.run(&["put", &lease_flag, "k1", "v1"])),
            hide(ctl.run(&["get", "k1", "-w", "json"])),
            hide(ctl.run(&["get", "k1", "-w", "fields"])),
            hide(ctl.run(&["lease", "timetolive", &id])),
            hide(ctl.run(&["lease", "timetolive", &id, "--keys"])),
            hide(ctl.run(&["lease", "timetolive", &id, "--keys", "-w", "json"])),
            hide(ctl.run(&["lease", "list"])),
            hide(ctl.run(&["lease", "keep-alive", "--once", &id])),
            hide(ctl.run(&["put", "k1", "no lease any more"])),
            hide(ctl.run(&["lease", "timetolive", &id, "--keys"])),
            hide(ctl.run(&["put", &lease_flag, "k2", "v2"])),
            hide(ctl.run(&["put", "plain", "v"])),
            hide(ctl.run(&["lease", "revoke", &id])),
            hide(ctl.run(&["get", "", "--from-key"])),
            hide(ctl.run(&["lease", "timetolive", &id])),
            hide(ctl.run(&["lease", "timetolive", &id, "-w", "json"])),
            hide(ctl.run(&["lease", "revoke", &id])),
            hide(ctl.run(&["lease", "keep-alive", "--once", &id])),
            hide(ctl.run(&["put", &lease_flag, "k3", "v3"])),
            hide(ctl.run(&["lease", "list"])),
        ]
    });
}

#[test]
fn lease_errors_and_limits_match_etcd() {
    compare_scenario(plain, |s| {
        let ctl = s.etcdctl();
        vec![
            ctl.run(&["put", "--lease=1234", "k", "v"]),
            ctl.run(&["lease", "revoke", "1234"]),
            ctl.run(&["lease", "timetolive", "1234"]),
            ctl.run(&["lease", "keep-alive", "--once", "1234"]),
            ctl.run(&["lease", "grant", "9000000001"]),
            ctl.run_stdin(&["txn"], "\n\nput k v --lease=1234\n\n"),
            // a TTL below the minimum (1.5 election timeouts) is raised to it
            {
                let (id, out) = grant(s, 1);
                hide_lease(out, &id, 2, 0)
            },
            ctl.run(&["get", "k"]),
        ]
    });
}

#[test]
fn an_expired_lease_deletes_its_keys_in_one_revision_and_watchers_see_it() {
    compare_scenario(plain, |s| {
        let ctl = s.etcdctl();
        let (id, _) = grant(s, 2);
        let lease_flag = format!("--lease={id}");
        for k in ["b", "a", "c"] {
            ctl.run(&["put", &lease_flag, k, "v"]).assert_success();
        }
        ctl.run(&["put", "kept", "no lease"]).assert_success();
        let before = ctl.run(&["get", "kept", "-w", "json"]).json()["header"]["revision"]
            .as_i64()
            .unwrap();
        let w = BackgroundCtl::spawn(
            &s.endpoint(),
            &["watch", "--prefix", "", &format!("--rev={}", before + 1)],
            &[],
        );
        wait_until(Duration::from_secs(15), "the lease to expire", || {
            value(s, "a").is_empty()
        });
        w.wait_stdout(Duration::from_secs(10), |o| {
            o.matches("DELETE").count() == 3
        });
        let after = ctl.run(&["get", "kept", "-w", "json"]).json()["header"]["revision"]
            .as_i64()
            .unwrap();
        assert_eq!(
            after,
            before + 1,
            "the expiry deleted all three keys in one revision"
        );
        vec![
            w.kill(),
            ctl.run(&["get", "", "--from-key"]),
            hide_lease(ctl.run(&["lease", "timetolive", &id]), &id, 0, 0),
        ]
    });
}

#[test]
fn keep_alive_holds_a_lease_past_its_ttl() {
    let s = Server::start(Kind::Ketch);
    let (id, _) = grant(&s, 2);
    s.etcdctl()
        .run(&["put", &format!("--lease={id}"), "alive", "yes"])
        .assert_success();
    let keeper = BackgroundCtl::spawn(&s.endpoint(), &["lease", "keep-alive", &id], &[]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        value(&s, "alive"),
        "yes\n",
        "kept alive for more than twice its TTL"
    );
    let out = keeper.kill();
    assert!(
        out.stdout_str().matches("keepalived with TTL(2)").count() >= 3,
        "etcdctl renews about every TTL/3: {}",
        out.stdout_str()
    );
    wait_until(
        Duration::from_secs(10),
        "the lease to expire once no one keeps it alive",
        || value(&s, "alive").is_empty(),
    );
}

#[test]
fn leases_and_their_keys_survive_a_kill_and_restart() {
    let mut s = Server::start(Kind::Ketch);
    let (id, _) = grant(&s, 600);
    let ctl = s.etcdctl();
    ctl.run(&["put", &format!("--lease={id}"), "k", "v"])
        .assert_success();
    s.kill9();
    s.restart();
    let ttl = s.etcdctl().run(&["lease", "timetolive", &id, "--keys"]);
    ttl.assert_success();
    assert!(
        ttl.stdout_str().contains("granted with TTL(600s)")
            && ttl.stdout_str().contains("attached keys([k])"),
        "{}",
        ttl.stdout_str()
    );
    s.etcdctl().run(&["lease", "revoke", &id]).assert_success();
    assert_eq!(value(&s, "k"), "");
}

/// Lease expiry across a leader kill: the keys of a lease nobody renews vanish under the new
/// leader; the keys of a lease renewed through a surviving member stay.
#[test]
fn across_a_leader_kill_expired_leases_go_and_kept_ones_stay() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    let (leader, term) = c.wait_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let f = &c.members[follower];
    let (kept, _) = grant(f, 4);
    let (dropped, _) = grant(f, 4);
    f.etcdctl()
        .run(&["put", &format!("--lease={kept}"), "kept", "1"])
        .assert_success();
    f.etcdctl()
        .run(&["put", &format!("--lease={dropped}"), "dropped", "1"])
        .assert_success();
    // renewals sent to a follower reach the leader's lessor (forwarded)
    let keeper = BackgroundCtl::spawn(&f.endpoint(), &["lease", "keep-alive", &kept], &[]);
    keeper.wait_stdout(Duration::from_secs(10), |o| o.contains("keepalived"));
    c.members[leader].kill9();
    let (_, new_term) = c.wait_leader(Duration::from_secs(20));
    assert!(new_term > term);
    let f = &c.members[follower];
    wait_until(
        Duration::from_secs(20),
        "the unrenewed lease to expire under the new leader",
        || value(f, "dropped").is_empty(),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        value(f, "kept"),
        "1\n",
        "the renewed lease outlived its TTL across the leader change"
    );
    let ttl = f.etcdctl().run(&["lease", "timetolive", &dropped]);
    assert!(
        ttl.stdout_str().contains("already expired"),
        "{}",
        ttl.stdout_str()
    );
    drop(keeper.kill());
}
