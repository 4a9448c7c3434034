//! Auto TLS (`--auto-tls`, `--peer-auto-tls`): a self-signed certificate for the listen hosts,
//! made once and kept in `<data-dir>/fixtures/{client,peer}/{cert,key}.pem` (etcd's
//! `transport.SelfCert`). A later start finds the files and uses them again.
//!
//! As etcd's: organization "etcd", valid for a year from now, the listen hosts as IP or DNS
//! subject alternative names, server-auth usage, a random 128-bit serial. etcd uses a P-521
//! key; ring cannot sign with P-521, so ours is P-256.

use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use tracing::info;

use super::{io_text, TlsError, TlsInfo};

/// Makes (or finds) the self-signed pair in `dir` for `hosts` (`host:port` or bare hosts, as
/// in the listen URLs) and returns the info that serves it.
pub fn self_cert(dir: &Path, hosts: &[String]) -> Result<TlsInfo, TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let info = TlsInfo {
        cert_file: cert_path.display().to_string(),
        key_file: key_path.display().to_string(),
        self_signed: true,
        ..TlsInfo::default()
    };
    if cert_path.exists() && key_path.exists() {
        return Ok(info);
    }
    create_private_dir(dir)?;
    let (cert_pem, key_pem) = generate(hosts)?;
    std::fs::write(&cert_path, cert_pem).map_err(|e| {
        TlsError(format!(
            "cannot cert file {}: {}",
            cert_path.display(),
            io_text(&e)
        ))
    })?;
    info!(target: "pkg/transport", "created cert file {}", cert_path.display());
    write_private(&key_path, key_pem.as_bytes()).map_err(|e| {
        TlsError(format!(
            "cannot key file {}: {}",
            key_path.display(),
            io_text(&e)
        ))
    })?;
    info!(target: "pkg/transport", "created key file {}", key_path.display());
    Ok(info)
}

/// A self-signed certificate and its key, PEM, for `hosts`.
pub fn generate(hosts: &[String]) -> Result<(String, String), TlsError> {
    let err = |e: rcgen::Error| TlsError(format!("cannot generate x509 certificate: {e}"));
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    for host in hosts {
        let host = host_of(host);
        if host.is_empty() {
            continue;
        }
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into().map_err(err)?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError(format!("cannot generate ECDSA key: {e}")))?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => hostport,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        TlsError(format!(
            "cannot create cert directory {}: {}",
            dir.display(),
            io_text(&e)
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_ip_and_dns_names() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        let dir = tempfile::tempdir().unwrap();
        let info = self_cert(
            &dir.path().join("fixtures/client"),
            &["127.0.0.1:2379".into(), "localhost:2379".into()],
        )
        .unwrap();
        assert!(info.self_signed);
        let der = crate::tls::load_certs(&info.cert_file).unwrap();
        let names = crate::tls::x509::names(&der[0]).unwrap();
        assert_eq!(
            names.ips,
            vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(names.dns, vec!["localhost".to_string()]);
        // made once: a second call keeps the files
        let before = std::fs::read(&info.cert_file).unwrap();
        self_cert(
            &dir.path().join("fixtures/client"),
            &["127.0.0.1:2379".into()],
        )
        .unwrap();
        assert_eq!(std::fs::read(&info.cert_file).unwrap(), before);
        info.server_config().unwrap();
    }
}
