//! `txn`: a transaction read from stdin, interactively (`-i`, with prompts) or from a pipe.
//!
//! The input is three sections, each ended by an empty line: comparisons
//! (`<target>("<key>") <op> "<value>"`), requests run when all comparisons hold, requests run
//! otherwise. Request lines are `put`/`get`/`del` command lines with their flags. The parser
//! follows etcdctl's exactly, including its quirks: a single-quoted word is sliced by the
//! number of words on the line, lease comparisons and unknown operators crash it, a `put` line
//! without a value reads the rest of stdin.

use std::io::{BufRead, BufReader, Read, Write};

use ketch_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ketch_api::etcdserverpb::request_op::Request;
use ketch_api::etcdserverpb::{Compare, RequestOp, TxnRequest};

use crate::cli::parse::{self, ParseError, Parsed};
use crate::cli::spec::{self, Action};
use crate::cli::usage;
use crate::error::{CtlError, CtlResult, EXIT_GO_PANIC};
use crate::gofmt::{self, quote, trim_space};
use crate::{global, kv};

/// Read one line the way Go's `bufio.Reader.ReadString('\n')` does: a line without its
/// newline at the end of input is an `EOF` error (etcdctl exits 3 with `Error: EOF`).
fn read_line(r: &mut impl BufRead) -> CtlResult<Vec<u8>> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(_) if line.last() == Some(&b'\n') => Ok(line),
        Ok(_) => Err(CtlError::invalid_input("EOF")),
        Err(e) => Err(CtlError::invalid_input(e.to_string())),
    }
}

/// The comparison section.
pub fn read_compares(r: &mut impl BufRead) -> CtlResult<Vec<Compare>> {
    let mut cmps = Vec::new();
    loop {
        let line = read_line(r)?;
        let line = trim_space(&line);
        if line.is_empty() {
            return Ok(cmps);
        }
        cmps.push(parse_compare(line)?);
    }
}

/// A request section. A `put` line without a value reads what the buffered reader has not
/// taken from stdin yet, as etcdctl's does.
pub fn read_ops<R: Read>(r: &mut BufReader<R>) -> CtlResult<Vec<RequestOp>> {
    let mut ops = Vec::new();
    loop {
        let line = read_line(r)?;
        let line = trim_space(&line).to_vec();
        if line.is_empty() {
            return Ok(ops);
        }
        ops.push(parse_request(&line, r.get_mut())?);
    }
}

/// etcdctl's `argify`: split a request line into words, honouring quotes.
pub fn argify(line: &[u8]) -> CtlResult<Vec<Vec<u8>>> {
    let mut words = split_words(line);
    let count = words.len();
    for word in words.iter_mut() {
        match word.first() {
            Some(b'\'') => {
                // etcdctl slices `word[1 : len(words)-1]`: the number of words, not the
                // word's length.
                let hi = count as isize - 1;
                if hi as usize > word.len() || hi < 0 {
                    return Err(CtlError::panic(format!(
                        "runtime error: slice bounds out of range [:{hi}] with length {}",
                        word.len()
                    )));
                }
                if hi < 1 {
                    return Err(CtlError::panic(format!(
                        "runtime error: slice bounds out of range [1:{hi}]"
                    )));
                }
                *word = word[1..hi as usize].to_vec();
            }
            Some(b'"') => {
                let text = String::from_utf8_lossy(word).into_owned();
                *word = unquote(&text).ok_or_else(|| CtlError::invalid_input("invalid syntax"))?;
            }
            _ => {}
        }
    }
    Ok(words)
}

/// The words of `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`, leftmost first. `\s` is
/// ASCII whitespace (Go's RE2 class).
fn split_words(line: &[u8]) -> Vec<Vec<u8>> {
    let is_space = |b: u8| matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let start = i;
        let end = match line[i] {
            b'"' => {
                let mut j = i + 1;
                let mut closed = None;
                while j < line.len() {
                    match line[j] {
                        b'"' => {
                            closed = Some(j + 1);
                            break;
                        }
                        // `\\.`: any character but a newline may follow the backslash.
                        b'\\' if j + 1 < line.len() && line[j + 1] != b'\n' => j += 2,
                        b'\\' => break,
                        _ => j += 1,
                    }
                }
                closed
            }
            b'\'' => line[i + 1..]
                .iter()
                .position(|&b| b == b'\'')
                .map(|p| i + 1 + p + 1),
            b if is_space(b) => None,
            _ => Some(
                line[i..]
                    .iter()
                    .position(|&b| is_space(b))
                    .map_or(line.len(), |p| i + p),
            ),
        };
        match end {
            Some(end) => {
                words.push(line[start..end].to_vec());
                i = end;
            }
            None => i += 1,
        }
    }
    words
}

/// `strconv.Unquote` for a double-quoted Go string literal; escapes `\x` and octal give raw
/// bytes.
pub fn unquote(s: &str) -> Option<Vec<u8>> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => match chars.next()? {
                'a' => out.push(0x07),
                'b' => out.push(0x08),
                'f' => out.push(0x0c),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                't' => out.push(b'\t'),
                'v' => out.push(0x0b),
                '\\' => out.push(b'\\'),
                '"' => out.push(b'"'),
                'x' => out.push(hex(&mut chars, 2)? as u8),
                'u' => out.extend(char::from_u32(hex(&mut chars, 4)?)?.to_string().as_bytes()),
                'U' => out.extend(char::from_u32(hex(&mut chars, 8)?)?.to_string().as_bytes()),
                d @ '0'..='7' => {
                    let mut v = d.to_digit(8)?;
                    for _ in 0..2 {
                        v = v * 8 + chars.next()?.to_digit(8)?;
                    }
                    if v > 255 {
                        return None;
                    }
                    out.push(v as u8);
                }
                _ => return None,
            },
            c => {
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Some(out)
}

/// Go's `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)`: how many values were scanned and
/// the values themselves (empty when not reached). What stopped the scan does not matter:
/// etcdctl only reports the count and the values.
fn scan_compare(rest: &str) -> (usize, String, String, String) {
    let mut s = Scanner {
        chars: rest.chars().collect(),
        pos: 0,
    };
    let mut got = (0, String::new(), String::new(), String::new());
    let Some(key) = s.quoted() else { return got };
    got = (1, key, got.2, got.3);
    // The literal `)`, then the format's space: one or more spaces, or the end of input.
    if s.next() != Some(')') || !s.format_space() {
        return got;
    }
    let Some(op) = s.word() else { return got };
    got = (2, got.1, op, got.3);
    if !s.format_space() {
        return got;
    }
    if let Some(val) = s.quoted() {
        got = (3, got.1, got.2, val);
    }
    got
}

struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        self.pos += 1;
        c
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_whitespace() && c != '\n') {
            self.pos += 1;
        }
    }

    /// A space in the format: at least one space, or the end of input.
    fn format_space(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(c) if c.is_whitespace() && c != '\n' => {
                self.skip_space();
                true
            }
            Some(_) => false,
        }
    }

    /// `%s`: the next run of non-space characters.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        self.peek()?;
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace()) {
            self.pos += 1;
        }
        Some(self.chars[start..self.pos].iter().collect())
    }

    /// `%q`: a double-quoted (escapes decoded) or back-quoted string.
    fn quoted(&mut self) -> Option<String> {
        self.skip_space();
        match self.next()? {
            '`' => {
                let mut s = String::new();
                loop {
                    match self.next()? {
                        '`' => return Some(s),
                        c => s.push(c),
                    }
                }
            }
            '"' => {
                let mut lit = String::from('"');
                loop {
                    let c = self.next()?;
                    lit.push(c);
                    if c == '\\' {
                        lit.push(self.next()?);
                    } else if c == '"' {
                        break;
                    }
                }
                unquote(&lit).map(|b| String::from_utf8_lossy(&b).into_owned())
            }
            _ => None,
        }
    }
}

/// etcdctl's `parseCompare`.
pub fn parse_compare(line: &[u8]) -> CtlResult<Compare> {
    let text = String::from_utf8_lossy(line).into_owned();
    let Some((target, rest)) = text.split_once('(') else {
        return Err(CtlError::invalid_input(format!(
            "malformed comparison: {text}"
        )));
    };
    let (n, key, op, val) = scan_compare(rest);
    if n != 3 {
        return Err(CtlError::invalid_input(format!(
            "malformed comparison: {text}; got {target}({}) {op} {}",
            quote(key.as_bytes()),
            quote(val.as_bytes())
        )));
    }
    let invalid = || CtlError::invalid_input(format!("invalid txn compare request: {text}"));
    let number = || gofmt::parse_int(&val, 10).map_err(|_| invalid());
    let (compare_target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(val.clone().into_bytes().into()),
        ),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(0)),
        _ => {
            return Err(CtlError::invalid_input(format!(
                "malformed comparison: {text} (unknown target {target})"
            )));
        }
    };
    // clientv3.Compare checks the operator first, then the value's type.
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => return Err(CtlError::panic("Unknown result op")),
    };
    if compare_target == CompareTarget::Lease {
        // etcdctl passes the lease as a string, which clientv3 rejects by panicking.
        return Err(CtlError::panic("bad value"));
    }
    Ok(Compare {
        result: result as i32,
        target: compare_target as i32,
        key: key.into_bytes().into(),
        range_end: Default::default(),
        target_union: Some(union),
    })
}

/// What Go prints when every goroutine is blocked: etcdctl waits forever for a request a
/// `help` line never produces, and the runtime ends it.
fn deadlock() -> CtlError {
    crate::logline::emit(
        "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 [chan receive]:\n",
    );
    CtlError::silent(EXIT_GO_PANIC)
}

/// etcdctl's `parseRequestUnion`: parse a request line as a `put`, `get` or `del` command
/// line (prefixes allowed).
pub fn parse_request(line: &[u8], rest_of_stdin: &mut dyn Read) -> CtlResult<RequestOp> {
    let args = argify(line)?;
    let text = String::from_utf8_lossy(line).into_owned();
    if args.len() < 2 {
        return Err(CtlError::invalid_input(format!(
            "invalid txn compare request: {text}"
        )));
    }
    let invalid = || CtlError::invalid_input(format!("invalid txn request: {text}"));
    let root = spec::txn_request_root();
    let inv = match parse::parse(&root, &args) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help(inv)) => {
            let _ =
                std::io::stdout().write_all(usage::cobra_usage(&inv.path, &inv.flags).as_bytes());
            return Err(deadlock());
        }
        Err(ParseError::UnknownCommand { .. }) => return Err(invalid()),
        Err(ParseError::Flag { invocation, .. }) => {
            // Errors are silenced here, but cobra still prints the usage, to stderr.
            let text = usage::cobra_usage(&invocation.path, &invocation.flags);
            crate::logline::emit(&format!("{text}\n"));
            return Err(invalid());
        }
    };
    let request = match inv.command().action {
        Some(Action::Put) => {
            Request::RequestPut(kv::put_request(&inv.args, &inv.flags, rest_of_stdin)?)
        }
        Some(Action::Get) => Request::RequestRange(kv::range_request(&inv.args, &inv.flags)?),
        Some(Action::Del) => {
            Request::RequestDeleteRange(kv::delete_request(&inv.args, &inv.flags)?)
        }
        _ => return Err(deadlock()),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

pub async fn run(inv: &mut parse::Invocation<'_>) -> CtlResult {
    if !inv.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument"));
    }
    let interactive = inv.flags.bool("interactive");
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    // Go's bufio.Reader: 4096 bytes at a time, the rest stays in stdin.
    let mut reader = BufReader::with_capacity(4096, std::io::stdin());
    let prompt = |s: &str| -> CtlResult {
        if interactive {
            writeln!(std::io::stdout().lock(), "{s}")?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let compare = read_compares(&mut reader)?;
    prompt("success requests (get, put, del):")?;
    let success = read_ops(&mut reader)?;
    prompt("failure requests (get, put, del):")?;
    let failure = read_ops(&mut reader)?;
    // etcdctl commits without a deadline.
    let resp = client
        .txn(
            TxnRequest {
                compare,
                success,
                failure,
            },
            None,
        )
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    printer.txn(&mut std::io::stdout().lock(), &resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        argify(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn argify_quotes_like_etcdctl() {
        assert_eq!(words("put a b"), vec!["put", "a", "b"]);
        assert_eq!(words("put \"a b\" \"c\\td\""), vec!["put", "a b", "c\td"]);
        assert_eq!(words("put \"a\\x41\" v"), vec!["put", "aA", "v"]);
        // Single quotes are cut at len(words)-1: three words keep one character.
        assert_eq!(words("put 'xyz' b"), vec!["put", "x", "b"]);
        assert_eq!(words("put 'x' 'y'"), vec!["put", "x", "y"]);
        assert_eq!(
            words("put k --prev-kv=true"),
            vec!["put", "k", "--prev-kv=true"]
        );
    }

    #[test]
    fn argify_errors() {
        let e = argify(b"put 'x' b c d e f").unwrap_err();
        assert_eq!(e.stderr_text(), "panic: runtime error: slice bounds out of range [:6] with length 3\n\ngoroutine 1 [running]:\n");
        assert_eq!(e.code, 2);
        let e = argify(b"put \"a\\q\" b").unwrap_err();
        assert_eq!((e.code, e.to_string().as_str()), (3, "invalid syntax"));
    }

    #[test]
    fn compares() {
        let c = parse_compare(b"ver(\"foo\") > \"0\"").unwrap();
        assert_eq!(c.target, CompareTarget::Version as i32);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(&c.key[..], b"foo");
        assert_eq!(c.target_union, Some(TargetUnion::Version(0)));
        let c = parse_compare(b"val(\"k\") != \"v w\"").unwrap();
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Value(b"v w".to_vec().into()))
        );
        let c = parse_compare(b"m(\"k\")<\"3\"").unwrap_err();
        assert_eq!(
            c.to_string(),
            "malformed comparison: m(\"k\")<\"3\"; got m(\"k\")  \"\""
        );
    }

    #[test]
    fn compare_errors_match_etcdctl() {
        let err = |s: &str| parse_compare(s.as_bytes()).unwrap_err();
        assert_eq!(err("ver").to_string(), "malformed comparison: ver");
        assert_eq!(
            err("ver(\"foo\")").to_string(),
            "malformed comparison: ver(\"foo\"); got ver(\"foo\")  \"\""
        );
        assert_eq!(
            err("ver(foo) = \"1\"").to_string(),
            "malformed comparison: ver(foo) = \"1\"; got ver(\"\")  \"\""
        );
        assert_eq!(
            err("foo(\"foo\") = \"1\"").to_string(),
            "malformed comparison: foo(\"foo\") = \"1\" (unknown target foo)"
        );
        assert_eq!(
            err("ver(\"foo\") = \"x\"").to_string(),
            "invalid txn compare request: ver(\"foo\") = \"x\""
        );
        assert_eq!(err("ver(\"foo\") = \"x\"").code, 3);
        assert_eq!(
            err("ver(\"foo\") >= \"1\"").stderr_text(),
            "panic: Unknown result op\n\ngoroutine 1 [running]:\n"
        );
        assert_eq!(
            err("lease(\"foo\") = \"1\"").stderr_text(),
            "panic: bad value\n\ngoroutine 1 [running]:\n"
        );
    }

    #[test]
    fn requests_parse_as_commands() {
        let op = parse_request(b"put --prev-kv a b", &mut std::io::empty()).unwrap();
        let Some(Request::RequestPut(p)) = op.request else {
            panic!("expected a put")
        };
        assert!(p.prev_kv);
        assert_eq!((&p.key[..], &p.value[..]), (&b"a"[..], &b"b"[..]));
        let op = parse_request(b"g a --prefix", &mut std::io::empty()).unwrap();
        let Some(Request::RequestRange(r)) = op.request else {
            panic!("expected a get")
        };
        assert_eq!(&r.range_end[..], b"b");
        let e = parse_request(b"get", &mut std::io::empty()).unwrap_err();
        assert_eq!(e.to_string(), "invalid txn compare request: get");
        let e = parse_request(b"bogus a", &mut std::io::empty()).unwrap_err();
        assert_eq!(e.to_string(), "invalid txn request: bogus a");
        let e = parse_request(b"put a", &mut std::io::empty()).unwrap_err();
        assert_eq!(
            (e.code, e.to_string().as_str()),
            (
                128,
                "put command needs 1 argument and input from stdin or 2 arguments"
            )
        );
        let e = parse_request(b"get a --consistency x", &mut std::io::empty()).unwrap_err();
        assert_eq!(e.code, 4);
    }

    #[test]
    fn sections_end_with_blank_lines_and_need_newlines() {
        let mut r = BufReader::new(&b"ver(\"a\") = \"0\"\n\nput a b\n\nget a\n\n"[..]);
        assert_eq!(read_compares(&mut r).unwrap().len(), 1);
        assert_eq!(read_ops(&mut r).unwrap().len(), 1);
        assert_eq!(read_ops(&mut r).unwrap().len(), 1);
        // No compares, no success requests, then a failure request without its newline.
        let mut r = BufReader::new(&b"\n\nput c d"[..]);
        assert!(read_compares(&mut r).unwrap().is_empty());
        assert!(read_ops(&mut r).unwrap().is_empty());
        let e = read_ops(&mut r).unwrap_err();
        assert_eq!((e.code, e.to_string().as_str()), (3, "EOF"));
    }
}
