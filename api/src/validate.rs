//! The checks etcd makes on a client request before it is proposed: empty keys, contradictory
//! Put flags, txn size and overlapping writes inside one txn. Failing here changes nothing.

use std::collections::HashSet;

use crate::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::status::EtcdError;

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd does: at most `max_txn_ops` compares/ops per branch (nested txns share
/// the budget), no empty keys or empty ops, and no key written twice by ops that can run
/// together (a put and a put, or a put inside a deleted range).
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_shape(r, max_txn_ops)?;
    check_writes_disjoint(&r.success)?;
    check_writes_disjoint(&r.failure)?;
    Ok(())
}

fn check_txn_shape(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn_shape(r, max_txn_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A deleted interval: `[key, end)`, a single key when `end` is empty, or every key from `key`
/// on when `end` is `"\0"`.
struct Deleted {
    key: Vec<u8>,
    end: Vec<u8>,
}

impl Deleted {
    fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            return k == self.key.as_slice();
        }
        if self.end.as_slice() == b"\0" {
            return k >= self.key.as_slice();
        }
        k >= self.key.as_slice() && k < self.end.as_slice()
    }
}

fn deleted_contains(dels: &[Deleted], k: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(k))
}

/// Returns the keys put and the ranges deleted by `ops` (nested txns included), or
/// `DuplicateKey` when two writes that may run together touch the same key.
fn check_writes_disjoint(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), EtcdError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                key: d.key.to_vec(),
                end: d.range_end.to_vec(),
            }),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_writes_disjoint(&t.success)?;
        let (puts_else, dels_else) = check_writes_disjoint(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted_contains(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            // then and else never both run, so a key in both is fine
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted_contains(&dels, &k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        let k = p.key.to_vec();
        if puts.contains(&k) || deleted_contains(&dels, &k) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.as_bytes().to_vec().into(),
                range_end: end.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn two_puts_of_one_key_are_duplicate() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
    }

    #[test]
    fn put_inside_deleted_range_is_duplicate() {
        assert_eq!(
            check_txn(&txn(vec![put("b"), del("a", "c")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![put("z"), del("a", "\0")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert!(check_txn(&txn(vec![put("c"), del("a", "c")], vec![]), 128).is_ok());
    }

    #[test]
    fn same_key_in_then_and_else_is_allowed() {
        assert!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128).is_ok());
        let nested = RequestOp {
            request: Some(Request::RequestTxn(txn(vec![put("a")], vec![put("a")]))),
        };
        assert!(check_txn(&txn(vec![nested.clone()], vec![]), 128).is_ok());
        assert_eq!(
            check_txn(&txn(vec![nested, put("a")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_and_empty_compare_key() {
        let ops: Vec<RequestOp> = (0..3).map(|i| put(&i.to_string())).collect();
        assert_eq!(check_txn(&txn(ops, vec![]), 2), Err(EtcdError::TooManyOps));
        let mut t = txn(vec![], vec![]);
        t.compare.push(Compare::default());
        assert_eq!(check_txn(&t, 128), Err(EtcdError::EmptyKey));
        let empty_op = RequestOp { request: None };
        assert_eq!(
            check_txn(&txn(vec![empty_op], vec![]), 128),
            Err(EtcdError::KeyNotFound)
        );
    }

    #[test]
    fn put_flag_conflicts() {
        let mut p = PutRequest {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        p.ignore_value = false;
        p.ignore_lease = true;
        p.lease = 5;
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
    }
}
