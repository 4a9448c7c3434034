//! The leader's side of leases: the lease task that promotes and demotes the lessor with
//! leadership, proposes the revocation of expired leases and the checkpoints of remaining TTLs;
//! and [`PrimaryLeases`], which answers keep-alives and TTL queries on the leader — for this
//! member's clients and for those other members forward.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{LeaseCheckpointRequest, LeaseRevokeRequest};
use ketch_api::ketchpb::raft_request::Request;
use ketch_api::status::EtcdError;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Lessor, PrimaryError, TimeToLive};
use crate::cluster::ClusterState;
use crate::server::Server;

/// etcd's leaseRevokeRate: at most this many revocations are proposed per second.
pub const REVOKE_PER_SECOND: usize = 1000;
/// Revocations proposed per round; rounds are at least [`ROUND`] apart when full.
const REVOKE_PER_ROUND: usize = REVOKE_PER_SECOND / 2;
const ROUND: Duration = Duration::from_millis(500);
/// Most leases checkpointed in one proposal (etcd's maxLeaseCheckpointBatchSize).
const CHECKPOINTS_PER_PROPOSAL: usize = 1000;

/// Runs until `shutdown`: follows leadership, and while this member leads, revokes what
/// expires and checkpoints what is due.
pub async fn run(server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    let lessor = server.lessor.clone();
    let mut leader = server.cluster.watch_leader();
    let member_id = server.cluster.member_id;
    // An election timeout on top of each lease's TTL when this member takes over, so that
    // clients have time to find the new leader (etcd's Promote(electionTimeout)).
    let extend = server.election_timeout;
    let mut primary = false;
    loop {
        let leads = *leader.borrow_and_update() == member_id;
        if leads != primary {
            primary = leads;
            if leads {
                // Grants committed under the old leader must be known before expiries are set.
                server.primary_leases.caught_up().await.ok();
                lessor.promote(extend);
                debug!(target: "lease", "lessor promoted");
            } else {
                lessor.demote();
                debug!(target: "lease", "lessor demoted");
            }
        }
        let mut pause = None;
        if primary {
            let now = Instant::now();
            let expired = lessor.take_expired(now, REVOKE_PER_ROUND);
            if expired.len() == REVOKE_PER_ROUND {
                pause = Some(now + ROUND);
            }
            for id in expired {
                let server = server.clone();
                tokio::spawn(async move {
                    match server
                        .propose(Request::LeaseRevoke(LeaseRevokeRequest { id }))
                        .await
                    {
                        Ok(_) | Err(EtcdError::LeaseNotFound) => {}
                        Err(e) => {
                            warn!(target: "lease", "failed to revoke expired lease {id:x}: {e}")
                        }
                    }
                });
            }
            loop {
                let checkpoints = lessor.take_checkpoints(now, CHECKPOINTS_PER_PROPOSAL);
                if checkpoints.is_empty() {
                    break;
                }
                let full = checkpoints.len() == CHECKPOINTS_PER_PROPOSAL;
                let server = server.clone();
                tokio::spawn(async move {
                    let req = LeaseCheckpointRequest { checkpoints };
                    if let Err(e) = server.propose(Request::LeaseCheckpoint(req)).await {
                        warn!(target: "lease", "failed to checkpoint leases: {e}");
                    }
                });
                if !full {
                    break;
                }
            }
        }
        let wake = match (pause, lessor.next_deadline()) {
            (Some(p), _) => Some(p),
            (None, d) if primary => d,
            _ => None,
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = lessor.changed(), if pause.is_none() => {}
            _ = sleep => {}
        }
    }
}

/// Keep-alives and TTL queries as the leader answers them.
#[derive(Clone)]
pub struct PrimaryLeases {
    pub lessor: Arc<Lessor>,
    pub cluster: Arc<ClusterState>,
    pub applied: watch::Receiver<u64>,
    pub timeout: Duration,
}

impl PrimaryLeases {
    /// Waits until this member has applied what was committed when it was asked (etcd's
    /// waitAppliedIndex), so that a new leader knows every lease granted before it led.
    pub async fn caught_up(&self) -> Result<(), EtcdError> {
        let commit = self.cluster.commit_index();
        let mut applied = self.applied.clone();
        let outcome = tokio::time::timeout(self.timeout, applied.wait_for(|a| *a >= commit)).await;
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::TimeoutWaitAppliedIndex),
        }
    }

    fn leads(&self) -> bool {
        self.cluster.leader() == self.cluster.member_id
    }

    /// Renews lease `id`; `Ok(None)` when this member is not the primary.
    pub async fn renew(&self, id: i64) -> Result<Option<i64>, RenewError> {
        if !self.leads() {
            return Ok(None);
        }
        self.caught_up().await.map_err(RenewError::Etcd)?;
        match self.lessor.renew(id) {
            Ok(ttl) => Ok(Some(ttl)),
            Err(PrimaryError::NotPrimary) => Ok(None),
            Err(PrimaryError::NotFound) => Err(RenewError::NotFound),
        }
    }

    /// Lease `id`'s TTL; `Ok(None)` when this member is not the primary.
    pub async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<TimeToLive>, RenewError> {
        if !self.leads() {
            return Ok(None);
        }
        self.caught_up().await.map_err(RenewError::Etcd)?;
        match self.lessor.time_to_live(id, keys) {
            Ok(t) => Ok(Some(t)),
            Err(PrimaryError::NotPrimary) => Ok(None),
            Err(PrimaryError::NotFound) => Err(RenewError::NotFound),
        }
    }
}

/// Why the primary could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewError {
    /// No such lease: keep-alives answer TTL 0, TTL queries TTL -1.
    NotFound,
    Etcd(EtcdError),
}
