//! Handshakes over loopback between configurations made from rcgen certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use super::stream::{incoming, ListenerTls};
use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// (cert pem, key pem) signed by `ca`; `days` = validity around now (negative: expired).
fn leaf(ca: &Ca, cn: &str, serial: u64, expired: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(SerialNumber::from(serial));
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(10);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn crl(ca: &Ca, revoked: &[u64]) -> String {
    let now = time::OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .unwrap()
    .pem()
    .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            ca: ca("test-ca"),
        }
    }

    fn pair(&self, name: &str, ca: &Ca, cn: &str, serial: u64, expired: bool) -> (String, String) {
        let (c, k) = leaf(ca, cn, serial, expired);
        (
            write(self.dir.path(), &format!("{name}.pem"), &c),
            write(self.dir.path(), &format!("{name}.key"), &k),
        )
    }

    fn ca_file(&self) -> String {
        write(self.dir.path(), "ca.pem", &self.ca.pem)
    }
}

/// Serves TLS on loopback; returns the address and the accepted connections' streams.
async fn serve(
    config: Arc<ServerConfig>,
) -> (
    SocketAddr,
    tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerStream>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ListenerTls {
        config,
        check_client_san: false,
        log_target: "embed",
    };
    (addr, incoming(listener, Some(tls)))
}

/// Connects with `client`, writes a byte and reads one back through a server task that echoes;
/// Ok(identity seen by the server) or Err(what failed).
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<Option<String>, String> {
    let (addr, mut accepted) = serve(server).await;
    let echo = tokio::spawn(async move {
        let mut s = accepted.next().await?.ok()?;
        let who = s.info().identity();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        s.write_all(&b).await.ok()?;
        s.flush().await.ok()?;
        Some(who)
    });
    let client_side = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut s = tokio_rustls::TlsConnector::from(client)
            .connect(server_name("127.0.0.1").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"x").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), client_side)
        .await
        .map_err(|_| "timeout".to_string())?;
    outcome?;
    let who = tokio::time::timeout(Duration::from_secs(5), echo)
        .await
        .unwrap()
        .unwrap();
    who.ok_or_else(|| "server saw no connection".to_string())
}

fn server_info(f: &Fixture, auth: bool) -> TlsInfo {
    let (cert, key) = f.pair("server", &f.ca, "server", 1, false);
    TlsInfo {
        cert_file: cert,
        key_file: key,
        trusted_ca_file: if auth { f.ca_file() } else { String::new() },
        client_cert_auth: auth,
        ..TlsInfo::default()
    }
}

fn client_info(f: &Fixture, cert: Option<(String, String)>) -> TlsInfo {
    let (cert_file, key_file) = cert.unwrap_or_default();
    TlsInfo {
        cert_file,
        key_file,
        trusted_ca_file: f.ca_file(),
        ..TlsInfo::default()
    }
}

#[tokio::test]
async fn a_verified_client_certificate_gives_its_common_name() {
    let f = Fixture::new();
    let server = server_info(&f, true).server_config().unwrap();
    let client = client_info(&f, Some(f.pair("client", &f.ca, "root", 2, false)))
        .client_config()
        .unwrap();
    assert_eq!(
        exchange(server, client).await.unwrap().as_deref(),
        Some("root")
    );
}

#[tokio::test]
async fn without_client_auth_there_is_no_identity() {
    let f = Fixture::new();
    let server = server_info(&f, false).server_config().unwrap();
    let client = client_info(&f, None).client_config().unwrap();
    assert_eq!(exchange(server, client).await.unwrap(), None);
}

#[tokio::test]
async fn missing_foreign_and_expired_client_certificates_are_refused() {
    let f = Fixture::new();
    let server = server_info(&f, true).server_config().unwrap();
    let other = ca("other-ca");
    let cases = [
        ("no certificate", None),
        (
            "another CA",
            Some(f.pair("foreign", &other, "root", 3, false)),
        ),
        ("expired", Some(f.pair("expired", &f.ca, "root", 4, true))),
    ];
    for (what, cert) in cases {
        let client = client_info(&f, cert).client_config().unwrap();
        let got = exchange(server.clone(), client).await;
        assert!(got.is_err(), "{what}: accepted ({got:?})");
    }
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_the_crl_is_read_again() {
    let f = Fixture::new();
    let crl_file = write(f.dir.path(), "crl.pem", &crl(&f.ca, &[]));
    let info = TlsInfo {
        crl_file: crl_file.clone(),
        ..server_info(&f, true)
    };
    let server = info.server_config().unwrap();
    let revoked = f.pair("revoked", &f.ca, "root", 7, false);
    let client = client_info(&f, Some(revoked)).client_config().unwrap();
    assert_eq!(
        exchange(server.clone(), client.clone())
            .await
            .unwrap()
            .as_deref(),
        Some("root")
    );
    // Revoke serial 7; the mtime must differ from the first file's.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&crl_file, crl(&f.ca, &[7])).unwrap();
    let got = exchange(server, client).await;
    assert!(got.is_err(), "revoked certificate accepted: {got:?}");
}

#[tokio::test]
async fn a_changed_certificate_file_is_served_without_a_restart() {
    let f = Fixture::new();
    let info = server_info(&f, false);
    let server = info.server_config().unwrap();
    let client = client_info(&f, None).client_config().unwrap();
    exchange(server.clone(), client.clone()).await.unwrap();
    // Replace the pair with one from another CA: the client (trusting only test-ca) must now
    // refuse the server, which proves the new files are in use.
    let other = ca("other-ca");
    let (c, k) = leaf(&other, "server", 9, false);
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&info.cert_file, c).unwrap();
    std::fs::write(&info.key_file, k).unwrap();
    let got = exchange(server, client).await;
    assert!(got.is_err(), "old certificate still served: {got:?}");
}

#[tokio::test]
async fn an_auto_tls_member_is_dialed_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    let info = selfcert::self_cert(
        &dir.path().join("fixtures/peer"),
        &["127.0.0.1:2380".into()],
    )
    .unwrap();
    let server = info.server_config().unwrap();
    // a member with peer auto TLS dials its peers with the same info: no CA, no verification
    let client = TlsInfo {
        cert_file: String::new(),
        key_file: String::new(),
        ..info.clone()
    }
    .client_config()
    .unwrap();
    assert_eq!(exchange(server, client).await.unwrap(), None);
}

#[test]
fn missing_files_and_bad_suites_fail_the_configuration() {
    let info = TlsInfo {
        cert_file: "/nonexistent/c.pem".into(),
        key_file: "/nonexistent/k.pem".into(),
        ..TlsInfo::default()
    };
    assert_eq!(
        info.server_config().unwrap_err().0,
        "open /nonexistent/c.pem: no such file or directory"
    );
    let info = TlsInfo {
        cert_file: "/c.pem".into(),
        ..TlsInfo::default()
    };
    assert_eq!(
        info.server_config().unwrap_err().0,
        "KeyFile and CertFile must both be present[key: , cert: /c.pem]"
    );
    let f = Fixture::new();
    let info = TlsInfo {
        cipher_suites: vec!["TLS_FOO".into()],
        ..server_info(&f, false)
    };
    assert_eq!(
        info.server_config().unwrap_err().0,
        "unexpected TLS cipher suite \"TLS_FOO\""
    );
    assert_eq!(
        TlsInfo {
            cert_file: "a".into(),
            key_file: "b".into(),
            trusted_ca_file: "c".into(),
            client_cert_auth: true,
            ..TlsInfo::default()
        }
        .to_string(),
        "cert = a, key = b, trusted-ca = c, client-cert-auth = true, crl-file = "
    );
}

#[tokio::test]
async fn requests_carry_the_identity_of_their_connection() {
    let f = Fixture::new();
    let server = server_info(&f, true).server_config().unwrap();
    let (addr, accepted) = serve(server).await;
    let router = axum::Router::new().route(
        "/whoami",
        axum::routing::get(|req: axum::extract::Request| async move {
            request_identity(req.extensions()).unwrap_or_else(|| "nobody".into())
        }),
    );
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(accepted),
    );
    let client = client_info(&f, Some(f.pair("client", &f.ca, "alice", 2, false)))
        .client_config()
        .unwrap();
    let ask = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = tokio_rustls::TlsConnector::from(client)
            .connect(server_name("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let response = tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .unwrap();
    serving.abort();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("alice"), "{response}");
}

#[tokio::test]
async fn an_allowed_common_name_or_hostname_narrows_who_may_connect() {
    let f = Fixture::new();
    let mut info = server_info(&f, true);
    info.allowed_cn = "root".into();
    let server = info.server_config().unwrap();
    let root = client_info(&f, Some(f.pair("root", &f.ca, "root", 5, false)))
        .client_config()
        .unwrap();
    assert_eq!(
        exchange(server.clone(), root).await.unwrap().as_deref(),
        Some("root")
    );
    let other = client_info(&f, Some(f.pair("alice", &f.ca, "alice", 6, false)))
        .client_config()
        .unwrap();
    assert!(
        exchange(server, other).await.is_err(),
        "a certificate with another name is refused"
    );
    // the leaves made here name localhost and 127.0.0.1
    let mut info = server_info(&f, true);
    info.allowed_hostname = "127.0.0.1".into();
    let server = info.server_config().unwrap();
    let alice = client_info(&f, Some(f.pair("alice2", &f.ca, "alice", 7, false)))
        .client_config()
        .unwrap();
    assert!(exchange(server, alice).await.is_ok());
    let mut info = server_info(&f, true);
    info.allowed_hostname = "elsewhere.example".into();
    let server = info.server_config().unwrap();
    let alice = client_info(&f, Some(f.pair("alice3", &f.ca, "alice", 8, false)))
        .client_config()
        .unwrap();
    assert!(exchange(server, alice).await.is_err());
    let mut both = server_info(&f, true);
    both.allowed_cn = "root".into();
    both.allowed_hostname = "localhost".into();
    assert!(both
        .server_config()
        .unwrap_err()
        .to_string()
        .contains("mutually exclusive"));
}
