//! The RKE2 simulator: generated trees are complete and correct, overrides and breakages
//! land, and the simulated `rke2 certificate check` prints what RKE2 prints.
//!
//! Chains are verified with `/usr/bin/openssl verify` as a check independent of the Rust
//! crates that generated them; the tests fail (they do not skip) when openssl is missing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rke2ops_sim::check::gopem;
use rke2ops_sim::tree::{
    self, Breakage, CaKind, ClusterCas, GeneratedTree, Role, TreeSpec, Validity,
};
use time::OffsetDateTime;
use time::macros::datetime;

/// The simulated "now" of every test: fixed, so outputs are deterministic.
const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00 UTC);
const NOW_RFC3339: &str = "2025-06-01T12:00:00Z";
const OPENSSL: &str = "/usr/bin/openssl";

/// One cluster's CAs for the whole test binary (RSA key generation is the slow part).
fn cas() -> &'static ClusterCas {
    static CAS: OnceLock<ClusterCas> = OnceLock::new();
    CAS.get_or_init(|| ClusterCas::generate(NOW).expect("generate cluster CAs"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP literal")
}

fn server_spec(dir: &Path) -> TreeSpec {
    TreeSpec::new(
        Role::Server,
        "server-1",
        ip("10.0.0.11"),
        dir.join("rke2"),
        NOW,
    )
    .with_config_dir(dir.join("etc"))
}

fn agent_spec(dir: &Path) -> TreeSpec {
    TreeSpec::new(
        Role::Agent,
        "agent-1",
        ip("10.0.0.21"),
        dir.join("rke2"),
        NOW,
    )
    .with_config_dir(dir.join("etc"))
}

fn generate(spec: &TreeSpec) -> GeneratedTree {
    tree::generate(spec, cas()).expect("generate tree")
}

/// Every file `reference/rke2.md` lists for a server.
const SERVER_FILES: &[&str] = &[
    "server/tls/client-ca.crt",
    "server/tls/client-ca.key",
    "server/tls/server-ca.crt",
    "server/tls/server-ca.key",
    "server/tls/request-header-ca.crt",
    "server/tls/request-header-ca.key",
    "server/tls/etcd/server-ca.crt",
    "server/tls/etcd/server-ca.key",
    "server/tls/etcd/peer-ca.crt",
    "server/tls/etcd/peer-ca.key",
    "server/tls/client-ca.nochain.crt",
    "server/tls/server-ca.nochain.crt",
    "server/tls/service.key",
    "server/tls/service.current.key",
    "server/tls/dynamic-cert.json",
    "server/tls/temporary-certs",
    "server/tls/kube-scheduler/kube-scheduler.crt",
    "server/tls/kube-controller-manager/kube-controller-manager.crt",
    "server/tls/client-admin.crt",
    "server/tls/client-supervisor.crt",
    "server/tls/client-controller.crt",
    "server/tls/client-scheduler.crt",
    "server/tls/client-kube-apiserver.crt",
    "server/tls/client-kube-proxy.crt",
    "server/tls/client-rke2-controller.crt",
    "server/tls/client-rke2-cloud-controller.crt",
    "server/tls/client-auth-proxy.crt",
    "server/tls/serving-kube-apiserver.crt",
    "server/tls/etcd/server-client.crt",
    "server/tls/etcd/client.crt",
    "server/tls/etcd/peer-server-client.crt",
];

/// Every file `reference/rke2.md` lists under `agent/` (servers have them too).
const AGENT_FILES: &[&str] = &[
    "agent/client-kubelet.crt",
    "agent/client-kubelet.key",
    "agent/serving-kubelet.crt",
    "agent/serving-kubelet.key",
    "agent/client-kube-proxy.crt",
    "agent/client-kube-proxy.key",
    "agent/client-rke2-controller.crt",
    "agent/client-rke2-controller.key",
    "agent/client-ca.crt",
    "agent/server-ca.crt",
    "agent/kubelet.kubeconfig",
    "agent/kubeproxy.kubeconfig",
    "agent/rke2controller.kubeconfig",
];

fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    gopem::parse_certs(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn openssl_verify(ca_file: &Path, cert_file: &Path, purpose: &str) -> (bool, String) {
    openssl_verify_at(ca_file, cert_file, purpose, NOW)
}

fn openssl_verify_at(
    ca_file: &Path,
    cert_file: &Path,
    purpose: &str,
    at: OffsetDateTime,
) -> (bool, String) {
    assert!(
        Path::new(OPENSSL).exists(),
        "{OPENSSL} is required by these tests (apt-get install -y openssl)"
    );
    let out = Command::new(OPENSSL)
        .args(["verify", "-x509_strict", "-purpose", purpose, "-attime"])
        .arg(at.unix_timestamp().to_string())
        .arg("-CAfile")
        .arg(ca_file)
        .arg(cert_file)
        .output()
        .expect("run openssl verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The CA file (inside the tree) that issued a leaf file.
fn issuing_ca_file(generated: &GeneratedTree, rel: &str) -> PathBuf {
    let issuer = &generated.cert(rel).expect("leaf facts").issuer_cn;
    let kind = CaKind::ALL
        .into_iter()
        .find(|k| issuer.starts_with(&format!("{}-ca@", k.cn_prefix())))
        .unwrap_or_else(|| panic!("{rel}: issuer {issuer} is not a cluster CA"));
    match (generated.files.contains_key(kind.cert_rel()), kind) {
        (true, _) => generated.path(kind.cert_rel()),
        (false, CaKind::Client) => generated.path("agent/client-ca.crt"),
        (false, CaKind::Server) => generated.path("agent/server-ca.crt"),
        (false, other) => panic!("{rel}: agent tree has no {other:?} CA"),
    }
}

#[test]
fn server_tree_contains_every_reference_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate(&server_spec(dir.path()));
    for rel in SERVER_FILES.iter().chain(AGENT_FILES) {
        assert!(generated.path(rel).exists(), "{rel} missing on disk");
        assert!(generated.files.contains_key(*rel), "{rel} not listed");
    }
    for rel in SERVER_FILES.iter().filter(|r| r.ends_with(".crt")) {
        if let Some(key) = rel.strip_suffix(".crt").map(|b| format!("{b}.key"))
            && !rel.contains("nochain")
        {
            assert!(generated.path(&key).exists(), "{key} missing");
        }
    }
    for rel in ["rke2.yaml", "config.yaml"] {
        assert!(dir.path().join("etc").join(rel).exists(), "{rel} missing");
    }
    // Every listed file exists, and nothing unlisted was written in the data dir.
    for rel in generated.files.keys() {
        assert!(
            generated.path(rel).symlink_metadata().is_ok(),
            "{rel} listed but not on disk"
        );
    }
}

#[test]
fn agent_tree_contains_agent_files_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate(&agent_spec(dir.path()));
    for rel in AGENT_FILES {
        assert!(generated.path(rel).exists(), "{rel} missing");
    }
    assert!(
        !generated.path("server").exists(),
        "agents have no server dir"
    );
    assert!(dir.path().join("etc/config.yaml").exists());
    assert!(
        !dir.path().join("etc/rke2.yaml").exists(),
        "agents have no admin kubeconfig"
    );
}

#[test]
fn every_leaf_is_followed_by_its_ca_and_verifies_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = generate(&server_spec(&dir.path().join("s")));
    let agent = generate(&agent_spec(&dir.path().join("a")));
    let mut checked = 0;
    for generated in [&server, &agent] {
        for (rel, info) in generated.leaves() {
            let path = generated.path(rel);
            let certs = pem_certs(&path);
            assert_eq!(certs.len(), 2, "{rel}: leaf followed by its CA");
            let ca_file = issuing_ca_file(generated, rel);
            assert_eq!(
                certs[1],
                pem_certs(&ca_file)[0],
                "{rel}: second certificate is the issuing CA"
            );
            let purpose = if info.subject_cn.starts_with("system:") || rel.contains("client") {
                "sslclient"
            } else {
                "sslserver"
            };
            let (ok, text) = openssl_verify(&ca_file, &path, purpose);
            assert!(ok, "{rel}: openssl verify failed: {text}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        15 + 4 + 4,
        "server leaves + server's agent leaves + agent leaves"
    );
}

#[test]
fn keys_are_sec1_p256_and_match_their_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate(&server_spec(dir.path()));
    for (rel, info) in generated.leaves() {
        let key_rel = info.key_rel.as_deref().expect("leaf has a key");
        let key_pem = std::fs::read_to_string(generated.path(key_rel)).expect("read key");
        assert!(
            key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE"),
            "{key_rel}: SEC1 with curve parameters like Go writes"
        );
        let secret = p256::SecretKey::from_sec1_pem(&key_pem).expect("parse SEC1 key");
        let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        let der = &pem_certs(&generated.path(rel))[0];
        let cert = gopem::parse_der(der).expect("parse leaf");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            public.as_bytes(),
            "{rel}: key matches certificate"
        );
    }
    let service = std::fs::read_to_string(generated.path("server/tls/service.key")).expect("read");
    assert!(service.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
}

fn san_string(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))
            ),
            16 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))
            ),
            _ => format!("IP:?{b:?}"),
        },
        other => format!("{other}"),
    }
}

#[test]
fn subjects_issuers_usages_and_sans_follow_rke2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = server_spec(dir.path());
    spec.tls_sans = vec!["api.example.test".into(), "192.0.2.10".into()];
    let generated = generate(&spec);
    let parse = |rel: &str| {
        let der = pem_certs(&generated.path(rel)).remove(0);
        let cert = gopem::parse_der(&der).expect("parse").clone();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .map(|c| c.as_str().expect("utf8").to_owned());
        let o = cert
            .subject()
            .iter_organization()
            .next()
            .map(|c| c.as_str().expect("utf8").to_owned());
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("SAN ext")
            .map(|ext| ext.value.general_names.iter().map(san_string).collect())
            .unwrap_or_default();
        let usages = rke2ops_sim::check::usages(&cert);
        (cn, o, sans, usages)
    };
    let (cn, o, _, usages) = parse("server/tls/client-admin.crt");
    assert_eq!(cn.as_deref(), Some("system:admin"));
    assert_eq!(o.as_deref(), Some("system:masters"));
    assert_eq!(usages, ["ClientAuth"]);
    let (cn, _, _, _) = parse("server/tls/client-auth-proxy.crt");
    assert_eq!(cn.as_deref(), Some("system:auth-proxy"));
    assert!(
        generated
            .cert("server/tls/client-auth-proxy.crt")
            .expect("facts")
            .issuer_cn
            .starts_with("rke2-request-header-ca@")
    );
    let (cn, _, sans, usages) = parse("server/tls/serving-kube-apiserver.crt");
    assert_eq!(cn.as_deref(), Some("kube-apiserver"));
    assert_eq!(usages, ["ServerAuth"]);
    for want in [
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:api.example.test",
        "IP:10.0.0.11",
        "IP:192.0.2.10",
        "IP:10.43.0.1",
    ] {
        assert!(
            sans.iter().any(|s| s == want),
            "apiserver SANs {sans:?} lack {want}"
        );
    }
    let (_, _, _, usages) = parse("server/tls/etcd/peer-server-client.crt");
    assert_eq!(usages, ["ServerAuth", "ClientAuth"]);
    let (cn, o, _, _) = parse("agent/client-kubelet.crt");
    assert_eq!(cn.as_deref(), Some("system:node:server-1"));
    assert_eq!(o.as_deref(), Some("system:nodes"));
    let (cn, _, sans, _) = parse("agent/serving-kubelet.crt");
    assert_eq!(cn.as_deref(), Some("server-1"));
    assert_eq!(
        sans,
        [
            "DNS:server-1",
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:10.0.0.11"
        ]
    );
    let ca = generated
        .cert("server/tls/etcd/peer-ca.crt")
        .expect("facts");
    assert_eq!(
        ca.subject_cn,
        format!("etcd-peer-ca@{}", NOW.unix_timestamp())
    );
    assert_eq!(ca.not_after - ca.not_before, time::Duration::days(3650));
    let (_, _, _, usages) = parse("server/tls/server-ca.crt");
    assert_eq!(usages, ["CertSign"]);
}

#[test]
fn kubeconfigs_and_config_files_point_at_the_right_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = server_spec(dir.path());
    spec.node_data_dir = Some("/var/lib/rancher/rke2".into());
    let generated = generate(&spec);
    let kubelet =
        std::fs::read_to_string(generated.path("agent/kubelet.kubeconfig")).expect("read");
    assert!(kubelet.contains("server: https://127.0.0.1:6443"));
    assert!(kubelet.contains("certificate-authority: /var/lib/rancher/rke2/agent/server-ca.crt"));
    assert!(kubelet.contains("client-certificate: /var/lib/rancher/rke2/agent/client-kubelet.crt"));
    assert!(kubelet.contains("client-key: /var/lib/rancher/rke2/agent/client-kubelet.key"));

    let admin = std::fs::read_to_string(dir.path().join("etc/rke2.yaml")).expect("read rke2.yaml");
    assert!(admin.contains("server: https://127.0.0.1:6443"));
    let field = |name: &str| -> Vec<u8> {
        let line = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} missing"));
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, line).expect("base64")
    };
    assert_eq!(
        field("certificate-authority-data"),
        std::fs::read(generated.path("server/tls/server-ca.crt")).expect("read")
    );
    assert_eq!(
        field("client-certificate-data"),
        std::fs::read(generated.path("server/tls/client-admin.crt")).expect("read")
    );
    assert_eq!(
        field("client-key-data"),
        std::fs::read(generated.path("server/tls/client-admin.key")).expect("read")
    );

    let config = std::fs::read_to_string(dir.path().join("etc/config.yaml")).expect("read");
    assert!(config.contains("node-ip: 10.0.0.11\n"), "{config}");
}

#[test]
fn cluster_cas_are_shared_between_nodes_and_reload_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = generate(&server_spec(&dir.path().join("s1")));
    let mut agent = agent_spec(&dir.path().join("a1"));
    agent.server_url = Some("https://10.0.0.11:9345".into());
    let agent = generate(&agent);
    for (server_rel, agent_rel) in [
        ("server/tls/client-ca.crt", "agent/client-ca.crt"),
        ("server/tls/server-ca.crt", "agent/server-ca.crt"),
    ] {
        assert_eq!(
            std::fs::read(server.path(server_rel)).expect("read"),
            std::fs::read(agent.path(agent_rel)).expect("read")
        );
    }
    let agent_config =
        std::fs::read_to_string(dir.path().join("a1/etc/config.yaml")).expect("read");
    assert!(agent_config.contains("server: https://10.0.0.11:9345\n"));
    assert!(agent_config.contains(&format!("token: {}\n", cas().token())));

    // A later `rke2 server` reissues leaves from the CAs on disk.
    let reloaded = ClusterCas::load(&server.path("server/tls")).expect("load CAs");
    assert_eq!(reloaded.token(), cas().token());
    let later = NOW + time::Duration::days(200);
    let spec2 = TreeSpec::new(
        Role::Server,
        "server-2",
        ip("10.0.0.12"),
        dir.path().join("s2/rke2"),
        later,
    );
    let second = tree::generate(&spec2, &reloaded).expect("generate from reloaded CAs");
    for kind in CaKind::ALL {
        assert_eq!(
            std::fs::read(server.path(kind.cert_rel())).expect("read"),
            std::fs::read(second.path(kind.cert_rel())).expect("read"),
            "{kind:?} CA is the same on both servers"
        );
    }
    let rel = "server/tls/serving-kube-apiserver.crt";
    let (ok, text) = openssl_verify_at(
        &server.path("server/tls/server-ca.crt"),
        &second.path(rel),
        "sslserver",
        later,
    );
    assert!(
        ok,
        "reissued leaf verifies against the first server's CA: {text}"
    );
    assert_eq!(
        second.cert(rel).expect("facts").not_after,
        later + time::Duration::days(365)
    );
}

#[test]
fn validity_overrides_land_in_the_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = std::time::Duration::from_secs(86_400);
    let spec = server_spec(dir.path())
        .with_validity("agent/client-kubelet.crt", Validity::ExpiresIn(30 * day))
        .with_validity("server/tls/client-admin.crt", Validity::Expired(2 * day))
        .with_validity("server/tls/etcd/client.crt", Validity::NotYetValid(day))
        .with_validity(
            "server/tls/dynamic-cert.json",
            Validity::Window {
                not_before: datetime!(2025-01-01 0:00 UTC),
                not_after: datetime!(2025-07-01 0:00 UTC),
            },
        );
    let generated = generate(&spec);
    let on_disk = |rel: &str| {
        let der = pem_certs(&generated.path(rel)).remove(0);
        let cert = gopem::parse_der(&der).expect("parse").clone();
        (
            cert.validity().not_before.to_datetime(),
            cert.validity().not_after.to_datetime(),
            cert.tbs_certificate.raw_serial_as_string(),
        )
    };
    let check = |rel: &str, nb: OffsetDateTime, na: OffsetDateTime| {
        let info = generated.cert(rel).expect("facts");
        assert_eq!(
            (info.not_before, info.not_after),
            (nb, na),
            "{rel} listed window"
        );
        let (dnb, dna, serial) = on_disk(rel);
        assert_eq!((dnb, dna), (nb, na), "{rel} window on disk");
        let serial_hex = serial.replace(':', "");
        assert_eq!(
            u64::from_str_radix(&serial_hex, 16).expect("hex serial"),
            info.serial,
            "{rel} serial"
        );
    };
    let h = time::Duration::hours(1);
    let d = time::Duration::days;
    check(
        "agent/client-kubelet.crt",
        NOW + d(30) - d(365) - h,
        NOW + d(30),
    );
    check(
        "server/tls/client-admin.crt",
        NOW - d(2) - d(365) - h,
        NOW - d(2),
    );
    check(
        "server/tls/etcd/client.crt",
        NOW + d(1),
        NOW + d(1) + d(365) + h,
    );
    // Fresh: NotBefore clamps to the CA's NotBefore (the CAs were created at NOW).
    check("server/tls/client-supervisor.crt", NOW, NOW + d(365));
    let info = generated
        .cert("server/tls/dynamic-cert.json")
        .expect("facts");
    assert_eq!(info.not_after, datetime!(2025-07-01 0:00 UTC));
}

#[test]
fn unknown_or_non_leaf_override_paths_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = agent_spec(dir.path()).with_validity("server/tls/client-admin.crt", Validity::Fresh);
    assert!(matches!(
        tree::generate(&spec, cas()),
        Err(tree::TreeError::NotALeaf(_))
    ));
    let spec = agent_spec(dir.path()).with_breakage("agent/nope.crt", Breakage::Empty);
    assert!(matches!(
        tree::generate(&spec, cas()),
        Err(tree::TreeError::UnknownPath(_))
    ));
    let spec = agent_spec(dir.path()).with_breakage("agent/client-ca.crt", Breakage::ForeignIssuer);
    assert!(matches!(
        tree::generate(&spec, cas()),
        Err(tree::TreeError::BreakageNeedsLeaf { .. })
    ));
}

fn public_key_of_sec1(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).expect("read key");
    let secret = p256::SecretKey::from_sec1_pem(&pem).expect("valid SEC1 key");
    p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false)
        .as_bytes()
        .to_vec()
}

fn public_key_of_cert(path: &Path) -> Vec<u8> {
    let der = pem_certs(path).remove(0);
    let cert = gopem::parse_der(&der).expect("parse");
    cert.public_key().subject_public_key.data.to_vec()
}

#[test]
fn every_breakage_produces_the_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let healthy = generate(&agent_spec(&dir.path().join("healthy")));
    for breakage in Breakage::ALL {
        let rel = match breakage {
            Breakage::KeyMismatch => "agent/client-kubelet.key",
            Breakage::Oversized | Breakage::LoopingSymlink => "agent/kubelet.kubeconfig",
            _ => "agent/serving-kubelet.crt",
        };
        let spec = agent_spec(&dir.path().join(breakage.name())).with_breakage(rel, breakage);
        let generated = generate(&spec);
        assert_eq!(
            generated.files[rel].breakage,
            Some(breakage),
            "{rel} records its breakage"
        );
        let path = generated.path(rel);
        let healthy_bytes = std::fs::read(healthy.path(rel)).expect("read healthy twin");
        match breakage {
            Breakage::Empty => assert_eq!(std::fs::read(&path).expect("read").len(), 0),
            Breakage::NoPemData => {
                let text = std::fs::read_to_string(&path).expect("read");
                assert!(!text.is_empty() && !text.contains("-----BEGIN"), "{text}");
            }
            Breakage::BadDer => {
                let data = std::fs::read(&path).expect("read");
                let blocks = gopem::decode_all(&data);
                assert_eq!(blocks.len(), 1);
                assert_eq!(blocks[0].kind, "CERTIFICATE");
                assert!(matches!(
                    gopem::parse_certs(&data),
                    Err(gopem::ParseError::BadCertificate(_))
                ));
            }
            Breakage::Truncated => {
                let data = std::fs::read(&path).expect("read");
                // Same length as the healthy twin's half (certificate sizes vary by a byte or
                // two with the random serial and signature).
                assert!(
                    data.len().abs_diff(healthy_bytes.len() / 2) < 8,
                    "{}",
                    data.len()
                );
                assert!(data.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
                assert!(
                    gopem::parse_certs(&data).is_err(),
                    "cut inside the leaf block"
                );
            }
            Breakage::Unreadable => {
                assert!(path.is_dir());
                assert!(std::fs::read(&path).is_err());
            }
            Breakage::DanglingSymlink => {
                let meta = path.symlink_metadata().expect("lstat");
                assert!(meta.file_type().is_symlink());
                let err = std::fs::read(&path).expect_err("dangling");
                assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
            }
            Breakage::LoopingSymlink => {
                let err = std::fs::read(&path).expect_err("loop");
                assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP));
            }
            Breakage::Oversized => {
                let text = std::fs::read_to_string(&path).expect("read");
                assert!(text.len() > 1024 * 1024);
                assert!(text.starts_with("apiVersion: v1\n"));
            }
            Breakage::KeyMismatch => {
                let cert = generated.path("agent/client-kubelet.crt");
                assert_ne!(public_key_of_sec1(&path), public_key_of_cert(&cert));
            }
            Breakage::ForeignIssuer => {
                let info = generated.cert(rel).expect("facts");
                assert!(
                    info.issuer_cn.starts_with("foreign-ca@"),
                    "{}",
                    info.issuer_cn
                );
                let cluster_ca = generated.path("agent/server-ca.crt");
                let (ok, _) = openssl_verify(&cluster_ca, &path, "sslserver");
                assert!(
                    !ok,
                    "a foreign-issued leaf must not verify against the cluster CA"
                );
                let chain = pem_certs(&path);
                let foreign_ca = dir.path().join("foreign-ca.pem");
                std::fs::write(&foreign_ca, tree::pem::cert_pem(&chain[1])).expect("write");
                let (ok, text) = openssl_verify(&foreign_ca, &path, "sslserver");
                assert!(
                    ok,
                    "the leaf verifies against the foreign CA it carries: {text}"
                );
                // Its key still matches: only the issuer is wrong.
                let key = generated.path("agent/serving-kubelet.key");
                assert_eq!(public_key_of_sec1(&key), public_key_of_cert(&path));
            }
        }
    }
}

// ---- the simulated `rke2` binary ----

fn rke2(args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_rke2"))
        .args(args)
        .env("RKE2_SIM_NOW", NOW_RFC3339)
        .env_remove("RKE2_SIM_VERSION")
        .env_remove("RKE2_SIM_COMMIT")
        .output()
        .expect("run simulated rke2");
    (
        String::from_utf8(out.stdout).expect("utf8 stdout"),
        String::from_utf8(out.stderr).expect("utf8 stderr"),
        out.status.success(),
    )
}

fn check_args<'a>(data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["certificate", "check", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    args
}

#[test]
fn check_table_matches_rke2_layout_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = agent_spec(dir.path()).with_validity(
        "agent/client-kubelet.crt",
        Validity::ExpiresIn(std::time::Duration::from_secs(30 * 86_400)),
    );
    let generated = generate(&spec);
    let data_dir = generated.data_dir.display().to_string();
    let (stdout, stderr, ok) = rke2(&check_args(&data_dir, &["-s", "kubelet", "-o", "table"]));
    assert!(ok, "{stderr}");
    let unix = NOW.unix_timestamp();
    // Column widths: widest cell + 3 (FILENAME 19+3, SUBJECT 25+3, USAGES 10+3, EXPIRES 22+3,
    // RESIDUAL TIME 13+3); STATUS unpadded; RESIDUAL TIME cells keep go-humanize's trailing
    // space ("1 month ").
    let expected = format!(
        "\n\
FILENAME              SUBJECT                     USAGES       EXPIRES                  RESIDUAL TIME   STATUS\n\
--------              -------                     ------       -------                  -------------   ------\n\
client-kubelet.crt    system:node:agent-1         ClientAuth   Jul 01, 2025 12:00 UTC   1 month         WARNING\n\
client-kubelet.crt    rke2-client-ca@{unix}   CertSign     May 30, 2035 12:00 UTC   10 years        OK\n\
serving-kubelet.crt   agent-1                     ServerAuth   Jun 01, 2026 12:00 UTC   1 year          OK\n\
serving-kubelet.crt   rke2-server-ca@{unix}   CertSign     May 30, 2035 12:00 UTC   10 years        OK\n"
    );
    assert_eq!(stdout, expected);
    assert_eq!(stderr, "", "explicit services: no detection log line");
}

/// Split a table row into cells at the header's column starts.
fn cells(header: &str, line: &str) -> Vec<String> {
    let starts: Vec<usize> = [
        "FILENAME",
        "SUBJECT",
        "USAGES",
        "EXPIRES",
        "RESIDUAL TIME",
        "STATUS",
    ]
    .iter()
    .map(|h| header.find(h).expect("header column"))
    .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let end = starts.get(i + 1).copied().unwrap_or(line.len());
            line.get(s..end.min(line.len()))
                .unwrap_or("")
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[test]
fn check_table_reports_ok_warning_expired_and_not_yet_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = std::time::Duration::from_secs(86_400);
    let spec = server_spec(dir.path())
        .with_validity(
            "server/tls/client-scheduler.crt",
            Validity::ExpiresIn(30 * day),
        )
        .with_validity("server/tls/client-admin.crt", Validity::Expired(2 * day))
        .with_validity("server/tls/etcd/client.crt", Validity::NotYetValid(day));
    let generated = generate(&spec);
    let data_dir = generated.data_dir.display().to_string();
    let (stdout, stderr, ok) = rke2(&check_args(&data_dir, &["-o", "table"]));
    assert!(ok);
    assert_eq!(
        stderr,
        "time=\"2025-06-01T12:00:00Z\" level=info msg=\"Server detected, checking agent and server certificates\"\n"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "");
    let header = lines[1];
    assert!(header.starts_with("FILENAME   "));
    let rows: Vec<Vec<String>> = lines[3..].iter().map(|l| cells(header, l)).collect();
    // 15 server leaves + 4 agent leaves, each followed by its CA.
    assert_eq!(rows.len(), (15 + 4) * 2, "{stdout}");
    let row = |file: &str, subject: &str| -> Vec<String> {
        rows.iter()
            .find(|r| r[0] == file && r[1] == subject)
            .unwrap_or_else(|| panic!("no row {file} {subject}\n{stdout}"))
            .clone()
    };
    assert_eq!(
        row("client-scheduler.crt", "system:kube-scheduler"),
        [
            "client-scheduler.crt",
            "system:kube-scheduler",
            "ClientAuth",
            "Jul 01, 2025 12:00 UTC",
            "1 month",
            "WARNING"
        ]
    );
    assert_eq!(
        row("client-admin.crt", "system:admin"),
        [
            "client-admin.crt",
            "system:admin",
            "ClientAuth",
            "May 30, 2025 12:00 UTC",
            "2 days",
            "EXPIRED"
        ]
    );
    // NOT YET VALID shows NotBefore in EXPIRES; RESIDUAL TIME is still NotAfter - now.
    assert_eq!(
        row("client.crt", "etcd-client"),
        [
            "client.crt",
            "etcd-client",
            "ClientAuth",
            "Jun 02, 2025 12:00 UTC",
            "1 year",
            "NOT YET VALID"
        ]
    );
    assert_eq!(
        row("serving-kube-apiserver.crt", "kube-apiserver"),
        [
            "serving-kube-apiserver.crt",
            "kube-apiserver",
            "ServerAuth",
            "Jun 01, 2026 12:00 UTC",
            "1 year",
            "OK"
        ]
    );
    assert_eq!(
        row("peer-server-client.crt", "etcd-peer")[2],
        "ServerAuth,ClientAuth"
    );
    assert_eq!(
        row(
            "client-admin.crt",
            &format!("rke2-client-ca@{}", NOW.unix_timestamp())
        )[2],
        "CertSign"
    );
    // Both client-kube-proxy.crt files (server/tls and agent) appear under the same base name.
    assert_eq!(
        rows.iter()
            .filter(|r| r[0] == "client-kube-proxy.crt")
            .count(),
        4
    );
    // The STATUS column is never padded.
    assert!(
        lines.iter().all(|l| !l.ends_with(' ')),
        "no trailing spaces"
    );
}

#[test]
fn check_json_has_rke2_field_names_and_nanosecond_residuals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = agent_spec(dir.path()).with_validity(
        "agent/client-kube-proxy.crt",
        Validity::Expired(std::time::Duration::from_secs(2 * 86_400)),
    );
    let generated = generate(&spec);
    let data_dir = generated.data_dir.display().to_string();
    let (stdout, stderr, ok) = rke2(&check_args(&data_dir, &["--output", "json"]));
    assert!(ok);
    assert!(stderr.contains("level=info msg=\"Agent detected, checking agent certificates\""));
    assert_eq!(stdout.lines().count(), 1, "one JSON line");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let certs = v["Certificates"].as_array().expect("Certificates array");
    assert_eq!(certs.len(), 4 * 2);
    for c in certs {
        let keys: Vec<&str> = c
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "ExpiryTime",
                "Filename",
                "Issuer",
                "ResidualTime",
                "Status",
                "Subject",
                "Usages"
            ]
        );
    }
    let expired = certs
        .iter()
        .find(|c| c["Filename"] == "client-kube-proxy.crt" && c["Subject"] == "system:kube-proxy")
        .expect("kube-proxy row");
    assert_eq!(expired["Status"], "EXPIRED");
    assert_eq!(expired["ExpiryTime"], "2025-05-30T12:00:00Z");
    assert_eq!(
        expired["ResidualTime"].as_i64(),
        Some(-2 * 86_400 * 1_000_000_000)
    );
    assert_eq!(expired["Usages"], serde_json::json!(["ClientAuth"]));
    assert!(
        expired["Issuer"]
            .as_str()
            .expect("issuer")
            .starts_with("rke2-client-ca@")
    );
    // Field order follows Go's struct.
    assert!(stdout.starts_with("{\"Certificates\":[{\"Filename\":"));
}

#[test]
fn check_yaml_and_text_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = agent_spec(dir.path()).with_validity(
        "agent/serving-kubelet.crt",
        Validity::ExpiresIn(std::time::Duration::from_secs(10 * 86_400)),
    );
    let generated = generate(&spec);
    let data_dir = generated.data_dir.display().to_string();
    let (stdout, _, ok) = rke2(&check_args(&data_dir, &["-o", "yaml", "-s", "kubelet"]));
    assert!(ok);
    assert!(
        stdout.starts_with(
            "certificates:\n- filename: client-kubelet.crt\n  subject: system:node:agent-1\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  usages:\n  - ServerAuth\n  expirytime: 2025-06-11T12:00:00Z\n  residualtime: 240h0m0s\n  status: WARNING\n"), "{stdout}");

    let (stdout, stderr, ok) = rke2(&check_args(&data_dir, &["-s", "kubelet"]));
    assert!(ok);
    assert_eq!(stdout, "", "text output goes to stderr");
    assert!(stderr.contains(
        "level=warning msg=\"serving-kubelet.crt: certificate agent-1 (ServerAuth) will expire within 120 days at 2025-06-11T12:00:00Z\""
    ), "{stderr}");
    assert!(stderr.contains(
        "level=info msg=\"client-kubelet.crt: certificate system:node:agent-1 (ClientAuth) is ok, expires at 2026-06-01T12:00:00Z\""
    ), "{stderr}");
}

#[test]
fn check_skips_broken_files_silently_like_rke2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = agent_spec(dir.path());
    for (rel, b) in [
        ("agent/client-kubelet.crt", Breakage::Empty),
        ("agent/serving-kubelet.crt", Breakage::BadDer),
        ("agent/client-kube-proxy.crt", Breakage::Unreadable),
        ("agent/client-rke2-controller.crt", Breakage::Oversized),
    ] {
        spec.breakages.insert(rel.into(), b);
    }
    let generated = generate(&spec);
    let data_dir = generated.data_dir.display().to_string();
    let (stdout, _, ok) = rke2(&check_args(&data_dir, &["-o", "json"]));
    assert!(ok, "RKE2 exits 0 even when files are broken");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let files: Vec<&str> = v["Certificates"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["Filename"].as_str().expect("filename"))
        .collect();
    // Only the oversized (still readable) file gives rows.
    assert_eq!(
        files,
        ["client-rke2-controller.crt", "client-rke2-controller.crt"]
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let (stdout, _, ok) = rke2(&check_args(
        &empty.path().display().to_string(),
        &["-o", "json"],
    ));
    assert!(ok);
    assert_eq!(stdout, "{\"Certificates\":null}\n");
}

#[test]
fn check_rejects_unknown_services_and_formats() {
    let (_, stderr, ok) = rke2(&["certificate", "check", "-s", "certificate-authority"]);
    assert!(!ok);
    assert!(
        stderr
            .contains("level=fatal msg=\"Error: service certificate-authority is not recognized\""),
        "{stderr}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stderr, ok) = rke2(&check_args(
        &dir.path().display().to_string(),
        &["-o", "xml"],
    ));
    assert!(!ok);
    assert!(stderr.contains("invalid output format xml"), "{stderr}");
}

#[test]
fn version_comes_from_env_or_file_next_to_the_binary() {
    let (stdout, _, ok) = rke2(&["--version"]);
    assert!(ok);
    assert_eq!(
        stdout,
        "rke2 version v1.34.1+rke2r1 (0123456789abcdef0123456789abcdef01234567)\ngo version go1.24.6 X:boringcrypto\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rke2"))
        .arg("-v")
        .env("RKE2_SIM_VERSION", "v1.33.5+rke2r1")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rke2 version v1.33.5+rke2r1 ("));

    // A copy of the binary with rke2.version beside it, as a simulated upgrade would leave it.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("rke2");
    std::fs::copy(env!("CARGO_BIN_EXE_rke2"), &bin).expect("copy binary");
    std::fs::write(
        dir.path().join("rke2.version"),
        "v1.35.0+rke2r2\nfeedface\n",
    )
    .expect("write");
    let out = Command::new(&bin)
        .arg("--version")
        .env_remove("RKE2_SIM_VERSION")
        .env_remove("RKE2_SIM_COMMIT")
        .output()
        .expect("run copy");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rke2 version v1.35.0+rke2r2 (feedface)\ngo version go1.24.6 X:boringcrypto\n"
    );
}

#[test]
fn generation_is_fast_enough_for_many_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = std::time::Instant::now();
    for i in 0..5 {
        generate(&server_spec(&dir.path().join(format!("n{i}"))));
    }
    let per_tree = start.elapsed() / 5;
    assert!(
        per_tree < std::time::Duration::from_secs(2),
        "server tree took {per_tree:?}"
    );
}
