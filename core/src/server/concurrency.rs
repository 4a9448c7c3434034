//! What etcd's Lock and Election services are built from, done inside the member instead of
//! through a client connected to itself (etcd's v3lock and v3election use clientv3's
//! `concurrency` package over a loopback client): a txn through the log, a linearizable read,
//! and waiting — on the watch hub — until older keys under a prefix are deleted.
//!
//! Errors the services return read as etcd's do: etcd's handlers return plain Go errors, which
//! gRPC sends as UNKNOWN with the error's text ([`unknown`]).

use std::sync::Arc;

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use ketch_api::ketchpb::raft_request::Request as Proposal;
use ketch_api::mvccpb::{event::EventType, KeyValue};
use ketch_api::status::EtcdError;
use tonic::Status;

use super::Server;
use crate::apply::Applied;
use crate::watch::group::KeyRange;
use crate::watch::hub::{WatchSpec, WatcherId};
use crate::watch::queue::{update_queue, UpdateReceiver};

/// Updates queued for one internal watcher (a few events of one key).
const WAIT_QUEUE: usize = 64;
const WAIT_QUEUE_BYTES: usize = 1 << 20;

/// An error as etcd's Lock and Election handlers return it: UNKNOWN, with the text.
/// An error of the KV requests a lock or election makes: auth refusals keep their code (as
/// etcd's v3lock passes on its KV server's status), anything else is Unknown with etcd's text.
pub fn kv_error(e: EtcdError) -> Status {
    match e {
        EtcdError::PermissionDenied
        | EtcdError::UserEmpty
        | EtcdError::InvalidAuthToken
        | EtcdError::AuthOldRevision => e.into(),
        other => unknown(other),
    }
}

pub fn unknown(text: impl std::fmt::Display) -> Status {
    Status::unknown(text.to_string())
}

/// `prefix` + the lease id in lower-case hex: the key a session owns under a lock or election.
pub fn session_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key.into()
}

/// The end of the range of keys that start with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    Bytes::from_static(b"\0")
}

/// The first-created key under `prefix` (clientv3's `WithFirstCreate`).
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: prefix_end(prefix),
        sort_order: 1,  // ascend
        sort_target: 1, // create revision
        limit: 1,
        ..Default::default()
    }
}

pub fn create_revision_is(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

pub fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub fn range_op(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(req)),
    }
}

pub fn delete_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )),
    }
}

/// The key-values of the `i`th response of a txn, if it is a range.
pub fn range_kvs(resp: &TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// clientv3's default session TTL: what a lease etcd grants for a session without one gets.
const SESSION_TTL: i64 = 60;

impl Server {
    /// The lease a Lock or Campaign request runs under, as etcd's handlers open their session:
    /// the caller's, or for lease 0 a new one of the default session TTL (which nobody keeps
    /// alive: it expires after a minute, releasing what it holds).
    pub async fn session_lease(&self, lease: i64) -> Result<i64, EtcdError> {
        if lease != 0 {
            return Ok(lease);
        }
        let id = (self.ids.next() & (i64::MAX as u64)) as i64;
        let req = ketch_api::etcdserverpb::LeaseGrantRequest {
            ttl: SESSION_TTL,
            id,
        };
        match self.propose(Proposal::LeaseGrant(req)).await? {
            Applied::LeaseGrant(resp) => Ok(resp.id),
            other => unreachable_result(other),
        }
    }

    /// A txn through the log, with its header filled as a client would get it.
    pub async fn txn_through_log(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        match self.propose(Proposal::Txn(req)).await? {
            Applied::Txn(mut resp) => {
                self.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => unreachable_result(other),
        }
    }

    /// A delete through the log.
    pub async fn delete_through_log(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        match self.propose(Proposal::DeleteRange(req)).await? {
            Applied::DeleteRange(mut resp) => {
                self.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => unreachable_result(other),
        }
    }

    /// A linearizable read of the local store.
    pub async fn range_linearizable(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.linearizable_barrier().await?;
        let ai = super::auth::REQUEST_AUTH
            .try_with(|a| a.clone())
            .ok()
            .flatten();
        self.auth
            .check_range(ai.as_ref(), &req.key, &req.range_end)?;
        let mut resp = self.store.range(req)?;
        self.fill_header(&mut resp.header);
        Ok(resp)
    }

    /// Returns once no key under `prefix` created at or before `max_create_rev` is left:
    /// waits for the deletion of the newest such key, then looks again (clientv3's
    /// `waitDeletes`: each waiter watches only the key just ahead of it, so a release wakes one
    /// waiter, not all). Returns the header of the last read.
    pub async fn wait_deletes(
        self: &Arc<Self>,
        prefix: &[u8],
        max_create_rev: i64,
    ) -> Result<ResponseHeader, EtcdError> {
        loop {
            let req = RangeRequest {
                key: Bytes::copy_from_slice(prefix),
                range_end: prefix_end(prefix),
                sort_order: 2,  // descend
                sort_target: 1, // create revision
                limit: 1,
                max_create_revision: max_create_rev,
                ..Default::default()
            };
            let resp = self.range_linearizable(&req).await?;
            let header = resp.header.unwrap_or_default();
            let Some(kv) = resp.kvs.first() else {
                return Ok(header);
            };
            self.wait_delete(&kv.key, header.revision + 1).await?;
        }
    }

    /// Returns once `key` is deleted at or after revision `from_rev`, or its history from there
    /// is compacted (the caller reads again).
    async fn wait_delete(self: &Arc<Self>, key: &[u8], from_rev: i64) -> Result<(), EtcdError> {
        let range = KeyRange::from_request(key, b"").ok_or(EtcdError::EmptyKey)?;
        let mut watcher = self.watch_internal(
            WatchSpec {
                range,
                no_put: true,
                no_delete: false,
            },
            from_rev,
        );
        loop {
            let Some(update) = watcher.updates.recv().await else {
                return Err(EtcdError::Stopped);
            };
            if update.compact_revision != 0
                || update
                    .events
                    .iter()
                    .any(|e| e.r#type == EventType::Delete as i32)
            {
                return Ok(());
            }
        }
    }

    /// A watcher of the member's own, cancelled when the returned value is dropped.
    pub fn watch_internal(self: &Arc<Self>, spec: WatchSpec, start_rev: i64) -> InternalWatcher {
        let (tx, updates) = update_queue(WAIT_QUEUE, WAIT_QUEUE_BYTES);
        let (id, _) = self.watch_hub.watch(spec, start_rev, tx);
        InternalWatcher {
            server: self.clone(),
            id,
            updates,
        }
    }
}

/// A watcher on the member's hub, used by the member itself.
pub struct InternalWatcher {
    server: Arc<Server>,
    id: WatcherId,
    pub updates: UpdateReceiver,
}

impl Drop for InternalWatcher {
    fn drop(&mut self) {
        self.server.watch_hub.cancel(self.id);
    }
}

fn unreachable_result<T>(other: Applied) -> Result<T, EtcdError> {
    tracing::error!(target: "etcdserver", "unexpected apply result {other:?}");
    Err(EtcdError::Corrupt)
}

/// Deletes a session key unless disarmed — if it was still created at `created_at`, when that
/// is given: a waiter that fails or whose caller goes away leaves the queue.
pub struct DeleteOnDrop {
    server: Option<Arc<Server>>,
    key: Bytes,
    created_at: Option<i64>,
    /// the caller, whose permission the delete needs once auth is enabled
    auth: Option<crate::auth::AuthInfo>,
}

impl DeleteOnDrop {
    pub fn new(server: Arc<Server>, key: Bytes, created_at: Option<i64>) -> Self {
        let auth = super::auth::REQUEST_AUTH
            .try_with(|a| a.clone())
            .ok()
            .flatten();
        DeleteOnDrop {
            server: Some(server),
            key,
            created_at,
            auth,
        }
    }

    pub fn disarm(&mut self) {
        self.server = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let created_at = self.created_at;
        let auth = self.auth.take();
        tokio::spawn(super::auth::REQUEST_AUTH.scope(auth, async move {
            let result = match created_at {
                None => server
                    .delete_through_log(DeleteRangeRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Some(rev) => {
                    let txn = TxnRequest {
                        compare: vec![create_revision_is(&key, rev)],
                        success: vec![delete_op(&key)],
                        failure: vec![],
                    };
                    server.txn_through_log(txn).await.map(drop)
                }
            };
            if let Err(e) = result {
                tracing::warn!(target: "v3lock", "failed to remove an abandoned waiter's key: {e}");
            }
        }));
    }
}
