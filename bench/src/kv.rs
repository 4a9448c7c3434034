//! KV scenarios: `put`, `range`, `txn-put` — etcd benchmark's flags and defaults.

use ketch_api::etcdserverpb::{
    kv_client::KvClient, request_op, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use tonic::codegen::Bytes;

use crate::client::Target;
use crate::flags::Flags;
use crate::runner::{closed_loop, varint_key, SplitMix};
use crate::Outcome;

pub const PUT_FLAGS: &[&str] = &[
    "total",
    "key-size",
    "val-size",
    "key-space-size",
    "sequential-keys",
];
pub const RANGE_FLAGS: &[&str] = &["total", "consistency", "count-only", "limit"];
pub const TXN_PUT_FLAGS: &[&str] = &["total", "key-size", "val-size", "key-space-size", "txn-ops"];

/// Which key request `n` writes: `n mod space` in order, or a uniformly random one.
fn key_for(n: u64, space: u64, sequential: bool, size: usize, seed: u64) -> Vec<u8> {
    let k = if sequential {
        n % space
    } else {
        SplitMix::new(seed ^ n.wrapping_mul(0x2545_F491)).below(space)
    };
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
        let req = PutRequest {
            key: key_for(n, space, sequential, key_size, 7).into(),
            value: value.clone(),
            ..Default::default()
        };
        async move { kv.put(req).await.map(|_| ()) }
    })
    .await;
    Ok(Outcome::measured("put", rec.summary(elapsed)))
}

pub async fn range(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(RANGE_FLAGS)?;
    let key = flags
        .positionals
        .get(1)
        .cloned()
        .ok_or("range: the key is required: range <key> [end]")?;
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
        let req = TxnRequest {
            success,
            ..Default::default()
        };
        async move { kv.txn(req).await.map(|_| ()) }
    })
    .await;
    Ok(Outcome::measured("txn-put", rec.summary(elapsed)))
}

pub const MIXED_FLAGS: &[&str] = &[
    "total",
    "key-size",
    "val-size",
    "key-space-size",
    "read-ratio",
    "consistency",
];

/// `mixed`: reads and writes of random keys in one closed loop (`--read-ratio` of them
/// ranges), the shape of an application's traffic rather than one operation in isolation.
/// The keys are put once before the clock starts, so every read finds its key.
pub async fn mixed(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(MIXED_FLAGS)?;
    let total: u64 = flags.get("total", 10_000)?;
    let key_size: usize = flags.get("key-size", 8)?;
    let val_size: usize = flags.get("val-size", 8)?;
    let space: u64 = flags.get::<u64>("key-space-size", 1000)?.max(1);
    let read_ratio: f64 = flags.get("read-ratio", 0.9)?;
    if !(0.0..=1.0).contains(&read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    let serializable = match flags.string("consistency", "l").as_str() {
        "l" => false,
        "s" => true,
        other => return Err(format!("--consistency must be l or s, not {other:?}")),
    };
    let channels = target.connect().await?;
    let clients: Vec<KvClient<_>> = channels.into_iter().map(KvClient::new).collect();
    let value = Bytes::from(SplitMix::new(45).bytes(val_size));
    let seed_clients = clients.clone();
    let seed_value = value.clone();
    let (seeded, _) = closed_loop(target.clients, space, move |c, n| {
        let mut kv = seed_clients[c % seed_clients.len()].clone();
        let req = PutRequest {
            key: varint_key(n, key_size).into(),
            value: seed_value.clone(),
            ..Default::default()
        };
        async move { kv.put(req).await.map(|_| ()) }
    })
    .await;
    if seeded
        .summary(std::time::Duration::ZERO)
        .errors
        .values()
        .sum::<u64>()
        > 0
    {
        return Err("mixed: putting the key space before the run failed".into());
    }
    let threshold = (read_ratio * u64::MAX as f64) as u64;
    let (rec, elapsed) = closed_loop(target.clients, total, move |c, n| {
        let mut kv = clients[c % clients.len()].clone();
        let mut rng = SplitMix::new(n.wrapping_mul(0x9E37_79B9) ^ 0x5EED);
        let key: Bytes = varint_key(rng.below(space), key_size).into();
        let read = rng.next_u64() < threshold;
        let value = value.clone();
        async move {
            if read {
                kv.range(RangeRequest {
                    key,
                    serializable,
                    ..Default::default()
                })
                .await
                .map(|_| ())
            } else {
                kv.put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }
        }
    })
    .await;
    let mut outcome = Outcome::measured("mixed", rec.summary(elapsed));
    outcome.notes.push(format!(
        "{:.0}% {} ranges, {:.0}% puts over {space} keys; latency of both together",
        read_ratio * 100.0,
        if serializable {
            "serializable"
        } else {
            "linearizable"
        },
        (1.0 - read_ratio) * 100.0
    ));
    Ok(outcome)
}
