//! etcd's KV service: validation, then reads from the local store (after a read-index barrier
//! unless serializable) and writes through the Raft log.

use ketch_api::etcdserverpb::kv_server::Kv;
use ketch_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ketch_api::ketchpb::raft_request::Request as Proposal;
use ketch_api::validate;
use tonic::{Request, Response, Status};

use super::propose::expect_applied;
use super::SharedServer;

pub struct KvService(pub SharedServer);

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let ai = self.0.auth_of(&req).await;
        let req = req.into_inner();
        validate::check_range(&req)?;
        if !req.serializable && self.0.cluster.local_is_learner() {
            return Err(ketch_api::status::EtcdError::NotSupportedForLearner.into());
        }
        if !req.serializable {
            self.0.linearizable_barrier().await?;
        }
        // etcd's doSerialize: the caller, its read permission, the read, then the auth
        // revision again (a change meanwhile makes the answer unsafe to give)
        let ai = ai?;
        self.0
            .auth
            .check_range(ai.as_ref(), &req.key, &req.range_end)?;
        let mut resp = self.0.store.range_for_wire(&req)?;
        check_auth_revision(&self.0, ai.as_ref())?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let ai = self.0.auth_of(&req).await?;
        let req = req.into_inner();
        validate::check_put(&req)?;
        let mut resp = expect_applied!(
            self.0.propose_as(ai.as_ref(), Proposal::Put(req)).await,
            Put
        )?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let ai = self.0.auth_of(&req).await?;
        let req = req.into_inner();
        validate::check_delete(&req)?;
        let mut resp = expect_applied!(
            self.0
                .propose_as(ai.as_ref(), Proposal::DeleteRange(req))
                .await,
            DeleteRange
        )?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let ai = self.0.auth_of(&req).await;
        let req = req.into_inner();
        validate::check_txn(&req, self.0.max_txn_ops)?;
        // A txn that only reads needs no log entry: a read barrier (unless every range is
        // serializable) and one snapshot of the local store, as etcd's read-only txn path.
        if ketch_mvcc::is_read_only_txn(&req) {
            if !ketch_mvcc::is_serializable_txn(&req) {
                self.0.linearizable_barrier().await?;
            }
            let ai = ai?;
            self.0.auth.check_txn(ai.as_ref(), &req)?;
            let mut resp = self.0.store.txn_read(&req)?;
            check_auth_revision(&self.0, ai.as_ref())?;
            self.0.fill_header(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let ai = ai?;
        let mut resp = expect_applied!(
            self.0.propose_as(ai.as_ref(), Proposal::Txn(req)).await,
            Txn
        )?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // etcd 3.4 checks no permission on compaction: only the token must be valid
        let ai = self.0.auth_of(&req).await?;
        let req = req.into_inner();
        let mut resp = expect_applied!(
            self.0
                .propose_as(ai.as_ref(), Proposal::Compaction(req))
                .await,
            Compaction
        )?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}

/// A serializable read answered under an auth revision that has since moved on is refused.
fn check_auth_revision(
    server: &super::Server,
    ai: Option<&crate::auth::AuthInfo>,
) -> Result<(), Status> {
    match ai {
        Some(a) if a.revision != 0 && a.revision != server.auth.revision() => {
            Err(ketch_api::status::EtcdError::AuthOldRevision.into())
        }
        _ => Ok(()),
    }
}
