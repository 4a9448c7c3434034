//! Which watchers want a key: the lookup the hub makes for every event it hands out.
//!
//! Single-key watchers (the common case) are found with one hash lookup. Range watchers are
//! grouped by their exact range, and the distinct ranges are kept sorted by start key, so a key
//! is only compared with the ranges that start at or before it. (etcd keeps an interval tree;
//! this is simpler and as fast while the number of distinct ranges stays in the thousands.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;

/// What one watcher watches: etcd's `[key, range_end)` after the watch server's rewriting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Just this key.
    Single(Bytes),
    /// `[start, end)`; `end: None` means every key from `start` on.
    Range { start: Bytes, end: Option<Bytes> },
}

impl KeyRange {
    /// The range of a create request as etcd's watch server reads it: an empty key is `"\0"`
    /// (the smallest key), an empty `range_end` one key, `"\0"` every key from `key` on.
    /// `None` for a range that holds no key (`range_end <= key`).
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Option<KeyRange> {
        let key = if key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            Bytes::copy_from_slice(key)
        };
        if range_end.is_empty() {
            return Some(KeyRange::Single(key));
        }
        if range_end == b"\0" {
            return Some(KeyRange::Range {
                start: key,
                end: None,
            });
        }
        if range_end <= &key[..] {
            return None;
        }
        Some(KeyRange::Range {
            start: key,
            end: Some(Bytes::copy_from_slice(range_end)),
        })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => &k[..] == key,
            KeyRange::Range { start, end } => {
                key >= &start[..] && end.as_ref().is_none_or(|e| key < &e[..])
            }
        }
    }
}

/// A set of watchers (by hub id) indexed by what they watch.
#[derive(Default)]
pub struct WatcherGroup {
    keys: HashMap<Bytes, HashSet<u64>>,
    /// start → (end → watchers); `end` `None` sorts first and means unbounded.
    ranges: BTreeMap<Bytes, BTreeMap<Option<Bytes>, HashSet<u64>>>,
    len: usize,
}

impl WatcherGroup {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn add(&mut self, id: u64, range: &KeyRange) {
        let fresh = match range {
            KeyRange::Single(k) => self.keys.entry(k.clone()).or_default().insert(id),
            KeyRange::Range { start, end } => self
                .ranges
                .entry(start.clone())
                .or_default()
                .entry(end.clone())
                .or_default()
                .insert(id),
        };
        if fresh {
            self.len += 1;
        }
    }

    /// Removes `id`; false if it was not in the group under `range`.
    pub fn remove(&mut self, id: u64, range: &KeyRange) -> bool {
        let removed = match range {
            KeyRange::Single(k) => match self.keys.get_mut(k) {
                Some(set) => {
                    let r = set.remove(&id);
                    if set.is_empty() {
                        self.keys.remove(k);
                    }
                    r
                }
                None => false,
            },
            KeyRange::Range { start, end } => match self.ranges.get_mut(start) {
                Some(ends) => {
                    let r = match ends.get_mut(end) {
                        Some(set) => {
                            let r = set.remove(&id);
                            if set.is_empty() {
                                ends.remove(end);
                            }
                            r
                        }
                        None => false,
                    };
                    if ends.is_empty() {
                        self.ranges.remove(start);
                    }
                    r
                }
                None => false,
            },
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` with every watcher whose range holds `key` (each watcher once: a watcher is
    /// in the group under one range).
    pub fn for_key(&self, key: &[u8], mut f: impl FnMut(u64)) {
        if let Some(set) = self.keys.get(key) {
            set.iter().for_each(|id| f(*id));
        }
        for (_, ends) in self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
        {
            for (end, set) in ends {
                if end.as_ref().is_none_or(|e| key < &e[..]) {
                    set.iter().for_each(|id| f(*id));
                }
            }
        }
    }

    /// Whether any watcher of the group wants `key`.
    pub fn wants(&self, key: &[u8]) -> bool {
        let mut any = false;
        self.for_key(key, |_| any = true);
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(k: &str, e: &str) -> KeyRange {
        KeyRange::from_request(k.as_bytes(), e.as_bytes()).unwrap()
    }

    fn found(g: &WatcherGroup, key: &str) -> Vec<u64> {
        let mut v = Vec::new();
        g.for_key(key.as_bytes(), |id| v.push(id));
        v.sort_unstable();
        v
    }

    #[test]
    fn request_ranges_follow_etcds_rewriting() {
        assert_eq!(range("a", ""), KeyRange::Single(Bytes::from_static(b"a")));
        assert_eq!(range("", ""), KeyRange::Single(Bytes::from_static(b"\0")));
        assert_eq!(
            range("a", "\0"),
            KeyRange::Range {
                start: Bytes::from_static(b"a"),
                end: None
            }
        );
        assert!(KeyRange::from_request(b"b", b"a").is_none());
        assert!(KeyRange::from_request(b"a", b"a").is_none());
        assert!(range("", "\0").contains(b"\0"));
        assert!(range("a", "c").contains(b"b") && !range("a", "c").contains(b"c"));
    }

    #[test]
    fn keys_and_ranges_find_their_watchers_once() {
        let mut g = WatcherGroup::default();
        g.add(1, &range("foo", ""));
        g.add(2, &range("foo", "fop"));
        g.add(3, &range("f", "\0"));
        g.add(4, &range("g", "h"));
        g.add(5, &range("foo", "fop"));
        assert_eq!(g.len(), 5);
        assert_eq!(found(&g, "foo"), vec![1, 2, 3, 5]);
        assert_eq!(found(&g, "foo1"), vec![2, 3, 5]);
        assert_eq!(found(&g, "g"), vec![3, 4]);
        assert_eq!(found(&g, "e"), Vec::<u64>::new());
        assert!(g.remove(2, &range("foo", "fop")));
        assert!(!g.remove(2, &range("foo", "fop")));
        assert!(g.remove(1, &range("foo", "")));
        assert_eq!(found(&g, "foo"), vec![3, 5]);
        assert_eq!(g.len(), 3);
        assert!(g.wants(b"zzz") && !g.wants(b"a"));
    }
}
