//! Random sequences of saves, snapshot markers, releases, torn writes and reopens, checked
//! against an in-memory model of the log. Fixed seeds, bounded length.

use std::os::unix::fs::FileExt;

use protobuf::Message;

use super::*;
use crate::record::{append_record, put_message, RecordType, FLAG_BATCH_START, HEADER_LEN};
use crate::{Recovered, Wal};

/// What recovery must return, maintained by the rules the WAL documents.
#[derive(Default)]
struct Model {
    /// Entries above the snapshot marker, consecutive.
    log: Vec<Entry>,
    snapshot: Option<SnapshotMetadata>,
    hard_state: HardState,
    last_index: u64,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    fn save(&mut self, hs: Option<&HardState>, ents: &[Entry]) {
        if let Some(first) = ents.first() {
            self.log.retain(|e| e.index < first.index);
            self.log.extend_from_slice(ents);
            self.last_index = ents.last().unwrap().index;
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
    }

    fn save_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.log.retain(|e| e.index > meta.index);
        self.last_index = self.last_index.max(meta.index);
        self.snapshot = Some(meta.clone());
    }

    fn check(&self, rec: &Recovered, wal: &Wal, what: &str) {
        assert_eq!(rec.metadata, b"random", "{what}");
        assert_eq!(rec.snapshot, self.snapshot, "{what}: snapshot");
        assert_eq!(rec.hard_state, self.hard_state, "{what}: hard state");
        assert_eq!(
            rec.entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            self.log
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            "{what}: entry indexes and terms"
        );
        assert_eq!(rec.entries, self.log, "{what}: entries");
        assert_eq!(wal.last_index(), self.last_index, "{what}: last index");
    }
}

fn random_entries(rng: &mut Rng, first: u64, count: u64, term: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|index| {
            let mut e = entry(index, term);
            let len = rng.range(0, 150) as usize;
            e.data = rng.bytes(len).into();
            e
        })
        .collect()
}

/// Writes the first bytes of a save that "never completed" after the last record: a prefix
/// of a real record, cut before its payload ends.
fn tear(wal: &Wal, rng: &mut Rng, term: u64) {
    let mut buf = Vec::new();
    let e = random_entries(rng, wal.last_index() + 1, 1, term).remove(0);
    append_record(
        &mut buf,
        wal.next_seq,
        RecordType::Entry,
        FLAG_BATCH_START,
        |b| put_message(b, &e),
    )
    .unwrap();
    let payload_end = HEADER_LEN + e.compute_size() as usize;
    let cut = rng.range(1, payload_end as u64) as usize;
    wal.live
        .write_all_at(&buf[..cut], wal.write_offset)
        .unwrap();
}

/// How much of the interesting ground a run covered.
#[derive(Default, Debug)]
struct Coverage {
    reopens: usize,
    tears: usize,
    conflicts: usize,
    segments_removed: usize,
    max_segments: usize,
}

fn run(seed: u64, ops: usize, cov: &mut Coverage) {
    let mut rng = Rng::new(seed);
    let segment_size = [300, 1024, 4096][seed as usize % 3];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut wal = Wal::create(dir, b"random", opts(segment_size)).unwrap();
    let mut model = Model::default();
    let mut term = 1;

    for step in 0..ops {
        let what = format!("seed {seed} step {step}");
        let op = rng.range(0, 100);
        match op {
            // Append after the last index, with or without a hard state.
            0..=54 => {
                let count = rng.range(0, 5);
                let ents = random_entries(&mut rng, model.last_index + 1, count, term);
                let hs = rng
                    .chance(70)
                    .then(|| hard_state(term, rng.range(0, 4), model.last_index));
                wal.save(hs.as_ref(), &ents).unwrap();
                model.save(hs.as_ref(), &ents);
            }
            // A new leader overwrites part of the log.
            55..=66 if model.last_index > model.snapshot_index() => {
                term += 1;
                let first = rng.range(model.snapshot_index() + 1, model.last_index + 1);
                let count = rng.range(1, 5);
                let ents = random_entries(&mut rng, first, count, term);
                let hs = hard_state(term, rng.range(1, 4), model.snapshot_index());
                wal.save(Some(&hs), &ents).unwrap();
                model.save(Some(&hs), &ents);
                cov.conflicts += 1;
            }
            67..=72 => {
                let hs = hard_state(term, rng.range(0, 4), rng.range(0, model.last_index + 1));
                wal.save(Some(&hs), &[]).unwrap();
                model.save(Some(&hs), &[]);
            }
            // A local snapshot inside the log, or one from the leader ahead of it.
            73..=80 => {
                let index = if rng.chance(80) && model.last_index > model.snapshot_index() {
                    rng.range(model.snapshot_index() + 1, model.last_index + 1)
                } else {
                    model.last_index + rng.range(1, 5)
                };
                let meta = snapshot(index, term);
                wal.save_snapshot(&meta).unwrap();
                model.save_snapshot(&meta);
            }
            81..=85 => {
                cov.segments_removed += wal.release_to(rng.range(0, model.last_index + 3)).unwrap();
            }
            86..=89 => {
                let max = rng.range(1, 4) as usize;
                let before = wal.segment_count();
                let removed = wal.purge(max, rng.range(0, model.last_index + 3)).unwrap();
                assert_eq!(wal.segment_count(), before - removed, "{what}");
                assert!(removed == 0 || wal.segment_count() >= max, "{what}");
                cov.segments_removed += removed;
            }
            // Crash: maybe in the middle of a save that never returned.
            _ => {
                if rng.chance(50) {
                    tear(&wal, &mut rng, term);
                    cov.tears += 1;
                }
                cov.reopens += 1;
                drop(wal);
                let (reopened, rec) = Wal::open(dir, opts(segment_size))
                    .unwrap_or_else(|e| panic!("{what}: open: {e}"));
                model.check(&rec, &reopened, &what);
                wal = reopened;
            }
        }
        assert_eq!(wal.last_index(), model.last_index, "{what}");
        assert_eq!(segment_files(dir).len(), wal.segment_count(), "{what}");
        cov.max_segments = cov.max_segments.max(wal.segment_count());
    }
    drop(wal);
    let (wal, rec) = Wal::open(dir, opts(segment_size)).unwrap();
    model.check(&rec, &wal, &format!("seed {seed} at the end"));
}

#[test]
fn random_operations_match_the_model() {
    let mut cov = Coverage::default();
    for seed in 0..9 {
        run(seed, 250, &mut cov);
    }
    assert!(
        cov.reopens > 50
            && cov.tears > 20
            && cov.conflicts > 50
            && cov.segments_removed > 20
            && cov.max_segments > 5,
        "{cov:?}"
    );
}
