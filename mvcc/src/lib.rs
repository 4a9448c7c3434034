//! ketch-mvcc: etcd 3.4's multi-version key-value store, over redb.
//!
//! Every write request makes one new revision; the store keeps every revision of every key
//! until a compaction drops the ones no read can reach any more. Reads name a revision (or take
//! the current one); writes come in batches, one backend transaction for many raft entries.
//!
//! ```no_run
//! use ketch_api::etcdserverpb::{PutRequest, RangeRequest};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = ketch_mvcc::Store::open(std::path::Path::new("/var/lib/ketch/db"))?;
//! let mut batch = store.write()?;
//! batch.put(&PutRequest { key: "foo".into(), value: "bar".into(), ..Default::default() })?;
//! batch.set_applied_index(7);
//! let events = batch.commit(false)?; // non-durable: fsync later with commit(true)
//! let resp = store.range(&RangeRequest { key: "foo".into(), ..Default::default() })?;
//! assert_eq!(resp.kvs[0].value, "bar");
//! # let _ = events; Ok(()) }
//! ```
//!
//! # History as events
//! [`Store::events`] reads the events of a revision range back from the `key` table (a put row
//! is a PUT event, a tombstone row a DELETE), in bounded pages that never split a revision:
//! what a watcher that starts in the past or falls behind replays (see ketch-core's watch hub).
//! [`Store::fill_prev_kv`] adds the key as it was before an event, as etcd's watch server does.
//!
//! # Backend layout
//! One redb file with three tables:
//! - `key`: revision → `mvccpb.KeyValue`. Row key is etcd's: `main` (8 bytes big-endian), `'_'`,
//!   `sub` (8 bytes big-endian), plus `'t'` for a tombstone. Value is the protobuf `KeyValue` at
//!   that revision (only the key, for a tombstone). Byte-for-byte what etcd keeps in its `key`
//!   bucket, so `hash_kv` of a history equals etcd's.
//! - `meta`: `consistent_index` (the applied raft index, u64 big-endian) and
//!   `finishedCompactRev` (a revision key), written in the same transaction as the data.
//! - `ketch_meta`: records of the layers above (`meta_get`/`meta_put`).
//!
//! The current revision is not stored: it is the newest row's, or the compact revision if that
//! is newer, or 1 for an empty store (etcd's numbering: the first write is revision 2).
//!
//! # Concurrency
//! One writer, any number of readers, neither waiting on the other for more than a short lock
//! hold:
//! - After each commit the writer opens a redb read transaction and publishes it, with the
//!   revisions it holds, as the current snapshot. A reader clones that `Arc` and reads the
//!   backend through it: it never sees a batch before its commit, and never blocks the writer
//!   (redb readers are MVCC snapshots).
//! - The key index (in memory) is shared. The writer adds revisions in place during a batch;
//!   readers only look at revisions up to their snapshot's, so uncommitted ones are invisible,
//!   and a dropped batch takes its revisions out again. Long scans take the index lock a chunk
//!   of keys at a time.
//! - Compaction is the one change that alters old reads. Its backend half runs inside the batch
//!   (invisible until commit); its index half runs only after the commit and the new snapshot
//!   are published, and first marks the index as compacted to that revision. A reader whose read
//!   revision is below the mark starts over with the new snapshot — and then gets `Compacted` if
//!   it asked for a revision that is now gone, just as if it had arrived after the compaction.
//!
//! # Durability
//! `WriteBatch::commit(false)` uses redb's `Durability::None`: the commit is visible at once and
//! is written to the file without fsync. `commit(true)` (`Durability::Immediate`) fsyncs it and
//! every non-durable commit before it. What redb 4.5 guarantees (its design doc, "Non-durable
//! commits", and `close_database` in `db.rs`):
//! - after a crash the file opens at the last durable commit: later non-durable commits are
//!   rolled back whole (the allocator state is then rebuilt by redb's repair, which walks the
//!   file — slow for a large database);
//! - a clean close (dropping the `Store`) makes pending non-durable commits durable;
//! - either way data and `applied_index` come from the same commit, so the caller replays its
//!   log from `applied_index() + 1` after reopening.
//!
//! This crate's tests check both: a process that aborts after non-durable commits reopens at its
//! last durable commit, consistent; a store dropped after non-durable commits keeps them.

mod batch;
mod codec;
mod deferred;
mod error;
mod history;
mod index;
mod key_index;
mod range;
mod revision;
mod store;

pub use batch::{LeaseChange, WriteBatch};
pub use error::StoreError;
pub use history::{in_range, EventPage};
pub use revision::Revision;
pub use store::Store;

#[cfg(test)]
mod tests;

#[allow(dead_code)]
fn assert_thread_safety() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<WriteBatch<'static>>();
}
