//! etcd's Lease service. Grant and revoke go through the Raft log; keep-alives and TTL queries
//! are answered by the leader's lessor — here when this member leads, otherwise forwarded to
//! the leader over the peer URLs (the `ketchpb.Peer` lease calls); the list of leases is this
//! member's own, as in etcd.

use std::future::Future;
use std::time::Duration;

use ketch_api::etcdserverpb::lease_server::Lease;
use ketch_api::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use ketch_api::ketchpb::peer_client::PeerClient;
use ketch_api::ketchpb::raft_request::Request as Proposal;
use ketch_api::status::EtcdError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use super::propose::expect_applied;
use super::{Server, SharedServer};
use crate::lease::primary::RenewError;
use crate::lease::TimeToLive;

/// Pause before asking again when there is no leader or it did not answer.
const LEADER_RETRY: Duration = Duration::from_millis(50);
/// Keep-alive answers queued for a client that reads them slowly.
const KEEPALIVE_QUEUE: usize = 16;

pub struct LeaseService {
    pub server: SharedServer,
    /// Turns true when the member stops: keep-alive streams end, so the listener can close.
    pub shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let ai = self.server.auth_of(&req).await?;
        let mut req = req.into_inner();
        // No id given: choose one, positive (etcd's reqIDGen, top bit cleared).
        while req.id == 0 {
            req.id = (self.server.ids.next() & (i64::MAX as u64)) as i64;
        }
        let mut resp = expect_applied!(
            self.server
                .propose_as(ai.as_ref(), Proposal::LeaseGrant(req))
                .await,
            LeaseGrant
        )?;
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let ai = self.server.auth_of(&req).await?;
        let req = req.into_inner();
        let mut resp = expect_applied!(
            self.server
                .propose_as(ai.as_ref(), Proposal::LeaseRevoke(req))
                .await,
            LeaseRevoke
        )?;
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        super::refuse_without_leader(&self.server, &req)?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE);
        tokio::spawn(keep_alive_stream(
            self.server.clone(),
            inbound,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let resp = match self.server.lease_time_to_live(req.id, req.keys).await {
            Ok(t) => LeaseTimeToLiveResponse {
                header: Some(self.server.header(0)),
                id: req.id,
                ttl: t.remaining,
                granted_ttl: t.granted,
                keys: t.keys,
            },
            // etcd answers a missing lease with TTL -1, not an error
            Err(EtcdError::LeaseNotFound) => LeaseTimeToLiveResponse {
                header: Some(self.server.header(0)),
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .server
            .lessor
            .leases()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.server.header(0)),
            leases,
        }))
    }
}

/// One keep-alive stream: each request renews its lease and is answered in order. A lease
/// that does not exist is answered with TTL 0; any other failure ends the stream with etcd's
/// error, as etcd's leaseKeepAlive does.
async fn keep_alive_stream(
    server: SharedServer,
    mut inbound: Streaming<LeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            _ = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok(Some(req)) = next else { return };
        // The header is taken before the renewal: its revision is never newer than the state
        // the renewal saw (a lease revoked at revision N never looks renewed at N + 1).
        let header = Some(server.header(0));
        let answer = match server.lease_renew(req.id).await {
            Ok(ttl) => Ok(LeaseKeepAliveResponse {
                header,
                id: req.id,
                ttl,
            }),
            Err(EtcdError::LeaseNotFound) => Ok(LeaseKeepAliveResponse {
                header,
                id: req.id,
                ttl: 0,
            }),
            Err(e) => Err(Status::from(e)),
        };
        let failed = answer.is_err();
        if tx.send(answer).await.is_err() || failed {
            return;
        }
    }
}

impl Server {
    /// etcd's LeaseRenew: the leader's lessor renews the lease and says its TTL.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, EtcdError> {
        self.on_leader(
            || self.primary_leases.renew(id),
            |mut peer| async move {
                let req = LeaseKeepAliveRequest { id };
                peer.lease_renew(req).await.map(|r| r.into_inner().ttl)
            },
        )
        .await
    }

    /// etcd's LeaseTimeToLive, answered by the leader's lessor.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<TimeToLive, EtcdError> {
        self.on_leader(
            || self.primary_leases.time_to_live(id, keys),
            |mut peer| async move {
                let req = LeaseTimeToLiveRequest { id, keys };
                peer.lease_time_to_live(req).await.map(|r| {
                    let r = r.into_inner();
                    TimeToLive {
                        remaining: r.ttl,
                        granted: r.granted_ttl,
                        keys: r.keys,
                    }
                })
            },
        )
        .await
    }

    /// Runs `local` when this member leads, `remote` against the leader otherwise; asks again
    /// while leadership moves, until the request timeout (etcd's waitLeader loop).
    async fn on_leader<T, L, LF, R, RF>(&self, local: L, remote: R) -> Result<T, EtcdError>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<Option<T>, RenewError>>,
        R: Fn(PeerClient<Channel>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = self.cluster.leader();
            if leader == self.cluster.member_id {
                match local().await {
                    Ok(Some(v)) => return Ok(v),
                    Ok(None) => {} // leadership is moving; look again
                    Err(RenewError::NotFound) => return Err(EtcdError::LeaseNotFound),
                    Err(RenewError::Etcd(e)) => return Err(e),
                }
            } else if leader != 0 {
                if let Some(peer) = self.transport.peer_client(leader) {
                    match tokio::time::timeout_at(deadline, remote(peer)).await {
                        Ok(Ok(v)) => return Ok(v),
                        Ok(Err(s)) if s.code() == Code::NotFound => {
                            return Err(EtcdError::LeaseNotFound)
                        }
                        Ok(Err(_)) => {} // not the leader any more, or unreachable
                        Err(_) => return Err(EtcdError::Timeout),
                    }
                }
            }
            if Instant::now() + LEADER_RETRY >= deadline {
                return Err(if self.cluster.leader() == 0 {
                    EtcdError::NoLeader
                } else {
                    EtcdError::Timeout
                });
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }
}
