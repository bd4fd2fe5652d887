//! Before a server's upgrade: an etcd snapshot, so "starting an upgrade with a degraded etcd
//! risks total data loss" has a way back (and a rollback across a minor version has the
//! snapshot taken on the older version that it needs).
//!
//! `rke2 etcd-snapshot save --name rke2ops-<operation id>` writes
//! `<data-dir>/server/db/snapshots/<name>-<node>-<unix time>`; the operation id carries the
//! plan and the node (`plan3-server-1-1`). The step finds the file it made (the newest with
//! that prefix), checks it is not empty, and its detail (`saved <path> (<n> bytes)`) names
//! the file, which the hub keeps with the plan's node and shows with its restore command. Nothing on the node changes, so a
//! failed snapshot fails the node before the upgrade touches it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::journal::OpRecord;
use super::setup::NodeSetup;

/// Where RKE2 writes snapshots, relative to its data dir.
pub const SNAPSHOT_DIR: &str = rke2ops_common::layout::ETCD_SNAPSHOT_DIR;
/// How long `rke2 etcd-snapshot save` may take (a large database on a slow disk).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The snapshot name for operation `id`.
#[must_use]
pub fn name_for(id: &str) -> String {
    format!("rke2ops-{id}")
}

/// The newest non-directory entry of `entries` ((file name, size, modified unix seconds))
/// named `<name>-...`: the file `etcd-snapshot save --name name` wrote. Pure.
#[must_use]
pub fn pick<'a>(entries: &'a [(String, u64, i64)], name: &str) -> Option<&'a (String, u64, i64)> {
    let prefix = format!("{name}-");
    entries
        .iter()
        .filter(|(file, _, _)| file.starts_with(&prefix))
        .max_by_key(|(file, _, modified)| (*modified, file.clone()))
}

fn list(dir: &Path) -> Result<Vec<(String, u64, i64)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            meta.len(),
            modified,
        ));
    }
    Ok(out)
}

/// Takes the snapshot; its detail names the file, its size and the restore command.
///
/// # Errors
/// The command failing (its last output line), timing out, or leaving no file or an empty one.
pub async fn save(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let name = name_for(&record.id);
    let command = tokio::process::Command::new(&setup.rke2_bin)
        .args(["etcd-snapshot", "save", "--name", &name, "--data-dir"])
        .arg(&setup.data_dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SAVE_TIMEOUT, command)
        .await
        .map_err(|_| format!("rke2 etcd-snapshot save: no answer within {SAVE_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run {}: {e}", setup.rke2_bin.display()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "rke2 etcd-snapshot save failed ({}): {}",
            output.status,
            rke2ops_common::text::quoted(last)
        ));
    }
    let dir = setup.data_dir.join(SNAPSHOT_DIR);
    let entries = list(&dir)?;
    let (file, size, _) = pick(&entries, &name)
        .ok_or_else(|| format!("no snapshot named {name}-* in {}", dir.display()))?;
    let path: PathBuf = dir.join(file);
    if *size == 0 {
        return Err(format!("the snapshot {} is empty", path.display()));
    }
    Ok(format!("saved {} ({size} bytes)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_file_with_the_operations_name_is_the_snapshot() {
        let entries = vec![
            ("rke2ops-plan1-s1-1-s1-100".to_owned(), 10, 100),
            ("rke2ops-plan1-s1-1-s1-200".to_owned(), 20, 200),
            ("rke2ops-plan1-s1-10-s1-300".to_owned(), 30, 300),
            ("etcd-snapshot-s1-400".to_owned(), 40, 400),
        ];
        let name = name_for("plan1-s1-1");
        assert_eq!(name, "rke2ops-plan1-s1-1");
        let found = pick(&entries, &name).expect("found");
        assert_eq!(
            found.0, "rke2ops-plan1-s1-1-s1-200",
            "attempt 10 is another operation"
        );
        assert!(pick(&entries, "rke2ops-plan2-s1-1").is_none());
    }
}
