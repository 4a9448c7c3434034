//! TLS for client connections, from etcdctl's flags: `--cacert` (else the system roots),
//! `--cert`/`--key` for client authentication, `--insecure-skip-tls-verify`. File errors use
//! Go's wording, since etcdctl prints them as they come from `crypto/tls` and `os`.

use std::sync::Arc;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The TLS-related global flags.
#[derive(Clone, Debug, Default)]
pub struct SecureSettings {
    pub cert: String,
    pub key: String,
    pub cacert: String,
    /// Server name to verify instead of the endpoint's host (from `--discovery-srv`).
    pub server_name: String,
    pub insecure_transport: bool,
    pub insecure_skip_verify: bool,
}

/// The TLS configurations a client may need.
#[derive(Clone)]
pub struct TlsSetup {
    /// Used for endpoints without a scheme, `unix://` and `https://`; `None` means plain text.
    pub configured: Option<Arc<ClientConfig>>,
    /// For `https://` endpoints when nothing is configured: system roots, full verification.
    pub server_name: String,
}

impl TlsSetup {
    /// Build from the flags the way etcdctl's `newClientCfg` does; errors are Go's texts.
    pub fn from_settings(s: &SecureSettings) -> Result<TlsSetup, String> {
        let any_file = !s.cert.is_empty()
            || !s.key.is_empty()
            || !s.cacert.is_empty()
            || !s.server_name.is_empty();
        let configured = if any_file || !s.insecure_transport {
            Some(Arc::new(build(s)?))
        } else {
            None
        };
        Ok(TlsSetup {
            configured,
            server_name: s.server_name.clone(),
        })
    }

    /// The configuration for an `https://` endpoint when the flags set none.
    pub fn default_config() -> Result<Arc<ClientConfig>, String> {
        build(&SecureSettings::default()).map(Arc::new)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("open {path}: {}", super::errors::os_error_text(&e)))
}

fn build(s: &SecureSettings) -> Result<ClientConfig, String> {
    // Go checks the key pair before the CA bundle, and loads the bundle even when verification
    // is skipped; errors come in that order.
    let identity = client_identity(s)?;
    let roots = roots(&s.cacert)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if s.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("tls: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `--cert` and `--key`, which go together.
fn client_identity(s: &SecureSettings) -> Result<Option<Identity>, String> {
    if s.cert.is_empty() && s.key.is_empty() {
        return Ok(None);
    }
    if s.cert.is_empty() || s.key.is_empty() {
        return Err(format!(
            "KeyFile and CertFile must both be present[key: {}, cert: {}]",
            s.key, s.cert
        ));
    }
    let cert_pem = read_file(&s.cert)?;
    let key_pem = read_file(&s.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err("tls: failed to find any PEM data in certificate input".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| "tls: failed to find any PEM data in key input".to_string())?;
    Ok(Some((chain, key)))
}

/// `--cacert`'s certificates, or the system's bundle when none is given.
fn roots(cacert: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if !cacert.is_empty() {
        // Like etcd's tlsutil.NewCertPool, every PEM block must parse as a certificate,
        // whatever its type says.
        let pem = read_file(cacert)?;
        let mut rest: &[u8] = &pem;
        while let Ok(Some((kind, der))) = rustls_pki_types::pem::from_buf(&mut rest) {
            if kind != SectionKind::Certificate {
                return Err("x509: malformed tbs certificate".to_string());
            }
            store
                .add(CertificateDer::from(der))
                .map_err(|_| "x509: malformed certificate".to_string())?;
        }
        return Ok(store);
    }
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(pem) = std::fs::read(path) {
            for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
                let _ = store.add(cert);
            }
            break;
        }
    }
    Ok(store)
}

/// The name to verify for an endpoint host (`host` or `host:port`).
pub fn server_name_for(host: &str, configured: &str) -> Result<ServerName<'static>, String> {
    let name = if !configured.is_empty() {
        configured.to_string()
    } else {
        split_host(host).to_string()
    };
    ServerName::try_from(name.clone()).map_err(|_| format!("tls: invalid server name {name:?}"))
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn split_host(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `--insecure-skip-tls-verify`: accept any certificate and name, still checking that the
/// handshake is signed by the key in the presented certificate (as Go does).
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_read_like_go() {
        let s = SecureSettings {
            cacert: "/nonexistent/ca.pem".into(),
            insecure_transport: true,
            ..Default::default()
        };
        assert_eq!(
            TlsSetup::from_settings(&s).err().unwrap(),
            "open /nonexistent/ca.pem: no such file or directory"
        );
        let s = SecureSettings {
            cert: "/nonexist".into(),
            insecure_transport: true,
            ..Default::default()
        };
        assert_eq!(
            TlsSetup::from_settings(&s).err().unwrap(),
            "KeyFile and CertFile must both be present[key: , cert: /nonexist]"
        );
        let s = SecureSettings {
            insecure_transport: true,
            ..Default::default()
        };
        assert!(TlsSetup::from_settings(&s).unwrap().configured.is_none());
    }

    #[test]
    fn hosts_split_like_go() {
        assert_eq!(split_host("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(split_host("[::1]:2379"), "::1");
        assert_eq!(split_host("example.com"), "example.com");
    }
}
