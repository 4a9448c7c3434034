//! A `ketch --proxy on|readonly` process on a free loopback port, in front of a cluster.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::ketch_bin;
use crate::etcdctl::Etcdctl;
use crate::http::http_get;
use crate::server::two_free_ports;
use crate::tls::{https_get, ClientTls};

/// A running proxy; killed when dropped.
pub struct ProxyProcess {
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// set for an `https://` listener: what clients present and trust
    tls: Option<ClientTls>,
}

impl ProxyProcess {
    /// Starts a proxy with `args` (the mode and whatever else the test needs; the data dir and
    /// listen URL are added) and waits until `/health` answers through it.
    pub fn start(args: &[&str]) -> ProxyProcess {
        ProxyProcess::start_with(args, None)
    }

    /// [`ProxyProcess::start`] with an `https://` listener; `client` is what the tests' clients
    /// (etcdctl, the readiness probe) present and trust. The TLS flags go in `args`.
    pub fn start_tls(args: &[&str], client: ClientTls) -> ProxyProcess {
        ProxyProcess::start_with(args, Some(client))
    }

    fn start_with(args: &[&str], tls: Option<ClientTls>) -> ProxyProcess {
        let dir = tempfile::Builder::new()
            .prefix("ketch-tests-proxy-")
            .tempdir()
            .expect("temp dir");
        let (port, _) = two_free_ports();
        let mut p = ProxyProcess {
            dir,
            port,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            tls,
        };
        p.spawn();
        p.wait_ready();
        p
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("proxy log");
        let mut cmd = Command::new(ketch_bin());
        cmd.arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!(
                "--listen-client-urls={}://127.0.0.1:{}",
                if self.tls.is_some() { "https" } else { "http" },
                self.port
            ))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn the proxy"));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the proxy exited ({status}):\n{}", self.log());
            }
            let probe = match &self.tls {
                Some(tls) => https_get(self.addr(), "/health", tls, Duration::from_secs(1)),
                None => http_get(self.addr(), "/health", Duration::from_secs(1)),
            };
            if let Ok(r) = probe {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts the proxy with `args` instead of the ones it was started with (same data dir
    /// and port).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.spawn();
        self.wait_ready();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn etcdctl(&self) -> Etcdctl {
        match &self.tls {
            Some(tls) => Etcdctl::new(&format!("https://{}", self.endpoint()))
                .global_flags(tls.etcdctl_flags()),
            None => Etcdctl::new(&self.endpoint()),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The client URLs the proxy currently forwards to (`GET /v2/config/local/proxy`).
    pub fn endpoints(&self) -> Vec<String> {
        let r = http_get(
            self.addr(),
            "/v2/config/local/proxy",
            Duration::from_secs(2),
        )
        .expect("endpoints");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("endpoints JSON");
        v["endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `ketch gateway start` process (etcd's L4 gateway) on a free loopback port.
pub struct GatewayProcess {
    port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl GatewayProcess {
    /// Starts a gateway in front of `endpoints` (`host:port`, comma separated) and waits until
    /// it accepts connections.
    pub fn start(endpoints: &str, extra: &[&str]) -> GatewayProcess {
        let (port, _) = two_free_ports();
        let log = tempfile::NamedTempFile::new().expect("gateway log");
        let child = Command::new(ketch_bin())
            .args([
                "gateway",
                "start",
                &format!("--listen-addr=127.0.0.1:{port}"),
                &format!("--endpoints={endpoints}"),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn the gateway");
        let g = GatewayProcess { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen:\n{}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn etcdctl(&self) -> Etcdctl {
        Etcdctl::new(&self.endpoint())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
