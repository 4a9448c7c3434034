//! Files read again when they change: the certificate and key (etcd re-reads them on every
//! handshake, so a renewed certificate is served without a restart) and the CRL (etcd reads it
//! on every connection). Reading on every handshake costs a file read and a key parse per
//! connection; instead the files' modification times are compared at most once a second, and
//! the files are read only when one changed. A file that cannot be read or parsed keeps the
//! previous certificate in service, with a warning.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tracing::warn;

use super::{io_text, load_certs, TlsError};

/// How often the files' mtimes are looked at, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

fn mtime(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate and key from files, served to clients (as a server) or presented to servers
/// (as a client), read again when either file's mtime changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: String,
    key_file: String,
    provider: Arc<CryptoProvider>,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    checked: Instant,
    mtimes: (Option<SystemTime>, Option<SystemTime>),
    current: Arc<CertifiedKey>,
}

impl ReloadingCert {
    /// Reads the pair now; an error here fails the start.
    pub fn open(
        cert_file: &str,
        key_file: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let mtimes = (mtime(cert_file), mtime(key_file));
        let current = load_pair(cert_file, key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_string(),
            key_file: key_file.to_string(),
            provider,
            state: Mutex::new(CertState {
                checked: Instant::now(),
                mtimes,
                current,
            }),
        })
    }

    /// The pair in service, read again first if a file changed since the last look.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = (mtime(&self.cert_file), mtime(&self.key_file));
            if now != state.mtimes {
                match load_pair(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(pair) => {
                        state.current = pair;
                        state.mtimes = now;
                    }
                    // Keep the mtimes as they were, so the next look tries again (a renewal
                    // may be half written).
                    Err(e) => warn!(
                        target: "embed",
                        "failed to reload certificate (cert-file {}, key-file {}): {e}; keeping the previous one",
                        self.cert_file, self.key_file
                    ),
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn load_pair(
    cert_file: &str,
    key_file: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs = load_certs(cert_file)?;
    let key_bytes = std::fs::read(key_file).map_err(|e| TlsError::file(key_file, io_text(&e)))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|_| TlsError("tls: failed to find any PEM data in key input".into()))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        TlsError(format!(
            "tls: failed to parse private key ({key_file}): {e}"
        ))
    })?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .map_err(|_| TlsError("tls: private key does not match public key".into()))?;
    Ok(Arc::new(pair))
}

/// Reads a CRL file, PEM or DER (Go's `x509.ParseCRL` takes both).
pub fn load_crls(path: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| TlsError::file(path, io_text(&e)))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("{path}: {e}")))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// Client certificates required and verified against the trusted CAs (fixed at start, as in
/// etcd), and refused when the CRL file lists them (read again when it changes). A CRL from
/// another CA does not block anything: as with etcd, only a listed certificate is refused.
#[derive(Debug)]
pub struct ClientCertCheck {
    roots: Arc<RootCertStore>,
    /// The CA names sent in the CertificateRequest (Go sends its `ClientCAs` subjects, and Go
    /// clients choose the certificate to present by them).
    hints: Vec<DistinguishedName>,
    crl_file: Option<String>,
    provider: Arc<CryptoProvider>,
    state: Mutex<VerifierState>,
    /// etcd's `--peer-cert-allowed-cn` / `--*-cert-allowed-hostname`: what a verified
    /// certificate must also name
    allowed: Option<AllowedName>,
}

/// The one name a client certificate must carry, besides being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedName {
    /// its subject's common name, exactly
    CommonName(String),
    /// a DNS name or IP address among its subject alternative names
    Hostname(String),
}

impl AllowedName {
    fn admits(&self, cert: &CertificateDer<'_>) -> bool {
        let Some(names) = super::x509::names(cert) else {
            return false;
        };
        match self {
            AllowedName::CommonName(cn) => names.common_name.as_deref() == Some(cn.as_str()),
            AllowedName::Hostname(host) => match host.parse::<std::net::IpAddr>() {
                Ok(ip) => names.ips.contains(&ip),
                Err(_) => names.dns.iter().any(|d| dns_matches(d, host)),
            },
        }
    }
}

/// A certificate DNS name (possibly `*.example.com`) against a host name, case-insensitively.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

#[derive(Debug)]
struct VerifierState {
    checked: Instant,
    crl_mtime: Option<SystemTime>,
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertCheck {
    pub fn new(
        roots: Arc<RootCertStore>,
        crl_file: Option<String>,
        provider: Arc<CryptoProvider>,
        allowed: Option<AllowedName>,
    ) -> Result<ClientCertCheck, TlsError> {
        let crl_mtime = crl_file.as_deref().and_then(mtime);
        let inner = build_verifier(&roots, crl_file.as_deref(), &provider)?;
        Ok(ClientCertCheck {
            hints: roots.subjects(),
            roots,
            crl_file,
            provider,
            state: Mutex::new(VerifierState {
                checked: Instant::now(),
                crl_mtime,
                inner,
            }),
            allowed,
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(crl) = &self.crl_file {
            if state.checked.elapsed() >= CHECK_EVERY {
                state.checked = Instant::now();
                let now = mtime(crl);
                if now != state.crl_mtime {
                    match build_verifier(&self.roots, Some(crl), &self.provider) {
                        Ok(inner) => {
                            state.inner = inner;
                            state.crl_mtime = now;
                        }
                        Err(e) => {
                            warn!(target: "embed", "failed to reload CRL {crl}: {e}; keeping the previous one")
                        }
                    }
                }
            }
        }
        state.inner.clone()
    }
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    crl_file: Option<&str>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let crls = match crl_file {
        Some(path) => load_crls(path)?,
        None => Vec::new(),
    };
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError(format!("client certificate verifier: {e}")))
}

impl ClientCertVerifier for ClientCertCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .current()
            .verify_client_cert(end_entity, intermediates, now)?;
        match &self.allowed {
            Some(allowed) if !allowed.admits(end_entity) => {
                // etcd's wording for a valid certificate that names the wrong peer
                Err(rustls::Error::General(
                    "client certificate authentication failed".into(),
                ))
            }
            _ => Ok(verified),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
