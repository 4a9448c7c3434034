//! Revisions and the byte form they take as keys of the `key` table.
//!
//! A revision is `(main, sub)`: `main` counts write requests (one per put, per delete that
//! deletes something, per txn that writes), `sub` counts the writes inside one request. On disk
//! a revision is etcd's 17-byte key — `main` as 8 bytes big-endian, `'_'`, `sub` as 8 bytes
//! big-endian — followed by a `'t'` for a tombstone (18 bytes). Big-endian keeps byte order and
//! revision order the same, so a table scan walks history in revision order.

/// A point in the store's history: `main` is the revision clients see, `sub` orders the writes
/// of one txn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Length of the key of a put row.
pub(crate) const REV_KEY_LEN: usize = 17;
/// Length of the key of a tombstone row.
pub(crate) const TOMBSTONE_KEY_LEN: usize = 18;
const TOMBSTONE_MARK: u8 = b't';

/// A row key in a fixed buffer; `len` is [`REV_KEY_LEN`] or [`TOMBSTONE_KEY_LEN`].
#[derive(Clone, Copy)]
pub(crate) struct RevKey {
    buf: [u8; TOMBSTONE_KEY_LEN],
    len: usize,
}

impl RevKey {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The key of the row holding the put (or, with `tombstone`, the delete) at this revision.
    pub(crate) fn key(self, tombstone: bool) -> RevKey {
        let mut buf = [0u8; TOMBSTONE_KEY_LEN];
        buf[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        buf[8] = b'_';
        buf[9..17].copy_from_slice(&(self.sub as u64).to_be_bytes());
        let len = if tombstone {
            buf[17] = TOMBSTONE_MARK;
            TOMBSTONE_KEY_LEN
        } else {
            REV_KEY_LEN
        };
        RevKey { buf, len }
    }

    /// Parses a row key: the revision and whether the row is a tombstone.
    pub(crate) fn from_key(k: &[u8]) -> Option<(Revision, bool)> {
        if k.len() != REV_KEY_LEN && k.len() != TOMBSTONE_KEY_LEN {
            return None;
        }
        if k[8] != b'_' {
            return None;
        }
        let tombstone = match k.get(17) {
            None => false,
            Some(&TOMBSTONE_MARK) => true,
            Some(_) => return None,
        };
        let main = u64::from_be_bytes(k[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(k[9..17].try_into().ok()?) as i64;
        Some((Revision { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_sort_like_revisions() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(1 << 40, 7),
        ];
        for w in revs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].key(false).as_slice() < w[1].key(false).as_slice());
            assert!(w[0].key(true).as_slice() < w[1].key(false).as_slice());
        }
    }

    #[test]
    fn key_round_trips_with_tombstone_mark() {
        let r = Revision::new(42, 3);
        let k = r.key(false);
        assert_eq!(k.as_slice().len(), 17);
        assert_eq!(Revision::from_key(k.as_slice()), Some((r, false)));
        let t = r.key(true);
        assert_eq!(t.as_slice().len(), 18);
        assert_eq!(t.as_slice()[17], b't');
        assert_eq!(Revision::from_key(t.as_slice()), Some((r, true)));
        assert_eq!(Revision::from_key(b"short"), None);
    }
}
