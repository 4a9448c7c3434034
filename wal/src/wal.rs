//! The writer: `Wal` owns the directory lock and the live segment.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

use crate::error::{IoContext, WalError};
use crate::record::{self, RecordType, SegmentHeader, FLAG_BATCH_START};
use crate::replay::{LogState, Replay};
use crate::segment::{self, Preallocation, SegmentName};

/// An fdatasync slower than this is logged, as etcd does.
const SLOW_SYNC: Duration = Duration::from_secs(1);

/// Tuning for a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started when the next write would take the live one past this many
    /// bytes. A single write larger than this gets a segment of its own, as large as needed.
    /// Default 64 MiB, as etcd.
    pub segment_size: u64,
    /// How segment space is reserved at creation. Default [`Preallocation::Fallocate`].
    pub preallocation: Preallocation,
}

/// Fault injection for tests of slow disks: while non-zero, every fdatasync of every WAL in
/// the process takes at least this many milliseconds. Zero in production.
pub static FAULT_SYNC_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 * 1024 * 1024,
            preallocation: Preallocation::default(),
        }
    }
}

/// What [`Wal::open`] read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// The opaque bytes given to [`Wal::create`] (member id, cluster id).
    pub metadata: Vec<u8>,
    /// The last hard state saved (default if none was).
    pub hard_state: HardState,
    /// The latest snapshot marker saved, if any.
    pub snapshot: Option<SnapshotMetadata>,
    /// Entries with index above the snapshot marker's, consecutive, conflicts resolved (a
    /// later save of index `i` replaced `i` and everything after it).
    pub entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct SegmentInfo {
    name: SegmentName,
    /// Highest entry index written into this segment; 0 if none.
    max_entry_index: u64,
}

/// A write-ahead log in one directory; see the crate docs for the format and guarantees.
///
/// One `Wal` per directory: it holds an exclusive `flock` on the directory while it lives.
/// Dropping it closes the files; everything `save` returned from is already durable.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// The directory, locked, and synced after every rename and removal.
    dir_file: File,
    metadata: Vec<u8>,
    state: LogState,
    /// Oldest first; the last one is the live segment.
    segments: Vec<SegmentInfo>,
    pub(crate) live: File,
    pub(crate) live_path: PathBuf,
    /// Where the next record goes in the live segment; always a multiple of 8.
    pub(crate) write_offset: u64,
    /// Offset where the live segment's header ends: nothing else written if equal.
    header_end: u64,
    /// Bytes reserved for the live segment (its file length).
    reserved: u64,
    pub(crate) next_seq: u64,
    /// Reused encoding buffer, so a save does not allocate once it has warmed up.
    buf: Vec<u8>,
    poisoned: bool,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("live", &self.live_path)
            .field("write_offset", &self.write_offset)
            .field("last_index", &self.state.last_index)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Whether `dir` holds any segment file.
    pub fn exists(dir: &Path) -> bool {
        segment::list(dir).is_ok_and(|names| !names.is_empty())
    }

    /// Creates a new WAL in `dir`, which may be missing or hold other files but no segment.
    /// `metadata` is stored in every segment header and returned by [`Wal::open`].
    /// Durable on return: the first segment, the directory and its parents are synced.
    pub fn create(dir: &Path, metadata: &[u8], opts: WalOptions) -> Result<Wal, WalError> {
        segment::create_dir_durable(dir)?;
        let dir_file = lock_dir(dir)?;
        if Wal::exists(dir) {
            return Err(WalError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        segment::remove_temporaries(dir)?;

        let state = LogState::default();
        let name = SegmentName {
            seq: 0,
            first_index: state.last_index + 1,
        };
        let first_seq = 1;
        let mut buf = Vec::new();
        encode_header(&mut buf, name, first_seq, metadata, &state)?;
        let live = segment::create(
            dir,
            &dir_file,
            name,
            &buf,
            opts.segment_size,
            opts.preallocation,
        )?;
        let reserved = live.metadata().at(&name.path(dir))?.len();
        tracing::info!(dir = %dir.display(), "created WAL");
        Ok(Wal {
            dir: dir.to_path_buf(),
            live_path: name.path(dir),
            opts,
            dir_file,
            metadata: metadata.to_vec(),
            state,
            segments: vec![SegmentInfo {
                name,
                max_entry_index: 0,
            }],
            live,
            write_offset: buf.len() as u64,
            header_end: buf.len() as u64,
            reserved,
            next_seq: first_seq + 1,
            buf,
            poisoned: false,
        })
    }

    /// Opens the WAL in `dir`: reads every segment, checks every CRC and the record sequence,
    /// clears a torn tail of the last segment (logging a warning) and returns the state.
    /// New saves go right after the last valid record.
    ///
    /// Damage that cannot be a torn final write — in a sealed segment, or followed by a later
    /// write — is [`WalError::Corrupt`]; nothing that was synced is dropped silently.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        Wal::open_hollow(dir, opts, 0)
    }

    /// [`Wal::open`], returning the entries at or below `hollow_upto` without their data and
    /// context (index, term and type intact). A restarting member has already applied those:
    /// it needs their terms for the log, not their payloads, and replaying a large log should
    /// not hold every payload in memory at once. Everything is read and checked all the same.
    pub fn open_hollow(
        dir: &Path,
        opts: WalOptions,
        hollow_upto: u64,
    ) -> Result<(Wal, Recovered), WalError> {
        if !dir.is_dir() {
            return Err(WalError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let dir_file = lock_dir(dir)?;
        if segment::remove_temporaries(dir)? {
            dir_file.sync_all().at(dir)?;
        }
        let names = segment::list(dir)?;
        if names.is_empty() {
            return Err(WalError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        for pair in names.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                return Err(WalError::corrupt(
                    &pair[1].path(dir),
                    0,
                    format!("segment {} is missing", pair[0].seq + 1),
                ));
            }
        }

        let mut replay = Replay::default();
        replay.hollow_upto = hollow_upto;
        let mut segments = Vec::with_capacity(names.len());
        let mut last_scan = None;
        for (i, &name) in names.iter().enumerate() {
            let path = name.path(dir);
            let data = fs::read(&path).at(&path)?;
            let is_last = i + 1 == names.len();
            let scan = replay.scan_segment(&path, name, &data, is_last)?;
            segments.push(SegmentInfo {
                name,
                max_entry_index: scan.max_entry_index,
            });
            if is_last {
                last_scan = Some(scan);
            }
        }
        let scan = last_scan.expect("at least one segment");
        let next_seq = replay.next_seq.expect("a segment was read");
        let state = replay.state.clone();
        let metadata = replay.metadata.clone();
        let recovered = replay.finish()?;

        let live_name = names[names.len() - 1];
        let live_path = live_name.path(dir);
        let live = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&live_path)
            .at(&live_path)?;
        if scan.torn_end > scan.end {
            tracing::warn!(
                file = %live_path.display(),
                offset = scan.end,
                bytes = scan.torn_end - scan.end,
                "WAL: clearing the torn tail of the last write"
            );
            segment::zero_range(&live, scan.end, scan.torn_end).at(&live_path)?;
            live.sync_data().at(&live_path)?;
        }
        // A segment sealed just before a crash (truncated, next one not yet created) is live
        // again and gets its space back.
        if live.metadata().at(&live_path)?.len() < opts.segment_size {
            segment::preallocate(&live, opts.segment_size, opts.preallocation).at(&live_path)?;
            live.sync_all().at(&live_path)?;
        }
        let reserved = live.metadata().at(&live_path)?.len();

        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            dir_file,
            metadata,
            state,
            segments,
            live,
            live_path,
            write_offset: scan.end,
            header_end: scan.header_end,
            reserved,
            next_seq,
            buf: Vec::new(),
            poisoned: false,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = wal.segments.len(),
            last_index = wal.state.last_index,
            entries = recovered.entries.len(),
            "opened WAL"
        );
        Ok((wal, recovered))
    }

    /// Appends `entries` and then `hard_state` (if given) in one write to the live segment,
    /// then fdatasyncs. Durable on return.
    ///
    /// An entry with index <= [`last_index`](Wal::last_index) replaces that index and all
    /// after it (a Raft log conflict), now and at recovery. Entries must be consecutive, the
    /// first at most `last_index + 1` and above the snapshot marker, else
    /// [`WalError::BadEntryIndex`] (nothing written).
    ///
    /// After an `Io` error the WAL is poisoned: further writes fail until it is reopened.
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        self.check_poisoned()?;
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.state.check_entries(entries)?;
        let result = self.write_batch(true, |buf, mut seq| {
            let mut flags = FLAG_BATCH_START;
            for entry in entries {
                record::append_record(buf, seq, RecordType::Entry, flags, |b| {
                    record::put_message(b, entry)
                })?;
                seq += 1;
                flags = 0;
            }
            if let Some(hs) = hard_state {
                record::append_record(buf, seq, RecordType::HardState, flags, |b| {
                    record::put_message(b, hs)
                })?;
                seq += 1;
            }
            Ok(seq)
        });
        self.poison_on_io_error(result)?;
        self.state.apply_entries(entries);
        if let Some(hs) = hard_state {
            self.state.hard_state = hs.clone();
        }
        if let Some(last) = entries.last() {
            let live = self.segments.last_mut().expect("live segment");
            live.max_entry_index = live.max_entry_index.max(last.index);
        }
        Ok(())
    }

    /// Records a hard state that differs from the saved one only in its commit index, without
    /// fdatasync (etcd's MustSync rule): the record reaches the disk with the next synced write
    /// (or the segment's seal), and a commit index lost to a crash is learnt again — from the
    /// leader, or by the store's applied index at restart. Saves one fsync per write on a
    /// leader, whose commit-only hard state follows every appended batch.
    ///
    /// Refused with [`WalError::UnsyncedHardState`] if term or vote changed (those must be
    /// durable before anything that depends on them is sent).
    pub fn save_commit_lazily(&mut self, hard_state: &HardState) -> Result<(), WalError> {
        self.check_poisoned()?;
        let saved = &self.state.hard_state;
        if hard_state.term != saved.term || hard_state.vote != saved.vote {
            return Err(WalError::UnsyncedHardState);
        }
        self.write_record(false, RecordType::HardState, hard_state)?;
        self.state.hard_state = hard_state.clone();
        Ok(())
    }

    /// Durably records a snapshot marker: the state machine holds everything up to
    /// `meta.index`. [`Wal::open`] then returns only entries above it, and
    /// [`Wal::release_to`] may remove segments holding only entries at or below it.
    /// Call it after the snapshot itself is durable, before saving entries after it.
    ///
    /// A marker older than one already saved says nothing new and is skipped (`Ok`, nothing
    /// written): recording it would bring back entries the newer marker dropped.
    pub fn save_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), WalError> {
        self.check_poisoned()?;
        if self.state.is_stale_snapshot(meta) {
            tracing::debug!(
                index = meta.index,
                saved = self.state.snapshot_index(),
                "skipping a snapshot marker older than the saved one"
            );
            return Ok(());
        }
        self.write_record(true, RecordType::Snapshot, meta)?;
        self.state.apply_snapshot(meta);
        Ok(())
    }

    /// Removes the oldest segment files while they hold only entries below `index` and below
    /// the snapshot marker's successor (`snapshot index + 1`). Never the live segment; what
    /// the removed segments said besides entries (metadata, hard state, snapshot marker) is
    /// repeated in the header of the segment after them. Returns how many were removed.
    pub fn release_to(&mut self, index: u64) -> Result<usize, WalError> {
        self.remove_oldest(index, usize::MAX)
    }

    /// Keeps at most `max_files` segment files by removing the oldest ones that
    /// [`release_to`](Wal::release_to)`(released_index)` would remove. `0` means no limit,
    /// as etcd's `--max-wals`. Returns how many were removed.
    pub fn purge(&mut self, max_files: usize, released_index: u64) -> Result<usize, WalError> {
        if max_files == 0 {
            return Ok(0);
        }
        let excess = self.segments.len().saturating_sub(max_files);
        self.remove_oldest(released_index, excess)
    }

    /// Index of the last entry saved, or of the snapshot marker if that is higher; 0 for a new
    /// WAL. After a conflicting save this is the index of its last entry.
    pub fn last_index(&self) -> u64 {
        self.state.last_index
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files, the live one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_io_error(&mut self, result: Result<(), WalError>) -> Result<(), WalError> {
        if let Err(WalError::Io { .. }) = &result {
            self.poisoned = true;
        }
        result
    }

    /// Encodes records with `encode(buf, first_seq) -> next_seq`, starts a new segment if they
    /// do not fit the live one, writes them with one `pwrite` and fdatasyncs.
    /// Writes one record holding `msg` as a batch of its own (synced if `sync`).
    fn write_record(
        &mut self,
        sync: bool,
        kind: RecordType,
        msg: &impl protobuf::Message,
    ) -> Result<(), WalError> {
        let result = self.write_batch(sync, |buf, seq| {
            record::append_record(buf, seq, kind, FLAG_BATCH_START, |b| {
                record::put_message(b, msg)
            })?;
            Ok(seq + 1)
        });
        self.poison_on_io_error(result)
    }

    fn write_batch(
        &mut self,
        sync: bool,
        encode: impl Fn(&mut Vec<u8>, u64) -> Result<u64, WalError>,
    ) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut next_seq = encode(&mut buf, self.next_seq)?;
        let len = buf.len() as u64;
        if self.write_offset + len > self.opts.segment_size && self.write_offset > self.header_end {
            self.buf = buf;
            self.cut(len)?;
            buf = std::mem::take(&mut self.buf);
            buf.clear();
            // The new segment's header took a sequence number.
            next_seq = encode(&mut buf, self.next_seq)?;
        }
        let result = self.append(&buf, sync);
        self.buf = buf;
        result?;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Writes `bytes` at the end of the live segment, then fdatasyncs unless `sync` is false
    /// (the bytes then become durable with the next sync, or when the segment is sealed).
    fn append(&mut self, bytes: &[u8], sync: bool) -> Result<(), WalError> {
        let end = self.write_offset + bytes.len() as u64;
        if end > self.reserved {
            // Only a write larger than a segment gets here; keep fdatasync free of size updates.
            segment::preallocate(&self.live, end, self.opts.preallocation).at(&self.live_path)?;
            self.reserved = end;
        }
        self.live
            .write_all_at(bytes, self.write_offset)
            .at(&self.live_path)?;
        if !sync {
            self.write_offset = end;
            return Ok(());
        }
        let start = Instant::now();
        self.live.sync_data().at(&self.live_path)?;
        let fault_ms = FAULT_SYNC_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed);
        if fault_ms > 0 {
            std::thread::sleep(Duration::from_millis(fault_ms).saturating_sub(start.elapsed()));
        }
        let took = start.elapsed();
        if took > SLOW_SYNC {
            tracing::warn!(file = %self.live_path.display(), ?took, "slow WAL fdatasync");
        }
        self.write_offset = end;
        Ok(())
    }

    /// Seals the live segment (truncated to its records and synced) and makes a new one whose
    /// header repeats the current state. `need` is the size of the write that did not fit.
    fn cut(&mut self, need: u64) -> Result<(), WalError> {
        self.live.set_len(self.write_offset).at(&self.live_path)?;
        self.live.sync_all().at(&self.live_path)?;

        let prev = self.segments.last().expect("live segment").name;
        let name = SegmentName {
            seq: prev.seq + 1,
            first_index: self.state.last_index + 1,
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        encode_header(&mut buf, name, self.next_seq, &self.metadata, &self.state)?;
        let header_len = buf.len() as u64;
        let reserve = self.opts.segment_size.max(header_len + need);
        let live = segment::create(
            &self.dir,
            &self.dir_file,
            name,
            &buf,
            reserve,
            self.opts.preallocation,
        );
        self.buf = buf;
        self.live = live?;
        self.live_path = name.path(&self.dir);
        self.reserved = reserve;
        self.write_offset = header_len;
        self.header_end = header_len;
        self.next_seq += 1;
        self.segments.push(SegmentInfo {
            name,
            max_entry_index: 0,
        });
        tracing::debug!(file = %self.live_path.display(), "started WAL segment");
        Ok(())
    }

    fn remove_oldest(&mut self, index: u64, max_count: usize) -> Result<usize, WalError> {
        self.check_poisoned()?;
        let limit = index.min(self.state.snapshot_index().saturating_add(1));
        let removable = self.segments[..self.segments.len() - 1]
            .iter()
            .take(max_count)
            .take_while(|s| s.max_entry_index < limit)
            .count();
        if removable == 0 {
            return Ok(0);
        }
        // Oldest first, so that a crash or error part-way leaves a consecutive run of segments.
        for _ in 0..removable {
            let path = self.segments[0].name.path(&self.dir);
            fs::remove_file(&path).at(&path)?;
            self.segments.remove(0);
        }
        self.dir_file.sync_all().at(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            removed = removable,
            first_kept = %self.segments[0].name.file_name(),
            "released WAL segments"
        );
        Ok(removable)
    }
}

/// Encodes the header record of segment `name`, numbered `seq`, describing `state`.
fn encode_header(
    buf: &mut Vec<u8>,
    name: SegmentName,
    seq: u64,
    metadata: &[u8],
    state: &LogState,
) -> Result<(), WalError> {
    let header = SegmentHeader {
        segment_seq: name.seq,
        last_index: state.last_index,
        metadata: metadata.to_vec(),
        hard_state: state.hard_state.clone(),
        snapshot: state.snapshot.clone(),
    };
    record::append_record(buf, seq, RecordType::SegmentHeader, FLAG_BATCH_START, |b| {
        header.encode(b)
    })
}

/// Opens `dir` and takes an exclusive, non-blocking `flock` on it.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let dir_file = File::open(dir).at(dir)?;
    match dir_file.try_lock() {
        Ok(()) => Ok(dir_file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e).at(dir),
    }
}
