//! The gate of the end-to-end tests: one always-built test that says, once, whether they run.
//!
//! End-to-end targets boot proving-ground nodes (a real systemd in namespaces) and need root,
//! so the manifests build them only with the cargo feature `e2e` (`required-features`), and
//! name them `e2e_*`. Without the feature, [`end_to_end_tests_are_built_and_can_run_here`]
//! fails once, listing them and the command that runs them, instead of every one of them
//! panicking with "proving ground unavailable". With it, the test fails once with what this
//! machine lacks (root, a tool, a writable cgroup tree), or passes.
//!
//! [`root_tests_and_e2e_targets_are_the_same_files`] keeps the manifests honest: a test or
//! bench file that calls `require_root_and_tools` is an `e2e` target, and an `e2e` target
//! calls it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The crates with end-to-end targets: folders relative to this crate's manifest.
const CRATES: &[&str] = &["ground", "sim", "."];

/// The feature that builds the end-to-end targets.
const FEATURE: &str = "e2e";

/// What a test that needs the proving ground calls first.
const ROOT_CALL: &str = "require_root_and_tools()";

/// A `[[test]]` or `[[bench]]` target of one of [`CRATES`].
#[derive(Debug)]
struct Target {
    /// The package that owns it (`-p`).
    package: String,
    /// `test` or `bench` (the `--test` / `--bench` flag).
    kind: &'static str,
    /// Its target name.
    name: String,
    /// Its source file.
    path: PathBuf,
    /// Built only with [`FEATURE`].
    e2e: bool,
}

fn crate_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The declared test and bench targets of `dir`'s manifest.
fn declared_targets(dir: &Path) -> Vec<Target> {
    let manifest_path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest_path.display()));
    let manifest: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("parse {}: {e}", manifest_path.display()));
    let package = manifest["package"]["name"]
        .as_str()
        .expect("every manifest names its package")
        .to_owned();
    let mut targets = Vec::new();
    for (kind, folder) in [("test", "tests"), ("bench", "benches")] {
        let Some(declared) = manifest.get(kind).and_then(|v| v.as_array()) else {
            continue;
        };
        for target in declared {
            let name = target["name"]
                .as_str()
                .expect("every target has a name")
                .to_owned();
            let path = target.get("path").and_then(|p| p.as_str()).map_or_else(
                || dir.join(folder).join(format!("{name}.rs")),
                |p| dir.join(p),
            );
            let e2e = target
                .get("required-features")
                .and_then(|f| f.as_array())
                .is_some_and(|f| f.iter().any(|f| f.as_str() == Some(FEATURE)));
            targets.push(Target {
                package: package.clone(),
                kind,
                name,
                path,
                e2e,
            });
        }
    }
    targets
}

fn e2e_targets() -> Vec<Target> {
    CRATES
        .iter()
        .flat_map(|rel| declared_targets(&crate_dir(rel)))
        .filter(|t| t.e2e)
        .collect()
}

/// What to tell someone whose `cargo test` did not build the end-to-end targets.
fn not_built_message(targets: &[Target]) -> String {
    let mut message = format!(
        "the end-to-end tests were not built: these {} targets boot proving-ground nodes (a real \
         systemd in namespaces) and need root, so they are behind the cargo feature `{FEATURE}`:\n",
        targets.len()
    );
    let mut packages: Vec<&str> = targets.iter().map(|t| t.package.as_str()).collect();
    packages.dedup();
    for package in packages {
        let names: Vec<String> = targets
            .iter()
            .filter(|t| t.package == package)
            .map(|t| match t.kind {
                "test" => t.name.clone(),
                kind => format!("{} ({kind})", t.name),
            })
            .collect();
        let _ = writeln!(message, "  {package}: {}", names.join(", "));
    }
    let _ = write!(
        message,
        "Run every check and test as CI does (installs the test packages first):\n  \
         sudo -E scripts/test.sh\n\
         or build the binaries they run, then run every test or one target:\n  \
         cargo build --workspace --bins --features {FEATURE}\n  \
         sudo -E cargo test --workspace --features {FEATURE}\n  \
         sudo -E cargo test -p rke2ops-tests --features {FEATURE} --test e2e_agent_dbus"
    );
    message
}

#[test]
fn end_to_end_tests_are_built_and_can_run_here() {
    let targets = e2e_targets();
    if !cfg!(feature = "e2e") {
        panic!("{}", not_built_message(&targets));
    }
    if let Err(why) = rke2ops_tests::ground::check_root_and_tools() {
        panic!(
            "the {} end-to-end targets are built but cannot run here: {why}",
            targets.len()
        );
    }
}

#[test]
fn root_tests_and_e2e_targets_are_the_same_files() {
    let e2e: Vec<PathBuf> = e2e_targets().into_iter().map(|t| t.path).collect();
    for target in &e2e {
        let text = std::fs::read_to_string(target)
            .unwrap_or_else(|e| panic!("read {}: {e}", target.display()));
        assert!(
            text.contains(ROOT_CALL),
            "{} is an `{FEATURE}` target but never calls {ROOT_CALL}: build it always",
            target.display()
        );
    }
    for rel in CRATES {
        for folder in ["tests", "benches"] {
            let Ok(entries) = std::fs::read_dir(crate_dir(rel).join(folder)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("read a test folder").path();
                // This file names the call without making it.
                if path.extension().is_none_or(|e| e != "rs")
                    || path.file_name() == Path::new(file!()).file_name()
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                if text.contains(ROOT_CALL) {
                    assert!(
                        e2e.contains(&path),
                        "{} needs root ({ROOT_CALL}) but is not declared with \
                         required-features = [\"{FEATURE}\"] in its Cargo.toml",
                        path.display()
                    );
                }
            }
        }
    }
}
