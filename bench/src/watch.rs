//! Watch scenarios: `watch` (many watchers over a few streams) and `watch-latency` (one watcher
//! per client, paced puts — etcd's defaults). Both measure put-to-event latency: the time from
//! sending put number `i` to a watcher receiving the event whose value carries `i`, one sample
//! per watcher per event. Every watcher's events are checked: each put to its key exactly once,
//! in order. A server without the Watch service is reported as a skip, not a crash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, PutRequest,
    WatchCreateRequest, WatchRequest,
};
use serde_json::json;
use tokio::sync::{mpsc, Barrier, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::client::{status_text, Target};
use crate::flags::Flags;
use crate::report::Recorder;
use crate::runner::{closed_loop, SplitMix};
use crate::Outcome;

pub const WATCH_FLAGS: &[&str] = &[
    "streams",
    "watch-per-stream",
    "watched-key-total",
    "put-total",
    "put-rate",
    "key-size",
    "val-size",
    "put-clients",
];
pub const WATCH_LATENCY_FLAGS: &[&str] = &["put-total", "put-rate", "key-size", "val-size"];

struct Plan {
    streams: usize,
    per_stream: usize,
    keys: u64,
    put_total: u64,
    /// Puts per second over all put clients; 0 means as fast as they go.
    put_rate: f64,
    put_clients: usize,
    key_size: usize,
    val_size: usize,
}

pub async fn watch(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(WATCH_FLAGS)?;
    let plan = Plan {
        streams: flags.get("streams", 10)?,
        per_stream: flags.get("watch-per-stream", 100)?,
        keys: flags.get::<u64>("watched-key-total", 1)?.max(1),
        put_total: flags.get("put-total", 1000)?,
        put_rate: flags.get("put-rate", 0.0)?,
        put_clients: flags.get("put-clients", 1)?,
        key_size: flags.get("key-size", 32)?,
        val_size: flags.get("val-size", 32)?,
    };
    run("watch", target, plan).await
}

pub async fn watch_latency(target: &Target, flags: &Flags) -> Result<Outcome, String> {
    flags.allow(WATCH_LATENCY_FLAGS)?;
    let plan = Plan {
        streams: target.clients,
        per_stream: 1,
        keys: 1,
        put_total: flags.get("put-total", 1000)?,
        put_rate: flags.get("put-rate", 100.0)?,
        put_clients: 1,
        key_size: flags.get("key-size", 32)?,
        val_size: flags.get("val-size", 32)?,
    };
    run("watch-latency", target, plan).await
}

fn watched_key(k: u64, size: usize) -> Vec<u8> {
    let mut key = format!("/ketch-bench/watch/{k:08}").into_bytes();
    key.resize(key.len().max(size), b'_');
    key
}

/// What one watcher saw, for the every-event check.
#[derive(Default, Clone, Copy)]
struct WatcherLog {
    received: u64,
    /// Revision of the last event seen: a watcher must see strictly increasing revisions, so
    /// with the right count and no foreign events it saw every put to its key exactly once.
    last_revision: i64,
    misordered: u64,
    foreign: u64,
}

struct Shared {
    started: Instant,
    /// Nanoseconds after `started` at which put `i` was sent (0: not yet).
    put_sent: Vec<AtomicU64>,
    received: AtomicU64,
    all_received: Notify,
}

async fn run(name: &'static str, target: &Target, plan: Plan) -> Result<Outcome, String> {
    let channels = target.connect().await?;
    let watchers = plan.streams * plan.per_stream;
    if watchers == 0 {
        return Err("no watchers: --streams and --watch-per-stream must be at least 1".into());
    }
    let shared = Arc::new(Shared {
        started: Instant::now(),
        put_sent: (0..plan.put_total).map(|_| AtomicU64::new(0)).collect(),
        received: AtomicU64::new(0),
        all_received: Notify::new(),
    });
    // Probe first: one create on one stream tells us whether the service exists at all.
    if let Err(status) = open_stream(WatchClient::new(channels[0].clone())).await {
        if status.code() == Code::Unimplemented {
            return Ok(Outcome::skipped(
                name,
                format!(
                    "the server does not implement Watch ({})",
                    status_text(&status)
                ),
            ));
        }
        return Err(format!("watch: {}", status_text(&status)));
    }

    // Phase 1: create every watcher (creation latency measured), all streams at once.
    let ready = Arc::new(Barrier::new(plan.streams + 1));
    let go = Arc::new(Barrier::new(plan.streams + 1));
    let expected_total = Arc::new(AtomicU64::new(u64::MAX));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let creating = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..plan.streams {
        let client = WatchClient::new(channels[s % channels.len()].clone());
        let (ready, go, shared, expected_total) = (
            ready.clone(),
            go.clone(),
            shared.clone(),
            expected_total.clone(),
        );
        let stopped = stopped.clone();
        let keys: Vec<u64> = (0..plan.per_stream)
            .map(|w| ((s * plan.per_stream + w) as u64) % plan.keys)
            .collect();
        let key_size = plan.key_size;
        tasks.push(tokio::spawn(async move {
            stream_task(
                client,
                keys,
                key_size,
                Sync3 { ready, go, stopped },
                shared,
                expected_total,
            )
            .await
        }));
    }
    ready.wait().await;
    let create_elapsed = creating.elapsed();

    // Phase 2: the puts, paced by --put-rate, each carrying its index in the value.
    let failed_puts = Arc::new(Mutex::new(Vec::new()));
    let kvs: Vec<KvClient<_>> = channels.iter().cloned().map(KvClient::new).collect();
    let padding = SplitMix::new(44).bytes(plan.val_size.saturating_sub(8));
    let (put_total, keys, key_size, rate) =
        (plan.put_total, plan.keys, plan.key_size, plan.put_rate);
    go.wait().await;
    let put_started = Instant::now();
    let (put_shared, put_failed) = (shared.clone(), failed_puts.clone());
    let (puts, put_elapsed) = closed_loop(plan.put_clients.max(1), put_total, move |c, n| {
        let mut kv = kvs[c % kvs.len()].clone();
        let mut value = n.to_be_bytes().to_vec();
        value.extend_from_slice(&padding);
        let req = PutRequest {
            key: watched_key(n % keys, key_size).into(),
            value: value.into(),
            ..Default::default()
        };
        let (shared, failed) = (put_shared.clone(), put_failed.clone());
        async move {
            if rate > 0.0 {
                tokio::time::sleep_until(
                    (put_started + Duration::from_secs_f64(n as f64 / rate)).into(),
                )
                .await;
            }
            let sent = shared.started.elapsed().as_nanos() as u64;
            shared.put_sent[n as usize].store(sent.max(1), Ordering::Release);
            let result = kv.put(req).await.map(|_| ());
            if result.is_err() {
                failed.lock().unwrap().push(n);
            }
            result
        }
    })
    .await;

    // Phase 3: wait for every event to reach every watcher (or give up after a grace period).
    let failed: Vec<u64> = failed_puts.lock().unwrap().clone();
    let expected_per_key = |k: u64| -> u64 {
        let all = put_total / keys + u64::from(k < put_total % keys);
        all - failed.iter().filter(|&&n| n % keys == k).count() as u64
    };
    let expected: u64 = (0..watchers as u64)
        .map(|w| expected_per_key(w % keys))
        .sum();
    expected_total.store(expected, Ordering::Release);
    let grace = Duration::from_secs(10) + put_elapsed / 2;
    let deadline = Instant::now() + grace;
    while shared.received.load(Ordering::Acquire) < expected {
        let notified = shared.all_received.notified();
        if shared.received.load(Ordering::Acquire) >= expected {
            break;
        }
        if tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_err()
        {
            break;
        }
    }
    let waited_for_events = put_started.elapsed();
    stop.send_replace(true);
    let mut events = Recorder::default();
    let mut creates = Recorder::default();
    let mut logs: Vec<(u64, WatcherLog)> = Vec::new();
    for t in tasks {
        let st = t.await.map_err(|e| format!("watch stream task: {e}"))?;
        if let Some(e) = st.error {
            return Err(format!("watch stream failed: {e}"));
        }
        events.merge(&st.events);
        creates.merge(&st.creates);
        logs.extend(st.logs);
    }
    let mut missing_watchers = 0u64;
    let mut bad_order = 0u64;
    let mut received_total = 0u64;
    for (key, log) in &logs {
        received_total += log.received;
        if log.received != expected_per_key(*key) || log.foreign > 0 {
            missing_watchers += 1;
        }
        bad_order += log.misordered;
    }
    let verified = missing_watchers == 0 && bad_order == 0 && logs.len() == watchers;
    let verdict = if verified {
        format!("every one of {watchers} watchers received every one of its events ({received_total} events), in order")
    } else {
        format!(
            "FAILED: {missing_watchers} of {watchers} watchers missed or got extra events; {bad_order} out of order; received {received_total} of {expected}"
        )
    };
    let summary = events.summary(waited_for_events);
    let mut outcome = Outcome::measured(name, summary);
    outcome.notes.push(format!(
        "{} streams x {} watchers on {} key(s); {} puts ({} failed) at {}; latency = put sent -> event received, one sample per watcher per event",
        plan.streams,
        plan.per_stream,
        plan.keys,
        put_total,
        failed.len(),
        if rate > 0.0 { format!("{rate}/s") } else { "full speed".into() }
    ));
    outcome.notes.push(format!("Verification: {verdict}"));
    outcome
        .sections
        .push(("Watcher creation".into(), creates.summary(create_elapsed)));
    outcome
        .sections
        .push(("Puts".into(), puts.summary(put_elapsed)));
    outcome.extra = json!({
        "watchers": watchers,
        "events_expected": expected,
        "events_received": received_total,
        "verified": verified,
    });
    if !verified {
        outcome.failed = true;
    }
    Ok(outcome)
}

/// What a stream task leaves behind.
#[derive(Default)]
struct StreamState {
    events: Recorder,
    creates: Recorder,
    /// (watched key, what the watcher saw), one per watcher of the stream.
    logs: Vec<(u64, WatcherLog)>,
    error: Option<String>,
}

/// The phase changes every stream task follows: all created → puts start → stop reading.
struct Sync3 {
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

type Streaming = (
    mpsc::Sender<WatchRequest>,
    tonic::Streaming<ketch_api::etcdserverpb::WatchResponse>,
);

async fn open_stream(
    mut client: WatchClient<tonic::transport::Channel>,
) -> Result<Streaming, tonic::Status> {
    let (tx, rx) = mpsc::channel(1024);
    // A create on a key nobody writes: an unimplemented service fails here or on first read.
    tx.send(create(b"/ketch-bench/probe".to_vec())).await.ok();
    let mut inbound = client.watch(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await? {
        Some(r) if r.created => Ok((tx, inbound)),
        Some(r) => Err(tonic::Status::internal(format!(
            "unexpected first watch response: {r:?}"
        ))),
        None => Err(tonic::Status::unavailable(
            "watch stream closed before the create was answered",
        )),
    }
}

fn create(key: Vec<u8>) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

async fn stream_task(
    client: WatchClient<tonic::transport::Channel>,
    keys: Vec<u64>,
    key_size: usize,
    mut sync: Sync3,
    shared: Arc<Shared>,
    expected_total: Arc<AtomicU64>,
) -> StreamState {
    let mut state = StreamState::default();
    let mut logs = vec![WatcherLog::default(); keys.len()];
    let created = create_all(client, &keys, key_size, &mut state).await;
    sync.ready.wait().await;
    sync.go.wait().await;
    let Some(mut inbound) = created else {
        return state;
    };
    loop {
        let resp = tokio::select! {
            _ = sync.stopped.wait_for(|s| *s) => break,
            m = inbound.1.message() => match m {
                Ok(Some(r)) => r,
                Ok(None) => { state.error = Some("watch stream closed by the server".into()); break }
                Err(e) => { state.error = Some(status_text(&e)); break }
            },
        };
        let now = shared.started.elapsed().as_nanos() as u64;
        let Some(&w) = inbound.2.get(&resp.watch_id) else {
            continue;
        };
        let mut got = 0;
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let log = &mut logs[w];
            let idx = kv
                .value
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
            let Some(idx) = idx.filter(|&i| (i as usize) < shared.put_sent.len()) else {
                log.foreign += 1;
                continue;
            };
            if kv.key != watched_key(keys[w], key_size) {
                log.foreign += 1;
            }
            if kv.mod_revision <= log.last_revision {
                log.misordered += 1;
            }
            log.last_revision = kv.mod_revision;
            log.received += 1;
            got += 1;
            let sent = shared.put_sent[idx as usize].load(Ordering::Acquire);
            if sent > 0 {
                state
                    .events
                    .record(Duration::from_nanos(now.saturating_sub(sent)));
            }
        }
        if got > 0 {
            let total = shared.received.fetch_add(got, Ordering::AcqRel) + got;
            if total >= expected_total.load(Ordering::Acquire) {
                shared.all_received.notify_one();
            }
        }
    }
    // Keep the request sender alive until here: dropping it would half-close the stream.
    drop(inbound);
    state.logs = keys.iter().copied().zip(logs).collect();
    state
}

/// Opens the stream and creates one watcher per key, one at a time: a stream answers creates
/// in order, which is how watch ids map to watchers. Records each creation's latency.
async fn create_all(
    client: WatchClient<tonic::transport::Channel>,
    keys: &[u64],
    key_size: usize,
    state: &mut StreamState,
) -> Option<(
    mpsc::Sender<WatchRequest>,
    tonic::Streaming<ketch_api::etcdserverpb::WatchResponse>,
    HashMap<i64, usize>,
)> {
    let (tx, mut inbound) = match open_stream(client).await {
        Ok(s) => s,
        Err(e) => {
            state.error = Some(status_text(&e));
            return None;
        }
    };
    let mut watcher_of = HashMap::new();
    for (w, &k) in keys.iter().enumerate() {
        let t = Instant::now();
        if tx.send(create(watched_key(k, key_size))).await.is_err() {
            state.error = Some("watch stream closed".into());
            return None;
        }
        loop {
            match inbound.message().await {
                Ok(Some(r)) if r.created => {
                    watcher_of.insert(r.watch_id, w);
                    state.creates.record(t.elapsed());
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    state.error = Some("watch stream closed during creates".into());
                    return None;
                }
                Err(e) => {
                    state.error = Some(status_text(&e));
                    return None;
                }
            }
        }
    }
    Some((tx, inbound, watcher_of))
}
