//! From the user's etcd settings to the core's [`MemberConfig`], with the rules etcd applies
//! after verifying flags: the initial cluster named after `--name`, the data directory named
//! after the member, and what an existing data directory says about this process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ketch_core::config::{AutoCompactionMode, ClusterState, MemberConfig};
use ketch_gateway::tls::TlsInfo;
use url::Url;

use crate::flags::EtcdConfig;
use crate::goparse::{self, go_quote};
use crate::load::DEFAULT_INITIAL_CLUSTER;

/// etcd's `InitialClusterFromName`: this member under each advertised peer URL.
pub fn initial_cluster_from_name(c: &EtcdConfig) -> String {
    let name = if c.name.is_empty() {
        "default"
    } else {
        c.name.as_str()
    };
    c.initial_advertise_peer_urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// etcd's defaults that depend on the name. When `--name` was changed but `--initial-cluster`
/// was not, the cluster is this member alone under its name; an empty data dir becomes
/// `<name>.etcd`. Returns whether the data dir was defaulted (etcd warns about it).
pub fn apply_name_defaults(c: &mut EtcdConfig) -> bool {
    if c.name != "default" && c.initial_cluster == DEFAULT_INITIAL_CLUSTER {
        c.initial_cluster = initial_cluster_from_name(c);
    }
    if c.data_dir.is_empty() {
        c.data_dir = format!("{}.etcd", c.name);
        return true;
    }
    false
}

/// What a data directory was initialized as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirKind {
    Empty,
    Member,
    Proxy,
}

/// The client side's TLS settings from etcd's flags (`--cert-file`, `--key-file`, ...).
pub fn client_tls_info(c: &EtcdConfig) -> TlsInfo {
    TlsInfo {
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
        trusted_ca_file: c.trusted_ca_file.clone(),
        client_cert_auth: c.client_cert_auth,
        crl_file: c.client_crl_file.clone(),
        cipher_suites: c.cipher_suites.clone(),
        self_signed: false,
        allowed_cn: String::new(),
        allowed_hostname: c.client_cert_allowed_hostname.clone(),
    }
}

/// The peer side's TLS settings from etcd's flags (`--peer-cert-file`, ...).
pub fn peer_tls_info(c: &EtcdConfig) -> TlsInfo {
    TlsInfo {
        cert_file: c.peer_cert_file.clone(),
        key_file: c.peer_key_file.clone(),
        trusted_ca_file: c.peer_trusted_ca_file.clone(),
        client_cert_auth: c.peer_client_cert_auth,
        crl_file: c.peer_crl_file.clone(),
        cipher_suites: c.cipher_suites.clone(),
        self_signed: false,
        allowed_cn: c.peer_cert_allowed_cn.clone(),
        allowed_hostname: c.peer_cert_allowed_hostname.clone(),
    }
}

/// etcd's `identifyDataDirOrDie`: `member/` means a member, `proxy/` a v2 proxy. Other entries
/// are returned so the caller can warn about them.
pub fn identify_data_dir(dir: &Path) -> Result<(DataDirKind, Vec<String>), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((DataDirKind::Empty, Vec::new()))
        }
        Err(e) => return Err(format!("error listing data dir: {} ({e})", dir.display())),
    };
    let (mut member, mut proxy, mut strangers) = (false, false, Vec::new());
    for entry in entries {
        let name = entry
            .map_err(|e| format!("error listing data dir: {} ({e})", dir.display()))?
            .file_name();
        match name.to_str() {
            Some("member") => member = true,
            Some("proxy") => proxy = true,
            _ => strangers.push(name.to_string_lossy().into_owned()),
        }
    }
    strangers.sort();
    match (member, proxy) {
        (true, true) => Err("invalid datadir. Both member and proxy directories exist.".into()),
        (true, false) => Ok((DataDirKind::Member, strangers)),
        (false, true) => Ok((DataDirKind::Proxy, strangers)),
        (false, false) => Ok((DataDirKind::Empty, strangers)),
    }
}

fn urls(texts: &[String]) -> Result<Vec<Url>, String> {
    texts.iter().map(|t| goparse::member_url(t)).collect()
}

/// etcd's `types.NewURLsMap`: `name=url` pairs, comma separated; a name may repeat. Members
/// keep the order of their first appearance, each member's URLs are sorted as etcd sorts them.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Url)>, String> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = pair.split_once('=').unwrap_or((pair, ""));
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, list)) => list.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    let mut cluster = Vec::new();
    for (name, texts) in members {
        let mut checked = texts
            .iter()
            .map(|t| goparse::check_member_url(t))
            .collect::<Result<Vec<_>, _>>()?;
        checked.sort();
        for text in checked {
            cluster.push((name.clone(), goparse::member_url(&text)?));
        }
    }
    Ok(cluster)
}

/// etcd's check of `--auto-compaction-retention` when the server starts.
pub fn check_compaction_retention(c: &EtcdConfig) -> Result<(), String> {
    let retention = c.auto_compaction_retention.as_str();
    if retention.parse::<i64>().is_ok_and(|hours| hours >= 0) {
        return Ok(());
    }
    match goparse::parse_duration(retention) {
        Some(_) => Ok(()),
        None => Err(format!(
            "error parsing CompactionRetention: time: invalid duration {}",
            go_quote(retention)
        )),
    }
}

/// The core's configuration. `c` has been verified and had [`apply_name_defaults`] applied.
/// Errors are etcd's fatal start-up messages.
pub fn member_config(c: &EtcdConfig) -> Result<MemberConfig, String> {
    check_compaction_retention(c)?;
    let advertise_peer = urls(&c.initial_advertise_peer_urls)?;
    let (initial_cluster, token) = if !c.discovery.is_empty() || !c.discovery_srv.is_empty() {
        // As etcd does while it bootstraps through discovery: a cluster of this member alone,
        // and the discovery URL as the token. Only used on restart (see main).
        let me = advertise_peer
            .iter()
            .map(|u| (c.name.clone(), u.clone()))
            .collect();
        let token = if c.discovery.is_empty() {
            c.initial_cluster_token.clone()
        } else {
            c.discovery.clone()
        };
        (me, token)
    } else {
        let cluster = parse_initial_cluster(&c.initial_cluster)
            .map_err(|e| format!("error setting up initial cluster: {e}"))?;
        (cluster, c.initial_cluster_token.clone())
    };
    Ok(MemberConfig {
        name: c.name.clone(),
        data_dir: PathBuf::from(&c.data_dir),
        wal_dir: (!c.wal_dir.is_empty()).then(|| PathBuf::from(&c.wal_dir)),
        listen_client_urls: urls(&c.listen_client_urls)?,
        advertise_client_urls: urls(&c.advertise_client_urls)?,
        listen_peer_urls: urls(&c.listen_peer_urls)?,
        initial_advertise_peer_urls: advertise_peer,
        initial_cluster,
        initial_cluster_token: token,
        initial_cluster_state: match c.initial_cluster_state.as_str() {
            "existing" => ClusterState::Existing,
            _ => ClusterState::New,
        },
        snapshot_count: c.snapshot_count,
        snapshot_catchup_entries: c.experimental_snapshot_catchup_entries,
        heartbeat_interval: Duration::from_millis(c.heartbeat_interval),
        election_timeout: Duration::from_millis(c.election_timeout),
        max_snapshots: u32::try_from(c.max_snapshots).unwrap_or(u32::MAX),
        max_wals: u32::try_from(c.max_wals).unwrap_or(u32::MAX),
        // A negative quota disables the quota in etcd; the largest quota is the closest the
        // core's field can say.
        quota_backend_bytes: u64::try_from(c.quota_backend_bytes).unwrap_or(u64::MAX),
        max_request_bytes: usize::try_from(c.max_request_bytes).unwrap_or(usize::MAX),
        max_txn_ops: usize::try_from(c.max_txn_ops).unwrap_or(usize::MAX),
        auto_compaction_mode: match c.auto_compaction_mode.as_str() {
            "revision" => AutoCompactionMode::Revision,
            _ => AutoCompactionMode::Periodic,
        },
        auto_compaction_retention: c.auto_compaction_retention.clone(),
        enable_v2: c.enable_v2,
        strict_reconfig_check: c.strict_reconfig_check,
        force_new_cluster: c.force_new_cluster,
        pre_vote: c.pre_vote,
        enable_pprof: c.enable_pprof,
        cors: c.cors.clone(),
        // etcd: 0 keeps the 10-minute default
        watch_progress_notify_interval: if c.experimental_watch_progress_notify_interval <= 0 {
            MemberConfig::default().watch_progress_notify_interval
        } else {
            Duration::from_nanos(c.experimental_watch_progress_notify_interval as u64)
        },
        lease_checkpoint: c.experimental_enable_lease_checkpoint,
        lease_checkpoint_persist: c.experimental_enable_lease_checkpoint_persist,
        client_tls: client_tls_info(c),
        client_auto_tls: c.auto_tls,
        peer_tls: peer_tls_info(c),
        peer_auto_tls: c.peer_auto_tls,
        peer_skip_client_san_verification: c.experimental_peer_skip_client_san_verification,
        auth_token: c.auth_token.clone(),
        auth_token_ttl: Duration::from_secs(c.auth_token_ttl),
        bcrypt_cost: u32::try_from(c.bcrypt_cost).unwrap_or(u32::MAX),
        trusted_proxy_cns: c.experimental_trusted_proxy_cn.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_core::config::url_text;

    fn set(c: &mut EtcdConfig, name: &str, value: &str) {
        (crate::flags::lookup(name).unwrap().set)(c, value).unwrap();
    }

    #[test]
    fn defaults_become_etcds_member_config() {
        let mut c = EtcdConfig::default();
        assert!(apply_name_defaults(&mut c));
        let m = member_config(&c).unwrap();
        let core_default = MemberConfig::default();
        assert_eq!(m.name, core_default.name);
        assert_eq!(m.data_dir, core_default.data_dir);
        assert_eq!(m.wal_dir, None);
        assert_eq!(m.listen_client_urls, core_default.listen_client_urls);
        assert_eq!(m.advertise_client_urls, core_default.advertise_client_urls);
        assert_eq!(m.listen_peer_urls, core_default.listen_peer_urls);
        assert_eq!(
            m.initial_advertise_peer_urls,
            core_default.initial_advertise_peer_urls
        );
        assert_eq!(m.initial_cluster, core_default.initial_cluster);
        assert_eq!(m.initial_cluster_token, core_default.initial_cluster_token);
        assert_eq!(m.initial_cluster_state, core_default.initial_cluster_state);
        assert_eq!(m.snapshot_count, core_default.snapshot_count);
        assert_eq!(m.heartbeat_interval, core_default.heartbeat_interval);
        assert_eq!(m.election_timeout, core_default.election_timeout);
        assert_eq!(
            (m.max_snapshots, m.max_wals),
            (core_default.max_snapshots, core_default.max_wals)
        );
        assert_eq!(m.quota_backend_bytes, core_default.quota_backend_bytes);
        assert_eq!(m.max_request_bytes, core_default.max_request_bytes);
        assert_eq!(m.max_txn_ops, core_default.max_txn_ops);
        assert_eq!(
            m.watch_progress_notify_interval,
            core_default.watch_progress_notify_interval
        );
        assert_eq!(m.auto_compaction_mode, core_default.auto_compaction_mode);
        assert_eq!(
            m.auto_compaction_retention,
            core_default.auto_compaction_retention
        );
        assert_eq!(
            (
                m.enable_v2,
                m.strict_reconfig_check,
                m.force_new_cluster,
                m.pre_vote,
                m.enable_pprof
            ),
            // pre-vote on, as etcd 3.5 (etcd 3.4 defaulted to off)
            (false, true, false, true, false)
        );
        assert_eq!(m.cors, vec!["*"]);
        m.validate().unwrap();
    }

    #[test]
    fn the_name_names_the_cluster_and_data_dir() {
        let mut c = EtcdConfig::default();
        set(&mut c, "name", "infra1");
        set(
            &mut c,
            "initial-advertise-peer-urls",
            "http://127.0.0.1:12380",
        );
        apply_name_defaults(&mut c);
        assert_eq!(c.initial_cluster, "infra1=http://127.0.0.1:12380");
        assert_eq!(c.data_dir, "infra1.etcd");
        let m = member_config(&c).unwrap();
        assert_eq!(m.initial_cluster[0].0, "infra1");
        assert_eq!(url_text(&m.initial_cluster[0].1), "http://127.0.0.1:12380");
        m.validate().unwrap();

        // An explicit cluster is left alone, so a missing name is caught.
        let mut c = EtcdConfig::default();
        set(&mut c, "name", "x");
        set(&mut c, "initial-cluster", "y=http://127.0.0.1:2380");
        set(&mut c, "data-dir", "/d");
        assert!(!apply_name_defaults(&mut c));
        let err = member_config(&c).unwrap().validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find local name \"x\" in the initial cluster configuration"
        );
    }

    #[test]
    fn initial_cluster_parses_like_etcd() {
        let cluster = parse_initial_cluster(
            "a=http://10.0.0.1:2380,,b=http://10.0.0.2:2380,a=http://10.0.0.0:2380",
        )
        .unwrap();
        let texts: Vec<(String, String)> = cluster
            .iter()
            .map(|(n, u)| (n.clone(), url_text(u)))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("a".into(), "http://10.0.0.0:2380".into()),
                ("a".into(), "http://10.0.0.1:2380".into()),
                ("b".into(), "http://10.0.0.2:2380".into()),
            ]
        );
        assert_eq!(
            parse_initial_cluster("bad").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: "
        );
        let mut c = EtcdConfig::default();
        set(&mut c, "initial-cluster", "bad");
        assert_eq!(
            member_config(&c).unwrap_err(),
            "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: "
        );
    }

    #[test]
    fn typed_values_carry_over() {
        let mut c = EtcdConfig::default();
        for (name, value) in [
            ("wal-dir", "/wal"),
            ("heartbeat-interval", "50"),
            ("election-timeout", "500"),
            ("quota-backend-bytes", "-1"),
            ("max-snapshots", "99999999999"),
            ("auto-compaction-mode", "revision"),
            ("auto-compaction-retention", "1000"),
            ("initial-cluster-state", "existing"),
            ("cors", "http://a.example:80,http://b.example:80"),
            ("pre-vote", "true"),
            ("experimental-watch-progress-notify-interval", "250ms"),
        ] {
            set(&mut c, name, value);
        }
        let m = member_config(&c).unwrap();
        assert_eq!(m.wal_dir, Some(PathBuf::from("/wal")));
        assert_eq!(m.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(m.election_timeout, Duration::from_millis(500));
        assert_eq!(m.quota_backend_bytes, u64::MAX);
        assert_eq!(m.max_snapshots, u32::MAX);
        assert_eq!(m.auto_compaction_mode, AutoCompactionMode::Revision);
        assert_eq!(m.auto_compaction_retention, "1000");
        assert_eq!(m.initial_cluster_state, ClusterState::Existing);
        assert_eq!(m.cors.len(), 2);
        assert_eq!(m.watch_progress_notify_interval, Duration::from_millis(250));
        assert!(m.pre_vote);
    }

    #[test]
    fn security_flags_become_the_tls_settings() {
        let mut c = EtcdConfig::default();
        for (name, value) in [
            ("listen-client-urls", "https://127.0.0.1:2379"),
            ("cert-file", "/s.pem"),
            ("key-file", "/s.key"),
            ("trusted-ca-file", "/ca.pem"),
            ("client-cert-auth", "true"),
            ("client-crl-file", "/crl.pem"),
            ("peer-auto-tls", "true"),
            ("peer-client-cert-auth", "true"),
            ("peer-trusted-ca-file", "/pca.pem"),
            ("cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ] {
            set(&mut c, name, value);
        }
        let m = member_config(&c).unwrap();
        assert_eq!(
            m.client_tls.to_string(),
            "cert = /s.pem, key = /s.key, trusted-ca = /ca.pem, client-cert-auth = true, crl-file = /crl.pem"
        );
        assert!(!m.client_auto_tls && m.peer_auto_tls);
        assert!(m.peer_tls.client_cert_auth && m.peer_tls.is_empty());
        assert_eq!(
            m.peer_tls.cipher_suites,
            vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
        );
        m.validate().unwrap();

        set(&mut c, "cert-file", "");
        set(&mut c, "key-file", "");
        assert_eq!(
            member_config(&c).unwrap().validate().unwrap_err().to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
    }

    #[test]
    fn compaction_retention_is_checked() {
        let mut c = EtcdConfig::default();
        for ok in ["0", "1", "5m", "1h30m"] {
            set(&mut c, "auto-compaction-retention", ok);
            check_compaction_retention(&c).unwrap();
        }
        set(&mut c, "auto-compaction-retention", "abc");
        assert_eq!(
            check_compaction_retention(&c).unwrap_err(),
            "error parsing CompactionRetention: time: invalid duration \"abc\""
        );
    }

    #[test]
    fn discovery_uses_a_cluster_of_one() {
        let mut c = EtcdConfig::default();
        set(&mut c, "name", "n");
        set(&mut c, "discovery", "https://d.example/abc");
        c.initial_cluster.clear();
        let m = member_config(&c).unwrap();
        assert_eq!(m.initial_cluster.len(), 1);
        assert_eq!(m.initial_cluster[0].0, "n");
        assert_eq!(m.initial_cluster_token, "https://d.example/abc");
    }

    #[test]
    fn data_dirs_are_identified() {
        let dir = std::env::temp_dir().join(format!("ketch-datadir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(identify_data_dir(&dir).unwrap().0, DataDirKind::Empty);
        std::fs::create_dir_all(dir.join("member")).unwrap();
        std::fs::write(dir.join("stray"), b"").unwrap();
        assert_eq!(
            identify_data_dir(&dir).unwrap(),
            (DataDirKind::Member, vec!["stray".to_string()])
        );
        std::fs::create_dir_all(dir.join("proxy")).unwrap();
        assert_eq!(
            identify_data_dir(&dir).unwrap_err(),
            "invalid datadir. Both member and proxy directories exist."
        );
        std::fs::remove_dir_all(dir.join("member")).unwrap();
        assert_eq!(identify_data_dir(&dir).unwrap().0, DataDirKind::Proxy);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
