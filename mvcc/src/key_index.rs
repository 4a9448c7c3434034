//! The history of one key, as the in-memory index keeps it.
//!
//! A key lives in generations: a generation starts with the put that creates the key and ends
//! with the delete (tombstone) that removes it; the last generation may still be alive. Each put
//! keeps its revision and lease, so a keys-only range, a count, a txn compare on anything but
//! the value, and the lease bookkeeping all work without touching the backend. Versions are not
//! stored per put: the generation keeps the version of its newest put and a put's version is
//! its distance from there, which stays right after compaction drops older puts.
//!
//! Invariants: generations are in revision order; every generation has at least one put; every
//! generation but the last has a tombstone, newer than its puts and older than the next
//! generation's first put.

use crate::revision::Revision;

/// What a read needs to know about a key at some revision, short of its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyMeta {
    /// The put visible at the read revision (`mod_revision` is its `main`).
    pub rev: Revision,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    /// Length of the value stored at `rev`, so a range can size its answer before reading it.
    pub value_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PutEntry {
    rev: Revision,
    lease: i64,
    value_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    /// `create_revision` of the key in this generation.
    created: i64,
    /// Version of the newest entry of `puts`.
    version: i64,
    puts: Vec<PutEntry>,
    tombstone: Option<Revision>,
}

impl Generation {
    /// Index of the newest put at or before `at`.
    fn newest_at(&self, at: i64) -> Option<usize> {
        let last = self.puts.len() - 1;
        if self.puts[last].rev.main <= at {
            return Some(last);
        }
        self.puts
            .partition_point(|p| p.rev.main <= at)
            .checked_sub(1)
    }

    fn meta(&self, i: usize) -> KeyMeta {
        let p = self.puts[i];
        KeyMeta {
            rev: p.rev,
            create: self.created,
            version: self.version - (self.puts.len() - 1 - i) as i64,
            lease: p.lease,
            value_len: p.value_len,
        }
    }

    fn newest(&self) -> Revision {
        self.tombstone.unwrap_or(self.puts[self.puts.len() - 1].rev)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    hist: Hist,
    /// Main revision of the newest put while the key is alive, `i64::MAX` while it is deleted:
    /// counting keys at recent revisions needs nothing else (no pointer chasing).
    alive_since: i64,
}

/// A key's generations. Most keys, once written, have one live generation of one put: that
/// history takes 48 bytes on the heap (`One`) where a list of generations takes 96 in two
/// allocations; the index holds a million of them at 1M keys (measured: peak RSS while loading
/// 1M keys). Any other history is a list (`Many`). Both variants are boxed so that the entry in
/// the index's B-tree nodes, which sequential keys leave about half full, stays small.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hist {
    Empty,
    One(Box<OnePut>),
    // boxed on purpose: a bare Vec would make every entry 16 bytes larger
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Generation>>),
}

/// One live generation holding one put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OnePut {
    put: PutEntry,
    created: i64,
    version: i64,
}

impl OnePut {
    fn meta(&self) -> KeyMeta {
        KeyMeta {
            rev: self.put.rev,
            create: self.created,
            version: self.version,
            lease: self.put.lease,
            value_len: self.put.value_len,
        }
    }

    fn into_generation(self, tombstone: Option<Revision>) -> Generation {
        Generation {
            created: self.created,
            version: self.version,
            puts: vec![self.put],
            tombstone,
        }
    }
}

impl Default for KeyIndex {
    fn default() -> KeyIndex {
        KeyIndex {
            hist: Hist::Empty,
            alive_since: i64::MAX,
        }
    }
}

impl KeyIndex {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.hist == Hist::Empty
    }

    /// Whether the key existed at revision `at`.
    pub(crate) fn alive_at(&self, at: i64) -> bool {
        (self.alive_since != i64::MAX && at >= self.alive_since) || self.get(at).is_some()
    }

    /// Brings `alive_since` up to date and stores a list that has come down to one live put
    /// (or to nothing) in the short form.
    fn settle(&mut self) {
        if let Hist::Many(gens) = &self.hist {
            match gens.as_slice() {
                [] => self.hist = Hist::Empty,
                [g] if g.tombstone.is_none() && g.puts.len() == 1 => {
                    self.hist = Hist::One(Box::new(OnePut {
                        put: g.puts[0],
                        created: g.created,
                        version: g.version,
                    }));
                }
                _ => {}
            }
        }
        self.alive_since = match &self.hist {
            Hist::Empty => i64::MAX,
            Hist::One(one) => one.put.rev.main,
            Hist::Many(gens) => match gens.last() {
                Some(g) if g.tombstone.is_none() => g.puts[g.puts.len() - 1].rev.main,
                _ => i64::MAX,
            },
        };
    }

    /// The key as of revision `at`, or `None` when it did not exist then.
    pub(crate) fn get(&self, at: i64) -> Option<KeyMeta> {
        let gens = match &self.hist {
            Hist::Empty => return None,
            Hist::One(one) => return (one.put.rev.main <= at).then(|| one.meta()),
            Hist::Many(gens) => gens,
        };
        if self.alive_since != i64::MAX && at >= self.alive_since {
            let g = &gens[gens.len() - 1];
            return Some(g.meta(g.puts.len() - 1));
        }
        for g in gens.iter().rev() {
            if g.puts[0].rev.main > at {
                continue;
            }
            if g.tombstone.is_some_and(|t| t.main <= at) {
                return None;
            }
            return g.newest_at(at).map(|i| g.meta(i));
        }
        None
    }

    /// The newest revision (put or tombstone) this key has.
    pub(crate) fn newest(&self) -> Option<Revision> {
        match &self.hist {
            Hist::Empty => None,
            Hist::One(one) => Some(one.put.rev),
            Hist::Many(gens) => gens.last().map(Generation::newest),
        }
    }

    /// Records a put at `rev`, which must be newer than anything recorded.
    pub(crate) fn put(&mut self, rev: Revision, lease: i64, value_len: u32) {
        debug_assert!(
            self.newest().is_none_or(|n| n < rev),
            "put at {rev:?} not after {:?}",
            self.newest()
        );
        let put = PutEntry {
            rev,
            lease,
            value_len,
        };
        self.push_put(put, rev.main, None);
    }

    /// Records a put read back from the backend, trusting the row's create revision and version
    /// (its earlier puts may have been compacted away).
    pub(crate) fn restore_put(
        &mut self,
        rev: Revision,
        lease: i64,
        value_len: u32,
        created: i64,
        version: i64,
    ) {
        let put = PutEntry {
            rev,
            lease,
            value_len,
        };
        self.push_put(put, created, Some(version));
    }

    /// Appends `put` to the live generation (at `version`, else one more), or starts a
    /// generation with it (created at `created`, at `version`, else 1).
    fn push_put(&mut self, put: PutEntry, created: i64, version: Option<i64>) {
        self.alive_since = put.rev.main;
        let first = |version: Option<i64>| OnePut {
            put,
            created,
            version: version.unwrap_or(1),
        };
        match &mut self.hist {
            Hist::Empty => self.hist = Hist::One(Box::new(first(version))),
            Hist::One(one) => {
                let mut g = one.into_generation(None);
                g.puts.push(put);
                g.version = version.unwrap_or(g.version + 1);
                self.hist = Hist::Many(Box::new(vec![g]));
            }
            Hist::Many(gens) => match gens.last_mut() {
                Some(g) if g.tombstone.is_none() => {
                    g.puts.push(put);
                    g.version = version.unwrap_or(g.version + 1);
                }
                _ => gens.push(first(version).into_generation(None)),
            },
        }
    }

    /// Ends the current generation at `rev`. Returns false, changing nothing, when the key is
    /// not alive.
    pub(crate) fn tombstone(&mut self, rev: Revision) -> bool {
        match &mut self.hist {
            Hist::Empty => return false,
            Hist::One(one) => {
                debug_assert!(one.put.rev < rev);
                self.hist = Hist::Many(Box::new(vec![one.into_generation(Some(rev))]));
            }
            Hist::Many(gens) => match gens.last_mut() {
                Some(g) if g.tombstone.is_none() => {
                    debug_assert!(g.newest() < rev);
                    g.tombstone = Some(rev);
                }
                _ => return false,
            },
        }
        self.alive_since = i64::MAX;
        true
    }

    /// Forgets every revision whose main revision is above `main` (undoing an uncommitted
    /// batch). Returns true when nothing is left.
    pub(crate) fn truncate_after(&mut self, main: i64) -> bool {
        match &mut self.hist {
            Hist::Empty => {}
            Hist::One(one) => {
                if one.put.rev.main > main {
                    self.hist = Hist::Empty;
                }
            }
            Hist::Many(gens) => {
                while let Some(g) = gens.last_mut() {
                    match g.tombstone {
                        Some(t) if t.main <= main => break,
                        Some(_) => g.tombstone = None,
                        None => {}
                    }
                    let before = g.puts.len();
                    while g.puts.last().is_some_and(|p| p.rev.main > main) {
                        g.puts.pop();
                    }
                    g.version -= (before - g.puts.len()) as i64;
                    if !g.puts.is_empty() {
                        break;
                    }
                    gens.pop();
                }
            }
        }
        self.settle();
        self.hist == Hist::Empty
    }

    /// The first generation of `gens` that a compaction at `at` keeps: the first one not
    /// deleted at or before `at`.
    fn first_kept_gen(gens: &[Generation], at: i64) -> Option<usize> {
        gens.iter()
            .position(|g| g.tombstone.is_none_or(|t| t.main > at))
    }

    /// The revision of this key that a compaction at `at` keeps in the backend: the newest put
    /// at or before `at`, unless the key was deleted after it (and by `at`).
    pub(crate) fn keep(&self, at: i64) -> Option<Revision> {
        match &self.hist {
            Hist::Empty => None,
            Hist::One(one) => (one.put.rev.main <= at).then_some(one.put.rev),
            Hist::Many(gens) => {
                let g = &gens[Self::first_kept_gen(gens, at)?];
                g.newest_at(at).map(|i| g.puts[i].rev)
            }
        }
    }

    /// Drops what a compaction at `at` makes unreachable. Returns true when nothing is left.
    pub(crate) fn compact(&mut self, at: i64) -> bool {
        // A single live put is what any compaction keeps.
        let Hist::Many(gens) = &mut self.hist else {
            return self.hist == Hist::Empty;
        };
        match Self::first_kept_gen(gens, at) {
            None => gens.clear(),
            Some(gi) => {
                gens.drain(..gi);
                let g = &mut gens[0];
                if let Some(i) = g.newest_at(at) {
                    g.puts.drain(..i);
                }
            }
        }
        self.settle();
        self.hist == Hist::Empty
    }

    /// Revisions of every put and tombstone, oldest first (tests and debugging).
    #[cfg(test)]
    pub(crate) fn revisions(&self) -> Vec<(Revision, bool)> {
        let gens = match &self.hist {
            Hist::Empty => return Vec::new(),
            Hist::One(one) => return vec![(one.put.rev, false)],
            Hist::Many(gens) => gens,
        };
        let mut out = Vec::new();
        for g in gens.iter() {
            out.extend(g.puts.iter().map(|p| (p.rev, false)));
            if let Some(t) = g.tombstone {
                out.push((t, true));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put@2 put@4 del@6 put@8 put@10 del@12 put@14
    fn history() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2), 0, 0);
        ki.put(r(4), 7, 0);
        assert!(ki.tombstone(r(6)));
        ki.put(r(8), 0, 0);
        ki.put(r(10), 0, 0);
        assert!(ki.tombstone(r(12)));
        ki.put(r(14), 5, 0);
        ki
    }

    fn assert_alive_matches_get(ki: &KeyIndex) {
        for at in 0..20 {
            assert_eq!(
                ki.alive_at(at),
                ki.get(at).is_some(),
                "alive at {at}: {ki:?}"
            );
        }
    }

    #[test]
    fn get_follows_generations() {
        let ki = history();
        assert_alive_matches_get(&ki);
        assert_eq!(ki.get(1), None);
        let m = ki.get(2).unwrap();
        assert_eq!((m.rev, m.create, m.version, m.lease), (r(2), 2, 1, 0));
        let m = ki.get(5).unwrap();
        assert_eq!((m.rev, m.create, m.version, m.lease), (r(4), 2, 2, 7));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(7), None);
        let m = ki.get(9).unwrap();
        assert_eq!((m.rev, m.create, m.version), (r(8), 8, 1));
        let m = ki.get(11).unwrap();
        assert_eq!((m.rev, m.create, m.version), (r(10), 8, 2));
        assert_eq!(ki.get(13), None);
        let m = ki.get(100).unwrap();
        assert_eq!((m.rev, m.create, m.version, m.lease), (r(14), 14, 1, 5));
    }

    #[test]
    fn most_keys_take_the_short_form_and_come_back_to_it() {
        // the sizes the memory measurements rest on
        assert_eq!(std::mem::size_of::<KeyIndex>(), 24);
        assert_eq!(std::mem::size_of::<OnePut>(), 48);
        let mut ki = KeyIndex::default();
        ki.put(r(3), 9, 100);
        assert!(matches!(ki.hist, Hist::One(_)));
        assert_eq!(ki.get(2), None);
        let m = ki.get(3).unwrap();
        assert_eq!(
            (m.rev, m.create, m.version, m.lease, m.value_len),
            (r(3), 3, 1, 9, 100)
        );
        assert_eq!(ki.keep(2), None);
        assert_eq!(ki.keep(3), Some(r(3)));
        // a second put makes a list; compacting past the first puts it back
        ki.put(r(5), 0, 7);
        assert!(matches!(ki.hist, Hist::Many(_)));
        assert!(!ki.compact(6));
        assert!(matches!(ki.hist, Hist::One(_)));
        let m = ki.get(6).unwrap();
        assert_eq!((m.rev, m.create, m.version, m.value_len), (r(5), 3, 2, 7));
        assert_eq!(ki.get(4), None); // compacted away
                                     // so does undoing the second put
        let mut ki = KeyIndex::default();
        ki.put(r(3), 0, 0);
        ki.put(r(5), 0, 0);
        assert!(!ki.truncate_after(4));
        assert!(matches!(ki.hist, Hist::One(_)));
        assert_eq!(ki.get(10).map(|m| (m.rev, m.version)), Some((r(3), 1)));
        assert!(ki.truncate_after(2));
        assert!(ki.is_empty());
        // a delete keeps the list form, and a restored put trusts the row
        let mut ki = KeyIndex::default();
        ki.restore_put(r(8), 0, 1, 4, 3);
        assert_eq!(ki.get(8).map(|m| (m.create, m.version)), Some((4, 3)));
        assert!(ki.tombstone(r(9)));
        assert!(!ki.alive_at(9));
        assert!(ki.alive_at(8));
        assert!(ki.compact(9));
        assert_alive_matches_get(&ki);
    }

    #[test]
    fn tombstone_needs_a_live_key() {
        let mut ki = KeyIndex::default();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(1), 0, 0);
        assert!(ki.tombstone(r(2)));
        assert!(!ki.tombstone(r(3)));
    }

    #[test]
    fn keep_and_compact_agree_with_etcd() {
        // (compact at, kept revision, revisions left)
        type Case = (i64, Option<i64>, &'static [(i64, bool)]);
        let cases: &[Case] = &[
            (
                1,
                None,
                &[
                    (2, false),
                    (4, false),
                    (6, true),
                    (8, false),
                    (10, false),
                    (12, true),
                    (14, false),
                ],
            ),
            (
                2,
                Some(2),
                &[
                    (2, false),
                    (4, false),
                    (6, true),
                    (8, false),
                    (10, false),
                    (12, true),
                    (14, false),
                ],
            ),
            (
                5,
                Some(4),
                &[
                    (4, false),
                    (6, true),
                    (8, false),
                    (10, false),
                    (12, true),
                    (14, false),
                ],
            ),
            (6, None, &[(8, false), (10, false), (12, true), (14, false)]),
            (7, None, &[(8, false), (10, false), (12, true), (14, false)]),
            (11, Some(10), &[(10, false), (12, true), (14, false)]),
            (12, None, &[(14, false)]),
            (14, Some(14), &[(14, false)]),
            (20, Some(14), &[(14, false)]),
        ];
        for &(at, kept, left) in cases {
            let mut ki = history();
            assert_eq!(ki.keep(at), kept.map(r), "keep at {at}");
            assert!(!ki.compact(at));
            let got: Vec<(i64, bool)> =
                ki.revisions().iter().map(|(rv, t)| (rv.main, *t)).collect();
            assert_eq!(got, left, "compact at {at}");
            // reads at or after the compaction point are unchanged
            let full = history();
            for read in at..=16 {
                assert_eq!(
                    ki.get(read),
                    full.get(read),
                    "read at {read} after compact at {at}"
                );
            }
        }
    }

    #[test]
    fn compacting_a_deleted_key_empties_it() {
        let mut ki = KeyIndex::default();
        ki.put(r(2), 0, 0);
        ki.tombstone(r(3));
        assert_eq!(ki.keep(3), None);
        assert!(ki.compact(3));
        assert!(ki.is_empty());
    }

    #[test]
    fn truncate_undoes_newer_revisions() {
        let full = history();
        for after in 0..16 {
            let mut ki = history();
            let empty = ki.truncate_after(after);
            assert_alive_matches_get(&ki);
            assert_eq!(empty, after < 2);
            for read in 0..=after {
                assert_eq!(
                    ki.get(read),
                    full.get(read),
                    "read {read} after truncating to {after}"
                );
            }
            assert!(ki.newest().is_none_or(|n| n.main <= after));
            // it can be extended again
            if !empty {
                let alive = ki.get(after).is_some();
                if alive {
                    assert!(ki.tombstone(r(after + 1)));
                } else {
                    ki.put(r(after + 1), 0, 0);
                }
            }
        }
    }

    #[test]
    fn versions_survive_compaction_and_restore() {
        let mut ki = KeyIndex::default();
        for main in 1..=5 {
            ki.put(r(main), 0, 0);
        }
        ki.compact(4);
        assert_eq!(ki.get(5).unwrap().version, 5);
        assert_eq!(ki.get(4).unwrap().version, 4);
        let mut restored = KeyIndex::default();
        restored.restore_put(r(4), 0, 0, 1, 4);
        restored.restore_put(r(5), 0, 0, 1, 5);
        assert_eq!(restored.get(5), ki.get(5));
        assert_eq!(restored.get(4), ki.get(4));
    }
}
