//! The one table of etcd 3.4's server flags. Each row gives the flag's name (which also names
//! its `ETCD_*` variable), its value kind, etcd's default, its key in the YAML config file, what
//! acts on it in ketch, and its help line. The command line, the environment, the config file,
//! `--help` and the "accepted but not acted on" warnings are all driven from this table.

use serde_yaml_ng::Value as Yaml;

use crate::kinds::*;

/// The sections of `--help`, in etcd's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Member,
    Clustering,
    Security,
    Auth,
    Monitoring,
    Logging,
    Proxy,
    Experimental,
    Unsafe,
    Deprecated,
    Other,
}

impl Section {
    pub const ALL: [Section; 11] = [
        Section::Member,
        Section::Clustering,
        Section::Security,
        Section::Auth,
        Section::Monitoring,
        Section::Logging,
        Section::Proxy,
        Section::Experimental,
        Section::Unsafe,
        Section::Deprecated,
        Section::Other,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Section::Member => "Member",
            Section::Clustering => "Clustering",
            Section::Security => "Security",
            Section::Auth => "Auth",
            Section::Monitoring => "Profiling and monitoring",
            Section::Logging => "Logging",
            Section::Proxy => "Proxy",
            Section::Experimental => "Experimental",
            Section::Unsafe => "Unsafe",
            Section::Deprecated => "Deprecated",
            Section::Other => "Other",
        }
    }
}

/// Where a flag lives in etcd's YAML config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Y {
    /// A top-level key spelled like the flag.
    Same,
    /// A key inside `client-transport-security`.
    Client(&'static str),
    /// A key inside `peer-transport-security`.
    Peer(&'static str),
    /// etcd 3.4 reads no YAML key for this flag.
    No,
}

/// What acts on a flag in this build of ketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Carried into `ketch_core::config::MemberConfig`.
    Member,
    /// Handled by the `ketch` binary itself (logging, version, config file, proxy refusal).
    Binary,
    /// Accepted and recorded in [`EtcdConfig`], not acted on yet.
    Later,
}

/// One row of the table, type-erased so the parsers can walk all rows.
pub struct Flag {
    pub name: &'static str,
    /// etcd's default, as flag text.
    pub default: &'static str,
    pub section: Section,
    pub yaml: Y,
    pub used: Use,
    pub help: &'static str,
    pub is_bool: bool,
    pub set: fn(&mut EtcdConfig, &str) -> Result<(), String>,
    pub set_yaml: fn(&mut EtcdConfig, &Yaml) -> Result<(), String>,
    pub show: fn(&EtcdConfig) -> String,
}

impl Flag {
    /// The YAML key path: `(None, "name")` or `(Some("client-transport-security"), "cert-file")`.
    pub fn yaml_key(&self) -> Option<(Option<&'static str>, &'static str)> {
        match self.yaml {
            Y::Same => Some((None, self.name)),
            Y::Client(key) => Some((Some(CLIENT_SECURITY), key)),
            Y::Peer(key) => Some((Some(PEER_SECURITY), key)),
            Y::No => None,
        }
    }
}

pub const CLIENT_SECURITY: &str = "client-transport-security";
pub const PEER_SECURITY: &str = "peer-transport-security";

/// `ETCD_` + the flag name upper-cased with '-' → '_' (etcd's `flags.FlagToEnv`).
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

pub fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

/// Flags of etcd 2 that etcd 3.4 still accepts and ignores with a warning. Like etcd, they
/// take no argument (`-v`) and accept any `=value`.
pub const IGNORED: &[&str] = &[
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
    "test.coverprofile",
    "test.outputdir",
];

macro_rules! flag_table {
    ($( $section:ident {
        $( $field:ident: $kind:ident = $name:literal, $default:literal, $yaml:expr, $used:ident, $help:literal; )+
    } )+) => {
        /// etcd's server settings as the user gave them, under etcd's names: the `embed.Config`
        /// and proxy settings of etcd 3.4. Defaults are etcd's (see [`Default`]).
        #[derive(Debug, Clone, PartialEq)]
        pub struct EtcdConfig {
            $($( pub $field: <$kind as Kind>::Value, )+)+
        }

        impl Default for EtcdConfig {
            fn default() -> Self {
                EtcdConfig {
                    $($( $field: <$kind as Kind>::parse($default, None)
                        .expect(concat!("etcd's default for --", $name)), )+)+
                }
            }
        }

        pub static FLAGS: &[Flag] = &[
            $($( Flag {
                name: $name,
                default: $default,
                section: Section::$section,
                yaml: $yaml,
                used: Use::$used,
                help: $help,
                is_bool: <$kind as Kind>::IS_BOOL,
                set: |config, text| {
                    config.$field = <$kind as Kind>::parse(text, Some(&config.$field))?;
                    Ok(())
                },
                set_yaml: |config, node| {
                    config.$field = <$kind as Kind>::from_yaml(node, Some(&config.$field))?;
                    Ok(())
                },
                show: |config| <$kind as Kind>::show(&config.$field),
            }, )+)+
        ];
    };
}

flag_table! {
    Member {
        name: Str = "name", "default", Y::Same, Member,
            "Name of this member, unique in the cluster.";
        data_dir: Str = "data-dir", "", Y::Same, Member,
            "Directory for the member's data; empty means '<name>.etcd'.";
        wal_dir: Str = "wal-dir", "", Y::Same, Member,
            "Directory for the write-ahead log, when it should not live under the data directory.";
        snapshot_count: Uint = "snapshot-count", "100000", Y::Same, Member,
            "Applied entries between two snapshots.";
        experimental_snapshot_catchup_entries: Uint = "experimental-snapshot-catchup-entries", "5000", Y::Same, Member,
            "Applied entries kept for slow followers; one further behind gets a snapshot (etcd 3.5's flag).";
        heartbeat_interval: Uint = "heartbeat-interval", "100", Y::Same, Member,
            "Leader heartbeat period, in milliseconds.";
        election_timeout: Uint = "election-timeout", "1000", Y::Same, Member,
            "Milliseconds without a heartbeat before a follower campaigns; at least 5 heartbeats.";
        initial_election_tick_advance: Bool = "initial-election-tick-advance", "true", Y::Same, Later,
            "Start with most of the election timeout already elapsed, for a faster first election.";
        listen_peer_urls: Urls = "listen-peer-urls", "http://localhost:2380", Y::Same, Member,
            "URLs to accept peer (Raft) traffic on, comma separated.";
        listen_client_urls: Urls = "listen-client-urls", "http://localhost:2379", Y::Same, Member,
            "URLs to accept client traffic on, comma separated.";
        max_snapshots: Uint = "max-snapshots", "5", Y::Same, Member,
            "Snapshot files to keep; 0 keeps all.";
        max_wals: Uint = "max-wals", "5", Y::Same, Member,
            "WAL files to keep; 0 keeps all.";
        quota_backend_bytes: Int = "quota-backend-bytes", "0", Y::Same, Member,
            "Store size that raises the NOSPACE alarm; 0 means 2 GiB, negative disables the quota.";
        backend_batch_interval: Dur = "backend-batch-interval", "0s", Y::Same, Later,
            "Longest time before a backend batch commits; 0 means the built-in interval.";
        backend_batch_limit: Int = "backend-batch-limit", "0", Y::Same, Later,
            "Most operations in one backend batch; 0 means the built-in limit.";
        max_txn_ops: Uint = "max-txn-ops", "128", Y::Same, Member,
            "Most operations allowed in one transaction.";
        max_request_bytes: Uint = "max-request-bytes", "1572864", Y::Same, Member,
            "Largest client request accepted, in bytes.";
        max_concurrent_streams: Uint32 = "max-concurrent-streams", "4294967295", Y::Same, Later,
            "Most concurrent gRPC streams per client connection.";
        grpc_keepalive_min_time: Dur = "grpc-keepalive-min-time", "5s", Y::Same, Later,
            "Shortest interval a client may ping the server at.";
        grpc_keepalive_interval: Dur = "grpc-keepalive-interval", "2h", Y::Same, Later,
            "How often the server pings an idle client connection; 0 disables.";
        grpc_keepalive_timeout: Dur = "grpc-keepalive-timeout", "20s", Y::Same, Later,
            "How long to wait for a ping answer before closing the connection; 0 disables.";
    }
    Clustering {
        initial_advertise_peer_urls: Urls = "initial-advertise-peer-urls", "http://localhost:2380", Y::Same, Member,
            "This member's peer URLs as the other members should reach them.";
        initial_cluster: Str = "initial-cluster", "default=http://localhost:2380", Y::Same, Member,
            "Members of a new cluster as name=peerURL pairs, comma separated. When only --name is given, it is '<name>=<initial-advertise-peer-urls>'.";
        initial_cluster_state: ClusterState = "initial-cluster-state", "new", Y::Same, Member,
            "'new' to bootstrap a cluster, 'existing' to join one.";
        initial_cluster_token: Str = "initial-cluster-token", "etcd-cluster", Y::Same, Member,
            "Token that keeps the members of different new clusters apart.";
        advertise_client_urls: Urls = "advertise-client-urls", "http://localhost:2379", Y::Same, Member,
            "This member's client URLs as clients should reach them; required with --listen-client-urls.";
        discovery: Str = "discovery", "", Y::Same, Later,
            "Discovery service URL to bootstrap with (not available in ketch yet).";
        discovery_fallback: Fallback = "discovery-fallback", "proxy", Y::Same, Later,
            "What to do when discovery fails: 'exit' or 'proxy'.";
        discovery_proxy: Str = "discovery-proxy", "", Y::Same, Later,
            "HTTP proxy for talking to the discovery service.";
        discovery_srv: Str = "discovery-srv", "", Y::Same, Later,
            "DNS domain whose SRV records list the cluster (not available in ketch yet).";
        discovery_srv_name: Str = "discovery-srv-name", "", Y::Same, Later,
            "Suffix for the SRV names looked up with --discovery-srv.";
        strict_reconfig_check: Bool = "strict-reconfig-check", "true", Y::Same, Member,
            "Refuse membership changes that would lose quorum.";
        pre_vote: Bool = "pre-vote", "true", Y::Same, Member,
            "Run Raft's pre-vote phase before an election (default true as in etcd 3.5; etcd 3.4 defaulted to false).";
        auto_compaction_retention: Str = "auto-compaction-retention", "0", Y::Same, Member,
            "History kept by auto compaction: a duration ('5m', or hours as a number) or revisions; 0 disables.";
        auto_compaction_mode: Str = "auto-compaction-mode", "periodic", Y::Same, Member,
            "How to read --auto-compaction-retention: 'periodic' or 'revision'.";
        enable_v2: Bool = "enable-v2", "false", Y::Same, Member,
            "Serve the v2 API.";
    }
    Security {
        cert_file: Str = "cert-file", "", Y::Client("cert-file"), Member,
            "TLS certificate for client connections.";
        key_file: Str = "key-file", "", Y::Client("key-file"), Member,
            "TLS key for client connections.";
        client_cert_auth: Bool = "client-cert-auth", "false", Y::Client("client-cert-auth"), Member,
            "Require client certificates signed by --trusted-ca-file.";
        client_crl_file: Str = "client-crl-file", "", Y::No, Member,
            "Revocation list for client certificates.";
        client_cert_allowed_hostname: Str = "client-cert-allowed-hostname", "", Y::No, Member,
            "Host name a client certificate must carry.";
        trusted_ca_file: Str = "trusted-ca-file", "", Y::Client("trusted-ca-file"), Member,
            "CA bundle for client certificates.";
        auto_tls: Bool = "auto-tls", "false", Y::Client("auto-tls"), Member,
            "Serve clients with a generated self-signed certificate.";
        peer_cert_file: Str = "peer-cert-file", "", Y::Peer("cert-file"), Member,
            "TLS certificate for peer connections.";
        peer_key_file: Str = "peer-key-file", "", Y::Peer("key-file"), Member,
            "TLS key for peer connections.";
        peer_client_cert_auth: Bool = "peer-client-cert-auth", "false", Y::Peer("client-cert-auth"), Member,
            "Require peer certificates signed by --peer-trusted-ca-file.";
        peer_trusted_ca_file: Str = "peer-trusted-ca-file", "", Y::Peer("trusted-ca-file"), Member,
            "CA bundle for peer certificates.";
        peer_cert_allowed_cn: Str = "peer-cert-allowed-cn", "", Y::No, Member,
            "Common name a peer certificate must carry.";
        peer_cert_allowed_hostname: Str = "peer-cert-allowed-hostname", "", Y::No, Member,
            "Host name a peer certificate must carry.";
        peer_auto_tls: Bool = "peer-auto-tls", "false", Y::Peer("auto-tls"), Member,
            "Serve peers with a generated self-signed certificate.";
        peer_crl_file: Str = "peer-crl-file", "", Y::No, Member,
            "Revocation list for peer certificates.";
        cipher_suites: StrList = "cipher-suites", "", Y::Same, Member,
            "TLS cipher suites, comma separated; empty means the library's choice.";
        cors: Cors = "cors", "*", Y::Same, Member,
            "Origins allowed for CORS, comma separated; '*' allows all.";
        host_whitelist: StrSetCsv = "host-whitelist", "*", Y::Same, Later,
            "Host headers accepted on plain-HTTP client requests, comma separated; '*' accepts all.";
    }
    Auth {
        auth_token: Str = "auth-token", "simple", Y::Same, Member,
            "Auth token type and options: 'simple' or 'jwt,...'.";
        bcrypt_cost: Uint = "bcrypt-cost", "10", Y::Same, Member,
            "bcrypt cost for password hashes, 4 to 31.";
        auth_token_ttl: Uint = "auth-token-ttl", "300", Y::Same, Member,
            "Lifetime of a simple token, in seconds.";
        experimental_trusted_proxy_cn: StrList = "experimental-trusted-proxy-cn", "", Y::Same, Member,
            "Ketch only: client certificate names of proxies trusted to say which user they forward for.";
    }
    Monitoring {
        enable_pprof: Bool = "enable-pprof", "false", Y::Same, Member,
            "Serve runtime profiles under /debug/pprof on the client URLs.";
        metrics: Str = "metrics", "basic", Y::Same, Later,
            "Metrics detail: 'basic' or 'extensive'.";
        listen_metrics_urls: Urls = "listen-metrics-urls", "", Y::Same, Later,
            "Extra URLs serving only /metrics and /health, comma separated.";
        enable_grpc_gateway: Bool = "enable-grpc-gateway", "true", Y::Same, Later,
            "Serve the JSON gateway for the v3 API.";
    }
    Logging {
        logger: Str = "logger", "capnslog", Y::Same, Binary,
            "'capnslog' for etcd's classic text lines or 'zap' for JSON lines.";
        log_outputs: StrSetList = "log-outputs", "default", Y::Same, Binary,
            "Where logs go: 'default', 'stderr', 'stdout', or file paths (zap only), comma separated.";
        log_level: Str = "log-level", "info", Y::Same, Binary,
            "Least severe level logged: debug, info, warn, error, panic or fatal.";
    }
    Proxy {
        proxy: ProxyMode = "proxy", "off", Y::Same, Binary,
            "Run as a v2 proxy: 'off', 'readonly' or 'on'.";
        proxy_failure_wait: Uint = "proxy-failure-wait", "5000", Y::Same, Binary,
            "Milliseconds a failed endpoint is left out.";
        proxy_refresh_interval: Uint = "proxy-refresh-interval", "30000", Y::Same, Binary,
            "Milliseconds between endpoint refreshes.";
        proxy_dial_timeout: Uint = "proxy-dial-timeout", "1000", Y::Same, Binary,
            "Milliseconds to wait for a connection; 0 waits forever.";
        proxy_write_timeout: Uint = "proxy-write-timeout", "5000", Y::Same, Binary,
            "Milliseconds to wait for a write; 0 waits forever.";
        proxy_read_timeout: Uint = "proxy-read-timeout", "0", Y::Same, Binary,
            "Milliseconds to wait for a read; 0 waits forever.";
        proxy_keep_endpoints_on_refresh_failure: Bool = "proxy-keep-endpoints-on-refresh-failure", "false", Y::Same, Binary,
            "Keep the last member list when a refresh fails (etcd drops it until a refresh works).";
    }
    Experimental {
        experimental_initial_corrupt_check: Bool = "experimental-initial-corrupt-check", "false", Y::Same, Later,
            "Compare data with the other members before serving.";
        experimental_corrupt_check_time: Dur = "experimental-corrupt-check-time", "0s", Y::Same, Later,
            "Period of corruption checks between members; 0 disables.";
        experimental_enable_v2v3: Str = "experimental-enable-v2v3", "", Y::Same, Later,
            "Serve v2 requests from the v3 store under this prefix.";
        experimental_backend_bbolt_freelist_type: Str = "experimental-backend-bbolt-freelist-type", "", Y::Same, Later,
            "etcd's bbolt freelist type ('array' or 'map'); no meaning for ketch's store.";
        experimental_enable_lease_checkpoint: Bool = "experimental-enable-lease-checkpoint", "false", Y::Same, Member,
            "Have the leader checkpoint remaining lease TTLs to the followers.";
        experimental_enable_lease_checkpoint_persist: Bool = "experimental-enable-lease-checkpoint-persist", "false", Y::Same, Member,
            "Persist lease checkpoints; needs --experimental-enable-lease-checkpoint.";
        experimental_compaction_batch_limit: Int = "experimental-compaction-batch-limit", "0", Y::Same, Later,
            "Most revisions deleted in one compaction batch; 0 means the built-in limit.";
        experimental_watch_progress_notify_interval: Dur = "experimental-watch-progress-notify-interval", "0s", Y::Same, Member,
            "Period of watch progress notifications; 0 means 10m.";
        experimental_warning_apply_duration: Dur = "experimental-warning-apply-duration", "100ms", Y::Same, Later,
            "Warn when applying one request takes longer than this.";
        experimental_peer_skip_client_san_verification: Bool = "experimental-peer-skip-client-san-verification", "false", Y::No, Member,
            "Do not check the SAN of peer client certificates.";
    }
    Unsafe {
        unsafe_no_fsync: Bool = "unsafe-no-fsync", "false", Y::Same, Later,
            "Never fsync: fast and able to lose acknowledged writes.";
        force_new_cluster: Bool = "force-new-cluster", "false", Y::Same, Member,
            "Restart as a one-member cluster from this member's data.";
    }
    Deprecated {
        debug: Bool = "debug", "false", Y::Same, Binary,
            "Same as --log-level=debug.";
        log_output: StrSetList = "log-output", "default", Y::Same, Binary,
            "Old spelling of --log-outputs.";
        log_package_levels: Str = "log-package-levels", "", Y::Same, Later,
            "Per-package capnslog levels, e.g. 'etcdmain=CRITICAL,etcdserver=DEBUG'.";
    }
    Other {
        config_file: Str = "config-file", "", Y::No, Binary,
            "YAML configuration file; when given, all other flags and ETCD_* variables are ignored.";
        version: Bool = "version", "false", Y::No, Binary,
            "Print the version and exit.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_env_names_follow_etcd() {
        let mut names: Vec<&str> = FLAGS
            .iter()
            .map(|f| f.name)
            .chain(IGNORED.iter().copied())
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(
            env_name(lookup("initial-cluster-token").unwrap().name),
            "ETCD_INITIAL_CLUSTER_TOKEN"
        );
        assert_eq!(env_name(lookup("data-dir").unwrap().name), "ETCD_DATA_DIR");
    }

    #[test]
    fn defaults_are_etcds() {
        let c = EtcdConfig::default();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, "");
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.heartbeat_interval, 100);
        assert_eq!(c.election_timeout, 1000);
        assert!(c.initial_election_tick_advance);
        assert_eq!(c.listen_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.listen_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(c.initial_advertise_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.advertise_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(c.initial_cluster_state, "new");
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!((c.max_snapshots, c.max_wals), (5, 5));
        assert_eq!(c.quota_backend_bytes, 0);
        assert_eq!((c.backend_batch_interval, c.backend_batch_limit), (0, 0));
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_concurrent_streams, u32::MAX);
        assert_eq!(c.grpc_keepalive_min_time, 5_000_000_000);
        assert_eq!(c.grpc_keepalive_interval, 7_200_000_000_000);
        assert_eq!(c.grpc_keepalive_timeout, 20_000_000_000);
        assert_eq!(c.discovery_fallback, "proxy");
        assert!(c.strict_reconfig_check && c.pre_vote && !c.enable_v2);
        assert_eq!(
            (
                c.auto_compaction_retention.as_str(),
                c.auto_compaction_mode.as_str()
            ),
            ("0", "periodic")
        );
        assert_eq!(c.cors, vec!["*"]);
        assert_eq!(c.host_whitelist, vec!["*"]);
        assert!(c.cipher_suites.is_empty());
        assert_eq!(
            (c.auth_token.as_str(), c.bcrypt_cost, c.auth_token_ttl),
            ("simple", 10, 300)
        );
        assert_eq!(c.metrics, "basic");
        assert!(c.listen_metrics_urls.is_empty());
        assert!(c.enable_grpc_gateway);
        assert_eq!(
            (c.logger.as_str(), c.log_level.as_str()),
            ("capnslog", "info")
        );
        assert_eq!(c.log_outputs, vec!["default"]);
        assert_eq!(c.proxy, "off");
        assert_eq!(
            (
                c.proxy_failure_wait,
                c.proxy_refresh_interval,
                c.proxy_dial_timeout
            ),
            (5000, 30000, 1000)
        );
        assert_eq!((c.proxy_write_timeout, c.proxy_read_timeout), (5000, 0));
        assert_eq!(c.experimental_warning_apply_duration, 100_000_000);
        assert!(!c.force_new_cluster && !c.unsafe_no_fsync && !c.debug && !c.version);
    }

    #[test]
    fn every_default_prints_back_as_written() {
        let c = EtcdConfig::default();
        for flag in FLAGS {
            let reparsed = {
                let mut again = EtcdConfig::default();
                (flag.set)(&mut again, &(flag.show)(&c)).unwrap();
                again
            };
            assert_eq!((flag.show)(&reparsed), (flag.show)(&c), "--{}", flag.name);
        }
    }
}
