//! What a gRPC call is, from its path (and, for a txn, its request): whether it changes state
//! (refused by a read-only proxy), whether it may be sent again to another member after a
//! failure, and whether it streams or waits by design (no read timeout).

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};
use prost::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One request, one answer, answered promptly.
    Unary,
    /// One request, one answer, which may take as long as it takes (Lock, Campaign).
    Waiting,
    /// A stream in either direction.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallKind {
    pub shape: Shape,
    /// Changes state: refused by a read-only proxy, never sent twice.
    pub writes: bool,
}

const READ: CallKind = CallKind {
    shape: Shape::Unary,
    writes: false,
};
const WRITE: CallKind = CallKind {
    shape: Shape::Unary,
    writes: true,
};

/// The kind of the call at `path` (`/package.Service/Method`). A call this table does not know
/// counts as a write: a read-only proxy refuses what it cannot vouch for.
pub fn kind(path: &str) -> CallKind {
    match path {
        "/etcdserverpb.KV/Range"
        | "/etcdserverpb.Lease/LeaseTimeToLive"
        | "/etcdserverpb.Lease/LeaseLeases"
        | "/etcdserverpb.Cluster/MemberList"
        | "/etcdserverpb.Maintenance/Status"
        | "/etcdserverpb.Maintenance/Hash"
        | "/etcdserverpb.Maintenance/HashKV"
        | "/etcdserverpb.Auth/Authenticate"
        | "/etcdserverpb.Auth/UserGet"
        | "/etcdserverpb.Auth/UserList"
        | "/etcdserverpb.Auth/RoleGet"
        | "/etcdserverpb.Auth/RoleList"
        | "/v3electionpb.Election/Leader" => READ,
        // A txn may only read; that is decided from its request (see `txn_writes`).
        "/etcdserverpb.KV/Txn" => WRITE,
        "/etcdserverpb.Watch/Watch"
        | "/etcdserverpb.Maintenance/Snapshot"
        | "/v3electionpb.Election/Observe" => CallKind {
            shape: Shape::Stream,
            writes: false,
        },
        "/etcdserverpb.Lease/LeaseKeepAlive" => CallKind {
            shape: Shape::Stream,
            writes: true,
        },
        "/v3lockpb.Lock/Lock" | "/v3electionpb.Election/Campaign" => CallKind {
            shape: Shape::Waiting,
            writes: true,
        },
        _ => WRITE,
    }
}

/// The protobuf message of a unary gRPC request body (one uncompressed frame).
pub fn message(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

/// Whether a txn changes state: a put or delete on either branch, at any depth.
pub fn txn_writes(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => false,
            Some(request_op::Request::RequestTxn(t)) => txn_writes(t),
            Some(_) => true,
        })
}

/// The key a KV call is about, to keep one key on one member; empty when there is none.
pub fn key_of(path: &str, message: &[u8]) -> Bytes {
    let key = match path {
        "/etcdserverpb.KV/Range" => RangeRequest::decode(message).map(|r| r.key),
        "/etcdserverpb.KV/Put" => PutRequest::decode(message).map(|r| r.key),
        "/etcdserverpb.KV/DeleteRange" => DeleteRangeRequest::decode(message).map(|r| r.key),
        _ => return Bytes::new(),
    };
    key.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_api::etcdserverpb::RequestOp;

    fn framed(msg: &impl Message) -> Vec<u8> {
        let m = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        out
    }

    #[test]
    fn writes_streams_and_waits_are_told_apart() {
        assert!(!kind("/etcdserverpb.KV/Range").writes);
        assert!(kind("/etcdserverpb.KV/Put").writes);
        assert!(kind("/etcdserverpb.KV/Compact").writes);
        assert!(kind("/etcdserverpb.Cluster/MemberAdd").writes);
        assert!(kind("/etcdserverpb.Maintenance/Defragment").writes);
        assert!(kind("/etcdserverpb.Auth/UserAdd").writes);
        assert_eq!(
            kind("/etcdserverpb.Watch/Watch"),
            CallKind {
                shape: Shape::Stream,
                writes: false
            }
        );
        assert_eq!(kind("/v3lockpb.Lock/Lock").shape, Shape::Waiting);
        assert!(
            kind("/some.Unknown/Call").writes,
            "unknown calls are not vouched for"
        );
    }

    #[test]
    fn keys_come_from_the_framed_request() {
        let put = PutRequest {
            key: "k1".into(),
            value: "v".into(),
            ..Default::default()
        };
        let body = framed(&put);
        assert_eq!(
            key_of("/etcdserverpb.KV/Put", message(&body).unwrap()),
            Bytes::from("k1")
        );
        assert_eq!(
            message(&[1, 0, 0, 0, 0]),
            None,
            "compressed frames are not read"
        );
        assert_eq!(
            message(&[0, 0, 0, 0, 9, 1]),
            None,
            "short frames are not read"
        );
    }

    #[test]
    fn a_txn_writes_if_any_branch_at_any_depth_does() {
        let get = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest::default())),
        };
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest::default())),
        };
        let reads = TxnRequest {
            success: vec![get.clone()],
            failure: vec![get.clone()],
            ..Default::default()
        };
        assert!(!txn_writes(&reads));
        let nested = TxnRequest {
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    success: vec![put],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert!(txn_writes(&nested));
    }
}
