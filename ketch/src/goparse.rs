//! Text parsing with the rules of Go's `strconv`, `time` and `net/url`, which is what etcd's
//! flags, `ETCD_*` variables and YAML values go through. Users move command lines from etcd, so
//! `--snapshot-count=0x10`, `--grpc-keepalive-time=1h30m` or a URL with a path must be accepted
//! or refused exactly as etcd does, with the reason etcd gives.

use std::net::IpAddr;

/// Why a number did not parse; Go's `strconv.ErrSyntax` and `strconv.ErrRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    Syntax,
    Range,
}

impl NumError {
    /// The text Go's `flag` package prints for built-in numeric flags.
    pub fn flag_text(self) -> &'static str {
        match self {
            NumError::Syntax => "parse error",
            NumError::Range => "value out of range",
        }
    }

    /// The text of a raw `strconv.ParseUint` error, which etcd's uint32 flag prints unchanged.
    pub fn strconv_text(self, input: &str) -> String {
        let why = match self {
            NumError::Syntax => "invalid syntax",
            NumError::Range => "value out of range",
        };
        format!("strconv.ParseUint: parsing {}: {why}", go_quote(input))
    }
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `strconv.ParseUint(s, 0, bits)`: decimal, `0x`, `0o`, `0b` or a leading-zero octal, with
/// `_` allowed between digits.
pub fn parse_uint(s: &str, bits: u32) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let bytes = s.as_bytes();
    let (radix, digits) = if bytes.len() >= 2 && bytes[0] == b'0' {
        match bytes[1].to_ascii_lowercase() {
            b'x' => (16, &s[2..]),
            b'o' => (8, &s[2..]),
            b'b' => (2, &s[2..]),
            _ => (8, &s[1..]),
        }
    } else {
        (10, s)
    };
    if s.contains('_') && !underscores_ok(s) {
        return Err(NumError::Syntax);
    }
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut value: u64 = 0;
    let mut seen_digit = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix).ok_or(NumError::Syntax)? as u64;
        seen_digit = true;
        value = value
            .checked_mul(radix as u64)
            .and_then(|v| v.checked_add(d))
            .ok_or(NumError::Range)?;
    }
    // "0x" alone has no digits.
    if !seen_digit {
        return Err(NumError::Syntax);
    }
    if value > max {
        return Err(NumError::Range);
    }
    Ok(value)
}

/// `strconv.ParseInt(s, 0, 64)`.
pub fn parse_int(s: &str) -> Result<i64, NumError> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(body, 64)?;
    if negative {
        if magnitude > i64::MAX as u64 + 1 {
            return Err(NumError::Range);
        }
        Ok((magnitude as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(magnitude).map_err(|_| NumError::Range)
    }
}

/// Go accepts `_` only between digits (a base prefix counts as a digit).
fn underscores_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = s.as_bytes();
    let mut last = '^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        last = '0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            last = '0';
        } else if c == b'_' {
            if last != '0' {
                return false;
            }
            last = '_';
        } else {
            if last == '_' {
                return false;
            }
            last = '!';
        }
        i += 1;
    }
    last != '_'
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// `time.ParseDuration`: "300ms", "1.5h", "2h45m", "-1s", "0". Returns nanoseconds.
pub fn parse_duration(input: &str) -> Option<i64> {
    let (negative, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let whole: u128 = if int_len > 0 {
            s[..int_len].parse().ok()?
        } else {
            0
        };
        s = &s[int_len..];
        let (mut frac, mut scale, mut frac_len) = (0u128, 1u128, 0usize);
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            for d in rest[..frac_len].bytes().take(18) {
                frac = frac * 10 + (d - b'0') as u128;
                scale *= 10;
            }
            s = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return None;
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND as u128,
            "m" => 60 * NANOS_PER_SECOND as u128,
            "h" => 3600 * NANOS_PER_SECOND as u128,
            _ => return None,
        };
        s = &s[unit_len..];
        total += whole.checked_mul(unit)? + frac * unit / scale;
        if total > (1u128 << 63) {
            return None;
        }
    }
    if negative {
        Some((total as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(total).ok()
    }
}

/// `time.Duration.String`: "0s", "100ms", "1.5s", "2h0m0s".
pub fn format_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < NANOS_PER_SECOND {
        return if u < 1_000 {
            format!("{sign}{u}ns")
        } else if u < 1_000_000 {
            format!("{sign}{}\u{b5}s", with_fraction(u, 3))
        } else {
            format!("{sign}{}ms", with_fraction(u, 6))
        };
    }
    let whole_seconds = u / NANOS_PER_SECOND;
    let seconds = with_fraction(
        (whole_seconds % 60) * NANOS_PER_SECOND + u % NANOS_PER_SECOND,
        9,
    );
    let minutes = (whole_seconds / 60) % 60;
    let hours = whole_seconds / 3600;
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `value / 10^digits` printed with the fraction's trailing zeros dropped.
fn with_fraction(value: u64, digits: u32) -> String {
    let unit = 10u64.pow(digits);
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Go's `%q` for the strings we print: double quotes with Rust's escapes, which agree with
/// Go's for everything an operator types.
pub fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// One URL as etcd's `types.NewURLs` accepts it: scheme http, https, unix or unixs, an
/// authority with a port, and no path. Returns the text etcd would print for it (input
/// trimmed, scheme lower-cased).
pub fn check_member_url(raw: &str) -> Result<String, String> {
    let input = raw.trim();
    let parse_error = |why: &str| format!("parse {}: {why}", go_quote(input));
    let without_fragment = input.split('#').next().unwrap_or("");

    let (scheme, rest) = match split_scheme(without_fragment) {
        SchemeSplit::Missing => return Err(parse_error("missing protocol scheme")),
        SchemeSplit::None => {
            let first_segment = without_fragment.split('/').next().unwrap_or("");
            if first_segment.contains(':') {
                return Err(parse_error(
                    "first path segment in URL cannot contain colon",
                ));
            }
            (String::new(), without_fragment)
        }
        SchemeSplit::Some(scheme, rest) => (scheme.to_ascii_lowercase(), rest),
    };
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {input}"
        ));
    }
    let rest = rest.split('?').next().unwrap_or("");
    let (host, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (&after[..end], &after[end..])
        }
        // "http:foo" is opaque in Go: no host at all.
        None => ("", ""),
    };
    let host = host.rsplit('@').next().unwrap_or("");
    check_host_syntax(host).map_err(|why| parse_error(&why))?;
    if split_host_port(host).is_none() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {input}"
        ));
    }
    if !path.is_empty() {
        return Err(format!("URL must not contain a path: {input}"));
    }
    Ok(format!("{scheme}{}", &input[scheme.len()..]))
}

/// The parsed form of a URL [`check_member_url`] accepted. Go keeps a few URLs this refuses
/// (an empty host, a port above 65535) until it binds or dials; ketch refuses them here.
pub fn member_url(text: &str) -> Result<url::Url, String> {
    url::Url::parse(text).map_err(|e| format!("parse {}: {e}", go_quote(text)))
}

enum SchemeSplit<'a> {
    /// The text starts with ':'.
    Missing,
    /// No scheme: the whole text is a path.
    None,
    Some(&'a str, &'a str),
}

/// Go's `getScheme`: letters, then letters, digits, '+', '-' or '.', up to the first ':'.
fn split_scheme(s: &str) -> SchemeSplit<'_> {
    for (i, c) in s.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return SchemeSplit::Missing,
            ':' => return SchemeSplit::Some(&s[..i], &s[i + 1..]),
            _ => return SchemeSplit::None,
        }
    }
    SchemeSplit::None
}

/// What Go's URL parser refuses in a host: a '[' without ']', a non-numeric port, or a
/// character that may not appear in a host name.
fn check_host_syntax(host: &str) -> Result<(), String> {
    let port_part = if let Some(inner) = host.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err("missing ']' in host".into());
        };
        let after = &inner[close + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("invalid port {} after host", go_quote(after)));
        }
        after
    } else {
        match host.rfind(':') {
            Some(i) => &host[i..],
            None => "",
        }
    };
    if let Some(port) = port_part.strip_prefix(':') {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port {} after host", go_quote(port_part)));
        }
    }
    for c in host.chars() {
        let allowed =
            c.is_ascii_alphanumeric() || !c.is_ascii() || "-._~!$&'()*+,;=:[]<>\"%".contains(c);
        if !allowed {
            return Err(format!(
                "invalid character {} in host name",
                go_quote(&c.to_string())
            ));
        }
    }
    Ok(())
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`; `None` when it is not of that form.
pub fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    if let Some(inner) = hostport.strip_prefix('[') {
        let close = inner.find(']')?;
        let port = inner[close + 1..].strip_prefix(':')?;
        if port.contains(':') || port.contains('[') || port.contains(']') {
            return None;
        }
        return Some((&inner[..close], port));
    }
    let i = hostport.rfind(':')?;
    let (host, port) = (&hostport[..i], &hostport[i + 1..]);
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return None;
    }
    Some((host, port))
}

/// The host of a URL text accepted by [`check_member_url`], without brackets.
pub fn url_host(text: &str) -> &str {
    let after = text.split_once("://").map(|(_, r)| r).unwrap_or("");
    let authority = after.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    split_host_port(hostport).map(|(h, _)| h).unwrap_or("")
}

/// etcd's rule for listen URLs: bind to an IP address or `localhost`, never a name that needs
/// DNS (unix sockets are exempt).
pub fn check_bind_url(text: &str) -> Result<(), String> {
    if text.starts_with("unix://") || text.starts_with("unixs://") {
        return Ok(());
    }
    let host = url_host(text);
    if host == "localhost" || host.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!("expected IP in URL for binding ({text})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_accepts_go_literals() {
        assert_eq!(parse_uint("100", 64), Ok(100));
        assert_eq!(parse_uint("0x10", 64), Ok(16));
        assert_eq!(parse_uint("010", 64), Ok(8));
        assert_eq!(parse_uint("0b101", 64), Ok(5));
        assert_eq!(parse_uint("0o17", 64), Ok(15));
        assert_eq!(parse_uint("1_000", 64), Ok(1000));
        assert_eq!(parse_uint("0", 64), Ok(0));
        assert_eq!(parse_uint("", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("-1", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("1e3", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("0x", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("1__0", 64), Err(NumError::Syntax));
        assert_eq!(parse_uint("4294967296", 32), Err(NumError::Range));
        assert_eq!(parse_uint("18446744073709551616", 64), Err(NumError::Range));
    }

    #[test]
    fn int_takes_a_sign() {
        assert_eq!(parse_int("-5"), Ok(-5));
        assert_eq!(parse_int("+0x10"), Ok(16));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), Err(NumError::Range));
    }

    #[test]
    fn durations_parse_and_print_like_go() {
        assert_eq!(parse_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration("2\u{b5}s"), Some(2_000));
        assert_eq!(parse_duration("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(100_000_000), "100ms");
        assert_eq!(format_duration(1_000_000_000), "1s");
        assert_eq!(format_duration(7_200_000_000_000), "2h0m0s");
        assert_eq!(format_duration(90_500_000_000), "1m30.5s");
        assert_eq!(format_duration(1_500), "1.5\u{b5}s");
    }

    #[test]
    fn urls_are_checked_like_etcd() {
        let text = check_member_url(" HTTP://127.0.0.1:2379 ").unwrap();
        assert_eq!(text, "http://127.0.0.1:2379");
        assert_eq!(member_url(&text).unwrap().port(), Some(2379));
        check_member_url("unix://localhost:2379").unwrap();
        check_member_url("https://[::1]:2379").unwrap();
        // Go accepts these when parsing; they fail later (validation, bind).
        check_member_url("http://:2380").unwrap();
        assert!(member_url("http://:2380").is_err());
        let err = |s: &str| check_member_url(s).unwrap_err();
        assert_eq!(
            err("foo"),
            "URL scheme must be http, https, unix, or unixs: foo"
        );
        assert_eq!(
            err("localhost:2379"),
            "URL scheme must be http, https, unix, or unixs: localhost:2379"
        );
        assert_eq!(
            err("127.0.0.1:2379"),
            "parse \"127.0.0.1:2379\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            err("http://127.0.0.1"),
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            err("http://127.0.0.1:2379/"),
            "URL must not contain a path: http://127.0.0.1:2379/"
        );
        assert_eq!(
            err("http://[::1:2379"),
            "parse \"http://[::1:2379\": missing ']' in host"
        );
        assert_eq!(
            err("http://a b:2379"),
            "parse \"http://a b:2379\": invalid character \" \" in host name"
        );
        assert_eq!(err(""), "URL scheme must be http, https, unix, or unixs: ");
    }

    #[test]
    fn listen_urls_must_be_addresses() {
        check_bind_url("http://127.0.0.1:2379").unwrap();
        check_bind_url("http://localhost:2379").unwrap();
        check_bind_url("http://[::1]:2379").unwrap();
        check_bind_url("unix://anything:1").unwrap();
        assert_eq!(
            check_bind_url("http://example.com:2380").unwrap_err(),
            "expected IP in URL for binding (http://example.com:2380)"
        );
    }
}
