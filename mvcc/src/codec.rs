//! Row values and the KV hash.
//!
//! A row of the `key` table holds an `mvccpb.KeyValue` in protobuf encoding, exactly as etcd
//! writes it: a put row has every field of the key at that revision, a tombstone row only the
//! key. Writes encode with prost. Reads parse the row in place ([`RowView`]) so that a range
//! copies out the value bytes and nothing else (the key, revisions, version and lease come from
//! the in-memory index).

use ketch_api::mvccpb::KeyValue;
use prost::Message;

/// The fields of a row, borrowed from the page that holds it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RowView<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

/// Encodes `kv` into `out` (cleared first), as etcd's marshalling of `mvccpb.KeyValue` does.
pub(crate) fn encode_row(kv: &KeyValue, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(kv.encoded_len());
    // Vec<u8> grows as needed, so encoding cannot fail
    kv.encode(out).expect("encoding into a Vec cannot fail");
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Parses a row without copying. `None` means the bytes are not a `KeyValue`.
pub(crate) fn decode_row(buf: &[u8]) -> Option<RowView<'_>> {
    let mut row = RowView::default();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = read_varint(buf, &mut pos)?;
        let field = tag >> 3;
        match tag & 7 {
            0 => {
                let v = read_varint(buf, &mut pos)? as i64;
                match field {
                    2 => row.create_revision = v,
                    3 => row.mod_revision = v,
                    4 => row.version = v,
                    6 => row.lease = v,
                    _ => {}
                }
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let bytes = buf.get(pos..end)?;
                pos = end;
                match field {
                    1 => row.key = bytes,
                    5 => row.value = bytes,
                    _ => {}
                }
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(row)
}

/// CRC-32C (Castagnoli), the checksum etcd's HashKV uses. Table-driven, eight bytes a step.
pub(crate) struct Crc32c {
    state: u32,
}

const CASTAGNOLI_REFLECTED: u32 = 0x82F6_3B78;

static CRC_TABLES: [[u32; 256]; 8] = make_tables();

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CASTAGNOLI_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

impl Crc32c {
    pub(crate) fn new() -> Crc32c {
        Crc32c { state: !0 }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        let t = &CRC_TABLES;
        let mut c = self.state;
        let mut chunks = data.chunks_exact(8);
        for ch in &mut chunks {
            let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = (c >> 8) ^ t[0][((c ^ u32::from(b)) & 0xff) as usize];
        }
        self.state = c;
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn crc32c_matches_known_vectors() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
        let mut c = Crc32c::new();
        c.update(&[0u8; 32]);
        assert_eq!(c.finish(), 0x8A91_36AA);
        // split updates give the same result as one
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut one = Crc32c::new();
        one.update(&data);
        let mut two = Crc32c::new();
        two.update(&data[..333]);
        two.update(&data[333..]);
        assert_eq!(one.finish(), two.finish());
    }

    #[test]
    fn row_round_trips_through_prost_and_view() {
        let kv = KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 300,
            version: 9,
            value: Bytes::from_static(b"bar"),
            lease: 0x1234_5678_9abc,
        };
        let mut buf = Vec::new();
        encode_row(&kv, &mut buf);
        let v = decode_row(&buf).unwrap();
        assert_eq!(v.key, b"foo");
        assert_eq!(v.create_revision, 2);
        assert_eq!(v.mod_revision, 300);
        assert_eq!(v.version, 9);
        assert_eq!(v.value, b"bar");
        assert_eq!(v.lease, 0x1234_5678_9abc);

        let tomb = KeyValue {
            key: Bytes::from_static(b"foo"),
            ..Default::default()
        };
        encode_row(&tomb, &mut buf);
        let v = decode_row(&buf).unwrap();
        assert_eq!(
            v,
            RowView {
                key: b"foo",
                ..Default::default()
            }
        );
        assert!(decode_row(&[0x0a, 0x05, b'a']).is_none());
    }
}
