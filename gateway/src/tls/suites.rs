//! `--cipher-suites`: Go's cipher suite names (what etcd's `tlsutil.GetCipherSuite` accepts)
//! mapped to rustls's suites.
//!
//! As in Go, the list chooses and orders the TLS 1.2 suites; TLS 1.3 suites cannot be turned
//! off (naming them is accepted and changes nothing). rustls implements only ECDHE key exchange
//! with AEAD ciphers, so Go's CBC, RC4, 3DES and static-RSA suites are refused with a message
//! that says so; a name Go does not know gets etcd's own error.

use rustls::crypto::ring::cipher_suite as rs;
use rustls::SupportedCipherSuite;

use super::TlsError;

/// Go names rustls implements, with the suite (including etcd's two short CHACHA20 aliases).
const SUPPORTED: &[(&str, SupportedCipherSuite)] = &[
    ("TLS_AES_128_GCM_SHA256", rs::TLS13_AES_128_GCM_SHA256),
    ("TLS_AES_256_GCM_SHA384", rs::TLS13_AES_256_GCM_SHA384),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        rs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go names etcd accepts that rustls does not implement.
const GO_ONLY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Checks every name (etcd's `GetCipherSuites`) without building anything.
pub fn check_go_names(names: &[String]) -> Result<(), TlsError> {
    by_go_names(names).map(|_| ())
}

/// The suites a provider offers for `names`: every TLS 1.3 suite, then the named TLS 1.2
/// suites in the order given.
pub fn by_go_names(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let mut tls12 = Vec::new();
    for name in names {
        match SUPPORTED.iter().find(|(n, _)| n == name) {
            Some((_, suite)) => {
                if matches!(suite, SupportedCipherSuite::Tls12(_)) && !tls12.contains(suite) {
                    tls12.push(*suite);
                }
            }
            None if GO_ONLY.contains(&name.as_str()) => {
                return Err(TlsError(format!(
                    "TLS cipher suite {name:?} is not supported by ketch: rustls offers only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305"
                )))
            }
            None => return Err(TlsError(format!("unexpected TLS cipher suite {name:?}"))),
        }
    }
    let mut all: Vec<SupportedCipherSuite> = rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .collect();
    all.extend(tls12);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_choose_and_order_tls12_suites() {
        let names: Vec<String> = [
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        ]
        .map(String::from)
        .to_vec();
        let got = by_go_names(&names).unwrap();
        let tls12: Vec<_> = got
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .collect();
        assert_eq!(tls12.len(), 2);
        assert_eq!(
            tls12[0].suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        );
        assert_eq!(
            tls12[1].suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(got.len(), 5, "the three TLS 1.3 suites stay on");
    }

    #[test]
    fn unknown_and_unsupported_names_are_refused() {
        assert_eq!(
            check_go_names(&["TLS_NOPE".into()]).unwrap_err().0,
            "unexpected TLS cipher suite \"TLS_NOPE\""
        );
        let e = check_go_names(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()])
            .unwrap_err()
            .0;
        assert!(e.contains("not supported by ketch"), "{e}");
    }
}
