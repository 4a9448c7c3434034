//! etcd's Lock service (v3lock): a distributed mutex as clientv3's `concurrency.Mutex` builds
//! it. The holder of a lock is the session key `<name>/<lease hex>` with the lowest create
//! revision under `<name>/`; a caller creates its key (attached to its lease, so the lock is
//! released if the lease ends) and waits until every older key is gone. Unlock deletes the key.

use bytes::Bytes;
use ketch_api::etcdserverpb::{DeleteRangeRequest, TxnRequest};
use ketch_api::v3lockpb::lock_server::Lock;
use ketch_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::concurrency::{
    create_revision_is, first_created, put_op, range_kvs, range_op, session_key, DeleteOnDrop,
};
use super::SharedServer;

pub struct LockService(pub SharedServer);

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.0
            .as_caller(req, |req| async move {
                let server = &self.0;
                let mut prefix = req.name.to_vec();
                prefix.push(b'/');
                let lease = server
                    .session_lease(req.lease)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                let key = session_key(&prefix, lease);
                let owner = range_op(first_created(&prefix));
                let txn = TxnRequest {
                    compare: vec![create_revision_is(&key, 0)],
                    success: vec![put_op(&key, Bytes::new(), lease), owner.clone()],
                    failure: vec![
                        range_op(ketch_api::etcdserverpb::RangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        }),
                        owner,
                    ],
                };
                let resp = server
                    .txn_through_log(txn)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                let header = resp.header;
                let my_rev = if resp.succeeded {
                    header.as_ref().map_or(0, |h| h.revision)
                } else {
                    range_kvs(&resp, 0)
                        .first()
                        .map_or(0, |kv| kv.create_revision)
                };
                let holder = range_kvs(&resp, 1).first().map(|kv| kv.create_revision);
                if holder.is_none() || holder == Some(my_rev) {
                    return Ok(Response::new(LockResponse { header, key }));
                }
                // Queued behind older keys. If the caller goes away while waiting, its key must not
                // stay in the queue (etcd unlocks on the way out too).
                let mut cleanup = DeleteOnDrop::new(server.clone(), key.clone(), None);
                let header = server
                    .wait_deletes(&prefix, my_rev - 1)
                    .await
                    .map_err(super::concurrency::kv_error)?;
                cleanup.disarm();
                Ok(Response::new(LockResponse {
                    header: Some(header),
                    key,
                }))
            })
            .await
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.0
            .as_caller(req, |req| async move {
                let resp = self
                    .0
                    .delete_through_log(DeleteRangeRequest {
                        key: req.key,
                        ..Default::default()
                    })
                    .await
                    .map_err(super::concurrency::kv_error)?;
                Ok(Response::new(UnlockResponse {
                    header: resp.header,
                }))
            })
            .await
    }
}
