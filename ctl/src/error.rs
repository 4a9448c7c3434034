//! How ketchctl fails: etcdctl's exit codes and the ways it reports an error on stderr.
//!
//! Most failures print `Error: <message>` and exit with one of etcdctl's codes. A few print
//! something else (a Go runtime panic, capnslog's fatal line) or nothing at all (`endpoint
//! status` after reporting per-endpoint failures), so the report is part of the error value.

use std::fmt;

/// The command ran into an error not covered below, or the server answered with one.
pub const EXIT_ERROR: i32 = 1;
/// The client could not be set up (authentication, connection).
pub const EXIT_BAD_CONNECTION: i32 = 2;
/// Malformed input on stdin (txn).
pub const EXIT_INVALID_INPUT: i32 = 3;
/// A valid flag with a value this command does not support (output format, sort order).
pub const EXIT_BAD_FEATURE: i32 = 4;
/// Interrupted by a signal (watch, lock, elect).
#[allow(dead_code)]
pub const EXIT_INTERRUPTED: i32 = 5;
/// Reading or writing a file failed (snapshot).
#[allow(dead_code)]
pub const EXIT_IO: i32 = 6;
/// Wrong arguments or flag combinations.
pub const EXIT_BAD_ARGS: i32 = 128;
/// What a Go program exits with when it panics.
pub const EXIT_GO_PANIC: i32 = 2;

/// What goes to stderr when the command fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `Error: <message>`.
    Message(String),
    /// Already written (or nothing to write); only the exit code remains.
    Silent,
    /// A Go runtime panic in etcdctl: `panic: <value>` and the goroutine header. The stack
    /// trace itself (addresses, file lines) is not reproduced.
    Panic(String),
}

/// A failed command: the report and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    pub code: i32,
    pub report: Report,
}

impl CtlError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CtlError {
            code,
            report: Report::Message(message.into()),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(EXIT_ERROR, message)
    }
    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(EXIT_BAD_ARGS, message)
    }
    pub fn bad_feature(message: impl Into<String>) -> Self {
        Self::new(EXIT_BAD_FEATURE, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(EXIT_INVALID_INPUT, message)
    }
    pub fn silent(code: i32) -> Self {
        CtlError {
            code,
            report: Report::Silent,
        }
    }
    pub fn panic(value: impl Into<String>) -> Self {
        CtlError {
            code: EXIT_GO_PANIC,
            report: Report::Panic(value.into()),
        }
    }

    /// The bytes etcdctl writes to stderr for this error.
    pub fn stderr_text(&self) -> String {
        match &self.report {
            Report::Message(m) => format!("Error: {m}\n"),
            Report::Silent => String::new(),
            Report::Panic(v) => format!("panic: {v}\n\ngoroutine 1 [running]:\n"),
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.report {
            Report::Message(m) => f.write_str(m),
            Report::Silent => write!(f, "exit status {}", self.code),
            Report::Panic(v) => write!(f, "panic: {v}"),
        }
    }
}

impl std::error::Error for CtlError {}

/// Writing to stdout failed (a closed pipe): stop quietly, as Go's SIGPIPE death would.
impl From<std::io::Error> for CtlError {
    fn from(_: std::io::Error) -> Self {
        CtlError::silent(EXIT_ERROR)
    }
}

pub type CtlResult<T = ()> = Result<T, CtlError>;
