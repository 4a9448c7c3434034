//! Crash and restart of the server under test (ketch only; `KETCH_TESTS_TARGET=etcd` runs them
//! on etcd to check the tests themselves).
//!
//! - Every put a client saw acknowledged survives `kill -9` at a random moment, with the
//!   revision it was acknowledged with; nothing unacknowledged appears except possibly the one
//!   put in flight at the kill; revisions are never reused afterwards.
//! - A restart (SIGTERM or kill -9) keeps revisions, versions and the compaction state.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::kv_client::KvClient;
use ketch_api::etcdserverpb::{PutRequest, RangeRequest};
use ketch_tests::{Etcdctl, Kind, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

/// Reruns a failure with the same kill points.
const SEED_ENV: &str = "KETCH_TESTS_SEED";
const ROUNDS: u32 = 5;
const ROUNDS_BUDGET: Duration = Duration::from_secs(50);
const MAX_PUTS_PER_ROUND: u32 = 20_000;
const PREFIX: &str = "durability/";

#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: String,
    revision: i64,
}

async fn connect(server: &Server) -> KvClient<Channel> {
    ketch_tests::grpc::kv_client(server).await
}

/// Sequential puts until the first error (the kill), recording each acknowledged one.
async fn write_until_failure(
    mut client: KvClient<Channel>,
    round: u32,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    for i in 0..MAX_PUTS_PER_ROUND {
        let key = format!("{PREFIX}{round:02}/{i:06}");
        let value = format!("value-{round}-{i}");
        let request = PutRequest {
            key: key.clone().into_bytes().into(),
            value: value.clone().into_bytes().into(),
            ..Default::default()
        };
        match client.put(request).await {
            Ok(resp) => {
                let revision = resp
                    .into_inner()
                    .header
                    .expect("PutResponse.header")
                    .revision;
                acks.lock().unwrap().push(Ack {
                    key,
                    value,
                    revision,
                });
            }
            Err(_) => return,
        }
    }
}

/// Every key under [`PREFIX`] with (value, create_revision, mod_revision, version), and the
/// store's revision.
async fn read_all(
    client: &mut KvClient<Channel>,
) -> (i64, BTreeMap<String, (String, i64, i64, i64)>) {
    let mut range_end = PREFIX.as_bytes().to_vec();
    *range_end.last_mut().unwrap() += 1;
    let resp = client
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec().into(),
            range_end: range_end.into(),
            ..Default::default()
        })
        .await
        .expect("range after restart")
        .into_inner();
    let kvs = resp
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                (
                    String::from_utf8_lossy(&kv.value).into_owned(),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                ),
            )
        })
        .collect();
    (resp.header.expect("RangeResponse.header").revision, kvs)
}

#[tokio::test(flavor = "current_thread")]
async fn acknowledged_puts_survive_kill9_at_random_moments() {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("kill points seeded with {seed} (rerun with {SEED_ENV}={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let mut server = Server::start(Kind::Ketch);
    let mut acked: Vec<Ack> = Vec::new();
    let mut rounds = 0;
    for round in 0..ROUNDS {
        if started.elapsed() > ROUNDS_BUDGET {
            break;
        }
        rounds += 1;
        let client = connect(&server).await;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let writer = tokio::spawn(write_until_failure(client, round, acks.clone()));

        // Kill at a random moment after the first acknowledgement.
        let first_ack_deadline = Instant::now() + Duration::from_secs(10);
        while acks.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < first_ack_deadline,
                "round {round}: no put acknowledged within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let kill_after = Duration::from_millis(rng.random_range(0..400));
        tokio::time::sleep(kill_after).await;
        server.kill9();
        tokio::time::timeout(Duration::from_secs(15), writer)
            .await
            .expect("the writer did not notice the kill within 15 s")
            .expect("writer task");
        let this_round = acks.lock().unwrap().clone();
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} puts acknowledged",
            this_round.len()
        );
        let previous_max = acked.last().map_or(0, |a| a.revision);
        assert!(
            this_round
                .first()
                .is_some_and(|a| a.revision > previous_max),
            "round {round}: revision reused after a restart: first acknowledged revision {:?}, \
             but revision {previous_max} was acknowledged before the crash",
            this_round.first().map(|a| a.revision)
        );
        acked.extend(this_round.iter().cloned());

        server.restart();
        let mut client = connect(&server).await;
        let (store_revision, kvs) = read_all(&mut client).await;
        for ack in &acked {
            let Some((value, create, modified, version)) = kvs.get(&ack.key) else {
                panic!(
                    "round {round}: acknowledged put of {:?} at revision {} is lost",
                    ack.key, ack.revision
                );
            };
            assert_eq!(
                (value.as_str(), *create, *modified, *version),
                (ack.value.as_str(), ack.revision, ack.revision, 1),
                "round {round}: key {:?} (value, create_revision, mod_revision, version) differs \
                 from what was acknowledged",
                ack.key
            );
        }
        // The only key allowed beyond the acknowledged ones is the put in flight at the kill.
        let in_flight = format!("{PREFIX}{round:02}/{:06}", this_round.len());
        let last_rev = acked.last().unwrap().revision;
        for (key, (_, _, modified, _)) in &kvs {
            if !acked.iter().any(|a| a.key == *key) {
                assert!(
                    *key == in_flight && *modified == last_rev + 1,
                    "round {round}: unexpected key {key:?} at revision {modified} (last \
                     acknowledged revision {last_rev}, in-flight key {in_flight:?})"
                );
            }
        }
        assert!(
            store_revision >= last_rev,
            "store revision {store_revision} < acknowledged {last_rev}"
        );
        // Make the next round's first revision comparable: account for an in-flight put that landed.
        if let Some((_, _, modified, _)) = kvs.get(&in_flight) {
            acked.push(Ack {
                key: in_flight.clone(),
                value: kvs[&in_flight].0.clone(),
                revision: *modified,
            });
        }
    }
    eprintln!(
        "{rounds} rounds, {} puts checked, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        rounds >= 3,
        "only {rounds} kill/restart rounds fit in {ROUNDS_BUDGET:?}"
    );
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    Sigterm,
    Kill9,
}

fn json_of(ctl: &Etcdctl, args: &[&str]) -> serde_json::Value {
    ctl.run(args).assert_success().json()
}

/// Revision and key-values (not the header's ids or raft term, which restarts may change).
fn state(ctl: &Etcdctl, rev: Option<i64>) -> (serde_json::Value, serde_json::Value) {
    let mut args = vec![
        "get".to_string(),
        String::new(),
        "--prefix".into(),
        "-w=json".into(),
    ];
    if let Some(r) = rev {
        args.push(format!("--rev={r}"));
    }
    let v = ctl.run(&args).assert_success().json();
    (v["header"]["revision"].clone(), v["kvs"].clone())
}

fn restart_keeps_revisions_versions_and_compaction(how: Shutdown) {
    let mut server = Server::start(Kind::Ketch);
    let ctl = server.etcdctl();
    for args in [
        ["put", "a", "1"], // 2
        ["put", "a", "2"], // 3
        ["put", "b", "1"], // 4
        ["del", "b", ""],  // 5
        ["put", "a", "3"], // 6
        ["put", "c", "1"], // 7
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        ctl.run(&args).assert_success();
    }
    ctl.run(&["compact", "5"]).assert_success();
    let before = state(&ctl, None);
    let before_at_5 = state(&ctl, Some(5));
    assert_eq!(before.0, 7);

    match how {
        Shutdown::Sigterm => {
            // etcd re-raises SIGTERM after its cleanup, so it dies "by" the signal; ketch may
            // exit 0 instead. Either is a clean stop.
            let status = server.stop();
            assert!(
                status.success() || status.signal() == Some(libc::SIGTERM),
                "exit status on SIGTERM: {status}"
            );
        }
        Shutdown::Kill9 => server.kill9(),
    }
    server.restart();

    assert_eq!(
        state(&ctl, None),
        before,
        "revision and key-values after restart"
    );
    assert_eq!(
        state(&ctl, Some(5)),
        before_at_5,
        "reads at the compaction revision"
    );
    ctl.run(&["get", "a", "--rev=4"])
        .assert_failure_contains("etcdserver: mvcc: required revision has been compacted");
    ctl.run(&["compact", "5"])
        .assert_failure_contains("etcdserver: mvcc: required revision has been compacted");
    let put = json_of(&ctl, &["put", "a", "4", "-w=json"]);
    assert_eq!(
        put["header"]["revision"], 8,
        "the next revision after restart"
    );
    let a = json_of(&ctl, &["get", "a", "-w=json"]);
    assert_eq!(a["kvs"][0]["version"], 4);
    assert_eq!(a["kvs"][0]["create_revision"], 2);
    assert_eq!(a["kvs"][0]["mod_revision"], 8);
    ctl.run(&["compact", "7"]).assert_success();
}

#[test]
fn restart_after_sigterm_keeps_revisions_versions_and_compaction() {
    restart_keeps_revisions_versions_and_compaction(Shutdown::Sigterm);
}

#[test]
fn restart_after_kill9_keeps_revisions_versions_and_compaction() {
    restart_keeps_revisions_versions_and_compaction(Shutdown::Kill9);
}
