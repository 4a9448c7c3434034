//! etcd's JWT tokens (`--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=5m`):
//! signed claims `{"username", "revision", "exp"}`, so any member with the public key checks a
//! token without having seen it issued, and tokens outlive a restart. A member with only the
//! public key checks tokens but cannot issue them.
//!
//! Signing methods (ring): RS256/384/512, PS256/384/512 and ES256/384. Keys are PEM files: an
//! RSA private key in PKCS#1 or PKCS#8, an EC private key in PKCS#8, a public key as a
//! SubjectPublicKeyInfo ("PUBLIC KEY").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// etcd's default token TTL for JWT.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

enum Signer {
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
}

pub struct JwtTokens {
    method: String,
    signer: Option<Signer>,
    verifier: UnparsedPublicKey<Vec<u8>>,
    ttl: Duration,
    rng: SystemRandom,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub username: String,
    pub revision: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    username: String,
    revision: u64,
    exp: u64,
}

impl JwtTokens {
    /// Reads etcd's `--auth-token` options (the part after `jwt,`); errors read as etcd's.
    pub fn from_options(options: &str) -> Result<JwtTokens, String> {
        let (mut pub_key, mut priv_key, mut method, mut ttl) = (None, None, None, DEFAULT_TTL);
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("invalid auth token option {opt:?}"))?;
            match k {
                "pub-key" => pub_key = Some(v.to_string()),
                "priv-key" => priv_key = Some(v.to_string()),
                "sign-method" => method = Some(v.to_string()),
                "ttl" => {
                    ttl = crate::compactor::parse_go_duration(v)
                        .ok_or_else(|| format!("invalid jwt ttl {v:?}"))?
                }
                _ => return Err(format!("unknown token option {k:?}")),
            }
        }
        let method = method.ok_or("auth: invalid auth options (no sign-method)")?;
        let (verify_alg, rsa_encoding, ec_alg): (
            &'static dyn signature::VerificationAlgorithm,
            Option<&'static dyn signature::RsaEncoding>,
            Option<&'static signature::EcdsaSigningAlgorithm>,
        ) = match method.as_str() {
            "RS256" => (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                Some(&signature::RSA_PKCS1_SHA256),
                None,
            ),
            "RS384" => (
                &signature::RSA_PKCS1_2048_8192_SHA384,
                Some(&signature::RSA_PKCS1_SHA384),
                None,
            ),
            "RS512" => (
                &signature::RSA_PKCS1_2048_8192_SHA512,
                Some(&signature::RSA_PKCS1_SHA512),
                None,
            ),
            "PS256" => (
                &signature::RSA_PSS_2048_8192_SHA256,
                Some(&signature::RSA_PSS_SHA256),
                None,
            ),
            "PS384" => (
                &signature::RSA_PSS_2048_8192_SHA384,
                Some(&signature::RSA_PSS_SHA384),
                None,
            ),
            "PS512" => (
                &signature::RSA_PSS_2048_8192_SHA512,
                Some(&signature::RSA_PSS_SHA512),
                None,
            ),
            "ES256" => (
                &signature::ECDSA_P256_SHA256_FIXED,
                None,
                Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            ),
            "ES384" => (
                &signature::ECDSA_P384_SHA384_FIXED,
                None,
                Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            ),
            other => {
                return Err(format!(
                    "unsupported sign method {other:?} (RS256/384/512, PS256/384/512, ES256/384)"
                ))
            }
        };
        let rng = SystemRandom::new();
        let signer = match &priv_key {
            None => None,
            Some(path) => {
                let key = PrivateKeyDer::from_pem_file(path)
                    .map_err(|e| format!("cannot read private key {path}: {e}"))?;
                Some(match (rsa_encoding, ec_alg, key) {
                    (Some(enc), _, PrivateKeyDer::Pkcs1(k)) => Signer::Rsa(
                        RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|e| format!("private key {path}: {e}"))?,
                        enc,
                    ),
                    (Some(enc), _, PrivateKeyDer::Pkcs8(k)) => Signer::Rsa(
                        RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(|e| format!("private key {path}: {e}"))?,
                        enc,
                    ),
                    (_, Some(alg), PrivateKeyDer::Pkcs8(k)) => Signer::Ecdsa(
                        EcdsaKeyPair::from_pkcs8(alg, k.secret_pkcs8_der(), &rng).map_err(|e| format!("private key {path}: {e}"))?,
                    ),
                    _ => return Err(format!("private key {path} does not fit sign method {method} (EC keys must be PKCS#8)")),
                })
            }
        };
        let public = match (&pub_key, &signer) {
            (Some(path), _) => spki_key(
                &std::fs::read(path).map_err(|e| format!("cannot read public key {path}: {e}"))?,
            )
            .ok_or_else(|| format!("public key {path}: not a PEM SubjectPublicKeyInfo"))?,
            (None, Some(Signer::Rsa(k, _))) => k.public_key().as_ref().to_vec(),
            (None, Some(Signer::Ecdsa(k))) => k.public_key().as_ref().to_vec(),
            (None, None) => {
                return Err("auth: invalid auth options (neither pub-key nor priv-key)".into())
            }
        };
        Ok(JwtTokens {
            method,
            signer,
            verifier: UnparsedPublicKey::new(verify_alg, public),
            ttl,
            rng,
        })
    }

    /// A token for `username` at auth revision `revision`; `None` on a member without the
    /// private key.
    pub fn sign(&self, username: &str, revision: u64) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let header = serde_json::json!({ "alg": self.method, "typ": "JWT" });
        let exp = (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs();
        let payload = serde_json::to_vec(&Payload {
            username: username.to_string(),
            revision,
            exp,
        })
        .ok()?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = match signer {
            Signer::Rsa(k, enc) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(*enc, &self.rng, signing_input.as_bytes(), &mut sig)
                    .ok()?;
                sig
            }
            Signer::Ecdsa(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .ok()?
                .as_ref()
                .to_vec(),
        };
        Some(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of a token signed with our key and not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (signing_input, sig) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg").and_then(|a| a.as_str()) != Some(self.method.as_str()) {
            return None;
        }
        self.verifier
            .verify(signing_input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).ok()?)
            .ok()?;
        let p: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (p.exp > now).then_some(Claims {
            username: p.username,
            revision: p.revision,
        })
    }
}

/// The subjectPublicKey bits of a PEM "PUBLIC KEY" (SubjectPublicKeyInfo): SEQUENCE {
/// SEQUENCE algorithm, BIT STRING key }.
fn spki_key(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let (tag, outer, _) = der_item(&der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_item(outer)?; // the algorithm
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, _) = der_item(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

/// One DER item: (tag, contents, what follows).
fn der_item(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (
            rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(args: &[&str]) -> bool {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn tokens_sign_verify_and_expire_with_rsa_and_ec_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        if !openssl(&["genrsa", "-out", &p("rsa.pem"), "2048"])
            || !openssl(&[
                "rsa",
                "-in",
                &p("rsa.pem"),
                "-pubout",
                "-out",
                &p("rsa.pub"),
            ])
            || !openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &p("ec.pem"),
            ])
        {
            eprintln!("skipping: openssl is needed to make keys");
            return;
        }
        for (opts, method) in [
            (
                format!("priv-key={},sign-method=RS256", p("rsa.pem")),
                "RS256",
            ),
            (
                format!(
                    "pub-key={},priv-key={},sign-method=PS384",
                    p("rsa.pub"),
                    p("rsa.pem")
                ),
                "PS384",
            ),
            (
                format!("priv-key={},sign-method=ES256,ttl=10m", p("ec.pem")),
                "ES256",
            ),
        ] {
            let t = JwtTokens::from_options(&opts).unwrap_or_else(|e| panic!("{method}: {e}"));
            let token = t.sign("alice", 7).unwrap();
            assert_eq!(
                t.verify(&token),
                Some(Claims {
                    username: "alice".into(),
                    revision: 7
                }),
                "{method}"
            );
            let mut forged = token.clone();
            forged.push('A');
            assert_eq!(
                t.verify(&forged),
                None,
                "{method}: a changed signature is refused"
            );
        }
        // a verify-only member checks tokens it cannot issue
        let signer =
            JwtTokens::from_options(&format!("priv-key={},sign-method=RS256", p("rsa.pem")))
                .unwrap();
        let checker =
            JwtTokens::from_options(&format!("pub-key={},sign-method=RS256", p("rsa.pub")))
                .unwrap();
        assert_eq!(checker.sign("x", 1), None);
        assert_eq!(
            checker
                .verify(&signer.sign("bob", 3).unwrap())
                .unwrap()
                .username,
            "bob"
        );
        // an expired token is refused
        let short = JwtTokens::from_options(&format!(
            "priv-key={},sign-method=RS256,ttl=1s",
            p("rsa.pem")
        ))
        .unwrap();
        let token = short.sign("carol", 1).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(short.verify(&token), None);
        assert!(JwtTokens::from_options("sign-method=RS256").is_err());
        assert!(
            JwtTokens::from_options(&format!("priv-key={},sign-method=HS999", p("rsa.pem")))
                .is_err()
        );
    }
}
