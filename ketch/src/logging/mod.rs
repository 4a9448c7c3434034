//! Logging as etcd 3.4 logs, on stderr by default.
//!
//! `--logger capnslog` (the default) writes one line per event:
//!
//! ```text
//! 2026-11-21 10:00:00.123456 I | etcdserver: message key=value
//! ```
//!
//! local date and time with microseconds, a level letter (C critical, E error, W warning,
//! N notice, I info, D debug, T trace), ` | `, an etcd package name, `: ` and the message; with
//! `--debug` and an explicit `--log-outputs=stderr|stdout` the source file and line follow the
//! time, as capnslog does. `--logger zap` writes zap's JSON lines:
//!
//! ```text
//! {"level":"info","ts":"2026-11-21T10:00:00.123Z","caller":"raft/node.rs:42","msg":"message","key":"value"}
//! ```
//!
//! Both are `tracing_subscriber` event formatters. The package of an event is its `pkg` field
//! when it has one, else its target mapped to an etcd package (`ketch_core::raft::*` → `raft`),
//! else the target's last path segment; the binary logs with targets that already are etcd
//! package names (`etcdmain`, `embed`, `pkg/flags`). tracing has no notice or critical level, so
//! an event may carry `severity = "notice"` (an info event shown as N) or
//! `severity = "critical"` (an error event shown as C, zap level "fatal").

mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::flags::EtcdConfig;
pub use format::capnslog_line;
use format::EtcdFormat;

/// capnslog's levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
    Trace,
}

impl Severity {
    pub fn letter(self) -> char {
        match self {
            Severity::Critical => 'C',
            Severity::Error => 'E',
            Severity::Warning => 'W',
            Severity::Notice => 'N',
            Severity::Info => 'I',
            Severity::Debug => 'D',
            Severity::Trace => 'T',
        }
    }

    fn zap_level(self) -> &'static str {
        match self {
            Severity::Critical => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warn",
            Severity::Notice | Severity::Info => "info",
            Severity::Debug | Severity::Trace => "debug",
        }
    }

    fn of(level: &Level, severity_field: Option<&str>) -> Severity {
        match (severity_field, *level) {
            (Some("critical"), _) => Severity::Critical,
            (Some("notice"), _) => Severity::Notice,
            (_, Level::ERROR) => Severity::Error,
            (_, Level::WARN) => Severity::Warning,
            (_, Level::INFO) => Severity::Info,
            (_, Level::DEBUG) => Severity::Debug,
            (_, Level::TRACE) => Severity::Trace,
        }
    }
}

/// A line produced before logging is set up; printed in capnslog form on stderr, as etcd's
/// flag handling does whatever `--logger` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    pub pkg: &'static str,
    pub text: String,
}

impl Note {
    pub fn new(severity: Severity, pkg: &'static str, text: impl Into<String>) -> Self {
        Note {
            severity,
            pkg,
            text: text.into(),
        }
    }
}

pub fn print_notes(notes: &[Note]) {
    let mut err = io::stderr().lock();
    for note in notes {
        let _ = err.write_all(capnslog_line(note.severity, None, note.pkg, &note.text).as_bytes());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Capnslog,
    Zap,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// The style logging was set up with; capnslog before that.
pub fn style() -> Style {
    STYLE.get().copied().unwrap_or(Style::Capnslog)
}

/// Whether [`LogSettings::install`] has run.
pub fn installed() -> bool {
    STYLE.get().is_some()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// What `--logger`, `--log-level`, `--debug`, `--log-outputs` and `--log-output` ask for,
/// checked as etcd's `setupLogging` checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub style: Style,
    /// The least severe level written.
    pub threshold: Severity,
    pub outputs: Vec<Output>,
    /// capnslog prints the caller with `--debug` and an explicit stderr/stdout output.
    pub callers: bool,
    /// Lines etcd prints raw on stderr about deprecated logging flags.
    pub warnings: Vec<String>,
}

impl LogSettings {
    pub fn from_config(c: &EtcdConfig) -> Result<LogSettings, String> {
        let mut warnings = Vec::new();
        let old = &c.log_output;
        let mut outputs = c.log_outputs.clone();
        let default = vec!["default".to_string()];
        if old.len() != outputs.len() {
            if old.len() > outputs.len() {
                warnings.push(
                    "'--log-output' flag has been deprecated! Please use '--log-outputs'!".into(),
                );
                outputs = old.clone();
            }
        } else {
            if old.len() > 1 {
                return Err(
                    "both '--log-output' and '--log-outputs' are set; only set '--log-outputs'"
                        .into(),
                );
            }
            if old.is_empty() {
                return Err("either '--log-output' or '--log-outputs' flag must be set".into());
            }
            if *old == outputs && old[0] != "default" {
                return Err(format!(
                    "'--log-output={old:?}' and '--log-outputs={outputs:?}' are incompatible; only set --log-outputs"
                ));
            }
            if *old != default {
                warnings.push(format!(
                    "[WARNING] Deprecated '--log-output' flag is set to {old:?}"
                ));
                warnings.push("Please use '--log-outputs' flag".into());
            }
        }

        let threshold = match c.log_level.as_str() {
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "warn" => Severity::Warning,
            "error" => Severity::Error,
            "dpanic" | "panic" | "fatal" => Severity::Critical,
            // etcd 3.4 panics here; we say what is wrong instead.
            other => {
                return Err(format!(
                    "unknown log level {other:?} (only supports \"debug\", \"info\", \"warn\", \"error\", \"dpanic\", \"panic\", \"fatal\")"
                ))
            }
        };

        match c.logger.as_str() {
            "capnslog" => {
                if outputs.len() != 1 {
                    return Err(format!("--logger=capnslog supports only 1 value in '--log-outputs', got {outputs:?}"));
                }
                let (output, explicit) = match outputs[0].as_str() {
                    "default" => (Output::Stderr, false),
                    "stderr" => (Output::Stderr, true),
                    "stdout" => (Output::Stdout, true),
                    other => {
                        return Err(format!(
                            "unknown log-output {other:?} (only supports \"default\", \"stderr\", \"stdout\")"
                        ))
                    }
                };
                Ok(LogSettings {
                    style: Style::Capnslog,
                    // --debug means debug level for capnslog only; etcd's zap logger keeps
                    // --log-level.
                    threshold: if c.debug { Severity::Debug } else { threshold },
                    outputs: vec![output],
                    callers: explicit && c.debug,
                    warnings,
                })
            }
            "zap" => {
                if outputs.is_empty() {
                    outputs = default;
                }
                if outputs.len() > 1 && outputs.iter().any(|o| o == "default") {
                    return Err("multi logoutput for \"default\" is not supported yet".into());
                }
                let mut resolved: Vec<Output> = Vec::new();
                for output in &outputs {
                    let one = match output.as_str() {
                        "default" | "stderr" => Output::Stderr,
                        "stdout" => Output::Stdout,
                        // etcd writes to journald here, and to stderr when journald is not
                        // reachable; ketch always takes the fallback (systemd keeps stderr).
                        "systemd/journal" => {
                            warnings.push(
                                "[WARNING] 'systemd/journal' log output is written to stderr"
                                    .into(),
                            );
                            Output::Stderr
                        }
                        path => Output::File(PathBuf::from(path)),
                    };
                    if !resolved.contains(&one) {
                        resolved.push(one);
                    }
                }
                // "/dev/null" among the outputs discards everything, as in etcd.
                let null = Output::File(PathBuf::from("/dev/null"));
                if resolved.contains(&null) {
                    resolved = vec![null];
                }
                Ok(LogSettings {
                    style: Style::Zap,
                    threshold,
                    outputs: resolved,
                    callers: false,
                    warnings,
                })
            }
            other => Err(format!("unknown logger option {other:?}")),
        }
    }

    /// Opens the outputs and installs the global subscriber.
    pub fn install(&self) -> Result<(), String> {
        let mut sinks = Vec::new();
        for output in &self.outputs {
            sinks.push(match output {
                Output::Stderr => Sink::Stderr,
                Output::Stdout => Sink::Stdout,
                Output::File(path) => Sink::File(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("open {}: {e}", path.display()))?,
                ),
            });
        }
        let sinks = Sinks(Arc::new(sinks));
        let level = match self.threshold {
            Severity::Critical | Severity::Error => LevelFilter::ERROR,
            Severity::Warning => LevelFilter::WARN,
            Severity::Notice | Severity::Info => LevelFilter::INFO,
            Severity::Debug => LevelFilter::DEBUG,
            Severity::Trace => LevelFilter::TRACE,
        };
        // Library internals (HTTP/2 frames, TLS records) are not what etcd's levels show.
        let noisy = [
            "h2",
            "hyper",
            "hyper_util",
            "tower",
            "tonic",
            "rustls",
            "axum",
            "mio",
            "want",
        ];
        let filter = Targets::new()
            .with_default(level)
            .with_targets(noisy.map(|t| (t, level.min(LevelFilter::INFO))));
        let format = EtcdFormat {
            style: self.style,
            threshold: self.threshold,
            callers: self.callers,
        };
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(format)
            .with_writer(sinks)
            .with_filter(filter);
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .map_err(|e| format!("cannot install the logger: {e}"))?;
        let _ = STYLE.set(self.style);
        Ok(())
    }
}

enum Sink {
    Stderr,
    Stdout,
    File(File),
}

/// Every configured output; each formatted line is written whole to each of them.
#[derive(Clone)]
struct Sinks(Arc<Vec<Sink>>);

struct SinkWriter<'a>(&'a [Sink]);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for sink in self.0 {
            match sink {
                Sink::Stderr => io::stderr().lock().write_all(buf)?,
                Sink::Stdout => io::stdout().lock().write_all(buf)?,
                Sink::File(file) => (&*file).write_all(buf)?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<LogSettings, String> {
        let mut config = EtcdConfig::default();
        for arg in args {
            let (name, value) = arg.split_once('=').unwrap();
            (crate::flags::lookup(name).unwrap().set)(&mut config, value).unwrap();
        }
        LogSettings::from_config(&config)
    }

    #[test]
    fn log_flags_are_checked_like_etcd() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            (s.style, s.threshold, s.outputs.clone(), s.callers),
            (Style::Capnslog, Severity::Info, vec![Output::Stderr], false)
        );
        assert_eq!(
            settings(&["debug=true"]).unwrap().threshold,
            Severity::Debug
        );
        assert_eq!(
            settings(&["log-level=warn"]).unwrap().threshold,
            Severity::Warning
        );
        assert_eq!(
            settings(&["log-level=fatal"]).unwrap().threshold,
            Severity::Critical
        );
        assert!(settings(&["log-level=loud"])
            .unwrap_err()
            .starts_with("unknown log level \"loud\""));
        assert_eq!(
            settings(&["logger=foo"]).unwrap_err(),
            "unknown logger option \"foo\""
        );
        assert_eq!(
            settings(&["log-outputs=stdout"]).unwrap().outputs,
            vec![Output::Stdout]
        );
        assert!(
            settings(&["log-outputs=stdout", "debug=true"])
                .unwrap()
                .callers
        );
        assert_eq!(
            settings(&["log-outputs=/tmp/x.log"]).unwrap_err(),
            "unknown log-output \"/tmp/x.log\" (only supports \"default\", \"stderr\", \"stdout\")"
        );
        assert_eq!(
            settings(&["log-outputs=stderr,stdout"]).unwrap_err(),
            "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\", \"stdout\"]"
        );
        let zap = settings(&["logger=zap", "log-outputs=stderr,/tmp/x.log"]).unwrap();
        assert_eq!(
            zap.outputs,
            vec![Output::File("/tmp/x.log".into()), Output::Stderr]
        );
        assert_eq!(
            settings(&["logger=zap", "log-outputs=default,stdout"]).unwrap_err(),
            "multi logoutput for \"default\" is not supported yet"
        );
        let null = settings(&["logger=zap", "log-outputs=stderr,/dev/null"]).unwrap();
        assert_eq!(null.outputs, vec![Output::File("/dev/null".into())]);
        let old = settings(&["log-output=stdout"]).unwrap();
        assert_eq!(
            old.outputs,
            vec![Output::Stderr],
            "etcd only warns about a lone --log-output"
        );
        assert_eq!(old.warnings.len(), 2);
        assert!(settings(&["log-output=stdout", "log-outputs=stdout"]).is_err());
    }
}
