//! Distributed locks and elections: etcd's Lock and Election gRPC services (compared with etcd
//! call by call), `etcdctl lock` and `etcdctl elect` (which build the same on KV, Lease and
//! Watch from the client side), mutual exclusion under contention and election hand-over when
//! a leader's lease expires.

use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::lease_client::LeaseClient;
use ketch_api::etcdserverpb::{LeaseGrantRequest, ResponseHeader};
use ketch_api::v3electionpb::election_client::ElectionClient;
use ketch_api::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use ketch_api::v3lockpb::lock_client::LockClient;
use ketch_api::v3lockpb::{LockRequest, UnlockRequest};
use ketch_tests::diff::line_diff;
use ketch_tests::grpc::{block_on, channel, outcome};
use ketch_tests::{BackgroundCtl, Kind, Server};
use tonic::transport::Channel;

/// Long enough for any call that should return; blocked calls are checked for shorter.
const CALL: Duration = Duration::from_secs(20);

fn rev(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map_or(-1, |h| h.revision)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn grant(ch: &Channel, id: i64, ttl: i64) {
    LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl, id })
        .await
        .unwrap_or_else(|e| panic!("grant lease {id}: {e}"));
}

/// True if `fut` is still pending after `wait`; the future is kept for later.
async fn still_blocked<F: std::future::Future + Unpin>(fut: &mut F, wait: Duration) -> bool {
    tokio::time::timeout(wait, fut).await.is_err()
}

/// The same calls against one server; what a client can observe, one line each.
async fn lock_and_election_script(server: &Server) -> Vec<String> {
    let ch = channel(server, CALL).await;
    let mut log = Vec::new();
    grant(&ch, 0x1001, 60).await;
    grant(&ch, 0x1002, 60).await;
    let mut lock = LockClient::new(ch.clone());

    let first = lock
        .lock(LockRequest {
            name: "L".into(),
            lease: 0x1001,
        })
        .await
        .unwrap()
        .into_inner();
    log.push(format!(
        "lock 1: key {} rev {}",
        text(&first.key),
        rev(&first.header)
    ));
    let mut waiter = LockClient::new(ch.clone());
    let mut second = Box::pin(waiter.lock(LockRequest {
        name: "L".into(),
        lease: 0x1002,
    }));
    log.push(format!(
        "lock 2 waits: {}",
        still_blocked(&mut second, Duration::from_millis(500)).await
    ));
    let unlocked = lock
        .unlock(UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    log.push(format!("unlock 1: rev {}", rev(&unlocked.header)));
    let second = tokio::time::timeout(CALL, second)
        .await
        .expect("lock 2 after unlock")
        .unwrap()
        .into_inner();
    log.push(format!(
        "lock 2: key {} rev {}",
        text(&second.key),
        rev(&second.header)
    ));
    let relock = lock
        .lock(LockRequest {
            name: "L".into(),
            lease: 0x1002,
        })
        .await
        .unwrap()
        .into_inner();
    log.push(format!(
        "lock 2 again (same lease, held): key {} rev {}",
        text(&relock.key),
        rev(&relock.header)
    ));
    log.push(format!(
        "lock with a missing lease: {}",
        outcome(
            &lock
                .lock(LockRequest {
                    name: "L2".into(),
                    lease: 0x9999
                })
                .await
        )
    ));
    lock.unlock(UnlockRequest {
        key: second.key.clone(),
    })
    .await
    .unwrap();

    let mut el = ElectionClient::new(ch.clone());
    log.push(format!(
        "leader before any campaign: {}",
        outcome(&el.leader(LeaderRequest { name: "E".into() }).await)
    ));
    let alice = el
        .campaign(CampaignRequest {
            name: "E".into(),
            lease: 0x1001,
            value: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let alice_key = alice.leader.clone().unwrap();
    log.push(format!(
        "alice elected: key {} rev {} lease {:x} header rev {}",
        text(&alice_key.key),
        alice_key.rev,
        alice_key.lease,
        rev(&alice.header)
    ));
    let leader = el
        .leader(LeaderRequest { name: "E".into() })
        .await
        .unwrap()
        .into_inner();
    log.push(format!("leader: {}", text(&leader.kv.unwrap().value)));
    let mut observer = ElectionClient::new(ch.clone())
        .observe(LeaderRequest { name: "E".into() })
        .await
        .unwrap()
        .into_inner();
    let p = el
        .proclaim(ProclaimRequest {
            leader: Some(alice_key.clone()),
            value: "alice2".into(),
        })
        .await;
    log.push(format!(
        "proclaim: {} rev {}",
        outcome(&p),
        p.map(|r| rev(&r.into_inner().header)).unwrap_or(0)
    ));
    let stale = LeaderKey {
        rev: alice_key.rev + 100,
        ..alice_key.clone()
    };
    log.push(format!(
        "proclaim with a stale key: {}",
        outcome(
            &el.proclaim(ProclaimRequest {
                leader: Some(stale),
                value: "x".into()
            })
            .await
        )
    ));
    log.push(format!(
        "proclaim without a key: {}",
        outcome(
            &el.proclaim(ProclaimRequest {
                leader: None,
                value: "x".into()
            })
            .await
        )
    ));
    let mut bob_client = ElectionClient::new(ch.clone());
    let mut bob = Box::pin(bob_client.campaign(CampaignRequest {
        name: "E".into(),
        lease: 0x1002,
        value: "bob".into(),
    }));
    log.push(format!(
        "bob waits: {}",
        still_blocked(&mut bob, Duration::from_millis(500)).await
    ));
    let resigned = el
        .resign(ResignRequest {
            leader: Some(alice_key.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    log.push(format!("alice resigns: rev {}", rev(&resigned.header)));
    let bob = tokio::time::timeout(CALL, bob)
        .await
        .expect("bob elected after alice resigned")
        .unwrap()
        .into_inner();
    log.push(format!(
        "bob elected: key {} rev {}",
        text(&bob.leader.unwrap().key),
        rev(&bob.header)
    ));
    for _ in 0..3 {
        let seen = tokio::time::timeout(CALL, observer.message())
            .await
            .expect("an observed leader")
            .unwrap()
            .unwrap();
        log.push(format!(
            "observed: {} at rev {}",
            text(&seen.kv.unwrap().value),
            rev(&seen.header)
        ));
    }
    log.push(format!(
        "resign without a key: {}",
        outcome(&el.resign(ResignRequest { leader: None }).await)
    ));
    log
}

#[test]
fn lock_and_election_services_answer_as_etcd() {
    let mut servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let etcd = servers.pop().unwrap();
    let ketch = servers.pop().unwrap();
    let (k, e) = std::thread::scope(|s| {
        let k = s.spawn(|| block_on(lock_and_election_script(&ketch)));
        let e = s.spawn(|| block_on(lock_and_election_script(&etcd)));
        (k.join().unwrap(), e.join().unwrap())
    });
    let (k, e) = (k.join("\n"), e.join("\n"));
    assert!(
        k == e,
        "ketch and etcd differ ('-' etcd, '+' ketch):\n{}",
        line_diff(&e, &k)
    );
}

#[test]
fn an_election_passes_to_the_next_candidate_when_the_leaders_lease_expires() {
    let server = Server::start(Kind::Ketch);
    block_on(async {
        let ch = channel(&server, CALL).await;
        grant(&ch, 0x2001, 2).await; // never renewed
        grant(&ch, 0x2002, 60).await;
        let mut el = ElectionClient::new(ch.clone());
        el.campaign(CampaignRequest {
            name: "E".into(),
            lease: 0x2001,
            value: "first".into(),
        })
        .await
        .unwrap();
        let mut observer = ElectionClient::new(ch.clone())
            .observe(LeaderRequest { name: "E".into() })
            .await
            .unwrap()
            .into_inner();
        let started = Instant::now();
        let next = tokio::time::timeout(
            CALL,
            el.campaign(CampaignRequest {
                name: "E".into(),
                lease: 0x2002,
                value: "next".into(),
            }),
        )
        .await
        .expect("the next candidate is elected once the first one's lease expires")
        .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "elected before the first leader's lease ran out"
        );
        assert_eq!(
            next.into_inner().leader.unwrap().key,
            format!("E/{:x}", 0x2002)
        );
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("next") {
            let r = tokio::time::timeout(CALL, observer.message())
                .await
                .expect("observed")
                .unwrap()
                .unwrap();
            seen.push(text(&r.kv.unwrap().value));
        }
        assert_eq!(seen, ["first", "next"]);
    });
}

#[test]
fn etcdctl_lock_excludes_every_other_holder() {
    let server = Server::start(Kind::Ketch);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let script = format!(
        "echo \"in $1\" >> {j}; sleep 0.2; echo \"out $1\" >> {j}",
        j = journal.display()
    );
    let holders: Vec<BackgroundCtl> = (0..5)
        .map(|i| {
            let n = i.to_string();
            BackgroundCtl::spawn(
                &server.endpoint(),
                &["lock", "the-lock", "--", "sh", "-c", &script, "sh", &n],
                &[],
            )
        })
        .collect();
    for h in holders {
        let out = h.wait_exit(CALL);
        assert_eq!(out.code, Some(0), "{}", out.transcript());
    }
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 10, "every holder ran once: {lines:?}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("in ").expect("an entry");
        assert_eq!(
            pair[1],
            format!("out {who}"),
            "two holders inside at once: {lines:?}"
        );
    }
    let left = server
        .etcdctl()
        .run(&["get", "the-lock", "--prefix", "--keys-only"]);
    assert_eq!(left.stdout_str(), "", "every holder released its key");
}

#[test]
fn etcdctl_elect_hands_over_when_the_leader_resigns() {
    let server = Server::start(Kind::Ketch);
    let ep = server.endpoint();
    let alice = BackgroundCtl::spawn(&ep, &["elect", "the-election", "alice"], &[]);
    alice.wait_stdout(CALL, |o| o.contains("alice"));
    let observer = BackgroundCtl::spawn(&ep, &["elect", "-l", "the-election"], &[]);
    observer.wait_stdout(CALL, |o| o.contains("alice"));
    let bob = BackgroundCtl::spawn(&ep, &["elect", "the-election", "bob"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !bob.stdout_str().contains("bob"),
        "bob was elected while alice leads"
    );
    alice.interrupt(); // etcdctl resigns on Ctrl-C
    bob.wait_stdout(CALL, |o| o.contains("bob"));
    observer.wait_stdout(CALL, |o| o.contains("bob"));
    let seen = observer.kill().stdout_str();
    let values: Vec<&str> = seen
        .lines()
        .filter(|l| !l.starts_with("the-election/"))
        .collect();
    assert_eq!(values, ["alice", "bob"], "{seen}");
}
