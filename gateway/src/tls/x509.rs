//! The few names read out of a certificate that rustls has already verified: the subject's
//! common name (the client identity etcd's auth uses) and the subject alternative names (IP
//! addresses and DNS names, for etcd's SAN check on peer client certificates).
//!
//! A small DER walk instead of a full X.509 parser crate: only the path
//! `Certificate → tbsCertificate → subject / extensions → subjectAltName` is followed, and any
//! encoding it does not expect yields `None` (no name), never a panic.

use std::net::IpAddr;

/// Names of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The last CN attribute of the subject, as Go's `Subject.CommonName`.
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element at a time from a byte slice.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        self.0 = after;
        Some((tag, content))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, content) if t == tag => Some(content),
            _ => None,
        }
    }
}

/// The names of a DER certificate; `None` when it is not the shape of an X.509 certificate.
pub fn names(cert_der: &[u8]) -> Option<CertNames> {
    let certificate = Der(cert_der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    let mut field = tbs.next()?;
    if field.0 == 0xa0 {
        field = tbs.next()?; // [0] version, then the serial number
    }
    let _serial = field;
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subject public key info
    let mut out = CertNames {
        common_name: common_name(subject),
        ..CertNames::default()
    };
    while let Some((tag, content)) = tbs.next() {
        if tag == 0xa3 {
            read_extensions(Der(content).expect(SEQUENCE)?, &mut out);
        }
    }
    Some(out)
}

fn common_name(subject: &[u8]) -> Option<String> {
    let mut rdns = Der(subject);
    let mut found = None;
    while let Some(set) = rdns.expect(SET) {
        let mut attributes = Der(set);
        while let Some(attribute) = attributes.expect(SEQUENCE) {
            let mut a = Der(attribute);
            if a.expect(OID)? == OID_CN {
                found = decode_string(a.next()?);
            }
        }
    }
    found
}

fn decode_string((tag, bytes): (u8, &[u8])) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, T61String, IA5String
        0x0c | 0x13 | 0x14 | 0x16 => Some(String::from_utf8_lossy(bytes).into_owned()),
        // BMPString: UTF-16BE
        0x1e => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

fn read_extensions(list: &[u8], out: &mut CertNames) {
    let mut extensions = Der(list);
    while let Some(extension) = extensions.expect(SEQUENCE) {
        let mut e = Der(extension);
        if e.expect(OID) != Some(OID_SAN) {
            continue;
        }
        let mut value = e.next();
        if matches!(value, Some((BOOLEAN, _))) {
            value = e.next(); // critical flag
        }
        let Some((OCTET_STRING, wrapped)) = value else {
            continue;
        };
        let Some(general_names) = Der(wrapped).expect(SEQUENCE) else {
            continue;
        };
        let mut g = Der(general_names);
        while let Some((tag, bytes)) = g.next() {
            match tag {
                0x82 => out.dns.push(String::from_utf8_lossy(bytes).into_owned()),
                0x87 => match bytes.len() {
                    4 => out
                        .ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes"))),
                    16 => out
                        .ips
                        .push(IpAddr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_and_alternative_names_are_read() {
        let mut params = rcgen::CertificateParams::new(vec![
            "node1.example".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ketch");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "root");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let n = names(cert.der()).unwrap();
        assert_eq!(n.common_name.as_deref(), Some("root"));
        assert_eq!(n.dns, vec!["node1.example"]);
        assert_eq!(n.ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn garbage_gives_no_names() {
        assert_eq!(names(b""), None);
        assert_eq!(names(&[0x30, 0x82, 0xff]), None);
        assert_eq!(names(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
