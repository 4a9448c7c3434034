//! Unit tests of the whole crate, grouped by behaviour. Every test works in its own temporary
//! directory and is bounded in time (fixed seeds, fixed counts).

mod basic;
mod latency;
mod random;
mod torn;

use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

use crate::record::{self, Decoded};
use crate::{Preallocation, WalOptions};

/// Small deterministic PRNG (splitmix64) so that tests need no extra dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_0fce_7c00_0000)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi);
        lo + self.next_u64() % (hi - lo)
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

pub(crate) fn entry(index: u64, term: u64) -> Entry {
    let data = format!("put key-{index} value-{index}-at-term-{term} {:.<60}", "");
    Entry {
        index,
        term,
        data: data.into_bytes().into(),
        ..Default::default()
    }
}

pub(crate) fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|i| entry(i, term)).collect()
}

pub(crate) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

pub(crate) fn snapshot(index: u64, term: u64) -> SnapshotMetadata {
    let conf_state = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    SnapshotMetadata {
        index,
        term,
        conf_state: Some(conf_state).into(),
        ..Default::default()
    }
}

pub(crate) fn opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        preallocation: Preallocation::Fallocate,
    }
}

/// Segment files in `dir`, oldest first.
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    crate::segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|n| n.path(dir))
        .collect()
}

/// A record as laid out in a file: where it starts, where its payload ends, its flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub start: usize,
    pub payload_end: usize,
    pub next: usize,
    pub batch_start: bool,
}

/// The valid records of an undamaged segment, header included.
pub(crate) fn layout(data: &[u8]) -> Vec<Layout> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Decoded::Record(r) = record::decode_at(data, off) {
        out.push(Layout {
            start: off,
            payload_end: off + record::HEADER_LEN + r.payload.len(),
            next: r.next,
            batch_start: r.flags & record::FLAG_BATCH_START != 0,
        });
        off = r.next;
    }
    out
}
