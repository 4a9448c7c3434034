//! An etcdctl that keeps running while the test does other things — `watch`, `watch -i` — with
//! its output collected as it comes, an open stdin for interactive commands, and a bounded
//! wait for the output a test expects. Dropping it kills the process.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bins::etcdctl_bin;
use crate::etcdctl::CtlOutput;

/// A running `etcdctl --endpoints=<endpoint> <args…>`.
pub struct BackgroundCtl {
    args: Vec<String>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn drain(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl BackgroundCtl {
    /// Starts etcdctl (API v3, no other `ETCDCTL_*` variables, plus `env`) with stdin piped.
    pub fn spawn<S: AsRef<str>>(endpoint: &str, args: &[S], env: &[(&str, &str)]) -> BackgroundCtl {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let mut cmd = Command::new(etcdctl_bin());
        cmd.arg(format!("--endpoints={endpoint}"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn etcdctl {args:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().expect("stdout pipe"), stdout.clone()),
            drain(child.stderr.take().expect("stderr pipe"), stderr.clone()),
        ];
        BackgroundCtl {
            args,
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// Writes `text` to etcdctl's stdin.
    pub fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).expect("write to etcdctl");
        stdin.flush().expect("flush etcdctl stdin");
    }

    /// Closes etcdctl's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until `done(stdout)` holds; panics with both outputs after `timeout`.
    #[track_caller]
    pub fn wait_stdout(&self, timeout: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.stdout_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl {:?}: expected output did not come within {timeout:?}\n--- stdout\n{}--- stderr\n{}",
                self.args,
                self.stdout_str(),
                self.stderr_str()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until stdout has at least `n` lines.
    #[track_caller]
    pub fn wait_lines(&self, n: usize, timeout: Duration) {
        self.wait_stdout(timeout, |s| s.lines().count() >= n);
    }

    /// Waits for etcdctl to exit by itself (bounded) and returns what it printed.
    #[track_caller]
    pub fn wait_exit(mut self, timeout: Duration) -> CtlOutput {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        let status = loop {
            match child.try_wait().expect("wait for etcdctl") {
                Some(s) => break s,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                None => panic!(
                    "etcdctl {:?} did not exit within {timeout:?}\n--- stdout\n{}--- stderr\n{}",
                    self.args,
                    self.stdout_str(),
                    self.stderr_str()
                ),
            }
        };
        self.child = None;
        self.finish(status.code())
    }

    /// Sends etcdctl SIGINT, as Ctrl-C would (`lock` and `elect` then release what they hold).
    pub fn interrupt(&self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGINT);
            }
        }
    }

    /// Kills etcdctl and returns what it printed (`code` is `None`: killed by a signal).
    pub fn kill(mut self) -> CtlOutput {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.finish(None)
    }

    fn finish(mut self, code: Option<i32>) -> CtlOutput {
        self.stdin.take();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = std::mem::take(&mut *self.stdout.lock().unwrap());
        let stderr = std::mem::take(&mut *self.stderr.lock().unwrap());
        CtlOutput {
            args: std::mem::take(&mut self.args),
            stdout,
            stderr,
            code,
        }
    }
}

impl Drop for BackgroundCtl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
