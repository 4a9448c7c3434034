//! The in-memory key index: every key's history ([`KeyIndex`]) in key order.
//!
//! One `RwLock<Index>` is shared by the writer and all readers. The writer adds revisions in
//! place while a batch runs; they are newer than any revision a reader reads at, so readers
//! skip them without knowing they exist, and a dropped batch takes them out again
//! ([`Index::truncate_after`]). Compaction is the one change that alters what older reads see,
//! so it happens only after the batch holding it has committed, and it first raises
//! [`Index::compacted`]: a reader that finds `compacted` above its read revision starts over
//! (see `Store::range`).
//!
//! Long scans ([`Scan`]) take the read lock for [`CHUNK`] keys at a time, so a range over
//! millions of keys never holds the writer up for more than one chunk.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use bytes::Bytes;

use crate::key_index::{KeyIndex, KeyMeta};
use crate::revision::Revision;

/// Keys visited per read-lock hold.
pub(crate) const CHUNK: usize = 1024;

#[derive(Default)]
pub(crate) struct Index {
    pub(crate) map: BTreeMap<Bytes, KeyIndex>,
    /// Compaction applied to `map`: answers for reads at revisions below it are gone.
    pub(crate) compacted: i64,
}

/// A scan that found the index compacted past its read revision; the read must start over.
#[derive(Debug)]
pub(crate) struct Compacted;

/// The keys a request names, in etcd's terms: `range_end` empty is the single key `key`;
/// `range_end` `"\0"` is every key from `key` on; otherwise `[key, range_end)`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Span<'a> {
    Single(&'a [u8]),
    Range {
        start: &'a [u8],
        end: Option<&'a [u8]>,
    },
    Empty,
}

impl<'a> Span<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        if range_end.is_empty() {
            return Span::Single(key);
        }
        if range_end == b"\0" {
            return Span::Range {
                start: key,
                end: None,
            };
        }
        if range_end <= key {
            return Span::Empty;
        }
        Span::Range {
            start: key,
            end: Some(range_end),
        }
    }
}

impl Index {
    /// Every key alive at `at` in `span`, in key order.
    pub(crate) fn alive(&self, span: Span<'_>, at: i64) -> Vec<(Bytes, KeyMeta)> {
        let mut out = Vec::new();
        match span {
            Span::Empty => {}
            Span::Single(k) => {
                if let Some((key, ki)) = self.map.get_key_value(k) {
                    if let Some(m) = ki.get(at) {
                        out.push((key.clone(), m));
                    }
                }
            }
            Span::Range { start, end } => {
                let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                for (key, ki) in self.map.range::<[u8], _>((Bound::Included(start), upper)) {
                    if let Some(m) = ki.get(at) {
                        out.push((key.clone(), m));
                    }
                }
            }
        }
        out
    }

    /// The index entry for `key`, if the index has one.
    pub(crate) fn entry(&self, key: &[u8]) -> Option<(&Bytes, &KeyIndex)> {
        self.map.get_key_value(key)
    }

    /// Records a put. `key` should be a buffer of its own (not a slice of a larger request),
    /// since the index keeps it for as long as the key has history.
    pub(crate) fn put(&mut self, key: &Bytes, rev: Revision, lease: i64, value_len: u32) {
        if let Some(ki) = self.map.get_mut(key.as_ref()) {
            ki.put(rev, lease, value_len);
        } else {
            let mut ki = KeyIndex::default();
            ki.put(rev, lease, value_len);
            self.map.insert(key.clone(), ki);
        }
    }

    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.map.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Removes every revision above `main` (a batch that did not commit).
    pub(crate) fn truncate_after(&mut self, main: i64) {
        self.map
            .retain(|_, ki| ki.newest().is_none_or(|n| n.main <= main) || !ki.truncate_after(main));
    }

    /// The revisions a compaction at `at` keeps, sorted.
    pub(crate) fn keep(&self, at: i64) -> Vec<Revision> {
        let mut keep: Vec<Revision> = self.map.values().filter_map(|ki| ki.keep(at)).collect();
        keep.sort_unstable();
        keep
    }
}

/// Applies a committed compaction at `at` to the shared index, a chunk of keys per write-lock
/// hold. Readers below `at` are turned away first; readers at or above it get the same answers
/// from compacted and not-yet-compacted keys alike.
pub(crate) fn compact_shared(index: &RwLock<Index>, at: i64) {
    {
        let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
        ix.compacted = ix.compacted.max(at);
    }
    let mut resume: Option<Bytes> = None;
    loop {
        let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
        let lower = resume
            .as_ref()
            .map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_ref()));
        let mut emptied = Vec::new();
        let mut visited = 0;
        let mut last = None;
        for (k, ki) in ix.map.range_mut::<[u8], _>((lower, Bound::Unbounded)) {
            if ki.compact(at) {
                emptied.push(k.clone());
            }
            visited += 1;
            if visited == CHUNK * 16 {
                last = Some(k.clone());
                break;
            }
        }
        for k in emptied {
            ix.map.remove(&k);
        }
        match last {
            Some(k) => resume = Some(k),
            None => return,
        }
    }
}

/// How a chunk of a scan ended.
enum Walked {
    /// The keys ran out.
    Exhausted,
    /// The chunk filled up at this key; more may follow.
    Full(Bytes),
    /// The visitor stopped at this key.
    Stopped(Bytes),
}

/// Visits up to [`CHUNK`] keys of `iter`, every key (alive or not) with its history.
fn walk<'m>(
    iter: impl Iterator<Item = (&'m Bytes, &'m KeyIndex)>,
    f: &mut impl FnMut(&Bytes, &KeyIndex) -> Visit,
) -> Walked {
    let mut visited = 0;
    for (key, ki) in iter {
        if f(key, ki) == Visit::Stop {
            return Walked::Stopped(key.clone());
        }
        visited += 1;
        if visited == CHUNK {
            return Walked::Full(key.clone());
        }
    }
    Walked::Exhausted
}

/// A read of the shared index in chunks. Each call holds the read lock for at most [`CHUNK`]
/// keys, in key order (or reverse key order); nothing is held between calls.
pub(crate) struct Scan<'a> {
    index: &'a RwLock<Index>,
    span: Span<'a>,
    at: i64,
    reverse: bool,
    /// Whether to check that the index has not been compacted past `at` (readers); the writer
    /// never sees a compaction it did not make.
    guard: bool,
    resume: Option<Bytes>,
    done: bool,
}

/// What the visitor of a scan wants next.
#[derive(PartialEq, Eq)]
pub(crate) enum Visit {
    Continue,
    Stop,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(index: &'a RwLock<Index>, span: Span<'a>, at: i64, guard: bool) -> Scan<'a> {
        Scan {
            index,
            span,
            at,
            reverse: false,
            guard,
            resume: None,
            done: false,
        }
    }

    pub(crate) fn reverse(mut self, reverse: bool) -> Scan<'a> {
        self.reverse = reverse;
        self
    }

    /// Calls `f` for the keys of the next chunk that are alive at the read revision. Returns
    /// `Ok(true)` while more keys may follow. When `f` stops, the scan can go on after that
    /// key with [`Scan::count_rest`].
    pub(crate) fn next_chunk(
        &mut self,
        mut f: impl FnMut(&Bytes, &KeyMeta) -> Visit,
    ) -> Result<bool, Compacted> {
        let at = self.at;
        self.raw_chunk(&mut |k: &Bytes, ki: &KeyIndex| match ki.get(at) {
            Some(m) => f(k, &m),
            None => Visit::Continue,
        })
    }

    /// Counts the keys alive at the read revision from where the scan stands to its end,
    /// without working out anything else about them.
    pub(crate) fn count_rest(&mut self) -> Result<i64, Compacted> {
        let at = self.at;
        let mut n = 0i64;
        let mut count = |_: &Bytes, ki: &KeyIndex| {
            if ki.alive_at(at) {
                n += 1;
            }
            Visit::Continue
        };
        while self.raw_chunk(&mut count)? {}
        Ok(n)
    }

    fn raw_chunk(
        &mut self,
        f: &mut impl FnMut(&Bytes, &KeyIndex) -> Visit,
    ) -> Result<bool, Compacted> {
        if self.done {
            return Ok(false);
        }
        let ix = self.index.read().unwrap_or_else(|e| e.into_inner());
        if self.guard && ix.compacted > self.at {
            return Err(Compacted);
        }
        let (start, end) = match self.span {
            Span::Empty => {
                self.done = true;
                return Ok(false);
            }
            Span::Single(k) => {
                self.done = true;
                if let Some((key, ki)) = ix.map.get_key_value(k) {
                    f(key, ki);
                }
                return Ok(false);
            }
            Span::Range { start, end } => (start, end),
        };
        let mut lower = Bound::Included(start);
        let mut upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        if let Some(r) = &self.resume {
            if self.reverse {
                upper = Bound::Excluded(r.as_ref());
            } else {
                lower = Bound::Excluded(r.as_ref());
            }
        }
        if let (Bound::Included(lo) | Bound::Excluded(lo), Bound::Excluded(hi)) = (lower, upper) {
            if lo >= hi {
                self.done = true;
                return Ok(false);
            }
        }
        let range = ix.map.range::<[u8], _>((lower, upper));
        let walked = if self.reverse {
            walk(range.rev(), f)
        } else {
            walk(range, f)
        };
        match walked {
            Walked::Full(last) => {
                self.resume = Some(last);
                Ok(true)
            }
            Walked::Stopped(last) => {
                self.resume = Some(last);
                Ok(false)
            }
            Walked::Exhausted => {
                self.done = true;
                Ok(false)
            }
        }
    }

    /// Runs the scan to the end (or until `f` stops), a chunk per lock hold.
    pub(crate) fn for_each(
        mut self,
        mut f: impl FnMut(&Bytes, &KeyMeta) -> Visit,
    ) -> Result<(), Compacted> {
        while self.next_chunk(&mut f)? {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(keys: &[&str]) -> RwLock<Index> {
        let mut ix = Index::default();
        for (i, k) in keys.iter().enumerate() {
            ix.put(
                &Bytes::copy_from_slice(k.as_bytes()),
                Revision::new(i as i64 + 2, 0),
                0,
                0,
            );
        }
        RwLock::new(ix)
    }

    fn collect(index: &RwLock<Index>, span: Span<'_>, at: i64, reverse: bool) -> Vec<String> {
        let mut out = Vec::new();
        Scan::new(index, span, at, true)
            .reverse(reverse)
            .for_each(|k, _| {
                out.push(String::from_utf8(k.to_vec()).unwrap());
                Visit::Continue
            })
            .unwrap();
        out
    }

    #[test]
    fn spans_follow_etcd_range_end_rules() {
        let ix = index_with(&["a", "b", "c", "d"]);
        assert_eq!(collect(&ix, Span::new(b"b", b""), 100, false), ["b"]);
        assert_eq!(collect(&ix, Span::new(b"b", b"d"), 100, false), ["b", "c"]);
        assert_eq!(
            collect(&ix, Span::new(b"b", b"\0"), 100, false),
            ["b", "c", "d"]
        );
        assert_eq!(
            collect(&ix, Span::new(b"\0", b"\0"), 100, false),
            ["a", "b", "c", "d"]
        );
        assert!(collect(&ix, Span::new(b"d", b"b"), 100, false).is_empty());
        assert!(collect(&ix, Span::new(b"b", b"b"), 100, false).is_empty());
        assert_eq!(collect(&ix, Span::new(b"a", b"\0"), 3, false), ["a", "b"]);
        assert_eq!(
            collect(&ix, Span::new(b"a", b"\0"), 100, true),
            ["d", "c", "b", "a"]
        );
    }

    #[test]
    fn chunked_scans_visit_every_key_once_in_both_directions() {
        let keys: Vec<String> = (0..CHUNK * 3 + 17).map(|i| format!("k{i:06}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let ix = index_with(&refs);
        let fwd = collect(&ix, Span::new(b"k", b"l"), i64::MAX, false);
        assert_eq!(fwd, keys);
        let mut rev = collect(&ix, Span::new(b"k", b"l"), i64::MAX, true);
        rev.reverse();
        assert_eq!(rev, keys);
        // exactly CHUNK keys: the second call finds nothing and ends the scan
        let ix = index_with(&refs[..CHUNK]);
        assert_eq!(
            collect(&ix, Span::new(b"\0", b"\0"), i64::MAX, false).len(),
            CHUNK
        );
    }

    #[test]
    fn a_stopped_scan_counts_the_rest() {
        let keys: Vec<String> = (0..CHUNK * 2 + 5).map(|i| format!("k{i:06}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let ix = index_with(&refs);
        {
            let mut g = ix.write().unwrap();
            g.tombstone(b"k000003", Revision::new(1 << 40, 0));
        }
        for reverse in [false, true] {
            let mut scan = Scan::new(&ix, Span::new(b"k", b"l"), i64::MAX, true).reverse(reverse);
            let mut seen = 0i64;
            assert!(!scan
                .next_chunk(|_, _| {
                    seen += 1;
                    if seen == 10 {
                        Visit::Stop
                    } else {
                        Visit::Continue
                    }
                })
                .unwrap());
            assert_eq!(seen + scan.count_rest().unwrap(), keys.len() as i64 - 1);
        }
        let mut scan = Scan::new(&ix, Span::new(b"k", b"l"), i64::MAX, true);
        assert_eq!(scan.count_rest().unwrap(), keys.len() as i64 - 1);
    }

    #[test]
    fn a_guarded_scan_below_the_compaction_stops() {
        let ix = index_with(&["a", "b"]);
        compact_shared(&ix, 3);
        let mut scan = Scan::new(&ix, Span::new(b"a", b"\0"), 2, true);
        assert!(scan.next_chunk(|_, _| Visit::Continue).is_err());
        let mut scan = Scan::new(&ix, Span::new(b"a", b"\0"), 2, false);
        assert!(scan.next_chunk(|_, _| Visit::Continue).is_ok());
    }

    #[test]
    fn truncate_removes_keys_created_after_the_point() {
        let ix = index_with(&["a", "b", "c"]);
        let mut g = ix.write().unwrap();
        g.tombstone(b"a", Revision::new(5, 0));
        g.truncate_after(3);
        assert_eq!(g.map.len(), 2);
        assert!(g.map[b"a".as_slice()].get(100).is_some());
    }
}
