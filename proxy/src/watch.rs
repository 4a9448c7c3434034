//! Watch coalescing: the proxy serves etcd's Watch service itself and gives client watchers on
//! the same range (and the same caller identity) one upstream watch, a *broadcast*, as etcd's
//! grpc-proxy does — but exact: every client watcher receives every event of its range once,
//! in revision order, with its own watch id, prev_kv and filters, and none before its start
//! revision.
//!
//! - A watcher starting "now" (revision 0) joins a broadcast of its range that has started,
//!   and starts where the broadcast is (its Created response says that revision).
//! - A watcher with a start revision joins a broadcast that has not yet passed that revision;
//!   events below it are dropped for it. Otherwise it gets a broadcast of its own, which reads
//!   history from the member.
//! - The upstream watch always asks for prev_kv and progress notifications; each client gets
//!   prev_kv only if it asked, and progress only if it asked.
//! - When the upstream stream fails, the broadcast opens it again on another member from the
//!   first revision it has not seen: no gap, and no duplicate (revisions below each watcher's
//!   next revision are dropped).
//! - A client stream that does not read its responses fast enough (its queue of
//!   [`CLIENT_QUEUE`] responses is full) is ended with UNAVAILABLE, never slowing the others;
//!   clientv3 opens it again and resumes from the revisions it has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use ketch_api::etcdserverpb::watch_client::WatchClient;
use ketch_api::etcdserverpb::watch_create_request::FilterType;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::watch_server::Watch;
use ketch_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use ketch_api::mvccpb::event::EventType;
use ketch_api::watch::{fragments, DUPLICATE_ID, EMPTY_RANGE, INVALID_WATCH_ID};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::director::Director;

/// Responses queued for one client stream before it counts as too slow.
pub const CLIENT_QUEUE: usize = 1024;
/// Pause before opening a failed upstream watch again.
const RESUME_PAUSE: Duration = Duration::from_millis(100);
/// Metadata a client's watch carries that the member must see: who the caller is, and
/// whether it needs a leader.
const FORWARDED_METADATA: [&str; 3] = ["token", "hasleader", crate::PROXIED_IDENTITY];

type ClientOut = mpsc::Sender<Result<WatchResponse, Status>>;

/// What makes watchers share a broadcast: the same range, asked by the same caller.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RangeKey {
    key: Bytes,
    range_end: Bytes,
    /// the caller (auth token or certificate name): one caller never receives events under
    /// another's permissions
    token: Option<String>,
}

/// The proxy's watches: broadcasts by range, and counts for `/ketch/proxy/stats`.
pub struct WatchProxy {
    director: Arc<Director>,
    broadcasts: Mutex<HashMap<RangeKey, Vec<Arc<Broadcast>>>>,
    max_response_bytes: usize,
    next_stream: AtomicU64,
    /// upstream watches open now
    pub upstream_watches: AtomicU64,
    /// client watchers open now
    pub client_watches: AtomicU64,
}

impl WatchProxy {
    pub fn new(director: Arc<Director>, max_response_bytes: usize) -> Arc<WatchProxy> {
        Arc::new(WatchProxy {
            director,
            broadcasts: Mutex::new(HashMap::new()),
            max_response_bytes,
            next_stream: AtomicU64::new(1),
            upstream_watches: AtomicU64::new(0),
            client_watches: AtomicU64::new(0),
        })
    }

    /// Adds a client watcher: to a broadcast that can serve it, else to a new one.
    fn join(
        self: &Arc<Self>,
        key: RangeKey,
        start_rev: i64,
        mut receiver: Receiver,
        metadata: &MetadataMap,
    ) -> Arc<Broadcast> {
        let mut all = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        let candidates = all.entry(key.clone()).or_default();
        for b in candidates.iter() {
            let mut st = b.lock();
            if st.ended {
                continue;
            }
            let fits = if start_rev == 0 {
                // only a broadcast that started "now" itself: one reading history is behind
                st.start_rev == 0
            } else if st.created {
                st.next_rev <= start_rev
            } else {
                st.start_rev == start_rev
            };
            if fits {
                receiver.next_rev = start_rev.max(if st.created { st.next_rev } else { 0 });
                if st.created {
                    let created = created_response(&st, receiver.watch_id, start_rev != 0);
                    receiver.created_sent = true;
                    receiver.send(created);
                    if let Some(tx) = receiver.created.take() {
                        let _ = tx.send(());
                    }
                }
                st.receivers.push(receiver);
                self.client_watches.fetch_add(1, Ordering::Relaxed);
                return b.clone();
            }
        }
        let b = Arc::new(Broadcast {
            key: key.clone(),
            proxy: Arc::downgrade(self),
            state: Mutex::new(BroadcastState {
                receivers: Vec::new(),
                next_rev: 0,
                start_rev,
                header: None,
                created: false,
                ended: false,
            }),
            retire: Notify::new(),
            metadata: forwarded(metadata),
        });
        receiver.next_rev = start_rev;
        b.lock().receivers.push(receiver);
        self.client_watches.fetch_add(1, Ordering::Relaxed);
        candidates.push(b.clone());
        drop(all);
        tokio::spawn(b.clone().run_upstream());
        b
    }

    /// A response header as a member would send now: asked of a member (a serializable
    /// read), for answers the proxy gives itself.
    async fn latest_header(&self, metadata: &MetadataMap) -> Option<ResponseHeader> {
        use ketch_api::etcdserverpb::kv_client::KvClient;
        use ketch_api::etcdserverpb::RangeRequest;
        for backend in self.director.pick(b"") {
            let mut req = Request::new(RangeRequest {
                key: Bytes::from_static(b"\0"),
                serializable: true,
                count_only: true,
                ..Default::default()
            });
            for (k, v) in forwarded(metadata) {
                req.metadata_mut().insert(k, v);
            }
            if let Ok(resp) = KvClient::new(backend.channel.clone()).range(req).await {
                return resp.into_inner().header;
            }
        }
        None
    }

    /// Removes a client watcher; the broadcast ends with its last one.
    fn leave(&self, b: &Arc<Broadcast>, stream: u64, watch_id: i64) {
        let mut all = self.broadcasts.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = b.lock();
        let before = st.receivers.len();
        st.receivers
            .retain(|r| !(r.stream == stream && r.watch_id == watch_id));
        if st.receivers.len() < before {
            self.client_watches.fetch_sub(1, Ordering::Relaxed);
        }
        if st.receivers.is_empty() && !st.ended {
            st.ended = true;
            b.retire.notify_one();
        }
        if st.ended {
            if let Some(list) = all.get_mut(&b.key) {
                list.retain(|x| !Arc::ptr_eq(x, b));
                if list.is_empty() {
                    all.remove(&b.key);
                }
            }
        }
    }
}

/// One client watcher inside a broadcast.
struct Receiver {
    stream: u64,
    watch_id: i64,
    out: ClientOut,
    /// Wakes the client stream when its queue overflowed (it then ends).
    overflow: Arc<Notify>,
    /// Events below this revision are not for this watcher (already sent, or before its start).
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    created_sent: bool,
    /// Told once the Created (or refusal) response is queued: the client stream handles its
    /// next request only then, so responses to creates come in request order, as from etcd.
    created: Option<tokio::sync::oneshot::Sender<()>>,
    max_response_bytes: usize,
}

impl Receiver {
    /// Queues a response; false when the client is gone or too slow (then it is dropped).
    fn send(&self, resp: WatchResponse) -> bool {
        let parts = if self.fragment {
            fragments(resp, self.max_response_bytes)
        } else {
            vec![resp]
        };
        for part in parts {
            match self.out.try_send(Ok(part)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.overflow.notify_one();
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// This watcher's share of an upstream response with events; `None` when nothing is left.
    fn events_of(&self, resp: &WatchResponse) -> Option<WatchResponse> {
        let events: Vec<_> = resp
            .events
            .iter()
            .filter(|e| {
                e.kv.as_ref()
                    .is_some_and(|kv| kv.mod_revision >= self.next_rev)
            })
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && self.no_put || !put && self.no_delete)
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        if events.is_empty() {
            return None;
        }
        Some(WatchResponse {
            header: resp.header,
            watch_id: self.watch_id,
            events,
            ..Default::default()
        })
    }
}

struct BroadcastState {
    receivers: Vec<Receiver>,
    /// The first revision the upstream watch has not delivered (valid once created).
    next_rev: i64,
    /// The revision the broadcast was asked to start at (0: now).
    start_rev: i64,
    /// The latest header from upstream.
    header: Option<ResponseHeader>,
    created: bool,
    ended: bool,
}

/// One upstream watch shared by client watchers of one range.
pub struct Broadcast {
    key: RangeKey,
    proxy: Weak<WatchProxy>,
    state: Mutex<BroadcastState>,
    /// Told when the last receiver left.
    retire: Notify,
    metadata: Vec<(
        &'static str,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
}

/// Who is asking, for sharing upstream watches: the auth token, else the client certificate's
/// name the proxy passes on.
pub(crate) fn caller(metadata: &MetadataMap) -> Option<String> {
    let get = |k: &str| {
        metadata
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    get("token").or_else(|| get(crate::PROXIED_IDENTITY).map(|cn| format!("cn:{cn}")))
}

fn forwarded(
    metadata: &MetadataMap,
) -> Vec<(
    &'static str,
    tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
)> {
    FORWARDED_METADATA
        .iter()
        .filter_map(|k| metadata.get(*k).map(|v| (*k, v.clone())))
        .collect()
}

/// The Created response for a watcher joining a started broadcast. Its revision is what a
/// member would say: the current revision as the broadcast knows it — for a watcher starting
/// "now", the broadcast's position, after which it gets every event.
fn created_response(st: &BroadcastState, watch_id: i64, historical: bool) -> WatchResponse {
    let mut header = st.header.unwrap_or_default();
    if !historical {
        header.revision = (st.next_rev - 1).max(0);
    }
    WatchResponse {
        header: Some(header),
        watch_id,
        created: true,
        ..Default::default()
    }
}

impl Broadcast {
    fn lock(&self) -> std::sync::MutexGuard<'_, BroadcastState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps one upstream watch open (reopening it where it left off) until the last receiver
    /// leaves or the member ends the watch (compaction, refusal).
    async fn run_upstream(self: Arc<Self>) {
        let Some(proxy) = self.proxy.upgrade() else {
            return;
        };
        proxy.upstream_watches.fetch_add(1, Ordering::Relaxed);
        drop(proxy);
        loop {
            if self.lock().ended {
                break;
            }
            let finished = tokio::select! {
                f = self.upstream_once() => f,
                _ = self.retire.notified() => true,
            };
            if finished {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(RESUME_PAUSE) => {}
                _ = self.retire.notified() => break,
            }
        }
        if let Some(proxy) = self.proxy.upgrade() {
            proxy.upstream_watches.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// One upstream stream; true when the broadcast is over, false to open it again.
    async fn upstream_once(&self) -> bool {
        let Some(proxy) = self.proxy.upgrade() else {
            return true;
        };
        let Some(backend) = proxy.director.pick(&self.key.key).into_iter().next() else {
            return false;
        };
        drop(proxy);
        let start = {
            let st = self.lock();
            if st.created {
                st.next_rev
            } else {
                st.start_rev
            }
        };
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: self.key.key.clone(),
                range_end: self.key.range_end.clone(),
                start_revision: start,
                progress_notify: true,
                prev_kv: true,
                ..Default::default()
            })),
        };
        // The request stream stays open (a closed one would end the watch) until we drop it.
        let (req_tx, req_rx) = mpsc::channel(1);
        let _ = req_tx.send(create).await;
        let mut request = Request::new(ReceiverStream::new(req_rx));
        for (k, v) in &self.metadata {
            request.metadata_mut().insert(*k, v.clone());
        }
        let mut client =
            WatchClient::new(backend.channel.clone()).max_decoding_message_size(usize::MAX);
        let mut stream = match client.watch(request).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                debug!(target: "proxy", "upstream watch on {} failed: {e}", backend.url);
                if let Some(p) = self.proxy.upgrade() {
                    p.director.failed(&backend);
                }
                return false;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if self.on_upstream(resp) {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    debug!(target: "proxy", "upstream watch on {} broke: {e}", backend.url);
                    return false;
                }
            }
        }
    }

    /// Hands one upstream response to the receivers; true when the broadcast is over.
    fn on_upstream(&self, resp: WatchResponse) -> bool {
        let mut st = self.lock();
        if resp.created && !resp.canceled {
            if !st.created {
                st.created = true;
                let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                st.next_rev = if st.start_rev > 0 {
                    st.start_rev
                } else {
                    rev + 1
                };
                st.header = resp.header;
                let next_rev = st.next_rev;
                for i in 0..st.receivers.len() {
                    if !st.receivers[i].created_sent {
                        let historical = st.start_rev != 0;
                        let created = created_response(&st, st.receivers[i].watch_id, historical);
                        let r = &mut st.receivers[i];
                        r.created_sent = true;
                        // watchers that started "now" start where the upstream watch did
                        if r.next_rev == 0 {
                            r.next_rev = next_rev;
                        }
                        r.send(created);
                        if let Some(tx) = r.created.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
            return false;
        }
        if resp.canceled || resp.compact_revision != 0 {
            // The member ended the watch (history compacted, or refused): so do the receivers.
            for r in &st.receivers {
                let mut out = WatchResponse {
                    header: resp.header,
                    watch_id: r.watch_id,
                    canceled: true,
                    compact_revision: resp.compact_revision,
                    cancel_reason: resp.cancel_reason.clone(),
                    ..Default::default()
                };
                if !r.created_sent {
                    out.created = true;
                }
                r.send(out);
            }
            for r in st.receivers.iter_mut() {
                if let Some(tx) = r.created.take() {
                    let _ = tx.send(());
                }
            }
            st.ended = true;
            return true;
        }
        if resp.header.is_some() {
            st.header = resp.header;
        }
        let last = resp
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .max();
        let progress = resp.events.is_empty();
        let mut dropped = Vec::new();
        for (i, r) in st.receivers.iter_mut().enumerate() {
            let out = if progress {
                r.progress_notify.then(|| WatchResponse {
                    header: resp.header,
                    watch_id: r.watch_id,
                    ..Default::default()
                })
            } else {
                r.events_of(&resp)
            };
            if let Some(out) = out {
                if !r.send(out) {
                    dropped.push(i);
                    continue;
                }
            }
            match last {
                Some(l) => r.next_rev = r.next_rev.max(l + 1),
                None => {
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    r.next_rev = r.next_rev.max(rev + 1);
                }
            }
        }
        match last {
            Some(l) => st.next_rev = st.next_rev.max(l + 1),
            None => {
                let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                st.next_rev = st.next_rev.max(rev + 1);
            }
        }
        for i in dropped.into_iter().rev() {
            st.receivers.remove(i);
            if let Some(p) = self.proxy.upgrade() {
                p.client_watches.fetch_sub(1, Ordering::Relaxed);
            }
        }
        false
    }
}

/// etcd's Watch service as the proxy serves it.
pub struct WatchService(pub Arc<WatchProxy>);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = req.metadata().clone();
        let inbound = req.into_inner();
        let (out, rx) = mpsc::channel(CLIENT_QUEUE);
        let proxy = self.0.clone();
        let stream = proxy.next_stream.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(
            ClientStream {
                proxy,
                stream,
                out,
                overflow: Arc::new(Notify::new()),
                watches: HashMap::new(),
                next_id: 0,
                metadata,
            }
            .run(inbound),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One client's watch stream: its watch ids and the broadcasts they are in.
struct ClientStream {
    proxy: Arc<WatchProxy>,
    stream: u64,
    out: ClientOut,
    overflow: Arc<Notify>,
    watches: HashMap<i64, Arc<Broadcast>>,
    next_id: i64,
    metadata: MetadataMap,
}

impl ClientStream {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let mut reading = true;
        let out = self.out.clone();
        let overflow = self.overflow.clone();
        loop {
            tokio::select! {
                msg = inbound.message(), if reading => match msg {
                    Ok(Some(req)) => {
                        if !self.handle(req).await {
                            break;
                        }
                    }
                    // half-closed: keep sending until the client goes away, as etcd does
                    Ok(None) => reading = false,
                    Err(_) => break,
                },
                _ = overflow.notified() => {
                    self.leave_all();
                    let _ = out
                        .send(Err(Status::unavailable("ketch proxy: watch stream too slow to keep up; open it again")))
                        .await;
                    return;
                }
                _ = out.closed() => break,
            }
        }
        self.leave_all();
    }

    fn leave_all(&mut self) {
        for (id, b) in self.watches.drain() {
            self.proxy.leave(&b, self.stream, id);
        }
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    async fn handle(&mut self, req: WatchRequest) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some(b) = self.watches.remove(&c.watch_id) {
                    let header = b.lock().header;
                    self.proxy.leave(&b, self.stream, c.watch_id);
                    return self
                        .send(WatchResponse {
                            header,
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        })
                        .await;
                }
                true
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Everything up to the least advanced of this stream's broadcasts has been
                // queued for it, so that revision is the progress it can promise.
                let mut header: Option<ResponseHeader> = None;
                for b in self.watches.values() {
                    let st = b.lock();
                    if let Some(h) = &st.header {
                        let mut h = *h;
                        h.revision = st.next_rev - 1;
                        if header.as_ref().is_none_or(|cur| h.revision < cur.revision) {
                            header = Some(h);
                        }
                    }
                }
                self.send(WatchResponse {
                    header,
                    watch_id: INVALID_WATCH_ID,
                    ..Default::default()
                })
                .await
            }
            None => true,
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let header = self.proxy.latest_header(&self.metadata).await;
        let refuse = |reason: &str| WatchResponse {
            header,
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let empty_range =
            !c.range_end.is_empty() && c.range_end.as_ref() != b"\0" && c.range_end <= c.key;
        if empty_range {
            return self.send(refuse(EMPTY_RANGE)).await;
        }
        let id = if c.watch_id == 0 {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watches.contains_key(&c.watch_id) {
            return self.send(refuse(DUPLICATE_ID)).await;
        } else {
            c.watch_id
        };
        let (created_tx, created_rx) = tokio::sync::oneshot::channel();
        let token = caller(&self.metadata);
        let key = RangeKey {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            token,
        };
        let receiver = Receiver {
            stream: self.stream,
            watch_id: id,
            out: self.out.clone(),
            overflow: self.overflow.clone(),
            next_rev: 0,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            created_sent: false,
            created: Some(created_tx),
            max_response_bytes: self.proxy.max_response_bytes,
        };
        let b = self
            .proxy
            .join(key, c.start_revision, receiver, &self.metadata);
        self.watches.insert(id, b);
        tokio::select! {
            _ = created_rx => true,
            _ = self.out.closed() => false,
        }
    }
}
