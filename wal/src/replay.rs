//! Recovery: reading segments back, telling a torn tail from corruption, and rebuilding the
//! log with the same rules `save` enforces.

use std::path::Path;

use protobuf::Message;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

use crate::error::WalError;
use crate::record::{self, Decoded, RecordType, SegmentHeader, ALIGN, FLAG_BATCH_START};
use crate::segment::SegmentName;
use crate::Recovered;

/// What the records written so far say, apart from the entries themselves. The writer keeps
/// one and replay rebuilds one, and both check new records against it with the same rules,
/// so `save` refuses exactly what recovery could not make sense of.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogState {
    /// Index of the last entry written, or the snapshot marker's index if that is higher.
    pub last_index: u64,
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMetadata>,
}

impl LogState {
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// Entries of one save must be consecutive, start no later than `last_index + 1`, and
    /// lie above the snapshot marker.
    pub(crate) fn check_entries(&self, entries: &[Entry]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let bad = |index| WalError::BadEntryIndex {
            index,
            last_index: self.last_index,
            snapshot_index: self.snapshot_index(),
        };
        if first.index <= self.snapshot_index() || first.index > self.last_index + 1 {
            return Err(bad(first.index));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(bad(pair[1].index));
            }
        }
        Ok(())
    }

    /// A marker older than the saved one would, replayed, bring back entries that were
    /// dropped; `save_snapshot` skips such markers and replay rejects them.
    pub(crate) fn is_stale_snapshot(&self, meta: &SnapshotMetadata) -> bool {
        meta.index < self.snapshot_index()
    }

    /// Applies entries that passed `check_entries`.
    pub(crate) fn apply_entries(&mut self, entries: &[Entry]) {
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
    }

    pub(crate) fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.last_index = self.last_index.max(meta.index);
        self.snapshot = Some(meta.clone());
    }
}

/// The log rebuilt from records, oldest segment first.
#[derive(Default)]
pub(crate) struct Replay {
    pub state: LogState,
    pub metadata: Vec<u8>,
    /// Consecutive entries above the snapshot marker; conflicts already resolved.
    log: Vec<Entry>,
    /// Sequence number the next record must carry; `None` before the first segment.
    pub next_seq: Option<u64>,
    /// Entries at or below this index are kept without their payload (see [`crate::Wal::open_hollow`]).
    pub hollow_upto: u64,
}

/// What reading one segment found.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    /// Highest entry index written in this segment (0 if none).
    pub max_entry_index: u64,
    /// Offset just past the segment header.
    pub header_end: u64,
    /// Offset just past the last valid record: where the next record goes.
    pub end: u64,
    /// A torn write occupies `[end, torn_end)`; the caller zeroes it. Equal to `end` if clean.
    pub torn_end: u64,
}

impl Replay {
    fn entry(&mut self, mut entry: Entry) -> Result<(), WalError> {
        self.state.check_entries(std::slice::from_ref(&entry))?;
        if entry.index <= self.hollow_upto {
            entry.data = Default::default();
            entry.context = Default::default();
        }
        match self.log.first().map(|e| e.index) {
            Some(first) if entry.index >= first => {
                self.log.truncate((entry.index - first) as usize);
            }
            // Either the log is empty, or this rewrites entries from before the ones we hold
            // (possible only in the oldest segment); what preceded it is gone either way.
            _ => self.log.clear(),
        }
        self.state.apply_entries(std::slice::from_ref(&entry));
        self.log.push(entry);
        Ok(())
    }

    fn snapshot(&mut self, meta: SnapshotMetadata) -> Result<(), String> {
        if self.state.is_stale_snapshot(&meta) {
            return Err(format!(
                "snapshot marker at {} is older than the one at {}",
                meta.index,
                self.state.snapshot_index()
            ));
        }
        let keep_from = self.log.partition_point(|e| e.index <= meta.index);
        self.log.drain(..keep_from);
        self.state.apply_snapshot(&meta);
        Ok(())
    }

    fn header(&mut self, header: SegmentHeader, seq: u64) -> Result<(), String> {
        match self.next_seq {
            None => {
                // The oldest segment: its header is the state before everything in it.
                self.metadata = header.metadata;
                self.state = LogState {
                    last_index: header.last_index,
                    hard_state: header.hard_state,
                    snapshot: header.snapshot,
                };
            }
            Some(expected) => {
                if seq != expected {
                    return Err(format!(
                        "segment starts at record {seq}, previous segment ended before record \
                         {expected}"
                    ));
                }
                if header.metadata != self.metadata {
                    return Err("metadata differs from the previous segment's".into());
                }
                if header.last_index != self.state.last_index
                    || header.hard_state != self.state.hard_state
                    || header.snapshot != self.state.snapshot
                {
                    return Err(format!(
                        "header state (last index {}) disagrees with the records before it \
                         (last index {})",
                        header.last_index, self.state.last_index
                    ));
                }
            }
        }
        self.next_seq = Some(seq + 1);
        Ok(())
    }

    /// Reads one segment's records into the replay. `is_last` selects the torn-tail rules.
    pub(crate) fn scan_segment(
        &mut self,
        path: &Path,
        name: SegmentName,
        data: &[u8],
        is_last: bool,
    ) -> Result<ScannedSegment, WalError> {
        let corrupt =
            |offset: usize, reason: String| WalError::corrupt(path, offset as u64, reason);

        let Decoded::Record(head) = record::decode_at(data, 0) else {
            return Err(corrupt(0, "segment header is missing or damaged".into()));
        };
        if head.rtype != RecordType::SegmentHeader as u8
            || head.flags != FLAG_BATCH_START
            || head.reserved != [0; 6]
        {
            return Err(corrupt(0, "first record is not a segment header".into()));
        }
        let header = SegmentHeader::decode(head.payload).map_err(|e| corrupt(0, e))?;
        if header.segment_seq != name.seq
            || header.last_index.checked_add(1) != Some(name.first_index)
        {
            return Err(corrupt(
                0,
                format!(
                    "header (segment {}, last index {}) does not match the file name",
                    header.segment_seq, header.last_index
                ),
            ));
        }
        self.header(header, head.seq).map_err(|e| corrupt(0, e))?;

        let mut max_entry_index = 0;
        let mut off = head.next;
        loop {
            let expected = self.next_seq.expect("set by header");
            let rec = match record::decode_at(data, off) {
                Decoded::Record(rec) => rec,
                Decoded::End => {
                    return Ok(ScannedSegment {
                        max_entry_index,
                        header_end: head.next as u64,
                        end: off as u64,
                        torn_end: off as u64,
                    });
                }
                damage @ (Decoded::Zero | Decoded::Truncated | Decoded::BadCrc) => {
                    let what = match damage {
                        Decoded::Zero => "zeros where a record should be",
                        Decoded::Truncated => "record runs past the end of the file",
                        _ => "CRC mismatch",
                    };
                    if !is_last {
                        // Sealed segments are synced and truncated to their last record
                        // before the next one is created: nothing in them can be torn.
                        return Err(corrupt(off, format!("{what} in a sealed segment")));
                    }
                    let torn_end = torn_tail_end(data, off, expected).map_err(|later| {
                        corrupt(
                            off,
                            format!("{what}, followed by a later write at offset {later}"),
                        )
                    })?;
                    return Ok(ScannedSegment {
                        max_entry_index,
                        header_end: head.next as u64,
                        end: off as u64,
                        torn_end: torn_end as u64,
                    });
                }
            };
            if rec.seq != expected {
                return Err(corrupt(
                    off,
                    format!("record sequence number {}, expected {expected}", rec.seq),
                ));
            }
            if rec.reserved != [0; 6] || rec.flags & !FLAG_BATCH_START != 0 {
                return Err(corrupt(off, "unknown header flags".into()));
            }
            let parse_err =
                |what: &str, e: protobuf::ProtobufError| corrupt(off, format!("{what}: {e}"));
            match RecordType::from_u8(rec.rtype) {
                Some(RecordType::Entry) => {
                    let entry =
                        Entry::parse_from_bytes(rec.payload).map_err(|e| parse_err("entry", e))?;
                    max_entry_index = max_entry_index.max(entry.index);
                    self.entry(entry).map_err(|e| corrupt(off, e.to_string()))?;
                }
                Some(RecordType::HardState) => {
                    self.state.hard_state = HardState::parse_from_bytes(rec.payload)
                        .map_err(|e| parse_err("hard state", e))?;
                }
                Some(RecordType::Snapshot) => {
                    let meta = SnapshotMetadata::parse_from_bytes(rec.payload)
                        .map_err(|e| parse_err("snapshot marker", e))?;
                    self.snapshot(meta)
                        .map_err(|e| corrupt(off, e.to_string()))?;
                }
                Some(RecordType::SegmentHeader) => {
                    return Err(corrupt(off, "segment header inside a segment".into()));
                }
                None => {
                    return Err(corrupt(off, format!("unknown record type {}", rec.rtype)));
                }
            }
            self.next_seq = Some(expected + 1);
            off = rec.next;
        }
    }

    /// The recovered state; fails if entries between the snapshot marker and the last index
    /// are in no segment.
    pub(crate) fn finish(self) -> Result<Recovered, WalError> {
        let snapshot_index = self.state.snapshot_index();
        if self.state.last_index > snapshot_index {
            let first = self
                .log
                .first()
                .map_or(self.state.last_index + 1, |e| e.index);
            if first != snapshot_index + 1 {
                return Err(WalError::MissingEntries {
                    from: snapshot_index + 1,
                    to: first - 1,
                });
            }
        }
        debug_assert!(self
            .log
            .last()
            .is_none_or(|e| e.index == self.state.last_index));
        Ok(Recovered {
            metadata: self.metadata,
            hard_state: self.state.hard_state,
            snapshot: self.state.snapshot,
            entries: self.log,
        })
    }
}

/// Called at the first damaged record of the last segment, at `off`. If a later write
/// (a record that starts a write, with a sequence number not below `expected_seq`) survives
/// after it, the damaged record was synced before that write began, so this is corruption:
/// returns `Err(offset of the later write)`. Otherwise the damage is the torn tail of the
/// last write, and this returns the end of the non-zero bytes to clear.
fn torn_tail_end(data: &[u8], off: usize, expected_seq: u64) -> Result<usize, usize> {
    let end = off + record::nonzero_end(&data[off..]);
    let mut at = off;
    while at < end {
        if record::is_later_batch_start(data, at, expected_seq) {
            return Err(at);
        }
        at += ALIGN;
    }
    Ok(end)
}
