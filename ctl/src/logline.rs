//! The log lines etcdctl 3.4 writes to stderr besides its own messages: clientv3's zap warning
//! for every failed unary RPC attempt, and capnslog lines from flag handling. Timestamps are
//! UTC (etcdctl uses local time; the two agree on hosts that run in UTC).

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Broken-down UTC time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    micros: u64,
}

fn now() -> Civil {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        micros: since.subsec_micros() as u64,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// zap's ISO8601 time: `2026-11-22T01:04:34.418Z`.
fn zap_time(t: &Civil) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.micros / 1000
    )
}

/// capnslog's time: `2026-11-22 01:05:29.901286`.
fn capnslog_time(t: &Civil) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
    )
}

/// A string as zap's JSON encoder writes it: quotes, backslashes and control characters
/// escaped, everything else (including non-ASCII) as is.
fn zap_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// clientv3's `retrying of unary invoker failed` warning for one failed attempt.
pub fn retry_warning(target: &str, attempt: u32, error: &str) -> String {
    format!(
        "{{\"level\":\"warn\",\"ts\":{},\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":{attempt},\"error\":{}}}\n",
        zap_string(&zap_time(&now())),
        zap_string(target),
        zap_string(error)
    )
}

/// A capnslog line from etcd's `pkg/flags`: `<time> W | pkg/flags: <message>`.
pub fn capnslog(level: char, message: &str) -> String {
    format!("{} {level} | pkg/flags: {message}\n", capnslog_time(&now()))
}

/// Write a log line to stderr; like Go's loggers, ignore write errors.
pub fn emit(line: &str) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A random (version 4) UUID, as clientv3 names its endpoint resolver group.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !filled {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mixed = nanos ^ (std::process::id() as u128) << 64;
        b = mixed.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn warning_shape() {
        let line = retry_warning(
            "endpoint://client-x/127.0.0.1:2379",
            0,
            "rpc error: code = OutOfRange desc = \"q\"",
        );
        assert!(line.starts_with("{\"level\":\"warn\",\"ts\":\""));
        assert!(line.ends_with(
            "\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"endpoint://client-x/127.0.0.1:2379\",\"attempt\":0,\"error\":\"rpc error: code = OutOfRange desc = \\\"q\\\"\"}\n"
        ));
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
