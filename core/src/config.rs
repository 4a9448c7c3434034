//! MemberConfig: the member's internal configuration — typed (Duration, Url, bytes) and
//! validated once. The `ketch` binary builds it from etcd's flags, `ETCD_*` variables and the
//! YAML config file; this crate never reads flags or the environment itself.

use std::path::PathBuf;
use std::time::Duration;

use ketch_gateway::tls::TlsInfo;
use url::Url;

/// Whether this member bootstraps a new cluster or joins an existing one
/// (`--initial-cluster-state`). Ignored once the data dir holds a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the WAL lives; `None` means `<data_dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster` as (member name, peer URL) pairs, in the order given.
    pub initial_cluster: Vec<(String, Url)>,
    pub initial_cluster_token: String,
    pub initial_cluster_state: ClusterState,
    /// Applied entries between two Raft snapshots (`--snapshot-count`, etcd default 100000).
    pub snapshot_count: u64,
    /// Applied entries kept in memory for peers that fall behind; a peer further behind gets
    /// a snapshot (etcd's 5000, `--experimental-snapshot-catchup-entries` in etcd 3.5).
    pub snapshot_catchup_entries: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub max_snapshots: u32,
    pub max_wals: u32,
    /// `--quota-backend-bytes`; 0 means etcd's default (2 GiB).
    pub quota_backend_bytes: u64,
    /// `--max-request-bytes` (etcd default 1.5 MiB).
    pub max_request_bytes: usize,
    /// `--max-txn-ops` (etcd default 128).
    pub max_txn_ops: usize,
    pub auto_compaction_mode: AutoCompactionMode,
    /// As given: "0" disables; periodic mode takes a duration ("1h", "30m") or hours as a number.
    pub auto_compaction_retention: String,
    pub enable_v2: bool,
    pub strict_reconfig_check: bool,
    pub force_new_cluster: bool,
    pub pre_vote: bool,
    pub enable_pprof: bool,
    /// `--cors` origins for the HTTP side.
    pub cors: Vec<String>,
    /// `--experimental-watch-progress-notify-interval`: how often watches that asked for
    /// progress notifications get one (etcd's 10 minutes; at least 100 ms).
    pub watch_progress_notify_interval: Duration,
    /// `--experimental-enable-lease-checkpoint`: the leader checkpoints remaining lease TTLs
    /// through the log every [`LEASE_CHECKPOINT_INTERVAL`], so a new leader does not reset them.
    pub lease_checkpoint: bool,
    /// `--experimental-enable-lease-checkpoint-persist`: checkpointed TTLs also survive a
    /// restart of every member.
    pub lease_checkpoint_persist: bool,
    /// TLS on `https://` client URLs (`--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`, `--client-crl-file`; `--cipher-suites` in `cipher_suites`).
    pub client_tls: TlsInfo,
    /// `--auto-tls`: with no certificate given, serve clients a self-signed one.
    pub client_auto_tls: bool,
    /// TLS on `https://` peer URLs, and what this member presents when it dials its peers.
    pub peer_tls: TlsInfo,
    /// `--peer-auto-tls`.
    pub peer_auto_tls: bool,
    /// `--experimental-peer-skip-client-san-verification`: peer client certificates need not
    /// name the address they connect from.
    pub peer_skip_client_san_verification: bool,
    /// `--auth-token`: `simple`, or `jwt,priv-key=...,pub-key=...,sign-method=...,ttl=...`.
    pub auth_token: String,
    /// `--auth-token-ttl`: how long an unused simple token lives.
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost` of password hashes; outside 4..=31 etcd's default 10 is used.
    pub bcrypt_cost: u32,
    /// `--experimental-trusted-proxy-cn` (Ketch only): a caller whose verified client
    /// certificate has one of these names is a Ketch proxy, believed when it says which user
    /// it forwards for (its client's certificate name; see `PROXIED_IDENTITY`).
    pub trusted_proxy_cns: Vec<String>,
}

/// etcd's lease checkpoint interval (not a flag in etcd 3.4).
pub const LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

impl Default for MemberConfig {
    /// etcd 3.4's defaults: member `default` in `default.etcd`, clients on localhost:2379,
    /// peers on localhost:2380.
    fn default() -> Self {
        let u = |s: &str| Url::parse(s).expect("static url");
        MemberConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.etcd"),
            wal_dir: None,
            listen_client_urls: vec![u("http://localhost:2379")],
            advertise_client_urls: vec![u("http://localhost:2379")],
            listen_peer_urls: vec![u("http://localhost:2380")],
            initial_advertise_peer_urls: vec![u("http://localhost:2380")],
            initial_cluster: vec![("default".into(), u("http://localhost:2380"))],
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_state: ClusterState::New,
            snapshot_count: 100_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            max_snapshots: 5,
            max_wals: 5,
            snapshot_catchup_entries: 5000,
            quota_backend_bytes: 0,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            auto_compaction_mode: AutoCompactionMode::Periodic,
            auto_compaction_retention: "0".into(),
            enable_v2: false,
            strict_reconfig_check: true,
            force_new_cluster: false,
            pre_vote: true,
            enable_pprof: false,
            cors: vec![],
            watch_progress_notify_interval: Duration::from_secs(600),
            lease_checkpoint: false,
            lease_checkpoint_persist: false,
            client_tls: TlsInfo::default(),
            client_auto_tls: false,
            peer_tls: TlsInfo::default(),
            peer_auto_tls: false,
            peer_skip_client_san_verification: false,
            auth_token: "simple".into(),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            trusted_proxy_cns: Vec::new(),
        }
    }
}

/// A configuration etcd would refuse to start with; the message says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--election-timeout[{election:?}] should be at least as 5 times as --heartbeat-interval[{heartbeat:?}]")]
    ElectionTooShort {
        election: Duration,
        heartbeat: Duration,
    },
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NameNotInInitialCluster(String),
    #[error("--initial-cluster has {name}={url} but missing from --initial-advertise-peer-urls={advertised}")]
    AdvertiseMismatch {
        name: String,
        url: String,
        advertised: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl MemberConfig {
    /// The quota etcd applies when `--quota-backend-bytes` is 0.
    pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    pub fn backend_path(&self) -> PathBuf {
        self.snap_dir().join("db")
    }

    /// etcd's `member/snap`: the backend, and snapshots on their way to or from a peer.
    pub fn snap_dir(&self) -> PathBuf {
        self.data_dir.join("member").join("snap")
    }

    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            Self::DEFAULT_QUOTA_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// Checks what etcd checks at start: timing ratios and that this member appears in
    /// `--initial-cluster` with its advertised peer URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() || self.election_timeout < self.heartbeat_interval * 5
        {
            return Err(ConfigError::ElectionTooShort {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        if self.election_timeout > Duration::from_millis(50_000) {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                self.election_timeout.as_millis()
            )));
        }
        let mine: Vec<&Url> = self
            .initial_cluster
            .iter()
            .filter(|(n, _)| n == &self.name)
            .map(|(_, u)| u)
            .collect();
        if mine.is_empty() && self.initial_cluster_state == ClusterState::New {
            return Err(ConfigError::NameNotInInitialCluster(self.name.clone()));
        }
        for u in &mine {
            if !self
                .initial_advertise_peer_urls
                .iter()
                .any(|a| same_url(a, u))
            {
                return Err(ConfigError::AdvertiseMismatch {
                    name: self.name.clone(),
                    url: u.to_string(),
                    advertised: join_urls(&self.initial_advertise_peer_urls),
                });
            }
        }
        let token_type = self.auth_token.split(',').next().unwrap_or_default();
        if token_type != "simple" && token_type != "jwt" {
            return Err(ConfigError::Invalid(format!(
                "unknown token type {token_type:?}; auth: invalid auth options"
            )));
        }
        if self.max_txn_ops == 0 {
            return Err(ConfigError::Invalid(
                "--max-txn-ops must be positive".into(),
            ));
        }
        self.validate_tls()
    }

    /// etcd's TLS checks, in etcd's order (peer listeners are configured before client ones):
    /// cipher suite names, then an `https://` URL needs a certificate or auto TLS.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        for tls in [&self.peer_tls, &self.client_tls] {
            ketch_gateway::tls::suites::check_go_names(&tls.cipher_suites)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if self.peer_tls.is_empty() && !self.peer_auto_tls {
            if let Some(u) = self.listen_peer_urls.iter().find(|u| is_tls_scheme(u)) {
                return Err(ConfigError::Invalid(format!(
                    "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
                    host_port(u)
                )));
            }
        }
        if self.client_tls.is_empty() && !self.client_auto_tls {
            if let Some(u) = self.listen_client_urls.iter().find(|u| is_tls_scheme(u)) {
                return Err(ConfigError::Invalid(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    url_text(u)
                )));
            }
        }
        Ok(())
    }
}

/// `https://` (and etcd's `unixs://`): a URL served or dialed with TLS.
pub fn is_tls_scheme(u: &Url) -> bool {
    matches!(u.scheme(), "https" | "unixs")
}

/// `host:port` of a URL, as Go's `url.Host`.
pub fn host_port(u: &Url) -> String {
    match (u.host_str(), u.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// Compares URLs as etcd does: scheme, host and port, ignoring a trailing slash.
pub fn same_url(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// URLs joined with commas, without the trailing slash `Url` adds to bare hosts.
pub fn join_urls(urls: &[Url]) -> String {
    urls.iter().map(url_text).collect::<Vec<_>>().join(",")
}

/// A URL as etcd prints it: `http://127.0.0.1:2379`, no trailing slash.
pub fn url_text(u: &Url) -> String {
    let s = u.as_str();
    s.strip_suffix('/').unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_etcd() {
        let c = MemberConfig::default();
        c.validate().unwrap();
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.wal_dir(), PathBuf::from("default.etcd/member/wal"));
        assert_eq!(url_text(&c.listen_client_urls[0]), "http://localhost:2379");
    }

    #[test]
    fn https_urls_need_a_certificate_or_auto_tls() {
        let u = |s: &str| Url::parse(s).unwrap();
        let c = MemberConfig {
            listen_client_urls: vec![u("https://127.0.0.1:2379")],
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        assert!(MemberConfig {
            client_auto_tls: true,
            ..c.clone()
        }
        .validate()
        .is_ok());
        let tls = TlsInfo {
            cert_file: "c".into(),
            key_file: "k".into(),
            ..Default::default()
        };
        assert!(MemberConfig {
            client_tls: tls,
            ..c
        }
        .validate()
        .is_ok());

        let c = MemberConfig {
            listen_peer_urls: vec![u("https://127.0.0.1:2380")],
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        assert!(MemberConfig {
            peer_auto_tls: true,
            ..c
        }
        .validate()
        .is_ok());

        let tls = TlsInfo {
            cipher_suites: vec!["TLS_NOPE".into()],
            ..Default::default()
        };
        let c = MemberConfig {
            client_tls: tls,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "unexpected TLS cipher suite \"TLS_NOPE\""
        );
    }

    #[test]
    fn short_election_timeout_is_refused() {
        let c = MemberConfig {
            election_timeout: Duration::from_millis(400),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTooShort { .. })
        ));
    }
}
