//! Turns etcdctl output into a form where two servers that behave the same print the same
//! text. Only what legitimately differs between two fresh single-member clusters is replaced:
//! ports (hence URLs and endpoints), cluster and member ids, raft terms, raft indexes and
//! database sizes (internal to each implementation), and timings. Revisions, versions, keys,
//! values, counts, exit codes and error texts are left exactly as printed.
//!
//! Both servers are driven by the same etcdctl, so the layout of each output format is the
//! same; the normaliser only has to find the values, by format and command.

use serde_json::Value;

use crate::etcdctl::{shell_words, CtlOutput};

/// Replacement for a non-zero cluster, member or leader id.
pub const ID: &str = "<id>";
/// Replacement for a non-zero raft term.
pub const TERM: &str = "<term>";
/// Replacement for raft indexes and database sizes.
pub const INTERNAL: &str = "<internal>";
/// Replacement for a duration etcdctl measured.
pub const TOOK: &str = "<took>";

/// The ports a server listens on, to be replaced by their role in any output.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

/// An etcdctl run after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Normalized {
    pub fn transcript(&self) -> String {
        let mut s = format!(
            "$ etcdctl {}\n[exit {}]\n",
            self.command,
            self.code.map_or("signal".to_string(), |c| c.to_string())
        );
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            s.push_str(&format!("--- {name}\n"));
            s.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                s.push_str("\n[no newline at end]\n");
            }
        }
        s
    }
}

/// Output format chosen by `-w`/`--write-out` (etcdctl's default is `simple`).
pub fn write_out(args: &[String]) -> String {
    let mut it = args.iter();
    let mut format = "simple".to_string();
    while let Some(a) = it.next() {
        if a == "-w" || a == "--write-out" {
            if let Some(v) = it.next() {
                format = v.clone();
            }
        } else if let Some(v) = a
            .strip_prefix("--write-out=")
            .or_else(|| a.strip_prefix("-w="))
        {
            format = v.to_string();
        }
    }
    format
}

/// Normalises one run for the server listening on `ports`.
pub fn normalize(out: &CtlOutput, ports: Ports) -> Normalized {
    let words: Vec<&str> = out
        .args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let command = match words.as_slice() {
        ["member", "list", ..] => Command::MemberList,
        ["endpoint", "status", ..] => Command::EndpointStatus,
        ["endpoint", "health", ..] => Command::EndpointHealth,
        _ => Command::Other,
    };
    let format = write_out(&out.args);
    let stdout = replace_ports(&bytes_to_text(&out.stdout), ports);
    let stderr = replace_ports(&bytes_to_text(&out.stderr), ports);
    let stdout = match format.as_str() {
        "json" => map_lines(&stdout, normalize_json_line),
        "fields" => map_lines(&stdout, normalize_fields_line),
        "table" => normalize_table(&stdout),
        _ => normalize_simple(&stdout, command),
    };
    // `endpoint health` prints its simple result to stderr.
    let stderr = match (format.as_str(), command) {
        ("simple", Command::EndpointHealth) => normalize_simple(&stderr, command),
        _ => stderr,
    };
    Normalized {
        command: shell_words(&out.args),
        code: out.code,
        stdout,
        stderr: map_lines(&stderr, normalize_log_line),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    MemberList,
    EndpointStatus,
    EndpointHealth,
    Other,
}

/// UTF-8 as is; anything else escaped (identical bytes still give identical text).
fn bytes_to_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("[not UTF-8, escaped] {}\n", bytes.escape_ascii()),
    }
}

/// `127.0.0.1:<port>` → `127.0.0.1:<client>` / `127.0.0.1:<peer>`, only where the whole port
/// number matches.
pub fn replace_ports(text: &str, ports: Ports) -> String {
    let mut out = text.to_string();
    for (port, label) in [(ports.client, "<client>"), (ports.peer, "<peer>")] {
        let needle = format!("127.0.0.1:{port}");
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&needle) {
            let after = &rest[i + needle.len()..];
            result.push_str(&rest[..i]);
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                result.push_str(&needle);
            } else {
                result.push_str("127.0.0.1:");
                result.push_str(label);
            }
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

fn map_lines(text: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive('\n') {
        let (line, nl) = match piece.strip_suffix('\n') {
            Some(l) => (l, "\n"),
            None => (piece, ""),
        };
        out.push_str(&f(line));
        out.push_str(nl);
    }
    out
}

fn is_zero(v: &Value) -> bool {
    v.as_u64() == Some(0) || v.as_i64() == Some(0)
}

fn replacement_for_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "cluster_id" | "member_id" | "ID" | "leader" => ID,
        "raft_term" | "raftTerm" => TERM,
        "raftIndex" | "raftAppliedIndex" | "dbSize" | "dbSizeInUse" => INTERNAL,
        "took" => TOOK,
        _ => return None,
    })
}

fn normalize_json_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match replacement_for_key(k) {
                    Some(r) if !is_zero(child) => *child = Value::String(r.to_string()),
                    _ => normalize_json_value(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json_value),
        _ => {}
    }
}

fn normalize_json_line(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(mut v) if v.is_object() || v.is_array() => {
            normalize_json_value(&mut v);
            // One field per line, so a line diff points at the field that differs.
            serde_json::to_string_pretty(&v).expect("JSON value")
        }
        _ => line.to_string(),
    }
}

/// `"MemberID" : 1234` → `"MemberID" : <id>`
fn normalize_fields_line(line: &str) -> String {
    let Some((key, value)) = line.split_once(" : ") else {
        return line.to_string();
    };
    let replacement = match key.trim_matches('"') {
        "ClusterID" | "MemberID" | "ID" | "Leader" => ID,
        "RaftTerm" => TERM,
        "RaftIndex" | "RaftAppliedIndex" | "DBSize" | "DBSizeInUse" => INTERNAL,
        "Took" => TOOK,
        _ => return line.to_string(),
    };
    if value.trim() == "0" {
        return line.to_string();
    }
    format!("{key} : {replacement}")
}

/// Tables are re-drawn after normalising cells, so column widths (which follow the content)
/// do not matter.
fn normalize_table(text: &str) -> String {
    let mut header: Option<Vec<String>> = None;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('+') {
            out.push_str("+---+\n");
            continue;
        }
        if !line.starts_with('|') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let cells = match &header {
            None => {
                header = Some(cells.clone());
                cells
            }
            Some(names) => cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let name = names.get(i).map(String::as_str).unwrap_or("");
                    let r = match name {
                        "ID" => ID,
                        "RAFT TERM" => TERM,
                        "RAFT INDEX" | "RAFT APPLIED INDEX" | "DB SIZE" => INTERNAL,
                        "TOOK" => TOOK,
                        _ => return cell.clone(),
                    };
                    if cell == "0" {
                        cell.clone()
                    } else {
                        r.to_string()
                    }
                })
                .collect(),
        };
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn normalize_simple(text: &str, command: Command) -> String {
    match command {
        Command::MemberList => map_lines(text, |l| replace_fields(l, &[(0, ID)])),
        // endpoint, id, version, db size, is leader, is learner, term, index, applied, errors
        Command::EndpointStatus => map_lines(text, |l| {
            replace_fields(
                l,
                &[
                    (1, ID),
                    (3, INTERNAL),
                    (6, TERM),
                    (7, INTERNAL),
                    (8, INTERNAL),
                ],
            )
        }),
        Command::EndpointHealth => map_lines(text, |l| match l.find("took = ") {
            Some(i) => format!("{}took = {TOOK}", &l[..i]),
            None => l.to_string(),
        }),
        Command::Other => text.to_string(),
    }
}

/// Replaces the given `, `-separated fields of a line (lines with fewer fields are kept).
fn replace_fields(line: &str, replacements: &[(usize, &str)]) -> String {
    let mut fields: Vec<String> = line.split(", ").map(str::to_string).collect();
    if replacements.iter().any(|(i, _)| *i >= fields.len()) {
        return line.to_string();
    }
    for (i, r) in replacements {
        fields[*i] = r.to_string();
    }
    fields.join(", ")
}

/// etcdctl's client logs JSON lines to stderr (e.g. the retry interceptor's warning, which
/// carries the gRPC code and message): their time and per-process client id go.
fn normalize_log_line(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(mut map)) => {
            for key in ["ts", "target"] {
                if map.contains_key(key) {
                    map.insert(key.to_string(), Value::String(format!("<{key}>")));
                }
            }
            Value::Object(map).to_string()
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], stdout: &str, stderr: &str) -> Normalized {
        let out = CtlOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            code: Some(0),
        };
        normalize(
            &out,
            Ports {
                client: 23791,
                peer: 2380,
            },
        )
    }

    #[test]
    fn json_ids_and_terms_go_revisions_stay() {
        let n = run(
            &["put", "a", "1", "-w", "json"],
            "{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":1366,\"revision\":4,\"raft_term\":2}}\n",
            "",
        );
        let v: Value = serde_json::from_str(&n.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"header": {"cluster_id": "<id>", "member_id": "<id>",
                "raft_term": "<term>", "revision": 4}})
        );
    }

    #[test]
    fn ports_only_whole_numbers() {
        let p = Ports {
            client: 2379,
            peer: 2380,
        };
        assert_eq!(
            replace_ports("127.0.0.1:2379, 127.0.0.1:23790 http://127.0.0.1:2380", p),
            "127.0.0.1:<client>, 127.0.0.1:23790 http://127.0.0.1:<peer>"
        );
    }

    #[test]
    fn simple_status_and_fields_and_table() {
        let n = run(
            &["endpoint", "status"],
            "127.0.0.1:23791, bdae9bbc11dd390d, 3.4.23, 25 kB, true, false, 2, 10, 10, \n",
            "",
        );
        assert_eq!(
            n.stdout,
            "127.0.0.1:<client>, <id>, 3.4.23, <internal>, true, false, <term>, <internal>, <internal>, \n"
        );
        let n = run(
            &["get", "a", "-w=fields"],
            "\"ClusterID\" : 0\n\"MemberID\" : 77\n\"Revision\" : 5\n\"RaftTerm\" : 2\n",
            "",
        );
        assert_eq!(
            n.stdout,
            "\"ClusterID\" : 0\n\"MemberID\" : <id>\n\"Revision\" : 5\n\"RaftTerm\" : <term>\n"
        );
        let n = run(
            &["endpoint", "health", "-w", "table"],
            "+----+\n|  ENDPOINT   | HEALTH | TOOK |\n+--+\n| 127.0.0.1:23791 | true | 1.9ms |\n+--+\n",
            "",
        );
        assert_eq!(
            n.stdout,
            "+---+\n| ENDPOINT | HEALTH | TOOK |\n+---+\n| 127.0.0.1:<client> | true | <took> |\n+---+\n"
        );
    }

    #[test]
    fn client_log_lines_lose_time_and_target() {
        let n = run(
            &["get", "a"],
            "",
            "{\"level\":\"warn\",\"ts\":\"2026\",\"target\":\"endpoint://client-1/127.0.0.1:23791\",\"error\":\"x\"}\nError: x\n",
        );
        assert_eq!(
            n.stderr,
            "{\"error\":\"x\",\"level\":\"warn\",\"target\":\"<target>\",\"ts\":\"<ts>\"}\nError: x\n"
        );
    }
}
