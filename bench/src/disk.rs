//! `fsync`: the disk's floor for a durable write — `--total` writes of `--size` bytes at
//! consecutive offsets of a preallocated file in `--dir`, each followed by fdatasync, the
//! pattern of a WAL append. Issue 5 states the 1-client put target against this floor plus a
//! loopback round trip, so the comparison measures it on the same disk as the data.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::flags::Flags;
use crate::report::Recorder;
use crate::Outcome;

pub const FSYNC_FLAGS: &[&str] = &["dir", "total", "size"];

pub fn fsync(flags: &Flags) -> Result<Outcome, String> {
    flags.allow(FSYNC_FLAGS)?;
    let dir = flags.string("dir", ".");
    let total: u64 = flags.get("total", 1000)?;
    let size: usize = flags.get::<usize>("size", 512)?.max(1);
    let path =
        std::path::Path::new(&dir).join(format!("ketch-bench-fsync-{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<(Recorder, Duration)> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        // Written and synced once up front, as a WAL segment is preallocated: the measured
        // syncs then carry data only, no block allocation.
        let zeros = vec![0u8; 1 << 20];
        let mut left = total * size as u64;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        file.seek(SeekFrom::Start(0))?;
        let record = vec![0xa5u8; size];
        let mut rec = Recorder::default();
        let started = Instant::now();
        for i in 0..total {
            let t = Instant::now();
            file.write_all_at(&record, i * size as u64)?;
            file.sync_data()?;
            rec.record(t.elapsed());
        }
        Ok((rec, started.elapsed()))
    })();
    let _ = std::fs::remove_file(&path);
    let (rec, elapsed) = result.map_err(|e| format!("fsync in {dir}: {e}"))?;
    let mut outcome = Outcome::measured("fsync", rec.summary(elapsed));
    outcome.notes.push(format!(
        "{total} writes of {size} B, each followed by fdatasync, in {dir}"
    ));
    Ok(outcome)
}
