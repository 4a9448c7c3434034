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
        let req = req.into_inner();
        validate::check_range(&req)?;
        if !req.serializable && self.0.cluster.local_is_learner() {
            return Err(ketch_api::status::EtcdError::NotSupportedForLearner.into());
        }
        if !req.serializable {
            self.0.linearizable_barrier().await?;
        }
        let mut resp = self.0.store.range_for_wire(&req)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        validate::check_put(&req)?;
        let mut resp = expect_applied!(self.0.propose(Proposal::Put(req)).await, Put)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_delete(&req)?;
        let mut resp = expect_applied!(self.0.propose(Proposal::DeleteRange(req)).await, DeleteRange)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        validate::check_txn(&req, self.0.max_txn_ops)?;
        let mut resp = expect_applied!(self.0.propose(Proposal::Txn(req)).await, Txn)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        let mut resp = expect_applied!(self.0.propose(Proposal::Compaction(req)).await, Compaction)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}
