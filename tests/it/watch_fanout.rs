//! Watch fan-out on ketch: thousands of watchers over gRPC on one key and on a prefix, spread
//! over many streams and connections; every watcher must receive every event of its range
//! exactly once and in revision order. Also measures the latency from a put's acknowledgement
//! to its event reaching each watcher.
//!
//! `KETCH_WATCH_FANOUT=<n>` sets the number of watchers (default 2000), and
//! `KETCH_WATCH_FANOUT_KIND=etcd` runs the same load against real etcd for comparison; the
//! measured latencies are printed (run with `--nocapture` to see them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{PutRequest, WatchCreateRequest};
use ketch_tests::grpc::{kv_client, stream_channel, WatchSession};
use ketch_tests::{Kind, Server};

const WATCHERS_PER_STREAM: usize = 100;
const STREAMS_PER_CONNECTION: usize = 10;
const PUTS: usize = 30;

/// What one stream's receiver saw: per watch id, the revisions in arrival order, and the
/// arrival time of each (revision, watcher).
struct Seen {
    revs: Vec<Vec<i64>>,
    arrivals: Vec<(i64, Instant)>,
}

#[test]
fn thousands_of_watchers_each_get_every_event_once_in_order() {
    let n: usize = std::env::var("KETCH_WATCH_FANOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let streams = n.div_ceil(WATCHERS_PER_STREAM);
    let kind = match std::env::var("KETCH_WATCH_FANOUT_KIND").as_deref() {
        Ok("etcd") => Kind::Etcd,
        _ => Kind::Ketch,
    };
    let server = Server::start(kind);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let overall = Instant::now() + Duration::from_secs(180);
        let mut channels = Vec::new();
        for _ in 0..streams.div_ceil(STREAMS_PER_CONNECTION) {
            channels.push(stream_channel(&server).await);
        }
        // Even streams watch the key `fan/key`, odd ones the prefix `fan/`.
        let created = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        for i in 0..streams {
            let ch = channels[i / STREAMS_PER_CONNECTION].clone();
            let mut w = WatchSession::open(ch).await;
            let (key, end) = if i % 2 == 0 { ("fan/key", "") } else { ("fan/", "fan0") };
            for _ in 0..WATCHERS_PER_STREAM {
                w.create(WatchCreateRequest {
                    key: key.as_bytes().to_vec().into(),
                    range_end: end.as_bytes().to_vec().into(),
                    ..Default::default()
                })
                .await;
            }
            let created = created.clone();
            let prefix = i % 2 == 1;
            let seen = Arc::new(Mutex::new(Seen {
                revs: vec![Vec::new(); WATCHERS_PER_STREAM],
                arrivals: Vec::new(),
            }));
            let seen2 = seen.clone();
            let task = tokio::spawn(async move {
                let expected = if prefix { PUTS } else { PUTS / 2 };
                loop {
                    let Some(r) = w.next(Duration::from_secs(30)).await else { break };
                    let now = Instant::now();
                    if r.created {
                        assert!(!r.canceled, "create refused: {r:?}");
                        created.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut s = seen2.lock().unwrap();
                    let id = r.watch_id as usize;
                    for ev in &r.events {
                        let rev = ev.kv.as_ref().unwrap().mod_revision;
                        s.revs[id].push(rev);
                        s.arrivals.push((rev, now));
                    }
                    if s.revs.iter().all(|v| v.len() >= expected) {
                        break;
                    }
                }
                // exactly once: nothing more may follow
                if let Some(extra) = w.next(Duration::from_millis(300)).await {
                    panic!("a response after every event had come: {extra:?}");
                }
            });
            receivers.push((prefix, seen, task));
        }
        while created.load(Ordering::Relaxed) < streams * WATCHERS_PER_STREAM {
            assert!(Instant::now() < overall, "watchers were not all created");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Alternate: a put of the key (every watcher) and of another key under the prefix.
        let mut kv = kv_client(&server).await;
        let mut acks: Vec<(i64, bool, Instant)> = Vec::new();
        for i in 0..PUTS {
            let key = if i % 2 == 0 { "fan/key" } else { "fan/other" };
            let resp = kv
                .put(PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    value: format!("v{i}").into_bytes().into(),
                    ..Default::default()
                })
                .await
                .expect("put")
                .into_inner();
            acks.push((resp.header.unwrap().revision, i % 2 == 0, Instant::now()));
            // pace the puts a little so that latency is measured per put, not per burst
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key_revs: Vec<i64> = acks.iter().filter(|a| a.1).map(|a| a.0).collect();
        let all_revs: Vec<i64> = acks.iter().map(|a| a.0).collect();

        let mut latencies: Vec<Duration> = Vec::new();
        let mut last_per_put: Vec<Duration> = vec![Duration::ZERO; acks.len()];
        for (prefix, seen, task) in receivers {
            let left = overall.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, task)
                .await
                .expect("a stream did not get all its events in time")
                .expect("receiver task");
            let s = seen.lock().unwrap();
            let want = if prefix { &all_revs } else { &key_revs };
            for (id, revs) in s.revs.iter().enumerate() {
                assert_eq!(revs, want, "watcher {id} ({})", if prefix { "prefix" } else { "key" });
            }
            for (rev, at) in &s.arrivals {
                let i = acks.iter().position(|a| a.0 == *rev).unwrap();
                let l = at.saturating_duration_since(acks[i].2);
                latencies.push(l);
                last_per_put[i] = last_per_put[i].max(l);
            }
        }
        latencies.sort_unstable();
        last_per_put.sort_unstable();
        let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
        println!(
            "watch fan-out on {}: {} watchers ({} streams on {} connections), {} puts, {} events; \
             put ack → event: p50 {:?}, p99 {:?}, max {:?}; last watcher per put: p50 {:?}, max {:?}",
            kind.label(),
            streams * WATCHERS_PER_STREAM,
            streams,
            channels.len(),
            PUTS,
            latencies.len(),
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            latencies.last().unwrap(),
            pct(&last_per_put, 0.5),
            last_per_put.last().unwrap(),
        );
    });
}

/// Watchers on the two followers of a three-member cluster keep every event, once and in
/// order, while the leader is killed and another is elected between two puts.
#[test]
fn watchers_get_every_event_once_across_a_leader_change() {
    const STREAMS: usize = 10;
    const PER_STREAM: usize = 50;
    const PUTS: usize = 20;
    let mut c = ketch_tests::Cluster::start(Kind::Ketch, 3);
    let (leader, term) = c.wait_leader(Duration::from_secs(20));
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sessions = rt.block_on(async {
        let mut sessions = Vec::new();
        for s in 0..STREAMS {
            let member = &c.members[followers[s % 2]];
            let mut w = WatchSession::open(stream_channel(member).await).await;
            for _ in 0..PER_STREAM {
                w.create(WatchCreateRequest {
                    key: b"lc/".to_vec().into(),
                    range_end: b"lc0".to_vec().into(),
                    ..Default::default()
                })
                .await;
            }
            for _ in 0..PER_STREAM {
                let r = w.expect_next(Duration::from_secs(20)).await;
                assert!(r.created && !r.canceled, "{r:?}");
            }
            sessions.push(w);
        }
        sessions
    });
    let put = |c: &ketch_tests::Cluster, i: usize| {
        // through a follower that stays up; retried while the cluster has no leader
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = c.members[followers[0]]
                .etcdctl()
                .run(&["put", &format!("lc/{i:02}"), "v"]);
            if out.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "put {i} failed: {}",
                out.transcript()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for i in 0..PUTS / 2 {
        put(&c, i);
    }
    c.members[leader].kill9();
    for i in PUTS / 2..PUTS {
        put(&c, i);
    }
    let (_, new_term) = c.wait_leader(Duration::from_secs(20));
    assert!(new_term > term, "a new leader was elected");
    rt.block_on(async {
        for w in &mut sessions {
            let mut keys: Vec<Vec<String>> = vec![Vec::new(); PER_STREAM];
            while keys.iter().map(Vec::len).sum::<usize>() < PER_STREAM * PUTS {
                let r = w.expect_next(Duration::from_secs(30)).await;
                for e in &r.events {
                    keys[r.watch_id as usize]
                        .push(String::from_utf8_lossy(&e.kv.as_ref().unwrap().key).into_owned());
                }
            }
            let want: Vec<String> = (0..PUTS).map(|i| format!("lc/{i:02}")).collect();
            for got in &keys {
                assert_eq!(got, &want, "every put once, in order");
            }
            assert!(
                w.next(Duration::from_millis(300)).await.is_none(),
                "nothing after the last event"
            );
        }
    });
}
