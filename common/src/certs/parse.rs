//! One PEM bundle → its certificates' fields, keeping every certificate that parses even
//! when a later block is broken (a bad file loses nothing that can be read).

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::asn1_rs::Oid;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::model::{ErrorKind, Usage};

/// The fields of one certificate, independent of where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCert {
    /// The DER, kept for chain verification.
    pub der: Vec<u8>,
    /// Full subject name.
    pub subject: String,
    /// The subject's first CN, empty if none.
    pub subject_cn: String,
    /// Full issuer name.
    pub issuer: String,
    /// Colon-separated hex serial.
    pub serial: String,
    /// DNS and IP SANs.
    pub sans: Vec<String>,
    /// RKE2-vocabulary usages.
    pub usages: Vec<Usage>,
    /// basicConstraints CA:true.
    pub is_ca: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// The SubjectPublicKeyInfo's key bits, to compare with a private key's public half.
    pub public_key_bits: Vec<u8>,
}

/// What a bundle gave: the certificates that parsed, and the first problem, if any.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    /// Certificates in file order.
    pub certs: Vec<ParsedCert>,
    /// The first problem met (the file is then reported as an error too).
    pub problem: Option<(ErrorKind, String)>,
}

/// Parses every `CERTIFICATE` block of `bytes`.
///
/// Empty input, input without any certificate block, undecodable base64 and bad DER are
/// each reported as a problem naming the block's position; blocks of other labels (a key
/// accidentally appended) are ignored.
#[must_use]
pub fn parse_bundle(bytes: &[u8]) -> Bundle {
    let mut bundle = Bundle::default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bundle.problem = Some((ErrorKind::Empty, "file is empty".to_owned()));
        return bundle;
    }
    let mut blocks = 0usize;
    for (position, block) in Pem::iter_from_buffer(bytes).enumerate() {
        let pem = match block {
            Ok(pem) => pem,
            Err(e) => {
                bundle.problem = Some((
                    ErrorKind::BadDer,
                    format!("PEM block {} is malformed: {e}", position + 1),
                ));
                break;
            }
        };
        if pem.label != "CERTIFICATE" {
            continue;
        }
        blocks += 1;
        match parse_der(&pem.contents) {
            Ok(cert) => bundle.certs.push(cert),
            Err(reason) => {
                bundle.problem = Some((
                    ErrorKind::BadDer,
                    format!("certificate {blocks} is not valid DER: {reason}"),
                ));
                break;
            }
        }
    }
    if blocks == 0 && bundle.problem.is_none() {
        bundle.problem = Some((
            ErrorKind::NoPemData,
            "failed to find any PEM data in certificate input".to_owned(),
        ));
    }
    bundle
}

/// Parses one DER certificate into its fields.
///
/// # Errors
/// The parser's message when the DER is not an X.509 certificate.
pub fn parse_der(der: &[u8]) -> Result<ParsedCert, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        ));
    }
    Ok(fields_of(&cert, der))
}

fn fields_of(cert: &X509Certificate<'_>, der: &[u8]) -> ParsedCert {
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    ParsedCert {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        subject_cn,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        sans: sans_of(cert),
        usages: usages_of(cert),
        is_ca: cert.is_ca(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        fingerprint: hex::encode(Sha256::digest(der)),
        public_key_bits: cert.public_key().subject_public_key.data.to_vec(),
    }
}

/// RKE2's usage words (k3s `GetCertUsages`): `CertSign` from KeyUsage, then `ServerAuth` /
/// `ClientAuth` for each ExtKeyUsage *in the certificate's order* (others ignored).
fn usages_of(cert: &X509Certificate<'_>) -> Vec<Usage> {
    let mut usages = Vec::with_capacity(3);
    if let Ok(Some(ku)) = cert.key_usage()
        && ku.value.key_cert_sign()
    {
        usages.push(Usage::CertSign);
    }
    let eku = cert
        .extensions()
        .iter()
        .find(|ext| ext.oid == x509_parser::oid_registry::OID_X509_EXT_EXTENDED_KEY_USAGE);
    if let Some(ext) = eku
        && let Ok((_, oids)) = <Vec<Oid<'_>>>::from_der(ext.value)
    {
        for oid in oids {
            match oid.to_id_string().as_str() {
                SERVER_AUTH => usages.push(Usage::ServerAuth),
                CLIENT_AUTH => usages.push(Usage::ClientAuth),
                _ => {}
            }
        }
    }
    usages
}

/// id-kp-serverAuth.
const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// id-kp-clientAuth.
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::test_support::{ca_and_leaf, pem_of};

    #[test]
    fn bundle_keeps_leaf_and_chain_in_order() {
        let (ca, leaf) = ca_and_leaf("system:admin");
        let bytes = format!("{}{}", pem_of(&leaf.der), pem_of(&ca.der));
        let bundle = parse_bundle(bytes.as_bytes());
        assert!(bundle.problem.is_none(), "{:?}", bundle.problem);
        assert_eq!(bundle.certs.len(), 2);
        assert_eq!(bundle.certs[0].subject_cn, "system:admin");
        assert!(!bundle.certs[0].is_ca);
        assert_eq!(bundle.certs[0].usages, vec![Usage::ClientAuth]);
        assert!(bundle.certs[1].is_ca);
        assert_eq!(bundle.certs[1].usages, vec![Usage::CertSign]);
        assert_eq!(bundle.certs[0].sans, vec!["localhost", "127.0.0.1"]);
    }

    #[test]
    fn extended_usages_keep_the_certificates_order() {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params.self_signed(&key).expect("cert");
        let parsed = parse_der(cert.der()).expect("parses");
        assert_eq!(parsed.usages, vec![Usage::ClientAuth, Usage::ServerAuth]);
    }

    #[test]
    fn empty_and_whitespace_files_are_empty() {
        assert_eq!(
            parse_bundle(b"").problem.map(|p| p.0),
            Some(ErrorKind::Empty)
        );
        assert_eq!(
            parse_bundle(b" \n\t").problem.map(|p| p.0),
            Some(ErrorKind::Empty)
        );
    }

    #[test]
    fn text_without_pem_is_no_pem_data() {
        let bundle = parse_bundle(b"hello, not a certificate\n");
        assert_eq!(bundle.problem.map(|p| p.0), Some(ErrorKind::NoPemData));
    }

    #[test]
    fn pem_armour_around_junk_is_bad_der() {
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let bundle = parse_bundle(junk.as_bytes());
        assert_eq!(bundle.problem.map(|p| p.0), Some(ErrorKind::BadDer));
    }

    #[test]
    fn good_leaf_then_broken_block_keeps_the_leaf() {
        let (_, leaf) = ca_and_leaf("x");
        let bytes = format!(
            "{}-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n",
            pem_of(&leaf.der)
        );
        let bundle = parse_bundle(bytes.as_bytes());
        assert_eq!(bundle.certs.len(), 1);
        assert_eq!(bundle.problem.map(|p| p.0), Some(ErrorKind::BadDer));
    }

    #[test]
    fn truncated_pem_is_reported() {
        let (_, leaf) = ca_and_leaf("x");
        let pem = pem_of(&leaf.der);
        let bundle = parse_bundle(&pem.as_bytes()[..pem.len() / 2]);
        assert!(bundle.certs.is_empty());
        assert_eq!(bundle.problem.map(|p| p.0), Some(ErrorKind::BadDer));
    }

    #[test]
    fn key_blocks_are_ignored() {
        let (_, leaf) = ca_and_leaf("x");
        let bytes = format!("{}{}", pem_of(&leaf.der), leaf.key_pem);
        let bundle = parse_bundle(bytes.as_bytes());
        assert!(bundle.problem.is_none());
        assert_eq!(bundle.certs.len(), 1);
    }
}
