//! A range answer whose values are read from the backend only while the response is encoded
//! (see [`ketch_api::range_response`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use ketch_api::range_response::{
    encode_key_value, key_value_field_len, key_value_len, DeferredKvs,
};
use tracing::error;

use crate::key_index::KeyMeta;
use crate::range::Rows;
use crate::store::Snapshot;

/// The keys of a range answer with their index positions, and the snapshot that holds their
/// values. Sizes come from the index, so the encoded length is known without reading values.
pub(crate) struct DeferredRange {
    snap: Arc<Snapshot>,
    items: Vec<(Bytes, KeyMeta)>,
    keys_only: bool,
    encoded_len: usize,
}

impl DeferredRange {
    pub(crate) fn new(snap: Arc<Snapshot>, items: Vec<(Bytes, KeyMeta)>, keys_only: bool) -> Self {
        let encoded_len = items
            .iter()
            .map(|(k, m)| key_value_field_len(body_len(k, m, keys_only)))
            .sum();
        DeferredRange {
            snap,
            items,
            keys_only,
            encoded_len,
        }
    }
}

fn value_len(m: &KeyMeta, keys_only: bool) -> usize {
    if keys_only {
        0
    } else {
        m.value_len as usize
    }
}

fn body_len(k: &Bytes, m: &KeyMeta, keys_only: bool) -> usize {
    key_value_len(
        k.len(),
        m.create,
        m.rev.main,
        m.version,
        value_len(m, keys_only),
        m.lease,
    )
}

impl DeferredKvs for DeferredRange {
    fn count(&self) -> usize {
        self.items.len()
    }

    fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    fn encode_kvs(&self, buf: &mut dyn BufMut) {
        for (k, m) in &self.items {
            let len = value_len(m, self.keys_only);
            encode_key_value(
                buf,
                k,
                m.create,
                m.rev.main,
                m.version,
                len,
                m.lease,
                |buf| {
                    // The snapshot's read transaction still holds every row the index named when the
                    // range ran. Should the backend fail now, the response cannot carry an error any
                    // more: the value is sent as zeros of its length and the failure is logged.
                    let wrote = self.snap.kv.with_row_value(m.rev, |v| {
                        if v.len() == len {
                            buf.put_slice(v);
                            true
                        } else {
                            false
                        }
                    });
                    if !matches!(wrote, Ok(true)) {
                        error!(target: "mvcc", "backend row at {:?} unreadable or resized while sending a range", m.rev);
                        buf.put_bytes(0, len);
                    }
                },
            );
        }
    }
}
