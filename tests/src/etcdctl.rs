//! Runs the real `etcdctl` (API v3) against one endpoint, with optional stdin, capturing
//! stdout, stderr and the exit code, bounded by a timeout.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::etcdctl_bin;

/// Default bound on one etcdctl run (etcdctl's own `--command-timeout` is 5 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An etcdctl runner for one endpoint.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    endpoint: String,
    timeout: Duration,
    /// Flags given before the command's arguments (TLS: `--cacert`, `--cert`, `--key`).
    global: Vec<String>,
}

/// What one etcdctl run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlOutput {
    /// The arguments after the global `--endpoints` flag.
    pub args: Vec<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code; `None` if etcdctl was killed by a signal (or by our timeout).
    pub code: Option<i32>,
}

impl Etcdctl {
    /// `endpoint` as etcdctl's `--endpoints` takes it, e.g. `127.0.0.1:2379`.
    pub fn new(endpoint: &str) -> Etcdctl {
        Etcdctl {
            endpoint: endpoint.to_string(),
            timeout: DEFAULT_TIMEOUT,
            global: Vec::new(),
        }
    }

    /// Flags passed to every run, after `--endpoints` (e.g. `--cacert=…`). They are not part
    /// of [`CtlOutput::args`].
    pub fn global_flags(mut self, flags: Vec<String>) -> Etcdctl {
        self.global = flags;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Etcdctl {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `etcdctl --endpoints=<endpoint> <args…>`
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> CtlOutput {
        self.run_with_stdin(args, None)
    }

    /// Like [`Etcdctl::run`], writing `stdin` to etcdctl's standard input (then closing it).
    pub fn run_stdin<S: AsRef<str>>(&self, args: &[S], stdin: impl AsRef<[u8]>) -> CtlOutput {
        self.run_with_stdin(args, Some(stdin.as_ref()))
    }

    pub fn run_with_stdin<S: AsRef<str>>(&self, args: &[S], stdin: Option<&[u8]>) -> CtlOutput {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let mut cmd = Command::new(etcdctl_bin());
        cmd.arg(format!("--endpoints={}", self.endpoint))
            .args(&self.global)
            .args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn etcdctl {args:?}: {e}"));

        // Feed stdin and drain both pipes on their own threads: a large value or a large
        // output must not deadlock against a full pipe.
        let writer = stdin.map(|data| {
            let data = data.to_vec();
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })
        });
        let mut out_pipe = child.stdout.take().expect("stdout pipe");
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "etcdctl {args:?} against {} did not finish within {:?}",
                        self.endpoint, self.timeout
                    );
                }
                Err(e) => panic!("wait for etcdctl: {e}"),
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        CtlOutput {
            args,
            stdout: out_reader.join().expect("stdout reader"),
            stderr: err_reader.join().expect("stderr reader"),
            code: status.code(),
        }
    }
}

impl CtlOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole transcript unless etcdctl exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &CtlOutput {
        assert!(self.success(), "etcdctl failed:\n{}", self.transcript());
        self
    }

    /// Panics unless etcdctl exited non-zero and its stderr contains `text`.
    #[track_caller]
    pub fn assert_failure_contains(&self, text: &str) -> &CtlOutput {
        assert!(
            !self.success() && self.stderr_str().contains(text),
            "expected etcdctl to fail with {text:?}:\n{}",
            self.transcript()
        );
        self
    }

    /// stdout parsed as one JSON document (for `-w json`).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.transcript()))
    }

    /// A readable record of the run: command, exit code, stdout, stderr.
    pub fn transcript(&self) -> String {
        format!(
            "$ etcdctl {}\n[exit {}]\n--- stdout\n{}--- stderr\n{}",
            shell_words(&self.args),
            self.code.map_or("signal".to_string(), |c| c.to_string()),
            ensure_newline(&self.stdout_str()),
            ensure_newline(&self.stderr_str()),
        )
    }
}

fn ensure_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n[no newline at end]\n")
    }
}

/// Arguments quoted the way a shell user would type them (for messages only).
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                let shown: String = a.chars().take(80).collect();
                let more = if a.chars().count() > 80 { "…" } else { "" };
                format!("{:?}{more}", shown)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stdin etcdctl's `txn` reads in non-interactive mode: compares, a blank line, success
/// requests, a blank line, failure requests, a blank line.
pub fn txn_input(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut s = String::new();
    for section in [compares, success, failure] {
        for line in section {
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}
