//! The hub CA pin: `sha256:<hex>` of the CA certificate's DER SubjectPublicKeyInfo, exactly
//! kubeadm's `--discovery-token-ca-cert-hash`, so `openssl x509 -pubkey -noout | openssl pkey
//! -pubin -outform der | sha256sum` gives the same hex.
//!
//! The pin authenticates the hub to an agent that has nothing else yet. [`verify_pin`] is the
//! check the agent's TLS verifier runs on the chain the hub presents *before* the join token
//! leaves the node, so the hub must present its CA in the chain (leaf first, CA after). The
//! verifier must still let rustls check the handshake signature (that proves the hub holds the
//! leaf's key); this module only decides whether the pinned CA issued that leaf.

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// The pin's prefix: the hash algorithm, as kubeadm writes it.
const PIN_PREFIX: &str = "sha256:";

/// Why a presented chain is not vouched for by the pinned CA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The configured pin is not `sha256:` followed by 64 hex digits.
    #[error("CA pin {pin:?} is malformed: {reason} (expected sha256:<64 hex digits>)")]
    Malformed {
        /// The pin as configured (public: it is a hash of a public key).
        pin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The hub presented no certificate at all.
    #[error("the hub presented no certificate to check against CA pin {pin}")]
    EmptyChain {
        /// The expected pin.
        pin: String,
    },
    /// A presented certificate is not X.509 DER.
    #[error("certificate {position} of the presented chain is not X.509 DER: {reason}")]
    Unparseable {
        /// 1-based position in the chain (1 = the leaf).
        position: usize,
        /// The parser's message.
        reason: String,
    },
    /// No presented certificate has the pinned public key: not our hub, or a hub that does
    /// not send its CA in the chain.
    #[error(
        "no certificate presented by the hub (leaf {leaf_subject}) has CA pin {pin}; \
         presented pins: {presented}"
    )]
    NotPresented {
        /// The expected pin.
        pin: String,
        /// The leaf's subject, to tell which server answered.
        leaf_subject: String,
        /// The pins of the certificates that were presented, comma-separated.
        presented: String,
    },
    /// The pinned CA is in the chain but does not vouch for the leaf: the leaf's signature does
    /// not verify against it, directly or through the presented intermediates.
    #[error("the hub's certificate {leaf_subject} is not signed by the CA with pin {pin}")]
    NotIssuedByPinnedCa {
        /// The expected pin.
        pin: String,
        /// The leaf's subject.
        leaf_subject: String,
    },
}

/// The pin of a DER SubjectPublicKeyInfo.
#[must_use]
pub fn spki_pin(spki_der: &[u8]) -> String {
    format!("{PIN_PREFIX}{}", hex::encode(Sha256::digest(spki_der)))
}

/// The pin of a CA certificate given as DER: the SHA-256 of its SubjectPublicKeyInfo.
///
/// # Errors
/// [`PinError::Unparseable`] (position 1) if `ca_der` is not a certificate.
pub fn pin_of(ca_der: &[u8]) -> Result<String, PinError> {
    let cert = parse(ca_der, 1)?;
    Ok(spki_pin(cert.public_key().raw))
}

/// Checks that the CA with pin `pin` issued the leaf (`chain_ders[0]`): some certificate in
/// the chain must have the pinned public key, and the leaf must verify against it, directly
/// or through CA certificates of the same chain. Give the CA an enrollment response returned
/// by appending it to the chain (a chain of just the CA checks the CA itself).
///
/// Validity dates, usages and the server name are the TLS layer's to check; the pin only
/// replaces the trust anchor.
///
/// # Errors
/// [`PinError`] naming the pin and the leaf.
pub fn verify_pin(chain_ders: &[Vec<u8>], pin: &str) -> Result<(), PinError> {
    let wanted = parse_pin(pin)?;
    let pin = format!("{PIN_PREFIX}{}", hex::encode(wanted));
    if chain_ders.is_empty() {
        return Err(PinError::EmptyChain { pin });
    }
    let certs = chain_ders
        .iter()
        .enumerate()
        .map(|(index, der)| parse(der, index + 1))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = &certs[0];
    let leaf_subject = leaf.subject().to_string();
    let Some(pinned) = certs
        .iter()
        .find(|cert| Sha256::digest(cert.public_key().raw)[..] == wanted[..])
    else {
        let presented = certs
            .iter()
            .map(|cert| spki_pin(cert.public_key().raw))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PinError::NotPresented {
            pin,
            leaf_subject,
            presented,
        });
    };

    // Walk up from the leaf through presented CA certificates (each used once, so a looping
    // chain ends) until a certificate verifies against the pinned key.
    let mut used = vec![false; certs.len()];
    used[0] = true;
    let mut current = leaf;
    loop {
        if current.verify_signature(Some(pinned.public_key())).is_ok() {
            return Ok(());
        }
        let issuer = certs.iter().enumerate().find(|(index, candidate)| {
            !used[*index]
                && candidate.is_ca()
                && candidate.subject() == current.issuer()
                && current
                    .verify_signature(Some(candidate.public_key()))
                    .is_ok()
        });
        match issuer {
            Some((index, next)) => {
                used[index] = true;
                current = next;
            }
            None => return Err(PinError::NotIssuedByPinnedCa { pin, leaf_subject }),
        }
    }
}

/// The 32 hash bytes of a `sha256:<hex>` pin (either hex case).
fn parse_pin(pin: &str) -> Result<[u8; 32], PinError> {
    let malformed = |reason| PinError::Malformed {
        pin: pin.to_owned(),
        reason,
    };
    let hex_part = pin
        .strip_prefix(PIN_PREFIX)
        .ok_or_else(|| malformed("it does not start with sha256:"))?;
    if hex_part.len() != 64 {
        return Err(malformed("the hash is not 64 hex digits"));
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut hash).map_err(|_| malformed("the hash is not hex"))?;
    Ok(hash)
}

fn parse(der: &[u8], position: usize) -> Result<X509Certificate<'_>, PinError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PinError::Unparseable {
            position,
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(PinError::Unparseable {
            position,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: Vec<u8>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            der: cert.der().to_vec(),
        }
    }

    fn intermediate(parent: &Ca, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.signed_by(&key, &parent.issuer).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            der: cert.der().to_vec(),
        }
    }

    fn leaf(ca: &Ca) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["hub.example".to_owned()]).unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    #[test]
    fn the_pinned_ca_in_the_chain_is_accepted() {
        let hub = ca("hub ca");
        let pin = pin_of(&hub.der).unwrap();
        verify_pin(&[leaf(&hub), hub.der.clone()], &pin).unwrap();
        verify_pin(
            &[leaf(&hub), hub.der.clone()],
            &pin.to_uppercase().replace("SHA256", "sha256"),
        )
        .unwrap();
    }

    #[test]
    fn the_ca_from_enrollment_checks_itself() {
        let hub = ca("hub ca");
        verify_pin(std::slice::from_ref(&hub.der), &pin_of(&hub.der).unwrap()).unwrap();
    }

    #[test]
    fn an_intermediate_between_leaf_and_pinned_root_is_followed() {
        let root = ca("root");
        let mid = intermediate(&root, "intermediate");
        let chain = [leaf(&mid), mid.der.clone(), root.der.clone()];
        verify_pin(&chain, &pin_of(&root.der).unwrap()).unwrap();
    }

    #[test]
    fn a_chain_from_another_ca_is_refused() {
        let hub = ca("hub ca");
        let other = ca("hub ca");
        let err = verify_pin(
            &[leaf(&other), other.der.clone()],
            &pin_of(&hub.der).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, PinError::NotPresented { .. }), "{err}");
    }

    #[test]
    fn the_pinned_ca_appended_to_a_foreign_leaf_is_refused() {
        let hub = ca("hub ca");
        let other = ca("hub ca");
        let err =
            verify_pin(&[leaf(&other), hub.der.clone()], &pin_of(&hub.der).unwrap()).unwrap_err();
        assert!(matches!(err, PinError::NotIssuedByPinnedCa { .. }), "{err}");
    }

    #[test]
    fn a_well_formed_but_wrong_pin_is_refused() {
        let hub = ca("hub ca");
        let wrong = format!("sha256:{}", "ab".repeat(32));
        let err = verify_pin(&[leaf(&hub), hub.der.clone()], &wrong).unwrap_err();
        assert!(matches!(err, PinError::NotPresented { .. }), "{err}");
        assert!(err.to_string().contains(&wrong), "{err}");
    }

    #[test]
    fn malformed_pins_and_chains_are_refused_with_a_reason() {
        let hub = ca("hub ca");
        let chain = [leaf(&hub), hub.der.clone()];
        for pin in [
            "",
            "sha256:",
            "md5:abcd",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            let err = verify_pin(&chain, pin).unwrap_err();
            assert!(matches!(err, PinError::Malformed { .. }), "{pin}: {err}");
        }
        let pin = pin_of(&hub.der).unwrap();
        assert!(matches!(
            verify_pin(&[], &pin),
            Err(PinError::EmptyChain { .. })
        ));
        let err = verify_pin(&[b"not der".to_vec()], &pin).unwrap_err();
        assert!(
            matches!(err, PinError::Unparseable { position: 1, .. }),
            "{err}"
        );
    }
}
