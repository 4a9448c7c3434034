//! The serializable read cache: answers to serializable Range calls, kept in a bounded `moka`
//! cache and answered again without asking a member — never staler than what this proxy has
//! already shown a client.
//!
//! How it stays right (where etcd's grpc-proxy cache goes stale, etcd #14665, #7597):
//! - One proxy-held watch over the whole keyspace invalidates every entry whose range an
//!   event touches, whoever made the write (another proxy, a client of a member, a lease
//!   expiring). `watermark` is the revision up to which events have been applied.
//! - An answer is cached only if its revision is at least the watermark (so no event newer
//!   than it has already gone by), and only while the watch is live.
//! - `seen` is the newest revision of any answer that passed through the proxy. A cached
//!   answer is served only when the watermark has reached it, so a client never reads a
//!   revision older than one it got from this proxy; the answer carries the watermark as its
//!   revision, as it is exactly what a read at that revision gives.
//! - Entries are kept per caller (auth token or client certificate): one user is never served what another was
//!   allowed to read (etcd #22112). With auth on, the proxy's own watch may be refused; the
//!   cache then stays off.
//! - Requests for a specific revision are not cached (a compaction would have to be seen).
//!
//! Bounded in bytes (each entry weighs its encoded answer plus a fixed overhead, which also
//! bounds the number of entries); answers above [`MAX_ENTRY_BYTES`] are not kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ketch_api::etcdserverpb::watch_client::WatchClient;
use ketch_api::etcdserverpb::watch_request::RequestUnion;
use ketch_api::etcdserverpb::{RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use crate::director::Director;

/// Largest answer kept.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// What an entry weighs beyond its answer: keys, bookkeeping.
const ENTRY_OVERHEAD: u32 = 512;
/// Pause before the invalidation watch is opened again after it failed.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey {
    /// the caller: its auth token, or `cn:` and its client certificate's name
    pub token: Option<String>,
    /// the encoded RangeRequest
    pub request: Bytes,
}

/// One kept answer: the member's encoded RangeResponse, as it came.
pub struct Cached {
    message: Bytes,
    /// its header's revision
    revision: i64,
    key: Bytes,
    range_end: Bytes,
    weight: u32,
}

/// Which entries cover which keys, to invalidate by key.
#[derive(Default)]
struct Coverage {
    points: HashMap<Bytes, HashSet<Arc<CacheKey>>>,
    ranges: HashMap<Arc<CacheKey>, (Bytes, Bytes)>,
}

impl Coverage {
    fn add(&mut self, key: Arc<CacheKey>, start: &Bytes, end: &Bytes) {
        if end.is_empty() {
            self.points.entry(start.clone()).or_default().insert(key);
        } else {
            self.ranges.insert(key, (start.clone(), end.clone()));
        }
    }

    fn remove(&mut self, key: &CacheKey, start: &Bytes, end: &Bytes) {
        if end.is_empty() {
            if let Some(set) = self.points.get_mut(start) {
                set.remove(key);
                if set.is_empty() {
                    self.points.remove(start);
                }
            }
        } else {
            self.ranges.remove(key);
        }
    }

    /// The entries whose range holds `key`.
    fn covering(&self, key: &[u8]) -> Vec<Arc<CacheKey>> {
        let mut out: Vec<Arc<CacheKey>> = self
            .points
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (k, (start, end)) in &self.ranges {
            if in_range(key, start, end) {
                out.push(k.clone());
            }
        }
        out
    }
}

/// etcd's range semantics: `end` "\0" means every key from `start`.
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end == b"\0" || key < end)
}

pub struct RangeCache {
    entries: moka::sync::Cache<Arc<CacheKey>, Arc<Cached>>,
    coverage: Arc<Mutex<Coverage>>,
    /// Orders inserts against invalidations (see the module docs). Never taken by the
    /// eviction listener.
    order: Mutex<()>,
    watermark: AtomicI64,
    seen: AtomicI64,
    /// the invalidation watch is open and has said where it starts
    live: AtomicBool,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl RangeCache {
    pub fn new(max_bytes: u64) -> Arc<RangeCache> {
        let coverage = Arc::new(Mutex::new(Coverage::default()));
        let listener_coverage = coverage.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Arc<CacheKey>, v: &Arc<Cached>| v.weight)
            .eviction_listener(move |k: Arc<Arc<CacheKey>>, v: Arc<Cached>, _| {
                listener_coverage
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&k, &v.key, &v.range_end);
            })
            .build();
        Arc::new(RangeCache {
            entries,
            coverage,
            order: Mutex::new(()),
            watermark: AtomicI64::new(0),
            seen: AtomicI64::new(0),
            live: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether a request may be answered from (and kept in) the cache.
    pub fn cacheable(req: &RangeRequest) -> bool {
        req.serializable && req.revision == 0
    }

    /// A kept answer (an encoded RangeResponse), with its revision raised to the watermark;
    /// `None` when there is none or it could be older than what this proxy has already shown.
    /// While nothing has changed since the answer, it is sent again byte for byte.
    pub fn get(&self, key: &CacheKey) -> Option<Bytes> {
        let watermark = self.watermark.load(Ordering::Acquire);
        let fresh_enough =
            self.live.load(Ordering::Acquire) && watermark >= self.seen.load(Ordering::Acquire);
        let hit = if fresh_enough {
            self.entries.get(key)
        } else {
            None
        };
        let Some(c) = hit else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if c.revision >= watermark {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(c.message.clone());
        }
        let mut resp = RangeResponse::decode(&c.message[..]).ok()?;
        if let Some(h) = resp.header.as_mut() {
            h.revision = h.revision.max(watermark);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(resp.encode_to_vec().into())
    }

    /// Keeps a member's answer to `req` (its encoded RangeResponse) if nothing newer than it
    /// has been seen to change.
    pub fn insert(&self, key: CacheKey, req: &RangeRequest, message: Bytes) {
        if message.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Some(revision) = header_revision(&message) else {
            return;
        };
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if !self.live.load(Ordering::Acquire) || revision < self.watermark.load(Ordering::Acquire) {
            return;
        }
        let key = Arc::new(key);
        let weight = (message.len() as u32)
            .saturating_add(key.request.len() as u32)
            .saturating_add(ENTRY_OVERHEAD);
        let cached = Cached {
            message,
            revision,
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            weight,
        };
        self.coverage.lock().unwrap_or_else(|e| e.into_inner()).add(
            key.clone(),
            &cached.key,
            &cached.range_end,
        );
        self.entries.insert(key, Arc::new(cached));
    }

    /// An answer with this revision passed through the proxy.
    pub fn saw(&self, revision: i64) {
        self.seen.fetch_max(revision, Ordering::AcqRel);
    }

    /// Drops every entry that holds `key`.
    pub fn invalidate_key(&self, key: &[u8]) {
        let doomed = self
            .coverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .covering(key);
        for k in doomed {
            self.entries.invalidate(&k);
        }
    }

    /// Drops every entry that overlaps `[start, end)` (etcd's range forms).
    pub fn invalidate_range(&self, start: &[u8], end: &[u8]) {
        if end.is_empty() {
            return self.invalidate_key(start);
        }
        let doomed: Vec<Arc<CacheKey>> = {
            let cov = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
            let mut out: Vec<Arc<CacheKey>> = cov
                .points
                .iter()
                .filter(|(k, _)| in_range(k, start, end))
                .flat_map(|(_, s)| s.iter().cloned())
                .collect();
            for (k, (s, e)) in &cov.ranges {
                let overlaps = (e.as_ref() == b"\0" || start < e.as_ref())
                    && (end == b"\0" || s.as_ref() < end);
                if overlaps {
                    out.push(k.clone());
                }
            }
            out
        };
        for k in doomed {
            self.entries.invalidate(&k);
        }
    }

    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Keeps the invalidation watch open (on any member) until the proxy stops.
    pub async fn run_invalidation(
        self: Arc<Self>,
        director: Arc<Director>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = self.invalidation_once(&director) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // The watch is gone: what it would have told us is unknown, so nothing cached
            // can be trusted and nothing new may be kept until it is back.
            {
                let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
                self.live.store(false, Ordering::Release);
                self.clear();
            }
            tokio::select! {
                _ = tokio::time::sleep(REWATCH_PAUSE) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn invalidation_once(&self, director: &Director) {
        let Some(backend) = director.pick(b"").into_iter().next() else {
            return;
        };
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            })),
        };
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(create).await;
        let mut client =
            WatchClient::new(backend.channel.clone()).max_decoding_message_size(usize::MAX);
        let mut stream = match client.watch(ReceiverStream::new(rx)).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                debug!(target: "proxy", "cache invalidation watch on {} failed: {e}", backend.url);
                return;
            }
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                _ => return,
            };
            if resp.canceled {
                debug!(target: "proxy", "cache invalidation watch refused: {}", resp.cancel_reason);
                return;
            }
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            if resp.created {
                self.watermark.store(revision, Ordering::Release);
                self.live.store(true, Ordering::Release);
                continue;
            }
            for ev in &resp.events {
                if let Some(kv) = &ev.kv {
                    self.invalidate_key(&kv.key);
                }
            }
            let last = resp
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref())
                .map(|kv| kv.mod_revision)
                .max()
                .unwrap_or(revision);
            self.watermark.fetch_max(last, Ordering::AcqRel);
        }
    }
}

/// The response header revision of any etcd response message (the header is field 1 in all).
pub fn header_revision(message: &[u8]) -> Option<i64> {
    #[derive(Clone, PartialEq, Message)]
    struct HeaderOnly {
        #[prost(message, optional, tag = "1")]
        header: Option<ketch_api::etcdserverpb::ResponseHeader>,
    }
    HeaderOnly::decode(message).ok()?.header.map(|h| h.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_api::etcdserverpb::ResponseHeader;
    use ketch_api::mvccpb::KeyValue;

    fn answer(rev: i64, key: &str) -> Bytes {
        RangeResponse {
            header: Some(ResponseHeader {
                revision: rev,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            }],
            count: 1,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    fn revision(b: Bytes) -> i64 {
        header_revision(&b).unwrap()
    }

    fn req(key: &str, end: &str) -> RangeRequest {
        RangeRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            serializable: true,
            ..Default::default()
        }
    }

    fn ck(r: &RangeRequest, token: Option<&str>) -> CacheKey {
        CacheKey {
            token: token.map(str::to_string),
            request: r.encode_to_vec().into(),
        }
    }

    fn live_cache(watermark: i64) -> Arc<RangeCache> {
        let c = RangeCache::new(1 << 20);
        c.watermark.store(watermark, Ordering::Release);
        c.live.store(true, Ordering::Release);
        c
    }

    #[test]
    fn hits_need_a_live_watch_and_a_watermark_at_what_was_seen() {
        let c = live_cache(5);
        let r = req("a", "");
        c.insert(ck(&r, None), &r, answer(5, "a"));
        assert_eq!(
            c.get(&ck(&r, None)).unwrap(),
            answer(5, "a"),
            "unchanged: the member's bytes"
        );
        c.saw(7); // a write through the proxy got revision 7; its event has not come yet
        assert!(c.get(&ck(&r, None)).is_none());
        c.watermark.store(9, Ordering::Release);
        assert_eq!(
            revision(c.get(&ck(&r, None)).unwrap()),
            9,
            "answered as of the watermark"
        );
        c.live.store(false, Ordering::Release);
        assert!(c.get(&ck(&r, None)).is_none());
    }

    #[test]
    fn answers_older_than_the_watermark_are_not_kept() {
        let c = live_cache(8);
        let r = req("a", "");
        c.insert(ck(&r, None), &r, answer(7, "a"));
        assert!(c.get(&ck(&r, None)).is_none());
    }

    #[test]
    fn each_caller_has_its_own_entries() {
        let c = live_cache(1);
        let r = req("secret", "");
        c.insert(ck(&r, Some("alice")), &r, answer(1, "secret"));
        assert!(c.get(&ck(&r, Some("alice"))).is_some());
        assert!(c.get(&ck(&r, Some("mallory"))).is_none());
        assert!(c.get(&ck(&r, None)).is_none());
    }

    #[test]
    fn a_key_invalidates_the_points_and_ranges_that_hold_it() {
        let c = live_cache(1);
        let point = req("b", "");
        let range = req("a", "c");
        let from = req("x", "\0");
        let other = req("d", "");
        for r in [&point, &range, &from, &other] {
            c.insert(ck(r, None), r, answer(1, "k"));
        }
        c.invalidate_key(b"b");
        assert!(c.get(&ck(&point, None)).is_none());
        assert!(c.get(&ck(&range, None)).is_none());
        assert!(c.get(&ck(&from, None)).is_some());
        assert!(c.get(&ck(&other, None)).is_some());
        c.invalidate_key(b"zzz");
        assert!(
            c.get(&ck(&from, None)).is_none(),
            "a from-key range (end \\\\0) holds every key above its start"
        );
        c.invalidate_range(b"c", b"e");
        assert!(c.get(&ck(&other, None)).is_none());
    }

    #[test]
    fn only_serializable_reads_of_the_current_revision_are_cached() {
        assert!(RangeCache::cacheable(&req("a", "")));
        assert!(!RangeCache::cacheable(&RangeRequest {
            serializable: false,
            ..req("a", "")
        }));
        assert!(!RangeCache::cacheable(&RangeRequest {
            revision: 3,
            ..req("a", "")
        }));
    }

    #[test]
    fn the_header_revision_of_any_response_is_read() {
        let resp = ketch_api::etcdserverpb::PutResponse {
            header: Some(ResponseHeader {
                revision: 42,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(header_revision(&resp.encode_to_vec()), Some(42));
    }
}
