//! The member's write-ahead log: Raft entries, hard state and snapshot markers, appended to
//! CRC-checked segment files and fdatasynced before [`Wal::save`] returns.
//!
//! # Use
//!
//! ```
//! use ketch_wal::{Wal, WalOptions};
//! use raft::eraftpb::{Entry, HardState, SnapshotMetadata};
//!
//! # fn main() -> Result<(), ketch_wal::WalError> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let dir = tmp.path().join("member/wal");
//! let opts = WalOptions { segment_size: 1 << 20, ..WalOptions::default() };
//! let mut wal = Wal::create(&dir, b"member 1 of cluster 7", opts.clone())?;
//!
//! // For every raft-rs Ready: entries, then the hard state; durable on return.
//! let mut entry = Entry::default();
//! entry.index = 1;
//! entry.term = 1;
//! let mut hs = HardState::default();
//! hs.term = 1;
//! hs.commit = 1;
//! wal.save(Some(&hs), &[entry])?;
//!
//! // After a snapshot of the state machine is durable elsewhere:
//! let mut snap = SnapshotMetadata::default();
//! snap.index = 1;
//! snap.term = 1;
//! wal.save_snapshot(&snap)?;
//! wal.release_to(snap.index)?; // old segments may go
//! drop(wal);
//!
//! // On restart:
//! let (wal, recovered) = Wal::open(&dir, opts)?;
//! assert_eq!(recovered.metadata, b"member 1 of cluster 7");
//! assert_eq!(recovered.hard_state, hs);
//! assert_eq!(recovered.snapshot.map(|s| s.index), Some(1));
//! assert!(recovered.entries.is_empty()); // entry 1 is in the snapshot
//! assert_eq!(wal.last_index(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # On-disk format (version 1)
//!
//! A WAL is a directory of *segment* files named `{seq:016x}-{first:016x}.wal`, all integers
//! lower-case hexadecimal: `seq` counts segments from 0 (consecutive, never reused) and `first`
//! is the log's last index when the segment was started plus one, i.e. the index the log was
//! going to continue at. (A later conflicting save may still write lower indexes into it.)
//! The first segment of a new WAL is `0000000000000000-0000000000000001.wal`. Files ending in
//! `.wal.tmp` are segments being prepared and are deleted on open; other files are ignored.
//!
//! A segment is a sequence of *records*. Each starts at an offset that is a multiple of 8 and
//! is laid out as follows (integers little-endian):
//!
//! | offset | size | field                                                              |
//! |-------:|-----:|--------------------------------------------------------------------|
//! | 0      | 4    | CRC-32 (IEEE, as `crc32fast` computes it) of bytes 4..24 and the payload |
//! | 4      | 4    | payload length `n`                                                 |
//! | 8      | 8    | record sequence number: +1 for every record of the WAL, across segments |
//! | 16     | 1    | type: 1 segment header, 2 entry, 3 hard state, 4 snapshot marker   |
//! | 17     | 1    | flags: bit 0 set on the first record of each `write` (see below), others 0 |
//! | 18     | 6    | zero                                                               |
//! | 24     | n    | payload                                                            |
//! | 24 + n | 0..7 | zero padding to the next multiple of 8                             |
//!
//! Payloads: an *entry* is a `raft::eraftpb::Entry`, a *hard state* a `HardState`, a
//! *snapshot marker* a `SnapshotMetadata` (index, term, conf state), each in protobuf
//! encoding. The *segment header* is always the first record of a segment and nowhere else:
//!
//! ```text
//! u32 format version (1) | u64 segment seq (as in the name) | u64 last index (name's first - 1)
//! | u32 len + metadata bytes | u32 len + HardState protobuf
//! | u8 0 (no snapshot marker yet) or 1 followed by u32 len + SnapshotMetadata protobuf
//! ```
//!
//! The header repeats the state at the moment the segment was started: the metadata given to
//! [`Wal::create`], the hard state, the latest snapshot marker and the last index. A segment
//! can therefore be replayed without the ones before it, which is what lets
//! [`Wal::release_to`] delete old segments.
//!
//! **Writes.** Every [`Wal::save`] encodes its entries and then its hard state as one
//! contiguous run of records, sends it with a single `pwrite`, then calls `fdatasync`. The
//! first record of the run has flag bit 0 set; so do a snapshot marker (its own write) and a
//! segment header. Segments are reserved at full size when created (`fallocate`, see
//! [`Preallocation`]), so an append never changes the file size and `fdatasync` has no inode
//! size to persist. Unused reserved space reads as zeros, and an all-zero record header means
//! "no more records".
//!
//! **Segments.** When a write would take the live segment past
//! [`WalOptions::segment_size`], the live segment is truncated to its last record and
//! synced (*sealed*), then the next one is written under a `.wal.tmp` name with its header,
//! synced, renamed to its final name, and the directory synced. A write bigger than a
//! segment gets a fresh segment of its own, extended to fit. A write never spans two
//! segments. [`Wal::create`] makes the first segment the same way, so a directory holds a
//! WAL exactly when it holds a `.wal` file, and such a file always has a valid header.
//!
//! **Why a CRC per record and a sequence number, not etcd's CRC chain.** etcd chains each
//! record's CRC into the next one's, which detects lost and reordered records but means a
//! record can only be checked by reading everything before it. Here each record checks
//! itself, and the sequence number (checked to be consecutive, within and across segments)
//! catches lost, repeated or stale records just as the chain does. Self-checking records
//! let recovery look *past* a damaged record and ask whether anything valid was written
//! after it, which is how a torn last write is told apart from corruption, below.
//!
//! # Recovery
//!
//! [`Wal::open`] reads all segments in order and replays their records: an entry with
//! index `i` replaces entries `i..` (the Raft conflict rule), a hard state replaces the
//! previous one, a snapshot marker drops the entries at or below its index. It returns the
//! last hard state, the latest marker and the entries above it, which must be consecutive
//! from the marker's index + 1 ([`WalError::MissingEntries`] otherwise).
//!
//! A damaged record — CRC mismatch, length past the end of the file, zeros where a record
//! should be before the end of a sealed segment, or a wrong sequence number — is handled so:
//!
//! * In a **sealed** segment (any but the last) it is [`WalError::Corrupt`]: those were
//!   synced before the next segment was created.
//! * In the **last** segment, recovery scans the bytes after the damaged record for a valid
//!   record that starts a write (flag bit 0) with a sequence number at or above the expected
//!   one. Such a record means a later write began, which happens only after the damaged one
//!   was synced: [`WalError::Corrupt`]. Otherwise the damage is the torn tail of the last
//!   write, which never returned to its caller: recovery keeps the records before it, logs
//!   a warning, overwrites the tail with zeros (so stale pieces can never be mistaken for
//!   records later), syncs, and appends after the last valid record. Valid records of the
//!   same write after the damage (sectors that reached the disk out of order) do not start
//!   a write, so they are cleared with the rest.
//!
//! A CRC-valid record that makes no sense (wrong type or sequence number, unknown flags,
//! unparsable payload, an entry that breaks the log rules) is [`WalError::Corrupt`]
//! wherever it is.
//!
//! # Durability and speed
//!
//! `save` costs one `pwrite` and one `fdatasync` (checked with `strace -c`), plus an
//! encoding pass over a reused buffer. Measured with the ignored test
//! `tests::latency::save_latency_report` (release build, 3000 to 5000 saves per variant,
//! variants interleaved), on the development box (ext4 on a virtio disk with a write-back
//! cache, 2 cores shared with other builds), median / p99:
//!
//! | what                                                   | `Fallocate` | `ZeroFill` |
//! |--------------------------------------------------------|-------------|------------|
//! | `save`: 1 entry of 100 B + hard state (168 B written)   | 52 / 150-300 us | 61 / 115-270 us |
//! | bare `pwrite(168)` + `fdatasync`, preallocated file    | 51 / 140-210 us | 60 / 115-290 us |
//! | `save`: 1 entry of 4000 B + hard state (4064 B)         | 100 / 160-440 us | 72 / 125-335 us |
//! | bare `pwrite(4064)` + `fdatasync`                      | 99 / 170-410 us | 71 / 127-405 us |
//!
//! So a save costs what one synced append costs. With [`Preallocation::ZeroFill`] the
//! filesystem no longer converts unwritten extents, which makes a 4 KiB append ~30% cheaper
//! to sync, but small appends — what a one-client put writes — were 15-20% *slower* (also after
//! letting the zeros settle for 40 s), and zeroing costs 50 to 85 ms of writes per 64 MiB
//! segment (versus ~1 ms to `fallocate`). [`Preallocation::Fallocate`] is the default; a
//! node whose saves are mostly large batches may prefer `ZeroFill`. When other builds load
//! the shared disk, every variant's p90 rises to ~4 ms: the device flush dominates.
//! [`Wal::open`] reads every segment whole: 50 to 100 ms for a 64 MiB live segment.

mod error;
mod record;
mod replay;
mod segment;
mod wal;

#[cfg(test)]
mod tests;

pub use error::WalError;
pub use segment::Preallocation;
pub use wal::{Recovered, Wal, WalOptions, FAULT_SYNC_DELAY_MS};
