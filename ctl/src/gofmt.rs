//! Go's text conventions that etcdctl's output and error messages are made of: `strconv`
//! quoting and number parsing, `time.Duration` parsing and printing, go-humanize's byte sizes,
//! `encoding/csv` for string-slice flags and `unicode.IsPrint`-style checks. Each function
//! reproduces the Go behaviour byte for byte for the inputs etcdctl feeds it.

use std::fmt::Write as _;

/// `strconv.Quote` over raw bytes: printable runes as they are, invalid UTF-8 as `\xNN`.
pub fn quote(bytes: &[u8]) -> String {
    quote_with(bytes, '"')
}

/// `strconv.QuoteRune`, which `%q` uses for a byte or rune (pflag's shorthand errors).
pub fn quote_rune(r: char) -> String {
    let mut buf = [0u8; 4];
    quote_with(r.encode_utf8(&mut buf).as_bytes(), '\'')
}

fn quote_with(bytes: &[u8], q: char) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push(q);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            escape_rune(&mut out, c, q);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push(q);
    out
}

fn escape_rune(out: &mut String, c: char, q: char) {
    if c == q || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `strconv.IsPrint`: exact for ASCII; outside ASCII, controls,
/// separators other than U+0020, format characters, private use and non-characters are
/// unprintable (Go consults the full Unicode tables; the difference only shows for unassigned
/// code points).
pub fn is_print(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xd800..=0xdfff | 0xe000..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0xf0000..=0x10ffff)
}

/// `strconv.NumError` as Go prints it: `strconv.ParseInt: parsing "x": invalid syntax`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumError {
    pub func: &'static str,
    pub num: String,
    pub range: bool,
}

impl std::fmt::Display for NumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.range {
            "value out of range"
        } else {
            "invalid syntax"
        };
        write!(
            f,
            "strconv.{}: parsing {}: {}",
            self.func,
            quote(self.num.as_bytes()),
            why
        )
    }
}

/// `strconv.ParseInt(s, base, 64)`. On a range error the value is clamped, as in Go, and
/// returned alongside the error because pflag keeps it.
pub fn parse_int(s: &str, base: u32) -> Result<i64, (i64, NumError)> {
    let err = |range| NumError {
        func: "ParseInt",
        num: s.to_string(),
        range,
    };
    if s.is_empty() {
        return Err((0, err(false)));
    }
    let (neg, digits) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let un = match parse_uint(digits, base) {
        Ok(v) => v,
        Err(true) => u64::MAX,
        Err(false) => return Err((0, err(false))),
    };
    let cutoff = 1u64 << 63;
    if !neg && un >= cutoff {
        return Err((i64::MAX, err(true)));
    }
    if neg && un > cutoff {
        return Err((i64::MIN, err(true)));
    }
    Ok(if neg {
        (un as i64).wrapping_neg()
    } else {
        un as i64
    })
}

/// `strconv.ParseUint` digits; `Err(true)` is a range error, `Err(false)` a syntax error.
fn parse_uint(s: &str, base: u32) -> Result<u64, bool> {
    if s.is_empty() {
        return Err(false);
    }
    let b = s.as_bytes();
    let base0 = base == 0;
    let (base, body) = if base0 {
        if b[0] == b'0' && b.len() >= 3 && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
            let base = match b[1].to_ascii_lowercase() {
                b'b' => 2,
                b'o' => 8,
                _ => 16,
            };
            (base, &s[2..])
        } else if b[0] == b'0' {
            (8, &s[1..])
        } else {
            (10, s)
        }
    } else {
        (base, s)
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    let mut overflow = false;
    for c in body.bytes() {
        if c == b'_' && base0 {
            underscores = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 10,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return Err(false),
        };
        if d >= base {
            return Err(false);
        }
        match n
            .checked_mul(base as u64)
            .and_then(|v| v.checked_add(d as u64))
        {
            Some(v) => n = v,
            None => overflow = true,
        }
    }
    if underscores && !underscore_ok(s) {
        return Err(false);
    }
    if overflow {
        return Err(true);
    }
    Ok(n)
}

/// Go's rule for `_` in base-0 literals: only between digits, or right after a base prefix.
fn underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let hex = b.len() >= 2 && b[0] == b'0' && b[1].eq_ignore_ascii_case(&b'x');
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `strconv.ParseBool`, with Go's error text.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            quote(s.as_bytes())
        )),
    }
}

/// `time.ParseDuration`, in nanoseconds.
pub fn parse_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", quote(orig.as_bytes()));
    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Leading integer.
        let mut i = 0;
        let mut v: u64 = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > (1u64 << 63) / 10 {
                return Err(invalid());
            }
            v = v * 10 + (s[i] - b'0') as u64;
            if v > 1u64 << 63 {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // Fraction.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut i = 0;
            let mut overflow = false;
            while i < s.len() && s[i].is_ascii_digit() {
                if !overflow {
                    if f > ((1u64 << 63) - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + (s[i] - b'0') as u64;
                        if y > 1u64 << 63 {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > 0;
            s = &s[i..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let mut i = 0;
        while i < s.len() && !(s[i] == b'.' || s[i].is_ascii_digit()) {
            i += 1;
        }
        if i == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                quote(orig.as_bytes())
            ));
        }
        let unit_name = &s[..i];
        s = &s[i..];
        let unit: u64 = match unit_name {
            b"ns" => 1,
            // "µs" (micro sign) and "μs" (Greek mu)
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit_name),
                    quote(orig.as_bytes())
                ))
            }
        };
        if v > (1u64 << 63) / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > 1u64 << 63 {
                return Err(invalid());
            }
        }
        total += v;
        if total > 1u64 << 63 {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((total as i64).wrapping_neg());
    }
    if total > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// `time.Duration.String()`: `1.302204ms`, `5.00071967s`, `1h2m3s`.
pub fn duration_string(d: i64) -> String {
    let neg = d < 0;
    let mut u = d.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0 => return "0s".to_string(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let frac = fmt_frac(&mut u, prec);
        out = format!("{u}{frac}{unit}");
    } else {
        let frac = fmt_frac(&mut u, 9);
        let secs = u % 60;
        u /= 60;
        let _ = write!(out, "{secs}{frac}s");
        if u > 0 {
            let mins = u % 60;
            u /= 60;
            out = format!("{mins}m{out}");
            if u > 0 {
                out = format!("{u}h{out}");
            }
        }
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// The fraction of `v / 10^prec` as `.123` without trailing zeros; `v` becomes the integer part.
fn fmt_frac(v: &mut u64, prec: u32) -> String {
    let mut digits = Vec::new();
    let mut print = false;
    for _ in 0..prec {
        let digit = *v % 10;
        print = print || digit != 0;
        if print {
            digits.push(b'0' + digit as u8);
        }
        *v /= 10;
    }
    if digits.is_empty() {
        return String::new();
    }
    digits.reverse();
    format!(".{}", String::from_utf8(digits).unwrap_or_default())
}

/// go-humanize's `Bytes`: SI units, one decimal below 10 (`25 kB`, `1.0 MB`).
pub fn humanize_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let e = ((s as f64).ln() / 1000f64.ln()).floor();
    let suffix = SIZES[(e as usize).min(SIZES.len() - 1)];
    let val = ((s as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{} {suffix}", go_fixed(val, 1))
    } else {
        format!("{} {suffix}", go_fixed(val, 0))
    }
}

/// `%.Nf` with Go's rounding (round half to even on exact ties, like Rust's formatter).
fn go_fixed(v: f64, prec: usize) -> String {
    format!("{v:.prec$}")
}

/// One record of Go's `encoding/csv` reader, as pflag's string-slice flags parse their value.
pub fn read_csv_record(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    // Only the first line is a record; a trailing newline ends it.
    let line = s.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(
                            "record on line 1; parse error on line 2, column 0: extraneous or missing \" in quoted-field"
                                .to_string(),
                        )
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        match chars.get(i) {
                            None | Some(',') => break,
                            Some(_) => {
                                return Err(format!(
                                    "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                                    i + 1
                                ))
                            }
                        }
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(format!(
                        "parse error on line 1, column {}: bare \" in non-quoted-field",
                        i + 1
                    ));
                }
                field.push(c);
                i += 1;
            }
        }
        fields.push(field);
        if chars.get(i) == Some(&',') {
            i += 1;
            continue;
        }
        break;
    }
    Ok(fields)
}

/// Go's `encoding/csv` writer for one record (pflag prints string slices with it).
pub fn write_csv_record(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            let needs_quotes = !f.is_empty()
                && (f == "\\." || f.contains(['"', ',', '\r', '\n']) || f.starts_with(is_go_space));
            if needs_quotes {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `%v` of a `[]string`: `[a b c]`.
pub fn string_slice_v(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
pub fn base64_std(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Go's `unicode.IsSpace` (the Unicode White_Space property).
pub fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace` over bytes, for lines that may carry invalid UTF-8 (which never
/// counts as space).
pub fn trim_space(b: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < b.len() {
        match leading_char(&b[start..]) {
            Some((c, n)) if is_go_space(c) => start += n,
            _ => break,
        }
    }
    let mut end = b.len();
    while end > start {
        match trailing_char(&b[start..end]) {
            Some((c, n)) if is_go_space(c) => end -= n,
            _ => break,
        }
    }
    &b[start..end]
}

fn leading_char(b: &[u8]) -> Option<(char, usize)> {
    let n = b.len().min(4);
    (1..=n).find_map(|len| {
        std::str::from_utf8(&b[..len])
            .ok()
            .and_then(|s| s.chars().next())
            .map(|c| (c, len))
    })
}

fn trailing_char(b: &[u8]) -> Option<(char, usize)> {
    let n = b.len().min(4);
    (1..=n).find_map(|len| {
        std::str::from_utf8(&b[b.len() - len..])
            .ok()
            .and_then(|s| s.chars().next())
            .map(|c| (c, len))
    })
}

/// Lowercase hex with `\x` before every byte, as etcdctl's `--hex` prints keys and values.
pub fn hex_escaped(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 4);
    for b in data {
        let _ = write!(s, "\\x{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote(b"foo"), "\"foo\"");
        assert_eq!(quote(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote(b"\n\t\x01\x7f"), "\"\\n\\t\\x01\\x7f\"");
        assert_eq!(quote(b"\xff"), "\"\\xff\"");
        assert_eq!(quote("héllo".as_bytes()), "\"héllo\"");
        assert_eq!(quote("\u{200b}".as_bytes()), "\"\\u200b\"");
        assert_eq!(quote_rune('x'), "'x'");
    }

    #[test]
    fn parse_int_errors_read_like_go() {
        assert_eq!(parse_int("12", 10), Ok(12));
        assert_eq!(parse_int("0x10", 0), Ok(16));
        assert_eq!(parse_int("010", 0), Ok(8));
        assert_eq!(parse_int("-ff", 16), Ok(-255));
        assert_eq!(parse_int("1_000", 0), Ok(1000));
        let e = parse_int("x", 10).unwrap_err().1;
        assert_eq!(
            e.to_string(),
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        let e = parse_int("0x10", 16).unwrap_err().1;
        assert_eq!(
            e.to_string(),
            "strconv.ParseInt: parsing \"0x10\": invalid syntax"
        );
        let (v, e) = parse_int("9223372036854775808", 10).unwrap_err();
        assert_eq!(v, i64::MAX);
        assert_eq!(
            e.to_string(),
            "strconv.ParseInt: parsing \"9223372036854775808\": value out of range"
        );
        assert_eq!(parse_int("-9223372036854775808", 10), Ok(i64::MIN));
    }

    #[test]
    fn durations_parse_and_print_like_go() {
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(
            parse_duration("xx").unwrap_err(),
            "time: invalid duration \"xx\""
        );
        assert_eq!(
            parse_duration("1").unwrap_err(),
            "time: missing unit in duration \"1\""
        );
        assert_eq!(
            parse_duration("1x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"1x\""
        );
        assert_eq!(duration_string(0), "0s");
        assert_eq!(duration_string(1_302_204), "1.302204ms");
        assert_eq!(duration_string(5_000_719_670), "5.00071967s");
        assert_eq!(duration_string(1_500), "1.5µs");
        assert_eq!(duration_string(999), "999ns");
        assert_eq!(duration_string(3_723_000_000_000), "1h2m3s");
        assert_eq!(duration_string(2_000_000_000), "2s");
        assert_eq!(duration_string(-1_000_000), "-1ms");
    }

    #[test]
    fn humanize_matches_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(24576), "25 kB");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(82854982), "83 MB");
        assert_eq!(humanize_bytes(16384), "16 kB");
    }

    #[test]
    fn csv_and_base64() {
        assert_eq!(read_csv_record("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(read_csv_record("\"a,b\",c").unwrap(), vec!["a,b", "c"]);
        assert!(read_csv_record("a\"b").is_err());
        assert_eq!(
            write_csv_record(&["127.0.0.1:2379".to_string()]),
            "127.0.0.1:2379"
        );
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert_eq!(base64_std(b"bar2"), "YmFyMg==");
        assert_eq!(base64_std(b""), "");
        assert_eq!(hex_escaped(b"fo"), "\\x66\\x6f");
    }
}
