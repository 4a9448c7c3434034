//! In-process tests of one member: start it on a loopback port in a temp dir, drive it through
//! the real gRPC API, stop and restart it.

use std::time::Duration;

use ketch_api::etcdserverpb::kv_client::KvClient;
use ketch_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ketch_api::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, StatusRequest, TxnRequest,
};
use ketch_core::config::MemberConfig;
use ketch_core::Member;
use tonic::transport::Channel;
use url::Url;

fn config(dir: &std::path::Path) -> MemberConfig {
    let client = Url::parse("http://127.0.0.1:0").unwrap();
    MemberConfig {
        data_dir: dir.join("default.etcd"),
        listen_client_urls: vec![client.clone()],
        advertise_client_urls: vec![client.clone()],
        // a single member talks to no peer, but binds its peer URL: keep off 2380
        listen_peer_urls: vec![client],
        ..Default::default()
    }
}

async fn client(m: &Member) -> KvClient<Channel> {
    let addr = m.client_addrs()[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = KvClient::connect(format!("http://{addr}")).await {
            // Ready once a linearizable read succeeds (a leader exists and has applied).
            if c.range(RangeRequest {
                key: "x".into(),
                ..Default::default()
            })
            .await
            .is_ok()
            {
                return c;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.as_bytes().to_vec().into(),
        value: v.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: k.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_restart_with_same_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let m = Member::start(config(dir.path())).await.unwrap();
    let mut kv = client(&m).await;
    let r1 = kv.put(put("a", "1")).await.unwrap().into_inner();
    let r2 = kv.put(put("a", "2")).await.unwrap().into_inner();
    let rev1 = r1.header.unwrap().revision;
    let rev2 = r2.header.unwrap().revision;
    assert_eq!(rev2, rev1 + 1);
    kv.put(put("b", "x")).await.unwrap();
    kv.delete_range(DeleteRangeRequest {
        key: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    kv.compact(CompactionRequest {
        revision: rev2,
        physical: true,
    })
    .await
    .unwrap();
    m.stop().await;

    let m = Member::start(config(dir.path())).await.unwrap();
    let mut kv = client(&m).await;
    let got = kv.range(get("a")).await.unwrap().into_inner();
    assert_eq!(got.kvs.len(), 1);
    let a = &got.kvs[0];
    assert_eq!(&a.value[..], b"2");
    assert_eq!(a.mod_revision, rev2);
    assert_eq!(a.create_revision, rev1);
    assert_eq!(a.version, 2);
    assert!(kv
        .range(get("b"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    let header = got.header.unwrap();
    assert_eq!(header.revision, rev2 + 2);
    let err = kv
        .range(RangeRequest {
            revision: rev1,
            ..get("a")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_and_errors_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let m = Member::start(config(dir.path())).await.unwrap();
    let mut kv = client(&m).await;
    kv.put(put("k", "v1")).await.unwrap();
    let txn = TxnRequest {
        compare: vec![Compare {
            key: "k".into(),
            target: compare::CompareTarget::Value as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Value("v1".into())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("k", "v2"))),
        }],
        failure: vec![],
    };
    let resp = kv.txn(txn.clone()).await.unwrap().into_inner();
    assert!(resp.succeeded);
    let resp = kv.txn(txn).await.unwrap().into_inner();
    assert!(!resp.succeeded);

    let err = kv.put(put("", "v")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: key is not provided");
    let err = kv
        .range(RangeRequest {
            revision: 1000,
            ..get("k")
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let big = "x".repeat(1536 * 1024 + 1);
    let err = kv.put(put("big", &big)).await.unwrap_err();
    assert_eq!(err.message(), "etcdserver: request is too large");
    let err = kv
        .put(PutRequest {
            lease: 42,
            ..put("l", "v")
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: requested lease not found");

    let addr = m.client_addrs()[0];
    let mut mc = MaintenanceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let st = mc.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.leader, m.member_id());
    assert!(st.raft_index >= st.raft_applied_index && st.raft_applied_index > 0);
    m.stop().await;
}
