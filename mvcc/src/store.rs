//! The store: the backend file, the shared key index, and the committed snapshot readers use.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ketch_api::etcdserverpb::{
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use ketch_api::status::EtcdError;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

use crate::batch::WriteBatch;
use crate::codec::{self, Crc32c};
use crate::deferred::DeferredRange;
use crate::error::{Failure, StoreError};
use crate::index::{Index, Scan, Span, Visit};
use crate::key_index::KeyIndex;
use crate::range::{self, Picked};
use crate::revision::Revision;

/// Every revision of every key: row key = revision (see [`crate::revision`]), row value = the
/// `mvccpb.KeyValue` at that revision (see [`crate::codec`]). Named as etcd's bucket.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("key");
/// The store's own bookkeeping, under etcd's names and encodings: `consistent_index` (u64
/// big-endian) and `finishedCompactRev` (a revision key).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Small records of the layers above (members, cluster id, ...), through `meta_get/meta_put`.
pub(crate) const APP_META: TableDefinition<&str, &[u8]> = TableDefinition::new("ketch_meta");
/// Leases, as etcd's `lease` bucket: row key = lease id (i64, big-endian), row value = the
/// lease's record as the lessor encodes it (etcd's `leasepb.Lease`). Written in the same
/// transactions as the keys attached to them.
pub(crate) const LEASE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease");

/// The backend's own page cache. Pages it does not hold are read with `pread` from the kernel's
/// page cache, which is cheap; this bounds what the process itself keeps (redb's default is
/// 1 GiB, which a large range would fill and keep).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

pub(crate) const CONSISTENT_INDEX: &str = "consistent_index";
pub(crate) const FINISHED_COMPACT_REV: &str = "finishedCompactRev";

pub(crate) type KvReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;
type MetaReadTable = ReadOnlyTable<&'static str, &'static [u8]>;

/// A committed state: one backend read transaction and the revisions it holds. Published by
/// the writer after each commit; a reader clones the `Arc` and reads without further locking
/// of the backend.
pub(crate) struct Snapshot {
    pub(crate) rev: i64,
    pub(crate) compact_rev: i64,
    pub(crate) applied_index: u64,
    pub(crate) kv: KvReadTable,
    meta: MetaReadTable,
    app_meta: MetaReadTable,
    lease: KvReadTable,
    /// The backend the tables are read from, kept open while they are (declared last: dropped
    /// after them). After a defragmentation replaced it, the old backend closes with the last
    /// snapshot of it: redb must not close a file under a live read.
    _db: Arc<Database>,
}

impl Snapshot {
    fn open(
        db: &Arc<Database>,
        rev: i64,
        compact_rev: i64,
        applied_index: u64,
    ) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read()?;
        Ok(Snapshot {
            rev,
            compact_rev,
            applied_index,
            kv: txn.open_table(KV)?,
            meta: txn.open_table(META)?,
            app_meta: txn.open_table(APP_META)?,
            lease: txn.open_table(LEASE)?,
            _db: Arc::clone(db),
        })
    }
}

/// What only the writer changes, read when a batch begins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterState {
    pub(crate) rev: i64,
    pub(crate) compact_rev: i64,
    pub(crate) applied_index: u64,
}

/// etcd's MVCC key-value store over redb. `Send + Sync`: one writer at a time ([`Store::write`]),
/// any number of concurrent readers.
///
/// Locks are never nested: a reader takes `snapshot` (to clone the `Arc`, then lets go) and then
/// `index` a chunk of keys at a time; the writer takes `index` around each key it changes and,
/// at commit, `writer_state`, `snapshot` and `index` one after the other. The order of those
/// three steps is what keeps readers right (see the crate docs).
pub struct Store {
    /// The last committed state, for readers. (Declared before `db`: its read transaction is
    /// let go before the database closes.)
    pub(crate) snapshot: RwLock<Arc<Snapshot>>,
    /// The key index, shared with readers (see [`crate::index`]).
    pub(crate) index: RwLock<Index>,
    /// Who holds the writer: [`FREE`], [`BATCH`] (a [`WriteBatch`] exists) or [`DEFRAG`].
    pub(crate) writer_busy: AtomicU8,
    /// Revision, compaction and applied index as of the last commit (the writer's copy).
    pub(crate) writer_state: Mutex<WriterState>,
    /// Bytes of keys and values of the rows in the backend (see [`Store::db_size_in_use`]).
    pub(crate) live_bytes: AtomicI64,
    /// The backend; replaced (under the write lock) only by [`Store::defragment`].
    db: RwLock<Arc<Database>>,
    path: PathBuf,
    cache_bytes: usize,
}

/// `Store::writer_busy` values.
pub(crate) const FREE: u8 = 0;
pub(crate) const BATCH: u8 = 1;
const DEFRAG: u8 = 2;

/// How long a defragmentation waits for the writer between two batches.
const DEFRAG_WAIT: Duration = Duration::from_secs(30);

impl Store {
    /// Opens the store at `path`, creating the file if it does not exist, and rebuilds the key
    /// index from the backend. After a crash the backend comes back at its last durable commit
    /// (see the crate docs); data and `applied_index` always come from the same commit.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (reads and not-yet-written pages).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let started = Instant::now();
        // what a defragmentation cut short left behind (the backend itself is whole)
        let _ = std::fs::remove_file(defrag_tmp_path(path));
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)?;
        {
            let mut txn = db.begin_write()?;
            txn.open_table(KV)?;
            txn.open_table(META)?;
            txn.open_table(APP_META)?;
            txn.open_table(LEASE)?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
        }
        let (compact_rev, applied_index, map, rev, live_bytes) = load_state(&db)?;
        let db = Arc::new(db);
        let snapshot = Snapshot::open(&db, rev, compact_rev, applied_index)?;
        tracing::info!(
            path = %path.display(),
            revision = rev,
            compact_revision = compact_rev,
            applied_index,
            keys = map.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "mvcc store opened"
        );
        Ok(Store {
            db: RwLock::new(db),
            path: path.to_path_buf(),
            cache_bytes,
            writer_busy: AtomicU8::new(FREE),
            writer_state: Mutex::new(WriterState {
                rev,
                compact_rev,
                applied_index,
            }),
            snapshot: RwLock::new(Arc::new(snapshot)),
            index: RwLock::new(Index {
                map,
                compacted: compact_rev,
            }),
            live_bytes: AtomicI64::new(live_bytes),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn publish(&self, snap: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }

    /// The backend, for one call (a transaction does not borrow it).
    pub(crate) fn db(&self) -> Arc<Database> {
        Arc::clone(&self.db.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn open_snapshot(&self, state: &WriterState) -> Result<Snapshot, StoreError> {
        Snapshot::open(
            &self.db(),
            state.rev,
            state.compact_rev,
            state.applied_index,
        )
    }

    /// Raft index of the last entry whose effects are committed (stored in the same backend
    /// transaction as the data).
    pub fn applied_index(&self) -> u64 {
        self.snapshot().applied_index
    }

    /// The revision of the committed state.
    pub fn current_revision(&self) -> i64 {
        self.snapshot().rev
    }

    /// The revision of the last compaction, -1 before the first one (as etcd).
    pub fn compact_revision(&self) -> i64 {
        self.snapshot().compact_rev
    }

    /// Begins a write batch. There is one writer: while a batch exists this returns
    /// [`StoreError::WriterBusy`] instead of waiting (waiting on oneself would never end);
    /// while a defragmentation runs it waits for it, as etcd's writes do.
    pub fn write(&self) -> Result<WriteBatch<'_>, StoreError> {
        self.take_writer()?;
        WriteBatch::begin(self)
    }

    /// Takes the writer flag for a batch or a restore, waiting out a defragmentation.
    fn take_writer(&self) -> Result<(), StoreError> {
        loop {
            match self.writer_busy.compare_exchange(
                FREE,
                BATCH,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(DEFRAG) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return Err(StoreError::WriterBusy),
            }
        }
    }

    /// etcd's Defragment: rewrites the backend into a fresh file holding only the committed
    /// state, without the free pages that deletes and compactions leave, and puts it in place of
    /// the old one (fsynced, then an atomic rename: a crash at any point leaves one whole
    /// backend). Writes wait meanwhile; reads go on from the state they started on. Returns the
    /// file's size before and after.
    pub fn defragment(&self) -> Result<(u64, u64), StoreError> {
        let deadline = Instant::now() + DEFRAG_WAIT;
        while self
            .writer_busy
            .compare_exchange(FREE, DEFRAG, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if Instant::now() >= deadline {
                return Err(StoreError::WriterBusy);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let result = self.defragment_locked();
        self.writer_busy.store(FREE, Ordering::Release);
        result
    }

    fn defragment_locked(&self) -> Result<(u64, u64), StoreError> {
        let before = self.db_size();
        let tmp = defrag_tmp_path(&self.path);
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = self.snapshot_file(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        // The old backend (now unlinked) closes once the last snapshot of it is let go. From
        // here on a failure may not leave the writer on the unlinked file, where commits would
        // be lost: like etcd, whose defragmentation failures are fatal, stop the process (the
        // file in place is whole, and a restart opens it).
        let reopened = (|| -> Result<Database, StoreError> {
            if let Some(dir) = self.path.parent() {
                File::open(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })?
                .sync_all()?;
            }
            Ok(redb::Builder::new()
                .set_cache_size(self.cache_bytes)
                .open(&self.path)?)
        })();
        let fresh = match reopened {
            Ok(db) => db,
            Err(e) => {
                tracing::error!(error = %e, "fatal: cannot open the defragmented backend");
                std::process::abort();
            }
        };
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        let state = *self.writer_state.lock().unwrap_or_else(|e| e.into_inner());
        self.publish(self.open_snapshot(&state)?);
        let after = self.db_size();
        tracing::info!(before, after, "backend defragmented");
        Ok((before, after))
    }

    /// etcd's Range over the committed state, with every key-value in memory. The header
    /// carries only the revision: the store revision at the time of the read, whatever revision
    /// was asked for (as etcd).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.range_as(req, false)
    }

    /// The same answer as [`Store::range`], for sending: the values stay in the backend until
    /// the response is encoded, and are then written straight into the encoder's buffer (see
    /// [`ketch_api::range_response`]). The response holds the keys (shared with the index) and
    /// the read snapshot, so the answer exists once, on its way out. (A sort by value reads the
    /// values to sort them; that answer is held in memory as usual.)
    pub fn range_for_wire(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.range_as(req, true)
    }

    fn range_as(&self, req: &RangeRequest, deferred: bool) -> Result<RangeResponse, EtcdError> {
        loop {
            let snap = self.snapshot();
            if req.revision > snap.rev {
                return Err(EtcdError::FutureRev);
            }
            let at = if req.revision <= 0 {
                snap.rev
            } else {
                req.revision
            };
            if at < snap.compact_rev {
                return Err(EtcdError::Compacted);
            }
            let out = match range::range(&self.index, true, &snap.kv, req, at) {
                Ok(out) => out,
                // a compaction committed under us: start over from the newer snapshot
                Err(Failure::Retry) => continue,
                Err(Failure::Etcd(e)) => return Err(e),
                Err(Failure::Store(e)) => return Err(fatal_read(e)),
            };
            let mut resp = RangeResponse {
                header: Some(ResponseHeader {
                    revision: snap.rev,
                    ..Default::default()
                }),
                more: out.more,
                count: out.count,
                ..Default::default()
            };
            match out.picked {
                Picked::Metas(metas) if deferred => {
                    resp.deferred = Some(Arc::new(DeferredRange::new(
                        Arc::clone(&snap),
                        metas,
                        req.keys_only,
                    )));
                }
                picked => {
                    resp.kvs = match range::materialize(&snap.kv, picked, req.keys_only) {
                        Ok(kvs) => kvs,
                        Err(Failure::Store(e)) => return Err(fatal_read(e)),
                        Err(Failure::Etcd(e)) => return Err(e),
                        Err(Failure::Retry) => continue,
                    };
                }
            }
            return Ok(resp);
        }
    }

    /// etcd's Txn for a read-only request (compares and ranges only, nested too; see
    /// [`is_read_only_txn`]) over the committed state, without the Raft log. Every compare
    /// and range sees one snapshot, as in the write path.
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        loop {
            let snap = self.snapshot();
            match self.txn_read_at(&snap, req) {
                Ok(mut resp) => {
                    resp.header = Some(ResponseHeader {
                        revision: snap.rev,
                        ..Default::default()
                    });
                    return Ok(resp);
                }
                Err(Failure::Retry) => continue,
                Err(Failure::Etcd(e)) => return Err(e),
                Err(Failure::Store(e)) => return Err(fatal_read(e)),
            }
        }
    }

    fn txn_read_at(&self, snap: &Snapshot, req: &TxnRequest) -> Result<TxnResponse, Failure> {
        use ketch_api::etcdserverpb::{request_op::Request, response_op::Response, ResponseOp};
        let mut succeeded = true;
        for c in &req.compare {
            if !range::compare_holds(&self.index, &snap.kv, c, snap.rev)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    if r.revision > snap.rev {
                        return Err(EtcdError::FutureRev.into());
                    }
                    let at = if r.revision <= 0 {
                        snap.rev
                    } else {
                        r.revision
                    };
                    if at < snap.compact_rev {
                        return Err(EtcdError::Compacted.into());
                    }
                    let out = range::range(&self.index, true, &snap.kv, r, at)?;
                    Response::ResponseRange(RangeResponse {
                        header: Some(ResponseHeader {
                            revision: snap.rev,
                            ..Default::default()
                        }),
                        kvs: range::materialize(&snap.kv, out.picked, r.keys_only)?,
                        more: out.more,
                        count: out.count,
                        ..Default::default()
                    })
                }
                Some(Request::RequestTxn(t)) => Response::ResponseTxn(self.txn_read_at(snap, t)?),
                _ => return Err(EtcdError::NotCapable.into()),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        // a nested txn's response carries an empty header, as etcd's does
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    /// A record of the layers above, as of the last commit.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let snap = self.snapshot();
        Ok(snap.app_meta.get(key)?.map(|g| g.value().to_vec()))
    }

    /// Every lease record as of the last commit, as `(lease id, record)` in id order.
    pub fn leases(&self) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let snap = self.snapshot();
        let mut out = Vec::new();
        for row in snap.lease.iter()? {
            let (k, v) = row?;
            let Ok(id) = <[u8; 8]>::try_from(k.value()) else {
                return Err(StoreError::Corrupt(format!(
                    "lease row key of {} bytes",
                    k.value().len()
                )));
            };
            out.push((i64::from_be_bytes(id), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The size of the backend file.
    pub fn db_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes of keys and values in the backend's `key` table as of the last commit: what the
    /// data needs, without the B-tree's page overhead and free space. (redb 4.5 has no cheap
    /// count of allocated pages; `WriteTransaction::stats` walks every page.)
    pub fn db_size_in_use(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// etcd's HashKV: CRC-32C over the `key` table's rows up to revision `rev` (0: the current
    /// one), skipping rows at or below the compact revision that a compaction at `rev` would
    /// remove. Rows are stored in etcd's layout, so the same history hashes to etcd's value.
    /// Returns the hash and the compact revision.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        loop {
            let snap = self.snapshot();
            let compact = snap.compact_rev;
            if rev > 0 && rev <= compact {
                return Err(EtcdError::Compacted);
            }
            if rev > snap.rev {
                return Err(EtcdError::FutureRev);
            }
            let at = if rev == 0 { snap.rev } else { rev };
            match hash_rows(&self.index, &snap, at, compact) {
                Ok(h) => return Ok((h, compact)),
                Err(Failure::Retry) => continue,
                Err(Failure::Etcd(e)) => return Err(e),
                Err(Failure::Store(e)) => return Err(fatal_read(e)),
            }
        }
    }

    /// A consistent copy of the committed state as an open, already unlinked file (readable
    /// until dropped), and its size: for streaming it to a client.
    pub fn snapshot_copy(&self) -> Result<(File, u64), StoreError> {
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let tmp = sibling_path(
            &self.path,
            &format!(
                "client-snapshot-{}-{}.tmp",
                std::process::id(),
                COPIES.fetch_add(1, Ordering::Relaxed)
            ),
        );
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            self.snapshot_file(&tmp)?;
            let f = File::open(&tmp)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Writes a consistent copy of the committed state to `w` as a redb file that
    /// [`Store::open`] opens. The copy is taken from a read snapshot into a fresh file next to
    /// the store's (so it is compact) and then streamed; the writer is never held up. Returns
    /// the number of bytes written.
    pub fn snapshot_to(&self, w: &mut impl Write) -> Result<u64, StoreError> {
        let (mut f, _) = self.snapshot_copy()?;
        Ok(std::io::copy(&mut f, w)?)
    }

    /// Writes the committed state as a new backend file at `dest` (fsynced) and returns the
    /// applied index it holds: what a member sends a peer that is too far behind for the log.
    pub fn snapshot_file(&self, dest: &Path) -> Result<u64, StoreError> {
        self.snapshot_file_with_meta(dest, "")
            .map(|(index, _)| index)
    }

    /// [`Store::snapshot_file`], also returning the record `meta_key` (see `meta_get`) as of
    /// the same state.
    pub fn snapshot_file_with_meta(
        &self,
        dest: &Path,
        meta_key: &str,
    ) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let snap = self.snapshot();
        let record = if meta_key.is_empty() {
            None
        } else {
            snap.app_meta.get(meta_key)?.map(|g| g.value().to_vec())
        };
        let copy = Database::create(dest)?;
        let mut txn = copy.begin_write()?;
        {
            let mut kv = txn.open_table(KV)?;
            for row in snap.kv.iter()? {
                let (k, v) = row?;
                kv.insert(k.value(), v.value())?;
            }
            let mut meta = txn.open_table(META)?;
            for row in snap.meta.iter()? {
                let (k, v) = row?;
                meta.insert(k.value(), v.value())?;
            }
            let mut app = txn.open_table(APP_META)?;
            for row in snap.app_meta.iter()? {
                let (k, v) = row?;
                app.insert(k.value(), v.value())?;
            }
            let mut lease = txn.open_table(LEASE)?;
            for row in snap.lease.iter()? {
                let (k, v) = row?;
                lease.insert(k.value(), v.value())?;
            }
        }
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        copy.close()?;
        Ok((snap.applied_index, record))
    }

    /// Replaces the whole state with the backend file at `src` (made by [`Store::snapshot_file`]
    /// on a peer), durably, and rebuilds the key index: how a member that fell too far behind
    /// catches up. Returns the applied index the new state holds. Fails with
    /// [`StoreError::WriterBusy`] while a batch is open; waits out a defragmentation. Reads
    /// running meanwhile may fail once.
    pub fn restore_from(&self, src: &Path) -> Result<u64, StoreError> {
        self.take_writer()?;
        let result = self.restore_locked(src);
        self.writer_busy.store(FREE, Ordering::Release);
        result
    }

    fn restore_locked(&self, src: &Path) -> Result<u64, StoreError> {
        {
            let source = Database::open(src)?;
            let from = source.begin_read()?;
            let mut txn = self.db().begin_write()?;
            txn.delete_table(KV)?;
            txn.delete_table(META)?;
            txn.delete_table(APP_META)?;
            txn.delete_table(LEASE)?;
            {
                let mut kv = txn.open_table(KV)?;
                for row in from.open_table(KV)?.iter()? {
                    let (k, v) = row?;
                    kv.insert(k.value(), v.value())?;
                }
                let mut meta = txn.open_table(META)?;
                for row in from.open_table(META)?.iter()? {
                    let (k, v) = row?;
                    meta.insert(k.value(), v.value())?;
                }
                let mut app = txn.open_table(APP_META)?;
                for row in from.open_table(APP_META)?.iter()? {
                    let (k, v) = row?;
                    app.insert(k.value(), v.value())?;
                }
                let mut lease = txn.open_table(LEASE)?;
                // A snapshot from a member older than the lease table has none.
                if let Ok(rows) = from.open_table(LEASE) {
                    for row in rows.iter()? {
                        let (k, v) = row?;
                        lease.insert(k.value(), v.value())?;
                    }
                }
            }
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
        }
        let (compact_rev, applied_index, map, rev, live_bytes) = load_state(&self.db())?;
        let state = WriterState {
            rev,
            compact_rev,
            applied_index,
        };
        *self.writer_state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Index {
            map,
            compacted: compact_rev,
        };
        self.live_bytes.store(live_bytes, Ordering::Relaxed);
        self.publish(self.open_snapshot(&state)?);
        tracing::info!(
            revision = rev,
            applied_index,
            "mvcc store restored from a snapshot"
        );
        Ok(applied_index)
    }

    /// Every key alive in the committed state that has a lease, as `(lease, key)`: what a lessor
    /// re-attaches after a restart.
    pub fn leased_keys(&self) -> Vec<(i64, Bytes)> {
        loop {
            let snap = self.snapshot();
            let mut out = Vec::new();
            let scan = Scan::new(&self.index, Span::new(b"\0", b"\0"), snap.rev, true);
            let done = scan.for_each(|k, m| {
                if m.lease != 0 {
                    out.push((m.lease, k.clone()));
                }
                Visit::Continue
            });
            if done.is_ok() {
                return out;
            }
        }
    }
}

/// `<dir>/<file name>.<suffix>`: a file beside the backend's.
fn sibling_path(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("db");
    path.with_file_name(format!("{name}.{suffix}"))
}

/// Where [`Store::defragment`] writes the new backend before renaming it into place.
fn defrag_tmp_path(path: &Path) -> PathBuf {
    sibling_path(path, "defrag.tmp")
}

/// Reads what a store keeps about itself back from the backend and rebuilds the key index:
/// (compact revision, applied index, index, current revision, live bytes).
#[allow(clippy::type_complexity)]
fn load_state(
    db: &Database,
) -> Result<(i64, u64, BTreeMap<Bytes, KeyIndex>, i64, i64), StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let compact_rev = match meta.get(FINISHED_COMPACT_REV)? {
        Some(g) => {
            Revision::from_key(g.value())
                .ok_or_else(|| StoreError::Corrupt("finishedCompactRev is not a revision".into()))?
                .0
                .main
        }
        None => -1,
    };
    let applied_index = match meta.get(CONSISTENT_INDEX)? {
        Some(g) => u64::from_be_bytes(
            g.value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("consistent_index is not 8 bytes".into()))?,
        ),
        None => 0,
    };
    let (map, last_rev, live_bytes) = restore_index(&txn.open_table(KV)?)?;
    // An empty store is at revision 1, as etcd's; compaction may have removed every row up to
    // the compact revision.
    let rev = last_rev.max(compact_rev).max(1);
    Ok((compact_rev, applied_index, map, rev, live_bytes))
}

/// Whether a txn only reads (etcd's isTxnReadonly): every op on both branches, nested txns
/// included, is a range.
pub fn is_read_only_txn(req: &TxnRequest) -> bool {
    use ketch_api::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(t)) => is_read_only_txn(t),
            _ => false,
        })
}

/// Whether every op of a read-only txn is a serializable range (etcd's isTxnSerializable: a
/// nested txn makes it linearizable).
pub fn is_serializable_txn(req: &TxnRequest) -> bool {
    use ketch_api::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(&op.request, Some(Request::RequestRange(r)) if r.serializable))
}

/// A backend failure while reading: logged, and reported to the client as etcd's generic
/// corruption error (etcd itself would have crashed).
fn fatal_read(e: StoreError) -> EtcdError {
    tracing::error!(error = %e, "mvcc read failed");
    EtcdError::Corrupt
}

/// Rebuilds the key index by walking every row in revision order, as etcd's restore does.
/// Returns the index, the newest revision found and the bytes of all rows.
fn restore_index(kv: &KvReadTable) -> Result<(BTreeMap<Bytes, KeyIndex>, i64, i64), StoreError> {
    let mut map: BTreeMap<Bytes, KeyIndex> = BTreeMap::new();
    let mut last_rev = 0;
    let mut bytes = 0i64;
    for row in kv.iter()? {
        let (k, v) = row?;
        let (rev, tombstone) = Revision::from_key(k.value())
            .ok_or_else(|| StoreError::Corrupt("malformed revision key".into()))?;
        let row = codec::decode_row(v.value())
            .ok_or_else(|| StoreError::Corrupt(format!("row at {rev:?} is not a KeyValue")))?;
        bytes += (k.value().len() + v.value().len()) as i64;
        last_rev = rev.main;
        if tombstone {
            if let Some(ki) = map.get_mut(row.key) {
                ki.tombstone(rev);
            }
            continue;
        }
        let value_len = |v: &[u8]| u32::try_from(v.len()).unwrap_or(u32::MAX);
        match map.get_mut(row.key) {
            Some(ki) => ki.restore_put(
                rev,
                row.lease,
                value_len(row.value),
                row.create_revision,
                row.version,
            ),
            None => {
                let mut ki = KeyIndex::default();
                ki.restore_put(
                    rev,
                    row.lease,
                    value_len(row.value),
                    row.create_revision,
                    row.version,
                );
                map.insert(Bytes::copy_from_slice(row.key), ki);
            }
        }
    }
    Ok((map, last_rev, bytes))
}

fn hash_rows(
    index: &RwLock<Index>,
    snap: &Snapshot,
    at: i64,
    compact: i64,
) -> Result<u32, Failure> {
    // Rows at or below the compaction point count only if a compaction at `at` would keep
    // them, which is the put each key shows at `at` — unless no key is alive at `at`, where
    // etcd's keep set is empty and it counts them all.
    let mut keep: Vec<Revision> = Vec::new();
    let mut any_alive = false;
    if compact >= 0 {
        let mut scan = Scan::new(index, Span::new(b"\0", b"\0"), at, true);
        while scan.next_chunk(|_, m| {
            any_alive = true;
            if m.rev.main <= compact {
                keep.push(m.rev);
            }
            Visit::Continue
        })? {}
        keep.sort_unstable();
    }
    let mut h = Crc32c::new();
    h.update(b"key"); // the table's (and etcd's bucket's) name
    let upper = Revision::new(at + 1, 0).key(false);
    for row in snap.kv.range::<&[u8]>(..upper.as_slice())? {
        let (k, v) = row?;
        let (rev, _) = Revision::from_key(k.value())
            .ok_or_else(|| StoreError::Corrupt("malformed revision key".into()))?;
        if rev.main <= compact && any_alive && keep.binary_search(&rev).is_err() {
            continue;
        }
        h.update(k.value());
        h.update(v.value());
    }
    Ok(h.finish())
}
