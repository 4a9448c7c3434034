//! One client watch stream (etcd's `serverWatchStream`, `etcdserver/api/v3rpc/watch.go`): the
//! client's watch ids, what each watch asked for (prev_kv, fragment, progress_notify), and the
//! task that reads requests and writes responses.
//!
//! One task per stream owns all of its state. It waits on three things: the client's next
//! request, the stream's queue of hub updates, and the progress timer. A create is answered
//! (the `created` response) before the task looks at the queue again, so no event of a watch
//! can overtake its `created` response. When the client is slow to read, the task waits on the
//! gRPC send, the queue fills, and the hub turns this stream's watchers unsynced (see
//! [`super::hub`]): the writer never waits for this stream.
//!
//! As in etcd 3.4, a client that half-closes its side keeps receiving events until it goes
//! away; the stream also ends when the member shuts down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ketch_api::etcdserverpb::watch_create_request::FilterType;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use ketch_api::status::EtcdError;
use ketch_api::watch::{fragments, DUPLICATE_ID, EMPTY_RANGE, INVALID_WATCH_ID};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::group::KeyRange;
use super::hub::{WatchHub, WatchSpec, WatchUpdate, WatcherId};
use super::queue::{update_queue, UpdateReceiver, UpdateSender};
use crate::server::Server;

/// Updates one stream's queue holds before its watchers fall behind (etcd: 128 per stream).
pub const STREAM_QUEUE: usize = 1024;
/// Bytes of keys and values one stream's queue holds before its watchers fall behind.
pub const STREAM_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Responses waiting for the gRPC layer.
pub const OUT_QUEUE: usize = 16;
/// etcd's shortest progress interval (`minWatchProgressInterval`).
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

pub type ResponseSender = mpsc::Sender<Result<WatchResponse, Status>>;

struct ClientWatch {
    hub_id: WatcherId,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Whether the next progress tick should send a notification (cleared by events).
    progress_due: bool,
}

/// The state of one stream, owned by its task.
pub struct WatchStream {
    server: Arc<Server>,
    hub: Arc<WatchHub>,
    out: ResponseSender,
    updates_tx: UpdateSender,
    watches: HashMap<i64, ClientWatch>,
    by_hub: HashMap<WatcherId, i64>,
    next_id: i64,
    /// Responses above this size are split when the watch asked for fragments.
    max_response_bytes: usize,
    /// who opened the stream: each create is checked for read permission on its range
    credentials: crate::server::auth::Credentials,
}

/// The client has gone away (or the member is stopping): end the stream.
struct Gone;

impl WatchStream {
    /// Serves one stream until the client goes away or `shutdown` turns true.
    pub async fn serve(
        server: Arc<Server>,
        inbound: Streaming<WatchRequest>,
        out: ResponseSender,
        shutdown: watch::Receiver<bool>,
        max_response_bytes: usize,
        credentials: crate::server::auth::Credentials,
    ) {
        let (updates_tx, updates_rx) = update_queue(STREAM_QUEUE, STREAM_QUEUE_BYTES);
        let mut stream = WatchStream {
            hub: server.watch_hub.clone(),
            server,
            out,
            updates_tx,
            watches: HashMap::new(),
            by_hub: HashMap::new(),
            next_id: 0,
            max_response_bytes,
            credentials,
        };
        stream.run(inbound, updates_rx, shutdown).await;
        for w in stream.watches.values() {
            stream.hub.cancel(w.hub_id);
        }
    }

    async fn run(
        &mut self,
        mut inbound: Streaming<WatchRequest>,
        mut updates: UpdateReceiver,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = progress_period(self.server.watch_progress_interval);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reading = true;
        let out = self.out.clone();
        loop {
            let step = tokio::select! {
                biased;
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => Err(Gone),
                _ = out.closed() => Err(Gone),
                msg = inbound.message(), if reading => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    // half-closed: etcd keeps sending until the client goes away
                    Ok(None) => {
                        reading = false;
                        Ok(())
                    }
                    Err(_) => Err(Gone),
                },
                Some(update) = updates.recv() => self.deliver(update).await,
                _ = ticker.tick() => {
                    self.progress_tick();
                    Ok(())
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.server.cluster.cluster_id,
            member_id: self.server.cluster.member_id,
            revision,
            raft_term: self.server.cluster.term(),
        })
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(resp)).await.map_err(|_| Gone)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                // etcd answers only the cancel of a watch it knows
                if let Some(w) = self.watches.remove(&c.watch_id) {
                    self.hub.cancel(w.hub_id);
                    self.by_hub.remove(&w.hub_id);
                    let resp = WatchResponse {
                        header: self.header(self.hub.notified_revision()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.send(resp).await?;
                }
                Ok(())
            }
            // As in etcd 3.4, answered at once with the notified revision and watch id -1;
            // events of that revision may still be in this stream's queue behind it.
            Some(RequestUnion::ProgressRequest(_)) => {
                let resp = WatchResponse {
                    header: self.header(self.hub.notified_revision()),
                    watch_id: INVALID_WATCH_ID,
                    ..Default::default()
                };
                self.send(resp).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        let refuse = |reason: &str, rev: i64, this: &Self| WatchResponse {
            header: this.header(rev),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // etcd's isWatchPermitted: refused as a created-and-canceled watch
        let permitted = match self.server.resolve(&self.credentials).await {
            Ok(ai) => self
                .server
                .auth
                .check_range(ai.as_ref(), &c.key, &c.range_end),
            Err(e) => Err(e),
        };
        if let Err(e) = permitted {
            let reason = match e {
                EtcdError::InvalidAuthToken | EtcdError::AuthOldRevision | EtcdError::UserEmpty => {
                    e
                }
                _ => EtcdError::PermissionDenied,
            };
            // etcd sends the gRPC error's text: "rpc error: code = ... desc = ..."
            let reason = format!(
                "rpc error: code = {} desc = {reason}",
                go_code_name(reason.code())
            );
            let resp = refuse(&reason, self.hub.notified_revision(), self);
            return self.send(resp).await;
        }
        let Some(range) = KeyRange::from_request(&c.key, &c.range_end) else {
            let resp = refuse(EMPTY_RANGE, self.hub.notified_revision(), self);
            return self.send(resp).await;
        };
        // clientv3's AutoWatchID is 0: the server picks the lowest free id from a counter
        let id = if c.watch_id == 0 {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watches.contains_key(&c.watch_id) {
            let resp = refuse(DUPLICATE_ID, self.hub.notified_revision(), self);
            return self.send(resp).await;
        } else {
            c.watch_id
        };
        let spec = WatchSpec {
            range,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let (hub_id, rev) = self
            .hub
            .watch(spec, c.start_revision, self.updates_tx.clone());
        self.watches.insert(
            id,
            ClientWatch {
                hub_id,
                prev_kv: c.prev_kv,
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                progress_due: true,
            },
        );
        self.by_hub.insert(hub_id, id);
        let resp = WatchResponse {
            header: self.header(rev),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        self.send(resp).await
    }

    async fn deliver(&mut self, update: WatchUpdate) -> Result<(), Gone> {
        let Some(&id) = self.by_hub.get(&update.watcher) else {
            return Ok(()); // cancelled after the hub queued this
        };
        let Some(w) = self.watches.get_mut(&id) else {
            return Ok(());
        };
        let mut events = update.events;
        if w.prev_kv {
            let store = &self.server.store;
            events.iter_mut().for_each(|e| store.fill_prev_kv(e));
        }
        if !events.is_empty() && w.progress_notify {
            w.progress_due = false;
        }
        let fragment = w.fragment;
        let compacted = update.compact_revision != 0;
        if compacted {
            // The hub has dropped the watcher; the id stays taken until the client cancels it,
            // as in etcd.
            self.by_hub.remove(&update.watcher);
        }
        let resp = WatchResponse {
            header: self.header(update.revision),
            watch_id: id,
            events,
            compact_revision: update.compact_revision,
            canceled: compacted,
            ..Default::default()
        };
        if fragment {
            for part in fragments(resp, self.max_response_bytes) {
                self.send(part).await?;
            }
            Ok(())
        } else {
            self.send(resp).await
        }
    }

    /// etcd's progress ticker: a watch that asked for progress and got no events since the
    /// last tick is sent its revision (if it is synced).
    fn progress_tick(&mut self) {
        for w in self.watches.values_mut() {
            if !w.progress_notify {
                continue;
            }
            if w.progress_due {
                self.hub.progress(w.hub_id);
            }
            w.progress_due = true;
        }
    }
}

/// The progress period with etcd's floor and up to 10% jitter, so streams opened together do
/// not all tick together.
/// grpc-go's name of a status code, as its errors print it.
fn go_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::Unauthenticated => "Unauthenticated",
        _ => "Unknown",
    }
}

fn progress_period(configured: Duration) -> Duration {
    let base = configured.max(MIN_PROGRESS_INTERVAL);
    let jitter_ns = (base.as_nanos() / 10).min(u64::MAX as u128) as u64;
    let jitter = if jitter_ns > 0 {
        Duration::from_nanos(rand::random::<u64>() % jitter_ns)
    } else {
        Duration::ZERO
    };
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_period_has_a_floor_and_bounded_jitter() {
        let p = progress_period(Duration::from_millis(1));
        assert!(p >= MIN_PROGRESS_INTERVAL && p < MIN_PROGRESS_INTERVAL * 11 / 10);
        let p = progress_period(Duration::from_secs(600));
        assert!(p >= Duration::from_secs(600) && p < Duration::from_secs(660));
    }
}
