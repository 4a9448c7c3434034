//! One running member process — ketch or real etcd, started with the same etcd flags — on free
//! loopback ports with its own temporary data directory.
//!
//! The process is killed (SIGKILL) when the [`Server`] is dropped, also while a test panics,
//! and it gets `PR_SET_PDEATHSIG` so that it dies with the thread that spawned it even when the
//! test process itself is killed (so create servers on the test's own thread, not inside
//! short-lived worker threads). Every wait is bounded.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bins::Kind;
use crate::etcdctl::Etcdctl;
use crate::http::http_get;
use crate::tls::{https_get, ClientTls};

/// Overrides how long [`Server::wait_ready`] waits, in seconds (default 30).
pub const READY_SECS_ENV: &str = "KETCH_TESTS_READY_SECS";
/// When set to 1, the data and log directories of servers are kept (their path is printed).
pub const KEEP_ENV: &str = "KETCH_TESTS_KEEP";

const START_ATTEMPTS: u32 = 5;
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(25);

/// How to start a [`Server`]; [`Server::start`] is `Server::builder(kind).start()`.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    kind: Kind,
    name: String,
    extra_args: Vec<String>,
    ready_timeout: Duration,
    /// Fixed (client, peer) ports and `--initial-cluster`, for a member of a cluster.
    member_of: Option<((u16, u16), String)>,
    /// `--initial-cluster-state=existing` instead of `new`.
    joins: bool,
    /// extra environment of the process
    env: Vec<(String, String)>,
    /// the peer port advertised when it differs from the one listened on (a relay's)
    advertised_peer_port: Option<u16>,
    /// `https://` client URLs, reached (by the readiness probe and [`Server::etcdctl`]) as this
    /// client; the server's TLS flags are given with [`ServerBuilder::arg`].
    client_tls: Option<ClientTls>,
    /// `https://` peer URLs.
    peer_https: bool,
}

impl ServerBuilder {
    /// Serves clients on an `https://` URL; `client` is how the harness reaches it (the probe
    /// of `/health` and [`Server::etcdctl`]). Pass the server's TLS flags with `arg`.
    pub fn client_tls(mut self, client: ClientTls) -> Self {
        self.client_tls = Some(client);
        self
    }

    /// Listens for and advertises peers on `https://` URLs (pass the peer TLS flags with `arg`).
    pub fn peer_https(mut self) -> Self {
        self.peer_https = true;
        self
    }

    /// Makes this a member of a multi-member cluster: these ports, this `--initial-cluster`.
    /// Such a member is not moved to other ports when one is taken (its peers know them).
    pub fn cluster_member(mut self, ports: (u16, u16), initial_cluster: &str) -> Self {
        self.member_of = Some((ports, initial_cluster.to_string()));
        self
    }

    /// Advertises this peer port (a [`crate::relay::Relay`] in front of the real one).
    pub fn advertise_peer_port(mut self, port: u16) -> Self {
        self.advertised_peer_port = Some(port);
        self
    }

    /// Sets an environment variable for the process (not `ETCD*`, which the harness clears).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts with `--initial-cluster-state=existing`: a member added to a running cluster.
    pub fn joining(mut self) -> Self {
        self.joins = true;
        self
    }

    /// The member name (`--name`, and the key in `--initial-cluster`). Default `m1`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// An extra flag passed after the standard ones, e.g. `--quota-backend-bytes=…`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the process and waits until it is ready; panics with the server's log if it
    /// exits or is not ready in time. A start that loses a race for a port is retried on
    /// new ports.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        server.finish_start();
        server
    }

    /// Spawns the process on fresh ports without waiting for it.
    fn spawn(self) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "ketch-tests-{}-",
                self.kind.label().replace(['(', ')', '='], "")
            ))
            .tempdir()
            .expect("create temp dir");
        let (client_port, peer_port) = match &self.member_of {
            Some((ports, _)) => *ports,
            None => two_free_ports(),
        };
        let mut server = Server {
            binary: self.kind.binary(),
            kind: self.kind,
            name: self.name,
            extra_args: self.extra_args,
            ready_timeout: self.ready_timeout,
            dir: Some(dir),
            client_port,
            peer_port,
            child: None,
            starts: 0,
            log_offset: 0,
            log_shown: false,
            initial_cluster: self.member_of.map(|(_, c)| c),
            joins: self.joins,
            env: self.env,
            advertised_peer_port: self.advertised_peer_port,
            client_tls: self.client_tls,
            peer_https: self.peer_https,
        };
        server.spawn();
        server
    }
}

/// A running member process. See the module docs.
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    name: String,
    binary: PathBuf,
    extra_args: Vec<String>,
    ready_timeout: Duration,
    /// Root of `data/` (the data dir) and `server.log`; `None` only after it was kept.
    dir: Option<tempfile::TempDir>,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// How many times the process has been spawned.
    starts: u32,
    /// Where the log of the latest spawn begins in `server.log`.
    log_offset: u64,
    /// A panic message already carries the log, so `drop` need not print it again.
    log_shown: bool,
    /// `--initial-cluster` of a multi-member cluster; `None` for a single member.
    initial_cluster: Option<String>,
    joins: bool,
    env: Vec<(String, String)>,
    advertised_peer_port: Option<u16>,
    client_tls: Option<ClientTls>,
    peer_https: bool,
}

#[derive(Debug)]
enum NotReady {
    PortInUse,
    Exited(ExitStatus),
    Timeout(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::PortInUse => write!(f, "a port it was given was already in use"),
            NotReady::Exited(s) => write!(f, "the process exited ({s}) before it was ready"),
            NotReady::Timeout(last) => write!(f, "not ready in time; last /health check: {last}"),
        }
    }
}

impl Server {
    pub fn builder(kind: Kind) -> ServerBuilder {
        let secs = std::env::var(READY_SECS_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        ServerBuilder {
            kind,
            name: "m1".to_string(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(secs),
            member_of: None,
            joins: false,
            env: Vec::new(),
            advertised_peer_port: None,
            client_tls: None,
            peer_https: false,
        }
    }

    /// Starts a single-member cluster of `kind` and waits until it is ready.
    pub fn start(kind: Kind) -> Server {
        Server::builder(kind).start()
    }

    /// Starts several servers at once: all are spawned (from this thread), then each is
    /// waited for, so their boot times overlap.
    pub fn start_all(builders: Vec<ServerBuilder>) -> Vec<Server> {
        let mut servers: Vec<Server> = builders.into_iter().map(ServerBuilder::spawn).collect();
        for s in &mut servers {
            s.finish_start();
        }
        servers
    }

    /// Waits for the first start, moving to new ports when a port was taken meanwhile.
    fn finish_start(&mut self) {
        for attempt in 1..=START_ATTEMPTS {
            match self.try_wait_ready() {
                Ok(()) => return,
                Err(NotReady::PortInUse)
                    if attempt < START_ATTEMPTS && self.initial_cluster.is_none() =>
                {
                    self.kill_child();
                    let _ = std::fs::remove_dir_all(self.data_dir());
                    (self.client_port, self.peer_port) = two_free_ports();
                    self.spawn();
                }
                Err(e) => self.fail(&format!("did not become ready: {e}")),
            }
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<client port>` (`https://` with [`ServerBuilder::client_tls`])
    pub fn client_url(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// How the harness reaches an `https://` server, if this is one.
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.client_tls.as_ref()
    }

    fn peer_scheme(&self) -> &'static str {
        if self.peer_https {
            "https"
        } else {
            "http"
        }
    }

    /// `127.0.0.1:<client port>`, the form etcdctl's `--endpoints` and its output use.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The peer URL other members use (a relay's, when the member is behind one).
    pub fn peer_url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.peer_scheme(),
            self.advertised_peer_port.unwrap_or(self.peer_port)
        )
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().expect("server dir").path()
    }

    /// The `--data-dir` given to the server.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    /// stdout and stderr of every start of this server, appended.
    pub fn log_path(&self) -> PathBuf {
        self.root().join("server.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An etcdctl runner pointed at this server (at its `https://` URL with the client's TLS
    /// flags, for a TLS server).
    pub fn etcdctl(&self) -> Etcdctl {
        match &self.client_tls {
            Some(tls) => Etcdctl::new(&self.client_url()).global_flags(tls.etcdctl_flags()),
            None => Etcdctl::new(&self.endpoint()),
        }
    }

    /// The flags every kind of server is started with.
    pub fn args(&self) -> Vec<String> {
        let client = self.client_url();
        let peer = self.peer_url();
        let listen_peer = format!("{}://127.0.0.1:{}", self.peer_scheme(), self.peer_port);
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={listen_peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            match &self.initial_cluster {
                Some(c) => format!("--initial-cluster={c}"),
                None => format!("--initial-cluster={}={peer}", self.name),
            },
            "--initial-cluster-token=ketch-tests".to_string(),
            format!(
                "--initial-cluster-state={}",
                if self.joins { "existing" } else { "new" }
            ),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn while a process is running");
        self.starts += 1;
        let args = self.args();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        self.log_offset = log.seek(SeekFrom::End(0)).expect("seek log");
        writeln!(
            log,
            "==== ketch-tests: start #{} of {} ({}): {} {}",
            self.starts,
            self.kind.label(),
            self.name,
            self.binary.display(),
            args.join(" ")
        )
        .expect("write log");
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        // The environment must not change the flags: both etcd and ketch read ETCD_*.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Polls `/health` until it answers 200 with `"health":"true"`, bounded by the ready
    /// timeout; panics with the server's log otherwise.
    pub fn wait_ready(&mut self) {
        if let Err(e) = self.try_wait_ready() {
            self.fail(&format!("did not become ready: {e}"));
        }
    }

    fn try_wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + self.ready_timeout;
        let mut last;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.current_log().to_ascii_lowercase();
                if log.contains("address already in use") {
                    return Err(NotReady::PortInUse);
                }
                return Err(NotReady::Exited(status));
            }
            let probe = match &self.client_tls {
                // etcd's auto TLS key is P-521, which rustls (ring) cannot verify: ask etcdctl
                Some(tls) if tls.skip_verify => {
                    let out = self.etcdctl().timeout(Duration::from_secs(5)).run(&[
                        "endpoint",
                        "health",
                        "--dial-timeout=1s",
                        "--command-timeout=1s",
                    ]);
                    if out.success() {
                        return Ok(());
                    }
                    Err(format!(
                        "etcdctl endpoint health: {}",
                        out.stderr_str().trim()
                    ))
                }
                Some(tls) => https_get(self.client_addr(), "/health", tls, Duration::from_secs(1)),
                None => http_get(self.client_addr(), "/health", Duration::from_secs(1)),
            };
            match probe {
                Ok(resp) if resp.status == 200 && is_healthy(&resp.body) => return Ok(()),
                Ok(resp) => last = format!("HTTP {} {:?}", resp.status, resp.body_str()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout(last));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the process with SIGKILL and reaps it. No-op when it is not running.
    pub fn kill9(&mut self) {
        self.kill_child();
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    /// Panics if it does not exit in time (after killing it).
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("stop: {} is not running", self.kind.label());
        };
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Adds a flag for the next starts (e.g. `--force-new-cluster` before a restart).
    pub fn add_arg(&mut self, arg: impl Into<String>) {
        self.extra_args.push(arg.into());
    }

    /// Starts the process again on the same ports and data dir (stopping it with SIGTERM first
    /// if it is running) and waits until it is ready.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process again like [`Server::restart`] but does not wait for `/health`:
    /// for a member that comes back unhealthy on purpose (an alarm raised before it stopped).
    pub fn restart_unwaited(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The log of the latest start.
    pub fn current_log(&self) -> String {
        read_from(&self.log_path(), self.log_offset)
    }

    /// The last `n` lines of the whole log.
    pub fn log_tail(&self, n: usize) -> String {
        let all = read_from(&self.log_path(), 0);
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn fail(&mut self, what: &str) -> ! {
        self.kill_child();
        self.log_shown = true;
        let hint = if self.kind == Kind::Ketch && !crate::bins::ketch_is_substituted() {
            "\n(ketch under test: is the server implemented and built? `cargo build -p ketch`)"
        } else {
            ""
        };
        panic!(
            "{} server {:?} at {} {what}{hint}\n---- log of this start ({}) ----\n{}\n----",
            self.kind.label(),
            self.name,
            self.client_url(),
            self.log_path().display(),
            tail(&self.current_log(), 60),
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_child();
        if std::thread::panicking() && !self.log_shown && self.dir.is_some() {
            eprintln!(
                "---- {} server {:?} log tail ({}) ----\n{}\n----",
                self.kind.label(),
                self.name,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "kept {} server dir: {}",
                    self.kind.label(),
                    dir.keep().display()
                );
            }
        }
    }
}

fn is_healthy(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("health").and_then(|h| h.as_str()) == Some("true"))
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Two distinct ports that were free on 127.0.0.1 a moment ago. The caller retries on a
/// collision (another process may take a port between this release and the server's bind).
pub fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let ports = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    drop((a, b));
    ports
}
