//! Peer transport: Raft messages between members over gRPC on the peer URLs.
//!
//! Sending: each peer has a bounded queue and a task that keeps one client stream open to it
//! and writes whatever has queued as one batch, so a burst of appends and heartbeats costs one
//! frame, not one round trip each. The Raft thread only ever `try_send`s: a full queue or a
//! broken link drops the message and reports the peer unreachable, and Raft retransmits — the
//! Raft thread never waits for the network, and the network never waits for the disk.
//!
//! Receiving: the `ketchpb.Peer` service checks the sender's cluster id and hands each message
//! to the Raft thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use ketch_api::ketchpb::peer_client::PeerClient;
use ketch_api::ketchpb::peer_server::{Peer, PeerServer};
use ketch_api::ketchpb::{
    MemberRecord, MembersRequest, MembersResponse, RaftBatch, SnapshotAck, SnapshotChunk, StreamAck,
};
use ketch_gateway::tls::stream::ListenerTls;
use ketch_mvcc::Store;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::storage::MemStorage;
use raft::SnapshotStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::raft::{RaftHandle, RaftMsg};

/// What a member answers the Raft messages of a member the cluster removed (etcd's words).
const REMOVED_MEMBER: &str = "the member has been permanently removed from the cluster";

/// Messages waiting for one peer; beyond this the Raft thread drops (Raft resends).
const PEER_QUEUE: usize = 4096;
/// A batch is closed at this many encoded bytes (Raft messages carry up to 1 MiB of entries).
const BATCH_BYTES: usize = 4 << 20;
/// Largest batch a receiver accepts.
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Snapshot data goes in chunks of this size.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Pause before reconnecting to a peer that failed.
const RETRY: Duration = Duration::from_millis(100);

pub use ketch_gateway::tls::dial::ChannelDialer as PeerDialer;

/// The sending half, shared by the Raft thread (which sends) and the member (which tells it
/// who the peers are).
pub struct Transport {
    cluster_id: u64,
    local_id: u64,
    dial_timeout: Duration,
    raft: RaftHandle,
    runtime: tokio::runtime::Handle,
    links: Mutex<HashMap<u64, Link>>,
    epoch: Instant,
    snapshots: SnapshotSource,
    /// peers a snapshot is being sent to
    sending: Arc<Mutex<HashSet<u64>>>,
    /// Channels for unary peer calls (forwarded lease calls), by peer id, with the URL each
    /// was made for; connected on first use.
    call_channels: Mutex<HashMap<u64, (String, tonic::transport::Channel)>>,
    dialer: PeerDialer,
}

/// What a leader needs to make a snapshot for a peer: the backend, raft-rs's log (for the
/// term of the snapshot's index) and a directory for the file while it is sent.
#[derive(Clone)]
pub struct SnapshotSource {
    pub store: Arc<Store>,
    pub log: MemStorage,
    pub dir: PathBuf,
}

struct Link {
    urls: Vec<String>,
    /// When the open stream to the peer was opened, as ms since `epoch`; 0 while down.
    active: Arc<AtomicU64>,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Transport {
    pub fn new(
        cluster_id: u64,
        local_id: u64,
        dial_timeout: Duration,
        raft: RaftHandle,
        runtime: tokio::runtime::Handle,
        snapshots: SnapshotSource,
        dialer: PeerDialer,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            cluster_id,
            local_id,
            dial_timeout,
            raft,
            runtime,
            links: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            snapshots,
            sending: Arc::new(Mutex::new(HashSet::new())),
            call_channels: Mutex::new(HashMap::new()),
            dialer,
        })
    }

    /// Sends a snapshot of the backend to the peer raft-rs addressed `m` (a MsgSnapshot) to,
    /// in the background, and reports the outcome to Raft. raft-rs's snapshot names the commit
    /// index; the backend copy holds the applied state, so the message is rewritten to name
    /// exactly what the copy holds (index, term, and the members as of that index) — the peer
    /// then takes the rest from the log. One snapshot per peer at a time.
    pub fn send_snapshot(&self, m: Message) {
        let to = m.to;
        if !self
            .sending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to)
        {
            return; // the one in flight will report
        }
        let Some(urls) = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .map(|l| l.urls.clone())
        else {
            self.sending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&to);
            let _ = self
                .raft
                .send(RaftMsg::SnapshotStatus(to, SnapshotStatus::Failure));
            return;
        };
        let (src, raft, sending) = (
            self.snapshots.clone(),
            self.raft.clone(),
            self.sending.clone(),
        );
        let (cluster_id, dial_timeout, dialer) =
            (self.cluster_id, self.dial_timeout, self.dialer.clone());
        self.runtime.spawn(async move {
            let path = src.dir.join(format!("send-{to:016x}.snap.db"));
            let started = Instant::now();
            let outcome = send_snapshot_to(&src, m, &path, &urls, cluster_id, dial_timeout, &dialer).await;
            let _ = tokio::fs::remove_file(&path).await;
            let status = match outcome {
                Ok((index, bytes)) => {
                    info!(target: "rafthttp", "sent database snapshot at index {index} to peer {to:x} ({bytes} bytes in {:?})", started.elapsed());
                    SnapshotStatus::Finish
                }
                Err(e) => {
                    warn!(target: "rafthttp", "failed to send database snapshot to peer {to:x}: {e}");
                    SnapshotStatus::Failure
                }
            };
            sending.lock().unwrap_or_else(|e| e.into_inner()).remove(&to);
            let _ = raft.send(RaftMsg::SnapshotStatus(to, status));
        });
    }

    /// Makes the set of links match `members` (other than this member): new members get a
    /// link, removed ones lose theirs, members whose peer URLs changed are reconnected.
    pub fn set_peers(&self, members: &[MemberRecord]) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|id, _| members.iter().any(|m| m.id == *id));
        for m in members.iter().filter(|m| m.id != self.local_id) {
            if links.get(&m.id).is_some_and(|l| l.urls == m.peer_urls) {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let active = Arc::new(AtomicU64::new(0));
            let sender = LinkSender {
                active: active.clone(),
                epoch: self.epoch,
                to: m.id,
                urls: m.peer_urls.clone(),
                cluster_id: self.cluster_id,
                from: self.local_id,
                dial_timeout: self.dial_timeout,
                raft: self.raft.clone(),
                dialer: self.dialer.clone(),
            };
            let task = self.runtime.spawn(sender.run(rx));
            links.insert(
                m.id,
                Link {
                    urls: m.peer_urls.clone(),
                    active,
                    queue,
                    task,
                },
            );
        }
    }

    /// Whether a stream to peer `id` has been open for at least `since` without a break
    /// (etcd's ActiveSince, which its reconfiguration checks use with 5 s).
    pub fn is_active_for(&self, id: u64, since: Duration) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let Some(link) = links.get(&id) else {
            return false;
        };
        let opened = link.active.load(Ordering::Acquire);
        opened != 0
            && self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(opened))
                >= since
    }

    /// A client for unary calls to peer `id` (its first peer URL), `None` if it is not a
    /// known peer. The connection is made on the first call and kept.
    pub fn peer_client(&self, id: u64) -> Option<PeerClient<tonic::transport::Channel>> {
        let url = {
            let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            links.get(&id)?.urls.first()?.clone()
        };
        let mut channels = self.call_channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, channel)) = channels.get(&id) {
            if *known == url {
                return Some(PeerClient::new(channel.clone()));
            }
        }
        let dial_timeout = self.dial_timeout;
        let channel = self
            .dialer
            .connect_lazy(&url, |e| e.connect_timeout(dial_timeout).tcp_nodelay(true))
            .ok()?;
        channels.insert(id, (url, channel.clone()));
        Some(PeerClient::new(channel))
    }

    /// Queues `m` for its recipient. False if the recipient is unknown or its queue is full
    /// (the caller reports it unreachable).
    pub fn send(&self, m: Message) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        match links.get(&m.to) {
            Some(link) => link.queue.try_send(m).is_ok(),
            None => false,
        }
    }
}

async fn send_snapshot_to(
    src: &SnapshotSource,
    mut m: Message,
    path: &std::path::Path,
    urls: &[String],
    cluster_id: u64,
    dial_timeout: Duration,
    dialer: &PeerDialer,
) -> Result<(u64, u64), String> {
    std::fs::create_dir_all(&src.dir).map_err(|e| format!("create {}: {e}", src.dir.display()))?;
    let (store, file) = (src.store.clone(), path.to_path_buf());
    let (index, members) = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(&file);
        store.snapshot_file_with_meta(&file, crate::cluster::MEMBERS_META_KEY)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("copy backend: {e}"))?;
    let term =
        raft::Storage::term(&src.log, index).map_err(|e| format!("term of index {index}: {e}"))?;
    let members = crate::cluster::decode_members(members.as_deref().unwrap_or_default())
        .map_err(|e| format!("members record: {e}"))?;
    {
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(crate::raft::bootstrap::conf_state_of(&members));
    }
    m.mut_snapshot().data = Default::default();
    let header = SnapshotChunk {
        cluster_id,
        message: m.write_to_bytes().map_err(|e| e.to_string())?.into(),
        data: Bytes::new(),
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let size = file.metadata().await.map_err(|e| e.to_string())?.len();
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let url = urls.first().ok_or("peer has no URL")?;
    let channel = dialer
        .connect(url, |e| e.connect_timeout(dial_timeout))
        .await
        .map_err(|e| format!("dial {url}: {e}"))?;
    let mut client = PeerClient::new(channel).max_encoding_message_size(MAX_BATCH_BYTES);
    let feed = async move {
        use tokio::io::AsyncReadExt;
        let mut file = file;
        tx.send(header)
            .await
            .map_err(|_| "peer closed the stream".to_string())?;
        loop {
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok::<_, String>(());
            }
            buf.truncate(n);
            let chunk = SnapshotChunk {
                cluster_id,
                message: Bytes::new(),
                data: buf.into(),
            };
            tx.send(chunk)
                .await
                .map_err(|_| "peer closed the stream".to_string())?;
        }
    };
    let call = client.snapshot(ReceiverStream::new(rx));
    let (fed, answered) = tokio::join!(feed, call);
    answered.map_err(|e| format!("peer refused: {}", e.message()))?;
    fed?;
    Ok((index, size))
}

/// One peer's sending task.
struct LinkSender {
    active: Arc<AtomicU64>,
    epoch: Instant,
    to: u64,
    urls: Vec<String>,
    cluster_id: u64,
    from: u64,
    dial_timeout: Duration,
    raft: RaftHandle,
    dialer: PeerDialer,
}

impl LinkSender {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut attempt = 0usize;
        let mut was_up = false;
        loop {
            let url = &self.urls[attempt % self.urls.len().max(1)];
            attempt += 1;
            match self.connect(url).await {
                Ok(client) => {
                    if !was_up {
                        info!(target: "rafthttp", "peer {:x} became active ({url})", self.to);
                        was_up = true;
                    }
                    let ended = self.stream(client, &mut queue).await;
                    self.active.store(0, Ordering::Release);
                    if ended.is_none() {
                        return; // the transport dropped this link
                    }
                }
                Err(e) => debug!(target: "rafthttp", "dial peer {:x} at {url}: {e}", self.to),
            }
            if was_up {
                warn!(target: "rafthttp", "lost the link to peer {:x}", self.to);
                was_up = false;
            }
            let _ = self.raft.send(RaftMsg::Unreachable(self.to));
            // What queued while the link was down is stale; Raft resends what still matters.
            tokio::time::sleep(RETRY).await;
            while queue.try_recv().is_ok() {}
        }
    }

    async fn connect(&self, url: &str) -> Result<PeerClient<tonic::transport::Channel>, String> {
        let dial_timeout = self.dial_timeout;
        let channel = self
            .dialer
            .connect(url, |e| {
                e.connect_timeout(dial_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(3))
            })
            .await?;
        Ok(PeerClient::new(channel).max_encoding_message_size(MAX_BATCH_BYTES))
    }

    /// The stream ended: a peer that refuses a removed member tells this member it was removed.
    fn ended(&self, error: Option<Status>) {
        let Some(e) = error else { return };
        if e.code() == tonic::Code::PermissionDenied && e.message() == REMOVED_MEMBER {
            let _ = self.raft.send(RaftMsg::RemovedByPeer(self.to));
        }
        debug!(target: "rafthttp", "stream to peer {:x} ended: {e}", self.to);
    }

    /// Streams batches until the link breaks (`Some`) or the queue is closed (`None`).
    async fn stream(
        &self,
        mut client: PeerClient<tonic::transport::Channel>,
        queue: &mut mpsc::Receiver<Message>,
    ) -> Option<()> {
        let (batches, rx) = mpsc::channel::<RaftBatch>(4);
        let mut call = Box::pin(client.stream(ReceiverStream::new(rx)));
        let opened = self.epoch.elapsed().as_millis().max(1) as u64;
        self.active.store(opened, Ordering::Release);
        loop {
            let first = tokio::select! {
                m = queue.recv() => m?,
                r = &mut call => {
                    self.ended(r.err());
                    return Some(());
                }
            };
            let mut size = 0usize;
            let mut messages = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m.write_to_bytes() {
                    Ok(b) => {
                        size += b.len();
                        messages.push(Bytes::from(b));
                    }
                    Err(e) => warn!(target: "rafthttp", "cannot encode raft message: {e}"),
                }
                if size < BATCH_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            let batch = RaftBatch {
                cluster_id: self.cluster_id,
                from: self.from,
                messages,
            };
            tokio::select! {
                permit = batches.reserve() => match permit {
                    Ok(p) => p.send(batch),
                    Err(_) => return Some(()),
                },
                r = &mut call => {
                    self.ended(r.err());
                    return Some(());
                }
            }
        }
    }
}

/// The receiving half: the `ketchpb.Peer` service.
pub struct PeerService {
    pub cluster: Arc<crate::cluster::ClusterState>,
    pub raft: RaftHandle,
    /// where received snapshots are kept until the store has restored from them
    pub snap_dir: PathBuf,
    /// answers the lease calls other members forward to the leader
    pub leases: crate::lease::primary::PrimaryLeases,
}

/// The file a received snapshot at `index` is kept in (named in the MsgSnapshot's data for
/// the apply thread, and found there again by a restart that happened before the restore).
pub fn received_snapshot_path(dir: &std::path::Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}.snap.db"))
}

impl PeerService {
    pub fn into_server(self) -> PeerServer<PeerService> {
        PeerServer::new(self).max_decoding_message_size(MAX_BATCH_BYTES)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<StreamAck>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            if batch.cluster_id != self.cluster.cluster_id {
                warn!(
                    target: "rafthttp",
                    "refusing raft messages from member {:x} of cluster {:x} (this is cluster {:x})",
                    batch.from, batch.cluster_id, self.cluster.cluster_id
                );
                return Err(Status::failed_precondition("cluster ID mismatch"));
            }
            if self.cluster.was_removed(batch.from) {
                return Err(Status::permission_denied(REMOVED_MEMBER));
            }
            for raw in &batch.messages {
                match Message::parse_from_bytes(raw) {
                    Ok(m) => {
                        if self.raft.send(RaftMsg::Step(m)).is_err() {
                            return Err(Status::unavailable("member is stopping"));
                        }
                    }
                    Err(e) => {
                        warn!(target: "rafthttp", "undecodable raft message from {:x}: {e}", batch.from)
                    }
                }
            }
        }
        Ok(Response::new(StreamAck {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        use tokio::io::AsyncWriteExt;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        if first.cluster_id != self.cluster.cluster_id {
            return Err(Status::failed_precondition("cluster ID mismatch"));
        }
        let mut m = Message::parse_from_bytes(&first.message)
            .map_err(|e| Status::invalid_argument(format!("snapshot message: {e}")))?;
        if m.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument("first chunk is not a MsgSnapshot"));
        }
        let index = m.get_snapshot().get_metadata().index;
        tokio::fs::create_dir_all(&self.snap_dir).await?;
        let path = received_snapshot_path(&self.snap_dir, index);
        let tmp = path.with_extension("tmp");
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            bytes += chunk.data.len() as u64;
            file.write_all(&chunk.data).await?;
        }
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await?;
        info!(
            target: "rafthttp",
            "received database snapshot at index {index} from {:x} ({bytes} bytes)", m.from
        );
        m.mut_snapshot().data = path.to_string_lossy().into_owned().into_bytes().into();
        self.raft
            .send(RaftMsg::Step(m))
            .map_err(|_| Status::unavailable("member is stopping"))?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let id = req.into_inner().id;
        let ttl = lease_answer(self.leases.renew(id).await)?;
        Ok(Response::new(LeaseKeepAliveResponse {
            header: None,
            id,
            ttl,
        }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let t = lease_answer(self.leases.time_to_live(req.id, req.keys).await)?;
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            ttl: t.remaining,
            granted_ttl: t.granted,
            keys: t.keys,
        }))
    }

    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.cluster.cluster_id,
            members: self.cluster.members(),
        }))
    }
}

/// A forwarded lease call's answer as a status the forwarding member understands: NOT_FOUND
/// for a missing lease, FAILED_PRECONDITION when this member is not the leader.
fn lease_answer<T>(
    answer: Result<Option<T>, crate::lease::primary::RenewError>,
) -> Result<T, Status> {
    use crate::lease::primary::RenewError;
    match answer {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Status::failed_precondition("not the leader")),
        Err(RenewError::NotFound) => Err(Status::not_found("lease not found")),
        Err(RenewError::Etcd(e)) => Err(Status::unavailable(e.to_string())),
    }
}

/// Asks the members at `peer_urls` (any one that answers) for the cluster's id and members.
pub async fn fetch_cluster(
    peer_urls: &[String],
    dial_timeout: Duration,
    dialer: &PeerDialer,
) -> Result<(u64, Vec<MemberRecord>), String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        let attempt = async {
            let channel = dialer
                .connect(url, |e| {
                    e.connect_timeout(dial_timeout)
                        .timeout(Duration::from_secs(5))
                })
                .await?;
            let resp = PeerClient::new(channel)
                .members(MembersRequest {})
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            Ok::<_, String>((resp.cluster_id, resp.members))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(format!(
        "could not retrieve cluster information from the given URLs ({})",
        errors.join("; ")
    ))
}

/// Serves the peer service on `listeners` until `shutdown` turns true; `https://` ones with
/// `tls`.
pub fn serve_peers(
    service: impl Fn() -> PeerServer<PeerService>,
    listeners: Vec<(url::Url, tokio::net::TcpListener)>,
    tls: Option<ListenerTls>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|(url, l)| {
            let svc = service();
            let mut shutdown = shutdown.clone();
            let tls = crate::config::is_tls_scheme(&url)
                .then(|| tls.clone())
                .flatten();
            tokio::spawn(async move {
                let addr = l.local_addr().ok();
                let incoming = ketch_gateway::tls::stream::incoming(l, tls);
                let res = tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = shutdown.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = res {
                    warn!(target: "rafthttp", "peer listener {addr:?} failed: {e}");
                }
            })
        })
        .collect()
}
