//! Leases: etcd's lessor. A lease is granted, revoked and checkpointed through the Raft log,
//! so every member holds the same leases and the same keys attached to them; only the leader
//! (the *primary* lessor) keeps expiry times, answers keep-alives and decides that a lease has
//! expired — it then proposes its revocation, and every member deletes the lease's keys when
//! that entry applies, in one revision.
//!
//! Followers hold their leases "forever". A member that becomes leader gives every lease its
//! remaining TTL (the granted TTL, or the last checkpointed one) plus an election timeout, as
//! etcd's `Promote` does, so a leader change never expires a lease its client kept alive.
//!
//! Who calls what:
//! - the apply thread: [`Lessor::grant`], [`Lessor::revoke`], [`Lessor::checkpoint`],
//!   [`Lessor::exists`] and [`Lessor::apply_key_changes`], inside its backend batch; and
//!   [`Lessor::recover`] after the store was replaced by a snapshot;
//! - the leader's lease task ([`primary::run`]): promotion, demotion, expiry and checkpoints;
//! - the Lease service and forwarded peer calls: [`primary::PrimaryLeases`].

pub mod primary;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ketch_api::etcdserverpb::LeaseCheckpoint;
use ketch_api::ketchpb::LeaseRecord;
use ketch_api::status::EtcdError;
use ketch_mvcc::{LeaseChange, Store, WriteBatch};
use prost::Message as _;
use tracing::warn;

/// etcd's `MaxLeaseTTL`: larger TTLs are refused.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// An expired lease whose revocation has not applied yet is offered again after this long
/// (etcd's expiredLeaseRetryInterval).
const EXPIRED_RETRY: Duration = Duration::from_secs(3);

/// What the lessor keeps of one lease.
#[derive(Debug)]
struct Lease {
    /// granted TTL in seconds (at least the minimum TTL)
    ttl: i64,
    /// TTL left at the last checkpoint, 0 for none
    remaining_ttl: i64,
    /// When it expires; `None` ("forever") on a member that is not the primary.
    expiry: Option<Instant>,
    /// Its key in `LeaseState::expiries`, if queued there.
    queued: Option<Instant>,
    /// Keys attached to it (alive keys whose last put named it).
    keys: BTreeSet<Bytes>,
}

impl Lease {
    /// The TTL a refresh starts from: the checkpointed remainder if there is one.
    fn refresh_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }

    fn record(&self, id: i64) -> Vec<u8> {
        LeaseRecord {
            id,
            ttl: self.ttl,
            remaining_ttl: self.remaining_ttl,
        }
        .encode_to_vec()
    }
}

/// The lessor's state. One mutex: every operation is a few map and set updates.
#[derive(Default)]
struct LeaseState {
    leases: HashMap<i64, Lease>,
    /// Whether this member is the leader's lessor (keeps expiries, answers renewals).
    primary: bool,
    /// `(expiry, id)` of every lease on the primary; empty elsewhere.
    expiries: BTreeSet<(Instant, i64)>,
    /// `(when, id)` of the next checkpoint of each lease that needs one (primary only).
    checkpoints: BTreeSet<(Instant, i64)>,
    /// Leases whose checkpointed remainder a renewal cleared; the lease task proposes the
    /// checkpoints that clear it on every member.
    cleared: Vec<i64>,
}

impl LeaseState {
    fn set_expiry(&mut self, id: i64, expiry: Option<Instant>) {
        let Some(lease) = self.leases.get_mut(&id) else {
            return;
        };
        if let Some(old) = lease.queued.take() {
            self.expiries.remove(&(old, id));
        }
        lease.expiry = expiry;
        if let Some(at) = expiry {
            lease.queued = Some(at);
            self.expiries.insert((at, id));
        }
    }
}

/// Why the primary could not renew a lease or say its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryError {
    /// This member is not the leader's lessor: ask the leader.
    NotPrimary,
    /// No such lease (or it expired).
    NotFound,
}

/// A lease's time to live as the primary reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// whole seconds left (truncated, as etcd)
    pub remaining: i64,
    pub granted: i64,
    /// attached keys, in key order; empty unless asked for
    pub keys: Vec<Bytes>,
}

/// etcd's lessor; see the module docs.
pub struct Lessor {
    state: Mutex<LeaseState>,
    /// smallest TTL granted: 1.5 election timeouts, rounded up to whole seconds
    min_ttl: i64,
    /// how often the primary checkpoints remaining TTLs; `None` when checkpoints are off
    checkpoint_interval: Option<Duration>,
    /// whether checkpointed remainders are kept in the backend (survive a full restart)
    persist_checkpoints: bool,
    /// Tells the lease task that its next deadline may be earlier than it thought.
    wake: tokio::sync::Notify,
}

impl Lessor {
    pub fn new(
        min_ttl: i64,
        checkpoint_interval: Option<Duration>,
        persist_checkpoints: bool,
    ) -> Self {
        Lessor {
            state: Mutex::new(LeaseState::default()),
            min_ttl: min_ttl.max(1),
            checkpoint_interval,
            persist_checkpoints,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// etcd's minimum lease TTL for a heartbeat and election timeout: `(3 * election ticks / 2)`
    /// heartbeats, in whole seconds rounded up.
    pub fn min_ttl_for(heartbeat: Duration, election_timeout: Duration) -> i64 {
        let heartbeat_ms = heartbeat.as_millis().max(1);
        let ticks = election_timeout.as_millis() / heartbeat_ms;
        let min_ms = (3 * ticks / 2) * heartbeat_ms;
        min_ms.div_ceil(1000) as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds the leases from the store: its lease table and the keys attached to them.
    /// Expiries are not kept across this (a primary's leases get their full TTL again).
    pub fn recover(&self, store: &Store) -> Result<(), ketch_mvcc::StoreError> {
        let records = store.leases()?;
        let leased_keys = store.leased_keys();
        let mut st = self.lock();
        st.leases.clear();
        st.expiries.clear();
        st.checkpoints.clear();
        st.cleared.clear();
        for (id, raw) in records {
            let record = match LeaseRecord::decode(raw.as_slice()) {
                Ok(r) => r,
                Err(e) => {
                    warn!(target: "lease", "skipping unreadable lease record {id:x}: {e}");
                    continue;
                }
            };
            st.leases.insert(
                id,
                Lease {
                    ttl: record.ttl.max(self.min_ttl),
                    remaining_ttl: record.remaining_ttl,
                    expiry: None,
                    queued: None,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (id, key) in leased_keys {
            match st.leases.get_mut(&id) {
                Some(l) => {
                    l.keys.insert(key);
                }
                None => {
                    warn!(target: "lease", "key {:?} names lease {id:x}, which does not exist", String::from_utf8_lossy(&key))
                }
            }
        }
        if st.primary {
            let now = Instant::now();
            let ids: Vec<i64> = st.leases.keys().copied().collect();
            for id in ids {
                let ttl = st.leases[&id].refresh_ttl();
                st.set_expiry(id, Some(now + secs(ttl)));
            }
            drop(st);
            self.wake.notify_one();
        }
        Ok(())
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// The keys attached to a lease (none when it does not exist), for auth's write checks.
    pub fn keys_of(&self, id: i64) -> Vec<Bytes> {
        self.lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies a committed LeaseGrant: returns the TTL granted.
    pub fn grant(&self, wb: &mut WriteBatch<'_>, id: i64, ttl: i64) -> Result<i64, EtcdError> {
        if id == 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let mut st = self.lock();
        if st.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExist);
        }
        let lease = Lease {
            ttl: ttl.max(self.min_ttl),
            remaining_ttl: 0,
            expiry: None,
            queued: None,
            keys: BTreeSet::new(),
        };
        let granted = lease.ttl;
        wb.lease_put(id, &lease.record(id));
        st.leases.insert(id, lease);
        if st.primary {
            st.set_expiry(id, Some(Instant::now() + secs(granted)));
            self.schedule_checkpoint(&mut st, id);
            drop(st);
            self.wake.notify_one();
        }
        Ok(granted)
    }

    /// Applies a committed LeaseRevoke: deletes the attached keys (one revision, in key order)
    /// and the lease.
    pub fn revoke(&self, wb: &mut WriteBatch<'_>, id: i64) -> Result<(), EtcdError> {
        let keys: Vec<Bytes> = {
            let st = self.lock();
            let Some(lease) = st.leases.get(&id) else {
                return Err(EtcdError::LeaseNotFound);
            };
            lease.keys.iter().cloned().collect()
        };
        if !keys.is_empty() {
            wb.delete_keys(&keys)?;
        }
        wb.lease_delete(id);
        let mut st = self.lock();
        st.set_expiry(id, None);
        st.leases.remove(&id);
        Ok(())
    }

    /// Applies a committed LeaseCheckpoint: the leases' remaining TTLs as the leader saw them.
    pub fn checkpoint(&self, wb: &mut WriteBatch<'_>, checkpoints: &[LeaseCheckpoint]) {
        let mut st = self.lock();
        for cp in checkpoints {
            let Some(lease) = st.leases.get_mut(&cp.id) else {
                continue;
            };
            lease.remaining_ttl = cp.remaining_ttl;
            if self.persist_checkpoints {
                wb.lease_put(cp.id, &lease.record(cp.id));
            }
            if st.primary {
                self.schedule_checkpoint(&mut st, cp.id);
            }
        }
    }

    /// Follows the keys that a request attached to or detached from leases.
    pub fn apply_key_changes(&self, changes: &[LeaseChange]) {
        if changes.is_empty() {
            return;
        }
        let mut st = self.lock();
        for c in changes {
            if c.old_lease != 0 {
                if let Some(l) = st.leases.get_mut(&c.old_lease) {
                    l.keys.remove(&c.key);
                }
            }
            if c.new_lease != 0 {
                if let Some(l) = st.leases.get_mut(&c.new_lease) {
                    l.keys.insert(c.key.clone());
                }
            }
        }
    }

    /// This member became the leader: every lease expires its remaining TTL plus `extend`
    /// from now, spread out so that no more than 3/4 of etcd's revoke rate expire in any one
    /// second (etcd's Promote).
    pub fn promote(&self, extend: Duration) {
        let mut st = self.lock();
        st.primary = true;
        st.checkpoints.clear();
        let now = Instant::now();
        let mut by_expiry: Vec<(Instant, i64)> = st
            .leases
            .iter()
            .map(|(id, l)| (now + extend + secs(l.refresh_ttl()), *id))
            .collect();
        by_expiry.sort_unstable();
        let per_second = (3 * primary::REVOKE_PER_SECOND / 4).max(1);
        let mut window_start = by_expiry.first().map(|(t, _)| *t).unwrap_or(now);
        let mut window_end = window_start + Duration::from_secs(1);
        let mut in_window = 0usize;
        for (expiry, id) in by_expiry {
            let mut at = expiry;
            if expiry > window_end {
                window_start = expiry;
                window_end = expiry + Duration::from_secs(1);
                in_window = 1;
            } else {
                in_window += 1;
                if in_window > per_second {
                    // Push it out so that the window holds `per_second` expiries per second.
                    let delay = Duration::from_secs_f64(in_window as f64 / per_second as f64);
                    at = (window_start + delay).max(expiry);
                    window_end = at;
                }
            }
            st.set_expiry(id, Some(at));
            self.schedule_checkpoint(&mut st, id);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// This member is no longer the leader: leases live forever here until it is again.
    pub fn demote(&self) {
        let mut st = self.lock();
        st.primary = false;
        let ids: Vec<i64> = st.leases.keys().copied().collect();
        for id in ids {
            st.set_expiry(id, None);
        }
        st.checkpoints.clear();
        st.cleared.clear();
    }

    /// A keep-alive: the lease expires its full TTL from now. Returns the TTL.
    pub fn renew(&self, id: i64) -> Result<i64, PrimaryError> {
        let mut st = self.lock();
        if !st.primary {
            return Err(PrimaryError::NotPrimary);
        }
        let now = Instant::now();
        let Some(lease) = st.leases.get_mut(&id) else {
            return Err(PrimaryError::NotFound);
        };
        if lease.expiry.is_some_and(|e| e <= now) {
            // Expired: its revocation is on the way.
            return Err(PrimaryError::NotFound);
        }
        let ttl = lease.ttl;
        let clear = self.checkpoint_interval.is_some() && lease.remaining_ttl > 0;
        if clear {
            // Locally at once, so that the TTL below is the full one; everywhere through the log.
            lease.remaining_ttl = 0;
            st.cleared.push(id);
        }
        st.set_expiry(id, Some(now + secs(ttl)));
        drop(st);
        if clear {
            self.wake.notify_one();
        }
        Ok(ttl)
    }

    /// A lease's remaining and granted TTL (and keys), as only the primary knows them.
    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Result<TimeToLive, PrimaryError> {
        let st = self.lock();
        if !st.primary {
            return Err(PrimaryError::NotPrimary);
        }
        let lease = st.leases.get(&id).ok_or(PrimaryError::NotFound)?;
        let remaining = match lease.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => lease.refresh_ttl(),
        };
        Ok(TimeToLive {
            remaining,
            granted: lease.ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, soonest expiry first (ties and followers: by id).
    pub fn leases(&self) -> Vec<i64> {
        let st = self.lock();
        let mut all: Vec<(Option<Instant>, i64)> =
            st.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        // `None` (forever) after every expiry time
        all.sort_unstable_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// Up to `limit` leases that have expired by `now`. Each is offered again after
    /// [`EXPIRED_RETRY`] should its revocation not apply.
    pub fn take_expired(&self, now: Instant, limit: usize) -> Vec<i64> {
        let mut st = self.lock();
        if !st.primary {
            return Vec::new();
        }
        let due: Vec<(Instant, i64)> = st
            .expiries
            .range(..=(now, i64::MAX))
            .take(limit)
            .copied()
            .collect();
        for (at, id) in &due {
            st.expiries.remove(&(*at, *id));
            let retry = now + EXPIRED_RETRY;
            if let Some(l) = st.leases.get_mut(id) {
                l.queued = Some(retry);
            }
            st.expiries.insert((retry, *id));
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Checkpoints due by `now` (and those a renewal cleared), at most `limit`.
    pub fn take_checkpoints(&self, now: Instant, limit: usize) -> Vec<LeaseCheckpoint> {
        let mut st = self.lock();
        if !st.primary {
            return Vec::new();
        }
        let mut out: Vec<LeaseCheckpoint> = std::mem::take(&mut st.cleared)
            .into_iter()
            .map(|id| LeaseCheckpoint {
                id,
                remaining_ttl: 0,
            })
            .collect();
        while out.len() < limit {
            let Some(&(at, id)) = st.checkpoints.first() else {
                break;
            };
            if at > now {
                break;
            }
            st.checkpoints.remove(&(at, id));
            let Some(lease) = st.leases.get(&id) else {
                continue;
            };
            let Some(expiry) = lease.expiry.filter(|e| *e > now) else {
                continue;
            };
            let remaining = (expiry - now).as_secs_f64().ceil() as i64;
            if remaining >= lease.ttl {
                continue;
            }
            out.push(LeaseCheckpoint {
                id,
                remaining_ttl: remaining,
            });
        }
        out
    }

    /// When the lease task should look again: the earliest expiry or checkpoint, `None` when
    /// there is neither.
    pub fn next_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        if !st.cleared.is_empty() {
            return Some(Instant::now());
        }
        let expiry = st.expiries.first().map(|(t, _)| *t);
        let checkpoint = st.checkpoints.first().map(|(t, _)| *t);
        match (expiry, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Resolves when [`Lessor::next_deadline`] may have moved earlier.
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    fn schedule_checkpoint(&self, st: &mut LeaseState, id: i64) {
        let Some(interval) = self.checkpoint_interval else {
            return;
        };
        let Some(lease) = st.leases.get(&id) else {
            return;
        };
        if lease.refresh_ttl() as u64 > interval.as_secs() {
            st.checkpoints.insert((Instant::now() + interval, id));
        }
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

#[cfg(test)]
mod tests;
