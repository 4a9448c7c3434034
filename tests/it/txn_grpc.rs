//! Txn features etcdctl 3.4 cannot express, sent over gRPC to ketch and etcd and compared:
//! nested txns, compares over a key range, compares on the lease of a key without a lease.

use ketch_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ketch_api::etcdserverpb::request_op::Request;
use ketch_api::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ketch_tests::diff::line_diff;
use ketch_tests::grpc::{block_on, kv_client, outcome, scrub_txn_response};
use ketch_tests::{Kind, Server};

fn put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

fn get(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: range_end.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

fn del(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: range_end.as_bytes().to_vec().into(),
            prev_kv: true,
        })),
    }
}

fn nested(txn: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(txn)),
    }
}

fn cmp(key: &str, range_end: &str, result: CompareResult, target: TargetUnion) -> Compare {
    let t = match &target {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        target_union: Some(target),
    }
}

fn value(v: &str) -> TargetUnion {
    TargetUnion::Value(v.as_bytes().to_vec().into())
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// Sends each txn to a fresh ketch and a fresh etcd (after `setup` puts) and compares the
/// scrubbed responses (or error code and message). Returns etcd's results: one per txn, then
/// the final state.
fn compare_txns(setup: &[(&str, &str)], txns: Vec<TxnRequest>) -> Vec<String> {
    let servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let runs: Vec<Vec<String>> = servers
        .iter()
        .map(|server| {
            block_on(async {
                let mut kv = kv_client(server).await;
                for (k, v) in setup {
                    let Some(Request::RequestPut(p)) = put(k, v).request else {
                        unreachable!()
                    };
                    kv.put(p).await.expect("setup put");
                }
                let mut out = Vec::new();
                for t in &txns {
                    let result = kv.txn(t.clone()).await;
                    out.push(match result {
                        Ok(resp) => format!("{:#?}", scrub_txn_response(resp.into_inner())),
                        Err(_) => outcome(&result),
                    });
                }
                let all = kv
                    .range(RangeRequest {
                        key: b"\0".to_vec().into(),
                        range_end: b"\0".to_vec().into(),
                        ..Default::default()
                    })
                    .await
                    .expect("final range")
                    .into_inner();
                out.push(format!(
                    "final revision {}, kvs {:#?}",
                    all.header.map_or(-1, |h| h.revision),
                    all.kvs
                ));
                out
            })
        })
        .collect();
    let (ketch, etcd) = (&runs[0], &runs[1]);
    let mut report = String::new();
    for (i, (k, e)) in ketch.iter().zip(etcd).enumerate() {
        if k != e {
            let what = if i < txns.len() {
                format!("txn {}", i + 1)
            } else {
                "final state".to_string()
            };
            report.push_str(&format!(
                "\n==== {what} ('-' etcd, '+' ketch)\n{}",
                line_diff(e, k)
            ));
        }
    }
    assert!(
        report.is_empty(),
        "{} and etcd disagree:{report}",
        Kind::Ketch.label()
    );
    etcd.clone()
}

fn brief(result: &str) -> String {
    result.lines().take(3).collect::<Vec<_>>().join(" ")
}

#[test]
fn nested_txn_runs_the_inner_branch_its_compares_choose() {
    use CompareResult::*;
    let etcd = compare_txns(
        &[("a", "1"), ("b", "2")],
        vec![
            txn(
                vec![cmp("a", "", Equal, value("1"))],
                vec![
                    put("c", "outer"),
                    nested(txn(
                        vec![cmp("b", "", Equal, value("2"))],
                        vec![put("d", "inner-then"), get("a", "")],
                        vec![put("d", "inner-else")],
                    )),
                ],
                vec![put("never", "x")],
            ),
            // A nested compare sees the state before the whole txn, not the outer puts.
            txn(
                vec![],
                vec![
                    put("e", "new"),
                    nested(txn(
                        vec![cmp("e", "", Equal, value("new"))],
                        vec![put("f", "saw-the-outer-put")],
                        vec![put("f", "did-not")],
                    )),
                ],
                vec![],
            ),
            txn(
                vec![cmp("a", "", NotEqual, value("1"))],
                vec![],
                vec![nested(txn(
                    vec![],
                    vec![nested(txn(vec![], vec![get("a", "z")], vec![]))],
                    vec![],
                ))],
            ),
        ],
    );
    // etcd itself: the nested txn's own compare decided (d = inner-then), and the nested compare
    // did not see the outer put of e (f = did-not).
    let last = etcd.last().unwrap();
    assert!(
        last.contains("inner-then") && last.contains("did-not"),
        "etcd: {last}"
    );
}

#[test]
fn nested_txn_validation_matches_etcd() {
    let many: Vec<RequestOp> = (0..129).map(|i| get(&format!("g{i}"), "")).collect();
    let etcd = compare_txns(
        &[("a", "1")],
        vec![
            // the same key written by the outer and the inner txn
            txn(
                vec![],
                vec![
                    put("x", "1"),
                    nested(txn(vec![], vec![put("x", "2")], vec![])),
                ],
                vec![],
            ),
            // written in both branches of the inner txn: only one branch runs
            txn(
                vec![],
                vec![nested(txn(
                    vec![],
                    vec![put("y", "1")],
                    vec![put("y", "2")],
                ))],
                vec![],
            ),
            // a delete range covering an inner put
            txn(
                vec![],
                vec![
                    del("k", "l"),
                    nested(txn(vec![], vec![put("k1", "1")], vec![])),
                ],
                vec![],
            ),
            // too many operations inside the nested txn
            txn(
                vec![],
                vec![nested(txn(vec![], many.clone(), vec![]))],
                vec![],
            ),
            txn(
                vec![],
                vec![nested(txn(vec![], many[..128].to_vec(), vec![]))],
                vec![],
            ),
            txn(
                vec![],
                vec![nested(txn(vec![], many[..127].to_vec(), vec![]))],
                vec![],
            ),
        ],
    );
    // etcd itself: duplicates across nesting levels and too many nested ops are rejected;
    // a nested txn may use only what the outer txn leaves of the 128-operation budget.
    let briefs: Vec<String> = etcd.iter().map(|r| brief(r)).collect();
    assert!(
        briefs[0].contains("duplicate key given in txn request"),
        "{briefs:?}"
    );
    assert!(briefs[1].starts_with("TxnResponse"), "{briefs:?}");
    assert!(
        briefs[2].contains("duplicate key given in txn request"),
        "{briefs:?}"
    );
    assert!(
        briefs[3].contains("too many operations in txn request"),
        "{briefs:?}"
    );
    assert!(
        briefs[4].contains("too many operations in txn request"),
        "{briefs:?}"
    );
    assert!(briefs[5].starts_with("TxnResponse"), "{briefs:?}");
}

#[test]
fn compare_over_a_key_range_and_on_lease() {
    use CompareResult::*;
    let etcd = compare_txns(
        &[("k1", "a"), ("k2", "b"), ("k3", "c"), ("k2", "bb")],
        vec![
            txn(
                vec![cmp("k", "l", Greater, TargetUnion::Version(0))],
                vec![put("r1", "all")],
                vec![put("r1", "not")],
            ),
            txn(
                vec![cmp("k", "l", Equal, TargetUnion::Version(1))],
                vec![put("r2", "all")],
                vec![put("r2", "not")],
            ),
            txn(
                vec![cmp("k", "l", Less, TargetUnion::ModRevision(6))],
                vec![put("r3", "all")],
                vec![put("r3", "not")],
            ),
            txn(
                vec![cmp("k", "\0", Greater, TargetUnion::CreateRevision(1))],
                vec![get("k", "l")],
                vec![],
            ),
            txn(
                vec![cmp("k1", "", Equal, TargetUnion::Lease(0))],
                vec![put("r4", "no-lease")],
                vec![put("r4", "lease")],
            ),
            txn(
                vec![cmp("none", "", Equal, TargetUnion::Lease(0))],
                vec![put("r5", "t")],
                vec![put("r5", "f")],
            ),
            txn(
                vec![cmp("k1", "", Greater, value(""))],
                vec![put("r6", "t")],
                vec![put("r6", "f")],
            ),
            txn(vec![cmp("", "", Equal, value(""))], vec![], vec![]),
        ],
    );
    // etcd itself: a compare with an empty key is rejected.
    assert!(
        brief(&etcd[7]).contains("key is not provided"),
        "{}",
        etcd[7]
    );
}
