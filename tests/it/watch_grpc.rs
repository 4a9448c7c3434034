//! The Watch service over gRPC, for what etcdctl cannot show: watch ids (client-chosen,
//! duplicates), refused ranges, cancel, progress requests and notifications, filters,
//! fragments, prev_kv on deletes, compaction — each scenario run on ketch and etcd and the
//! responses compared (ids and terms zeroed, revisions kept).

use std::time::Duration;

use ketch_api::etcdserverpb::watch_create_request::FilterType;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchResponse,
};
use ketch_tests::diff::line_diff;
use ketch_tests::grpc::{block_on, kv_client, scrub_watch_response, stream_channel, WatchSession};
use ketch_tests::{Kind, Server, ServerBuilder};

const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that no response comes.
const QUIET: Duration = Duration::from_millis(300);

fn show(r: WatchResponse) -> String {
    format!("{:?}", scrub_watch_response(r))
}

/// Runs `scenario` on ketch and etcd (each from `builder`) and compares the transcripts.
fn compare_grpc<B, F>(builder: B, scenario: F)
where
    B: Fn(Kind) -> ServerBuilder,
    F: AsyncFn(&Server) -> Vec<String> + Sync,
{
    let mut servers = Server::start_all(vec![builder(Kind::Ketch), builder(Kind::Etcd)]);
    let etcd = servers.pop().unwrap();
    let ketch = servers.pop().unwrap();
    let (k, e) = std::thread::scope(|s| {
        let k = s.spawn(|| block_on(scenario(&ketch)));
        let e = s.spawn(|| block_on(scenario(&etcd)));
        (k.join().unwrap(), e.join().unwrap())
    });
    let (k, e) = (k.join("\n"), e.join("\n"));
    assert!(
        k == e,
        "ketch and etcd disagree ('-' etcd, '+' ketch):\n{}",
        line_diff(&e, &k)
    );
}

fn create(key: &str, range_end: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

async fn put(s: &Server, key: &str, value: &str) {
    kv_client(s)
        .await
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put");
}

async fn del(s: &Server, key: &str) {
    kv_client(s)
        .await
        .delete_range(DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("delete");
}

/// The next `n` responses, sorted by watch id (responses of different watches on one stream
/// come in no defined order, in etcd as here).
async fn next_n(w: &mut WatchSession, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(w.expect_next(WAIT).await);
    }
    got.sort_by_key(|r| r.watch_id);
    got.into_iter().map(show).collect()
}

#[test]
fn watch_ids_refusals_cancel_and_progress_requests() {
    compare_grpc(Server::builder, async |s: &Server| {
        let mut out = Vec::new();
        let mut w = WatchSession::open(stream_channel(s).await).await;
        w.create(create("a", "")).await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(WatchCreateRequest {
            watch_id: 5,
            ..create("a", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(create("a", "b")).await; // auto id: the lowest free one
        out.push(show(w.expect_next(WAIT).await));
        w.create(WatchCreateRequest {
            watch_id: 5,
            ..create("x", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(create("b", "a")).await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(create("b", "b")).await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(create("", "\0")).await; // every key
        out.push(show(w.expect_next(WAIT).await));
        put(s, "a", "1").await;
        out.extend(next_n(&mut w, 4).await);
        w.send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 5,
        }))
        .await;
        out.push(show(w.expect_next(WAIT).await));
        w.send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 42,
        }))
        .await;
        out.push(format!(
            "after cancel of an unknown id: {:?}",
            w.next(QUIET).await
        ));
        w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await;
        out.push(show(w.expect_next(WAIT).await));
        // the freed id 5 can be taken again
        w.create(WatchCreateRequest {
            watch_id: 5,
            ..create("a", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        put(s, "a", "2").await;
        out.extend(next_n(&mut w, 4).await);
        out
    });
}

#[test]
fn filters_start_revisions_and_prev_kv_on_deletes() {
    compare_grpc(Server::builder, async |s: &Server| {
        let mut out = Vec::new();
        put(s, "k", "1").await; // 2
        put(s, "k", "2").await; // 3
        let mut w = WatchSession::open(stream_channel(s).await).await;
        let no_put = WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            prev_kv: true,
            ..create("k", "")
        };
        w.create(no_put).await;
        out.push(show(w.expect_next(WAIT).await));
        let no_delete = WatchCreateRequest {
            filters: vec![FilterType::Nodelete as i32],
            start_revision: 2,
            prev_kv: true,
            ..create("k", "")
        };
        w.create(no_delete).await;
        out.push(show(w.expect_next(WAIT).await));
        out.push(show(w.expect_next(WAIT).await)); // history of the NODELETE watch
        let future = WatchCreateRequest {
            start_revision: 6,
            ..create("k", "")
        };
        w.create(future).await;
        out.push(show(w.expect_next(WAIT).await));
        del(s, "k").await; // 4
        out.extend(next_n(&mut w, 1).await);
        put(s, "k", "3").await; // 5
        out.extend(next_n(&mut w, 1).await);
        put(s, "k", "4").await; // 6
        out.extend(next_n(&mut w, 2).await);
        out
    });
}

#[test]
fn a_compacted_start_revision_is_answered_with_the_compact_revision() {
    compare_grpc(Server::builder, async |s: &Server| {
        let mut out = Vec::new();
        for i in 0..4 {
            put(s, "k", &i.to_string()).await; // 2..=5
        }
        kv_client(s)
            .await
            .compact(CompactionRequest {
                revision: 4,
                physical: true,
            })
            .await
            .expect("compact");
        let mut w = WatchSession::open(stream_channel(s).await).await;
        w.create(WatchCreateRequest {
            start_revision: 3,
            ..create("k", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        out.push(show(w.expect_next(WAIT).await));
        w.create(WatchCreateRequest {
            start_revision: 4,
            ..create("k", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        out.push(show(w.expect_next(WAIT).await));
        // the compacted watch keeps its id until cancelled
        w.send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 0,
        }))
        .await;
        out.push(show(w.expect_next(WAIT).await));
        out
    });
}

#[test]
fn large_histories_are_fragmented_when_asked() {
    compare_grpc(Server::builder, async |s: &Server| {
        let mut out = Vec::new();
        let value = "v".repeat(300 * 1024);
        for i in 0..8 {
            put(s, &format!("big/{i}"), &value).await; // 2..=9
        }
        let mut w = WatchSession::open(stream_channel(s).await).await;
        let req = WatchCreateRequest {
            start_revision: 2,
            fragment: true,
            ..create("big/", "big0")
        };
        w.create(req).await;
        out.push(show(w.expect_next(WAIT).await));
        let mut events = 0;
        while events < 8 {
            let r = w.expect_next(WAIT).await;
            events += r.events.len();
            out.push(format!(
                "watch {} fragment {} events {} revision {}",
                r.watch_id,
                r.fragment,
                r.events.len(),
                r.header.unwrap().revision
            ));
        }
        // without fragment: one response
        w.create(WatchCreateRequest {
            start_revision: 2,
            ..create("big/", "big0")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        let r = w.expect_next(WAIT).await;
        out.push(format!(
            "watch {} fragment {} events {}",
            r.watch_id,
            r.fragment,
            r.events.len()
        ));
        out
    });
}

#[test]
fn progress_notify_reports_the_revision_of_idle_watches() {
    let builder = |k| Server::builder(k).arg("--experimental-watch-progress-notify-interval=300ms");
    compare_grpc(builder, async |s: &Server| {
        let mut out = Vec::new();
        put(s, "k", "1").await; // 2
        let mut w = WatchSession::open(stream_channel(s).await).await;
        w.create(WatchCreateRequest {
            progress_notify: true,
            ..create("k", "")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        w.create(create("other", "")).await; // no progress for this one
        out.push(show(w.expect_next(WAIT).await));
        out.push(show(w.expect_next(WAIT).await)); // progress at 2
        put(s, "k", "2").await; // 3
        out.push(show(w.expect_next(WAIT).await));
        put(s, "x", "1").await; // 4, not watched
                                // the next notification after an idle period carries the newest revision
        let mut r = w.expect_next(WAIT).await;
        while r.header.as_ref().unwrap().revision < 4 {
            r = w.expect_next(WAIT).await;
        }
        out.push(show(r));
        out
    });
}

#[test]
fn the_events_of_one_revision_come_in_one_response() {
    use ketch_api::etcdserverpb::request_op::Request;
    use ketch_api::etcdserverpb::{RequestOp, TxnRequest};
    compare_grpc(Server::builder, async |s: &Server| {
        let mut out = Vec::new();
        let mut w = WatchSession::open(stream_channel(s).await).await;
        w.create(WatchCreateRequest {
            prev_kv: true,
            ..create("t/", "t0")
        })
        .await;
        out.push(show(w.expect_next(WAIT).await));
        put(s, "t/b", "0").await; // 2
        out.push(show(w.expect_next(WAIT).await));
        let op = |k: &str, v: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.as_bytes().to_vec().into(),
                value: v.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        };
        let del = RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: "t/b".into(),
                ..Default::default()
            })),
        };
        let txn = TxnRequest {
            success: vec![op("t/c", "1"), op("t/a", "1"), del, op("u", "x")],
            ..Default::default()
        };
        kv_client(s).await.txn(txn).await.expect("txn"); // 3
        out.push(show(w.expect_next(WAIT).await));
        out.push(format!("then: {:?}", w.next(QUIET).await.map(show)));
        out
    });
}
