//! Small certificate factory for unit tests (rcgen): a CA and a leaf it signed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A generated certificate with its key.
pub(crate) struct TestCert {
    pub der: Vec<u8>,
    /// PKCS#8 PEM.
    pub key_pem: String,
}

impl TestCert {
    /// The key as RKE2 writes it: SEC1 `EC PRIVATE KEY`.
    pub fn sec1_key_pem(&self) -> String {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::SecretKey::from_pkcs8_pem(&self.key_pem).expect("pkcs8 p256");
        key.to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .expect("sec1")
            .to_string()
    }
}

pub(crate) fn pem_of(der: &[u8]) -> String {
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    params
}

/// A CA named `rke2-client-ca@1700000000` and a client leaf with CN `cn`.
pub(crate) fn ca_and_leaf(cn: &str) -> (TestCert, TestCert) {
    ca_and_leaf_with(cn, Duration::days(365))
}

pub(crate) fn ca_and_leaf_with(cn: &str, validity: Duration) -> (TestCert, TestCert) {
    let ca_key = KeyPair::generate().expect("key");
    let params = ca_params("rke2-client-ca@1700000000");
    let ca = params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(params, &ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let mut lp = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    lp.distinguished_name.push(DnType::CommonName, cn);
    lp.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    lp.not_before = now - Duration::hours(1);
    lp.not_after = lp.not_before + validity;
    let leaf = lp.signed_by(&leaf_key, &issuer).expect("leaf");
    (
        TestCert {
            der: ca.der().to_vec(),
            key_pem: ca_key.serialize_pem(),
        },
        TestCert {
            der: leaf.der().to_vec(),
            key_pem: leaf_key.serialize_pem(),
        },
    )
}
