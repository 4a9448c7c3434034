//! etcd's Maintenance service: status, hashes, alarms, leader transfer and snapshots;
//! defragmentation and the whole-backend Hash are not built yet and answer `Unimplemented`
//! with a message saying so.

use std::pin::Pin;

use futures::Stream;
use ketch_api::etcdserverpb::alarm_request::AlarmAction;
use ketch_api::etcdserverpb::maintenance_server::Maintenance;
use ketch_api::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use ketch_api::status::EtcdError;
use tonic::{Request, Response, Status};

use super::propose::expect_applied;
use super::SharedServer;
use ketch_api::ketchpb::raft_request::Request as Proposal;

pub struct MaintenanceService(pub SharedServer);

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("ketch: {what} is not available in this build yet"))
}

/// etcd's snapshotSendBufferSize.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Reads the snapshot file and sends it, then its SHA-256; stops when the client goes away.
fn send_snapshot(
    mut file: std::fs::File,
    total: u64,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    use std::io::Read;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut sent = 0u64;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    while sent < total {
        let want = ((total - sent) as usize).min(SNAPSHOT_CHUNK);
        if let Err(e) = file.read_exact(&mut buf[..want]) {
            let _ = tx.blocking_send(Err(Status::internal(format!("snapshot: {e}"))));
            return;
        }
        digest.update(&buf[..want]);
        sent += want as u64;
        let chunk = SnapshotResponse {
            header: None,
            remaining_bytes: total - sent,
            blob: buf[..want].to_vec().into(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
    let sha = digest.finish();
    let last = SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: sha.as_ref().to_vec().into(),
    };
    let _ = tx.blocking_send(Ok(last));
    tracing::info!(target: "etcdserver/api/v3rpc", "sending database sha256 checksum to client [total bytes: {total}]");
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Lists the raised alarms (this member's view); raising and disarming go through the log.
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        if req.action() == AlarmAction::Get {
            return Ok(Response::new(AlarmResponse {
                header: Some(self.0.header(0)),
                alarms: self.0.alarms.list(),
            }));
        }
        let mut resp = expect_applied!(self.0.propose(Proposal::Alarm(req)).await, Alarm)?;
        self.0.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.0;
        let leader = s.cluster.leader();
        let mut errors = vec![];
        if leader == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        let me = s.cluster.member(s.cluster.member_id);
        Ok(Response::new(StatusResponse {
            header: Some(s.header(0)),
            version: ketch_api::ETCD_SERVER_VERSION.to_string(),
            db_size: s.store.db_size() as i64,
            leader,
            raft_index: s.cluster.commit_index(),
            raft_term: s.cluster.term(),
            raft_applied_index: *s.applied.borrow(),
            errors,
            db_size_in_use: s.store.db_size_in_use() as i64,
            is_learner: me.map(|m| m.is_learner).unwrap_or(false),
        }))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.0.check_admin_maintenance(&req).await?;
        // one member's backend, not through the log (as etcd); writes wait while it runs
        let store = self.0.store.clone();
        tracing::info!(target: "etcdserver", "starting to defragment the storage backend...");
        let (before, after) = tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("defragment: {e}")))?;
        tracing::info!(target: "etcdserver", "finished defragmenting the storage backend (size {before} -> {after} bytes)");
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.0.check_admin_maintenance(&req).await?;
        Err(not_yet("hash of the whole backend"))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.0.check_admin_maintenance(&req).await?;
        let (hash, compact_revision) = self.0.store.hash_kv(req.into_inner().revision)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(0)),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    /// The backend as a file, streamed in chunks with the bytes remaining, then its SHA-256 as
    /// a last message (`etcdctl snapshot save` checks that one is there), as etcd does. The copy
    /// is consistent (one committed state) and never holds up writers.
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.check_admin_maintenance(&req).await?;
        let store = self.0.store.clone();
        let (file, total) = tokio::task::spawn_blocking(move || store.snapshot_copy())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("snapshot: {e}")))?;
        tracing::info!(target: "etcdserver/api/v3rpc", "sending database snapshot to client [{total} bytes]");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || send_snapshot(file, total, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let s = &self.0;
        if s.cluster.leader() != s.cluster.member_id {
            return Err(EtcdError::NotLeader.into());
        }
        match s.cluster.member(target) {
            Some(m) if !m.is_learner => {}
            _ => return Err(EtcdError::BadLeaderTransferee.into()),
        }
        s.raft.send(crate::raft::RaftMsg::TransferLeader(target))?;
        let deadline = tokio::time::Instant::now() + s.request_timeout;
        while s.cluster.leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(EtcdError::TimeoutLeaderTransfer.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // etcd answers with an empty response, no header
        Ok(Response::new(MoveLeaderResponse::default()))
    }
}
