//! The fuzz targets in the normal test suite: every committed seed and regression input under
//! `fuzz/corpus/<target>/` through its harness, arbitrary bytes and mutated seeds through every
//! harness (proptest), and the properties that hold for well-formed input (round trips).
//!
//! The harnesses are `fuzz/src/lib.rs`, compiled here as a module so `cargo test --workspace`
//! needs neither libFuzzer nor the fuzz crate. `scripts/fuzz.sh` runs the same harnesses
//! under libFuzzer. Case counts are small: each property takes well under a second or two.

#![allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

use proptest::prelude::*;
use rke2_hub::pki::token::JoinToken;
use rke2_hub::plan::version::guard;
use rke2_hub::plan::window::MaintenanceWindow;
use rke2_node_agent::ops::artifacts::sum_for;
use rke2ops_common::version::Rke2Version;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The committed inputs of `target`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn harness_of(target: &str) -> harness::Harness {
    harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap()
}

#[test]
fn every_committed_corpus_file_passes_its_harness() {
    for (target, run) in harness::TARGETS {
        let files = corpus(target);
        assert!(files.len() >= 2, "fuzz/corpus/{target} has too few seeds");
        for (name, bytes) in files {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "fuzz/corpus/{target}/{name} panicked");
        }
    }
}

#[test]
fn every_harness_has_a_cargo_fuzz_target() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (target, _) in harness::TARGETS {
        let source = fuzz.join(format!("fuzz_targets/{target}.rs"));
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(
            text.contains(&format!("rke2ops_fuzz::{target}(")),
            "{source:?}"
        );
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target}"
        );
    }
}

/// A seed of `target` with a few bytes overwritten, inserted or removed, then cut short: the
/// structured mutations that keep most of a valid input intact, so parsers get past their
/// first check.
fn mutated_seed(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    let count = seeds.len();
    (
        0..count,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(seed, edits, cut, truncate)| {
            let mut bytes = seeds[seed].clone();
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            if truncate && !bytes.is_empty() {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        })
}

/// One proptest pair per harness: arbitrary bytes, then mutated seeds.
macro_rules! never_panics {
    ($($target:ident: $cases:expr;)*) => {$(
        mod $target {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases($cases))]

                #[test]
                fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
                    harness_of(stringify!($target))(&data);
                }

                #[test]
                fn mutated_seeds_never_panic(data in mutated_seed(stringify!($target))) {
                    harness_of(stringify!($target))(&data);
                }
            }
        }
    )*};
}

never_panics! {
    certs: 256;
    kubeconfig: 256;
    csr: 256;
    join_token: 256;
    tar_staging: 128;
    sums_file: 256;
    version: 256;
    window: 256;
    channel_json: 256;
    alert_json: 256;
    agent_message: 256;
}

/// Version numbers with the edges (0, `u32::MAX`) over-represented.
fn number() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        0u32..200,
        any::<u32>()
    ]
}

fn rke2_version() -> impl Strategy<Value = Rke2Version> {
    (number(), number(), number(), number()).prop_map(|(major, minor, patch, release)| {
        Rke2Version {
            major,
            minor,
            patch,
            release,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn versions_round_trip_through_display(v in rke2_version()) {
        let text = v.to_string();
        prop_assert_eq!(text.parse::<Rke2Version>(), Ok(v));
    }

    #[test]
    fn version_text_that_parses_is_canonical(text in "v[0-9+]{1,4}\\.[0-9]{1,3}\\.[0-9]{1,3}\\+rke2r[0-9]{1,3}") {
        if let Ok(v) = text.parse::<Rke2Version>() {
            prop_assert_eq!(v.to_string(), text);
        }
    }

    #[test]
    fn the_upgrade_guard_answers_for_any_pair(a in rke2_version(), b in rke2_version(), allow in any::<bool>()) {
        if let Err(e) = guard("node-1", a, b, allow) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn well_formed_tokens_parse_back(id in "[a-z0-9]{6}", secret in "[a-z0-9]{16}", pad in "[ \t\n]{0,3}") {
        let text = format!("{pad}{id}.{secret}{pad}");
        let (got_id, got_secret) = JoinToken::parse(&text).unwrap();
        prop_assert_eq!(got_id, id);
        prop_assert_eq!(got_secret.expose(), secret);
    }

    #[test]
    fn malformed_tokens_are_errors_that_never_quote_the_secret(id in "[a-zA-Z0-9é.]{0,8}", secret in "[a-zA-Z0-9é]{17,20}") {
        let err = JoinToken::parse(&format!("{id}.{secret}")).unwrap_err();
        prop_assert!(!err.to_string().contains(&secret));
    }

    #[test]
    fn listed_sums_are_found_by_exact_name(
        hash in "[0-9a-fA-F]{64}",
        name in "[a-z0-9.-]{2,30}",
        other in "[a-z0-9.-]{1,30}",
        binary in any::<bool>(),
    ) {
        let star = if binary { "*" } else { "" };
        let listing = format!("{} x\n{hash} {star}{name}\n", "0".repeat(64));
        prop_assert_eq!(sum_for(&listing, &name), Some(hash.to_ascii_lowercase()));
        if other != name {
            prop_assert_eq!(sum_for(&listing, &other).filter(|_| other != "x"), None);
        }
    }

    #[test]
    fn generated_windows_round_trip_through_display(
        days in prop_oneof![
            Just(String::new()),
            Just("daily ".to_owned()),
            "(mon|tue|wed|thu|fri|sat|sun|Mon|Sunday)(,(mon|tue|wed|thu|fri|sat|sun)){0,3} ",
            "(mon|tue|wed|thu|fri|sat|sun)-(mon|tue|wed|thu|fri|sat|sun) ",
            "[a-zé]{1,4}(-[a-zé]{1,4})? ",
        ],
        start in (0u8..26, 0u8..62),
        end in (0u8..26, 0u8..62),
        zone in prop_oneof![
            Just(String::new()),
            Just(" UTC".to_owned()),
            Just(" Europe/Berlin".to_owned()),
            Just(" America/New_York".to_owned()),
            " [A-Za-z/_]{1,12}",
        ],
    ) {
        let text = format!("{days}{:02}:{:02}-{:02}:{:02}{zone}", start.0, start.1, end.0, end.1);
        if let Ok(window) = MaintenanceWindow::parse(&text) {
            let shown = window.to_string();
            prop_assert_eq!(MaintenanceWindow::parse(&shown), Ok(window));
        }
        harness::window(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any text: every parser answers with a value or an error that says something.
    #[test]
    fn text_parsers_answer_any_string_with_a_value_or_a_described_error(text in any::<String>()) {
        let described = |message: String| !message.trim().is_empty();
        if let Err(e) = JoinToken::parse(&text) {
            prop_assert!(described(e.to_string()));
        }
        if let Err(e) = text.parse::<Rke2Version>() {
            prop_assert!(described(e.to_string()));
        }
        if let Err(e) = MaintenanceWindow::parse(&text) {
            prop_assert!(described(e.to_string()));
        }
        if let Err(e) = rke2_hub::plan::channel::resolve(&text, "stable", "u") {
            prop_assert!(described(e.to_string()));
        }
        if let Err(e) = rke2_hub::plan::alerts::blocking(&text, &[], "u") {
            prop_assert!(described(e.to_string()));
        }
        if let Err(e) = rke2ops_common::certs::kubeconfig::embedded_certs(text.as_bytes()) {
            prop_assert!(described(e));
        }
        if let Err(e) = rke2_hub::pki::check_node_csr(&text, "node-1") {
            prop_assert!(described(e.to_string()));
        }
    }
}

/// A node name as `validate_node_name` accepts it: dot-separated labels of `[a-z0-9-]`
/// that start and end with a letter or digit.
fn node_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..3).prop_map(|l| l.join("."))
}

/// A P-256 CSR PEM with `cn` as its only CN, as the agent makes it.
fn csr_pem(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// A tarball with `entries` (raw names written straight into the header, so `..` and `/`
/// get through the builder) and a `bin/rke2`.
fn tarball(entries: &[(String, bool)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &[u8], dir: bool| {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        let len = name.len().min(field.len());
        field[..len].copy_from_slice(&name[..len]);
        header.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_mode(0o755);
        header.set_size(if dir { 0 } else { 2 });
        header.set_cksum();
        let body: &[u8] = if dir { b"" } else { b"x\n" };
        builder.append(&header, body).unwrap();
    };
    for (name, dir) in entries {
        add(name.as_bytes(), *dir);
    }
    add(b"bin/rke2", false);
    builder.into_inner().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn csrs_for_the_claimed_node_are_accepted_with_their_key(name in node_name()) {
        let pem = csr_pem(&name);
        let checked = rke2_hub::pki::check_node_csr(&pem, &name).unwrap();
        prop_assert_eq!(&checked.node, &name);
        prop_assert!(!checked.spki_der.is_empty());
        let other = format!("x{name}");
        prop_assert!(rke2_hub::pki::check_node_csr(&pem, &other).is_err());
        harness::csr(format!("{name}\n{pem}").as_bytes());
    }

    #[test]
    fn tarballs_stage_inside_their_folder_or_are_refused(
        entries in prop::collection::vec(
            ("(\\.\\./|/|\\./)?[a-z.]{1,3}(/(\\.\\.|[a-z.]{1,3})){0,2}/?", any::<bool>()),
            0..4,
        ),
    ) {
        let raw = tarball(&entries);
        let escapes = entries.iter().any(|(name, _)| {
            name.starts_with('/') || name.split('/').any(|part| part == "..")
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rke2.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let staged = rke2_node_agent::ops::install::stage(&path, &dir.path().join("staged"));
        if escapes {
            prop_assert!(staged.is_err(), "{entries:?} staged");
        }
        harness::tar_staging(&raw);
    }
}
