//! Doctor benchmarks (criterion) on a generated RKE2 server data dir (5 CAs, the 17 leaves
//! of `reference/rke2.md` with their keys and SANs, `rke2.yaml`, one `tls-*` backup, one
//! empty certificate so the backup lookup runs):
//!
//! - `checks_only`: the pure checks over gathered facts (what each finding costs);
//! - `daemon_counts`: what the daemon adds to every rescan (facts from its inventory,
//!   config.yaml, interfaces, statvfs, backup reads, file-based checks);
//! - `end_to_end_files`: a cold scan plus the above (the `doctor` command without systemd).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rke2_node_agent::config::{Config, ConfigLayer, FileConfig};
use rke2_node_agent::doctor::{self, DaemonChecks, Options, UnitFacts, gather};
use rke2ops_common::certs::Scanner;
use time::{Duration, OffsetDateTime};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let pem = params.self_signed(&key).expect("ca").pem();
    Ca { params, key, pem }
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn leaf(root: &Path, ca: &Ca, rel: &str, cn: &str, sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    let issuer = Issuer::new(ca.params.clone(), &ca.key);
    let cert = params.signed_by(&key, &issuer).expect("leaf");
    let bundle = format!("{}{}", cert.pem(), ca.pem);
    let key_pem = key.serialize_pem();
    write(root, rel, &bundle);
    write(root, &rel.replace(".crt", ".key"), &key_pem);
    (bundle, key_pem)
}

fn server_tree(root: &Path) -> Config {
    use base64::Engine as _;
    let data = root.join("data");
    let client = ca("rke2-client-ca@1700000000");
    let server = ca("rke2-server-ca@1700000000");
    let reqh = ca("rke2-request-header-ca@1700000000");
    let etcd_server = ca("etcd-server-ca@1700000000");
    let etcd_peer = ca("etcd-peer-ca@1700000000");
    for (rel, c) in [
        ("server/tls/client-ca.crt", &client),
        ("server/tls/server-ca.crt", &server),
        ("server/tls/request-header-ca.crt", &reqh),
        ("server/tls/etcd/server-ca.crt", &etcd_server),
        ("server/tls/etcd/peer-ca.crt", &etcd_peer),
        ("agent/client-ca.crt", &client),
        ("agent/server-ca.crt", &server),
    ] {
        write(&data, rel, &c.pem);
    }
    let node = ["server-1", "localhost", "127.0.0.1", "10.0.0.5"];
    let (admin_crt, admin_key) = leaf(
        &data,
        &client,
        "server/tls/client-admin.crt",
        "system:admin",
        &[],
    );
    for (rel, c, cn) in [
        (
            "server/tls/client-supervisor.crt",
            &client,
            "system:rke2-supervisor",
        ),
        (
            "server/tls/client-controller.crt",
            &client,
            "system:kube-controller-manager",
        ),
        (
            "server/tls/client-scheduler.crt",
            &client,
            "system:kube-scheduler",
        ),
        (
            "server/tls/client-kube-apiserver.crt",
            &client,
            "system:apiserver",
        ),
        (
            "server/tls/client-kube-proxy.crt",
            &client,
            "system:kube-proxy",
        ),
        (
            "server/tls/client-rke2-controller.crt",
            &client,
            "system:rke2-controller",
        ),
        (
            "server/tls/client-rke2-cloud-controller.crt",
            &client,
            "rke2-cloud-controller-manager",
        ),
        (
            "server/tls/client-auth-proxy.crt",
            &reqh,
            "system:auth-proxy",
        ),
        ("server/tls/etcd/client.crt", &etcd_server, "etcd-client"),
        (
            "server/tls/etcd/peer-server-client.crt",
            &etcd_peer,
            "etcd-peer",
        ),
        ("agent/client-kubelet.crt", &client, "system:node:server-1"),
        ("agent/client-kube-proxy.crt", &client, "system:kube-proxy"),
        (
            "agent/client-rke2-controller.crt",
            &client,
            "system:rke2-controller",
        ),
    ] {
        leaf(&data, c, rel, cn, &[]);
    }
    leaf(
        &data,
        &server,
        "server/tls/serving-kube-apiserver.crt",
        "kube-apiserver",
        &[
            "kubernetes",
            "kubernetes.default",
            "server-1",
            "localhost",
            "127.0.0.1",
            "10.0.0.5",
        ],
    );
    leaf(
        &data,
        &etcd_server,
        "server/tls/etcd/server-client.crt",
        "etcd-server",
        &node,
    );
    leaf(
        &data,
        &server,
        "agent/serving-kubelet.crt",
        "server-1",
        &node,
    );
    // A backup with a valid copy, then the live file emptied by a "failed rotation".
    let backup = data.join("server/tls-1765000000");
    std::fs::create_dir_all(&backup).expect("mkdir");
    std::fs::copy(
        data.join("server/tls/client-admin.crt"),
        backup.join("client-admin.crt"),
    )
    .expect("copy");
    write(&data, "server/tls/client-admin.crt", "");
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    write(
        root,
        "etc/rke2.yaml",
        &format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n  name: default\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b(&server.pem),
            b(&admin_crt),
            b(&admin_key)
        ),
    );
    write(
        root,
        "etc/config.yaml",
        "node-name: server-1\nnode-ip: 10.0.0.5\ntls-san:\n  - api.example.com\n",
    );
    std::fs::create_dir_all(data.join("server/db")).expect("db");
    let overrides = ConfigLayer {
        data_dir: Some(data),
        admin_kubeconfig: Some(root.join("etc/rke2.yaml")),
        node_config: Some(root.join("etc/config.yaml")),
        state_dir: Some(root.join("state")),
        ..ConfigLayer::default()
    };
    Config::resolve(FileConfig::default(), overrides).expect("config")
}

fn options(config: &Config) -> Options {
    Options {
        warn_days: config.warn_days,
        staging_min_free: doctor::DEFAULT_STAGING_MIN_FREE_MIB << 20,
        etcd_min_free: doctor::DEFAULT_ETCD_MIN_FREE_MIB << 20,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root: PathBuf = dir.path().to_path_buf();
    let config = server_tree(&root);
    let options = options(&config);
    let scan = gather::scan_config(&config);
    let inventory = Scanner::new(scan.clone()).scan();
    let facts = gather::facts(
        &config,
        &options,
        &scan,
        inventory.clone(),
        UnitFacts::NotInstalled,
    )
    .expect("facts");
    let findings = doctor::all_findings(&facts, &options);
    assert!(
        findings
            .iter()
            .any(|f| f.code == rke2ops_common::doctor::Code::PemEmptyOrCorrupt),
        "{findings:#?}"
    );
    let mut group = c.benchmark_group("doctor");
    group.bench_function("checks_only", |b| {
        b.iter(|| doctor::all_findings(&facts, &options));
    });
    let daemon = DaemonChecks::new(&config);
    group.bench_function("daemon_counts", |b| {
        b.iter(|| rke2ops_common::doctor::counts(&daemon.findings(&inventory).expect("findings")));
    });
    group.bench_function("end_to_end_files", |b| {
        b.iter(|| {
            let inventory = Scanner::new(scan.clone()).scan();
            let facts = gather::facts(&config, &options, &scan, inventory, UnitFacts::NotInstalled)
                .expect("facts");
            doctor::all_findings(&facts, &options)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
