//! Does a private key belong to a certificate? Compares the key's public half with the
//! certificate's SubjectPublicKeyInfo. RKE2 writes SEC1 `EC PRIVATE KEY` (P-256); PKCS#8 and
//! PKCS#1 RSA keys (operator-provided certificates) are understood too.
//!
//! P-256 keys go through ring, whose assembly derives the public point about ten times
//! faster than a portable implementation: key checks dominate a cold scan.

use p256::pkcs8::DecodePrivateKey;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
use x509_parser::pem::Pem;

/// Whether the private key in `pem_bytes` is the one of the certificate whose
/// SubjectPublicKeyInfo key bits are `cert_key_bits`.
///
/// # Errors
/// [`KeyError`] when there is no usable key.
pub fn key_matches(pem_bytes: &[u8], cert_key_bits: &[u8]) -> Result<bool, KeyError> {
    for block in Pem::iter_from_buffer(pem_bytes) {
        let pem = block.map_err(|e| KeyError::BadPem(e.to_string()))?;
        let unsupported = |reason: String| KeyError::Unsupported {
            label: pem.label.clone(),
            reason,
        };
        let rng = ring::rand::SystemRandom::new();
        match pem.label.as_str() {
            "EC PRIVATE KEY" => {
                let key = sec1::EcPrivateKey::try_from(pem.contents.as_slice())
                    .map_err(|e| unsupported(e.to_string()))?;
                let is_p256 = key
                    .parameters
                    .and_then(|p| p.named_curve())
                    .is_none_or(|oid| oid.to_string() == P256_OID);
                if !is_p256 {
                    return Err(unsupported("not a P-256 key".to_owned()));
                }
                // ring derives the public point and compares it with the certificate's; an
                // inconsistent pair is rejected, any other rejection is a bad key.
                return match EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    key.private_key,
                    cert_key_bits,
                    &rng,
                ) {
                    Ok(_) => Ok(true),
                    Err(e) if e.to_string() == "InconsistentComponents" => Ok(false),
                    // Not an uncompressed P-256 point: the certificate has another key type.
                    Err(_) if cert_key_bits.first() != Some(&4) || cert_key_bits.len() != 65 => {
                        Ok(false)
                    }
                    Err(e) => Err(unsupported(e.to_string())),
                };
            }
            "PRIVATE KEY" => {
                if let Ok(pair) =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pem.contents, &rng)
                {
                    return Ok(pair.public_key().as_ref() == cert_key_bits);
                }
                return public_key_bits(pem_bytes).map(|bits| bits == cert_key_bits);
            }
            "RSA PRIVATE KEY" => {
                return public_key_bits(pem_bytes).map(|bits| bits == cert_key_bits);
            }
            _ => {}
        }
    }
    Err(KeyError::NoKey)
}

/// OID of the P-256 curve (prime256v1).
const P256_OID: &str = "1.2.840.10045.3.1.7";

/// Why a key file cannot be compared.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// No PEM block with a private key.
    #[error("no private key PEM block found")]
    NoKey,
    /// A PEM block that does not decode.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// A key of a kind this tool does not read.
    #[error("unsupported or invalid private key ({label}): {reason}")]
    Unsupported {
        /// The PEM label.
        label: String,
        /// The decoder's message.
        reason: String,
    },
}

/// The public key bits (the BIT STRING of a SubjectPublicKeyInfo) of the first private key in
/// `pem_bytes`.
///
/// # Errors
/// [`KeyError`] when there is no usable key.
pub fn public_key_bits(pem_bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
    for block in Pem::iter_from_buffer(pem_bytes) {
        let pem = block.map_err(|e| KeyError::BadPem(e.to_string()))?;
        let unsupported = |reason: String| KeyError::Unsupported {
            label: pem.label.clone(),
            reason,
        };
        match pem.label.as_str() {
            "EC PRIVATE KEY" => {
                let key = p256::SecretKey::from_sec1_der(&pem.contents)
                    .map_err(|e| unsupported(e.to_string()))?;
                return Ok(ec_point(&key));
            }
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&pem.contents)
                    .map_err(|e| unsupported(e.to_string()))?;
                return rsa_bits(&key).map_err(unsupported);
            }
            "PRIVATE KEY" => {
                if let Ok(key) = p256::SecretKey::from_pkcs8_der(&pem.contents) {
                    return Ok(ec_point(&key));
                }
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&pem.contents)
                    .map_err(|e| unsupported(format!("neither P-256 nor RSA: {e}")))?;
                return rsa_bits(&key).map_err(unsupported);
            }
            _ => {}
        }
    }
    Err(KeyError::NoKey)
}

fn ec_point(key: &p256::SecretKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    key.public_key().to_encoded_point(false).as_bytes().to_vec()
}

fn rsa_bits(key: &rsa::RsaPrivateKey) -> Result<Vec<u8>, String> {
    key.to_public_key()
        .to_pkcs1_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::test_support::ca_and_leaf;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn cert_bits(der: &[u8]) -> Vec<u8> {
        let (_, cert) = X509Certificate::from_der(der).expect("test cert parses");
        cert.public_key().subject_public_key.data.to_vec()
    }

    #[test]
    fn pkcs8_ec_key_matches_its_certificate() {
        let (_, leaf) = ca_and_leaf("a");
        let bits = public_key_bits(leaf.key_pem.as_bytes()).expect("key reads");
        assert_eq!(bits, cert_bits(&leaf.der));
    }

    #[test]
    fn sec1_ec_key_matches_its_certificate() {
        let (_, leaf) = ca_and_leaf("a");
        let bits = public_key_bits(leaf.sec1_key_pem().as_bytes()).expect("key reads");
        assert_eq!(bits, cert_bits(&leaf.der));
    }

    #[test]
    fn another_certificates_key_does_not_match() {
        let (_, a) = ca_and_leaf("a");
        let (_, b) = ca_and_leaf("b");
        let bits = public_key_bits(b.key_pem.as_bytes()).expect("key reads");
        assert_ne!(bits, cert_bits(&a.der));
    }

    #[test]
    fn key_matches_accepts_its_own_certificate_in_every_encoding() {
        let (_, leaf) = ca_and_leaf("a");
        let bits = cert_bits(&leaf.der);
        assert_eq!(key_matches(leaf.sec1_key_pem().as_bytes(), &bits), Ok(true));
        assert_eq!(key_matches(leaf.key_pem.as_bytes(), &bits), Ok(true));
    }

    #[test]
    fn key_matches_rejects_another_certificate() {
        let (_, a) = ca_and_leaf("a");
        let (_, b) = ca_and_leaf("b");
        let bits = cert_bits(&a.der);
        assert_eq!(key_matches(b.sec1_key_pem().as_bytes(), &bits), Ok(false));
        assert_eq!(key_matches(b.key_pem.as_bytes(), &bits), Ok(false));
    }

    #[test]
    fn key_matches_on_a_non_ec_certificate_is_false() {
        let (_, a) = ca_and_leaf("a");
        assert_eq!(
            key_matches(a.sec1_key_pem().as_bytes(), &[0x30, 0x0d, 1, 2, 3]),
            Ok(false)
        );
    }

    #[test]
    fn garbage_is_no_key() {
        assert_eq!(public_key_bits(b"nope"), Err(KeyError::NoKey));
    }

    #[test]
    fn corrupt_ec_key_is_unsupported_not_a_panic() {
        let pem = "-----BEGIN EC PRIVATE KEY-----\naGVsbG8=\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            public_key_bits(pem.as_bytes()),
            Err(KeyError::Unsupported { .. })
        ));
    }
}
