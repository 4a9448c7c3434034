//! `etcdserverpb.RangeResponse`, written by hand so that a server can answer a large range
//! without holding its key-values twice.
//!
//! The generated type would need every `KeyValue` built in memory, and the transport then copies
//! all of them once more into its send buffer: two copies of the whole answer at the peak (etcd
//! has more, and its users hit out-of-memory on big ranges, etcd #12342, #12678). This type can
//! instead carry its key-values as a [`DeferredKvs`]: a source that knows the encoded size up
//! front and writes the key-values straight into the send buffer when the response is encoded,
//! so the answer exists once, in the buffer that goes on the wire.
//!
//! On the wire it is exactly etcd's message (fields 1–4, in field order); decoding always fills
//! `kvs`. Clients and every other use see an ordinary message.

use std::fmt;
use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use crate::etcdserverpb::ResponseHeader;
use crate::mvccpb::KeyValue;

/// Field number of `kvs` in `RangeResponse`.
pub const KVS_FIELD: u32 = 2;

/// Key-values that are encoded on demand, as a run of `kvs` fields (tag 2, length-delimited
/// `mvccpb.KeyValue`).
pub trait DeferredKvs: Send + Sync {
    /// How many key-values `encode_kvs` writes.
    fn count(&self) -> usize;
    /// The exact number of bytes `encode_kvs` writes.
    fn encoded_len(&self) -> usize;
    /// Writes every key-value as a `kvs` field, exactly `encoded_len` bytes.
    fn encode_kvs(&self, buf: &mut dyn BufMut);
}

/// etcd's `RangeResponse`: header, kvs, more, count.
#[derive(Clone, Default)]
pub struct RangeResponse {
    pub header: Option<ResponseHeader>,
    /// The key-values, when held in memory (always so after decoding).
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
    /// Key-values encoded on demand, sent after `kvs` (a server sets one or the other).
    pub deferred: Option<Arc<dyn DeferredKvs>>,
}

impl RangeResponse {
    /// Number of key-values this response carries, held or deferred.
    pub fn kv_count(&self) -> usize {
        self.kvs.len() + self.deferred.as_ref().map_or(0, |d| d.count())
    }
}

impl PartialEq for RangeResponse {
    fn eq(&self, other: &Self) -> bool {
        let same_deferred = match (&self.deferred, &other.deferred) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.header == other.header
            && self.kvs == other.kvs
            && self.more == other.more
            && self.count == other.count
            && same_deferred
    }
}

impl fmt::Debug for RangeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RangeResponse");
        d.field("header", &self.header)
            .field("kvs", &self.kvs)
            .field("more", &self.more)
            .field("count", &self.count);
        if let Some(def) = &self.deferred {
            d.field("deferred_kvs", &def.count());
        }
        d.finish()
    }
}

impl prost::Message for RangeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(h) = &self.header {
            encoding::message::encode(1, h, buf);
        }
        encoding::message::encode_repeated(KVS_FIELD, &self.kvs, buf);
        if let Some(def) = &self.deferred {
            def.encode_kvs(buf);
        }
        if self.more {
            encoding::bool::encode(3, &self.more, buf);
        }
        if self.count != 0 {
            encoding::int64::encode(4, &self.count, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.header.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            KVS_FIELD => encoding::message::merge_repeated(wire_type, &mut self.kvs, buf, ctx),
            3 => encoding::bool::merge(wire_type, &mut self.more, buf, ctx),
            4 => encoding::int64::merge(wire_type, &mut self.count, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.header
            .as_ref()
            .map_or(0, |h| encoding::message::encoded_len(1, h))
            + encoding::message::encoded_len_repeated(KVS_FIELD, &self.kvs)
            + self.deferred.as_ref().map_or(0, |d| d.encoded_len())
            + if self.more {
                encoding::bool::encoded_len(3, &self.more)
            } else {
                0
            }
            + if self.count != 0 {
                encoding::int64::encoded_len(4, &self.count)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        *self = RangeResponse::default();
    }
}

/// Encoded size of a `KeyValue` with these fields (without its own tag and length), so that a
/// [`DeferredKvs`] can size its output from index data alone.
pub fn key_value_len(
    key_len: usize,
    create: i64,
    modr: i64,
    version: i64,
    value_len: usize,
    lease: i64,
) -> usize {
    let bytes = |tag: u32, n: usize| {
        if n == 0 {
            0
        } else {
            encoding::key_len(tag) + encoding::encoded_len_varint(n as u64) + n
        }
    };
    let int = |tag: u32, v: i64| {
        if v == 0 {
            0
        } else {
            encoding::key_len(tag) + encoding::encoded_len_varint(v as u64)
        }
    };
    bytes(1, key_len)
        + int(2, create)
        + int(3, modr)
        + int(4, version)
        + bytes(5, value_len)
        + int(6, lease)
}

/// Writes a `kvs` field holding one `KeyValue`, whose value `write_value` puts into the buffer
/// (exactly `value_len` bytes). Fields go in field order, defaults omitted, as prost writes them.
#[allow(clippy::too_many_arguments)]
pub fn encode_key_value(
    mut buf: &mut dyn BufMut,
    key: &[u8],
    create: i64,
    modr: i64,
    version: i64,
    value_len: usize,
    lease: i64,
    write_value: impl FnOnce(&mut dyn BufMut),
) {
    let len = key_value_len(key.len(), create, modr, version, value_len, lease);
    encoding::encode_key(KVS_FIELD, WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(len as u64, &mut buf);
    if !key.is_empty() {
        encoding::encode_key(1, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(key.len() as u64, &mut buf);
        buf.put_slice(key);
    }
    for (tag, v) in [(2, create), (3, modr), (4, version)] {
        if v != 0 {
            encoding::encode_key(tag, WireType::Varint, &mut buf);
            encoding::encode_varint(v as u64, &mut buf);
        }
    }
    if value_len != 0 {
        encoding::encode_key(5, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(value_len as u64, &mut buf);
        write_value(&mut *buf);
    }
    if lease != 0 {
        encoding::encode_key(6, WireType::Varint, &mut buf);
        encoding::encode_varint(lease as u64, &mut buf);
    }
}

/// The `kvs` field run's size for one key-value (tag, length, body).
pub fn key_value_field_len(body_len: usize) -> usize {
    encoding::key_len(KVS_FIELD) + encoding::encoded_len_varint(body_len as u64) + body_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    struct Fixed(Vec<KeyValue>);

    impl DeferredKvs for Fixed {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn encoded_len(&self) -> usize {
            self.0
                .iter()
                .map(|kv| {
                    key_value_field_len(key_value_len(
                        kv.key.len(),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.value.len(),
                        kv.lease,
                    ))
                })
                .sum()
        }
        fn encode_kvs(&self, buf: &mut dyn BufMut) {
            for kv in &self.0 {
                encode_key_value(
                    buf,
                    &kv.key,
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    kv.value.len(),
                    kv.lease,
                    |b| b.put_slice(&kv.value),
                );
            }
        }
    }

    fn kv(key: &str, value: &str, lease: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            create_revision: 2,
            mod_revision: 300,
            version: 1,
            value: value.as_bytes().to_vec().into(),
            lease,
        }
    }

    #[test]
    fn deferred_encodes_like_held() {
        let kvs = vec![
            kv("a", "1", 0),
            kv("b", "", 0),
            kv("", "x", -5),
            kv("long", &"v".repeat(300), 7),
        ];
        let header = Some(ResponseHeader {
            revision: 9,
            ..Default::default()
        });
        let held = RangeResponse {
            header,
            kvs: kvs.clone(),
            more: true,
            count: 4,
            deferred: None,
        };
        let deferred = RangeResponse {
            header,
            kvs: Vec::new(),
            more: true,
            count: 4,
            deferred: Some(Arc::new(Fixed(kvs))),
        };
        let a = held.encode_to_vec();
        let b = deferred.encode_to_vec();
        assert_eq!(a, b);
        assert_eq!(deferred.encoded_len(), b.len());
        assert_eq!(RangeResponse::decode(&b[..]).unwrap(), held);
        assert_eq!(deferred.kv_count(), 4);
    }

    #[test]
    fn decodes_what_generated_code_writes() {
        // a txn response carries RangeResponse inside ResponseOp: round-trip through it
        use crate::etcdserverpb::{response_op::Response, ResponseOp};
        let op = ResponseOp {
            response: Some(Response::ResponseRange(RangeResponse {
                kvs: vec![kv("k", "v", 0)],
                count: 1,
                ..Default::default()
            })),
        };
        let bytes = op.encode_to_vec();
        assert_eq!(ResponseOp::decode(&bytes[..]).unwrap(), op);
    }
}
