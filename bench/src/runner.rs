//! The closed loop every request/response scenario uses: `clients` tasks take request numbers
//! from one counter until `total` is reached, each timing its own requests; the recorders are
//! merged at the end. A progress line goes to stderr when it is a terminal.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::status_text;
use crate::report::Recorder;

/// Runs `total` requests over `clients` concurrent clients. `request(client, n)` makes the
/// future of request number `n`, issued by client number `client`.
pub async fn closed_loop<F, Fut>(clients: usize, total: u64, request: F) -> (Recorder, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let progress = Progress::start("requests", total, next.clone());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (next, request) = (next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let fut = request(client, n);
                let t = Instant::now();
                match fut.await {
                    Ok(()) => rec.record(t.elapsed()),
                    Err(s) => rec.error(status_text(&s)),
                }
            }
            rec
        }));
    }
    let mut all = Recorder::default();
    for task in tasks {
        all.merge(&task.await.expect("a benchmark client task panicked"));
    }
    let elapsed = started.elapsed();
    progress.finish();
    (all, elapsed)
}

/// A `done/total` line on stderr, redrawn five times a second, only on a terminal.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(what: &'static str, total: u64, done: Arc<AtomicU64>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let task = tokio::spawn(async move {
            loop {
                let n = done.load(Ordering::Relaxed).min(total);
                let pct = (n * 100).checked_div(total).unwrap_or(100);
                let bar = "#".repeat((pct / 4) as usize);
                eprint!("\r {n:>9}/{total} {what} [{bar:<25}] {pct:>3}%");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress { task: Some(task) }
    }

    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
            eprint!("\r{:79}\r", "");
        }
    }
}

/// A small deterministic PRNG (splitmix64) for keys and values: the benchmark needs spread,
/// not cryptographic quality, and this keeps `rand` out of the dependency tree.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() & 0xff) as u8).collect()
    }
}

/// A key of `size` bytes holding `n` as a varint, zero-padded — etcd benchmark's key shape.
pub fn varint_key(n: u64, size: usize) -> Vec<u8> {
    let mut key = vec![0u8; size.max(1)];
    // Zig-zag like Go's binary.PutVarint, for the same bytes on the wire as etcd's tool.
    let mut v = n << 1;
    let mut i = 0;
    while i < key.len() {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            key[i] = byte;
            break;
        }
        key[i] = byte | 0x80;
        i += 1;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_keys_are_distinct_and_sized() {
        let keys: std::collections::HashSet<Vec<u8>> =
            (0..100_000).map(|n| varint_key(n, 8)).collect();
        assert_eq!(keys.len(), 100_000);
        assert!(keys.iter().all(|k| k.len() == 8));
        assert_eq!(varint_key(1, 4), vec![2, 0, 0, 0]);
    }

    #[tokio::test]
    async fn closed_loop_runs_exactly_total() {
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let (rec, _) = closed_loop(7, 1000, move |_, n| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::Relaxed);
                if n % 100 == 0 {
                    Err(tonic::Status::unavailable("x"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(seen.load(Ordering::Relaxed), 1000);
        assert_eq!(rec.count(), 990);
        assert_eq!(rec.error_count(), 10);
    }
}
