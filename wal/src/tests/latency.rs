//! Save latency, against a bare `pwrite` + `fdatasync` on the same filesystem. Ignored by
//! default; run it with
//!
//! ```text
//! cargo test -p ketch-wal --release -- --ignored --nocapture save_latency_report
//! ```
//!
//! `KETCH_WAL_BENCH_DIR` picks the filesystem (default: the system temp dir) and
//! `KETCH_WAL_BENCH_SAVES` the number of saves per variant (default 3000). Variants run
//! interleaved, one operation each in turn, so that noise from other work on the machine hits
//! them alike.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::segment::preallocate;
use crate::Wal;

struct Stats {
    name: String,
    micros: Vec<f64>,
}

impl Stats {
    fn new(name: impl Into<String>) -> Stats {
        Stats {
            name: name.into(),
            micros: Vec::new(),
        }
    }
    fn time(&mut self, f: impl FnOnce()) {
        let start = Instant::now();
        f();
        self.micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    fn print(&mut self) {
        let v = &mut self.micros;
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        println!(
            "{:<44} n={:<5} mean={:>6.1}us p50={:>6.1}us p90={:>6.1}us p99={:>7.1}us max={:>8.1}us",
            self.name,
            v.len(),
            v.iter().sum::<f64>() / v.len() as f64,
            pct(0.5),
            pct(0.9),
            pct(0.99),
            v[v.len() - 1]
        );
    }
}

/// A preallocated file taking `pwrite(len)` + `fdatasync` appends: the floor for a save.
struct RawAppender {
    file: File,
    offset: u64,
    buf: Vec<u8>,
}

impl RawAppender {
    fn new(dir: &Path, len: usize, how: Preallocation) -> RawAppender {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("raw"))
            .unwrap();
        preallocate(&file, 64 << 20, how).unwrap();
        file.sync_all().unwrap();
        RawAppender {
            file,
            offset: 0,
            buf: vec![0xab; len],
        }
    }
    fn append(&mut self) {
        self.file.write_all_at(&self.buf, self.offset).unwrap();
        self.file.sync_data().unwrap();
        self.offset += self.buf.len() as u64;
    }
}

fn run_variant_set(base: &Path, data_len: usize, saves: usize) {
    let mut dirs = Vec::new();
    let mut wals = Vec::new();
    let mut raws = Vec::new();
    let mut stats = Vec::new();
    for how in [Preallocation::Fallocate, Preallocation::ZeroFill] {
        let d = tempfile::tempdir_in(base).unwrap();
        let start = Instant::now();
        let wal = Wal::create(
            &d.path().join("wal"),
            b"bench",
            WalOptions {
                segment_size: 64 << 20,
                preallocation: how,
            },
        )
        .unwrap();
        println!(
            "create with {how:?}: {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        wals.push(wal);
        stats.push(Stats::new(format!(
            "save 1 entry ({data_len} B) + hs, {how:?}"
        )));
        dirs.push(d);
    }
    // The raw appends write what one save writes: the same number of bytes.
    let mut probe = Vec::new();
    let e = {
        let mut e = entry(1, 1);
        e.data = vec![7u8; data_len].into();
        e
    };
    record::append_record(&mut probe, 1, record::RecordType::Entry, 1, |b| {
        record::put_message(b, &e)
    })
    .unwrap();
    record::append_record(&mut probe, 2, record::RecordType::HardState, 0, |b| {
        record::put_message(b, &hard_state(1, 1, 1))
    })
    .unwrap();
    for how in [Preallocation::Fallocate, Preallocation::ZeroFill] {
        let d = tempfile::tempdir_in(base).unwrap();
        raws.push(RawAppender::new(d.path(), probe.len(), how));
        stats.push(Stats::new(format!(
            "raw pwrite({}) + fdatasync, {how:?}",
            probe.len()
        )));
        dirs.push(d);
    }

    let warmup = saves / 10;
    for i in 0..warmup + saves {
        let index = i as u64 + 1;
        let mut e = entry(index, 1);
        e.data = vec![(i % 251) as u8; data_len].into();
        let hs = hard_state(1, 1, index);
        // Rotate the order so that no variant always follows the same one.
        for k in 0..4 {
            let v = (i + k) % 4;
            let record = i >= warmup;
            let st = &mut stats[v];
            let mut op = || {
                if v < 2 {
                    wals[v].save(Some(&hs), std::slice::from_ref(&e)).unwrap()
                } else {
                    raws[v - 2].append()
                }
            };
            if record {
                st.time(op);
            } else {
                op();
            }
        }
    }
    for s in &mut stats {
        s.print();
    }
    // Recovery reads the whole live segment, preallocated tail included.
    for (d, wal) in dirs.iter().zip(wals) {
        drop(wal);
        let start = Instant::now();
        let (_, rec) = Wal::open(&d.path().join("wal"), WalOptions::default()).unwrap();
        println!(
            "open of a 64 MiB segment holding {} saves: {:.1} ms",
            rec.entries.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture, preferably --release"]
fn save_latency_report() {
    let base = std::env::var_os("KETCH_WAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let saves = std::env::var("KETCH_WAL_BENCH_SAVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    println!("filesystem of {}", base.display());
    for data_len in [100, 4000] {
        run_variant_set(&base, data_len, saves);
    }
}
