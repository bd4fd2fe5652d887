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

/// `rke2 certificate rotate --service` names (k3s `services.All`), in RKE2's order.
pub const SERVICES: [&str; 12] = [
    "api-server",
    "admin",
    "auth-proxy",
    "cloud-controller",
    "controller-manager",
    "etcd",
    "scheduler",
    "supervisor",
    "rke2-server",
    "kube-proxy",
    "kubelet",
    "rke2-controller",
];

/// Where RKE2 writes etcd snapshots, relative to its data dir
/// (`rke2 etcd-snapshot save` names them `<name>-<node>-<unix time>`).
pub const ETCD_SNAPSHOT_DIR: &str = "server/db/snapshots";

/// How to restore the etcd snapshot at `path` (on the server that holds it, after every
/// server's `rke2-server` is stopped; the other servers rejoin afterwards, as RKE2's
/// cluster-reset documentation describes).
#[must_use]
pub fn etcd_restore_command(path: &str) -> String {
    format!(
        "systemctl stop rke2-server && rke2 server --cluster-reset \
         --cluster-reset-restore-path={path}"
    )
}

/// Leaf certificate files (relative to the data dir) that belong to `service`, as k3s'
/// `FilesForServices` lists them; `None` for an unknown service. `rke2-server` owns no file
/// of its own (it regenerates the dynamic listener certificate).
#[must_use]
pub fn service_certs(service: &str) -> Option<&'static [&'static str]> {
    Some(match service {
        "admin" => &["server/tls/client-admin.crt"],
        "api-server" => &[
            "server/tls/client-kube-apiserver.crt",
            "server/tls/serving-kube-apiserver.crt",
        ],
        "controller-manager" => &[
            "server/tls/client-controller.crt",
            "server/tls/kube-controller-manager/kube-controller-manager.crt",
        ],
        "scheduler" => &[
            "server/tls/client-scheduler.crt",
            "server/tls/kube-scheduler/kube-scheduler.crt",
        ],
        "etcd" => &[
            "server/tls/etcd/client.crt",
            "server/tls/etcd/server-client.crt",
            "server/tls/etcd/peer-server-client.crt",
        ],
        "cloud-controller" => &["server/tls/client-rke2-cloud-controller.crt"],
        "rke2-controller" => &[
            "server/tls/client-rke2-controller.crt",
            "agent/client-rke2-controller.crt",
        ],
        "supervisor" => &["server/tls/client-supervisor.crt"],
        "auth-proxy" => &["server/tls/client-auth-proxy.crt"],
        "kubelet" => &["agent/client-kubelet.crt", "agent/serving-kubelet.crt"],
        "kube-proxy" => &[
            "server/tls/client-kube-proxy.crt",
            "agent/client-kube-proxy.crt",
        ],
        "rke2-server" => &[],
        _ => return None,
    })
}

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
    fn every_service_has_a_file_list_and_unknown_ones_none() {
        for service in SERVICES {
            assert!(service_certs(service).is_some(), "{service}");
        }
        assert_eq!(service_certs("certificate-authority"), None);
        assert_eq!(service_certs("kubelet").map(<[_]>::len), Some(2));
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
