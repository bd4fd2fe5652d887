//! The node's enrolled identity, agent side: its own private key, the CSR it sends to the hub,
//! the pin that authenticates the hub before anything secret is sent, and the files the
//! identity lives in.
//!
//! Enrollment follows kubeadm's model. The operator hands the agent a short-lived join token
//! and the hub CA's pin (`sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo). The
//! agent makes its key here ([`NodeKey`]), checks the hub's presented chain against the pin
//! ([`verify_pin`]) before it sends the token, sends a CSR whose CN is its node name, and
//! stores the signed certificate with the key and the CA ([`save_identity`]). The hub keeps
//! the matching half in `rke2_hub::pki`; the pin formula ([`pin_of`]), node-name rules
//! ([`validate_node_name`]), renewal decision ([`renewal_due`]) and the secret-file writer
//! ([`write_secret_file`]) live here so both sides share one definition.
//!
//! - `names`: what a node name may be (a DNS-1123 subdomain, as Kubernetes requires).
//! - `pin`: the CA pin and the check that the pinned CA issued the presented chain.
//! - `files`: 0600 files written atomically, a crash-safe key+certificate pair, and the
//!   identity folder.
//!
//! This module never logs and never puts key material in an error or a `Debug` output.

mod files;
mod names;
mod pin;

use time::{Duration, OffsetDateTime};

pub use files::{
    CA_FILE, CERT_FILE, FileError, Identity, IdentityError, KEY_FILE, create_private_dir,
    finish_interrupted_write, load_identity, save_identity, write_files_together,
    write_secret_file,
};
pub use names::{NodeNameError, validate_node_name};
pub use pin::{PinError, pin_of, spki_pin, verify_pin};

/// Below this much remaining validity a certificate is always due for renewal.
pub const RENEW_BEFORE_MIN: Duration = Duration::days(30);

/// Whether a certificate valid from `not_before` to `not_after` should be renewed at `now`:
/// when less than a third of its lifetime, or less than [`RENEW_BEFORE_MIN`] (30 days),
/// remains, whichever comes first.
///
/// For the hub's 90-day node certificates both rules meet at 30 days left, which leaves a
/// month of retries for an agent that cannot reach the hub. A certificate whose whole
/// lifetime is 30 days or less is always due (the hub never issues such certificates).
#[must_use]
pub fn renewal_due(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let remaining = not_after - now;
    let lifetime = not_after - not_before;
    remaining < lifetime / 3 || remaining < RENEW_BEFORE_MIN
}

/// The node's own private key (ECDSA P-256, made on the node, never sent anywhere).
///
/// `Debug` shows the algorithm only.
pub struct NodeKey {
    /// The key pair; rcgen signs the CSR with it.
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("algorithm", &"ECDSA P-256")
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Makes a fresh ECDSA P-256 key from the system's random source.
    ///
    /// # Errors
    /// [`IdentityError::KeyGeneration`] if the random source or ring fails.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| IdentityError::KeyGeneration { source })?;
        Ok(Self { key })
    }

    /// Reads a key back from its PKCS#8 PEM (as [`Self::to_pem`] wrote it).
    ///
    /// # Errors
    /// [`IdentityError::KeyParse`] naming `origin` (a file name or "key from the hub") when
    /// the PEM is not a key rcgen can sign with.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|source| IdentityError::KeyParse {
            origin: origin.to_owned(),
            source,
        })?;
        Ok(Self { key })
    }

    /// The private key as PKCS#8 PEM, for [`save_identity`]. Secret: never log it.
    #[must_use]
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public half as DER SubjectPublicKeyInfo (what the certificate must carry).
    #[must_use]
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }

    /// A PKCS#10 request whose subject is exactly `CN=<node_name>`, signed by this key.
    ///
    /// Nothing else is requested: the hub decides the organization, usages and lifetime.
    ///
    /// # Errors
    /// [`IdentityError::InvalidNodeName`] if `node_name` is not a DNS-1123 subdomain;
    /// [`IdentityError::Csr`] if rcgen cannot build the request.
    pub fn csr_pem(&self, node_name: &str) -> Result<String, IdentityError> {
        validate_node_name(node_name)
            .map_err(|source| IdentityError::InvalidNodeName { source })?;
        let csr_error = |source| IdentityError::Csr {
            node: node_name.to_owned(),
            source,
        };
        let mut params = rcgen::CertificateParams::default();
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(rcgen::DnType::CommonName, node_name);
        params.distinguished_name = subject;
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(csr_error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;
    use time::macros::datetime;
    use x509_parser::prelude::{FromDer, X509CertificationRequest};

    const START: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);

    #[test]
    fn renewal_is_due_thirty_days_before_a_ninety_day_certificate_expires() {
        let end = START + Duration::days(90);
        assert!(!renewal_due(START, end, end - Duration::days(31)));
        assert!(renewal_due(START, end, end - Duration::days(29)));
    }

    #[test]
    fn renewal_of_a_one_year_certificate_starts_with_a_third_of_it_left() {
        let end = START + Duration::days(360);
        assert!(!renewal_due(START, end, end - Duration::days(121)));
        assert!(renewal_due(START, end, end - Duration::days(119)));
    }

    #[test]
    fn an_expired_certificate_is_due() {
        let end = START + Duration::days(90);
        assert!(renewal_due(START, end, end + Duration::days(1)));
    }

    #[test]
    fn csr_names_the_node_and_is_self_signed() {
        let key = NodeKey::generate().unwrap();
        let pem = key.csr_pem("node-a.example").unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(block.label, "CERTIFICATE REQUEST");
        let (_, csr) = X509CertificationRequest::from_der(&block.contents).unwrap();
        csr.verify_signature().unwrap();
        let cns: Vec<_> = csr
            .certification_request_info
            .subject
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(cns, ["node-a.example"]);
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            key.public_key_der().as_slice()
        );
    }

    #[test]
    fn csr_refuses_a_name_that_is_not_a_node_name() {
        let key = NodeKey::generate().unwrap();
        let err = key.csr_pem("Node_A").unwrap_err();
        assert!(err.to_string().contains("Node_A"), "{err}");
    }

    #[test]
    fn key_round_trips_through_pem_and_debug_hides_it() {
        let key = NodeKey::generate().unwrap();
        let again = NodeKey::from_pem(&key.to_pem(), "test").unwrap();
        assert_eq!(key.public_key_der(), again.public_key_der());
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
