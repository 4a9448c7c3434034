//! What may differ between two runs of the same command, and so is masked before comparing:
//! log timestamps, clientv3's random resolver-group id, measured durations, Go stack traces
//! (addresses and line numbers) and grpc-go's own `--debug` logging; and, for steps that race
//! a failing connection against a short deadline, which of its two wordings grpc-go chose.

use regex::bytes::Regex;

use super::harness::Outcome;

pub struct Normalizer {
    zap_ts: Regex,
    uuid: Regex,
    capnslog_ts: Regex,
    grpc_log: Regex,
    took_text: Regex,
    took_json: Regex,
    took_fields: Regex,
    duration: Regex,
    table_fill: Regex,
    db_size: Regex,
    db_size_human: Regex,
    balancer_deadline: Regex,
    lease_granted: Regex,
    hex_id: Regex,
    dec_id: Regex,
    remaining: Regex,
    json_key: Regex,
}

/// Normalised `(stdout, stderr, exit code)`.
pub type Normalized = (Vec<u8>, Vec<u8>, i32);

/// A Go duration as `time.Duration.String()` writes it.
const DURATION: &str = r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|µs|ms|h|m|s))+";

impl Normalizer {
    pub fn new() -> Self {
        let re = |s: &str| Regex::new(s).expect("valid regex");
        Normalizer {
            zap_ts: re(r#""ts":"[^"]*""#),
            uuid: re(r"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
            capnslog_ts: re(
                r"(?m)^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} ",
            ),
            grpc_log: re(r"(?m)^(?:INFO|WARNING|ERROR): [0-9]{4}/[0-9]{2}/[0-9]{2} [0-9:]{8} .*\n"),
            took_text: re(&format!("took = {DURATION}")),
            took_json: re(&format!(r#""took":"{DURATION}""#)),
            took_fields: re(&format!(r#""Took" : {DURATION}"#)),
            duration: re(&format!(r"\b{DURATION}")),
            table_fill: re(r"[- ]+"),
            db_size: re(r#"("dbSize"|"dbSizeInUse"|"DBSize") ?: ?[0-9]+"#),
            db_size_human: re(r"\b[0-9]+(?:\.[0-9])? (?:B|kB|MB|GB)\b"),
            // To the end of the JSON string (clientv3's retry warning) it is quoted in.
            balancer_deadline: re(
                r#"code = DeadlineExceeded desc = latest balancer error: (?:[^"\\]|\\.)*"#,
            ),
            lease_granted: re(r"lease ([0-9a-f]{16}) granted"),
            hex_id: re(r"\b[0-9a-f]{12,16}\b"),
            dec_id: re(r"\b[0-9]{15,20}\b"),
            remaining: re(r#"remaining\([0-9]+s\)|"ttl":[0-9]+|"TTL" : [0-9]+"#),
            json_key: re(r#""key":"[A-Za-z0-9+/=]*""#),
        }
    }

    /// `(stdout, stderr, exit code)` with run-to-run noise masked. `timing` marks output that
    /// carries measured durations (endpoint health); `sizes` output with the backend's size
    /// (endpoint status), which depends on how the server happened to batch its commits.
    pub fn apply(&self, o: &Outcome, timing: bool, sizes: bool) -> (Vec<u8>, Vec<u8>, i32) {
        let mut err = o.stderr.clone();
        err = self
            .zap_ts
            .replace_all(&err, &b"\"ts\":\"TS\""[..])
            .into_owned();
        err = self
            .uuid
            .replace_all(&err, &b"client-UUID"[..])
            .into_owned();
        err = self
            .capnslog_ts
            .replace_all(&err, &b"TIME "[..])
            .into_owned();
        err = self.grpc_log.replace_all(&err, &b""[..]).into_owned();
        err = self
            .took_text
            .replace_all(&err, &b"took = D"[..])
            .into_owned();
        err = cut_stack_trace(&err);
        let mut out = o.stdout.clone();
        if timing {
            out = self
                .took_json
                .replace_all(&out, &b"\"took\":\"D\""[..])
                .into_owned();
            out = self
                .took_fields
                .replace_all(&out, &b"\"Took\" : D"[..])
                .into_owned();
            out = self.duration.replace_all(&out, &b"D"[..]).into_owned();
            out = self.table_fill.replace_all(&out, &b"_"[..]).into_owned();
        }
        if sizes {
            out = self.db_size.replace_all(&out, &b"$1:N"[..]).into_owned();
            out = self
                .db_size_human
                .replace_all(&out, &b"SIZE"[..])
                .into_owned();
            out = self.table_fill.replace_all(&out, &b"_"[..]).into_owned();
        }
        (out, err, o.code)
    }

    /// Lease ids differ between runs (etcd makes them from the member id and the clock):
    /// number them in order of appearance over a run's outputs. A lease id is any hex or
    /// decimal number with the leases' top 16 bits, learnt from the first `lease grant`.
    pub fn mask_lease_ids(&self, mut outs: Vec<Normalized>) -> Vec<Normalized> {
        let Some(prefix) = outs.iter().find_map(|o| {
            self.lease_granted
                .captures(&o.0)
                .and_then(|c| u64::from_str_radix(std::str::from_utf8(&c[1]).ok()?, 16).ok())
                .map(|id| id >> 48)
        }) else {
            return outs;
        };
        let mut ids: Vec<u64> = Vec::new();
        let mut name = |id: u64| {
            let n = ids.iter().position(|&i| i == id).unwrap_or_else(|| {
                ids.push(id);
                ids.len() - 1
            });
            format!("LEASE{n}").into_bytes()
        };
        let lease = |v: Option<u64>| v.filter(|v| *v >> 48 == prefix && *v >= 1 << 48);
        for o in outs.iter_mut() {
            for text in [&mut o.0, &mut o.1] {
                let mut out = Vec::new();
                let mut last = 0;
                let mut found: Vec<(usize, usize, u64)> = Vec::new();
                for m in self.hex_id.find_iter(text) {
                    let v = std::str::from_utf8(m.as_bytes())
                        .ok()
                        .and_then(|t| u64::from_str_radix(t, 16).ok());
                    if let Some(id) = lease(v) {
                        found.push((m.start(), m.end(), id));
                    }
                }
                for m in self.dec_id.find_iter(text) {
                    let v = std::str::from_utf8(m.as_bytes())
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(id) = lease(v) {
                        if !found.iter().any(|f| f.0 < m.end() && m.start() < f.1) {
                            found.push((m.start(), m.end(), id));
                        }
                    }
                }
                found.sort();
                for (start, end, id) in found {
                    out.extend_from_slice(&text[last..start]);
                    out.extend_from_slice(&name(id));
                    last = end;
                }
                out.extend_from_slice(&text[last..]);
                *text = out;
            }
        }
        outs
    }

    /// A lease's remaining TTL (`lease timetolive`), which ticks while the script runs.
    pub fn mask_remaining_ttl(&self, out: &[u8]) -> Vec<u8> {
        self.remaining.replace_all(out, &b"TTL"[..]).into_owned()
    }

    /// Keys in JSON output (base64, so lease ids in them cannot be told apart).
    pub fn mask_json_keys(&self, out: &[u8]) -> Vec<u8> {
        self.json_key
            .replace_all(out, &br#""key":"K""#[..])
            .into_owned()
    }

    /// Whether two (normalised) outputs are the same but for how grpc-go worded a deadline
    /// that passed while connecting: line by line, one side may read `context deadline
    /// exceeded` where the other gives the balancer's latest error. Two balancer errors must
    /// still agree.
    pub fn same_but_deadline_wording(&self, want: &[u8], got: &[u8]) -> bool {
        let plain = |line: &[u8]| {
            self.balancer_deadline
                .replace_all(
                    line,
                    &b"code = DeadlineExceeded desc = context deadline exceeded"[..],
                )
                .into_owned()
        };
        let (want, got): (Vec<&[u8]>, Vec<&[u8]>) = (
            want.split(|b| *b == b'\n').collect(),
            got.split(|b| *b == b'\n').collect(),
        );
        want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| w == g || plain(w) == *g || *w == plain(g))
    }
}

/// Keep a Go panic's first lines, drop the goroutine's frames.
fn cut_stack_trace(err: &[u8]) -> Vec<u8> {
    for marker in [
        &b"goroutine 1 [running]:\n"[..],
        &b"goroutine 1 [chan receive]:\n"[..],
    ] {
        if let Some(i) = err.windows(marker.len()).position(|w| w == marker) {
            return err[..i + marker.len()].to_vec();
        }
    }
    err.to_vec()
}

#[test]
fn lease_ids_are_numbered_in_order() {
    let norm = Normalizer::new();
    let o = |s: &str| (s.as_bytes().to_vec(), Vec::new(), 0);
    let outs = norm.mask_lease_ids(vec![
        o("lease 6294a24213038405 granted with TTL(5s)\n"),
        o("{\"ID\":7103480916940653586,\"TTL\":5}\nl/6294a24213038405\n"),
        o("cluster 11719934994822390420 rev 123456789012345\n"),
    ]);
    assert_eq!(outs[0].0, b"lease LEASE0 granted with TTL(5s)\n");
    assert_eq!(outs[1].0, b"{\"ID\":LEASE1,\"TTL\":5}\nl/LEASE0\n");
    assert_eq!(
        outs[2].0,
        b"cluster 11719934994822390420 rev 123456789012345\n"
    );
}

#[test]
fn deadline_wordings_match_either_way() {
    let norm = Normalizer::new();
    let warn = |desc: &str| {
        format!(
            "{{\"level\":\"warn\",\"attempt\":0,\"error\":\"rpc error: code = DeadlineExceeded desc = {desc}\"}}\nError: context deadline exceeded\n"
        )
        .into_bytes()
    };
    let deadline = warn("context deadline exceeded");
    let all_failed = warn("latest balancer error: all SubConns are in TransientFailure");
    let refused = warn("latest balancer error: connection error: desc = \\\"transport: Error while dialing dial tcp 127.0.0.1:1: connect: connection refused\\\"");
    assert!(norm.same_but_deadline_wording(&deadline, &all_failed));
    assert!(norm.same_but_deadline_wording(&refused, &deadline));
    assert!(norm.same_but_deadline_wording(&refused, &refused));
    assert!(!norm.same_but_deadline_wording(&refused, &all_failed));
    assert!(!norm.same_but_deadline_wording(&deadline, &warn("context canceled")));
}
