//! Behaviour of the hub PKI as a whole: the CA's life on disk, what a node CSR must be to get
//! signed, what the signed certificates contain, how peers are classified, and the server
//! certificate's reuse. Certificates are checked with x509-parser (and the pin with openssl),
//! never with the code that made them.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use rke2ops_common::identity::{NodeKey, load_identity, save_identity};

use super::server::{ReissueReason, StoredServerCert, reissue_reason};
use super::*;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

fn ca_in(dir: &Path) -> HubCa {
    HubCa::load_or_create(dir, NOW).unwrap()
}

fn der_of(pem_text: &str) -> Vec<u8> {
    let block = pem::parse(pem_text).unwrap();
    assert_eq!(block.tag(), "CERTIFICATE");
    block.contents().to_vec()
}

fn all_ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|block| block.contents().to_vec())
        .collect()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn csr_for(key: &KeyPair, cn: &str) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn openssl() -> &'static str {
    let path = "/usr/bin/openssl";
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-deps.sh (as root) first"
    );
    path
}

// --- the CA on disk ---

#[test]
fn ca_is_created_once_and_reloaded_identically() {
    let state = tempfile::tempdir().unwrap();
    let first = ca_in(state.path());
    let again = HubCa::load_or_create(state.path(), NOW + Duration::days(400)).unwrap();
    assert_eq!(first.ca_pin(), again.ca_pin());
    assert_eq!(first.cert_pem(), again.cert_pem());

    let pki = state.path().join(PKI_DIR);
    assert_eq!(mode(&pki), 0o700);
    assert_eq!(mode(&pki.join(CA_CERT_FILE)), 0o600);
    assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);

    let der = der_of(&fs::read_to_string(pki.join(CA_CERT_FILE)).unwrap());
    let cert = parse(&der);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(
        cn.as_str().unwrap(),
        format!("rke2-ops-hub-ca@{}", NOW.unix_timestamp())
    );
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert!(!usage.digital_signature());
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        NOW + Duration::days(3650)
    );
    cert.verify_signature(None).unwrap();
}

#[test]
fn ca_pin_equals_openssls_hash_of_the_public_key() {
    let openssl = openssl();
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let ca_file = state.path().join(PKI_DIR).join(CA_CERT_FILE);
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{openssl} x509 -pubkey -noout -in '{}' | {openssl} pkey -pubin -outform der \
             | sha256sum",
            ca_file.display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let hex = stdout.split_whitespace().next().unwrap();
    assert_eq!(ca.ca_pin(), format!("sha256:{hex}"));
    assert_eq!(pin_of(ca.cert_der()).unwrap(), ca.ca_pin());
}

#[test]
fn a_half_present_ca_is_refused_naming_both_files() {
    let state = tempfile::tempdir().unwrap();
    ca_in(state.path());
    let key = state.path().join(PKI_DIR).join(CA_KEY_FILE);
    fs::remove_file(&key).unwrap();
    let err = HubCa::load_or_create(state.path(), NOW).unwrap_err();
    assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ca.key") && message.contains("ca.crt"),
        "{message}"
    );
}

#[test]
fn a_ca_key_from_elsewhere_is_refused() {
    let state = tempfile::tempdir().unwrap();
    ca_in(state.path());
    let key = state.path().join(PKI_DIR).join(CA_KEY_FILE);
    fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = HubCa::load_or_create(state.path(), NOW).unwrap_err();
    assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err}");
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let state = tempfile::tempdir().unwrap();
    ca_in(state.path());
    let cert = state.path().join(PKI_DIR).join(CA_CERT_FILE);
    fs::write(&cert, "not a certificate").unwrap();
    let err = HubCa::load_or_create(state.path(), NOW).unwrap_err();
    assert!(err.to_string().contains(&*cert.to_string_lossy()), "{err}");
}

#[test]
fn an_expired_ca_is_refused_at_load() {
    let state = tempfile::tempdir().unwrap();
    ca_in(state.path());
    let err = HubCa::load_or_create(state.path(), NOW + Duration::days(3651)).unwrap_err();
    assert!(matches!(err, PkiError::CaExpired { .. }), "{err}");
}

#[test]
fn an_operator_provided_ca_is_used_as_is() {
    let state = tempfile::tempdir().unwrap();
    let pki = state.path().join(PKI_DIR);
    fs::create_dir_all(&pki).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "corp fleet CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    fs::write(pki.join(CA_KEY_FILE), key.serialize_pem()).unwrap();
    fs::write(pki.join(CA_CERT_FILE), cert.pem()).unwrap();
    let ca = ca_in(state.path());
    assert_eq!(ca.cert_der(), cert.der().as_ref());
    let node_key = NodeKey::generate().unwrap();
    let signed = ca
        .sign_node_csr(&node_key.csr_pem("node-a").unwrap(), "node-a", NOW)
        .unwrap();
    let der = der_of(&signed.cert_pem);
    parse(&der)
        .verify_signature(Some(parse(ca.cert_der()).public_key()))
        .unwrap();
}

// --- node CSRs ---

#[test]
fn a_node_csr_is_signed_into_a_client_certificate_for_that_node() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let node_key = NodeKey::generate().unwrap();
    let now = NOW + Duration::nanoseconds(123_456_789);
    let signed = ca
        .sign_node_csr(&node_key.csr_pem("node-a").unwrap(), "node-a", now)
        .unwrap();

    let der = der_of(&signed.cert_pem);
    let cert = parse(&der);
    let ca_cert = parse(ca.cert_der());
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cns.len(), 1);
    assert_eq!(cns[0].as_str().unwrap(), "node-a");
    let orgs: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(orgs, [NODE_ORGANIZATION]);

    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert!(!eku.server_auth && !eku.any && !eku.code_signing && eku.other.is_empty());
    assert!(!cert.is_ca());
    assert!(!cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert!(cert.subject_alternative_name().unwrap().is_none());

    assert_eq!(cert.public_key().raw, node_key.public_key_der().as_slice());
    assert_eq!(cert.validity().not_after.to_datetime(), signed.not_after);
    assert_eq!(signed.not_after, NOW + NODE_CERT_LIFETIME);
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        NOW - CLOCK_SKEW_ALLOWANCE
    );
    assert_eq!(hex::encode(cert.raw_serial()), signed.serial);
    assert_eq!(signed.serial.len(), 32);

    assert_eq!(
        peer_identity(&der).unwrap(),
        PeerIdentity::Node("node-a".to_owned())
    );
}

#[test]
fn every_signature_gets_its_own_serial() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let csr = NodeKey::generate().unwrap().csr_pem("node-a").unwrap();
    let a = ca.sign_node_csr(&csr, "node-a", NOW).unwrap();
    let b = ca.sign_node_csr(&csr, "node-a", NOW).unwrap();
    assert_ne!(a.serial, b.serial);
}

#[test]
fn a_csr_naming_another_node_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let csr = NodeKey::generate().unwrap().csr_pem("node-b").unwrap();
    let err = ca.sign_node_csr(&csr, "node-a", NOW).unwrap_err();
    match &err {
        PkiError::CsrNameMismatch { claimed, csr_cn } => {
            assert_eq!((claimed.as_str(), csr_cn.as_str()), ("node-a", "node-b"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_tampered_csr_is_refused_for_its_signature() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let csr_pem = NodeKey::generate().unwrap().csr_pem("node-a").unwrap();
    let mut der = pem::parse(&csr_pem).unwrap().into_contents();
    let at = der
        .windows(6)
        .position(|w| w == b"node-a")
        .expect("the CN is in the DER");
    der[at + 5] = b'b';
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca.sign_node_csr(&tampered, "node-b", NOW).unwrap_err();
    assert!(matches!(err, PkiError::CsrBadSignature { .. }), "{err}");
}

#[test]
fn a_csr_asking_to_be_a_ca_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "node-a");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let err = ca.sign_node_csr(&csr, "node-a", NOW).unwrap_err();
    assert!(matches!(err, PkiError::CsrRequestsCa { .. }), "{err}");

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "node-a");
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let err = ca.sign_node_csr(&csr, "node-a", NOW).unwrap_err();
    assert!(matches!(err, PkiError::CsrRequestsCa { .. }), "{err}");
}

#[test]
fn requested_sans_and_usages_are_ignored() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["kubernetes.default".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "node-a");
    params
        .distinguished_name
        .push(DnType::OrganizationName, ADMIN_ORGANIZATION);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let signed = ca.sign_node_csr(&csr, "node-a", NOW).unwrap();
    let der = der_of(&signed.cert_pem);
    let cert = parse(&der);
    assert!(cert.subject_alternative_name().unwrap().is_none());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(
        peer_identity(&der).unwrap(),
        PeerIdentity::Node("node-a".to_owned())
    );
}

#[test]
fn p384_and_ed25519_keys_are_signed() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let signed = ca
            .sign_node_csr(&csr_for(&key, "node-a"), "node-a", NOW)
            .unwrap();
        let der = der_of(&signed.cert_pem);
        let cert = parse(&der);
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        cert.verify_signature(Some(parse(ca.cert_der()).public_key()))
            .unwrap();
    }
}

#[test]
fn an_rsa_csr_is_refused() {
    let openssl = openssl();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(openssl)
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=node-a",
        ])
        .arg("-keyout")
        .arg(dir.path().join("rsa.key"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let csr = String::from_utf8(output.stdout).unwrap();
    let state = tempfile::tempdir().unwrap();
    let err = ca_in(state.path())
        .sign_node_csr(&csr, "node-a", NOW)
        .unwrap_err();
    assert!(
        matches!(&err, PkiError::CsrUnsupportedKey { key, .. } if key == "RSA"),
        "{err}"
    );
}

#[test]
fn an_invalid_claimed_name_or_garbage_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let csr = NodeKey::generate().unwrap().csr_pem("node-a").unwrap();
    let err = ca.sign_node_csr(&csr, "Node_A", NOW).unwrap_err();
    assert!(matches!(err, PkiError::InvalidNodeName(_)), "{err}");
    for garbage in ["", "hello", "-----BEGIN CERTIFICATE REQUEST-----\n!!\n"] {
        let err = ca.sign_node_csr(garbage, "node-a", NOW).unwrap_err();
        assert!(matches!(err, PkiError::CsrMalformed { .. }), "{err}");
    }
    let huge = "A".repeat(MAX_CSR_PEM_LEN + 1);
    let err = ca.sign_node_csr(&huge, "node-a", NOW).unwrap_err();
    assert!(matches!(err, PkiError::CsrMalformed { .. }), "{err}");
}

#[test]
fn no_certificate_outlives_the_ca() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let late = ca.not_after() - Duration::days(10);
    let csr = NodeKey::generate().unwrap().csr_pem("node-a").unwrap();
    let signed = ca.sign_node_csr(&csr, "node-a", late).unwrap();
    assert_eq!(signed.not_after, ca.not_after());
    let err = ca
        .sign_node_csr(&csr, "node-a", ca.not_after() + Duration::days(1))
        .unwrap_err();
    assert!(matches!(err, PkiError::CaExpired { .. }), "{err}");
}

#[test]
fn an_enrolled_identity_is_stored_and_loaded_by_the_agent() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let node_key = NodeKey::generate().unwrap();
    let signed = ca
        .sign_node_csr(&node_key.csr_pem("node-a").unwrap(), "node-a", NOW)
        .unwrap();
    let agent = tempfile::tempdir().unwrap();
    let dir = agent.path().join("identity");
    save_identity(&dir, &node_key.to_pem(), &signed.cert_pem, ca.cert_pem()).unwrap();
    let identity = load_identity(&dir).unwrap().unwrap();
    assert_eq!(identity.node_name, "node-a");
    assert_eq!(identity.not_after, signed.not_after);
    assert!(!renewal_due(identity.not_before, identity.not_after, NOW));
    assert!(renewal_due(
        identity.not_before,
        identity.not_after,
        NOW + Duration::days(61)
    ));
}

// --- admin certificates and peers ---

#[test]
fn an_admin_certificate_is_classified_as_admin() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let issued = ca.issue_admin_cert("alice@example.com", NOW).unwrap();
    let der = der_of(&issued.cert_pem);
    let cert = parse(&der);
    cert.verify_signature(Some(parse(ca.cert_der()).public_key()))
        .unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "admin:alice@example.com");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(issued.not_after, NOW + ADMIN_CERT_LIFETIME);
    KeyPair::from_pem(&issued.key_pem).unwrap();
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    let peer = peer_identity(&der).unwrap();
    assert_eq!(peer, PeerIdentity::Admin("alice@example.com".to_owned()));
    assert_eq!(peer.to_string(), "admin:alice@example.com");
}

#[test]
fn admin_names_that_could_confuse_a_cn_or_a_log_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    for name in ["", "a b", "x\ny", "root,O=rke2-ops:nodes", &"a".repeat(65)] {
        let err = ca.issue_admin_cert(name, NOW).unwrap_err();
        assert!(matches!(err, PkiError::InvalidAdminName { .. }), "{name:?}");
    }
}

/// A self-signed certificate with the given subject. rcgen keeps one value per attribute
/// type, so subjects with repeated attributes are made with openssl.
fn cert_with_subject(cn: &[&str], orgs: &[&str], is_ca: bool) -> Vec<u8> {
    if cn.len() > 1 || orgs.len() > 1 {
        let subject: String = cn
            .iter()
            .map(|cn| format!("/CN={cn}"))
            .chain(orgs.iter().map(|o| format!("/O={o}")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(openssl())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-outform", "DER", "-subj", &subject])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(!is_ca);
        return output.stdout;
    }
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for cn in cn {
        params.distinguished_name.push(DnType::CommonName, *cn);
    }
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn peers_that_are_neither_node_nor_admin_are_refused() {
    let cases = [
        (
            cert_with_subject(&["node-a"], &["system:nodes"], false),
            "neither",
        ),
        (cert_with_subject(&["node-a"], &[], false), "neither"),
        (
            cert_with_subject(&["node-a"], &[NODE_ORGANIZATION, ADMIN_ORGANIZATION], false),
            "both",
        ),
        (
            cert_with_subject(&["node-a"], &[NODE_ORGANIZATION], true),
            "CA",
        ),
        (
            cert_with_subject(&["admin:x"], &[NODE_ORGANIZATION], false),
            "DNS-1123",
        ),
        (
            cert_with_subject(&["alice"], &[ADMIN_ORGANIZATION], false),
            "admin:",
        ),
        (
            cert_with_subject(&["admin:"], &[ADMIN_ORGANIZATION], false),
            "empty",
        ),
        (cert_with_subject(&[], &[NODE_ORGANIZATION], false), "0 CNs"),
        (
            cert_with_subject(&["node-a", "node-b"], &[NODE_ORGANIZATION], false),
            "2 CNs",
        ),
    ];
    for (der, why) in cases {
        let err = peer_identity(&der).unwrap_err();
        assert!(matches!(err, PkiError::UnknownPeer { .. }), "{err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    let err = peer_identity(b"garbage").unwrap_err();
    assert!(matches!(err, PkiError::PeerUnparseable { .. }), "{err}");
}

// --- the server certificate ---

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_server_certificate_is_issued_once_then_reused() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let sans = names(&["hub.example", "10.0.0.1"]);
    let first = ca.load_or_issue_server(state.path(), &sans, NOW).unwrap();
    assert_eq!(first.reissued, Some(ReissueReason::Missing));
    let pki = state.path().join(PKI_DIR);
    assert_eq!(mode(&pki.join(SERVER_KEY_FILE)), 0o600);
    assert_eq!(mode(&pki.join(SERVER_CERT_FILE)), 0o600);

    let chain = all_ders(&first.cert_chain_pem);
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1], ca.cert_der());
    let leaf = parse(&chain[0]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert_eq!(first.not_after, NOW + SERVER_CERT_LIFETIME);
    // What an enrolling agent checks before it sends its token.
    verify_pin(&chain, &ca.ca_pin()).unwrap();

    let later = NOW + Duration::days(100);
    let reuse = ca
        .load_or_issue_server(state.path(), &names(&["10.0.0.1", "HUB.example"]), later)
        .unwrap();
    assert_eq!(reuse.reissued, None);
    assert_eq!(
        reuse,
        ServerIdentity {
            reissued: None,
            ..first
        }
    );
}

#[test]
fn the_server_certificate_is_reissued_for_new_names_expiry_or_a_new_ca() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let sans = names(&["hub.example"]);
    ca.load_or_issue_server(state.path(), &sans, NOW).unwrap();

    let renamed = ca
        .load_or_issue_server(state.path(), &names(&["hub.example", "::1"]), NOW)
        .unwrap();
    assert!(matches!(
        renamed.reissued,
        Some(ReissueReason::NamesChanged { .. })
    ));
    let sans = names(&["hub.example", "::1"]);

    let near_end = NOW + SERVER_CERT_LIFETIME - Duration::days(20);
    let renewed = ca
        .load_or_issue_server(state.path(), &sans, near_end)
        .unwrap();
    assert!(matches!(
        renewed.reissued,
        Some(ReissueReason::Expiring { .. })
    ));

    // A new CA (the old one removed): the stored server certificate is not its own.
    let pki = state.path().join(PKI_DIR);
    fs::remove_file(pki.join(CA_KEY_FILE)).unwrap();
    fs::remove_file(pki.join(CA_CERT_FILE)).unwrap();
    let new_ca = ca_in(state.path());
    let reissued = new_ca
        .load_or_issue_server(state.path(), &sans, NOW)
        .unwrap();
    assert_eq!(reissued.reissued, Some(ReissueReason::OtherCa));
    verify_pin(&all_ders(&reissued.cert_chain_pem), &new_ca.ca_pin()).unwrap();

    fs::write(pki.join(SERVER_CERT_FILE), "junk").unwrap();
    let repaired = new_ca
        .load_or_issue_server(state.path(), &sans, NOW)
        .unwrap();
    assert!(matches!(
        repaired.reissued,
        Some(ReissueReason::Unreadable(_))
    ));
}

#[test]
fn server_names_must_be_present_and_plausible() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let err = ca.load_or_issue_server(state.path(), &[], NOW).unwrap_err();
    assert!(matches!(err, PkiError::NoServerNames), "{err}");
    for bad in ["", "hub example", "hüb.example", "http://hub"] {
        let err = ca
            .load_or_issue_server(state.path(), &names(&[bad]), NOW)
            .unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidServerName { .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn reissue_decision_checks_key_ca_expiry_then_names() {
    let wanted: BTreeSet<ServerName> = [ServerName::parse("hub.example").unwrap()].into();
    let good = StoredServerCert {
        names: wanted.clone(),
        not_after: NOW + Duration::days(31),
        signed_by_current_ca: true,
        key_matches: true,
    };
    assert_eq!(reissue_reason(&good, &wanted, NOW), None);
    let expiring = StoredServerCert {
        not_after: NOW + Duration::days(29),
        ..good.clone()
    };
    assert!(matches!(
        reissue_reason(&expiring, &wanted, NOW),
        Some(ReissueReason::Expiring { .. })
    ));
    let foreign = StoredServerCert {
        signed_by_current_ca: false,
        ..expiring.clone()
    };
    assert_eq!(
        reissue_reason(&foreign, &wanted, NOW),
        Some(ReissueReason::OtherCa)
    );
    let mismatched = StoredServerCert {
        key_matches: false,
        ..foreign
    };
    assert_eq!(
        reissue_reason(&mismatched, &wanted, NOW),
        Some(ReissueReason::KeyMismatch)
    );
    let other: BTreeSet<ServerName> = [ServerName::parse("10.0.0.1").unwrap()].into();
    assert_eq!(
        reissue_reason(&good, &other, NOW),
        Some(ReissueReason::NamesChanged {
            had: "hub.example".to_owned(),
            want: "10.0.0.1".to_owned(),
        })
    );
}

#[test]
fn load_existing_never_creates_a_ca_and_names_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let err = HubCa::load_existing(state.path(), NOW).unwrap_err();
    assert!(matches!(err, PkiError::NoCa { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&state.path().display().to_string()),
        "{err}"
    );
    assert!(
        fs::read_dir(state.path()).unwrap().next().is_none(),
        "nothing was created"
    );
    let created = ca_in(state.path());
    let loaded = HubCa::load_existing(state.path(), NOW).unwrap();
    assert_eq!(created.ca_pin(), loaded.ca_pin());
}

#[test]
fn certificate_serial_reads_back_the_serial_the_ca_reported() {
    let state = tempfile::tempdir().unwrap();
    let ca = ca_in(state.path());
    let key = NodeKey::generate().unwrap();
    let signed = ca
        .sign_node_csr(&key.csr_pem("node-a").unwrap(), "node-a", NOW)
        .unwrap();
    assert_eq!(
        certificate_serial(&der_of(&signed.cert_pem)).unwrap(),
        signed.serial
    );
    let admin = ca.issue_admin_cert("alice", NOW).unwrap();
    assert_eq!(
        certificate_serial(&der_of(&admin.cert_pem)).unwrap(),
        admin.serial
    );
}
