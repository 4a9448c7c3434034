//! Latency recording and etcd benchmark's report (`pkg/report` in etcd): Summary, Response
//! time histogram, Latency distribution, Error distribution — same layout, same meaning.
//!
//! Latencies go into an HDR histogram (nanoseconds, 3 significant digits), so memory stays
//! bounded at any `--total`; the exact fastest, slowest, mean and standard deviation are kept
//! beside it because etcd computes those from every sample, not from buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The percentiles etcd prints, in its order.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// Samples of one client (merged at the end) or of a whole run.
#[derive(Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    count: u64,
    sum_secs: f64,
    sum_sq_secs: f64,
    fastest: Option<Duration>,
    slowest: Option<Duration>,
    /// Error text → how many requests failed with it (etcd's "Error distribution").
    errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // Auto-resizing: the highest trackable value grows as slow samples arrive.
            hist: Histogram::new(3).expect("3 significant digits is a valid histogram"),
            count: 0,
            sum_secs: 0.0,
            sum_sq_secs: 0.0,
            fastest: None,
            slowest: None,
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        if self.hist.record(nanos).is_err() {
            // Only when even auto-resizing cannot cover it (past u64 nanoseconds' scale).
            self.hist.saturating_record(nanos);
        }
        self.count += 1;
        let secs = latency.as_secs_f64();
        self.sum_secs += secs;
        self.sum_sq_secs += secs * secs;
        self.fastest = Some(self.fastest.map_or(latency, |f| f.min(latency)));
        self.slowest = Some(self.slowest.map_or(latency, |s| s.max(latency)));
    }

    pub fn error(&mut self, text: String) {
        *self.errors.entry(text).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.hist
            .add(&other.hist)
            .expect("auto-resizing histograms always merge");
        self.count += other.count;
        self.sum_secs += other.sum_secs;
        self.sum_sq_secs += other.sum_sq_secs;
        for d in [other.fastest, other.slowest].into_iter().flatten() {
            self.fastest = Some(self.fastest.map_or(d, |f| f.min(d)));
            self.slowest = Some(self.slowest.map_or(d, |s| s.max(d)));
        }
        for (text, n) in &other.errors {
            *self.errors.entry(text.clone()).or_default() += n;
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count
    }

    #[cfg(test)]
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The run's statistics, given its wall-clock duration.
    pub fn summary(&self, total: Duration) -> Summary {
        let n = self.count as f64;
        let average = if self.count > 0 {
            self.sum_secs / n
        } else {
            0.0
        };
        // Population standard deviation, as etcd (sqrt of the mean squared deviation).
        let variance = if self.count > 0 {
            (self.sum_sq_secs / n - average * average).max(0.0)
        } else {
            0.0
        };
        let fastest = self.fastest.map_or(0.0, |d| d.as_secs_f64());
        let slowest = self.slowest.map_or(0.0, |d| d.as_secs_f64());
        Summary {
            total: total.as_secs_f64(),
            count: self.count,
            fastest,
            slowest,
            average,
            stddev: variance.sqrt(),
            rps: if total.is_zero() {
                0.0
            } else {
                n / total.as_secs_f64()
            },
            histogram: self.buckets(fastest, slowest),
            percentiles: PERCENTILES
                .iter()
                .map(|&p| (p, self.quantile_secs(p / 100.0)))
                .collect(),
            curve: self.curve(),
            errors: self.errors.clone(),
        }
    }

    fn quantile_secs(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let v = self.hist.value_at_quantile(q) as f64 / 1e9;
        // The HDR value is the bucket's highest equivalent; never report past the exact extremes.
        let lo = self.fastest.map_or(0.0, |d| d.as_secs_f64());
        let hi = self.slowest.map_or(0.0, |d| d.as_secs_f64());
        v.clamp(lo, hi)
    }

    /// etcd's response time histogram: 10 equal-width buckets from fastest to slowest, each
    /// labelled with its upper bound (the first one's bound is the fastest sample itself).
    fn buckets(&self, fastest: f64, slowest: f64) -> Vec<(f64, u64)> {
        const BUCKETS: usize = 10;
        if self.count == 0 {
            return Vec::new();
        }
        let width = (slowest - fastest) / BUCKETS as f64;
        let mut bounds: Vec<f64> = (0..BUCKETS).map(|i| fastest + width * i as f64).collect();
        bounds.push(slowest);
        let mut counts = vec![0u64; bounds.len()];
        for v in self.hist.iter_recorded() {
            let secs = (self.hist.median_equivalent(v.value_iterated_to()) as f64 / 1e9)
                .clamp(fastest, slowest);
            let i = bounds.iter().position(|&b| secs <= b).unwrap_or(BUCKETS);
            counts[i] += v.count_at_value();
        }
        bounds.into_iter().zip(counts).collect()
    }

    /// The latency distribution as (percentile, seconds) points for plots: dense toward the
    /// tail, where the curves of two servers differ most.
    fn curve(&self) -> Vec<(f64, f64)> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut points = Vec::new();
        for p in (0..=90).step_by(5) {
            points.push(p as f64);
        }
        points.extend([92.5, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]);
        points
            .into_iter()
            .map(|p| (p, self.quantile_secs(p / 100.0)))
            .collect()
    }
}

/// One run's statistics, printable as etcd prints them and as JSON.
#[derive(Clone, Debug)]
pub struct Summary {
    pub total: f64,
    pub count: u64,
    pub fastest: f64,
    pub slowest: f64,
    pub average: f64,
    pub stddev: f64,
    pub rps: f64,
    pub histogram: Vec<(f64, u64)>,
    pub percentiles: Vec<(f64, f64)>,
    pub curve: Vec<(f64, f64)>,
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    /// The text etcd's benchmark prints (`%4.4f` precision).
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.count > 0 {
            let _ = writeln!(s, "\nSummary:");
            let _ = writeln!(s, "  Total:\t{:.4} secs.", self.total);
            let _ = writeln!(s, "  Slowest:\t{:.4} secs.", self.slowest);
            let _ = writeln!(s, "  Fastest:\t{:.4} secs.", self.fastest);
            let _ = writeln!(s, "  Average:\t{:.4} secs.", self.average);
            let _ = writeln!(s, "  Stddev:\t{:.4} secs.", self.stddev);
            let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.rps);
            let _ = writeln!(s, "\nResponse time histogram:");
            let max = self.histogram.iter().map(|b| b.1).max().unwrap_or(0).max(1);
            for (bound, n) in &self.histogram {
                let bar = "∎".repeat((n * 40 / max) as usize);
                let _ = writeln!(s, "  {bound:.4} [{n}]\t|{bar}");
            }
            let _ = writeln!(s, "\nLatency distribution:");
            for (p, v) in &self.percentiles {
                if *v > 0.0 {
                    let _ = writeln!(s, "  {p}% in {v:.4} secs.");
                }
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (text, n) in &self.errors {
                let _ = writeln!(s, "  [{n}]\t{text}");
            }
        }
        s
    }

    pub fn json(&self) -> Value {
        json!({
            "total_secs": self.total,
            "count": self.count,
            "fastest_secs": self.fastest,
            "slowest_secs": self.slowest,
            "average_secs": self.average,
            "stddev_secs": self.stddev,
            "requests_per_sec": self.rps,
            "histogram": self.histogram.iter().map(|(b, n)| json!([b, n])).collect::<Vec<_>>(),
            "percentiles": self.percentiles.iter().map(|(p, v)| (format!("{p}"), json!(v))).collect::<serde_json::Map<_, _>>(),
            "curve": self.curve.iter().map(|(p, v)| json!([p, v])).collect::<Vec<_>>(),
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn summary_of_known_samples() {
        let mut r = Recorder::default();
        for v in 1..=100 {
            r.record(ms(v));
        }
        let s = r.summary(Duration::from_secs(2));
        assert_eq!(s.count, 100);
        assert!((s.rps - 50.0).abs() < 1e-9);
        assert!((s.fastest - 0.001).abs() < 1e-12 && (s.slowest - 0.100).abs() < 1e-12);
        assert!((s.average - 0.0505).abs() < 1e-9);
        // Population stddev of 1..=100 ms is sqrt((100^2-1)/12) ms.
        assert!((s.stddev - (9999.0f64 / 12.0).sqrt() / 1000.0).abs() < 1e-9);
        let p50 = s.percentiles.iter().find(|p| p.0 == 50.0).unwrap().1;
        let p99 = s.percentiles.iter().find(|p| p.0 == 99.0).unwrap().1;
        assert!((p50 - 0.050).abs() < 0.0001, "p50 {p50}");
        assert!((p99 - 0.099).abs() < 0.0001, "p99 {p99}");
        // 11 buckets as etcd (10 widths plus the slowest), holding every sample.
        assert_eq!(s.histogram.len(), 11);
        assert_eq!(s.histogram.iter().map(|b| b.1).sum::<u64>(), 100);
        assert!((s.histogram[0].0 - 0.001).abs() < 1e-12);
        assert!((s.histogram[10].0 - 0.100).abs() < 1e-12);
    }

    #[test]
    fn merge_equals_recording_together() {
        let (mut a, mut b, mut all) = (
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
        );
        for v in 1..=50 {
            a.record(ms(v));
            all.record(ms(v));
        }
        for v in 51..=100 {
            b.record(ms(v));
            all.record(ms(v));
        }
        b.error("boom".into());
        a.merge(&b);
        let (x, y) = (a.summary(ms(1000)), all.summary(ms(1000)));
        assert_eq!(x.count, y.count);
        assert_eq!((x.fastest, x.slowest), (y.fastest, y.slowest));
        assert!((x.stddev - y.stddev).abs() < 1e-12);
        assert_eq!(x.percentiles, y.percentiles);
        assert_eq!(x.errors.get("boom"), Some(&1));
    }

    #[test]
    fn text_has_etcds_sections() {
        let mut r = Recorder::default();
        r.record(ms(3));
        r.error("rpc error: code = Unavailable".into());
        let t = r.summary(ms(10)).text();
        for needle in [
            "Summary:",
            "Requests/sec:\t100.0000",
            "Response time histogram:",
            "Latency distribution:",
            "  50% in 0.0030 secs.",
            "99.9% in",
            "Error distribution:",
            "[1]\trpc error",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
    }

    #[test]
    fn empty_run_prints_only_errors() {
        let mut r = Recorder::default();
        r.error("unimplemented".into());
        let s = r.summary(ms(10));
        assert_eq!(s.count, 0);
        assert!(!s.text().contains("Summary:"));
        assert!(s.text().contains("unimplemented"));
    }
}
