//! etcd's Election service (v3election), as clientv3's `concurrency.Election` builds it: each
//! candidate owns the key `<name>/<lease hex>` (its value is what it proclaims); the leader is
//! the candidate whose key was created first. Campaign waits until every older candidate's key
//! is gone; Observe follows the leader's key and moves on to the next leader when it goes.

use bytes::Bytes;
use ketch_api::etcdserverpb::{RangeRequest, ResponseHeader, TxnRequest};
use ketch_api::mvccpb::event::EventType;
use ketch_api::v3electionpb::election_server::Election;
use ketch_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::concurrency::{
    create_revision_is, delete_op, first_created, prefix_end, put_op, range_kvs, range_op,
    session_key, unknown, DeleteOnDrop,
};
use super::SharedServer;
use crate::watch::{KeyRange, WatchSpec};

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// Leader changes queued for an Observe client that reads slowly.
const OBSERVE_QUEUE: usize = 16;

pub struct ElectionService {
    pub server: SharedServer,
    /// Turns true when the member stops: Observe streams end, so the listener can close.
    pub shutdown: watch::Receiver<bool>,
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.server
            .as_caller(req, |req| async move {
                let server = &self.server;
                let lease = server
                    .session_lease(req.lease)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                let prefix = prefix_of(&req.name);
                let key = session_key(&prefix, lease);
                let txn = TxnRequest {
                    compare: vec![create_revision_is(&key, 0)],
                    success: vec![put_op(&key, req.value.clone(), lease)],
                    failure: vec![range_op(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })],
                };
                let resp = server
                    .txn_through_log(txn)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                let header = resp.header;
                // Campaigning again with the same lease keeps the key (and its place in line).
                let existing = (!resp.succeeded)
                    .then(|| range_kvs(&resp, 0).first().cloned().unwrap_or_default());
                let rev = match &existing {
                    Some(kv) => kv.create_revision,
                    None => header.as_ref().map_or(0, |h| h.revision),
                };
                // Until elected, a campaign that fails or whose caller goes away resigns (as etcd's
                // does on a cancelled campaign), so its key does not block those behind it.
                let mut resign = DeleteOnDrop::new(server.clone(), key.clone(), Some(rev));
                if existing.is_some_and(|kv| kv.value != req.value) {
                    proclaim(server, &key, rev, lease, req.value.clone()).await?;
                }
                server
                    .wait_deletes(&prefix, rev - 1)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                resign.disarm();
                Ok(Response::new(CampaignResponse {
                    header,
                    leader: Some(LeaderKey {
                        name: req.name,
                        key,
                        rev,
                        lease,
                    }),
                }))
            })
            .await
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.server
            .as_caller(req, |req| async move {
                let leader = req.leader.ok_or_else(|| unknown(MISSING_LEADER_KEY))?;
                let header = proclaim(
                    &self.server,
                    &leader.key,
                    leader.rev,
                    leader.lease,
                    req.value,
                )
                .await?;
                Ok(Response::new(ProclaimResponse { header }))
            })
            .await
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.server
            .as_caller(req, |req| async move {
                let prefix = prefix_of(&req.name);
                let resp = self
                    .server
                    .range_linearizable(&first_created(&prefix))
                    .await
                    .map_err(super::concurrency::kv_error)?;
                let kv = resp
                    .kvs
                    .first()
                    .cloned()
                    .ok_or_else(|| unknown(NO_LEADER))?;
                Ok(Response::new(LeaderResponse {
                    header: resp.header,
                    kv: Some(kv),
                }))
            })
            .await
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        super::refuse_without_leader(&self.server, &req)?;
        // etcd's observer reads the election's keys as the caller
        let ai = self.server.auth_of(&req).await?;
        let prefix = prefix_of(&req.into_inner().name);
        let end = super::concurrency::prefix_end(&prefix);
        self.server.auth.check_range(ai.as_ref(), &prefix, &end)?;
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE);
        let server = self.server.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let closed = tx.clone();
            tokio::select! {
                _ = observe(server, prefix, tx) => {}
                _ = closed.closed() => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.server
            .as_caller(req, |req| async move {
                let leader = req.leader.ok_or_else(|| unknown(MISSING_LEADER_KEY))?;
                let txn = TxnRequest {
                    compare: vec![create_revision_is(&leader.key, leader.rev)],
                    success: vec![delete_op(&leader.key)],
                    failure: vec![],
                };
                let resp = self
                    .server
                    .txn_through_log(txn)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                Ok(Response::new(ResignResponse {
                    header: resp.header,
                }))
            })
            .await
    }
}

/// The leader sets a new value, if its key is still the one it created at `rev`.
async fn proclaim(
    server: &SharedServer,
    key: &Bytes,
    rev: i64,
    lease: i64,
    value: Bytes,
) -> Result<Option<ResponseHeader>, Status> {
    let txn = TxnRequest {
        compare: vec![create_revision_is(key, rev)],
        success: vec![put_op(key, value, lease)],
        failure: vec![],
    };
    let resp = server
        .txn_through_log(txn)
        .await
        .map_err(super::concurrency::kv_error)?;
    if !resp.succeeded {
        return Err(unknown(NOT_LEADER));
    }
    Ok(resp.header)
}

/// Sends the leader, then each new value it proclaims; when its key goes, the next leader (once
/// there is one). Returns when the client is gone or reading fails.
async fn observe(
    server: SharedServer,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    loop {
        let Ok(resp) = server.range_linearizable(&first_created(&prefix)).await else {
            return;
        };
        let mut header = resp.header.unwrap_or_default();
        let kv = match resp.kvs.into_iter().next() {
            Some(kv) => kv,
            None => {
                // No leader yet: the first put under the prefix is the first candidate's.
                let Some(range) = KeyRange::from_request(&prefix, &prefix_end(&prefix)) else {
                    return;
                };
                let spec = WatchSpec {
                    range,
                    no_put: false,
                    no_delete: true,
                };
                let mut w = server.watch_internal(spec, header.revision + 1);
                loop {
                    let Some(update) = w.updates.recv().await else {
                        return;
                    };
                    if update.compact_revision != 0 {
                        break; // read again
                    }
                    let put = update
                        .events
                        .into_iter()
                        .find(|e| e.r#type == EventType::Put as i32);
                    if let Some(kv) = put.and_then(|e| e.kv) {
                        // (a batch may hold several puts: the header is this one's revision)
                        header = server.header(kv.mod_revision);
                        if tx
                            .send(Ok(LeaderResponse {
                                header: Some(header),
                                kv: Some(kv.clone()),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        if !follow(&server, &kv.key, header.revision + 1, &tx).await {
                            return;
                        }
                        break;
                    }
                }
                continue;
            }
        };
        if tx
            .send(Ok(LeaderResponse {
                header: Some(header),
                kv: Some(kv.clone()),
            }))
            .await
            .is_err()
        {
            return;
        }
        if !follow(&server, &kv.key, header.revision + 1, &tx).await {
            return;
        }
    }
}

/// Sends every new value of the leader's `key` from `from_rev` until it is deleted (true) or
/// the client is gone (false).
async fn follow(
    server: &SharedServer,
    key: &[u8],
    from_rev: i64,
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> bool {
    let Some(range) = KeyRange::from_request(key, b"") else {
        return false;
    };
    let mut w = server.watch_internal(
        WatchSpec {
            range,
            no_put: false,
            no_delete: false,
        },
        from_rev,
    );
    loop {
        let Some(update) = w.updates.recv().await else {
            return false;
        };
        if update.compact_revision != 0 {
            return true; // history gone: start over from a fresh read
        }
        for ev in update.events {
            if ev.r#type == EventType::Delete as i32 {
                return true;
            }
            let header = server.header(update.revision);
            if tx
                .send(Ok(LeaderResponse {
                    header: Some(header),
                    kv: ev.kv,
                }))
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}
