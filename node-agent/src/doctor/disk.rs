//! Free space where the node must write: the upgrade staging folder and etcd's data dir.

use rke2ops_common::doctor::{Code, Finding, Severity};

use super::Facts;

const MIB: u64 = 1024 * 1024;

/// A warning for each folder below its threshold.
#[must_use]
pub fn check(facts: &Facts) -> Vec<Finding> {
    facts
        .disks
        .iter()
        .filter(|d| d.free < d.min_free)
        .map(|d| {
            Finding::new(
                Code::DiskLow,
                Severity::Warning,
                &facts.node,
                d.path.display().to_string(),
                format!(
                    "free space on the file system of {} (df -h {}; old etcd snapshots: \
                     rke2 etcd-snapshot prune; images: crictl rmi --prune)",
                    d.path.display(),
                    d.path.display()
                ),
            )
            .with("purpose", d.purpose)
            .with("free_mib", (d.free / MIB).to_string())
            .with("min_free_mib", (d.min_free / MIB).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::DiskFacts;
    use super::super::test_support::facts_with;
    use super::*;

    #[test]
    fn only_folders_below_their_threshold_warn() {
        let mut facts = facts_with(vec![]);
        facts.disks = vec![
            DiskFacts {
                purpose: "upgrade staging",
                path: "/var/lib/rke2-ops".into(),
                free: 100 * MIB,
                min_free: 2048 * MIB,
            },
            DiskFacts {
                purpose: "etcd data",
                path: "/var/lib/rancher/rke2/server/db".into(),
                free: 5000 * MIB,
                min_free: 1024 * MIB,
            },
        ];
        let findings = check(&facts);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].object, "/var/lib/rke2-ops");
        assert_eq!(findings[0].evidence[1].value, "100");
    }
}
