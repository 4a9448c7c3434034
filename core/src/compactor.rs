//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), as etcd 3.4's
//! v3compactor: only the leader compacts, through the log like a client's Compact.
//! - periodic: every retention/10 (at most 6 min) remember the current revision; once a
//!   retention period has passed since the last success (then every min(retention, 1 h)),
//!   compact to the revision remembered one retention period ago.
//! - revision: every 5 minutes compact to current revision minus the retention.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ketch_api::etcdserverpb::CompactionRequest;
use ketch_api::ketchpb::raft_request::Request;
use ketch_api::status::EtcdError;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::AutoCompactionMode;
use crate::server::Server;

/// What `--auto-compaction-retention` means for the given mode: a plain integer is hours in
/// periodic mode and revisions in revision mode; otherwise a duration ("30m", "1h30m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Off,
    Period(Duration),
    Revisions(i64),
}

pub fn parse_retention(mode: AutoCompactionMode, text: &str) -> Result<Retention, String> {
    if let Ok(n) = text.trim().parse::<i64>() {
        if n == 0 {
            return Ok(Retention::Off);
        }
        if n > 0 {
            return Ok(match mode {
                AutoCompactionMode::Periodic => {
                    Retention::Period(Duration::from_secs(n as u64 * 3600))
                }
                AutoCompactionMode::Revision => Retention::Revisions(n),
            });
        }
    }
    let d = parse_go_duration(text).ok_or_else(|| {
        format!("error parsing CompactionRetention: time: invalid duration {text:?}")
    })?;
    if d.is_zero() {
        return Ok(Retention::Off);
    }
    Ok(match mode {
        AutoCompactionMode::Periodic => Retention::Period(d),
        // etcd converts the duration to an integer count in revision mode.
        AutoCompactionMode::Revision => Retention::Revisions(d.as_nanos() as i64),
    })
}

/// Go's time.ParseDuration for the units etcd users write (ns, us, ms, s, m, h; fractions).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos;
    }
    Some(Duration::from_nanos(total as u64))
}

pub async fn run(server: Arc<Server>, retention: Retention, mut shutdown: watch::Receiver<bool>) {
    match retention {
        Retention::Off => {}
        Retention::Period(period) => {
            tokio::select! {
                _ = periodic(&server, period) => {}
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
            }
        }
        Retention::Revisions(keep) => {
            tokio::select! {
                _ = by_revision(&server, keep) => {}
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
            }
        }
    }
}

fn is_leader(server: &Server) -> bool {
    server.cluster.leader() == server.cluster.member_id
}

async fn compact(server: &Server, rev: i64) -> Result<(), EtcdError> {
    match server
        .propose(Request::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        }))
        .await
    {
        Ok(_) | Err(EtcdError::Compacted) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn periodic(server: &Server, period: Duration) {
    let compact_interval = period.min(Duration::from_secs(3600));
    let retry_interval = compact_interval / 10;
    let retentions = (period.as_nanos() / retry_interval.as_nanos().max(1)) as usize + 1;
    let mut revs: VecDeque<i64> = VecDeque::new();
    let mut last_success = Instant::now();
    let mut base_interval = period;
    loop {
        revs.push_back(server.store.current_revision());
        if revs.len() > retentions {
            revs.pop_front();
        }
        tokio::time::sleep(retry_interval).await;
        if !is_leader(server) || last_success.elapsed() < base_interval {
            continue;
        }
        base_interval = compact_interval;
        let rev = revs[0];
        info!(target: "compactor", "Starting auto-compaction at revision {rev} (retention: {period:?})");
        match compact(server, rev).await {
            Ok(()) => {
                info!(target: "compactor", "Finished auto-compaction at revision {rev}");
                last_success = Instant::now();
            }
            Err(e) => {
                warn!(target: "compactor", "Failed auto-compaction at revision {rev} ({e}); retry after {retry_interval:?}")
            }
        }
    }
}

async fn by_revision(server: &Server, keep: i64) {
    const INTERVAL: Duration = Duration::from_secs(300);
    let mut prev = 0;
    loop {
        tokio::time::sleep(INTERVAL).await;
        if !is_leader(server) {
            continue;
        }
        let rev = server.store.current_revision() - keep;
        if rev <= 0 || rev == prev {
            continue;
        }
        info!(target: "compactor", "Starting auto-compaction at revision {rev} (retention: {keep} revisions)");
        match compact(server, rev).await {
            Ok(()) => {
                info!(target: "compactor", "Finished auto-compaction at revision {rev}");
                prev = rev;
            }
            Err(e) => warn!(target: "compactor", "Failed auto-compaction at revision {rev} ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_like_etcd() {
        use AutoCompactionMode::*;
        assert_eq!(parse_retention(Periodic, "0"), Ok(Retention::Off));
        assert_eq!(
            parse_retention(Periodic, "1"),
            Ok(Retention::Period(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_retention(Periodic, "1s"),
            Ok(Retention::Period(Duration::from_secs(1)))
        );
        assert_eq!(
            parse_retention(Periodic, "1h30m"),
            Ok(Retention::Period(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_retention(Revision, "1000"),
            Ok(Retention::Revisions(1000))
        );
        assert!(parse_retention(Periodic, "abc").is_err());
    }
}
