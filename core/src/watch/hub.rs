//! The watch hub: every watcher of the member, and the two ways events reach them — modelled on
//! etcd's watchable store (`mvcc/watchable_store.go`).
//!
//! - **Synced** watchers have seen everything up to the last revision the apply thread handed
//!   over (`notified_rev`). After each committed batch the apply thread calls [`WatchHub::notify`],
//!   which offers each revision's events to the synced watchers on its keys, one response per
//!   watcher per revision, with a non-blocking `try_send` into the watcher's stream queue.
//! - **Unsynced** watchers are behind: they started at an old revision, or their stream queue
//!   was full when an event came (etcd's "victims"). The sync thread reads their events back from
//!   the MVCC history ([`ketch_mvcc::Store::events`]) in bounded pages, for up to
//!   [`MAX_WATCHERS_PER_SYNC`] watchers per round, and moves a watcher back to the synced group
//!   once it has caught up. A watcher whose next revision has been compacted away gets etcd's
//!   compacted response and is dropped.
//!
//! The apply thread never waits for a client: a full queue turns the watcher unsynced at the
//! revision it could not take, and the history read brings it the rest later. Unlike etcd, a
//! victim does not keep the events it missed in memory; it re-reads them, so a slow stream
//! costs the member no memory beyond its bounded queue.
//!
//! Ordering: within one watcher, responses are in revision order. Notify runs under the hub
//! lock; a history page is read without it (from a published snapshot) and handed out under
//! it, and a watcher only turns synced if no revision after the page has been notified yet.
//! Events a notify offers to a watcher below its `min_rev` are skipped, so a revision read from
//! history is never also notified.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ketch_api::mvccpb::{event::EventType, Event};
use ketch_api::status::EtcdError;
use ketch_mvcc::Store;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{error, warn};

use super::group::{KeyRange, WatcherGroup};
pub use super::queue::UpdateSender;

/// Watchers taken into one history read (etcd's `maxWatchersPerSync`).
pub const MAX_WATCHERS_PER_SYNC: usize = 512;
/// Backend rows one history read looks at, at most (rounded up to a whole revision).
pub const MAX_ROWS_PER_SYNC: usize = 10_000;
/// Bytes of keys and values one history read takes, at most (rounded up likewise).
pub const MAX_BYTES_PER_SYNC: usize = 4 * 1024 * 1024;
/// How often the sync thread looks for unsynced watchers when nothing wakes it (etcd: 100 ms).
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait before retrying watchers whose queues were full (etcd's victim retry).
const RETRY_FULL: Duration = Duration::from_millis(10);

/// A watcher's id inside the hub (unique for the member's life; a stream maps it to the
/// client's watch id).
pub type WatcherId = u64;

/// What the hub hands to a watch stream: events of one watcher, a progress notification (no
/// events), or the news that its start revision was compacted (`compact_revision` set).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchUpdate {
    pub watcher: WatcherId,
    /// The revision the response header carries: the events' revision for a synced watcher,
    /// the last revision read for one catching up, the notified revision for progress.
    pub revision: i64,
    pub events: Vec<Event>,
    pub compact_revision: i64,
}

/// What a watcher watches and which events it drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    fn keeps(&self, ev: &Event) -> bool {
        let put = ev.r#type == EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Synced,
    Unsynced,
    /// Taken by the sync thread for the history read in progress.
    Syncing,
}

struct Watcher {
    spec: WatchSpec,
    /// The first revision this watcher has not been given yet.
    min_rev: i64,
    phase: Phase,
    tx: UpdateSender,
}

#[derive(Default)]
struct HubState {
    watchers: HashMap<WatcherId, Watcher>,
    /// The synced watchers, by key.
    synced: WatcherGroup,
    /// Unsynced watchers in the order they are served (may hold ids since cancelled).
    unsynced: VecDeque<WatcherId>,
    /// The newest revision whose events notify has offered to the synced watchers.
    notified_rev: i64,
    next_id: WatcherId,
}

/// Counts of watchers by phase, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubCounts {
    pub synced: usize,
    pub unsynced: usize,
}

/// The member's watchers. Shared by the apply thread (notify), the watch streams (watch,
/// cancel, progress) and the sync thread.
pub struct WatchHub {
    store: Arc<Store>,
    /// Watchers, groups and `notified_rev`. Held briefly: never across a backend read or an
    /// await. Lock order: `state` before `wake`.
    state: Mutex<HubState>,
    /// Set when the sync thread has work; with `wakeup` to wait for it.
    wake: Mutex<bool>,
    wakeup: Condvar,
    stopped: AtomicBool,
}

enum Round {
    /// No unsynced watcher is left.
    Idle,
    /// Work was done; more may be waiting.
    Progress,
    /// Queues were full or the read failed: wait a little before trying again.
    Stuck,
}

impl WatchHub {
    /// A hub for `store`, with nothing notified beyond the store's current revision.
    pub fn new(store: Arc<Store>) -> Arc<WatchHub> {
        let rev = store.current_revision();
        Arc::new(WatchHub {
            store,
            state: Mutex::new(HubState {
                notified_rev: rev,
                ..Default::default()
            }),
            wake: Mutex::new(false),
            wakeup: Condvar::new(),
            stopped: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the thread that brings unsynced watchers up to date; it ends after [`stop`], or
    /// once nothing else holds the hub (it keeps only a weak reference between rounds, so a
    /// member that fails to start does not leave it running with the store open).
    ///
    /// [`stop`]: WatchHub::stop
    pub fn start_sync_thread(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let hub = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("ketch-watch-sync".into())
            .spawn(move || sync_loop(hub))
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake_sync();
    }

    fn wake_sync(&self) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wakeup.notify_one();
    }

    /// The newest revision whose events the synced watchers have been offered.
    pub fn notified_revision(&self) -> i64 {
        self.lock().notified_rev
    }

    pub fn counts(&self) -> HubCounts {
        let st = self.lock();
        HubCounts {
            synced: st.synced.len(),
            unsynced: st.watchers.len() - st.synced.len(),
        }
    }

    /// Adds a watcher whose events go to `tx`. `start_rev` 0 means "from the next revision";
    /// a revision at or below the notified one replays history from there. Returns the
    /// watcher's id and the notified revision (what etcd's created response carries).
    pub fn watch(&self, spec: WatchSpec, start_rev: i64, tx: UpdateSender) -> (WatcherId, i64) {
        let mut st = self.lock();
        let current = st.notified_rev;
        let id = st.next_id;
        st.next_id += 1;
        let synced = start_rev == 0 || start_rev > current;
        let min_rev = if synced {
            start_rev.max(current + 1)
        } else {
            start_rev
        };
        if synced {
            st.synced.add(id, &spec.range);
        } else {
            st.unsynced.push_back(id);
        }
        st.watchers.insert(
            id,
            Watcher {
                spec,
                min_rev,
                phase: if synced {
                    Phase::Synced
                } else {
                    Phase::Unsynced
                },
                tx,
            },
        );
        drop(st);
        if !synced {
            self.wake_sync();
        }
        (id, current)
    }

    /// Removes a watcher; false if it is not there (cancelled, compacted, or its stream gone).
    pub fn cancel(&self, id: WatcherId) -> bool {
        let mut st = self.lock();
        match st.watchers.remove(&id) {
            Some(w) => {
                if w.phase == Phase::Synced {
                    st.synced.remove(id, &w.spec.range);
                }
                true
            }
            None => false,
        }
    }

    /// etcd's progress notification for one watcher: if it is synced, an empty response at the
    /// notified revision (dropped if the queue is full: then events are on their way anyway).
    pub fn progress(&self, id: WatcherId) {
        let st = self.lock();
        if let Some(w) = st.watchers.get(&id) {
            if w.phase == Phase::Synced {
                let _ = w.tx.try_send(WatchUpdate {
                    watcher: id,
                    revision: st.notified_rev,
                    events: Vec::new(),
                    compact_revision: 0,
                });
            }
        }
    }

    /// The store was replaced by a leader's snapshot (now at `revision`): no event stream
    /// led there, so every synced watcher catches up from the restored history instead, from
    /// the revision it needs next (etcd's watchableStore.Restore). One whose revision the
    /// snapshot has compacted away gets the compacted answer, as any late watcher.
    pub fn restored(&self, revision: i64) {
        let mut st = self.lock();
        let HubState {
            watchers,
            synced,
            unsynced,
            notified_rev,
            ..
        } = &mut *st;
        for (id, w) in watchers.iter_mut() {
            if w.phase == Phase::Synced {
                synced.remove(*id, &w.spec.range);
                w.phase = Phase::Unsynced;
                unsynced.push_back(*id);
            }
        }
        *notified_rev = (*notified_rev).max(revision);
        drop(st);
        self.wake_sync();
    }

    /// Hands the events of a committed batch (in revision order, as `WriteBatch::commit`
    /// returns them) to the synced watchers; `revision` is the store's revision after the
    /// batch. Never blocks on a client.
    pub fn notify(&self, events: &[Event], revision: i64) {
        let mut st = self.lock();
        let mut woke = false;
        let mut start = 0;
        while start < events.len() {
            let rev = mod_rev(&events[start]);
            let mut end = start + 1;
            while end < events.len() && mod_rev(&events[end]) == rev {
                end += 1;
            }
            woke |= self.notify_revision(&mut st, rev, &events[start..end]);
            st.notified_rev = st.notified_rev.max(rev);
            start = end;
        }
        st.notified_rev = st.notified_rev.max(revision);
        drop(st);
        if woke {
            self.wake_sync();
        }
    }

    /// Offers the events of one revision; returns whether a watcher fell behind.
    fn notify_revision(&self, st: &mut HubState, rev: i64, events: &[Event]) -> bool {
        if st.synced.is_empty() {
            return false;
        }
        let mut batches: Vec<(WatcherId, Vec<Event>)> = Vec::new();
        if let [ev] = events {
            let key = &ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
            st.synced
                .for_key(key, |id| batches.push((id, vec![ev.clone()])));
        } else {
            let mut at: HashMap<WatcherId, usize> = HashMap::new();
            for ev in events {
                let key = ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
                st.synced.for_key(&key, |id| {
                    let i = *at.entry(id).or_insert_with(|| {
                        batches.push((id, Vec::new()));
                        batches.len() - 1
                    });
                    batches[i].1.push(ev.clone());
                });
            }
        }
        let mut fell_behind = false;
        for (id, mut evs) in batches {
            let HubState {
                watchers,
                synced,
                unsynced,
                ..
            } = st;
            let Some(w) = watchers.get_mut(&id) else {
                continue;
            };
            if w.min_rev > rev {
                continue; // a history read already gave it this revision
            }
            evs.retain(|e| w.spec.keeps(e));
            w.min_rev = rev + 1;
            if evs.is_empty() {
                continue;
            }
            let update = WatchUpdate {
                watcher: id,
                revision: rev,
                events: evs,
                compact_revision: 0,
            };
            match w.tx.try_send(update) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    // too slow: catch up from the history, starting with this revision
                    w.min_rev = rev;
                    w.phase = Phase::Unsynced;
                    synced.remove(id, &w.spec.range);
                    unsynced.push_back(id);
                    fell_behind = true;
                }
                Err(TrySendError::Closed(_)) => {
                    synced.remove(id, &w.spec.range);
                    watchers.remove(&id);
                }
            }
        }
        fell_behind
    }

    /// Waits up to `wait` for work; false once the hub is stopped.
    fn wait_for_work(&self, wait: Duration) -> bool {
        let mut pending = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if !*pending {
            pending = self
                .wakeup
                .wait_timeout(pending, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *pending = false;
        !self.stopped.load(Ordering::Acquire)
    }

    /// Sync rounds until there is nothing left to do now; returns how long to wait next.
    fn sync_rounds(&self) -> Duration {
        loop {
            match self.sync_round() {
                Round::Idle => return SYNC_INTERVAL,
                Round::Stuck => return RETRY_FULL,
                Round::Progress if self.stopped.load(Ordering::Acquire) => return SYNC_INTERVAL,
                Round::Progress => {}
            }
        }
    }

    /// One history read for a batch of unsynced watchers.
    fn sync_round(&self) -> Round {
        let compact = self.store.compact_revision();
        let mut batch: Vec<(WatcherId, WatchSpec, i64)> = Vec::new();
        let mut stuck = false;
        {
            let mut st = self.lock();
            if st.unsynced.is_empty() {
                return Round::Idle;
            }
            let HubState {
                watchers, unsynced, ..
            } = &mut *st;
            let n = unsynced.len();
            for _ in 0..n {
                if batch.len() >= MAX_WATCHERS_PER_SYNC {
                    break;
                }
                let Some(id) = unsynced.pop_front() else {
                    break;
                };
                let Some(w) = watchers.get_mut(&id) else {
                    continue;
                };
                if w.phase != Phase::Unsynced {
                    continue;
                }
                if !w.tx.has_room() {
                    // its stream is not reading: no point reading history for it yet
                    unsynced.push_back(id);
                    stuck = true;
                    continue;
                }
                if w.min_rev < compact {
                    let update = WatchUpdate {
                        watcher: id,
                        revision: 0,
                        events: Vec::new(),
                        compact_revision: compact,
                    };
                    match w.tx.try_send(update) {
                        Ok(()) | Err(TrySendError::Closed(_)) => {
                            watchers.remove(&id);
                        }
                        Err(TrySendError::Full(_)) => {
                            unsynced.push_back(id);
                            stuck = true;
                        }
                    }
                    continue;
                }
                w.phase = Phase::Syncing;
                batch.push((id, w.spec.clone(), w.min_rev));
            }
        }
        if batch.is_empty() {
            return if stuck { Round::Stuck } else { Round::Progress };
        }

        let mut matcher = WatcherGroup::default();
        for (i, (_, spec, _)) in batch.iter().enumerate() {
            matcher.add(i as u64, &spec.range);
        }
        let from = batch.iter().map(|b| b.2).min().unwrap_or(1);
        let page = match self
            .store
            .events(from, MAX_ROWS_PER_SYNC, MAX_BYTES_PER_SYNC, &|k| {
                matcher.wants(k)
            }) {
            Ok(p) => Some(p),
            Err(EtcdError::Compacted) => None, // compacted meanwhile: the next round answers
            Err(e) => {
                error!(target: "mvcc", "watch history read failed: {e}");
                stuck = true;
                None
            }
        };
        let mut per: Vec<Vec<Event>> = vec![Vec::new(); batch.len()];
        if let Some(p) = &page {
            for ev in &p.events {
                let Some(kv) = &ev.kv else { continue };
                matcher.for_key(&kv.key, |i| {
                    let (_, spec, min_rev) = &batch[i as usize];
                    if kv.mod_revision >= *min_rev && spec.keeps(ev) {
                        per[i as usize].push(ev.clone());
                    }
                });
            }
        }

        let mut st = self.lock();
        let notified = st.notified_rev;
        let HubState {
            watchers,
            synced,
            unsynced,
            ..
        } = &mut *st;
        for ((id, _, _), evs) in batch.into_iter().zip(per) {
            let Some(w) = watchers.get_mut(&id) else {
                continue; // cancelled while we read
            };
            w.phase = Phase::Unsynced;
            let Some(p) = &page else {
                unsynced.push_back(id);
                continue;
            };
            if !evs.is_empty() {
                let update = WatchUpdate {
                    watcher: id,
                    revision: p.upto(),
                    events: evs,
                    compact_revision: 0,
                };
                match w.tx.try_send(update) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        unsynced.push_back(id);
                        stuck = true;
                        continue;
                    }
                    Err(TrySendError::Closed(_)) => {
                        watchers.remove(&id);
                        continue;
                    }
                }
            }
            w.min_rev = p.upto() + 1;
            if p.complete() && notified <= p.upto() {
                w.phase = Phase::Synced;
                synced.add(id, &w.spec.range);
            } else {
                unsynced.push_back(id);
            }
        }
        if stuck && page.is_none() {
            warn!(target: "mvcc", "watchers wait for the history read to succeed");
        }
        if stuck {
            Round::Stuck
        } else {
            Round::Progress
        }
    }
}

/// The sync thread: holds the hub only while it waits or works, so dropping every other
/// handle ends it within one wait.
fn sync_loop(hub: Weak<WatchHub>) {
    let mut wait = SYNC_INTERVAL;
    while let Some(hub) = hub.upgrade() {
        if hub.stopped.load(Ordering::Acquire) || !hub.wait_for_work(wait) {
            return;
        }
        wait = hub.sync_rounds();
    }
}

fn mod_rev(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
