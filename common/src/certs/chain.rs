//! Verifies a leaf against the CAs found in the same tree: the CA whose subject equals the
//! leaf's issuer must have signed it. Pure: the caller supplies the CA pool.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::model::ChainCheck;

/// A CA certificate of the tree, by file.
#[derive(Debug, Clone)]
pub struct PoolCa {
    /// The CA's file, relative to the data dir.
    pub path: String,
    /// Its DER.
    pub der: Vec<u8>,
    /// Its raw subject name, compared with a leaf's raw issuer before any parsing.
    pub subject_raw: Vec<u8>,
}

impl PoolCa {
    /// A pool entry for the CA certificate `der` found in `path`; `None` if it does not parse.
    #[must_use]
    pub fn new(path: String, der: Vec<u8>) -> Option<Self> {
        let subject_raw = X509Certificate::from_der(&der)
            .ok()?
            .1
            .subject()
            .as_raw()
            .to_vec();
        Some(Self {
            path,
            der,
            subject_raw,
        })
    }
}

/// Checks `leaf_der` against `pool`: [`ChainCheck::Verified`] when a CA of the same subject
/// as the leaf's issuer verifies its signature, [`ChainCheck::BadSignature`] when such CAs
/// exist but none verifies, [`ChainCheck::UnknownIssuer`] when none has that name.
#[must_use]
pub fn verify_leaf<'a>(leaf_der: &[u8], pool: impl IntoIterator<Item = &'a PoolCa>) -> ChainCheck {
    let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
        return ChainCheck::UnknownIssuer;
    };
    let mut tried: Option<&str> = None;
    for ca in pool {
        if ca.subject_raw != leaf.issuer().as_raw() {
            continue;
        }
        let Ok((_, ca_cert)) = X509Certificate::from_der(&ca.der) else {
            continue;
        };
        if leaf.verify_signature(Some(ca_cert.public_key())).is_ok() {
            return ChainCheck::Verified {
                ca_path: ca.path.clone(),
            };
        }
        tried.get_or_insert(&ca.path);
    }
    match tried {
        Some(path) => ChainCheck::BadSignature {
            ca_path: path.to_owned(),
        },
        None => ChainCheck::UnknownIssuer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::test_support::ca_and_leaf;

    fn pool(der: Vec<u8>) -> Vec<PoolCa> {
        vec![PoolCa::new("server/tls/client-ca.crt".into(), der).expect("CA parses")]
    }

    #[test]
    fn leaf_verifies_against_its_ca() {
        let (ca, leaf) = ca_and_leaf("a");
        assert_eq!(
            verify_leaf(&leaf.der, &pool(ca.der)),
            ChainCheck::Verified {
                ca_path: "server/tls/client-ca.crt".into()
            }
        );
    }

    #[test]
    fn leaf_signed_by_another_key_with_the_same_ca_name_is_bad_signature() {
        // Both factory CAs share a subject, so the tree CA is found by name, but its key
        // did not sign this leaf.
        let (tree_ca, _) = ca_and_leaf("a");
        let (_, foreign_leaf) = ca_and_leaf("b");
        assert_eq!(
            verify_leaf(&foreign_leaf.der, &pool(tree_ca.der)),
            ChainCheck::BadSignature {
                ca_path: "server/tls/client-ca.crt".into()
            }
        );
    }

    #[test]
    fn leaf_without_a_ca_of_its_issuer_name_is_unknown_issuer() {
        let (_, leaf) = ca_and_leaf("a");
        assert_eq!(verify_leaf(&leaf.der, &[]), ChainCheck::UnknownIssuer);
    }
}
