//! Static checks of every shipped unit file in `systemd/`: `systemd-analyze verify` must be
//! silent, and `systemd-analyze security --offline=true` must score at most the file's limit.
//!
//! `verify` resolves `ExecStart=` binaries, and the shipped files point at
//! `/usr/local/bin/...`, which does not exist on a build machine. Rather than rewriting the
//! file, each unit is verified unchanged with `--root=` on a throw-away tree that holds the
//! unit in `etc/systemd/system/`, the freshly built workspace binary at the path each `Exec*=`
//! names (hard-linked from `target/debug/`), and the host's own standard targets in
//! `usr/lib/systemd/system/` (so dependencies such as `network-online.target` resolve against
//! the real distribution files, not the proving ground's stand-ins).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rke2ops_tests::ground::built_binary;

/// Highest acceptable `systemd-analyze security` exposure per shipped service. Every service
/// file in `systemd/` must have an entry, so a new unit cannot ship unmeasured.
const EXPOSURE_LIMITS: &[(&str, f64)] =
    &[("rke2-node-agent.service", 3.0), ("rke2-hub.service", 2.0)];

/// Prefixes systemd allows in front of an `Exec*=` path (`-`, `@`, `:`, `+`, `!`).
const EXEC_PREFIXES: &[char] = &['-', '@', ':', '+', '!'];

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn shipped_units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = fs::read_dir(unit_dir())
        .expect("systemd/ exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["service", "socket", "timer", "target", "path"].contains(&e))
        })
        .collect();
    units.sort();
    assert!(
        !units.is_empty(),
        "no unit files in {}",
        unit_dir().display()
    );
    units
}

fn require_systemd_analyze() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: run scripts/install-test-deps.sh"
    );
}

/// Absolute program paths of the unit's `Exec*=` lines.
fn exec_paths(unit: &str) -> Vec<PathBuf> {
    unit.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| l.split_once('='))
        .filter_map(|(_, cmd)| cmd.split_whitespace().next())
        .map(|program| PathBuf::from(program.trim_start_matches(EXEC_PREFIXES)))
        .filter(|p| p.is_absolute())
        .collect()
}

/// The `--root=` tree for verifying `unit_file` unchanged (see the module docs).
fn verify_root(unit_file: &Path) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("unit-verify-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let units = root.path().join("usr/lib/systemd/system");
    fs::create_dir_all(&units).expect("mkdir");
    for entry in fs::read_dir("/usr/lib/systemd/system").expect("the host has systemd's units") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|e| e == "target" || e == "slice")
            && path.is_file()
        {
            fs::copy(&path, units.join(path.file_name().expect("name"))).expect("copy target");
        }
    }
    let etc = root.path().join("etc/systemd/system");
    fs::create_dir_all(&etc).expect("mkdir");
    let name = unit_file.file_name().expect("unit has a name");
    fs::copy(unit_file, etc.join(name)).expect("copy unit");

    let contents = fs::read_to_string(unit_file).expect("read unit");
    for program in exec_paths(&contents) {
        let built = built_binary(&program.file_name().expect("program name").to_string_lossy());
        let target = root
            .path()
            .join(program.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        if fs::hard_link(&built, &target).is_err() {
            fs::copy(&built, &target).expect("copy binary");
        }
    }
    root
}

fn exposure(unit_file: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_file)
        .output()
        .expect("run systemd-analyze security");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no exposure score for {}:\n{text}", unit_file.display()));
    let score = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot parse the exposure in {line:?}"));
    eprintln!("{}: exposure {score}", unit_file.display());
    score
}

#[test]
fn every_unit_file_verifies_without_a_single_warning() {
    require_systemd_analyze();
    for unit_file in shipped_units() {
        let root = verify_root(&unit_file);
        let name = unit_file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(&name)
            .output()
            .expect("run systemd-analyze verify");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // verify exits 0 even for unknown keys and unparsable values; silence is the bar.
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {name} ({}):\n{said}",
            out.status
        );
    }
}

#[test]
fn verify_catches_what_the_check_is_meant_to_catch() {
    // Guards the check itself: a typo in a key must fail it, as must a missing binary.
    require_systemd_analyze();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let agent = unit_dir().join("rke2-node-agent.service");
    let broken = dir.path().join("rke2-node-agent.service");
    let text = fs::read_to_string(&agent).expect("read unit");
    fs::write(
        &broken,
        text.replace("Restart=on-failure", "Restart=on-failur"),
    )
    .expect("write");
    let root = verify_root(&broken);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("rke2-node-agent.service")
        .output()
        .expect("run verify");
    assert!(
        !out.stderr.is_empty(),
        "a bad Restart= value went unnoticed"
    );

    fs::remove_file(root.path().join("usr/local/bin/rke2-node-agent")).expect("rm binary");
    fs::write(
        root.path()
            .join("etc/systemd/system/rke2-node-agent.service"),
        &text,
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("rke2-node-agent.service")
        .output()
        .expect("run verify");
    assert!(
        !out.status.success(),
        "a missing ExecStart binary went unnoticed"
    );
}

#[test]
fn every_service_stays_within_its_exposure_limit() {
    require_systemd_analyze();
    for unit_file in shipped_units() {
        if unit_file.extension().is_none_or(|e| e != "service") {
            continue;
        }
        let name = unit_file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let limit = EXPOSURE_LIMITS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, limit)| *limit)
            .unwrap_or_else(|| panic!("{name} has no exposure limit: add it to EXPOSURE_LIMITS"));
        let score = exposure(&unit_file);
        assert!(
            score <= limit,
            "{name}: exposure {score} is above its limit {limit}"
        );
    }
}
