//! The checks a node's certificate request must pass before the CA signs it. Pure: text in,
//! the node's public key out.
//!
//! Only two things are taken from a CSR: its public key and its CN (which must be the node
//! name the agent claims). Everything else a CSR may ask for (SANs, usages, other subject
//! fields) is ignored; the hub decides the certificate's content. Requests to be a CA are
//! refused outright rather than ignored, because no honest agent makes one.
//!
//! Accepted keys: ECDSA P-256 (what agents make), ECDSA P-384 and Ed25519. RSA and other
//! curves are refused: agents never need them, ring cannot generate RSA keys, and a short
//! list keeps odd keys (weak sizes, unusual parameters) out of the fleet.

use x509_parser::asn1_rs::Oid;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use rke2ops_common::identity::validate_node_name;

use super::error::PkiError;

/// Largest CSR PEM considered (a P-256 CSR is about 400 bytes); larger input is refused
/// before any parsing.
pub const MAX_CSR_PEM_LEN: usize = 16 * 1024;

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    /// The node name: the CSR's CN, equal to the name the agent claimed.
    pub node: String,
    /// The node's public key, DER SubjectPublicKeyInfo, to be put in its certificate.
    pub spki_der: Vec<u8>,
}

/// Checks `csr_pem` for the agent claiming to be `claimed_node_name`: a valid node name, a
/// PEM `CERTIFICATE REQUEST` whose self-signature verifies, whose only CN equals the claimed
/// name, that does not ask to be a CA, and whose key is of an accepted type.
///
/// # Errors
/// The first failed check, as a [`PkiError`] naming the claimed node.
pub fn check_node_csr(csr_pem: &str, claimed_node_name: &str) -> Result<CheckedCsr, PkiError> {
    validate_node_name(claimed_node_name)?;
    let node = claimed_node_name.to_owned();
    let malformed = |reason: String| PkiError::CsrMalformed {
        node: node.clone(),
        reason,
    };
    if csr_pem.len() > MAX_CSR_PEM_LEN {
        return Err(malformed(format!(
            "{} bytes, more than the {MAX_CSR_PEM_LEN} accepted",
            csr_pem.len()
        )));
    }
    let der = csr_der(csr_pem).map_err(malformed)?;
    let csr = match X509CertificationRequest::from_der(&der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(malformed("trailing bytes after the request".to_owned())),
        Err(e) => return Err(malformed(format!("not a PKCS#10 request: {e}"))),
    };
    if csr.verify_signature().is_err() {
        return Err(PkiError::CsrBadSignature { node });
    }

    let info = &csr.certification_request_info;
    let cns: Vec<&str> = info
        .subject
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap_or("<not a string>"))
        .collect();
    if cns != [claimed_node_name] {
        return Err(PkiError::CsrNameMismatch {
            claimed: node,
            csr_cn: cns.join(", "),
        });
    }
    if let Some(what) = requested_ca_power(&csr) {
        return Err(PkiError::CsrRequestsCa { node, what });
    }
    check_key_type(&info.subject_pki).map_err(|key| PkiError::CsrUnsupportedKey {
        node: node.clone(),
        key,
    })?;
    Ok(CheckedCsr {
        node,
        spki_der: info.subject_pki.raw.to_vec(),
    })
}

/// The DER of the single `CERTIFICATE REQUEST` block (OpenSSL's older `NEW CERTIFICATE
/// REQUEST` label too).
fn csr_der(csr_pem: &str) -> Result<Vec<u8>, String> {
    let mut found = None;
    for block in Pem::iter_from_buffer(csr_pem.as_bytes()) {
        let block = block.map_err(|e| format!("malformed PEM: {e}"))?;
        if matches!(
            block.label.as_str(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            if found.is_some() {
                return Err("more than one CERTIFICATE REQUEST block".to_owned());
            }
            found = Some(block.contents);
        }
    }
    found.ok_or_else(|| "no CERTIFICATE REQUEST block".to_owned())
}

/// Which CA power the request asks for, if any.
fn requested_ca_power(csr: &X509CertificationRequest<'_>) -> Option<&'static str> {
    csr.requested_extensions()?.find_map(|ext| match ext {
        ParsedExtension::BasicConstraints(bc) if bc.ca => Some("basicConstraints CA:TRUE"),
        ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() => Some("keyUsage keyCertSign"),
        ParsedExtension::KeyUsage(ku) if ku.crl_sign() => Some("keyUsage cRLSign"),
        _ => None,
    })
}

/// `Ok` for an accepted key type; otherwise the key's description for the error.
fn check_key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), String> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_SIG_ED25519 {
        return Ok(());
    }
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p).ok());
        return match curve {
            Some(curve) if curve == OID_EC_P256 || curve == OID_NIST_EC_P384 => Ok(()),
            Some(curve) => Err(format!("ECDSA (curve {curve})")),
            None => Err("ECDSA (curve not named)".to_owned()),
        };
    }
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        return Err("RSA".to_owned());
    }
    Err(format!("{algorithm} (algorithm OID)"))
}
