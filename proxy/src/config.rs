//! ProxyConfig: what a proxy needs, typed; built once by the `ketch` binary from etcd's flags.
//!
//! The timeouts mean what etcd 3.4's v2 proxy flags mean, made precise for gRPC (a call is one
//! HTTP/2 request):
//! - `dial_timeout`: connecting (TCP) to a member; a member that cannot be reached within it is
//!   marked failed and the call moves to the next member where that is safe.
//! - `write_timeout`: sending a unary call's request to the member (headers and message).
//! - `read_timeout`: for a unary call, waiting for the response to start and, after that, for
//!   each further piece of it. Streams (Watch, LeaseKeepAlive, Observe, Snapshot) and calls
//!   that wait by design (Lock, Campaign) are never cut by it: a quiet watch is not a dead one.
//!
//! 0 means no limit for all three, as in etcd.

use std::path::PathBuf;
use std::time::Duration;

use ketch_gateway::tls::TlsInfo;

/// `--proxy on` or `--proxy readonly`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    On,
    /// Only calls that change nothing are forwarded; see [`crate::classify`].
    Readonly,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub mode: ProxyMode,
    /// `<data-dir>`; the proxy keeps the cluster it discovered in `<data-dir>/proxy/cluster`.
    pub data_dir: PathBuf,
    /// Where clients connect (`--listen-client-urls`): each address, and whether it is an
    /// `https://` one.
    pub listen: Vec<(std::net::SocketAddr, bool)>,
    /// The client side's TLS (`--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`, `--client-crl-file`): the `https://` listeners serve it, and the
    /// proxy presents the same certificate to the members' client URLs, as etcd's proxy does
    /// (falling back to the peer side's when no client certificate is given).
    pub client_tls: TlsInfo,
    /// The peer side's TLS (`--peer-*`): what the proxy dials `https://` peer URLs with to learn
    /// the members.
    pub peer_tls: TlsInfo,
    /// The members' peer URLs from `--initial-cluster`; used when the data dir has no cluster
    /// file yet.
    pub initial_peer_urls: Vec<String>,
    pub failure_wait: Duration,
    pub refresh_interval: Duration,
    pub dial_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    /// Keep the last member list that worked when a refresh fails, instead of etcd's behaviour
    /// of dropping every endpoint until a refresh succeeds (etcd #3092).
    pub keep_endpoints_on_refresh_failure: bool,
    /// Largest request a client may send (`--max-request-bytes` plus gRPC framing).
    pub max_request_bytes: usize,
    /// Bytes of serializable range answers kept (see [`crate::cache`]); 0 turns the cache off.
    pub cache_bytes: u64,
}

impl ProxyConfig {
    /// etcd's defaults (milliseconds in its flags): failure wait 5000, refresh 30000, dial
    /// 1000, write 5000, read 0.
    pub fn new(mode: ProxyMode, data_dir: PathBuf) -> Self {
        ProxyConfig {
            mode,
            data_dir,
            listen: Vec::new(),
            client_tls: TlsInfo::default(),
            peer_tls: TlsInfo::default(),
            initial_peer_urls: Vec::new(),
            failure_wait: Duration::from_millis(5000),
            refresh_interval: Duration::from_millis(30000),
            dial_timeout: Duration::from_millis(1000),
            write_timeout: Duration::from_millis(5000),
            read_timeout: Duration::ZERO,
            keep_endpoints_on_refresh_failure: false,
            max_request_bytes: 1536 * 1024 + 512 * 1024,
            cache_bytes: 64 << 20,
        }
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.data_dir.join("proxy").join("cluster")
    }
}
