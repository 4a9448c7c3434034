//! Record framing: a 24-byte header, the payload, zero padding to a multiple of 8 bytes.
//! The layout is described in the crate documentation; this module is its only implementation.

use protobuf::Message;
use raft::eraftpb::{HardState, SnapshotMetadata};

use crate::error::WalError;

/// Bytes in a record header.
pub(crate) const HEADER_LEN: usize = 24;
/// Every record starts at a multiple of this many bytes from the start of its segment.
pub(crate) const ALIGN: usize = 8;
/// `flags` bit: this record is the first one of a `write` (a save, a snapshot marker, a header).
pub(crate) const FLAG_BATCH_START: u8 = 0x01;
/// Version of the segment header payload, and so of the whole format.
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    SegmentHeader = 1,
    Entry = 2,
    HardState = 3,
    Snapshot = 4,
}

impl RecordType {
    pub(crate) fn from_u8(v: u8) -> Option<RecordType> {
        match v {
            1 => Some(RecordType::SegmentHeader),
            2 => Some(RecordType::Entry),
            3 => Some(RecordType::HardState),
            4 => Some(RecordType::Snapshot),
            _ => None,
        }
    }
}

pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Appends one record to `buf`, whose length must be a multiple of [`ALIGN`]; `payload`
/// appends the payload bytes.
pub(crate) fn append_record(
    buf: &mut Vec<u8>,
    seq: u64,
    rtype: RecordType,
    flags: u8,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<(), WalError> {
    debug_assert_eq!(buf.len() % ALIGN, 0);
    let start = buf.len();
    buf.resize(start + HEADER_LEN, 0);
    payload(buf);
    let payload_len = buf.len() - start - HEADER_LEN;
    let len =
        u32::try_from(payload_len).map_err(|_| WalError::RecordTooLarge { size: payload_len })?;
    let header = &mut buf[start..start + HEADER_LEN];
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16] = rtype as u8;
    header[17] = flags;
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    buf.resize(align_up(buf.len()), 0);
    Ok(())
}

/// Appends a protobuf message as a payload.
pub(crate) fn put_message<M: Message>(buf: &mut Vec<u8>, msg: &M) {
    // Encoding a proto3 message (no required fields) into a Vec cannot fail.
    msg.write_to_vec(buf)
        .expect("encoding a raft message into memory cannot fail");
}

/// A record whose header and payload passed the CRC check.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub seq: u64,
    pub rtype: u8,
    pub flags: u8,
    /// Bytes 18..24 of the header; zero in this version.
    pub reserved: [u8; 6],
    pub payload: &'a [u8],
    /// Offset of the next record (end of payload plus padding).
    pub next: usize,
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Record(Record<'a>),
    /// The offset is the end of the data.
    End,
    /// The next header is all zeros: preallocated space, or a write that never reached disk.
    Zero,
    /// Header or payload runs past the end of the data.
    Truncated,
    /// The CRC does not match.
    BadCrc,
}

/// Decodes the record at `off`, which must be a multiple of [`ALIGN`].
pub(crate) fn decode_at(data: &[u8], off: usize) -> Decoded<'_> {
    if off >= data.len() {
        return Decoded::End;
    }
    let rest = &data[off..];
    if rest.len() < HEADER_LEN {
        return if is_zero(rest) {
            Decoded::Zero
        } else {
            Decoded::Truncated
        };
    }
    let header = &rest[..HEADER_LEN];
    if is_zero(header) {
        return Decoded::Zero;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
    if len > rest.len() - HEADER_LEN {
        return Decoded::Truncated;
    }
    let stored_crc = u32::from_le_bytes(header[0..4].try_into().unwrap());
    if crc32fast::hash(&rest[4..HEADER_LEN + len]) != stored_crc {
        return Decoded::BadCrc;
    }
    Decoded::Record(Record {
        seq: u64::from_le_bytes(header[8..16].try_into().unwrap()),
        rtype: header[16],
        flags: header[17],
        reserved: header[18..24].try_into().unwrap(),
        payload: &rest[HEADER_LEN..HEADER_LEN + len],
        // Padding may be missing at the very end of a file; the record is whole without it.
        next: off + align_up(HEADER_LEN + len),
    })
}

/// Whether a CRC-valid record at `off` could have been written by a later `write` than the
/// one that was expected to hold record `expected_seq`. Used to tell corruption from a torn
/// write; the cheap structural checks come before the CRC so that scanning garbage is fast
/// and a random match is improbable.
pub(crate) fn is_later_batch_start(data: &[u8], off: usize, expected_seq: u64) -> bool {
    let Some(header) = data.get(off..off + HEADER_LEN) else {
        return false;
    };
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let plausible = header[17] == FLAG_BATCH_START
        && matches!(
            RecordType::from_u8(header[16]),
            Some(RecordType::Entry | RecordType::HardState | RecordType::Snapshot)
        )
        && is_zero(&header[18..24])
        && seq >= expected_seq
        && seq - expected_seq < 1 << 32;
    plausible && matches!(decode_at(data, off), Decoded::Record(_))
}

pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let words = chunks.by_ref().fold(0u64, |acc, c| {
        acc | u64::from_ne_bytes(c.try_into().unwrap())
    });
    words == 0 && chunks.remainder().iter().all(|&b| b == 0)
}

/// Offset just past the last non-zero byte of `bytes` (0 if all are zero).
pub(crate) fn nonzero_end(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if !is_zero(block) {
            let last = block.iter().rposition(|&b| b != 0).unwrap();
            return start + last + 1;
        }
        end = start;
    }
    0
}

/// The first record of every segment: everything needed to replay the segment without the
/// ones before it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SegmentHeader {
    pub segment_seq: u64,
    /// The log's last index when the segment was created; the file name carries this + 1.
    pub last_index: u64,
    pub metadata: Vec<u8>,
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMetadata>,
}

impl SegmentHeader {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.segment_seq.to_le_bytes());
        buf.extend_from_slice(&self.last_index.to_le_bytes());
        put_bytes(buf, &self.metadata);
        let hard_state = self.hard_state.write_to_bytes().expect("in-memory encode");
        put_bytes(buf, &hard_state);
        match &self.snapshot {
            None => buf.push(0),
            Some(snap) => {
                buf.push(1);
                put_bytes(buf, &snap.write_to_bytes().expect("in-memory encode"));
            }
        }
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<SegmentHeader, String> {
        let mut r = Reader(payload);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        let segment_seq = r.u64()?;
        let last_index = r.u64()?;
        let metadata = r.bytes()?.to_vec();
        let hard_state =
            HardState::parse_from_bytes(r.bytes()?).map_err(|e| format!("hard state: {e}"))?;
        let snapshot = match r.u8()? {
            0 => None,
            1 => Some(
                SnapshotMetadata::parse_from_bytes(r.bytes()?)
                    .map_err(|e| format!("snapshot marker: {e}"))?,
            ),
            other => return Err(format!("bad snapshot flag {other}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes in segment header".into());
        }
        Ok(SegmentHeader {
            segment_seq,
            last_index,
            metadata,
            hard_state,
            snapshot,
        })
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("header field under 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("segment header too short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}
