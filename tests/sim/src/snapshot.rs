//! `rke2 etcd-snapshot save [--name N]`, backed by the server's real etcd: Debian's `etcdctl
//! snapshot save` against the local member (`https://127.0.0.1:2379`) with RKE2's etcd client
//! credentials, written where RKE2 writes snapshots, named as RKE2 names them
//! (`<name>-<node-name>-<unix time>`, k3s `pkg/etcd/snapshot.go`).
//!
//! Differences (tests/SIMULATOR.md): no S3, no compression, no `.metadata` ConfigMap; the
//! fault switch `<data-dir>/.sim-faults/etcd-snapshot-fails` makes it fail the way a member
//! without quorum does.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::server::etcd::ETCDCTL;

/// RKE2's snapshot folder, relative to the data dir.
pub const SNAPSHOT_DIR: &str = "server/db/snapshots";
/// RKE2's default snapshot name.
pub const DEFAULT_NAME: &str = "etcd-snapshot";
/// The fault switch (a file under `<data-dir>/.sim-faults/`): every save fails while it exists.
pub const FAIL_SWITCH: &str = "etcd-snapshot-fails";

/// The file a snapshot named `name` of `node` taken at `unix` goes to. Pure.
#[must_use]
pub fn file_name(name: &str, node: &str, unix: i64) -> String {
    format!("{name}-{node}-{unix}")
}

/// Saves a snapshot; the file written.
///
/// # Errors
/// The fault switch, etcdctl failing (its message), or the folder not being writable.
pub fn save(data_dir: &Path, name: &str, node: &str, unix: i64) -> Result<PathBuf, String> {
    if data_dir
        .join(super::faults::FAULTS_DIR)
        .join(FAIL_SWITCH)
        .exists()
    {
        return Err("etcdserver: request timed out (simulated: etcd-snapshot-fails)".to_owned());
    }
    let dir = data_dir.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(file_name(name, node, unix));
    let tls = data_dir.join("server/tls/etcd");
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints=https://127.0.0.1:2379")
        .arg(format!("--cacert={}", tls.join("server-ca.crt").display()))
        .arg(format!(
            "--cert={}",
            tls.join("server-client.crt").display()
        ))
        .arg(format!("--key={}", tls.join("server-client.key").display()))
        .arg("--command-timeout=60s")
        .args(["snapshot", "save"])
        .arg(&path)
        .output()
        .map_err(|e| format!("{ETCDCTL}: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&path);
        let said = String::from_utf8_lossy(&out.stderr);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("etcdctl failed");
        return Err(last.to_owned());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_named_as_rke2_names_them() {
        assert_eq!(
            file_name("rke2ops-plan1-server-1-1", "server-1", 1_765_000_000),
            "rke2ops-plan1-server-1-1-server-1-1765000000"
        );
    }

    #[test]
    fn the_fault_switch_fails_the_save_before_etcd_is_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = dir.path().join(super::super::faults::FAULTS_DIR);
        std::fs::create_dir_all(&faults).expect("mkdir");
        std::fs::write(faults.join(FAIL_SWITCH), "").expect("switch");
        let err = save(dir.path(), DEFAULT_NAME, "s1", 1).expect_err("fails");
        assert!(err.contains("request timed out"), "{err}");
        assert!(!dir.path().join(SNAPSHOT_DIR).exists());
    }
}
