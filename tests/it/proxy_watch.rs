//! Watch coalescing in the proxy: many client watchers on one range share one upstream watch,
//! each still gets every event once and in order, and what a watcher sees through the proxy
//! equals what it sees on a member, for every create option.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::kv_client::KvClient;
use ketch_api::etcdserverpb::watch_create_request::FilterType;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::{
    DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchCreateRequest, WatchResponse,
};
use ketch_tests::grpc::{
    block_on, scrub_watch_response, stream_channel, stream_channel_to, WatchSession,
};
use ketch_tests::proxy::ProxyProcess;
use ketch_tests::{http_get, Kind, Server};

const WAIT: Duration = Duration::from_secs(20);

fn proxy_in_front_of(s: &Server) -> ProxyProcess {
    ProxyProcess::start(&[
        "--proxy=on",
        &format!("--initial-cluster={}={}", s.name(), s.peer_url()),
    ])
}

fn stats(p: &ProxyProcess) -> (u64, u64) {
    let r = http_get(p.addr(), "/ketch/proxy/stats", Duration::from_secs(5)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (
        v["client_watches"].as_u64().unwrap(),
        v["upstream_watches"].as_u64().unwrap(),
    )
}

fn wait_stats(p: &ProxyProcess, want: (u64, u64)) {
    let deadline = Instant::now() + WAIT;
    while stats(p) != want {
        assert!(
            Instant::now() < deadline,
            "proxy stats {:?}, want {want:?}",
            stats(p)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[test]
fn a_thousand_watchers_on_one_key_share_one_upstream_watch_and_miss_nothing() {
    const STREAMS: usize = 10;
    const PER_STREAM: usize = 100;
    const PUTS: i64 = 30;
    let member = Server::start(Kind::Ketch);
    let proxy = proxy_in_front_of(&member);
    let url = format!("http://{}", proxy.endpoint());
    block_on(async {
        let mut sessions = Vec::new();
        for _ in 0..STREAMS {
            let s = WatchSession::open(stream_channel_to(&url).await).await;
            for i in 0..PER_STREAM {
                s.create(WatchCreateRequest {
                    prev_kv: i % 2 == 0,
                    ..create("hot")
                })
                .await;
            }
            sessions.push(s);
        }
        let mut created = 0;
        for s in &mut sessions {
            for _ in 0..PER_STREAM {
                let r = s.expect_next(WAIT).await;
                assert!(r.created && !r.canceled, "{r:?}");
                created += 1;
            }
        }
        assert_eq!(created, STREAMS * PER_STREAM);
        wait_stats(&proxy, ((STREAMS * PER_STREAM) as u64, 1));
        let mut kv = KvClient::new(stream_channel_to(&url).await);
        let mut revs = Vec::new();
        for i in 0..PUTS {
            let r = kv
                .put(PutRequest {
                    key: "hot".into(),
                    value: format!("v{i}").into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            revs.push(r.into_inner().header.unwrap().revision);
        }
        for s in &mut sessions {
            let mut per_watch: HashMap<i64, Vec<(i64, bool)>> = HashMap::new();
            while per_watch.values().map(Vec::len).sum::<usize>() < PER_STREAM * PUTS as usize {
                let r = s.expect_next(WAIT).await;
                for e in &r.events {
                    per_watch
                        .entry(r.watch_id)
                        .or_default()
                        .push((e.kv.as_ref().unwrap().mod_revision, e.prev_kv.is_some()));
                }
            }
            assert_eq!(per_watch.len(), PER_STREAM);
            for (id, seen) in per_watch {
                let got: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
                assert_eq!(got, revs, "watch {id}: every put once, in order");
                // prev_kv only for the watchers that asked (even ids asked), and only once
                // there was a previous value
                let asked = id % 2 == 0;
                assert!(
                    seen.iter().skip(1).all(|(_, has)| *has == asked),
                    "watch {id} prev_kv"
                );
            }
            assert!(
                s.next(Duration::from_millis(200)).await.is_none(),
                "nothing after the last event"
            );
        }
    });
}

/// The same create requests on a member and through the proxy; the same writes; the
/// responses must match (ids and terms aside).
#[test]
fn through_the_proxy_each_watch_option_answers_as_a_member_does() {
    let member = Server::start(Kind::Ketch);
    let proxy = proxy_in_front_of(&member);
    let url = format!("http://{}", proxy.endpoint());
    block_on(async {
        let mut kv = KvClient::new(stream_channel(&member).await);
        for (k, v) in [("a", "1"), ("b", "1"), ("a", "2")] {
            kv.put(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let creates = vec![
            create("a"),
            WatchCreateRequest {
                prev_kv: true,
                ..create("a")
            },
            WatchCreateRequest {
                filters: vec![FilterType::Noput as i32],
                ..create("a")
            },
            WatchCreateRequest {
                filters: vec![FilterType::Nodelete as i32],
                prev_kv: true,
                ..create("a")
            },
            WatchCreateRequest {
                start_revision: 1,
                ..create("a")
            },
            WatchCreateRequest {
                start_revision: 3,
                prev_kv: true,
                ..create("a")
            },
            WatchCreateRequest {
                range_end: "c".into(),
                ..create("a")
            },
            WatchCreateRequest {
                range_end: "\0".into(),
                ..create("b")
            },
            WatchCreateRequest {
                watch_id: 77,
                ..create("b")
            },
            WatchCreateRequest {
                watch_id: 77,
                ..create("b")
            }, // duplicate id: refused
            WatchCreateRequest {
                range_end: "a".into(),
                ..create("b")
            }, // empty range: refused
        ];
        let mut direct = WatchSession::open(stream_channel(&member).await).await;
        let mut via = WatchSession::open(stream_channel_to(&url).await).await;
        let mut got: [Vec<WatchResponse>; 2] = [Vec::new(), Vec::new()];
        for c in &creates {
            for (i, s) in [&mut direct, &mut via].into_iter().enumerate() {
                s.create(c.clone()).await;
                got[i].push(s.expect_next(WAIT).await);
            }
        }
        // history of the watches that asked for it
        for (i, s) in [&mut direct, &mut via].into_iter().enumerate() {
            for _ in 0..2 {
                got[i].push(s.expect_next(WAIT).await);
            }
        }
        for (k, v) in [("a", "3"), ("b", "2")] {
            kv.put(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        kv.delete_range(DeleteRangeRequest {
            key: "a".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
        for (i, s) in [&mut direct, &mut via].into_iter().enumerate() {
            // the events of the three writes (until quiet), then a cancel: a cancel racing
            // events may drop those not yet sent, on a member as through the proxy
            while let Some(r) = s.next(Duration::from_millis(700)).await {
                got[i].push(r);
            }
            s.send(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 0,
            }))
            .await;
            got[i].push(s.expect_next(WAIT).await);
        }
        // Order matters per watch id (and for the refusals, by request); between watches a
        // stream may interleave differently.
        let [d, v] = got.map(|rs| {
            let mut rs: Vec<(i64, usize, String)> = rs
                .into_iter()
                .enumerate()
                .map(|(i, r)| (r.watch_id, i, format!("{:?}", scrub_watch_response(r))))
                .collect();
            rs.sort_by_key(|(id, i, _)| (*id, *i));
            rs.into_iter()
                .map(|(_, _, r)| r)
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(
            d == v,
            "member and proxy differ:\n--- member\n{d}\n--- proxy\n{v}"
        );
    });
}
