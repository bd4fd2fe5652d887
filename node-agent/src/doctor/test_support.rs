//! Generated certificates (rcgen) and facts for the doctor's unit tests.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rke2ops_common::certs::model::{ChainCheck, KeyCheck, Origin};
use rke2ops_common::certs::parse::parse_der;
use rke2ops_common::certs::{CertEntry, Inventory};
use time::{Duration, OffsetDateTime};

use super::{Facts, NodeNames, UnitFacts};

/// A generated CA.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// PEM of the certificate.
    pub pem: String,
}

/// A CA named `<prefix>-ca@1700000000`, valid 10 years.
pub fn ca(prefix: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix}-ca@1700000000"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        params,
        key,
    }
}

impl Ca {
    /// A leaf signed by this CA, valid from `nb_days` to `na_days` around now; returns the
    /// PEM bundle (leaf then CA, as RKE2 writes it) and the key PEM.
    pub fn leaf(&self, cn: &str, sans: &[&str], nb_days: i64, na_days: i64) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(nb_days);
        params.not_after = now + Duration::days(na_days);
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        (format!("{}{}", cert.pem(), self.pem), key.serialize_pem())
    }
}

/// A real generated leaf, parsed, as the scanner would list it at `path`.
pub fn leaf_entry(path: &str, nb_days: i64, na_days: i64) -> CertEntry {
    let (pem, _) = ca("rke2-client").leaf("test", &[], nb_days, na_days);
    let der = pem_to_der(&pem);
    let parsed = parse_der(&der).expect("parses");
    CertEntry {
        path: path.to_owned(),
        filename: path.rsplit('/').next().unwrap_or(path).to_owned(),
        index: 0,
        origin: Origin::File,
        subject: parsed.subject,
        subject_cn: parsed.subject_cn,
        issuer: parsed.issuer,
        serial: parsed.serial,
        sans: parsed.sans,
        usages: parsed.usages,
        is_ca: parsed.is_ca,
        not_before: parsed.not_before,
        not_after: parsed.not_after,
        chain: ChainCheck::NotApplicable,
        key: KeyCheck::NotApplicable,
        fingerprint: parsed.fingerprint,
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

/// Facts of a server node `n1` holding `certs`, nothing else wrong.
pub fn facts_with(certs: Vec<CertEntry>) -> Facts {
    Facts {
        node: "n1".to_owned(),
        now: OffsetDateTime::now_utc(),
        data_dir: PathBuf::from("/var/lib/rancher/rke2"),
        inventory: Inventory {
            certificates: certs,
            ..Inventory::default()
        },
        broken: Vec::new(),
        admin_kubeconfig: "/etc/rancher/rke2/rke2.yaml".to_owned(),
        kubeconfig_copies: Vec::new(),
        names: NodeNames::default(),
        unit: UnitFacts::Unreachable {
            reason: "test".to_owned(),
        },
        disks: Vec::new(),
        etcd: super::etcd::EtcdFacts::NotHere,
    }
}

/// Writes `text` at `dir/rel`, creating folders.
pub fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    path
}

/// A kubeconfig embedding `ca_pem` and the client `cert_pem`/`key_pem`, pointing at `server`.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine as _;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b(ca_pem),
        b(cert_pem),
        b(key_pem)
    )
}
