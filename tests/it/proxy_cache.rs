//! The proxy's serializable read cache: hits, and never a stale answer — not after a write
//! through the proxy, a write straight to a member, or a lease expiring — and never a
//! revision older than one the proxy already gave.

use std::time::{Duration, Instant};

use ketch_tests::proxy::ProxyProcess;
use ketch_tests::{http_get, Cluster, Etcdctl, Kind};

const WAIT: Duration = Duration::from_secs(20);

fn stats(p: &ProxyProcess) -> serde_json::Value {
    let r = http_get(p.addr(), "/ketch/proxy/stats", Duration::from_secs(5)).unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

fn value_s(ctl: &Etcdctl, key: &str) -> String {
    let out = ctl.run(&["get", key, "--consistency=s", "--print-value-only"]);
    out.assert_success();
    out.stdout_str()
}

fn revision_s(ctl: &Etcdctl, key: &str) -> i64 {
    let out = ctl.run(&["get", key, "--consistency=s", "-w", "json"]);
    out.assert_success();
    out.json()["header"]["revision"].as_i64().unwrap()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serializable_reads_hit_the_cache_and_are_never_stale() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let proxy = ProxyProcess::start(&[
        "--proxy=on",
        &format!("--initial-cluster={}", c.initial_cluster()),
    ]);
    let via = proxy.etcdctl();
    let member = c.members[1].etcdctl();
    via.run(&["put", "k", "v0"]).assert_success();
    // the first read fills the cache (once its invalidation watch is up), the next ones hit
    eventually("a cache hit", || {
        assert_eq!(value_s(&via, "k"), "v0\n");
        stats(&proxy)["cache_hits"].as_u64().unwrap() > 0
    });
    // a write through the proxy is seen at once by the next read through it
    for i in 1..=20 {
        via.run(&["put", "k", &format!("v{i}")]).assert_success();
        assert_eq!(
            value_s(&via, "k"),
            format!("v{i}\n"),
            "read-your-writes through the cache"
        );
    }
    // a write straight to a member reaches the cache through its watch
    member.run(&["put", "k", "from-member"]).assert_success();
    eventually("the member's write to show through the proxy", || {
        value_s(&via, "k") == "from-member\n"
    });
    // a prefix read is invalidated by a new key under it
    via.run(&["put", "p/a", "1"]).assert_success();
    let list = |ctl: &Etcdctl| {
        let out = ctl.run(&["get", "p/", "--prefix", "--consistency=s", "--keys-only"]);
        out.assert_success();
        out.stdout_str()
    };
    assert_eq!(list(&via), "p/a\n\n");
    assert_eq!(list(&via), "p/a\n\n");
    member.run(&["put", "p/b", "2"]).assert_success();
    eventually("the new key under the prefix", || {
        list(&via) == "p/a\n\np/b\n\n"
    });
    // keys of an expiring lease vanish from cached answers too
    let granted = member.run(&["lease", "grant", "2"]).stdout_str();
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    member
        .run(&["put", "--lease", &lease, "leased", "x"])
        .assert_success();
    eventually("the leased key through the proxy", || {
        value_s(&via, "leased") == "x\n"
    });
    eventually(
        "the expired lease's key to vanish through the proxy",
        || value_s(&via, "leased").is_empty(),
    );
    // revisions through the proxy never go back
    let mut last = 0;
    for i in 0..30 {
        if i % 3 == 0 {
            member
                .run(&["put", "other", &i.to_string()])
                .assert_success();
        }
        let rev = revision_s(&via, "k");
        assert!(rev >= last, "revision went back from {last} to {rev}");
        last = rev;
    }
    let s = stats(&proxy);
    assert!(
        s["cache_hits"].as_u64().unwrap() >= 1 && s["cache_misses"].as_u64().unwrap() >= 1,
        "{s}"
    );
}

#[test]
fn keep_alives_through_the_proxy_share_renewals_and_hold_the_lease() {
    let mut c = Cluster::start(Kind::Ketch, 3);
    c.wait_leader(WAIT);
    let proxy = ProxyProcess::start(&[
        "--proxy=on",
        &format!("--initial-cluster={}", c.initial_cluster()),
    ]);
    let via = proxy.etcdctl();
    let granted = via.run(&["lease", "grant", "3"]).stdout_str();
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    via.run(&["put", "--lease", &lease, "held", "yes"])
        .assert_success();
    // many keepers of the same lease at once, as the replicas of one service would be
    let keepers: Vec<ketch_tests::BackgroundCtl> = (0..8)
        .map(|_| {
            ketch_tests::BackgroundCtl::spawn(
                &proxy.endpoint(),
                &["lease", "keep-alive", &lease],
                &[],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        value_s(&c.members[0].etcdctl(), "held"),
        "yes\n",
        "kept alive past twice its TTL"
    );
    for k in keepers {
        let out = k.kill();
        assert!(
            out.stdout_str().contains("keepalived with TTL(3)"),
            "{}",
            out.transcript()
        );
    }
    let s = stats(&proxy);
    let (clients, renewals) = (
        s["client_keepalives"].as_u64().unwrap(),
        s["upstream_renewals"].as_u64().unwrap(),
    );
    // every keep-alive went through the coalescing path (renewals are shared only when they
    // overlap in flight, which on loopback is rare: the count is printed, not asserted)
    assert!(clients >= 16, "{s}");
    eprintln!("keep-alives from clients: {clients}, renewals sent upstream: {renewals}");
    eventually("the lease to expire once nobody keeps it", || {
        value_s(&c.members[0].etcdctl(), "held").is_empty()
    });
}
