//! Throughput and latency of the store, in process, on this machine.
//!
//! `cargo run -p ketch-mvcc --release --example bench [keys] [value_bytes]`
//! (defaults: 1,000,000 keys of 100-byte values). The database lives in a temporary directory
//! (`TMPDIR` to choose where).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ketch_api::etcdserverpb::{PutRequest, RangeRequest};
use ketch_mvcc::Store;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i:010}"))
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn put_all(
    store: &Store,
    n: usize,
    value: &Bytes,
    batch: usize,
    durable_every: Option<usize>,
    start_index: u64,
) -> Duration {
    let started = Instant::now();
    let mut index = start_index;
    let mut i = 0;
    let mut batches = 0;
    while i < n {
        let mut b = store.write().unwrap();
        for _ in 0..batch.min(n - i) {
            index += 1;
            b.put(&PutRequest {
                key: key(i),
                value: value.clone(),
                ..Default::default()
            })
            .unwrap();
            i += 1;
        }
        b.set_applied_index(index);
        batches += 1;
        let durable = durable_every.is_some_and(|d| batches % d == 0);
        b.commit(durable).unwrap();
    }
    let mut b = store.write().unwrap();
    b.set_applied_index(index);
    b.commit(true).unwrap();
    started.elapsed()
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    format!(
        "mean {:?} p50 {:?} p99 {:?} max {:?}",
        mean,
        p(0.5),
        p(0.99),
        v[v.len() - 1]
    )
}

fn time_reads(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_keys: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value_len: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let value = Bytes::from(vec![b'v'; value_len]);
    println!("ketch-mvcc bench: {n_keys} keys, {value_len}-byte values");

    // BENCH_ONLY=get: load, then only random single-key gets (for profiling)
    let only_get = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "get");

    // 1. Apply throughput per batch size: non-durable commits, one durable at the end
    println!("\n== put throughput (one put per raft entry; commit per batch) ==");
    let put_cases: &[(usize, usize, Option<usize>)] = if only_get {
        &[]
    } else {
        &[
            (1, 20_000, None),
            (10, 100_000, None),
            (100, 200_000, None),
            (1000, 200_000, None),
            (1, 2_000, Some(1)),
            (100, 50_000, Some(1)),
            (1000, 200_000, Some(10)),
        ]
    };
    for &(batch, n, durable_every) in put_cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let took = put_all(&store, n, &value, batch, durable_every, 0);
        let mode = match durable_every {
            None => "non-durable".to_string(),
            Some(1) => "durable each".to_string(),
            Some(d) => format!("durable every {d}"),
        };
        println!(
            "batch {batch:>5} {mode:>16}: {n:>7} puts in {:>8.1?} = {:>9.0} puts/s",
            took,
            n as f64 / took.as_secs_f64()
        );
    }

    // 2. Reads over a store of n_keys keys
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    let rss0 = rss_mib();
    let took = put_all(&store, n_keys, &value, 1000, Some(10), 0);
    println!(
        "\nloaded {n_keys} keys in {took:.1?} ({:.0} puts/s); file {} MiB, in use {} MiB; RSS +{:.0} MiB",
        n_keys as f64 / took.as_secs_f64(),
        store.db_size() >> 20,
        store.db_size_in_use() >> 20,
        rss_mib() - rss0
    );

    println!("\n== range latency (one thread) ==");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let lat = time_reads(200_000, |_| {
        let k = key(rng.next() as usize % n_keys);
        let r = store
            .range(&RangeRequest {
                key: k,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    });
    println!("get one key (random):        {}", percentiles(lat));
    if only_get {
        let lat = time_reads(2_000_000, |_| {
            let k = key(rng.next() as usize % n_keys);
            store
                .range(&RangeRequest {
                    key: k,
                    ..Default::default()
                })
                .unwrap();
        });
        println!("get one key (random):        {}", percentiles(lat));
        return;
    }
    let lat = time_reads(200_000, |_| {
        let k = key(rng.next() as usize % n_keys);
        let r = store
            .range(&RangeRequest {
                key: k,
                keys_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    });
    println!("get one key, keys_only:      {}", percentiles(lat));
    let lat = time_reads(200_000, |i| {
        let r = store
            .range(&RangeRequest {
                key: key(i % n_keys),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    });
    println!("get one key (sequential):    {}", percentiles(lat));
    for limit in [10usize, 100, 1000] {
        let lat = time_reads(300, |_| {
            let start = rng.next() as usize % (n_keys - limit);
            let r = store
                .range(&RangeRequest {
                    key: key(start),
                    range_end: Bytes::from_static(b"key0"),
                    limit: limit as i64,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.kvs.len(), limit);
        });
        println!("range limit {limit:>5} (+count): {}", percentiles(lat));
    }
    for span in [100usize, 1000] {
        let lat = time_reads(if span >= 1000 { 5_000 } else { 20_000 }, |_| {
            let start = rng.next() as usize % (n_keys - span);
            let r = store
                .range(&RangeRequest {
                    key: key(start),
                    range_end: key(start + span),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.kvs.len(), span);
        });
        println!("range of {span:>5} keys:        {}", percentiles(lat));
    }
    let lat = time_reads(20, |_| {
        let r = store
            .range(&RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                count_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.count as usize, n_keys);
    });
    println!("count_only, all keys:         {}", percentiles(lat));
    let lat = time_reads(200, |_| {
        let start = rng.next() as usize % (n_keys - 10_000);
        let r = store
            .range(&RangeRequest {
                key: key(start),
                range_end: key(start + 10_000),
                keys_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), 10_000);
    });
    println!("keys_only, 10k keys:          {}", percentiles(lat));
    let rss_before = rss_mib();
    let t = Instant::now();
    let all = store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        })
        .unwrap();
    let took = t.elapsed();
    let payload: usize = all.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    println!(
        "all {} keys, with values:  {took:.1?}; RSS +{:.0} MiB for {:.0} MiB of keys+values",
        all.kvs.len(),
        rss_mib() - rss_before,
        payload as f64 / 1048576.0
    );
    drop(all);

    // concurrent readers while the writer applies
    println!("\n== concurrent: 2 reader threads, 1 writer (batches of 100, non-durable) ==");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (reads, writes, took) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let (store, stop) = (&store, &stop);
                s.spawn(move || {
                    let mut rng = Rng(0x1234_5678 + t);
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let k = key(rng.next() as usize % n_keys);
                        store
                            .range(&RangeRequest {
                                key: k,
                                ..Default::default()
                            })
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let t = Instant::now();
        let w = put_all(
            &store,
            100_000.min(n_keys),
            &value,
            100,
            None,
            n_keys as u64,
        );
        let _ = w;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let took = t.elapsed();
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (reads, 100_000.min(n_keys), took)
    });
    println!(
        "{took:.1?}: {:.0} gets/s total while {:.0} puts/s",
        reads as f64 / took.as_secs_f64(),
        writes as f64 / took.as_secs_f64()
    );

    // 3. Compaction: overwrite every key once more, then compact away the first generation of
    // revisions (n_keys revisions removed)
    let first_pass_done = store.current_revision();
    put_all(&store, n_keys, &value, 1000, Some(10), 2 * n_keys as u64);
    let rows_before = store.db_size_in_use();
    let mut b = store.write().unwrap();
    let t = Instant::now();
    b.compact(store.current_revision()).unwrap();
    let in_batch = t.elapsed();
    b.commit(true).unwrap();
    let total = t.elapsed();
    println!(
        "\n== compaction ==\ncompact over {} revisions (removing {} rows): {in_batch:.2?} in the batch, {total:.2?} with commit and index; rows {} -> {} MiB (first pass ended at {first_pass_done})",
        store.current_revision() - 1,
        store.current_revision() - 1 - n_keys as i64,
        rows_before >> 20,
        store.db_size_in_use() >> 20
    );

    // 4. Reopen: rebuild the index from the backend
    drop(store);
    let t = Instant::now();
    let store = Store::open(&path).unwrap();
    println!(
        "\n== reopen ==\nreopen with {n_keys} keys: {:.2?} (revision {})",
        t.elapsed(),
        store.current_revision()
    );
}
