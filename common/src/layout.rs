//! Where RKE2 keeps its files (`reference/rke2.md`, "Data layout"), and how rotation backups
//! are named.

use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};

/// RKE2's default data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/rke2";
/// The admin kubeconfig RKE2 writes on servers.
pub const DEFAULT_ADMIN_KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";
/// Node options (`node-ip`, `tls-san`, ...).
pub const DEFAULT_NODE_CONFIG: &str = "/etc/rancher/rke2/config.yaml";

/// Folders (relative to the data dir) holding live certificates. Not recursive: anything
/// else below `server/tls` (e.g. `temporary-certs/`) is not RKE2-managed PKI.
pub const CERT_DIRS: [&str; 5] = [
    "server/tls",
    "server/tls/etcd",
    "server/tls/kube-scheduler",
    "server/tls/kube-controller-manager",
    "agent",
];

/// Folders (relative to the data dir) where `rke2 certificate rotate` leaves `tls-*` backups.
pub const BACKUP_PARENTS: [&str; 2] = ["server", "agent"];

/// File extensions of certificate files.
pub const CERT_EXTENSIONS: [&str; 2] = ["crt", "pem"];

/// When a backup folder named `name` was made, or `None` if `name` is not a backup.
///
/// RKE2's source names backups `tls-<unix seconds>`; an operations runbook says
/// `tls-YYYY-MM-DDTHH-MM-SS` (UTC). Both are recognised (`reference/rke2.md`, "Runbook vs.
/// source").
#[must_use]
pub fn backup_time(name: &str) -> Option<OffsetDateTime> {
    let stamp = name.strip_prefix("tls-")?;
    if !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = stamp.parse().ok()?;
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    let format = format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]");
    PrimitiveDateTime::parse(stamp, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn unix_backup_names_parse() {
        assert_eq!(
            backup_time("tls-1732400000"),
            Some(datetime!(2024-11-23 22:13:20 UTC))
        );
    }

    #[test]
    fn runbook_backup_names_parse() {
        assert_eq!(
            backup_time("tls-2025-01-02T03-04-05"),
            Some(datetime!(2025-01-02 03:04:05 UTC))
        );
    }

    #[test]
    fn other_names_are_not_backups() {
        for name in [
            "tls",
            "tls-",
            "tls-abc",
            "etcd",
            "tls-2025-13-02T03-04-05",
            "xtls-1",
        ] {
            assert_eq!(backup_time(name), None, "{name}");
        }
    }
}
