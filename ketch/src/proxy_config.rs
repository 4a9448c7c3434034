//! The proxy's configuration from etcd's flags: `--proxy`, the `--proxy-*` timeouts (etcd's
//! milliseconds), `--listen-client-urls`, `--initial-cluster` (the members' peer URLs, used
//! until the proxy has learnt the cluster into its data dir), `--max-request-bytes`, and the TLS
//! flags of both sides.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ketch_proxy::{ProxyConfig, ProxyMode};

use crate::flags::EtcdConfig;
use crate::member_config::{client_tls_info, parse_initial_cluster, peer_tls_info};

/// gRPC framing and metadata on top of the largest request a member accepts.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

pub fn proxy_config(c: &EtcdConfig) -> Result<ProxyConfig, String> {
    let mode = if c.proxy == "readonly" {
        ProxyMode::Readonly
    } else {
        ProxyMode::On
    };
    let mut config = ProxyConfig::new(mode, PathBuf::from(&c.data_dir));
    config.listen = listen_addrs(&c.listen_client_urls)?;
    // (auto TLS is not offered on a proxy: members could not check a certificate made up on
    // the spot)
    config.client_tls = client_tls_info(c);
    config.peer_tls = peer_tls_info(c);
    config.initial_peer_urls = parse_initial_cluster(&c.initial_cluster)?
        .into_iter()
        .map(|(_, url)| url.as_str().trim_end_matches('/').to_string())
        .collect();
    let ms = |v: u64| Duration::from_millis(v);
    config.failure_wait = ms(c.proxy_failure_wait);
    config.refresh_interval = ms(c.proxy_refresh_interval);
    config.dial_timeout = ms(c.proxy_dial_timeout);
    config.write_timeout = ms(c.proxy_write_timeout);
    config.read_timeout = ms(c.proxy_read_timeout);
    config.keep_endpoints_on_refresh_failure = c.proxy_keep_endpoints_on_refresh_failure;
    config.max_request_bytes = usize::try_from(c.max_request_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(GRPC_OVERHEAD_BYTES);
    Ok(config)
}

fn listen_addrs(urls: &[String]) -> Result<Vec<(SocketAddr, bool)>, String> {
    let mut out = Vec::new();
    for text in urls {
        let url = url::Url::parse(text)
            .map_err(|e| format!("invalid listen-client-url {text:?}: {e}"))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "listen-client-url {text:?}: unsupported scheme {other:?}"
                ))
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("listen-client-url {text:?} has no host"))?;
        let port = url.port_or_known_default().unwrap_or(2379);
        let addrs = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| format!("listen-client-url {text:?}: {e}"))?;
        out.extend(addrs.take(1).map(|a| (a, https)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{read, Outcome};

    fn config(args: &[&str]) -> EtcdConfig {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match read(&args, &[], &mut Vec::new()).unwrap() {
            Outcome::Run { config, .. } => *config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn etcds_proxy_flags_and_defaults_reach_the_proxy() {
        let c = proxy_config(&config(&[
            "--proxy=readonly",
            "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--proxy-read-timeout=250",
        ]))
        .unwrap();
        assert_eq!(c.mode, ProxyMode::Readonly);
        assert_eq!(
            c.initial_peer_urls,
            ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]
        );
        assert_eq!(
            c.listen,
            [("127.0.0.1:2379".parse::<SocketAddr>().unwrap(), false)]
        );
        assert_eq!(c.failure_wait, Duration::from_millis(5000));
        assert_eq!(c.refresh_interval, Duration::from_millis(30000));
        assert_eq!(c.dial_timeout, Duration::from_millis(1000));
        assert_eq!(c.write_timeout, Duration::from_millis(5000));
        assert_eq!(c.read_timeout, Duration::from_millis(250));
        assert!(!c.keep_endpoints_on_refresh_failure);
        assert_eq!(
            proxy_config(&config(&["--proxy=on"])).unwrap().mode,
            ProxyMode::On
        );
    }

    #[test]
    fn https_listeners_and_both_tls_sides_come_from_etcds_flags() {
        let c = proxy_config(&config(&[
            "--proxy=on",
            "--listen-client-urls=https://127.0.0.1:2379,http://127.0.0.1:2381",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--trusted-ca-file=ca.pem",
            "--client-cert-auth",
            "--peer-cert-file=pc.pem",
            "--peer-key-file=pk.pem",
        ]))
        .unwrap();
        let https_port = |port: u16| {
            c.listen
                .iter()
                .find(|(a, _)| a.port() == port)
                .map(|(_, tls)| *tls)
        };
        assert_eq!(
            (https_port(2379), https_port(2381)),
            (Some(true), Some(false))
        );
        assert_eq!(
            (
                c.client_tls.cert_file.as_str(),
                c.client_tls.client_cert_auth
            ),
            ("c.pem", true)
        );
        assert_eq!(c.client_tls.trusted_ca_file, "ca.pem");
        assert_eq!(c.peer_tls.cert_file, "pc.pem");
    }
}
