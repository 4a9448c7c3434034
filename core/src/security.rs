//! The member's TLS, worked out once at start from [`MemberConfig`] (etcd's
//! `configurePeerListeners` / `configureClientListeners` with `PeerSelfCert` / `ClientSelfCert`):
//! auto TLS certificates are made, the cipher suites applied, the listener configurations and
//! the peer dialing configuration built, and etcd's start-up lines logged.

use std::sync::Arc;

use ketch_gateway::tls::stream::ListenerTls;
use ketch_gateway::tls::{selfcert, TlsInfo};
use rustls::ClientConfig;
use tracing::{info, warn};
use url::Url;

use crate::config::{host_port, is_tls_scheme, url_text, MemberConfig};
use crate::member::StartError;

/// TLS for the member's listeners and for its connections to peers.
#[derive(Clone)]
pub struct Security {
    /// For `https://` client URLs; `None` when no client URL is `https://`.
    pub client_listener: Option<ListenerTls>,
    /// For `https://` peer URLs; `None` when no peer URL is `https://`.
    pub peer_listener: Option<ListenerTls>,
    /// What this member dials `https://` peer URLs with.
    pub peer_dialer: Arc<ClientConfig>,
}

fn tls_error(e: impl std::fmt::Display) -> StartError {
    StartError::Other(e.to_string())
}

impl Security {
    /// Peer side first, then client side, as etcd configures them.
    pub fn from_config(config: &MemberConfig) -> Result<Security, StartError> {
        let peer = resolve(
            &config.peer_tls,
            config.peer_auto_tls,
            &config.data_dir.join("fixtures").join("peer"),
            &config.listen_peer_urls,
            "peer",
        )?;
        if !peer.is_empty() {
            info!(target: "embed", "peerTLS: {peer}");
        }
        for u in config
            .listen_peer_urls
            .iter()
            .filter(|u| u.scheme() == "http")
        {
            if !peer.is_empty() {
                warn!(target: "embed", "The scheme of peer url {} is HTTP while peer key/cert files are presented. Ignored peer key/cert files.", url_text(u));
            }
            if peer.client_cert_auth {
                warn!(target: "embed", "The scheme of peer url {} is HTTP while client cert auth (--peer-client-cert-auth) is enabled. Ignored client cert auth for this url.", url_text(u));
            }
        }
        let peer_listener = match config.listen_peer_urls.iter().find(|u| is_tls_scheme(u)) {
            Some(u) if peer.is_empty() => {
                return Err(StartError::Other(format!(
                    "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
                    host_port(u)
                )))
            }
            Some(_) => Some(ListenerTls {
                config: peer.server_config().map_err(tls_error)?,
                check_client_san: !config.peer_skip_client_san_verification,
                log_target: "rafthttp",
            }),
            None => None,
        };
        let peer_dialer = peer.client_config().map_err(tls_error)?;

        let client = resolve(
            &config.client_tls,
            config.client_auto_tls,
            &config.data_dir.join("fixtures").join("client"),
            &config.listen_client_urls,
            "client",
        )?;
        for u in config
            .listen_client_urls
            .iter()
            .filter(|u| u.scheme() == "http")
        {
            if !client.is_empty() {
                warn!(target: "embed", "The scheme of client url {} is HTTP while peer key/cert files are presented. Ignored key/cert files.", url_text(u));
            }
            if client.client_cert_auth {
                warn!(target: "embed", "The scheme of client url {} is HTTP while client cert auth (--client-cert-auth) is enabled. Ignored client cert auth for this url.", url_text(u));
            }
        }
        let client_listener = match config.listen_client_urls.iter().find(|u| is_tls_scheme(u)) {
            Some(u) if client.is_empty() => {
                return Err(StartError::Other(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    url_text(u)
                )))
            }
            Some(_) => Some(ListenerTls {
                config: client.server_config().map_err(tls_error)?,
                check_client_san: false,
                log_target: "embed",
            }),
            None => None,
        };
        if !client.is_empty() {
            info!(target: "embed", "ClientTLS: {client}");
        }
        Ok(Security {
            client_listener,
            peer_listener,
            peer_dialer,
        })
    }
}

/// etcd's `ClientSelfCert` / `PeerSelfCert`: auto TLS makes a certificate for the listen
/// hosts unless one was given.
fn resolve(
    given: &TlsInfo,
    auto: bool,
    dir: &std::path::Path,
    listen: &[Url],
    side: &str,
) -> Result<TlsInfo, StartError> {
    if !auto {
        return Ok(given.clone());
    }
    if !given.is_empty() {
        warn!(target: "embed", "ignoring {side} auto TLS since certs given");
        return Ok(given.clone());
    }
    let hosts: Vec<String> = listen.iter().map(host_port).collect();
    let made = selfcert::self_cert(dir, &hosts)
        .map_err(|e| StartError::Other(format!("could not get certs ({e})")))?;
    Ok(TlsInfo {
        cipher_suites: given.cipher_suites.clone(),
        ..made
    })
}
