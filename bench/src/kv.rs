//! KV scenarios: `put`, `range`, `txn-put` — etcd benchmark's flags and defaults.

use ketch_api::etcdserverpb::{
    kv_client::KvClient, request_op, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use tonic::codegen::Bytes;

use crate::client::Target;
use crate::flags::Flags;
use crate::runner::{closed_loop, varint_key, SplitMix};
use crate::Outcome;

pub const PUT_FLAGS: &[&str] = &["total", "key-size", "val-size", "key-space-size", "sequential-keys"];
pub const RANGE_FLAGS: &[&str] = &["total", "consistency", "count-only", "limit"];
pub const TXN_PUT_FLAGS: &[&str] = &["total", "key-size", "val-size", "key-space-size", "txn-ops"];

/// Which key request `n` writes: `n mod space` in order, or a uniformly random one.
fn key_for(n: u64, space: u64, sequential: bool, size: usize, seed: u64) -> Vec<u8> {
    let k = if sequential { n % space } else { SplitMix::new(seed ^ n.wrapping_mul(0x2545_F491)).below(space) };
    varint_key(k, size)
}

pub async fn put(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(PUT_FLAGS)?;
    let total: u64 = flags.get("total", 10_000)?;
    let key_size: usize = flags.get("key-size", 8)?;
    let val_size: usize = flags.get("val-size", 8)?;
    let space: u64 = flags.get::<u64>("key-space-size", 1)?.max(1);
    let sequential = flags.bool("sequential-keys");
    let channels = target.connect().await?;
    let clients: Vec<KvClient<_>> = channels.into_iter().map(KvClient::new).collect();
    let value = Bytes::from(SplitMix::new(42).bytes(val_size));
    let (rec, elapsed) = closed_loop(target.clients, total, move |c, n| {
        let mut kv = clients[c % clients.len()].clone();
        let req = PutRequest { key: key_for(n, space, sequential, key_size, 7).into(), value: value.clone(), ..Default::default() };
        async move { kv.put(req).await.map(|_| ()) }
    })
    .await;
    Ok(Outcome::measured("put", rec.summary(elapsed)))
}

pub async fn range(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(RANGE_FLAGS)?;
    let key = flags.positionals.get(1).cloned().ok_or("range: the key is required: range <key> [end]")?;
    let end = flags.positionals.get(2).cloned().unwrap_or_default();
    let total: u64 = flags.get("total", 10_000)?;
    let serializable = match flags.string("consistency", "l").as_str() {
        "l" => false,
        "s" => true,
        other => return Err(format!("--consistency must be l or s, not {other:?}")),
    };
    let count_only = flags.bool("count-only");
    let limit: i64 = flags.get("limit", 0)?;
    let channels = target.connect().await?;
    let clients: Vec<KvClient<_>> = channels
        .into_iter()
        .map(|c| KvClient::new(c).max_decoding_message_size(usize::MAX))
        .collect();
    let req = RangeRequest {
        key: key.into_bytes().into(),
        range_end: end.into_bytes().into(),
        serializable,
        count_only,
        limit,
        ..Default::default()
    };
    let (rec, elapsed) = closed_loop(target.clients, total, move |c, _| {
        let mut kv = clients[c % clients.len()].clone();
        let req = req.clone();
        async move { kv.range(req).await.map(|_| ()) }
    })
    .await;
    Ok(Outcome::measured("range", rec.summary(elapsed)))
}

pub async fn txn_put(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(TXN_PUT_FLAGS)?;
    let total: u64 = flags.get("total", 10_000)?;
    let key_size: usize = flags.get("key-size", 8)?;
    let val_size: usize = flags.get("val-size", 8)?;
    let space: u64 = flags.get::<u64>("key-space-size", 1)?.max(1);
    let ops: u64 = flags.get::<u64>("txn-ops", 1)?.max(1);
    let channels = target.connect().await?;
    let clients: Vec<KvClient<_>> = channels.into_iter().map(KvClient::new).collect();
    let value = Bytes::from(SplitMix::new(43).bytes(val_size));
    let (rec, elapsed) = closed_loop(target.clients, total, move |c, n| {
        let mut kv = clients[c % clients.len()].clone();
        // One transaction of `ops` puts to distinct random keys, no compares (always succeeds).
        let success = (0..ops)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key_for(n * ops + i, space, false, key_size, 11).into(),
                    value: value.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let req = TxnRequest { success, ..Default::default() };
        async move { kv.txn(req).await.map(|_| ()) }
    })
    .await;
    Ok(Outcome::measured("txn-put", rec.summary(elapsed)))
}
