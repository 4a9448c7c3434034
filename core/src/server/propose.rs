//! Propose and wait: a write becomes a `RaftRequest` with a fresh id, is registered with the
//! wait registry, handed to the Raft thread, and answered when the apply thread has applied it.
//! Linearizable reads use the read-index barrier instead of the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ketch_api::ketchpb::{raft_request::Request, RaftRequest, RequestHeader};
use ketch_api::status::EtcdError;
use prost::Message as _;

use super::Server;
use crate::apply::ApplyResult;
use crate::raft::RaftMsg;

/// How far apply may trail commit before new proposals are refused.
const MAX_APPLY_GAP: u64 = 5000;

/// etcd's request-id scheme: 2 bytes of member id, 5 bytes of start time in ms, 1 byte counter
/// (the counter may carry into the time bytes). Unique across restarts unless the member restarts
/// within the same millisecond.
pub struct IdGenerator {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGenerator {
    pub fn new(member_id: u64) -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        IdGenerator {
            prefix: (member_id & 0xffff) << 48,
            suffix: AtomicU64::new((ms & ((1 << 40) - 1)) << 8),
        }
    }

    pub fn next(&self) -> u64 {
        let s = self.suffix.fetch_add(1, Ordering::Relaxed) + 1;
        self.prefix | (s & ((1 << 48) - 1))
    }
}

impl Server {
    /// Proposes `request` and waits for its applied result, on behalf of the caller the
    /// task serves (`server::auth::REQUEST_AUTH`), if any.
    pub async fn propose(&self, request: Request) -> ApplyResult {
        let ai = super::auth::REQUEST_AUTH
            .try_with(|a| a.clone())
            .ok()
            .flatten();
        self.propose_as(ai.as_ref(), request).await
    }

    /// Proposes `request` for the caller `ai`: its user name and auth revision go in the
    /// header, where the apply thread checks them against the auth state of that moment.
    pub async fn propose_as(
        &self,
        ai: Option<&crate::auth::AuthInfo>,
        request: Request,
    ) -> ApplyResult {
        self.check_quota(&request).await?;
        let id = self.ids.next();
        let (username, auth_revision) = ai
            .map(|a| (a.username.clone(), a.revision))
            .unwrap_or_default();
        let data = RaftRequest {
            header: Some(RequestHeader {
                id,
                username,
                auth_revision,
            }),
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        // When apply falls far behind commit, refuse new work instead of queueing without
        // bound (etcd's maxGapBetweenApplyAndCommitIndex).
        if self
            .cluster
            .commit_index()
            .saturating_sub(*self.applied.borrow())
            > MAX_APPLY_GAP
        {
            return Err(EtcdError::TooManyRequests);
        }
        let waiter = self.waits.register(id);
        self.raft.send(RaftMsg::Propose { id, data })?;
        match tokio::time::timeout(self.request_timeout, waiter.wait()).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// etcd's quota check before a write that grows the store: over `--quota-backend-bytes`,
    /// this member raises NOSPACE (through the log) and the write is refused; while NOSPACE is
    /// raised, such writes are refused here already (the apply thread refuses them too).
    async fn check_quota(&self, request: &Request) -> Result<(), EtcdError> {
        let cost = match request {
            Request::Put(p) => p.key.len() + p.value.len(),
            Request::Txn(t) if !ketch_mvcc::is_read_only_txn(t) => t.encoded_len(),
            Request::LeaseGrant(_) => 0,
            _ => return Ok(()),
        };
        if self.alarms.no_space() {
            return Err(EtcdError::NoSpace);
        }
        let used = self.store.db_size_in_use();
        if used.saturating_add(cost as u64) <= self.quota_bytes {
            return Ok(());
        }
        let alarm = ketch_api::etcdserverpb::AlarmRequest {
            action: ketch_api::etcdserverpb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.cluster.member_id,
            alarm: ketch_api::etcdserverpb::AlarmType::Nospace as i32,
        };
        tracing::warn!(target: "etcdserver", "alarm NOSPACE raised by {:x}: {used} bytes in use, quota {} bytes", self.cluster.member_id, self.quota_bytes);
        // raised as the member itself (not as the caller), as etcd's quota interceptor does
        Box::pin(self.propose_as(None, Request::Alarm(alarm))).await?;
        Err(EtcdError::NoSpace)
    }

    /// Proposes a membership change and waits until this member has applied it.
    pub async fn propose_conf_change(&self, mut cc: raft::eraftpb::ConfChange) -> ApplyResult {
        let id = self.ids.next();
        cc.id = id;
        let waiter = self.waits.register(id);
        self.raft.send(RaftMsg::ProposeConfChange { cc })?;
        match tokio::time::timeout(self.request_timeout, waiter.wait()).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Returns once this member's state includes every write committed before the call
    /// (etcd's linearizableReadNotify).
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let wait = async {
            let index = self.raft.read_index().await?;
            let mut applied = self.applied.clone();
            applied
                .wait_for(|a| *a >= index)
                .await
                .map_err(|_| EtcdError::Stopped)?;
            Ok(())
        };
        match tokio::time::timeout(self.request_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}

/// Unwraps the expected variant of an apply result; anything else is an internal mix-up.
macro_rules! expect_applied {
    ($res:expr, $variant:ident) => {
        match $res {
            Ok($crate::apply::Applied::$variant(r)) => Ok(r),
            Ok(other) => Err(tonic::Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
            Err(e) => Err(tonic::Status::from(e)),
        }
    };
}
pub(crate) use expect_applied;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_carry_member_prefix() {
        let g = IdGenerator::new(0x8e9e05c52164694d);
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert_eq!(a >> 48, 0x694d);
    }
}
