//! Store-level tests: etcd's semantics through the public API, persistence, and concurrency.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ketch_api::mvccpb::{event::EventType, KeyValue};
use ketch_api::status::EtcdError;
use redb::ReadableTable;

use crate::revision::Revision;
use crate::{LeaseChange, Store, StoreError};

fn open_tmp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
        ..Default::default()
    }
}

fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        prev_kv: false,
    }
}

fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        ..Default::default()
    }
}

/// Applies one put in its own committed batch; returns the response revision.
fn put(store: &Store, k: &str, v: &str) -> i64 {
    let mut b = store.write().unwrap();
    let rev = b.put(&put_req(k, v)).unwrap().header.unwrap().revision;
    b.commit(false).unwrap();
    rev
}

fn delete(store: &Store, k: &str, end: &str) -> (i64, i64) {
    let mut b = store.write().unwrap();
    let r = b.delete_range(&del_req(k, end)).unwrap();
    b.commit(false).unwrap();
    (r.deleted, r.header.unwrap().revision)
}

fn get_at(store: &Store, k: &str, rev: i64) -> Option<KeyValue> {
    let mut req = range_req(k, "");
    req.revision = rev;
    store.range(&req).unwrap().kvs.pop()
}

fn get(store: &Store, k: &str) -> Option<KeyValue> {
    get_at(store, k, 0)
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
        .collect()
}

fn value(kv: &KeyValue) -> String {
    String::from_utf8(kv.value.to_vec()).unwrap()
}

/// Every row of the backend's `key` table: (main, sub, tombstone).
fn rows(store: &Store) -> Vec<(i64, i64, bool)> {
    let snap = store.snapshot();
    snap.kv
        .iter()
        .unwrap()
        .map(|r| {
            let (k, _) = r.unwrap();
            let (rev, t) = Revision::from_key(k.value()).unwrap();
            (rev.main, rev.sub, t)
        })
        .collect()
}

fn txn_op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn cmp(
    target: CompareTarget,
    result: CompareResult,
    key: &str,
    end: &str,
    union: Option<TargetUnion>,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        target_union: union,
    }
}

#[test]
fn revisions_versions_and_create_revision_across_put_delete_recreate() {
    let (_d, s) = open_tmp();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.compact_revision(), -1);
    assert_eq!(put(&s, "foo", "1"), 2);
    let kv = get(&s, "foo").unwrap();
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            value(&kv).as_str()
        ),
        (2, 2, 1, "1")
    );
    assert_eq!(put(&s, "foo", "2"), 3);
    let kv = get(&s, "foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(delete(&s, "foo", ""), (1, 4));
    assert!(get(&s, "foo").is_none());
    // deleting nothing makes no revision
    assert_eq!(delete(&s, "foo", ""), (0, 4));
    assert_eq!(s.current_revision(), 4);
    assert_eq!(put(&s, "foo", "3"), 5);
    let kv = get(&s, "foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // the history is readable
    assert_eq!(value(&get_at(&s, "foo", 2).unwrap()), "1");
    assert_eq!(get_at(&s, "foo", 3).unwrap().version, 2);
    assert!(get_at(&s, "foo", 4).is_none());
    assert_eq!(get_at(&s, "foo", 5).unwrap().create_revision, 5);
}

#[test]
fn one_revision_per_txn_with_sub_revisions() {
    let (_d, s) = open_tmp();
    put(&s, "c", "0");
    let mut b = s.write().unwrap();
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(Request::RequestPut(put_req("a", "1"))),
            txn_op(Request::RequestPut(put_req("b", "2"))),
            txn_op(Request::RequestDeleteRange(del_req("c", ""))),
        ],
        failure: vec![],
    };
    let r = b.txn(&t).unwrap();
    assert_eq!(r.header.unwrap().revision, 3);
    let events = b.commit(false).unwrap();
    assert_eq!(events.len(), 3);
    let kinds: Vec<(i32, i64)> = events
        .iter()
        .map(|e| (e.r#type, e.kv.as_ref().unwrap().mod_revision))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put as i32, 3),
            (EventType::Put as i32, 3),
            (EventType::Delete as i32, 3)
        ]
    );
    let del = events[2].kv.as_ref().unwrap();
    assert_eq!(
        (
            &del.key[..],
            del.create_revision,
            del.version,
            del.value.len()
        ),
        (&b"c"[..], 0, 0, 0)
    );
    assert_eq!(
        rows(&s),
        [(2, 0, false), (3, 0, false), (3, 1, false), (3, 2, true)]
    );
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn reads_at_old_revisions_and_their_errors() {
    let (_d, s) = open_tmp();
    for i in 0..5 {
        put(&s, "k", &i.to_string());
    }
    // revisions 2..=6
    for rev in 2..=6 {
        let mut req = range_req("k", "");
        req.revision = rev;
        let resp = s.range(&req).unwrap();
        // the header always carries the current revision
        assert_eq!(resp.header.unwrap().revision, 6);
        assert_eq!(value(&resp.kvs[0]), (rev - 2).to_string());
    }
    let mut req = range_req("k", "");
    req.revision = 1;
    assert_eq!(s.range(&req).unwrap().kvs.len(), 0);
    req.revision = 7;
    assert_eq!(s.range(&req).unwrap_err(), EtcdError::FutureRev);
    req.revision = -3; // etcd reads a negative revision as the current one
    assert_eq!(value(&s.range(&req).unwrap().kvs[0]), "4");
    let mut b = s.write().unwrap();
    b.compact(4).unwrap();
    b.commit(false).unwrap();
    req.revision = 3;
    assert_eq!(s.range(&req).unwrap_err(), EtcdError::Compacted);
    req.revision = 4; // the compact revision itself is still readable
    assert_eq!(value(&s.range(&req).unwrap().kvs[0]), "2");
}

#[test]
fn compaction_keeps_the_newest_revision_of_each_live_key() {
    let (_d, s) = open_tmp();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    put(&s, "b", "1"); // 4
    delete(&s, "b", ""); // 5
    put(&s, "c", "1"); // 6
    put(&s, "a", "3"); // 7
    delete(&s, "c", ""); // 8
    put(&s, "c", "2"); // 9
    assert_eq!(rows(&s).len(), 8);

    let mut b = s.write().unwrap();
    assert_eq!(b.compact(10).unwrap_err(), EtcdError::FutureRev);
    let resp = b.compact(6).unwrap();
    assert_eq!(resp.header.unwrap().revision, 9);
    assert_eq!(b.compact(6).unwrap_err(), EtcdError::Compacted);
    assert_eq!(b.compact(5).unwrap_err(), EtcdError::Compacted);
    // reads inside the batch already see the compaction
    let mut r = range_req("a", "");
    r.revision = 5;
    assert_eq!(b.range(&r).unwrap_err(), EtcdError::Compacted);
    // ... but readers do not until it commits
    assert_eq!(s.range(&r).unwrap().kvs.len(), 1);
    b.commit(false).unwrap();

    assert_eq!(s.compact_revision(), 6);
    assert_eq!(
        rows(&s),
        [
            (3, 0, false),
            (6, 0, false),
            (7, 0, false),
            (8, 0, true),
            (9, 0, false)
        ]
    );
    assert_eq!(s.range(&r).unwrap_err(), EtcdError::Compacted);
    assert_eq!(value(&get_at(&s, "a", 6).unwrap()), "2");
    assert_eq!(value(&get_at(&s, "c", 6).unwrap()), "1");
    assert!(get_at(&s, "b", 6).is_none());
    assert!(get_at(&s, "c", 8).is_none());
    let a = get(&s, "a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 7, 3));

    let mut b = s.write().unwrap();
    b.compact(9).unwrap();
    b.commit(true).unwrap();
    assert_eq!(rows(&s), [(7, 0, false), (9, 0, false)]);
    let c = get(&s, "c").unwrap();
    assert_eq!((c.create_revision, c.version), (9, 1));
    let all = s.range(&range_req("\0", "\0")).unwrap();
    assert_eq!(keys(&all.kvs), ["a", "c"]);
}

#[test]
fn compaction_of_everything_keeps_the_revision_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        put(&s, "x", "1");
        delete(&s, "x", "");
        let mut b = s.write().unwrap();
        b.compact(3).unwrap();
        b.commit(true).unwrap();
        assert!(rows(&s).is_empty());
    }
    let s = Store::open(&path).unwrap();
    assert_eq!((s.current_revision(), s.compact_revision()), (3, 3));
    assert_eq!(put(&s, "x", "2"), 4);
    assert_eq!(get(&s, "x").unwrap().create_revision, 4);
}

/// a: c2 m7 v2 "5" | b: c3 m3 v1 "4" | c: c4 m9 v3 "3" | d: c5 m5 v1 "2" | e: c6 m6 v1 "1"
fn sort_fixture() -> (tempfile::TempDir, Store) {
    let (d, s) = open_tmp();
    for (k, v) in [
        ("a", "5"),
        ("b", "4"),
        ("c", "3"),
        ("d", "2"),
        ("e", "1"),
        ("a", "5"),
        ("c", "3"),
        ("c", "3"),
    ] {
        put(&s, k, v);
    }
    (d, s)
}

fn ranged(s: &Store, f: impl FnOnce(&mut RangeRequest)) -> (Vec<String>, i64, bool) {
    let mut req = range_req("a", "z");
    f(&mut req);
    let r = s.range(&req).unwrap();
    (keys(&r.kvs), r.count, r.more)
}

/// What goes on the wire for a range is the same whether the values are held or read while
/// encoding, for every shape of request.
#[test]
fn range_for_wire_encodes_exactly_as_range() {
    use prost::Message;
    let (_d, s) = sort_fixture();
    let mut b = s.write().unwrap();
    let mut leased = put_req("f", &"v".repeat(200));
    leased.lease = 0x7fff_0000_0001;
    b.put(&leased).unwrap();
    b.put(&put_req("g", "")).unwrap();
    b.commit(false).unwrap();
    type Shape = Box<dyn Fn(&mut RangeRequest)>;
    let shapes: Vec<Shape> = vec![
        Box::new(|_| {}),
        Box::new(|r| r.limit = 2),
        Box::new(|r| r.keys_only = true),
        Box::new(|r| r.count_only = true),
        Box::new(|r| r.revision = 5),
        Box::new(|r| r.sort_order = SortOrder::Descend as i32),
        Box::new(|r| {
            r.sort_target = SortTarget::Value as i32;
            r.limit = 3;
        }),
        Box::new(|r| {
            r.sort_target = SortTarget::Mod as i32;
            r.sort_order = SortOrder::Descend as i32;
        }),
        Box::new(|r| r.min_mod_revision = 6),
        Box::new(|r| r.range_end = Bytes::new()),
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let mut req = range_req("a", "z");
        shape(&mut req);
        let held = s.range(&req).unwrap();
        let wire = s.range_for_wire(&req).unwrap();
        assert_eq!(wire.kv_count(), held.kvs.len(), "shape {i}");
        let encoded = wire.encode_to_vec();
        assert_eq!(encoded, held.encode_to_vec(), "shape {i}");
        assert_eq!(encoded.len(), wire.encoded_len(), "shape {i}");
    }
    // the deferred answer reads its own snapshot, untouched by later writes and compaction
    let req = range_req("a", "z");
    let before = s.range(&req).unwrap().encode_to_vec();
    let wire = s.range_for_wire(&req).unwrap();
    put(&s, "a", "changed");
    let mut b = s.write().unwrap();
    b.compact(s.current_revision()).unwrap();
    b.commit(true).unwrap();
    assert_eq!(wire.encode_to_vec(), before);
}

#[test]
fn range_sorts_by_every_target_both_ways() {
    let (_d, s) = sort_fixture();
    let cases: &[(SortTarget, SortOrder, &[&str])] = &[
        (SortTarget::Key, SortOrder::None, &["a", "b", "c", "d", "e"]),
        (
            SortTarget::Key,
            SortOrder::Ascend,
            &["a", "b", "c", "d", "e"],
        ),
        (
            SortTarget::Key,
            SortOrder::Descend,
            &["e", "d", "c", "b", "a"],
        ),
        (
            SortTarget::Version,
            SortOrder::Ascend,
            &["b", "d", "e", "a", "c"],
        ),
        (
            SortTarget::Version,
            SortOrder::Descend,
            &["c", "a", "b", "d", "e"],
        ),
        (
            SortTarget::Version,
            SortOrder::None,
            &["b", "d", "e", "a", "c"],
        ),
        (
            SortTarget::Create,
            SortOrder::Ascend,
            &["a", "b", "c", "d", "e"],
        ),
        (
            SortTarget::Create,
            SortOrder::Descend,
            &["e", "d", "c", "b", "a"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Ascend,
            &["b", "d", "e", "a", "c"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Descend,
            &["c", "a", "e", "d", "b"],
        ),
        (
            SortTarget::Value,
            SortOrder::Ascend,
            &["e", "d", "c", "b", "a"],
        ),
        (
            SortTarget::Value,
            SortOrder::Descend,
            &["a", "b", "c", "d", "e"],
        ),
    ];
    for &(target, order, want) in cases {
        let (got, count, more) = ranged(&s, |r| {
            r.sort_target = target as i32;
            r.sort_order = order as i32;
        });
        assert_eq!(got, want, "{target:?} {order:?}");
        assert_eq!((count, more), (5, false));
        // with a limit: the first two of the same order, count unchanged, more set
        let (got, count, more) = ranged(&s, |r| {
            r.sort_target = target as i32;
            r.sort_order = order as i32;
            r.limit = 2;
        });
        if order == SortOrder::None && target != SortTarget::Key {
            continue; // etcd's quirk, tested below
        }
        assert_eq!(got, want[..2], "{target:?} {order:?} limit 2");
        assert_eq!((count, more), (5, true));
    }
    // etcd 3.4 sorts only the first limit+1 keys when the order is NONE
    let (got, count, more) = ranged(&s, |r| {
        r.sort_target = SortTarget::Version as i32;
        r.limit = 2;
    });
    assert_eq!(
        (got, count, more),
        (vec!["b".to_string(), "a".to_string()], 5, true)
    );
    let (got, _, _) = ranged(&s, |r| {
        r.sort_target = SortTarget::Value as i32;
        r.limit = 3;
    });
    assert_eq!(got, ["d", "c", "b"]);
}

#[test]
fn range_limit_count_more_and_projections() {
    let (_d, s) = sort_fixture();
    assert_eq!(
        ranged(&s, |_| {}),
        (
            vec!["a", "b", "c", "d", "e"]
                .into_iter()
                .map(String::from)
                .collect(),
            5,
            false
        )
    );
    let (got, count, more) = ranged(&s, |r| r.limit = 2);
    assert_eq!(
        (got.as_slice(), count, more),
        (&["a".to_string(), "b".to_string()][..], 5, true)
    );
    assert!(!ranged(&s, |r| r.limit = 5).2);
    assert!(!ranged(&s, |r| r.limit = 6).2);
    assert!(ranged(&s, |r| r.limit = 4).2);

    let mut req = range_req("a", "z");
    req.keys_only = true;
    let r = s.range(&req).unwrap();
    assert_eq!(r.kvs.len(), 5);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let c = &r.kvs[2];
    assert_eq!((c.create_revision, c.mod_revision, c.version), (4, 9, 3));

    let mut req = range_req("a", "z");
    req.count_only = true;
    req.limit = 1;
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));

    // full key-values
    let r = s.range(&range_req("c", "")).unwrap();
    let c = &r.kvs[0];
    assert_eq!(
        (
            value(c).as_str(),
            c.create_revision,
            c.mod_revision,
            c.version,
            c.lease
        ),
        ("3", 4, 9, 3, 0)
    );
    assert_eq!(r.header.unwrap().revision, 9);
}

#[test]
fn range_filters_on_mod_and_create_revision() {
    let (_d, s) = sort_fixture();
    let s = &s;
    assert_eq!(ranged(s, |r| r.min_mod_revision = 6).0, ["a", "c", "e"]);
    assert_eq!(ranged(s, |r| r.max_mod_revision = 5).0, ["b", "d"]);
    assert_eq!(ranged(s, |r| r.min_create_revision = 4).0, ["c", "d", "e"]);
    assert_eq!(ranged(s, |r| r.max_create_revision = 3).0, ["a", "b"]);
    let both = ranged(s, |r| {
        r.min_mod_revision = 5;
        r.max_create_revision = 5;
    });
    assert_eq!(both.0, ["a", "c", "d"]);
    // count is before the filters; more is about the filtered keys
    let (got, count, more) = ranged(s, |r| {
        r.min_mod_revision = 6;
        r.limit = 2;
    });
    assert_eq!(
        (got.as_slice(), count, more),
        (&["a".to_string(), "c".to_string()][..], 5, true)
    );
    let (_, _, more) = ranged(s, |r| {
        r.min_mod_revision = 6;
        r.limit = 3;
    });
    assert!(!more);
    // filters and a sort together
    let (got, _, _) = ranged(s, |r| {
        r.min_mod_revision = 6;
        r.sort_target = SortTarget::Mod as i32;
        r.sort_order = SortOrder::Descend as i32;
    });
    assert_eq!(got, ["c", "a", "e"]);
}

#[test]
fn range_end_forms_select_etcd_key_sets() {
    let (_d, s) = open_tmp();
    for k in ["\u{1}", "a", "p/1", "p/2", "p0", "q", "zz"] {
        put(&s, k, "v");
    }
    let k = |key: &str, end: &str| keys(&s.range(&range_req(key, end)).unwrap().kvs);
    assert_eq!(k("p/1", ""), ["p/1"]);
    assert!(k("p/", "").is_empty());
    assert_eq!(k("a", "p0"), ["a", "p/1", "p/2"]);
    assert_eq!(k("p/", "p0"), ["p/1", "p/2"]); // prefix p/
    assert_eq!(k("p0", "\0"), ["p0", "q", "zz"]); // from key
    assert_eq!(k("\0", "\0"), ["\u{1}", "a", "p/1", "p/2", "p0", "q", "zz"]); // everything
    assert!(k("q", "a").is_empty()); // end before start
    assert!(k("q", "q").is_empty());
}

#[test]
fn put_flags_prev_kv_ignore_value_ignore_lease() {
    let (_d, s) = open_tmp();
    let mut b = s.write().unwrap();
    let mut req = put_req("k", "");
    req.ignore_value = true;
    assert_eq!(b.put(&req).unwrap_err(), EtcdError::KeyNotFound);
    let mut req = put_req("k", "");
    req.ignore_lease = true;
    assert_eq!(b.put(&req).unwrap_err(), EtcdError::KeyNotFound);
    assert_eq!(b.revision(), 1);
    let mut req = put_req("k", "v1");
    req.lease = 9;
    req.prev_kv = true;
    let r = b.put(&req).unwrap();
    assert!(r.prev_kv.is_none());
    let mut req = put_req("k", "");
    req.ignore_value = true;
    req.prev_kv = true;
    req.lease = 10;
    let r = b.put(&req).unwrap();
    assert_eq!(value(r.prev_kv.as_ref().unwrap()), "v1");
    let mut req = put_req("k", "v3");
    req.ignore_lease = true;
    b.put(&req).unwrap();
    b.commit(false).unwrap();
    let kv = get(&s, "k").unwrap();
    // ignore_value kept v1 (but took the new lease) at revision 3; ignore_lease kept that
    // lease at revision 4
    assert_eq!(value(&get_at(&s, "k", 3).unwrap()), "v1");
    assert_eq!(get_at(&s, "k", 3).unwrap().lease, 10);
    assert_eq!((value(&kv).as_str(), kv.lease, kv.version), ("v3", 10, 3));
}

#[test]
fn delete_range_with_prev_kvs() {
    let (_d, s) = open_tmp();
    for k in ["a", "b", "c"] {
        put(&s, k, k);
    }
    let mut b = s.write().unwrap();
    let mut req = del_req("a", "c");
    req.prev_kv = true;
    let r = b.delete_range(&req).unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(keys(&r.prev_kvs), ["a", "b"]);
    assert_eq!(value(&r.prev_kvs[1]), "b");
    assert_eq!(r.header.unwrap().revision, 5);
    let r = b.delete_range(&req).unwrap();
    assert_eq!((r.deleted, r.header.unwrap().revision), (0, 5));
    b.commit(false).unwrap();
    assert_eq!(rows(&s)[3..], [(5, 0, true), (5, 1, true)]);
    assert_eq!(keys(&s.range(&range_req("\0", "\0")).unwrap().kvs), ["c"]);
}

#[test]
fn txn_compares_every_target_and_result() {
    let (_d, s) = open_tmp();
    let mut b = s.write().unwrap();
    let mut req = put_req("k", "v1");
    req.lease = 7;
    b.put(&req).unwrap(); // 2
    req.value = Bytes::from_static(b"v2");
    b.put(&req).unwrap(); // 3: k c2 m3 v2 "v2" lease 7
    b.put(&put_req("r1", "x")).unwrap(); // 4
    b.put(&put_req("r2", "y")).unwrap(); // 5
    b.commit(false).unwrap();

    use CompareResult::*;
    use CompareTarget::*;
    let int = |t: CompareTarget, v: i64| -> Option<TargetUnion> {
        Some(match t {
            Version => TargetUnion::Version(v),
            Create => TargetUnion::CreateRevision(v),
            Mod => TargetUnion::ModRevision(v),
            Lease => TargetUnion::Lease(v),
            Value => unreachable!(),
        })
    };
    let val = |v: &str| Some(TargetUnion::Value(Bytes::copy_from_slice(v.as_bytes())));
    let cases: Vec<(Compare, bool)> = vec![
        (cmp(Version, Equal, "k", "", int(Version, 2)), true),
        (cmp(Version, NotEqual, "k", "", int(Version, 2)), false),
        (cmp(Version, Greater, "k", "", int(Version, 1)), true),
        (cmp(Version, Less, "k", "", int(Version, 2)), false),
        (cmp(Version, Less, "k", "", int(Version, 3)), true),
        (cmp(Create, Equal, "k", "", int(Create, 2)), true),
        (cmp(Create, Greater, "k", "", int(Create, 2)), false),
        (cmp(Create, Less, "k", "", int(Create, 3)), true),
        (cmp(Mod, Equal, "k", "", int(Mod, 3)), true),
        (cmp(Mod, Greater, "k", "", int(Mod, 2)), true),
        (cmp(Mod, NotEqual, "k", "", int(Mod, 3)), false),
        (cmp(Value, Equal, "k", "", val("v2")), true),
        (cmp(Value, Less, "k", "", val("v3")), true),
        (cmp(Value, Greater, "k", "", val("v1")), true),
        (cmp(Value, NotEqual, "k", "", val("v2")), false),
        (cmp(Lease, Equal, "k", "", int(Lease, 7)), true),
        (cmp(Lease, Equal, "k", "", int(Lease, 0)), false),
        (cmp(Lease, Greater, "k", "", int(Lease, 6)), true),
        // a missing key compares as all zeroes, but never on its value
        (cmp(Version, Equal, "nope", "", int(Version, 0)), true),
        (cmp(Create, Equal, "nope", "", int(Create, 0)), true),
        (cmp(Mod, Less, "nope", "", int(Mod, 1)), true),
        (cmp(Lease, Equal, "nope", "", int(Lease, 0)), true),
        (cmp(Version, Greater, "nope", "", int(Version, 0)), false),
        (cmp(Value, Equal, "nope", "", val("")), false),
        (cmp(Value, NotEqual, "nope", "", val("x")), false),
        // ranges: every key must match
        (cmp(Version, Equal, "r1", "r3", int(Version, 1)), true),
        (cmp(Mod, Greater, "r1", "r3", int(Mod, 3)), true),
        (cmp(Mod, Greater, "r1", "r3", int(Mod, 4)), false),
        (cmp(Value, NotEqual, "r1", "r3", val("z")), true),
        (cmp(Value, Equal, "r1", "r3", val("x")), false),
        (cmp(Create, Less, "r1", "r3", int(Create, 5)), false),
        (cmp(Mod, Greater, "r", "\0", int(Mod, 3)), true),
        (cmp(Version, Equal, "s", "t", int(Version, 0)), true),
        (cmp(Value, Equal, "s", "t", val("")), false),
        // a target union of another kind compares against zero
        (cmp(Version, Greater, "k", "", int(Create, 2)), true),
        (cmp(Version, Equal, "k", "", int(Create, 2)), false),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        let t = TxnRequest {
            compare: vec![c.clone()],
            success: vec![txn_op(Request::RequestRange(range_req("k", "")))],
            failure: vec![],
        };
        let mut b = s.write().unwrap();
        let r = b.txn(&t).unwrap();
        assert_eq!(r.succeeded, want, "case {i}: {c:?}");
        assert_eq!(
            r.header.unwrap().revision,
            5,
            "a read-only txn makes no revision"
        );
        assert_eq!(r.responses.len(), usize::from(want));
        drop(b);
    }
    // all compares must hold
    let t = TxnRequest {
        compare: vec![
            cmp(Version, Equal, "k", "", int(Version, 2)),
            cmp(Version, Equal, "r1", "", int(Version, 9)),
        ],
        success: vec![],
        failure: vec![],
    };
    assert!(!s.write().unwrap().txn(&t).unwrap().succeeded);
}

#[test]
fn txn_branches_nested_txns_and_reads_of_own_writes() {
    let (_d, s) = open_tmp();
    put(&s, "k", "v"); // 2
    use CompareResult::*;
    use CompareTarget::*;
    let nested = TxnRequest {
        // evaluated before the outer txn writes "a": version 0 then
        compare: vec![cmp(Version, Equal, "a", "", Some(TargetUnion::Version(0)))],
        success: vec![txn_op(Request::RequestPut(put_req("b", "then")))],
        failure: vec![txn_op(Request::RequestPut(put_req("b", "else")))],
    };
    let t = TxnRequest {
        compare: vec![cmp(
            Value,
            Equal,
            "k",
            "",
            Some(TargetUnion::Value(Bytes::from_static(b"v"))),
        )],
        success: vec![
            txn_op(Request::RequestRange(range_req("a", ""))),
            txn_op(Request::RequestPut(put_req("a", "1"))),
            txn_op(Request::RequestRange(range_req("a", ""))),
            txn_op(Request::RequestTxn(nested)),
            txn_op(Request::RequestRange(range_req("b", ""))),
        ],
        failure: vec![txn_op(Request::RequestPut(put_req("f", "1")))],
    };
    let mut b = s.write().unwrap();
    let r = b.txn(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    let Some(Response::ResponseRange(before)) = &r.responses[0].response else {
        panic!()
    };
    assert_eq!((before.kvs.len(), before.header.unwrap().revision), (0, 2));
    let Some(Response::ResponsePut(p)) = &r.responses[1].response else {
        panic!()
    };
    assert_eq!(p.header.unwrap().revision, 3);
    let Some(Response::ResponseRange(after)) = &r.responses[2].response else {
        panic!()
    };
    assert_eq!(
        (
            value(&after.kvs[0]).as_str(),
            after.header.unwrap().revision
        ),
        ("1", 3)
    );
    let Some(Response::ResponseTxn(inner)) = &r.responses[3].response else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(
        inner.header.unwrap().revision,
        0,
        "etcd leaves nested headers empty"
    );
    let Some(Response::ResponseRange(bread)) = &r.responses[4].response else {
        panic!()
    };
    assert_eq!(value(&bread.kvs[0]), "then");
    let events = b.commit(false).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(rows(&s)[1..], [(3, 0, false), (3, 1, false)]);

    // the else branch
    let mut t2 = t.clone();
    t2.compare[0].target_union = Some(TargetUnion::Value(Bytes::from_static(b"other")));
    let mut b = s.write().unwrap();
    let r = b.txn(&t2).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.header.unwrap().revision, 4);
    b.commit(false).unwrap();
    assert_eq!(value(&get(&s, "f").unwrap()), "1");
}

#[test]
fn failed_requests_leave_no_trace() {
    let (_d, s) = open_tmp();
    put(&s, "k", "v"); // 2
    put(&s, "k", "v2"); // 3
    let mut b = s.write().unwrap();
    b.compact(2).unwrap();
    b.commit(false).unwrap();
    let before_rows = rows(&s);

    let mut b = s.write().unwrap();
    let mut future = range_req("k", "");
    future.revision = 4;
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(Request::RequestPut(put_req("x", "1"))),
            txn_op(Request::RequestRange(future)),
        ],
        failure: vec![],
    };
    assert_eq!(b.txn(&t).unwrap_err(), EtcdError::FutureRev);
    let mut old = range_req("k", "");
    old.revision = 1;
    let t = TxnRequest {
        compare: vec![],
        success: vec![txn_op(Request::RequestRange(old))],
        failure: vec![],
    };
    assert_eq!(b.txn(&t).unwrap_err(), EtcdError::Compacted);
    let mut iv = put_req("missing", "");
    iv.ignore_value = true;
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(Request::RequestPut(put_req("x", "1"))),
            txn_op(Request::RequestPut(iv)),
        ],
        failure: vec![],
    };
    assert_eq!(b.txn(&t).unwrap_err(), EtcdError::KeyNotFound);
    let mut leased = put_req("x", "1");
    leased.lease = 2;
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(Request::RequestPut(put_req("y", "1"))),
            txn_op(Request::RequestPut(leased)),
        ],
        failure: vec![],
    };
    assert_eq!(
        b.txn_checked(&t, &|l| l == 1).unwrap_err(),
        EtcdError::LeaseNotFound
    );
    // a put with an unknown lease on the branch not taken is fine
    let t2 = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: t.success.clone(),
    };
    assert!(b.txn_checked(&t2, &|l| l == 1).unwrap().succeeded);
    // a txn that skipped validation fails half-way: its delete must not survive
    let mut iv = put_req("k", "");
    iv.ignore_value = true;
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(Request::RequestPut(put_req("z", "1"))),
            txn_op(Request::RequestDeleteRange(del_req("k", ""))),
            txn_op(Request::RequestPut(iv)),
        ],
        failure: vec![],
    };
    assert_eq!(b.txn(&t).unwrap_err(), EtcdError::KeyNotFound);
    assert_eq!(b.revision(), 3);
    // the batch goes on at the next revision
    assert_eq!(
        b.put(&put_req("ok", "1")).unwrap().header.unwrap().revision,
        4
    );
    let events = b.commit(false).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(value(&get(&s, "k").unwrap()), "v2");
    assert_eq!(get(&s, "k").unwrap().version, 2);
    assert!(get(&s, "z").is_none() && get(&s, "x").is_none() && get(&s, "y").is_none());
    let mut after_rows = rows(&s);
    assert_eq!(after_rows.pop(), Some((4, 0, false)));
    assert_eq!(after_rows, before_rows);
}

#[test]
fn dropped_batch_leaves_no_trace() {
    let (_d, s) = open_tmp();
    put(&s, "a", "1");
    put(&s, "b", "1");
    let mut b = s.write().unwrap();
    b.set_applied_index(3);
    b.commit(false).unwrap();
    let before = (
        rows(&s),
        s.current_revision(),
        s.compact_revision(),
        s.applied_index(),
    );

    let mut b = s.write().unwrap();
    b.put(&put_req("x", "1")).unwrap();
    b.put(&put_req("a", "2")).unwrap();
    b.delete_range(&del_req("b", "")).unwrap();
    b.compact(4).unwrap();
    b.set_applied_index(99);
    b.meta_put("m", b"1");
    assert_eq!(b.meta_get("m").unwrap().as_deref(), Some(&b"1"[..]));
    drop(b);

    assert_eq!(
        (
            rows(&s),
            s.current_revision(),
            s.compact_revision(),
            s.applied_index()
        ),
        before
    );
    assert!(get(&s, "x").is_none());
    assert_eq!(value(&get(&s, "a").unwrap()), "1");
    assert!(get(&s, "b").is_some());
    assert_eq!(s.meta_get("m").unwrap(), None);
    // and the next batch starts where the store is
    let mut b = s.write().unwrap();
    assert_eq!(
        b.put(&put_req("a", "3")).unwrap().header.unwrap().revision,
        4
    );
    assert_eq!(
        b.put(&put_req("x", "3")).unwrap().header.unwrap().revision,
        5
    );
    b.commit(false).unwrap();
    let a = get(&s, "a").unwrap();
    assert_eq!((a.version, a.create_revision), (2, 2));
    assert_eq!(get(&s, "x").unwrap().version, 1);
}

#[test]
fn only_one_writer_at_a_time() {
    let (_d, s) = open_tmp();
    let b = s.write().unwrap();
    assert!(matches!(s.write(), Err(StoreError::WriterBusy)));
    drop(b);
    assert!(s.write().is_ok());
}

#[test]
fn reopen_keeps_revisions_applied_index_meta_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let all = range_req("\0", "\0");
    let (resp, hash) = {
        let s = Store::open(&path).unwrap();
        for i in 0..20 {
            put(&s, &format!("k{}", i % 7), &i.to_string());
        }
        delete(&s, "k3", "");
        let mut b = s.write().unwrap();
        b.compact(12).unwrap();
        let mut leased = put_req("l", "v");
        leased.lease = 77;
        b.put(&leased).unwrap();
        b.set_applied_index(42);
        b.meta_put("cluster_id", b"abc");
        b.commit(true).unwrap();
        (s.range(&all).unwrap(), s.hash_kv(0).unwrap())
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(s.current_revision(), 23);
    assert_eq!(s.compact_revision(), 12);
    assert_eq!(s.applied_index(), 42);
    assert_eq!(
        s.meta_get("cluster_id").unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(s.range(&all).unwrap(), resp);
    assert_eq!(s.hash_kv(0).unwrap(), hash);
    assert_eq!(s.leased_keys(), [(77, Bytes::from_static(b"l"))]);
    let mut old = range_req("k0", "");
    old.revision = 12;
    assert_eq!(value(&s.range(&old).unwrap().kvs[0]), "7");
    old.revision = 11;
    assert_eq!(s.range(&old).unwrap_err(), EtcdError::Compacted);
}

#[test]
fn non_durable_commit_survives_a_clean_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        for i in 1..=10u64 {
            let mut b = s.write().unwrap();
            b.put(&put_req("k", &i.to_string())).unwrap();
            b.set_applied_index(i);
            b.commit(i == 3).unwrap();
        }
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.applied_index(), 10);
    assert_eq!(value(&get(&s, "k").unwrap()), "10");
    assert_eq!(s.current_revision(), 11);
}

const CRASH_DIR_ENV: &str = "KETCH_MVCC_CRASH_DIR";

/// Run by `crash_rolls_back_to_the_last_durable_commit` in a child process: applies entries
/// 1..=40, durably at 1 and 25 only, then dies without closing the store.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let s = Store::open(&Path::new(&dir).join("db")).unwrap();
    for i in 1..=40u64 {
        let mut b = s.write().unwrap();
        b.put(&put_req("k", &i.to_string())).unwrap();
        b.put(&put_req(&format!("e{i}"), "x")).unwrap();
        b.set_applied_index(i);
        b.commit(i == 1 || i == 25).unwrap();
    }
    assert_eq!(s.applied_index(), 40);
    std::process::abort();
}

#[test]
fn crash_rolls_back_to_the_last_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not exit");
    let s = Store::open(&dir.path().join("db")).unwrap();
    let applied = s.applied_index();
    // data and applied index come from the same commit: entry i made revisions 2i and 2i+1
    assert_eq!(value(&get(&s, "k").unwrap()), applied.to_string());
    assert_eq!(s.current_revision(), 1 + 2 * applied as i64);
    assert_eq!(s.range(&range_req("e", "f")).unwrap().count, applied as i64);
    // redb 4.5 drops every non-durable commit after the last durable one
    assert_eq!(applied, 25);
    // and the store goes on from there
    let mut b = s.write().unwrap();
    assert_eq!(
        b.put(&put_req("k", "26")).unwrap().header.unwrap().revision,
        52
    );
    b.set_applied_index(26);
    b.commit(true).unwrap();
}

#[test]
fn events_and_lease_changes_of_a_batch() {
    let (_d, s) = open_tmp();
    let mut b = s.write().unwrap();
    let leased = |k: &str, l: i64| PutRequest {
        lease: l,
        ..put_req(k, "v")
    };
    b.put(&leased("k", 5)).unwrap(); // 2
    b.put(&leased("k", 5)).unwrap(); // 3: no change
    b.put(&leased("k", 6)).unwrap(); // 4
    let mut keep = put_req("k", "w");
    keep.ignore_lease = true;
    b.put(&keep).unwrap(); // 5
    b.put(&leased("j", 6)).unwrap(); // 6
    b.put(&put_req("plain", "v")).unwrap(); // 7
    let changes = b.take_lease_changes();
    let k = Bytes::from_static(b"k");
    assert_eq!(
        changes,
        [
            LeaseChange {
                key: k.clone(),
                revision: 2,
                old_lease: 0,
                new_lease: 5
            },
            LeaseChange {
                key: k.clone(),
                revision: 4,
                old_lease: 5,
                new_lease: 6
            },
            LeaseChange {
                key: Bytes::from_static(b"j"),
                revision: 6,
                old_lease: 0,
                new_lease: 6
            },
        ]
    );
    // revoking lease 6: its keys go in one revision
    let r = b
        .delete_keys(&[b"k".as_slice(), b"j", b"missing", b"k"])
        .unwrap();
    assert_eq!((r.deleted, r.header.unwrap().revision), (2, 8));
    assert_eq!(
        b.take_lease_changes(),
        [
            LeaseChange {
                key: Bytes::from_static(b"j"),
                revision: 8,
                old_lease: 6,
                new_lease: 0
            },
            LeaseChange {
                key: k,
                revision: 8,
                old_lease: 6,
                new_lease: 0
            },
        ]
    );
    let events = b.commit(false).unwrap();
    let revs: Vec<i64> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [2, 3, 4, 5, 6, 7, 8, 8]);
    let put5 = events[3].kv.as_ref().unwrap();
    assert_eq!(
        (put5.lease, put5.version, value(put5).as_str()),
        (6, 4, "w")
    );
    assert!(s.leased_keys().is_empty());
    assert_eq!(rows(&s)[6..], [(8, 0, true), (8, 1, true)]);
}

#[test]
fn hash_kv_follows_history_and_compaction() {
    let build = |extra: bool| {
        let (d, s) = open_tmp();
        for i in 0..30 {
            put(&s, &format!("k{}", i % 4), &i.to_string());
        }
        if extra {
            put(&s, "z", "1");
        }
        (d, s)
    };
    let (_d1, a) = build(false);
    let (_d2, b) = build(false);
    let (_d3, c) = build(true);
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    assert_eq!(a.hash_kv(0).unwrap().1, -1);
    assert_ne!(a.hash_kv(0).unwrap(), c.hash_kv(0).unwrap());
    // up to the shared revision the histories agree
    assert_eq!(a.hash_kv(31).unwrap(), c.hash_kv(31).unwrap());
    assert_ne!(a.hash_kv(20).unwrap(), a.hash_kv(31).unwrap());
    assert_eq!(a.hash_kv(32).unwrap_err(), EtcdError::FutureRev);
    for s in [&a, &b] {
        let mut w = s.write().unwrap();
        w.compact(20).unwrap();
        w.commit(false).unwrap();
    }
    assert_eq!(a.hash_kv(20).unwrap_err(), EtcdError::Compacted);
    let (h, compact) = a.hash_kv(25).unwrap();
    assert_eq!(compact, 20);
    assert_eq!(b.hash_kv(25).unwrap(), (h, 20));
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
}

#[test]
fn snapshot_copy_opens_as_the_same_store() {
    let (dir, s) = open_tmp();
    for i in 0..50 {
        put(&s, &format!("k{i:02}"), &"x".repeat(i));
    }
    let mut b = s.write().unwrap();
    b.compact(30).unwrap();
    b.set_applied_index(50);
    b.meta_put("members", b"m1");
    b.commit(false).unwrap();
    // a batch in progress is not part of the copy
    let mut pending = s.write().unwrap();
    pending.put(&put_req("uncommitted", "1")).unwrap();
    let mut copy = Vec::new();
    let n = s.snapshot_to(&mut copy).unwrap();
    drop(pending);
    assert_eq!(n as usize, copy.len());
    let copy_path = dir.path().join("copy");
    std::fs::write(&copy_path, &copy).unwrap();
    let c = Store::open(&copy_path).unwrap();
    assert_eq!(
        (
            c.current_revision(),
            c.compact_revision(),
            c.applied_index()
        ),
        (51, 30, 50)
    );
    assert_eq!(c.meta_get("members").unwrap().as_deref(), Some(&b"m1"[..]));
    let all = range_req("\0", "\0");
    assert_eq!(c.range(&all).unwrap(), s.range(&all).unwrap());
    assert_eq!(c.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    assert!(s.db_size() > 0);
    assert!(s.db_size_in_use() > 0);
}

#[test]
fn db_size_in_use_follows_rows() {
    let (_d, s) = open_tmp();
    let empty = s.db_size_in_use();
    assert_eq!(empty, 0);
    for i in 0..10 {
        put(&s, "k", &"v".repeat(100 + i));
    }
    let full = s.db_size_in_use();
    assert!(full > 1000);
    let mut b = s.write().unwrap();
    b.compact(11).unwrap();
    b.commit(false).unwrap();
    assert!(s.db_size_in_use() < full / 5);
}

/// Readers running while the writer commits batches and compactions must only ever see whole
/// committed batches: each batch writes the ten keys c/0..c/9 with its number, one revision per
/// key, so a reader that saw part of a batch would see two different numbers.
#[test]
fn concurrent_readers_see_only_committed_batches() {
    let (_d, s) = open_tmp();
    let s = Arc::new(s);
    const BATCHES: i64 = 300;
    let done = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(1));
    let deadline = Instant::now() + Duration::from_secs(60);

    let writer = {
        let (s, done, committed) = (s.clone(), done.clone(), committed.clone());
        std::thread::spawn(move || {
            for n in 1..=BATCHES {
                let mut b = s.write().unwrap();
                for k in 0..10 {
                    b.put(&put_req(&format!("c/{k}"), &n.to_string())).unwrap();
                }
                if n % 25 == 0 {
                    b.compact(b.revision() - 30).unwrap();
                }
                // nothing of the batch is visible before commit
                assert!(s.current_revision() <= committed.load(Ordering::SeqCst));
                b.commit(n % 100 == 0).unwrap();
                committed.store(1 + 10 * n, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|id| {
            let (s, done, committed) = (s.clone(), done.clone(), committed.clone());
            std::thread::spawn(move || {
                let mut last_rev = 0;
                let mut reads = 0u64;
                let mut compacted = 0u64;
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let floor = committed.load(Ordering::SeqCst);
                    let mut req = range_req("c/", "c0");
                    req.keys_only = id == 1 && reads.is_multiple_of(2);
                    let r = s.range(&req).unwrap();
                    let rev = r.header.unwrap().revision;
                    assert!(rev >= last_rev && rev >= floor, "revisions go forward");
                    assert_eq!((rev - 1) % 10, 0, "only whole batches: revision {rev}");
                    last_rev = rev;
                    if rev > 1 {
                        assert_eq!(r.count, 10);
                        let n = (rev - 1) / 10;
                        assert!(r.kvs.iter().all(|kv| kv.mod_revision <= rev));
                        if !req.keys_only {
                            assert!(
                                r.kvs.iter().all(|kv| value(kv) == n.to_string()),
                                "batch {n} at {rev}"
                            );
                        }
                        // an older batch boundary: its own values, or gone to a compaction
                        let back = (reads as i64 % 5 + 1) * 10;
                        if rev - back > 1 {
                            let mut old = range_req("c/", "c0");
                            old.revision = rev - back;
                            match s.range(&old) {
                                Ok(o) => {
                                    let m = (rev - back - 1) / 10;
                                    assert!(o.kvs.iter().all(|kv| value(kv) == m.to_string()));
                                    assert_eq!(o.kvs.len(), 10);
                                }
                                Err(EtcdError::Compacted) => compacted += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    reads += 1;
                }
                (reads, compacted)
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        let (reads, _compacted) = r.join().unwrap();
        assert!(reads > 0);
    }
    assert_eq!(s.current_revision(), 1 + 10 * BATCHES);
}

/// A read that started before a compaction committed, at a revision the compaction removed,
/// is told to start over rather than read a half-compacted index.
#[test]
fn compaction_overtaking_a_read_makes_it_start_over() {
    use crate::error::Failure;
    let (_d, s) = open_tmp();
    for i in 0..2000 {
        put(&s, &format!("k{:04}", i % 1500), &i.to_string());
    }
    let old = s.snapshot();
    let req = range_req("k", "l");
    // a chunked scan of the old snapshot, overtaken between chunks
    let mut scan = crate::index::Scan::new(
        &s.index,
        crate::index::Span::new(&req.key, &req.range_end),
        old.rev,
        true,
    );
    assert!(scan
        .next_chunk(|_, _| crate::index::Visit::Continue)
        .unwrap());
    put(&s, "k0000", "new");
    let mut b = s.write().unwrap();
    b.compact(old.rev + 1).unwrap();
    b.commit(false).unwrap();
    assert!(scan
        .next_chunk(|_, _| crate::index::Visit::Continue)
        .is_err());
    assert!(matches!(
        crate::range::range(&s.index, true, &old.kv, &req, old.rev),
        Err(Failure::Retry)
    ));
    // at or above the compaction the old snapshot still answers, and Store::range does
    assert_eq!(s.range(&req).unwrap().count, 1500);
    let mut at_old = req.clone();
    at_old.revision = old.rev;
    assert_eq!(s.range(&at_old).unwrap_err(), EtcdError::Compacted);
}

/// The same history as etcd 3.4.23 was given (through etcdctl: puts, a delete, a txn, a
/// compaction) hashes to the values etcd reported for it, because the rows are etcd's own.
#[test]
fn hash_kv_equals_etcd_for_the_same_history() {
    let (_d, s) = open_tmp();
    put(&s, "a", "1"); // 2
    put(&s, "b", "2"); // 3
    put(&s, "a", "3"); // 4
    delete(&s, "b", ""); // 5
    put(&s, "c", "hello world"); // 6
    let t = TxnRequest {
        compare: vec![cmp(
            CompareTarget::Value,
            CompareResult::Equal,
            "a",
            "",
            Some(TargetUnion::Value(Bytes::from_static(b"3"))),
        )],
        success: vec![
            txn_op(Request::RequestPut(put_req("d", "4"))),
            txn_op(Request::RequestPut(put_req("e", "5"))),
            txn_op(Request::RequestDeleteRange(del_req("c", ""))),
        ],
        failure: vec![],
    };
    let mut b = s.write().unwrap();
    assert!(b.txn(&t).unwrap().succeeded); // 7
    b.commit(false).unwrap();
    assert_eq!(s.hash_kv(0).unwrap(), (3466281456, -1));
    let mut b = s.write().unwrap();
    b.compact(4).unwrap();
    b.commit(false).unwrap();
    assert_eq!(s.hash_kv(0).unwrap(), (2225009174, 4));
    assert_eq!(s.hash_kv(6).unwrap(), (1482338735, 4));
    put(&s, "f", "6"); // 8
    assert_eq!(s.hash_kv(0).unwrap(), (892254824, 4));
}

#[test]
fn restore_from_a_peer_snapshot_replaces_everything() {
    let (dir, a) = open_tmp();
    put(&a, "a", "1");
    put(&a, "b", "2");
    delete(&a, "a", "");
    put(&a, "c", "3");
    let mut b = a.write().unwrap();
    b.compact(3).unwrap();
    b.set_applied_index(42);
    b.commit(false).unwrap();
    let file = dir.path().join("snap.db");
    assert_eq!(a.snapshot_file(&file).unwrap(), 42);

    let (_d2, s) = open_tmp();
    put(&s, "zzz", "other history");
    put(&s, "b", "other");
    assert_eq!(s.restore_from(&file).unwrap(), 42);
    assert_eq!(s.applied_index(), 42);
    assert_eq!(s.current_revision(), a.current_revision());
    assert_eq!(s.compact_revision(), a.compact_revision());
    let all = |st: &Store| {
        let r = st.range(&range_req("\0", "\0")).unwrap();
        r.kvs
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.clone(),
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(all(&s), all(&a));
    assert!(get(&s, "zzz").is_none());
    // writes continue after the restored revision, on a rebuilt index
    let rev = put(&s, "b", "3");
    assert_eq!(rev, a.current_revision() + 1);
    assert_eq!(get(&s, "b").unwrap().version, 2);
}

#[test]
fn lease_records_commit_with_the_batch_and_travel_in_snapshots() {
    let (dir, a) = open_tmp();
    let mut b = a.write().unwrap();
    b.lease_put(7, b"seven");
    b.lease_put(-3, b"minus three");
    b.lease_put(1 << 40, b"big");
    assert!(
        a.leases().unwrap().is_empty(),
        "uncommitted records are not visible"
    );
    b.commit(false).unwrap();
    let mut b = a.write().unwrap();
    b.lease_delete(7);
    b.lease_put(9, b"nine");
    drop(b); // abandoned: neither change happens
    assert_eq!(
        a.leases().unwrap(),
        vec![
            (7, b"seven".to_vec()),
            (1 << 40, b"big".to_vec()),
            (-3, b"minus three".to_vec()),
        ],
        "rows are in big-endian byte order of the id, as etcd's bucket"
    );
    let mut b = a.write().unwrap();
    b.lease_delete(7);
    b.set_applied_index(5);
    b.commit(true).unwrap();
    let file = dir.path().join("snap.db");
    a.snapshot_file(&file).unwrap();
    let (_d2, s) = open_tmp();
    let mut b = s.write().unwrap();
    b.lease_put(100, b"replaced by the restore");
    b.commit(false).unwrap();
    s.restore_from(&file).unwrap();
    assert_eq!(s.leases().unwrap(), a.leases().unwrap());
}

// ---- history as events (what watchers replay) ----

fn ev_summary(evs: &[ketch_api::mvccpb::Event]) -> Vec<(String, &'static str, i64, String)> {
    evs.iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                String::from_utf8(kv.key.to_vec()).unwrap(),
                if e.r#type == EventType::Put as i32 {
                    "PUT"
                } else {
                    "DELETE"
                },
                kv.mod_revision,
                value(kv),
            )
        })
        .collect()
}

#[test]
fn history_gives_puts_and_tombstones_in_revision_order_for_a_key_range() {
    let (_d, s) = open_tmp();
    put(&s, "a", "1"); // 2
    put(&s, "b", "1"); // 3
    put(&s, "a", "2"); // 4
    delete(&s, "a", ""); // 5
    put(&s, "c", "1"); // 6
    let all = s.history(b"a", b"c", 1, i64::MAX, false).unwrap();
    assert_eq!(
        ev_summary(&all),
        vec![
            ("a".into(), "PUT", 2, "1".into()),
            ("b".into(), "PUT", 3, "1".into()),
            ("a".into(), "PUT", 4, "2".into()),
            ("a".into(), "DELETE", 5, "".into()),
        ]
    );
    let only_a = s.history(b"a", b"", 3, 4, false).unwrap();
    assert_eq!(
        ev_summary(&only_a),
        vec![("a".into(), "PUT", 4, "2".into())]
    );
    let from_key = s.history(b"b", b"\0", 1, i64::MAX, false).unwrap();
    assert_eq!(from_key.len(), 2);
    let put4 = all[2].kv.as_ref().unwrap();
    assert_eq!((put4.create_revision, put4.version), (2, 2));
}

#[test]
fn history_fills_prev_kv_except_for_creations() {
    let (_d, s) = open_tmp();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    delete(&s, "a", ""); // 4
    let evs = s.history(b"a", b"", 1, i64::MAX, true).unwrap();
    assert!(evs[0].prev_kv.is_none());
    assert_eq!(value(evs[1].prev_kv.as_ref().unwrap()), "1");
    assert_eq!(value(evs[2].prev_kv.as_ref().unwrap()), "2");
    assert_eq!(evs[2].prev_kv.as_ref().unwrap().mod_revision, 3);
}

#[test]
fn history_below_the_compact_revision_is_compacted() {
    let (_d, s) = open_tmp();
    for i in 0..5 {
        put(&s, "k", &i.to_string()); // 2..=6
    }
    let mut b = s.write().unwrap();
    b.compact(4).unwrap();
    b.commit(false).unwrap();
    assert_eq!(
        s.events(3, 100, usize::MAX, &|_| true).unwrap_err(),
        EtcdError::Compacted
    );
    let page = s.events(4, 100, usize::MAX, &|_| true).unwrap();
    assert_eq!(page.compact_revision, 4);
    assert_eq!(
        ev_summary(&page.events)
            .iter()
            .map(|e| e.2)
            .collect::<Vec<_>>(),
        vec![4, 5, 6],
        "the compaction keeps each key's newest revision at the compact revision"
    );
}

#[test]
fn history_pages_stop_at_revision_boundaries() {
    let (_d, s) = open_tmp();
    // one txn writing three keys at revision 2, then single puts
    let mut b = s.write().unwrap();
    b.txn(&TxnRequest {
        success: ["x", "y", "z"]
            .iter()
            .map(|k| txn_op(Request::RequestPut(put_req(k, "t"))))
            .collect(),
        ..Default::default()
    })
    .unwrap();
    b.commit(false).unwrap();
    put(&s, "x", "2"); // 3
    put(&s, "x", "3"); // 4
    let p1 = s.events(1, 1, usize::MAX, &|_| true).unwrap();
    assert_eq!(p1.events.len(), 3, "a revision is never split");
    assert_eq!(p1.next_rev, 3);
    assert!(!p1.complete());
    let p2 = s.events(p1.next_rev, 1, usize::MAX, &|_| true).unwrap();
    assert_eq!((p2.events.len(), p2.next_rev), (1, 4));
    let p3 = s.events(p2.next_rev, 1, usize::MAX, &|_| true).unwrap();
    assert!(p3.complete());
    assert_eq!(p3.upto(), 4);
    let none = s.events(5, 1, usize::MAX, &|_| true).unwrap();
    // a byte budget ends pages the same way; only wanted rows count
    let by_bytes = s.events(1, usize::MAX, 1, &|_| true).unwrap();
    assert_eq!((by_bytes.events.len(), by_bytes.next_rev), (3, 3));
    let unwanted = s.events(1, usize::MAX, 1, &|k| k == b"none").unwrap();
    assert!(unwanted.events.is_empty() && unwanted.complete());
    assert!(none.events.is_empty() && none.complete());
}

#[test]
fn history_equals_the_events_a_batch_commit_returned() {
    let (_d, s) = open_tmp();
    let mut live = Vec::new();
    for round in 0..3 {
        let mut b = s.write().unwrap();
        b.put(&put_req("p/a", &format!("v{round}"))).unwrap();
        b.put(&put_req("p/b", "x")).unwrap();
        b.delete_range(&del_req("p/b", "")).unwrap();
        live.extend(b.commit(false).unwrap());
    }
    let replay = s.history(b"p/", b"p0", 1, i64::MAX, false).unwrap();
    assert_eq!(replay, live);
}

#[test]
fn read_only_txn_over_a_snapshot_answers_as_the_write_path() {
    use prost::Message;
    let (_d, s) = sort_fixture();
    let range_op = |k: &str, end: &str, rev: i64| {
        txn_op(Request::RequestRange(RangeRequest {
            revision: rev,
            ..range_req(k, end)
        }))
    };
    let reqs = [
        TxnRequest {
            compare: vec![cmp(
                CompareTarget::Version,
                CompareResult::Equal,
                "a",
                "",
                Some(TargetUnion::Version(2)),
            )],
            success: vec![range_op("a", "c", 0), range_op("c", "", 3)],
            failure: vec![range_op("e", "", 0)],
        },
        TxnRequest {
            compare: vec![cmp(
                CompareTarget::Create,
                CompareResult::Greater,
                "zz",
                "",
                Some(TargetUnion::CreateRevision(0)),
            )],
            success: vec![],
            failure: vec![
                txn_op(Request::RequestTxn(TxnRequest {
                    compare: vec![],
                    success: vec![range_op("b", "", 0)],
                    failure: vec![],
                })),
                range_op("a", "z", 0),
            ],
        },
        TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![],
        },
    ];
    for (i, req) in reqs.iter().enumerate() {
        assert!(crate::is_read_only_txn(req));
        let read = s.txn_read(req).unwrap();
        let mut b = s.write().unwrap();
        let written = b.txn(req).unwrap();
        drop(b);
        assert_eq!(read.encode_to_vec(), written.encode_to_vec(), "txn {i}");
    }
    let bad = TxnRequest {
        compare: vec![],
        success: vec![range_op("a", "", 1000)],
        failure: vec![],
    };
    assert_eq!(s.txn_read(&bad).unwrap_err(), EtcdError::FutureRev);
}

#[test]
fn defragment_shrinks_the_file_and_keeps_every_revision_and_the_writer() {
    let (dir, s) = open_tmp();
    let big = "v".repeat(4096);
    for i in 0..400 {
        put(&s, &format!("k{i:04}"), &big);
    }
    put(&s, "stay", "1");
    delete(&s, "k", "l");
    let mut b = s.write().unwrap();
    b.compact(s.current_revision()).unwrap();
    b.set_applied_index(7);
    b.commit(true).unwrap();
    let reader = s.snapshot(); // a read in flight goes on from the old backend
    let rows_before = reader.kv.iter().unwrap().count();
    assert!(rows_before > 0);
    let before_rev = s.current_revision();
    let (before, after) = s.defragment().unwrap();
    assert!(after * 2 < before, "{before} -> {after}");
    assert_eq!(
        std::fs::metadata(dir.path().join("db")).unwrap().len(),
        after
    );
    assert!(!dir.path().join("db.defrag.tmp").exists());
    assert_eq!(reader.kv.iter().unwrap().count(), rows_before);
    drop(reader);
    assert_eq!(value(&get(&s, "stay").unwrap()), "1");
    assert!(get(&s, "k0001").is_none());
    assert_eq!((s.current_revision(), s.applied_index()), (before_rev, 7));
    // the writer goes on in the new file, and it all survives a reopen
    assert_eq!(put(&s, "after", "2"), before_rev + 1);
    drop(s);
    let s = Store::open(&dir.path().join("db")).unwrap();
    assert_eq!(value(&get(&s, "after").unwrap()), "2");
    assert_eq!(value(&get(&s, "stay").unwrap()), "1");
    assert_eq!(s.applied_index(), 7);
}

#[test]
fn a_write_waits_for_a_defragmentation_instead_of_failing() {
    let (_dir, s) = open_tmp();
    for i in 0..200 {
        put(&s, &format!("k{i}"), &"x".repeat(1000));
    }
    let s = Arc::new(s);
    let writer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || (0..200).map(|i| put(&s, &format!("w{i}"), "v")).last())
    };
    for _ in 0..5 {
        s.defragment().unwrap();
    }
    let last = writer.join().unwrap().unwrap();
    assert_eq!(last, s.current_revision());
    assert_eq!(s.range(&range_req("w", "x")).unwrap().kvs.len(), 200);
}
