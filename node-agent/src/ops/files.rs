//! File work of the operations: finding the backup `rke2 certificate rotate` made,
//! restoring it, checking that leaves were reissued, refreshing kubeconfig copies.

use std::fs;
use std::path::{Path, PathBuf};

use rke2ops_common::atomic_file::{self, Attrs, Policy};
use rke2ops_common::certs::model::Origin;
use rke2ops_common::certs::{Inventory, ScanConfig, Scanner};
use rke2ops_common::layout::{self, BACKUP_PARENTS, service_certs};
use serde_yaml::Value;
use time::{Duration, OffsetDateTime};

/// The newest backup folder (either naming) made at or after `since` (Unix seconds),
/// relative to the data dir.
#[must_use]
pub fn backup_since(data_dir: &Path, since: i64) -> Option<String> {
    let mut found: Option<(OffsetDateTime, String)> = None;
    for parent in BACKUP_PARENTS {
        let Ok(entries) = fs::read_dir(data_dir.join(parent)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(created) = layout::backup_time(&name) else {
                continue;
            };
            // Runbook-style names have second precision too; allow the clock to tick once.
            if created.unix_timestamp() + 1 >= since
                && found.as_ref().is_none_or(|(t, _)| created > *t)
            {
                found = Some((created, format!("{parent}/{name}")));
            }
        }
    }
    found.map(|(_, path)| path)
}

/// Counts the certificate files in a backup (recursively).
#[must_use]
pub fn backup_cert_count(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                backup_cert_count(&path)
            } else {
                usize::from(
                    path.extension().is_some_and(|x| x == "crt")
                        && e.metadata().is_ok_and(|m| m.len() > 0),
                )
            }
        })
        .sum()
}

/// Copies `server/tls` (with sub-folders) and the certificates and keys of `agent/` into
/// `snapshot` (0700), preserving relative paths.
///
/// # Errors
/// A message naming the file that could not be copied.
pub fn take_snapshot(data_dir: &Path, snapshot: &Path) -> Result<usize, String> {
    fs::create_dir_all(snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    fs::set_permissions(
        snapshot,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| format!("{}: {e}", snapshot.display()))?;
    let mut copied = 0;
    let server_tls = data_dir.join("server/tls");
    if server_tls.is_dir() {
        copied += copy_tree(&server_tls, &snapshot.join("server/tls"))?;
    }
    let agent = data_dir.join("agent");
    if let Ok(entries) = fs::read_dir(&agent) {
        fs::create_dir_all(snapshot.join("agent"))
            .map_err(|e| format!("{}: {e}", snapshot.display()))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let is_pki = path.extension().is_some_and(|x| x == "crt" || x == "key");
            if is_pki && path.is_file() {
                copy_file(&path, &snapshot.join("agent").join(entry.file_name()))?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

/// Puts a [`take_snapshot`] copy back exactly and removes RKE2's regeneration triggers.
///
/// # Errors
/// A message naming the file that could not be restored.
pub fn restore_snapshot(data_dir: &Path, snapshot: &Path) -> Result<usize, String> {
    if !snapshot.is_dir() {
        return Err(format!("snapshot {} is missing", snapshot.display()));
    }
    let mut restored = 0;
    for part in ["server/tls", "agent"] {
        let from = snapshot.join(part);
        if from.is_dir() {
            restored += copy_tree(&from, &data_dir.join(part))?;
        }
    }
    remove_triggers(data_dir)?;
    Ok(restored)
}

fn remove_triggers(data_dir: &Path) -> Result<(), String> {
    for trigger in [
        data_dir.join("server/tls/dynamic-cert-regenerate"),
        data_dir.join("force-restart"),
    ] {
        match fs::remove_file(&trigger) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", trigger.display())),
        }
    }
    Ok(())
}

/// Puts the backup `backup` (relative to the data dir) back: `server/tls-*` over
/// `server/tls` (with sub-folders), `agent/tls-*` (flat) over `agent/`. Removes RKE2's
/// regeneration triggers so the next start keeps the restored certificates.
///
/// # Errors
/// A message naming the file that could not be restored.
pub fn restore_backup(data_dir: &Path, backup: &str) -> Result<usize, String> {
    let source = data_dir.join(backup);
    let target = if backup.starts_with("server/") {
        data_dir.join("server/tls")
    } else {
        data_dir.join("agent")
    };
    if !source.is_dir() {
        return Err(format!("backup {} is missing", source.display()));
    }
    let restored = copy_tree(&source, &target)?;
    remove_triggers(data_dir)?;
    Ok(restored)
}

fn copy_tree(source: &Path, target: &Path) -> Result<usize, String> {
    fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    let mut copied = 0;
    let entries = fs::read_dir(source).map_err(|e| format!("{}: {e}", source.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let from = entry.path();
        let to = target.join(entry.file_name());
        if from.is_dir() {
            copied += copy_tree(&from, &to)?;
        } else {
            copy_file(&from, &to)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Copies one certificate or key through a temporary file and a rename (no reader sees a
/// half-written PEM). A file that exists keeps its mode and owner (RKE2 may run parts of
/// itself as other users, and a key must not become readable); a new one takes the source's,
/// so a snapshot carries the owner back to where it came from.
fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    let source = fs::metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
    atomic_file::replace_with_copy(from, to, Policy::KeepExisting(Attrs::of(&source)))
        .map_err(|e| format!("{} -> {e}", from.display()))
}

/// Scans the node's tree.
#[must_use]
pub fn scan(data_dir: &Path, admin_kubeconfig: &Path) -> Inventory {
    Scanner::new(ScanConfig::new(
        data_dir.to_path_buf(),
        Some(admin_kubeconfig.to_path_buf()),
        &[],
    ))
    .scan()
}

/// The leaf files a rotation of `services` (empty = all) must have reissued, among those
/// that exist in `inventory`.
#[must_use]
pub fn rotated_leaves(inventory: &Inventory, services: &[String]) -> Vec<String> {
    let mut leaves: Vec<String> = inventory
        .certificates
        .iter()
        .filter(|c| c.index == 0 && c.is_leaf() && c.origin == Origin::File)
        .map(|c| c.path.clone())
        .filter(|path| {
            services.is_empty()
                || services
                    .iter()
                    .any(|s| service_certs(s).is_some_and(|files| files.contains(&path.as_str())))
        })
        .collect();
    leaves.dedup();
    leaves
}

/// Pure: are `leaves` fresh in `inventory` (issued since `since` minus RKE2's one-hour
/// back-dating, valid ~365 days), and is every file usable? Returns the problems.
#[must_use]
pub fn freshness_problems(
    inventory: &Inventory,
    leaves: &[String],
    since: OffsetDateTime,
) -> Vec<String> {
    let mut problems: Vec<String> = inventory
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.reason))
        .collect();
    for leaf in leaves {
        let Some(cert) = inventory
            .certificates
            .iter()
            .find(|c| &c.path == leaf && c.index == 0)
        else {
            problems.push(format!("{leaf}: missing after rotation"));
            continue;
        };
        if cert.not_before < since - Duration::hours(2) {
            problems.push(format!(
                "{leaf}: not reissued (NotBefore {})",
                cert.not_before
            ));
        } else if cert.not_after - cert.not_before < Duration::days(300) {
            problems.push(format!(
                "{leaf}: reissued for only {} days",
                (cert.not_after - cert.not_before).whole_days()
            ));
        }
    }
    problems
}

/// Copies the credentials of `admin` (RKE2's `rke2.yaml`) into the kubeconfig `copy`,
/// keeping the copy's own `server:` and everything else in it.
///
/// # Errors
/// A message naming the file and the missing field.
pub fn refresh_kubeconfig(admin: &Path, copy: &Path) -> Result<(), String> {
    let read = |path: &Path| -> Result<Value, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let source = read(admin)?;
    let mut target = read(copy)?;
    let first = |kind: &str, inner: &str| -> Option<Value> {
        source
            .get(kind)?
            .as_sequence()?
            .first()?
            .get(inner)
            .cloned()
    };
    let ca = first("clusters", "cluster")
        .and_then(|c| c.get("certificate-authority-data").cloned())
        .ok_or_else(|| format!("{}: no certificate-authority-data", admin.display()))?;
    let user = first("users", "user").ok_or_else(|| format!("{}: no user", admin.display()))?;
    for field in ["client-certificate-data", "client-key-data"] {
        if user.get(field).is_none() {
            return Err(format!("{}: no {field}", admin.display()));
        }
    }
    if let Some(clusters) = target.get_mut("clusters").and_then(Value::as_sequence_mut) {
        for cluster in clusters
            .iter_mut()
            .filter_map(|c| c.get_mut("cluster"))
            .filter_map(Value::as_mapping_mut)
        {
            cluster.insert("certificate-authority-data".into(), ca.clone());
        }
    }
    if let Some(users) = target.get_mut("users").and_then(Value::as_sequence_mut) {
        for entry in users
            .iter_mut()
            .filter_map(|u| u.get_mut("user"))
            .filter_map(Value::as_mapping_mut)
        {
            for field in ["client-certificate-data", "client-key-data"] {
                if let Some(value) = user.get(field) {
                    entry.insert(field.into(), value.clone());
                }
            }
        }
    }
    let text = serde_yaml::to_string(&target).map_err(|e| format!("{}: {e}", copy.display()))?;
    // The copy keeps its mode and owner: it is someone's credentials (0600, theirs).
    atomic_file::replace_file(
        copy,
        text.as_bytes(),
        Policy::KeepExisting(Attrs::mode(0o600)),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Paths for reports.
#[must_use]
pub fn display(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: TkVXQ0E=
    server: https://127.0.0.1:6443
  name: default
users:
- name: default
  user:
    client-certificate-data: TkVXQ0VSVA==
    client-key-data: TkVXS0VZ
";
    const COPY: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: T0xE
    server: https://lb.example:6443
  name: prod
users:
- name: admin
  user:
    client-certificate-data: T0xE
    client-key-data: T0xE
";

    #[test]
    fn kubeconfig_copy_gets_new_credentials_and_keeps_its_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("rke2.yaml");
        let copy = dir.path().join("copy.yaml");
        fs::write(&admin, ADMIN).expect("write");
        fs::write(&copy, COPY).expect("write");
        refresh_kubeconfig(&admin, &copy).expect("refresh");
        let out = fs::read_to_string(&copy).expect("read");
        assert!(out.contains("server: https://lb.example:6443"), "{out}");
        assert!(out.contains("name: prod"), "{out}");
        assert!(
            out.contains("TkVXQ0E=") && out.contains("TkVXQ0VSVA==") && out.contains("TkVXS0VZ"),
            "{out}"
        );
        assert!(!out.contains("T0xE"), "{out}");
    }

    fn is_root() -> bool {
        fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
    }

    fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::metadata(path).expect("meta");
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    }

    #[test]
    fn a_refreshed_kubeconfig_copy_stays_0600_and_keeps_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("rke2.yaml");
        let copy = dir.path().join("copy.yaml");
        fs::write(&admin, ADMIN).expect("write");
        fs::write(&copy, COPY).expect("write");
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            std::os::unix::fs::chown(&copy, Some(1234), Some(1234)).expect("chown");
        }
        let before = mode_and_owner(&copy);
        refresh_kubeconfig(&admin, &copy).expect("refresh");
        assert_eq!(mode_and_owner(&copy), before);
        assert_eq!(before.0, 0o600);
    }

    #[test]
    fn a_restored_certificate_keeps_its_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let cert = data.join("server/tls/etcd/peer-server-client.key");
        fs::create_dir_all(cert.parent().expect("parent")).expect("mkdir");
        fs::write(&cert, "OLD KEY").expect("write");
        fs::set_permissions(&cert, fs::Permissions::from_mode(0o640)).expect("chmod");
        if is_root() {
            std::os::unix::fs::chown(&cert, Some(1234), Some(1234)).expect("chown");
        }
        let before = mode_and_owner(&cert);
        let snapshot = dir.path().join("snapshot");
        assert_eq!(take_snapshot(&data, &snapshot).expect("snapshot"), 1);
        fs::write(&cert, "NEW KEY").expect("rotated");
        assert_eq!(restore_snapshot(&data, &snapshot).expect("restore"), 1);
        assert_eq!(fs::read_to_string(&cert).expect("read"), "OLD KEY");
        assert_eq!(mode_and_owner(&cert), before, "restored in place");
        // Gone entirely: the snapshot's copy carries the owner back.
        fs::remove_file(&cert).expect("rm");
        restore_snapshot(&data, &snapshot).expect("restore");
        assert_eq!(mode_and_owner(&cert), before, "restored as a new file");
    }

    #[test]
    fn missing_admin_credentials_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("rke2.yaml");
        let copy = dir.path().join("copy.yaml");
        fs::write(&admin, "clusters: []\n").expect("write");
        fs::write(&copy, COPY).expect("write");
        let err = refresh_kubeconfig(&admin, &copy).expect_err("no creds");
        assert!(err.contains("rke2.yaml"), "{err}");
    }

    #[test]
    fn backups_are_found_by_either_name_and_restored_with_triggers_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        fs::create_dir_all(data.join("server/tls/etcd")).expect("mkdir");
        fs::create_dir_all(data.join("server/tls-1700000000/etcd")).expect("mkdir");
        fs::create_dir_all(data.join("server/tls-2030-01-02T03-04-05")).expect("mkdir");
        fs::write(data.join("server/tls-1700000000/etcd/client.crt"), "OLD").expect("write");
        assert_eq!(
            backup_since(data, 1_600_000_000).as_deref(),
            Some("server/tls-2030-01-02T03-04-05")
        );
        assert_eq!(
            backup_since(data, 1_890_000_000).as_deref(),
            Some("server/tls-2030-01-02T03-04-05")
        );
        assert_eq!(backup_since(data, 2_000_000_000), None);
        fs::write(data.join("server/tls/dynamic-cert-regenerate"), "").expect("write");
        fs::write(data.join("force-restart"), "").expect("write");
        assert_eq!(restore_backup(data, "server/tls-1700000000"), Ok(1));
        assert_eq!(
            fs::read_to_string(data.join("server/tls/etcd/client.crt")).expect("read"),
            "OLD"
        );
        assert!(!data.join("server/tls/dynamic-cert-regenerate").exists());
        assert!(!data.join("force-restart").exists());
        assert_eq!(backup_cert_count(&data.join("server/tls-1700000000")), 1);
    }
}
