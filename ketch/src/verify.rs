//! The checks etcd 3.4 makes on its settings before it prints anything
//! (`embed.Config.Validate` and `etcdmain`'s proxy exception), with etcd's messages. A failure
//! is reported as "error verifying flags, <message>" and exit status 1.

use crate::flags::EtcdConfig;
use crate::goparse::{self, check_bind_url, url_host};
use crate::load::{may_be_proxy, CliError};
use crate::logging::LogSettings;

/// etcd's longest election timeout, in milliseconds.
pub const MAX_ELECTION_MS: u64 = 50_000;

pub const UNSET_ADVERTISE_CLIENT_URLS: &str =
    "--advertise-client-urls is required when --listen-client-urls is set explicitly";

pub fn verify(c: &EtcdConfig) -> Result<(), CliError> {
    LogSettings::from_config(c).map_err(CliError::verify)?;
    for urls in [
        &c.listen_peer_urls,
        &c.listen_client_urls,
        &c.listen_metrics_urls,
    ] {
        for url in urls {
            check_bind_url(url).map_err(CliError::verify)?;
        }
    }
    for (flag, urls) in [
        (
            "--initial-advertise-peer-urls",
            &c.initial_advertise_peer_urls,
        ),
        ("--advertise-client-urls", &c.advertise_client_urls),
    ] {
        if let Some(empty) = urls.iter().find(|u| url_host(u).is_empty()) {
            return Err(CliError::verify(format!(
                "{flag} {} must be \"host:port\" (unexpected empty host ({empty}))",
                goparse::go_quote(&urls.join(","))
            )));
        }
    }
    let bootstraps = [
        !c.discovery.is_empty(),
        !c.initial_cluster.is_empty(),
        !c.discovery_srv.is_empty(),
    ];
    if bootstraps.iter().filter(|set| **set).count() > 1 {
        return Err(CliError::verify(
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"",
        ));
    }
    if c.heartbeat_interval == 0 {
        return Err(CliError::verify(format!(
            "--heartbeat-interval must be >0 (set to {}ms)",
            c.heartbeat_interval
        )));
    }
    if c.election_timeout == 0 {
        return Err(CliError::verify(format!(
            "--election-timeout must be >0 (set to {}ms)",
            c.election_timeout
        )));
    }
    if c.heartbeat_interval.saturating_mul(5) > c.election_timeout {
        return Err(CliError::verify(format!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            c.election_timeout, c.heartbeat_interval
        )));
    }
    if c.election_timeout > MAX_ELECTION_MS {
        return Err(CliError::verify(format!(
            "--election-timeout[{}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms",
            c.election_timeout
        )));
    }
    if c.advertise_client_urls.is_empty() && !may_be_proxy(c) {
        return Err(CliError::Verify {
            message: UNSET_ADVERTISE_CLIENT_URLS.into(),
            hint: Some("When listening on specific address(es), this etcd process must advertise accessible url(s) to each connected client."),
        });
    }
    if !matches!(
        c.auto_compaction_mode.as_str(),
        "" | "periodic" | "revision"
    ) {
        return Err(CliError::verify(format!(
            "unknown auto-compaction-mode {:?}",
            c.auto_compaction_mode
        )));
    }
    if c.experimental_enable_lease_checkpoint_persist && !c.experimental_enable_lease_checkpoint {
        return Err(CliError::verify(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(args: &[&str]) -> EtcdConfig {
        let mut notes = Vec::new();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match crate::load::read(&args, &[], &mut notes).unwrap() {
            crate::load::Outcome::Run { config, .. } => *config,
            other => panic!("{other:?}"),
        }
    }

    fn message(args: &[&str]) -> String {
        match verify(&with(args)) {
            Err(CliError::Verify { message, .. }) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_pass() {
        verify(&EtcdConfig::default()).unwrap();
    }

    #[test]
    fn etcds_messages_for_bad_settings() {
        assert_eq!(
            message(&["--election-timeout=400"]),
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(
            message(&["--election-timeout=60000"]),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(
            message(&["--heartbeat-interval=0"]),
            "--heartbeat-interval must be >0 (set to 0ms)"
        );
        assert_eq!(
            message(&["--listen-client-urls=http://127.0.0.1:2379"]),
            UNSET_ADVERTISE_CLIENT_URLS
        );
        assert_eq!(
            message(&["--listen-peer-urls=http://example.com:2380"]),
            "expected IP in URL for binding (http://example.com:2380)"
        );
        assert_eq!(
            message(&["--auto-compaction-mode=foo"]),
            "unknown auto-compaction-mode \"foo\""
        );
        assert_eq!(message(&["--logger=foo"]), "unknown logger option \"foo\"");
        assert!(message(&[
            "--discovery=https://d.example/x",
            "--initial-cluster=a=http://1.2.3.4:2380"
        ])
        .starts_with("multiple discovery or bootstrap flags are set"));
        assert!(message(&["--experimental-enable-lease-checkpoint-persist"])
            .starts_with("setting experimental"));
        assert_eq!(
            message(&["--initial-advertise-peer-urls=http://:2380"]),
            "--initial-advertise-peer-urls \"http://:2380\" must be \"host:port\" (unexpected empty host (http://:2380))"
        );
    }

    #[test]
    fn a_proxy_need_not_advertise() {
        verify(&with(&[
            "--listen-client-urls=http://127.0.0.1:2379",
            "--proxy=on",
        ]))
        .unwrap();
    }
}
