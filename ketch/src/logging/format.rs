//! The two line formats: capnslog's text line and zap's JSON object, as one
//! `tracing_subscriber` event formatter.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::{Severity, Style};

/// One capnslog line at the current local time, newline included.
pub fn capnslog_line(severity: Severity, caller: Option<&str>, pkg: &str, message: &str) -> String {
    let mut line = chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    if let Some(caller) = caller {
        let _ = write!(line, " [{caller}]");
    }
    let _ = write!(line, " {} | ", severity.letter());
    if !pkg.is_empty() {
        let _ = write!(line, "{pkg}: ");
    }
    line.push_str(message);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

/// The etcd package an event belongs to.
pub fn package_of(target: &str) -> &str {
    const PACKAGES: &[(&str, &str)] = &[
        ("ketch_core::raft", "raft"),
        ("ketch_core::wal", "wal"),
        ("ketch_core::mvcc", "mvcc"),
        ("ketch_core::watch", "mvcc"),
        ("ketch_core::backend", "mvcc/backend"),
        ("ketch_core::lease", "lease"),
        ("ketch_core::auth", "auth"),
        ("ketch_core::apply", "etcdserver"),
        ("ketch_core::server", "etcdserver/api/v3rpc"),
        ("ketch_core", "etcdserver"),
        ("ketch_wal", "wal"),
        ("ketch_mvcc", "mvcc"),
        ("ketch_gateway", "embed"),
        ("ketch_proxy", "proxy"),
        ("ketch", "etcdmain"),
    ];
    for (prefix, pkg) in PACKAGES {
        if target == *prefix
            || target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with("::"))
        {
            return pkg;
        }
    }
    target.rsplit("::").next().unwrap_or(target)
}
/// A field value as zap would encode it.
#[derive(Debug, Clone, PartialEq)]
enum FieldValue {
    Text(String),
    /// Already JSON: a number or a boolean.
    Raw(String),
}

impl FieldValue {
    fn text(&self) -> &str {
        match self {
            FieldValue::Text(s) | FieldValue::Raw(s) => s,
        }
    }
}

/// An event's fields, with the ones that steer formatting taken out.
#[derive(Default)]
struct Fields {
    message: String,
    pkg: Option<String>,
    severity: Option<String>,
    extra: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "message" => self.message = value.text().to_string(),
            "pkg" => self.pkg = Some(value.text().to_string()),
            "severity" => self.severity = Some(value.text().to_string()),
            name => self.extra.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Text(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, FieldValue::Text(format!("{value:?}")));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let raw = if value.is_finite() {
            value.to_string()
        } else {
            format!("\"{value}\"")
        };
        self.put(field, FieldValue::Raw(raw));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Text(value.to_string()));
    }
}

/// zap's short caller: the last directory and the file name.
fn short_caller(file: &str, line: u32) -> String {
    let mut parts = file.rsplit(['/', '\\']);
    let name = parts.next().unwrap_or(file);
    match parts.next() {
        Some(dir) if !dir.is_empty() => format!("{dir}/{name}:{line}"),
        _ => format!("{name}:{line}"),
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// zap's ISO-8601 time: local time with milliseconds and the zone as `Z` or `+hhmm`.
fn zap_time(now: chrono::DateTime<chrono::Local>) -> String {
    let zone = if now.offset().local_minus_utc() == 0 {
        "Z".to_string()
    } else {
        now.format("%z").to_string()
    };
    format!("{}{zone}", now.format("%Y-%m-%dT%H:%M:%S%.3f"))
}

/// One zap JSON line, newline included.
fn zap_line(severity: Severity, time: &str, caller: Option<&str>, fields: &Fields) -> String {
    let mut line = format!("{{\"level\":\"{}\",\"ts\":\"{time}\"", severity.zap_level());
    if let Some(caller) = caller {
        let _ = write!(line, ",\"caller\":{}", json_string(caller));
    }
    let _ = write!(line, ",\"msg\":{}", json_string(&fields.message));
    for (key, value) in &fields.extra {
        let value = match value {
            FieldValue::Text(s) => json_string(s),
            FieldValue::Raw(raw) => raw.clone(),
        };
        let _ = write!(line, ",{}:{value}", json_string(key));
    }
    line.push_str("}\n");
    line
}

/// capnslog has no structured fields; extra fields follow the message as `key=value`.
fn capnslog_message(fields: &Fields) -> String {
    let mut message = fields.message.clone();
    for (key, value) in &fields.extra {
        let text = value.text();
        if text.is_empty() || text.contains(char::is_whitespace) {
            let _ = write!(message, " {key}={text:?}");
        } else {
            let _ = write!(message, " {key}={text}");
        }
    }
    message
}

/// The event formatter for both styles.
pub struct EtcdFormat {
    pub(super) style: Style,
    pub(super) threshold: Severity,
    pub(super) callers: bool,
}

impl<S, N> FormatEvent<S, N> for EtcdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let severity = Severity::of(meta.level(), fields.severity.as_deref());
        // Levels above error (`--log-level=fatal`) exist only in capnslog/zap terms.
        if severity > self.threshold {
            return Ok(());
        }
        let line = match self.style {
            Style::Capnslog => {
                let pkg = fields
                    .pkg
                    .clone()
                    .unwrap_or_else(|| package_of(meta.target()).to_string());
                let caller = match (self.callers, meta.file(), meta.line()) {
                    (true, Some(file), Some(line)) => Some(format!(
                        "{}:{line}",
                        file.rsplit(['/', '\\']).next().unwrap_or(file)
                    )),
                    _ => None,
                };
                capnslog_line(
                    severity,
                    caller.as_deref(),
                    &pkg,
                    &capnslog_message(&fields),
                )
            }
            Style::Zap => {
                let caller = match (meta.file(), meta.line()) {
                    (Some(file), Some(line)) => Some(short_caller(file, line)),
                    _ => None,
                };
                zap_line(
                    severity,
                    &zap_time(chrono::Local::now()),
                    caller.as_deref(),
                    &fields,
                )
            }
        };
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn capnslog_lines_have_etcds_shape() {
        let line = capnslog_line(Severity::Info, None, "etcdserver", "message");
        let (stamp, rest) = line.split_at(26);
        assert_eq!(rest, " I | etcdserver: message\n");
        let bytes = stamp.as_bytes();
        assert_eq!(
            (bytes[4], bytes[7], bytes[10], bytes[13], bytes[16], bytes[19]),
            (b'-', b'-', b' ', b':', b':', b'.')
        );
        assert!(stamp[20..].bytes().all(|b| b.is_ascii_digit()));
        assert!(
            capnslog_line(Severity::Notice, Some("main.rs:3"), "embed", "x\n")
                .ends_with(" [main.rs:3] N | embed: x\n")
        );
    }

    #[test]
    fn packages_come_from_targets() {
        assert_eq!(package_of("ketch_core::raft::node"), "raft");
        assert_eq!(package_of("ketch_core"), "etcdserver");
        assert_eq!(package_of("ketch::logging"), "etcdmain");
        assert_eq!(package_of("ketchy::thing"), "thing");
        assert_eq!(package_of("pkg/flags"), "pkg/flags");
        assert_eq!(package_of("h2::proto::streams"), "streams");
    }

    #[test]
    fn zap_lines_are_json_with_zaps_keys() {
        let fields = Fields {
            message: "became \"leader\"".into(),
            pkg: None,
            severity: None,
            extra: vec![
                ("term", FieldValue::Raw("5".into())),
                ("member-id", FieldValue::Text("8e9e".into())),
            ],
        };
        let line = zap_line(
            Severity::Info,
            "2026-11-21T10:00:00.123Z",
            Some("raft/node.rs:42"),
            &fields,
        );
        assert_eq!(
            line,
            "{\"level\":\"info\",\"ts\":\"2026-11-21T10:00:00.123Z\",\"caller\":\"raft/node.rs:42\",\"msg\":\"became \\\"leader\\\"\",\"term\":5,\"member-id\":\"8e9e\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["term"], 5);
        assert_eq!(short_caller("core/src/raft/node.rs", 42), "raft/node.rs:42");
        assert_eq!(short_caller("main.rs", 1), "main.rs:1");
        assert_eq!(Severity::Critical.zap_level(), "fatal");
        let ts = zap_time(chrono::Local::now());
        assert!(ts.len() >= 24 && &ts[10..11] == "T", "{ts}");
    }

    /// Runs `body` under a subscriber with the given format and returns what it wrote.
    fn captured(style: Style, threshold: Severity, body: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(EtcdFormat {
                style,
                threshold,
                callers: false,
            })
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, body);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn events_render_as_capnslog() {
        let out = captured(Style::Capnslog, Severity::Info, || {
            tracing::info!(target: "ketch_core::raft::node", term = 2, "became leader");
            tracing::warn!(target: "etcdmain", pkg = "etcdserver/api", "slow");
            tracing::info!(target: "pkg/osutil", severity = "notice", "received interrupt signal");
            tracing::error!(target: "etcdmain", severity = "critical", "cannot start");
            tracing::debug!(target: "etcdmain", "hidden at info");
        });
        let tails: Vec<&str> = out.lines().map(|l| &l[26..]).collect();
        assert_eq!(
            tails,
            vec![
                " I | raft: became leader term=2",
                " W | etcdserver/api: slow",
                " N | pkg/osutil: received interrupt signal",
                " C | etcdmain: cannot start",
            ]
        );
    }

    #[test]
    fn critical_only_threshold_drops_plain_errors() {
        let out = captured(Style::Capnslog, Severity::Critical, || {
            tracing::error!(target: "etcdmain", "plain error");
            tracing::error!(target: "etcdmain", severity = "critical", "fatal one");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.ends_with(" C | etcdmain: fatal one\n"));
    }

    #[test]
    fn events_render_as_zap_json() {
        let out = captured(Style::Zap, Severity::Info, || {
            tracing::info!(target: "embed", { "data-dir" = "x.etcd", ready = true }, "starting");
            tracing::error!(target: "etcdmain", severity = "critical", "cannot start");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["msg"], "starting");
        assert_eq!(lines[0]["data-dir"], "x.etcd");
        assert_eq!(lines[0]["ready"], true);
        assert!(lines[0]["caller"]
            .as_str()
            .unwrap()
            .starts_with("logging/format.rs:"));
        assert!(lines[0]["ts"].as_str().unwrap().contains('T'));
        assert_eq!(lines[1]["level"], "fatal");
        assert!(lines[1].get("severity").is_none());
    }

    #[test]
    fn capnslog_appends_fields() {
        let fields = Fields {
            message: "hello".into(),
            pkg: None,
            severity: None,
            extra: vec![
                ("a", FieldValue::Raw("1".into())),
                ("b", FieldValue::Text("x y".into())),
            ],
        };
        assert_eq!(capnslog_message(&fields), "hello a=1 b=\"x y\"");
    }
}
