//! Reading the history back as events: what a watcher that starts in the past, or fell behind,
//! needs. The `key` table is ordered by revision, so the events of a revision range are one
//! ordered scan of it; a put row becomes a PUT event with the row's `KeyValue`, a tombstone row a
//! DELETE event with only the key and `mod_revision` (etcd's `kvsToEvents`).
//!
//! A read works on one published snapshot (see the crate docs), never blocks the writer, and is
//! bounded: it stops after about `max_rows` rows, always at a revision boundary, and says where
//! to go on from.

use bytes::Bytes;
use ketch_api::etcdserverpb::RangeRequest;
use ketch_api::mvccpb::{event::EventType, Event, KeyValue};
use ketch_api::status::EtcdError;

use crate::codec::decode_row;
use crate::error::StoreError;
use crate::revision::Revision;
use crate::store::Store;

/// One bounded piece of history: the events of revisions `[from, next_rev)`, in revision order
/// (sub-revision order within a revision).
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next page starts: `revision + 1` once the page reached the end.
    pub next_rev: i64,
    /// The revision of the snapshot the page was read from.
    pub revision: i64,
    /// The compact revision of that snapshot.
    pub compact_revision: i64,
}

impl EventPage {
    /// Whether the page reached the snapshot's revision.
    pub fn complete(&self) -> bool {
        self.next_rev > self.revision
    }

    /// The last revision the page covers.
    pub fn upto(&self) -> i64 {
        self.next_rev - 1
    }
}

/// Whether `key` is in etcd's key range `[key, range_end)`: an empty `range_end` is the single
/// key, `"\0"` means every key from `key` on.
pub fn in_range(start: &[u8], range_end: &[u8], key: &[u8]) -> bool {
    if range_end.is_empty() {
        key == start
    } else if range_end == b"\0" {
        key >= start
    } else {
        key >= start && key < range_end
    }
}

impl Store {
    /// The events of revisions from `from_rev` (at least 1) up to the current one, of the keys
    /// for which `wanted` is true. A page ends at the first revision boundary after `max_rows`
    /// rows read or `max_bytes` bytes of keys and values taken (a revision is never split, so
    /// a page may go beyond either to finish its last revision).
    ///
    /// Fails with `Compacted` if `from_rev` is below the compact revision (etcd's rule for
    /// watchers: revision `compact` itself still reads, what it kept of it). The events carry
    /// no `prev_kv`; see [`Store::fill_prev_kv`].
    pub fn events(
        &self,
        from_rev: i64,
        max_rows: usize,
        max_bytes: usize,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<EventPage, EtcdError> {
        let snap = self.snapshot();
        let from = from_rev.max(1);
        if from < snap.compact_rev {
            return Err(EtcdError::Compacted);
        }
        let mut page = EventPage {
            events: Vec::new(),
            next_rev: snap.rev + 1,
            revision: snap.rev,
            compact_revision: snap.compact_rev,
        };
        if from > snap.rev {
            return Ok(page);
        }
        let scan = (|| -> Result<(), StoreError> {
            let lower = Revision::new(from, 0).key(false);
            let upper = Revision::new(snap.rev + 1, 0).key(false);
            let mut bytes = 0usize;
            let mut last_main = 0i64;
            let rows = snap.kv.range::<&[u8]>(lower.as_slice()..upper.as_slice())?;
            for (read, row) in rows.enumerate() {
                let (k, v) = row?;
                let (rev, tombstone) = Revision::from_key(k.value())
                    .ok_or_else(|| StoreError::Corrupt("malformed revision key".into()))?;
                if (read >= max_rows || bytes >= max_bytes) && rev.main != last_main {
                    page.next_rev = rev.main;
                    break;
                }
                last_main = rev.main;
                let r = decode_row(v.value()).ok_or_else(|| {
                    StoreError::Corrupt(format!("row at {rev:?} is not a KeyValue"))
                })?;
                if !wanted(r.key) {
                    continue;
                }
                bytes += r.key.len() + r.value.len();
                let key = Bytes::copy_from_slice(r.key);
                page.events.push(if tombstone {
                    Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key,
                            mod_revision: rev.main,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    }
                } else {
                    Event {
                        r#type: EventType::Put as i32,
                        kv: Some(KeyValue {
                            key,
                            create_revision: r.create_revision,
                            mod_revision: r.mod_revision,
                            version: r.version,
                            value: Bytes::copy_from_slice(r.value),
                            lease: r.lease,
                        }),
                        prev_kv: None,
                    }
                });
            }
            Ok(())
        })();
        match scan {
            Ok(()) => Ok(page),
            Err(e) => {
                tracing::error!(error = %e, "mvcc history read failed");
                Err(EtcdError::Corrupt)
            }
        }
    }

    /// The events of revisions `[from_rev, to_rev]` on etcd's key range `[key, range_end)`,
    /// with `prev_kv` filled in when asked: the whole piece of history at once (tests, tools).
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_rev: i64,
        to_rev: i64,
        prev_kv: bool,
    ) -> Result<Vec<Event>, EtcdError> {
        let mut out = Vec::new();
        let mut from = from_rev;
        loop {
            let page = self.events(from, 10_000, usize::MAX, &|k| in_range(key, range_end, k))?;
            let done = page.complete() || page.upto() >= to_rev;
            out.extend(
                page.events
                    .into_iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= to_rev)),
            );
            if done {
                break;
            }
            from = page.next_rev;
        }
        if prev_kv {
            for e in &mut out {
                self.fill_prev_kv(e);
            }
        }
        Ok(out)
    }

    /// Sets `prev_kv` of an event to the key as it was just before the event's revision, as
    /// etcd's watch server does: not for a key's creation, and left empty when that revision is
    /// compacted away or the key did not exist.
    pub fn fill_prev_kv(&self, event: &mut Event) {
        let Some(kv) = &event.kv else { return };
        let is_create =
            event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if is_create || kv.mod_revision <= 1 {
            return;
        }
        let req = RangeRequest {
            key: kv.key.clone(),
            revision: kv.mod_revision - 1,
            ..Default::default()
        };
        if let Ok(mut resp) = self.range(&req) {
            if !resp.kvs.is_empty() {
                event.prev_kv = Some(resp.kvs.swap_remove(0));
            }
        }
    }
}
