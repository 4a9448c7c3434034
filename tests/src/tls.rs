//! TLS for process tests: a set of certificates made in-process with rcgen, what a client
//! needs to talk to an `https://` server (etcdctl's `--cacert/--cert/--key`, or
//! `--insecure-skip-tls-verify`), and a bounded HTTPS GET for the readiness probe.
//!
//! [`TestCerts::generate`] writes, in its own temporary directory:
//! - `ca.pem` / `ca.key`: the CA every member and client trusts;
//! - `server.pem`/`.key`: valid for 127.0.0.1 and localhost, server and client usage (so the
//!   same pair serves as a peer certificate);
//! - `client.pem`/`.key`: CN `root`, client usage;
//! - `foreign.pem`/`.key`: CN `root`, signed by another CA;
//! - `expired.pem`/`.key`: CN `root`, signed by the CA, expired yesterday;
//! - `revoked.pem`/`.key`: CN `root`, signed by the CA and listed in `crl.pem`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};

use crate::http::{parse_complete, HttpResponse};

/// The serial number of `revoked.pem` (listed in `crl.pem`).
pub const REVOKED_SERIAL: u64 = 0x7e70;

/// Certificates in a temporary directory; see the module docs.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    key_pem: String,
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate key")
}

fn make_ca(cn: &str) -> Ca {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ketch-tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    let key = new_key();
    let pem = params.self_signed(&key).expect("self-sign CA").pem();
    let key_pem = key.serialize_pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
        key_pem,
    }
}

enum Usage {
    Member,
    Client,
}

fn make_leaf(ca: &Ca, cn: &str, usage: Usage, serial: u64, expired: bool) -> (String, String) {
    let sans = match usage {
        Usage::Member => vec!["127.0.0.1".to_string(), "localhost".to_string()],
        Usage::Client => vec![],
    };
    let mut params = CertificateParams::new(sans).expect("params");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ketch-tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Member => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.serial_number = Some(SerialNumber::from(serial));
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(10);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
    }
    let key = new_key();
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("ketch-tests-certs-")
            .tempdir()
            .expect("temp dir");
        let certs = TestCerts { dir };
        let ca = make_ca("ketch-tests-ca");
        certs.write("ca.pem", &ca.pem);
        certs.write("ca.key", &ca.key_pem);
        let other = make_ca("ketch-tests-other-ca");
        let pairs = [
            (
                "server",
                make_leaf(&ca, "ketch-tests-member", Usage::Member, 0x5e, false),
            ),
            ("client", make_leaf(&ca, "root", Usage::Client, 0xc1, false)),
            (
                "foreign",
                make_leaf(&other, "root", Usage::Client, 0xf0, false),
            ),
            ("expired", make_leaf(&ca, "root", Usage::Client, 0xe0, true)),
            (
                "revoked",
                make_leaf(&ca, "root", Usage::Client, REVOKED_SERIAL, false),
            ),
        ];
        for (name, (cert, key)) in pairs {
            certs.write(&format!("{name}.pem"), &cert);
            certs.write(&format!("{name}.key"), &key);
        }
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(REVOKED_SERIAL),
                revocation_time: now - time::Duration::minutes(30),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .expect("sign CRL");
        certs.write("crl.pem", &crl.pem().expect("CRL pem"));
        certs
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text)
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of one of the files, as a flag value.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Server flags: TLS on client URLs with `server.pem`, client certificates required and
    /// verified against `ca.pem`.
    pub fn client_auth_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.path("server.pem")),
            format!("--key-file={}", self.path("server.key")),
            format!("--trusted-ca-file={}", self.path("ca.pem")),
            "--client-cert-auth".to_string(),
        ]
    }

    /// Server flags: TLS on peer URLs with `server.pem`, peers' certificates required.
    pub fn peer_auth_flags(&self) -> Vec<String> {
        vec![
            format!("--peer-cert-file={}", self.path("server.pem")),
            format!("--peer-key-file={}", self.path("server.key")),
            format!("--peer-trusted-ca-file={}", self.path("ca.pem")),
            "--peer-client-cert-auth".to_string(),
        ]
    }

    /// A client presenting `<name>.pem` (or no certificate) and trusting `ca.pem`.
    pub fn client(&self, cert: Option<&str>) -> ClientTls {
        ClientTls {
            ca: Some(self.dir.path().join("ca.pem")),
            cert: cert.map(|n| {
                (
                    self.dir.path().join(format!("{n}.pem")),
                    self.dir.path().join(format!("{n}.key")),
                )
            }),
            skip_verify: false,
        }
    }
}

/// What a client uses to reach an `https://` server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The CA to trust (`--cacert`).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (`--cert`, `--key`).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Do not verify the server (`--insecure-skip-tls-verify`), for auto TLS.
    pub skip_verify: bool,
}

impl ClientTls {
    /// Trust anything: for servers with a self-signed certificate.
    pub fn insecure() -> ClientTls {
        ClientTls {
            skip_verify: true,
            ..ClientTls::default()
        }
    }

    /// etcdctl's global flags for this client.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ca) = &self.ca {
            flags.push(format!("--cacert={}", ca.display()));
        }
        if let Some((cert, key)) = &self.cert {
            flags.push(format!("--cert={}", cert.display()));
            flags.push(format!("--key={}", key.display()));
        }
        if self.skip_verify {
            // etcdctl 3.4 applies --insecure-skip-tls-verify only to a TLS configuration it
            // made, and makes none while --insecure-transport keeps its default (true): without
            // this pair it verifies the server and fails (against etcd as against ketch).
            flags.push("--insecure-transport=false".to_string());
            flags.push("--insecure-skip-tls-verify".to_string());
        }
        flags
    }

    fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.ca {
            Some(ca) if !self.skip_verify => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
                    roots
                        .add(c.map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                }
                builder.with_root_certificates(roots)
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
        };
        let config = match &self.cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// `GET path` over TLS (HTTP/1.1, `Connection: close`), the whole exchange bounded by
/// `timeout`.
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let config = tls.rustls_config()?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ketch-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET {path} from https://{addr}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "GET {path} from https://{addr}: timed out after {timeout:?}"
            ));
        }
        stream
            .sock
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(resp) = parse_complete(&raw)? {
                    return Ok(resp);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(format!("GET {path} from https://{addr}: {e}")),
        }
    }
    parse_complete(&raw)?.ok_or_else(|| {
        format!(
            "GET {path} from https://{addr}: connection closed before a full response: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
