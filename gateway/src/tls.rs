//! TLS for the client and peer ports, the way etcd 3.4 does it (`pkg/transport`): one
//! [`TlsInfo`] per side (`--cert-file`/`--key-file`/`--trusted-ca-file`/`--client-cert-auth`/
//! `--client-crl-file`, or the `--peer-*` ones) becomes a rustls [`ServerConfig`] for the
//! listener and a [`ClientConfig`] for dialing members.
//!
//! etcd's rules kept here:
//! - a trusted CA file *or* `--client-cert-auth` makes client certificates required and
//!   verified (etcd sets `RequireAndVerifyClientCert` for either); without a CA file they are
//!   verified against the system bundle, as Go does;
//! - certificates are read again when their files change (etcd re-reads them on every
//!   handshake; we look at the files' mtimes at most once a second, see [`reload`]);
//! - a CRL file is read again when it changes, and a certificate it lists is refused;
//! - TLS 1.2 is the minimum; `--cipher-suites` names Go's suites and orders the TLS 1.2 ones
//!   (TLS 1.3 suites are always on, Go does not let them be configured), see [`suites`];
//! - auto TLS makes a self-signed certificate for the listen hosts at start ([`selfcert`]);
//!   clients of a self-signed member do not verify it (etcd's `InsecureSkipVerify`).
//!
//! [`stream`] has the accept side (handshakes off the accept loop, the connection's client
//! identity) and the dial side (a tonic connector over rustls).

pub mod dial;
pub mod reload;
pub mod selfcert;
pub mod stream;
pub mod suites;
pub mod x509;

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub use stream::{
    client_identity, request_identity, ConnInfo, ServerStream, TlsConnector, PROXIED_IDENTITY,
};

/// Why a TLS configuration could not be made. The message is for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl TlsError {
    fn file(path: &str, e: impl std::fmt::Display) -> TlsError {
        TlsError(format!("open {path}: {e}"))
    }
}

/// One side's TLS settings, as etcd's `transport.TLSInfo`. Empty strings mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub cert_file: String,
    pub key_file: String,
    pub trusted_ca_file: String,
    pub client_cert_auth: bool,
    pub crl_file: String,
    /// Go names from `--cipher-suites`, checked by [`suites::by_go_names`]; empty means all
    /// of rustls's suites.
    pub cipher_suites: Vec<String>,
    /// The certificate was made by auto TLS: a client with this info does not verify the
    /// server (etcd's `selfCert` → `InsecureSkipVerify`).
    pub self_signed: bool,
    /// etcd's `AllowedCN` (`--peer-cert-allowed-cn`): a client certificate must have this
    /// common name. Exclusive with `allowed_hostname`.
    pub allowed_cn: String,
    /// etcd's `AllowedHostname` (`--client-cert-allowed-hostname`,
    /// `--peer-cert-allowed-hostname`): a client certificate must name this host.
    pub allowed_hostname: String,
}

impl std::fmt::Display for TlsInfo {
    /// etcd's `TLSInfo.String`, which it logs at start ("peerTLS: cert = …").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cert = {}, key = {}, trusted-ca = {}, client-cert-auth = {}, crl-file = {}",
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            self.client_cert_auth,
            self.crl_file
        )
    }
}

/// Go's locations of the system CA bundle on Linux; the first one that exists is used.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl TlsInfo {
    /// etcd's `Empty`: neither certificate nor key given.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty()
    }

    /// Whether a server with this info asks for and verifies client certificates.
    pub fn requires_client_certs(&self) -> bool {
        self.client_cert_auth || !self.trusted_ca_file.is_empty()
    }

    fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        let base = rustls::crypto::ring::default_provider();
        let cipher_suites = if self.cipher_suites.is_empty() {
            base.cipher_suites.clone()
        } else {
            suites::by_go_names(&self.cipher_suites)?
        };
        Ok(Arc::new(CryptoProvider {
            cipher_suites,
            ..base
        }))
    }

    /// The listener's configuration. Reads the certificate, key, CA and CRL files now, so a
    /// missing or bad file fails the start.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        if self.key_file.is_empty() || self.cert_file.is_empty() {
            return Err(TlsError(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                self.key_file, self.cert_file
            )));
        }
        let provider = self.provider()?;
        let certs = Arc::new(reload::ReloadingCert::open(
            &self.cert_file,
            &self.key_file,
            provider.clone(),
        )?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("tls: {e}")))?;
        let builder = if self.requires_client_certs() {
            let roots = if self.trusted_ca_file.is_empty() {
                system_roots()
            } else {
                load_roots(&self.trusted_ca_file)?
            };
            let crl = (!self.crl_file.is_empty()).then(|| self.crl_file.clone());
            let allowed = match (self.allowed_cn.is_empty(), self.allowed_hostname.is_empty()) {
                (true, true) => None,
                (false, true) => Some(reload::AllowedName::CommonName(self.allowed_cn.clone())),
                (true, false) => Some(reload::AllowedName::Hostname(self.allowed_hostname.clone())),
                (false, false) => {
                    return Err(TlsError(format!(
                    "AllowedCN and AllowedHostname are mutually exclusive (cn={:?}, hostname={:?})",
                    self.allowed_cn, self.allowed_hostname
                )))
                }
            };
            builder.with_client_cert_verifier(Arc::new(reload::ClientCertCheck::new(
                roots, crl, provider, allowed,
            )?))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(certs);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate exchange, so a
        // revoked client certificate or a renewed server certificate would go unnoticed. Client
        // connections are long-lived gRPC channels; a full handshake each costs little.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// The configuration for dialing a server of this side (a member dialing its peers): the
    /// trusted CA (else the system bundle; nothing at all for a self-signed side), and this
    /// member's certificate as the client certificate when one is given.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = self.provider()?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("tls: {e}")))?;
        let builder = if self.self_signed {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider.clone())))
        } else if self.trusted_ca_file.is_empty() {
            builder.with_root_certificates(system_roots())
        } else {
            builder.with_root_certificates(load_roots(&self.trusted_ca_file)?)
        };
        let mut config = if self.is_empty() {
            builder.with_no_client_auth()
        } else {
            let certs = reload::ReloadingCert::open(&self.cert_file, &self.key_file, provider)?;
            builder.with_client_cert_resolver(Arc::new(certs))
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM bundle.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| TlsError::file(path, io_text(&e)))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{path}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "tls: failed to find any PEM data in certificate input ({path})"
        )));
    }
    Ok(certs)
}

fn load_roots(path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{path}: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The system's CA bundle, at Go's places (an empty store if there is none).
fn system_roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = SYSTEM_CA_FILES.iter().find(|p| Path::new(p).exists()) {
        if let Ok(certs) = load_certs(path) {
            roots.add_parsable_certificates(certs);
        }
    }
    Arc::new(roots)
}

/// Go's wording for a file that is not there ("no such file or directory").
pub(crate) fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// A server name for a URL host: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError(format!("server name {host:?}: {e}")))
}

/// Accepts any server certificate but still checks the handshake signatures: what etcd does
/// with members that use auto TLS (`InsecureSkipVerify`).
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
mod tests;
