//! The writer: one backend write transaction carrying many requests (one per raft entry).
//!
//! Each request gets the next main revision if, and only if, it writes something; the writes of
//! one request are its sub-revisions. The key index is updated in place as requests run (readers
//! cannot see revisions above the committed one, see [`crate::index`]); everything else a batch
//! changes — events, lease changes, revision counters, the compaction of the index — stays in
//! the batch until [`WriteBatch::commit`].
//!
//! A request that fails leaves nothing behind. Requests are checked before they write (as etcd's
//! apply does); should a txn still fail half-way (only possible for a txn that skipped
//! `ketch_api::validate`), its rows, index entries, events and lease changes are taken out
//! again. A backend failure instead poisons the batch: the request reports
//! `EtcdError::Corrupt`, later requests do too, and `commit` fails, leaving the store as it was
//! before the batch.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    request_op::Request, response_op::Response, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
};
use ketch_api::mvccpb::{event::EventType, Event, KeyValue};
use ketch_api::status::EtcdError;
use redb::{Durability, ReadableTable, Table, WriteTransaction};

use crate::codec::encode_row;
use crate::error::{Failure, StoreError};
use crate::index::{compact_shared, Span};
use crate::key_index::KeyMeta;
use crate::range::{self, compare_holds, key_value};
use crate::revision::Revision;
use crate::store::{
    Store, WriterState, APP_META, CONSISTENT_INDEX, FINISHED_COMPACT_REV, KV, LEASE, META,
};

/// A key that a write attached to or detached from a lease. `old_lease`/`new_lease` are 0 for
/// none; a delete has `new_lease` 0. Only changes are reported (a put keeping the key's lease is
/// not). The lessor applies these after the batch commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseChange {
    pub key: Bytes,
    pub revision: i64,
    pub old_lease: i64,
    pub new_lease: i64,
}

struct BatchState {
    /// The committed state the batch started from.
    base: WriterState,
    /// The revision after the last successful request of the batch.
    rev: i64,
    compact_rev: i64,
    /// A compaction to apply to the shared index once the batch has committed.
    compacted: Option<i64>,
    applied_index: u64,
    applied_dirty: bool,
    meta_dirty: bool,
    events: Vec<Event>,
    lease_changes: Vec<LeaseChange>,
    live_bytes_delta: i64,
    /// Whether the shared index holds revisions of this batch (to take out if it is dropped).
    index_dirty: bool,
    poisoned: Option<String>,
    finished: bool,
    row_buf: Vec<u8>,
}

impl BatchState {
    fn poison(&mut self, e: StoreError) -> EtcdError {
        tracing::error!(error = %e, "mvcc write batch failed; it can no longer commit");
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        EtcdError::Corrupt
    }
}

/// One backend write transaction holding many requests. Nothing of it is visible to readers
/// before [`WriteBatch::commit`]; dropping it without committing undoes all of it.
pub struct WriteBatch<'a> {
    store: &'a Store,
    txn: Option<WriteTransaction>,
    st: BatchState,
}

/// Where the writes of the current request go: `main` is its revision, `sub` counts its writes.
struct Op {
    main: i64,
    sub: i64,
}

impl Op {
    /// The revision a read inside the request sees: its own writes once it has made any.
    fn view(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl<'a> WriteBatch<'a> {
    /// Called by `Store::write` with the writer flag already taken; gives it back on failure.
    pub(crate) fn begin(store: &'a Store) -> Result<WriteBatch<'a>, StoreError> {
        let base = *store.writer_state.lock().unwrap_or_else(|e| e.into_inner());
        let txn = match store.db().begin_write() {
            Ok(t) => t,
            Err(e) => {
                store
                    .writer_busy
                    .store(crate::store::FREE, Ordering::Release);
                return Err(e.into());
            }
        };
        Ok(WriteBatch {
            store,
            txn: Some(txn),
            st: BatchState {
                base,
                rev: base.rev,
                compact_rev: base.compact_rev,
                compacted: None,
                applied_index: base.applied_index,
                applied_dirty: false,
                meta_dirty: false,
                events: Vec::new(),
                lease_changes: Vec::new(),
                live_bytes_delta: 0,
                index_dirty: false,
                poisoned: None,
                finished: false,
                row_buf: Vec::new(),
            },
        })
    }

    /// The revision as of the last request in this batch.
    pub fn revision(&self) -> i64 {
        self.st.rev
    }

    /// The compact revision as of the last request in this batch.
    pub fn compact_revision(&self) -> i64 {
        self.st.compact_rev
    }

    /// etcd's Put. The caller checks beforehand that `req.lease`, if not 0, exists.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.run(|w, op| w.put(op, req))
    }

    /// etcd's DeleteRange. Deleting nothing makes no revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.run(|w, op| w.delete(op, &[Span::new(&req.key, &req.range_end)], req.prev_kv))
    }

    /// Deletes the given keys (those that exist) in one revision, in key order: what revoking a
    /// lease does with the keys attached to it.
    pub fn delete_keys<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<DeleteRangeResponse, EtcdError> {
        let mut sorted: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let spans: Vec<Span<'_>> = sorted.into_iter().map(Span::Single).collect();
        self.run(|w, op| w.delete(op, &spans, false))
    }

    /// etcd's Txn: compares (nested ones too) see the state before the txn; reads inside it see
    /// its earlier writes. Any lease a put on the taken branch names is taken to exist; see
    /// [`WriteBatch::txn_checked`].
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.txn_checked(req, &|_| true)
    }

    /// [`WriteBatch::txn`] that fails with `LeaseNotFound`, as etcd does, when a put on the
    /// branch the compares choose names a lease for which `lease_exists` is false.
    pub fn txn_checked(
        &mut self,
        req: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<TxnResponse, EtcdError> {
        self.run(|w, op| {
            let before = op.view();
            let path = w.eval_path(req, before)?;
            w.check_puts(req, &path, before, lease_exists)?;
            w.check_ranges(req, &path, before)?;
            let mut resp = w.apply_txn(op, req, &path)?;
            resp.header = header(op.view());
            Ok(resp)
        })
    }

    /// A Range over the batch's state (its own uncommitted writes included).
    pub fn range(&mut self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.run(|w, op| w.range(op, req))
    }

    /// etcd's Compact: logical and physical at once. Every revision at or below `rev` is
    /// removed from the backend except, for each key, the newest one at or below `rev` unless
    /// that is a delete. The index follows when the batch commits.
    pub fn compact(&mut self, rev: i64) -> Result<CompactionResponse, EtcdError> {
        if self.st.poisoned.is_some() {
            return Err(EtcdError::Corrupt);
        }
        if rev <= self.st.compact_rev {
            return Err(EtcdError::Compacted);
        }
        if rev > self.st.rev {
            return Err(EtcdError::FutureRev);
        }
        let started = std::time::Instant::now();
        let keep = self
            .store
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keep(rev);
        let txn = self.txn.as_ref().expect("a live batch has its transaction");
        let mut removed = 0i64;
        let mut removed_bytes = 0i64;
        let result = (|| -> Result<(), StoreError> {
            let mut table = txn.open_table(KV)?;
            let upper = Revision::new(rev.saturating_add(1), 0).key(false);
            table.retain_in::<&[u8], _>(..upper.as_slice(), |k, v| {
                let kept = match Revision::from_key(k) {
                    Some((r, false)) => keep.binary_search(&r).is_ok(),
                    Some((_, true)) => false,
                    None => true,
                };
                if !kept {
                    removed += 1;
                    removed_bytes += (k.len() + v.len()) as i64;
                }
                kept
            })?;
            Ok(())
        })();
        if let Err(e) = result {
            return Err(self.st.poison(e));
        }
        self.st.live_bytes_delta -= removed_bytes;
        self.st.compact_rev = rev;
        self.st.compacted = Some(rev);
        tracing::info!(
            revision = rev,
            removed_rows = removed,
            kept_rows = keep.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "mvcc compaction"
        );
        Ok(CompactionResponse {
            header: header(self.st.rev),
        })
    }

    /// Records the raft index of the last entry applied; stored with the batch.
    pub fn set_applied_index(&mut self, index: u64) {
        self.st.applied_index = index;
        self.st.applied_dirty = true;
    }

    /// Stores a record of the layers above; readable with `Store::meta_get` after commit.
    pub fn meta_put(&mut self, key: &str, value: &[u8]) {
        self.meta_write(key, Some(value));
    }

    /// Removes a record of the layers above.
    pub fn meta_delete(&mut self, key: &str) {
        self.meta_write(key, None);
    }

    /// A record of the layers above as this batch has it.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.txn.as_ref().expect("a live batch has its transaction");
        let table = txn.open_table(APP_META)?;
        let value = table.get(key)?.map(|g| g.value().to_vec());
        Ok(value)
    }

    fn meta_write(&mut self, key: &str, value: Option<&[u8]>) {
        if self.st.poisoned.is_some() {
            return;
        }
        let txn = self.txn.as_ref().expect("a live batch has its transaction");
        let result = (|| -> Result<(), StoreError> {
            let mut table = txn.open_table(APP_META)?;
            match value {
                Some(v) => drop(table.insert(key, v)?),
                None => drop(table.remove(key)?),
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.st.meta_dirty = true,
            Err(e) => {
                self.st.poison(e);
            }
        }
    }

    /// Stores lease `id`'s record (see [`Store::leases`]).
    pub fn lease_put(&mut self, id: i64, record: &[u8]) {
        self.lease_write(id, Some(record));
    }

    /// Removes lease `id`'s record.
    pub fn lease_delete(&mut self, id: i64) {
        self.lease_write(id, None);
    }

    fn lease_write(&mut self, id: i64, record: Option<&[u8]>) {
        if self.st.poisoned.is_some() {
            return;
        }
        let txn = self.txn.as_ref().expect("a live batch has its transaction");
        let key = id.to_be_bytes();
        let result = (|| -> Result<(), StoreError> {
            let mut table = txn.open_table(LEASE)?;
            match record {
                Some(v) => drop(table.insert(key.as_slice(), v)?),
                None => drop(table.remove(key.as_slice())?),
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.st.meta_dirty = true,
            Err(e) => {
                self.st.poison(e);
            }
        }
    }

    /// Takes the lease changes made so far (call before `commit`).
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.st.lease_changes)
    }

    /// Commits the batch and publishes it to readers. `durable` fsyncs it (and everything
    /// committed before it); otherwise the commit survives the process but not a crash of the
    /// machine or process (see the crate docs). Returns the batch's events in revision order.
    pub fn commit(mut self, durable: bool) -> Result<Vec<Event>, StoreError> {
        if let Some(p) = &self.st.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        let changed = self.st.rev != self.st.base.rev
            || self.st.compacted.is_some()
            || self.st.applied_dirty
            || self.st.meta_dirty;
        let mut txn = self.txn.take().expect("a live batch has its transaction");
        if !changed && !durable {
            drop(txn);
            self.st.finished = true;
            return Ok(Vec::new());
        }
        {
            let mut meta = txn.open_table(META)?;
            if self.st.applied_dirty {
                meta.insert(
                    CONSISTENT_INDEX,
                    self.st.applied_index.to_be_bytes().as_slice(),
                )?;
            }
            if let Some(c) = self.st.compacted {
                meta.insert(
                    FINISHED_COMPACT_REV,
                    Revision::new(c, 0).key(false).as_slice(),
                )?;
            }
        }
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        txn.commit()?;
        // Committed: from here on the batch is never undone.
        self.st.finished = true;
        let state = WriterState {
            rev: self.st.rev,
            compact_rev: self.st.compact_rev,
            applied_index: self.st.applied_index,
        };
        *self
            .store
            .writer_state
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = state;
        self.store
            .live_bytes
            .fetch_add(self.st.live_bytes_delta, Ordering::Relaxed);
        let snap = self.store.open_snapshot(&state)?;
        self.store.publish(snap);
        // Only now: readers of the previous snapshot below the compaction point start over
        // and find the new snapshot.
        if let Some(c) = self.st.compacted {
            compact_shared(&self.store.index, c);
        }
        Ok(std::mem::take(&mut self.st.events))
    }

    /// Runs one request: opens the `key` table, gives the request the next revision, and
    /// settles the outcome (see the module docs).
    fn run<R>(
        &mut self,
        f: impl FnOnce(&mut Writer<'_>, &mut Op) -> Result<R, Failure>,
    ) -> Result<R, EtcdError> {
        if self.st.poisoned.is_some() {
            return Err(EtcdError::Corrupt);
        }
        let txn = self.txn.as_ref().expect("a live batch has its transaction");
        let table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(e) => return Err(self.st.poison(e.into())),
        };
        let marks = (
            self.st.events.len(),
            self.st.lease_changes.len(),
            self.st.live_bytes_delta,
        );
        let mut op = Op {
            main: self.st.rev + 1,
            sub: 0,
        };
        let mut w = Writer {
            store: self.store,
            table,
            st: &mut self.st,
        };
        match f(&mut w, &mut op) {
            Ok(r) => {
                if op.sub > 0 {
                    w.st.rev = op.main;
                }
                Ok(r)
            }
            Err(Failure::Etcd(e)) => {
                if op.sub > 0 {
                    if let Err(se) = w.undo(&op, marks) {
                        return Err(w.st.poison(se));
                    }
                }
                Err(e)
            }
            Err(Failure::Store(se)) => Err(w.st.poison(se)),
            Err(Failure::Retry) => Err(w.st.poison(StoreError::Corrupt(
                "writer saw its own index compacted".into(),
            ))),
        }
    }
}

impl Drop for WriteBatch<'_> {
    fn drop(&mut self) {
        if !self.st.finished {
            // abort the backend transaction, then take the batch's revisions out of the index
            drop(self.txn.take());
            if self.st.index_dirty {
                self.store
                    .index
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .truncate_after(self.st.base.rev);
            }
        }
        self.store
            .writer_busy
            .store(crate::store::FREE, Ordering::Release);
    }
}

/// A request being applied: the batch's `key` table and state.
struct Writer<'t> {
    store: &'t Store,
    table: Table<'t, &'static [u8], &'static [u8]>,
    st: &'t mut BatchState,
}

/// Which branch of a txn the compares chose, and the same for each nested txn on it.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn branch<'r>(req: &'r TxnRequest, path: &Path) -> &'r [ketch_api::etcdserverpb::RequestOp] {
    if path.succeeded {
        &req.success
    } else {
        &req.failure
    }
}

impl Writer<'_> {
    fn alive(&self, key: &[u8], at: i64) -> Option<(Bytes, KeyMeta)> {
        let ix = self.store.index.read().unwrap_or_else(|e| e.into_inner());
        ix.entry(key)
            .and_then(|(k, ki)| ki.get(at).map(|m| (k.clone(), m)))
    }

    fn put(&mut self, op: &mut Op, req: &PutRequest) -> Result<PutResponse, Failure> {
        let view = op.view();
        let (entry_key, prev) = {
            let ix = self.store.index.read().unwrap_or_else(|e| e.into_inner());
            match ix.entry(&req.key) {
                Some((k, ki)) => (Some(k.clone()), ki.get(view)),
                None => (None, None),
            }
        };
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        // a key that has an index entry reuses its buffer; a new key gets a buffer of its own
        let key = entry_key.unwrap_or_else(|| Bytes::copy_from_slice(&req.key));
        let prev_kv = match &prev {
            Some(m) if req.prev_kv || req.ignore_value => {
                Some(key_value(&self.table, key.clone(), m, false)?)
            }
            _ => None,
        };
        let value = match (&prev_kv, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(m), true) => m.lease,
            _ => req.lease,
        };
        let rev = Revision::new(op.main, op.sub);
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.map_or(rev.main, |m| m.create),
            mod_revision: rev.main,
            version: prev.map_or(1, |m| m.version + 1),
            value,
            lease,
        };
        let value_len = u32::try_from(kv.value.len()).unwrap_or(u32::MAX);
        self.write_row(rev, false, &kv)?;
        self.store
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .put(&key, rev, lease, value_len);
        op.sub += 1;
        let old_lease = prev.map_or(0, |m| m.lease);
        if old_lease != lease {
            self.st.lease_changes.push(LeaseChange {
                key,
                revision: rev.main,
                old_lease,
                new_lease: lease,
            });
        }
        self.st.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        Ok(PutResponse {
            header: header(rev.main),
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    fn delete(
        &mut self,
        op: &mut Op,
        spans: &[Span<'_>],
        prev_kv: bool,
    ) -> Result<DeleteRangeResponse, Failure> {
        let view = op.view();
        let alive: Vec<(Bytes, KeyMeta)> = {
            let ix = self.store.index.read().unwrap_or_else(|e| e.into_inner());
            spans.iter().flat_map(|s| ix.alive(*s, view)).collect()
        };
        let mut prev_kvs = Vec::new();
        if prev_kv {
            prev_kvs.reserve(alive.len());
            for (k, m) in &alive {
                prev_kvs.push(key_value(&self.table, k.clone(), m, false)?);
            }
        }
        for (key, meta) in &alive {
            let rev = Revision::new(op.main, op.sub);
            let tomb = KeyValue {
                key: key.clone(),
                ..Default::default()
            };
            self.write_row(rev, true, &tomb)?;
            self.store
                .index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .tombstone(key, rev);
            op.sub += 1;
            if meta.lease != 0 {
                self.st.lease_changes.push(LeaseChange {
                    key: key.clone(),
                    revision: rev.main,
                    old_lease: meta.lease,
                    new_lease: 0,
                });
            }
            let kv = KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            self.st.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv),
                prev_kv: None,
            });
        }
        Ok(DeleteRangeResponse {
            header: header(op.view()),
            deleted: alive.len() as i64,
            prev_kvs,
        })
    }

    fn write_row(&mut self, rev: Revision, tombstone: bool, kv: &KeyValue) -> Result<(), Failure> {
        encode_row(kv, &mut self.st.row_buf);
        let key = rev.key(tombstone);
        self.st.index_dirty = true;
        self.table
            .insert(key.as_slice(), self.st.row_buf.as_slice())?;
        self.st.live_bytes_delta += (key.as_slice().len() + self.st.row_buf.len()) as i64;
        Ok(())
    }

    fn range(&self, op: &Op, req: &RangeRequest) -> Result<RangeResponse, Failure> {
        let current = op.view();
        if req.revision > current {
            return Err(EtcdError::FutureRev.into());
        }
        let at = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if at < self.st.compact_rev {
            return Err(EtcdError::Compacted.into());
        }
        let out = range::range(&self.store.index, false, &self.table, req, at)?;
        Ok(RangeResponse {
            header: header(current),
            kvs: range::materialize(&self.table, out.picked, req.keys_only)?,
            more: out.more,
            count: out.count,
            deferred: None,
        })
    }

    /// Evaluates the compares of `req` and of every nested txn on the chosen branches, all at
    /// revision `at` (before any write of the txn), as etcd does.
    fn eval_path(&self, req: &TxnRequest, at: i64) -> Result<Path, Failure> {
        let mut succeeded = true;
        for c in &req.compare {
            if !compare_holds(&self.store.index, &self.table, c, at)? {
                succeeded = false;
                break;
            }
        }
        let mut path = Path {
            succeeded,
            nested: Vec::new(),
        };
        for op in branch(req, &path) {
            if let Some(Request::RequestTxn(t)) = &op.request {
                path.nested.push(self.eval_path(t, at)?);
            }
        }
        Ok(path)
    }

    /// etcd's checks of the puts on the chosen branches: `ignore_value`/`ignore_lease` need the
    /// key to exist before the txn; a lease must exist.
    fn check_puts(
        &self,
        req: &TxnRequest,
        path: &Path,
        at: i64,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<(), Failure> {
        let mut nested = path.nested.iter();
        for op in branch(req, path) {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path for every nested txn");
                    self.check_puts(t, p, at, lease_exists)?;
                }
                Some(Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && self.alive(&p.key, at).is_none() {
                        return Err(EtcdError::KeyNotFound.into());
                    }
                    if p.lease != 0 && !lease_exists(p.lease) {
                        return Err(EtcdError::LeaseNotFound.into());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// etcd's checks of the ranges on the chosen branches, against the state before the txn.
    fn check_ranges(&self, req: &TxnRequest, path: &Path, at: i64) -> Result<(), Failure> {
        let mut nested = path.nested.iter();
        for op in branch(req, path) {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path for every nested txn");
                    self.check_ranges(t, p, at)?;
                }
                Some(Request::RequestRange(r)) => {
                    if r.revision != 0 && r.revision > at {
                        return Err(EtcdError::FutureRev.into());
                    }
                    if r.revision != 0 && r.revision < self.st.compact_rev {
                        return Err(EtcdError::Compacted.into());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies the chosen branch. Nested txn responses keep an empty header, as etcd's do.
    fn apply_txn(
        &mut self,
        op: &mut Op,
        req: &TxnRequest,
        path: &Path,
    ) -> Result<TxnResponse, Failure> {
        let ops = branch(req, path);
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for o in ops {
            let response = match &o.request {
                Some(Request::RequestRange(r)) => Some(Response::ResponseRange(self.range(op, r)?)),
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.put(op, p)?)),
                Some(Request::RequestDeleteRange(d)) => Some(Response::ResponseDeleteRange(
                    self.delete(op, &[Span::new(&d.key, &d.range_end)], d.prev_kv)?,
                )),
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path for every nested txn");
                    Some(Response::ResponseTxn(self.apply_txn(op, t, p)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded: path.succeeded,
            responses,
        })
    }

    /// Takes out everything request `op` wrote (it failed after writing).
    fn undo(&mut self, op: &Op, marks: (usize, usize, i64)) -> Result<(), StoreError> {
        let lo = Revision::new(op.main, 0).key(false);
        let hi = Revision::new(op.main + 1, 0).key(false);
        self.table
            .retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
        self.store
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .truncate_after(op.main - 1);
        self.st.events.truncate(marks.0);
        self.st.lease_changes.truncate(marks.1);
        self.st.live_bytes_delta = marks.2;
        Ok(())
    }
}
