//! Scan benchmarks (criterion): a full RKE2 server tree, and 1,000 certificates.
//!
//! "cold" builds a new `Scanner` per iteration (every file parsed, every chain and key
//! verified): the agent's first scan. "warm" rescans with the same `Scanner` and unchanged
//! files (contents re-read and compared, parsing and signature checks reused): the agent's
//! rescan after a file event. Targets: server tree < 2 ms, 1,000 certificates < 30 ms.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rke2ops_common::certs::{ScanConfig, Scanner};
use rke2ops_tests::sim::tree::{CaKind, ClusterCas, NodeKey, Role, TreeSpec, generate};
use time::{Duration, OffsetDateTime};

fn server_tree(root: &Path) -> ScanConfig {
    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate(now).expect("CAs");
    let mut spec = TreeSpec::new(
        Role::Server,
        "server-1",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        root.join("data"),
        now,
    );
    spec.config_dir = Some(root.join("etc"));
    generate(&spec, &cas).expect("tree");
    ScanConfig::new(root.join("data"), Some(root.join("etc/rke2.yaml")), &[])
}

/// 500 distinct leaf files (leaf + CA chain = 1,000 certificates) with their keys, signed by
/// the client CA, in `agent/`.
fn thousand_certs(root: &Path) -> ScanConfig {
    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate(now).expect("CAs");
    let data = root.join("data");
    let agent = data.join("agent");
    std::fs::create_dir_all(&agent).expect("mkdir");
    let ca = cas.ca(CaKind::Client);
    std::fs::write(agent.join("client-ca.crt"), ca.cert_pem()).expect("ca");
    let issuer = ca.issuer().expect("issuer");
    for i in 0..500 {
        let key = NodeKey::generate().expect("key");
        let mut params = CertificateParams::new(vec![format!("node-{i}")]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("system:node:node-{i}"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let cert = params.signed_by(&key.pair, &issuer).expect("sign");
        std::fs::write(
            agent.join(format!("bench-{i:03}.crt")),
            cert.pem() + &ca.cert_pem(),
        )
        .expect("crt");
        std::fs::write(agent.join(format!("bench-{i:03}.key")), &key.sec1_pem).expect("key");
    }
    ScanConfig::new(data, None, &[])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_tree(&dir.path().join("server"));
    let thousand = thousand_certs(&dir.path().join("thousand"));
    for (name, config, expected_min) in [
        ("server_tree", &server, 40),
        ("1000_certs", &thousand, 1000),
    ] {
        let found = Scanner::new(config.clone()).scan();
        assert!(
            found.certificates.len() >= expected_min,
            "{name}: {} certificates",
            found.certificates.len()
        );
        assert!(found.errors.is_empty(), "{name}: {:?}", found.errors);
        c.bench_function(&format!("scan/{name}/cold"), |b| {
            b.iter(|| Scanner::new(config.clone()).scan())
        });
        let mut warm = Scanner::new(config.clone());
        warm.scan();
        c.bench_function(&format!("scan/{name}/warm"), |b| b.iter(|| warm.scan()));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
