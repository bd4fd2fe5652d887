//! The fuzz harnesses: one function per untrusted-input parser, shared by the `cargo fuzz`
//! targets (`fuzz_targets/*.rs`, one line each) and the normal test suite
//! (`tests/tests/fuzz.rs` includes this file with `#[path]`, so `cargo test --workspace` runs
//! every committed corpus file through the same code without depending on this crate).
//!
//! Each harness feeds the bytes to the parser and then checks what must hold for any input:
//! nothing panics, a success is self-consistent (it round-trips, or re-parses to the same
//! value), and a failure is an ordinary error value. A harness panics only when one of those
//! checks fails, which is what the fuzzer reports as a crash.
//!
//! It must not depend on anything but the workspace crates and their own dependencies, so
//! that the tests crate can compile it as a module.

#![allow(clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use prost::Message as _;
use rke2_hub::pki::check_node_csr;
use rke2_hub::pki::token::JoinToken;
use rke2_hub::plan::version::{GuardError, UpgradeStep, guard};
use rke2_hub::plan::window::MaintenanceWindow;
use rke2_node_agent::ops::artifacts::{arch, sum_for, tarball_name};
use rke2_node_agent::ops::install::{clean_entry, stage};
use rke2ops_common::certs::chain::{PoolCa, verify_leaf};
use rke2ops_common::certs::keys::{key_matches, public_key_bits};
use rke2ops_common::certs::kubeconfig::embedded_certs;
use rke2ops_common::certs::parse::{parse_bundle, parse_der};
use rke2ops_common::certs::{ScanConfig, Scanner};
use rke2ops_common::version::Rke2Version;
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

/// A harness: panics only when a property of the parser fails.
pub type Harness = fn(&[u8]);

/// Every harness by its target name (the folder under `fuzz/corpus/` and the file under
/// `fuzz/fuzz_targets/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("certs", certs),
    ("kubeconfig", kubeconfig),
    ("csr", csr),
    ("join_token", join_token),
    ("tar_staging", tar_staging),
    ("sums_file", sums_file),
    ("version", version),
    ("window", window),
    ("channel_json", channel_json),
    ("alert_json", alert_json),
    ("agent_message", agent_message),
];

/// `bytes` in PEM armour under `label`, so the DER parsers behind the PEM layer get reached
/// from raw bytes too.
#[must_use]
pub fn pem_wrap(label: &str, bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Certificate PEM bundles, DER certificates, private keys and chain checks: what the node
/// agent's scan reads from every file under the data dir.
pub fn certs(data: &[u8]) {
    let bundle = parse_bundle(data);
    if bundle.problem.is_none() {
        assert!(!bundle.certs.is_empty(), "no problem but no certificate");
    }
    let pool: Vec<PoolCa> = bundle
        .certs
        .iter()
        .filter(|c| c.is_ca)
        .filter_map(|c| PoolCa::new("fuzz".to_owned(), c.der.clone()))
        .collect();
    for cert in &bundle.certs {
        let again = parse_der(&cert.der).expect("a certificate of a bundle re-parses");
        assert_eq!(&again, cert, "re-parsing a certificate changed its fields");
        let _ = key_matches(data, &cert.public_key_bits);
        let _ = verify_leaf(&cert.der, &pool);
    }
    if let Ok(cert) = parse_der(data) {
        assert_eq!(cert.der, data, "parse_der keeps the DER it was given");
        let _ = parse_bundle(pem_wrap("CERTIFICATE", data).as_bytes());
    }
    let _ = public_key_bits(data);
    let _ = key_matches(data, &[4; 65]);
    if !bundle.certs.is_empty() {
        scan_tree(
            &[
                ("server/tls/serving-kube-apiserver.crt", data),
                ("server/tls/serving-kube-apiserver.key", data),
            ],
            None,
        );
    }
}

/// The agent's whole scan over a data dir holding `files` (and the kubeconfig, if any):
/// chain and key checks, status words, the inventory. Only for input that parsed, because
/// it costs file I/O; every certificate found must be in the inventory.
fn scan_tree(files: &[(&str, &[u8])], kubeconfig: Option<&[u8]>) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data_dir = dir.path().join("rke2");
    for (rel, bytes) in files {
        let path = data_dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a relative file path has a parent"))
            .expect("make the folder");
        std::fs::write(&path, bytes).expect("write the file");
    }
    let admin = kubeconfig.map(|bytes| {
        let path = dir.path().join("rke2.yaml");
        std::fs::write(&path, bytes).expect("write the kubeconfig");
        path
    });
    std::fs::create_dir_all(&data_dir).expect("make the data dir");
    let mut scanner = Scanner::new(ScanConfig::new(&data_dir, admin, &[]));
    let first = scanner.scan();
    let now = OffsetDateTime::now_utc();
    let _ = first.worst_status(now, time::Duration::days(120));
    for entry in &first.certificates {
        let _ = entry.status(now, time::Duration::days(120));
        let _ = entry.usages_label();
    }
    let again = scanner.scan();
    assert_eq!(
        again.certificates.len(),
        first.certificates.len(),
        "a rescan of unchanged files finds the same certificates"
    );
}

/// Kubeconfig YAML: the embedded certificates and keys, then their PEM.
pub fn kubeconfig(data: &[u8]) {
    let Ok(found) = embedded_certs(data) else {
        return;
    };
    let mut any_cert = false;
    for embedded in found {
        assert!(
            embedded.field == "certificate-authority-data"
                || embedded.field == "client-certificate-data",
            "unexpected field {}",
            embedded.field
        );
        let bundle = parse_bundle(&embedded.pem);
        any_cert |= !bundle.certs.is_empty();
        if let Some(key) = &embedded.key_pem {
            let _ = public_key_bits(key);
            for cert in &bundle.certs {
                let _ = key_matches(key, &cert.public_key_bits);
            }
        }
    }
    if any_cert {
        scan_tree(&[], Some(data));
    }
}

/// A node's certificate request as the hub checks it before signing. The first line is the
/// node name the agent claims, the rest the CSR PEM; input without PEM armour is also tried
/// as the DER of a request.
pub fn csr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (claimed, pem) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(checked) = check_node_csr(pem, claimed) {
        assert_eq!(
            checked.node, claimed,
            "a checked CSR names the claimed node"
        );
        assert!(!checked.spki_der.is_empty(), "a checked CSR has a key");
    }
    if !data.starts_with(b"-----") && !text.contains("-----BEGIN") {
        let wrapped = pem_wrap("CERTIFICATE REQUEST", data);
        if let Ok(checked) = check_node_csr(&wrapped, "node-1") {
            assert_eq!(checked.node, "node-1");
        }
    }
}

/// A join token as presented at enrollment.
pub fn join_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match JoinToken::parse(&text) {
        Ok((id, secret)) => {
            let whole = format!("{id}.{}", secret.expose());
            assert_eq!(whole, text.trim(), "a parsed token is the trimmed text");
            assert_eq!(whole.len(), 23, "id (6) + '.' + secret (16)");
            let (id2, secret2) = JoinToken::parse(&whole).expect("a parsed token re-parses");
            assert_eq!((id2, secret2), (id, secret.clone()));
            assert!(!format!("{secret:?}").contains(secret.expose()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The agent's upgrade staging: a gzip'd tar extracted into a fresh folder. Input that is not
/// gzip is compressed first, so the fuzzer mutates tar headers rather than deflate blocks.
pub fn tar_staging(data: &[u8]) {
    if let Ok(path) = clean_entry(Path::new(OsStr::from_bytes(data))) {
        assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "clean_entry left {path:?}"
        );
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let tarball = dir.path().join("rke2.linux-amd64.tar.gz");
    let gz = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("gzip into memory");
        enc.finish().expect("gzip into memory")
    };
    std::fs::write(&tarball, gz).expect("write the tarball");
    let staged = dir.path().join("staged");
    let Ok(files) = stage(&tarball, &staged) else {
        return;
    };
    assert!(
        files.iter().any(|f| f == "bin/rke2"),
        "staged without bin/rke2"
    );
    let root = staged.canonicalize().expect("the staging folder exists");
    for file in &files {
        let rel = Path::new(file);
        assert!(
            rel.components().all(|c| matches!(c, Component::Normal(_))),
            "staged path {file:?} is not plain relative"
        );
        let real = staged
            .join(rel)
            .canonicalize()
            .expect("a staged file exists");
        assert!(
            real.starts_with(&root),
            "{file:?} escaped the staging folder"
        );
    }
    let again = stage(&tarball, &staged).expect("a complete staging is kept");
    assert_eq!(again, files, "re-staging changed the file list");
}

/// A `sha256sum` listing, looked up for the real tarball name and for every name it lists.
pub fn sums_file(data: &[u8]) {
    let listing = String::from_utf8_lossy(data);
    let mut names = vec![tarball_name(arch()), tarball_name("arm64")];
    names.extend(
        listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|n| n.trim_start_matches('*').to_owned())
            .take(8),
    );
    for name in names {
        if let Some(hash) = sum_for(&listing, &name) {
            assert_eq!(hash.len(), 64, "a sum is 64 hex digits");
            assert!(
                hash.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "a sum is lower-case hex: {hash:?}"
            );
            assert!(
                listing.to_ascii_lowercase().contains(&hash),
                "the sum comes from the listing"
            );
        }
    }
}

/// RKE2 version strings, their round trip, and the upgrade guard over any pair: the text is
/// split at the first `,` into a current and a target version; the raw bytes also make two
/// versions directly, so extreme numbers are reached.
pub fn version(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed: Vec<Rke2Version> = text
        .split(',')
        .take(2)
        .filter_map(|part| {
            let v = Rke2Version::from_str(part).ok()?;
            assert_eq!(v.to_string(), part, "only the canonical spelling parses");
            Some(v)
        })
        .collect();
    if let [a, b] = parsed[..] {
        check_guard(a, b);
    }
    if data.len() >= 32 {
        let word = |i: usize| {
            let bytes: [u8; 4] = data[i * 4..i * 4 + 4].try_into().expect("4 bytes");
            u32::from_le_bytes(bytes)
        };
        let make = |i: usize| Rke2Version {
            major: word(i),
            minor: word(i + 1),
            patch: word(i + 2),
            release: word(i + 3),
        };
        let (a, b) = (make(0), make(4));
        for v in [a, b] {
            let round = Rke2Version::from_str(&v.to_string()).expect("Display parses back");
            assert_eq!(round, v, "Display/FromStr round trip");
        }
        check_guard(a, b);
    }
}

fn check_guard(current: Rke2Version, target: Rke2Version) {
    for allow in [false, true] {
        match guard("node-1", current, target, allow) {
            Ok(UpgradeStep::AlreadyAtTarget) => assert_eq!(current, target),
            Ok(UpgradeStep::Upgrade) => assert!(current < target),
            Err(e @ GuardError::Downgrade { .. }) => {
                assert!(current > target);
                let _ = e.to_string();
            }
            Err(e @ GuardError::MinorSkip { .. }) => {
                assert!(!allow && current < target);
                let _ = e.to_string();
            }
        }
    }
}

/// Maintenance windows: parse, print and parse again, and ask it about instants taken from
/// the input's last bytes.
pub fn window(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(window) = MaintenanceWindow::parse(&text) else {
        return;
    };
    let shown = window.to_string();
    let again = MaintenanceWindow::parse(&shown).expect("a shown window parses");
    assert_eq!(again, window, "Display/parse round trip of {shown:?}");
    let mut seconds = [0u8; 8];
    let tail = &data[data.len().saturating_sub(8)..];
    seconds[..tail.len()].copy_from_slice(tail);
    // Within ±2^40 s of the epoch (tens of thousands of years): every such instant is one
    // `time` can hold.
    let offset = i64::from_le_bytes(seconds) % (1 << 40);
    for secs in [1_750_000_000, offset, 253_402_300_799, -377_705_116_800] {
        let Ok(from) = OffsetDateTime::from_unix_timestamp(secs) else {
            continue;
        };
        let inside = window.contains(from);
        match window.next_open(from) {
            Some(at) => {
                assert!(at >= from, "next_open went back in time");
                if inside {
                    assert_eq!(at, from, "inside now: opens now");
                }
            }
            None => assert!(!inside, "inside now but no next opening"),
        }
    }
}

/// RKE2's channels document, resolved for the usual channel names and one from the input.
pub fn channel_json(data: &[u8]) {
    let json = String::from_utf8_lossy(data);
    for channel in ["stable", "latest", "v1.34", "testing"] {
        if let Ok(v) = rke2_hub::plan::channel::resolve(&json, channel, "https://fuzz.invalid/") {
            assert_eq!(Rke2Version::from_str(&v.to_string()), Ok(v));
        }
    }
}

/// Prometheus's `/api/v1/alerts` answer through the alert gate.
pub fn alert_json(data: &[u8]) {
    let json = String::from_utf8_lossy(data);
    let ignore = rke2_hub::plan::alerts::ignore_list(&["Extra".to_owned()]);
    if let Ok(blocking) =
        rke2_hub::plan::alerts::blocking(&json, &ignore, "https://fuzz.invalid/api/v1/alerts")
    {
        for name in &blocking {
            assert!(!ignore.contains(name), "ignored alert {name:?} blocks");
        }
    }
}

type HubState = (rke2_hub::store::Store, Arc<rke2_hub::engine::Engine>);

/// What the hub keeps for the agent-message harness: one in-memory store with a node, and an
/// engine over it without a cluster (kept across runs: opening a store costs milliseconds).
fn hub_state() -> &'static Mutex<HubState> {
    static STATE: OnceLock<Mutex<HubState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let store = rke2_hub::store::Store::open_in_memory().expect("an in-memory store");
        store
            .upsert_node_hello(
                "node-1",
                "server",
                "v1.34.1+rke2r1",
                "fuzz",
                OffsetDateTime::now_utc(),
            )
            .expect("a node row");
        let engine = rke2_hub::engine::Engine::new(
            store.clone(),
            Arc::new(rke2_hub::registry::Registry::default()),
            None,
            rke2_hub::engine::EngineSettings::default(),
        );
        Mutex::new((store, engine))
    })
}

/// One message on an agent's stream: the protobuf decode, then the hub's handler (wire →
/// domain conversion, the store writes, the engine's bookkeeping).
pub fn agent_message(data: &[u8]) {
    let Ok(message) = pb::AgentMessage::decode(data) else {
        return;
    };
    let re_encoded = message.encode_to_vec();
    assert_eq!(
        pb::AgentMessage::decode(re_encoded.as_slice()).as_ref(),
        Ok(&message),
        "encode/decode round trip"
    );
    let state = hub_state().lock().unwrap_or_else(|e| e.into_inner());
    let (store, engine) = &*state;
    if let Err(status) =
        rke2_hub::grpc::agent::handle(store, engine, "node-1", message, OffsetDateTime::now_utc())
    {
        assert!(
            matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::Internal
            ),
            "unexpected status {status:?}"
        );
    }
}
