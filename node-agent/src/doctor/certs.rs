//! Certificate checks: leaves expired or not yet valid, the node's renewal deadline, CAs
//! close to expiry, and files that are empty or not PEM (with the backup to restore).

use rke2ops_common::certs::CertEntry;
use rke2ops_common::certs::model::Origin;
use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::layout::{SERVICES, service_certs};
use rke2ops_common::renewal;
use time::Duration;

use super::{BrokenFile, Facts};

/// CAs are never renewed automatically; RKE2's monitor warns a year ahead.
pub const CA_WARN_DAYS: i64 = 365;

/// The `rotate --service` name that owns `path`, if any.
#[must_use]
pub fn service_of(path: &str) -> Option<&'static str> {
    SERVICES
        .into_iter()
        .find(|s| service_certs(s).is_some_and(|files| files.contains(&path)))
}

/// `systemctl stop U && rke2 certificate rotate [--service S] && systemctl start U`.
fn rotate_command(unit: &str, path: &str) -> String {
    let service = service_of(path).map_or(String::new(), |s| format!(" --service {s}"));
    format!("systemctl stop {unit} && rke2 certificate rotate{service} && systemctl start {unit}")
}

fn time_str(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The first certificate of each TLS-tree file (chain entries repeat the CAs).
fn file_heads(facts: &Facts) -> impl Iterator<Item = &CertEntry> {
    facts
        .inventory
        .certificates
        .iter()
        .filter(|c| c.index == 0 && c.origin == Origin::File)
}

/// Expired / not-yet-valid leaves, the renewal deadline, CAs close to expiry.
#[must_use]
pub fn expiry(facts: &Facts, warn_days: u32) -> Vec<Finding> {
    let now = facts.now;
    let unit = facts.unit_name();
    let mut findings = Vec::new();
    for cert in file_heads(facts) {
        let object = cert.path.clone();
        if cert.is_ca {
            let left = cert.not_after - now;
            if left < Duration::days(CA_WARN_DAYS) {
                let severity = if left.is_negative() {
                    Severity::Blocker
                } else {
                    Severity::Warning
                };
                findings.push(
                    Finding::new(
                        Code::CaExpiring,
                        severity,
                        &facts.node,
                        object,
                        format!(
                            "rke2 certificate rotate-ca --path <folder with new CAs> (then restart \
                             {unit} on every node); RKE2 never renews CAs by itself"
                        ),
                    )
                    .with("subject", &cert.subject_cn)
                    .with("not_after", time_str(cert.not_after))
                    .with("days_left", left.whole_days().to_string()),
                );
            }
            continue;
        }
        if now < cert.not_before {
            findings.push(
                Finding::new(
                    Code::CertNotYetValid,
                    Severity::Blocker,
                    &facts.node,
                    object,
                    format!(
                        "timedatectl status (fix the clock), then {}",
                        rotate_command(unit, &cert.path)
                    ),
                )
                .with("subject", &cert.subject_cn)
                .with("not_before", time_str(cert.not_before))
                .with("now", time_str(now)),
            );
        } else if now > cert.not_after {
            findings.push(
                Finding::new(
                    Code::CertExpired,
                    Severity::Blocker,
                    &facts.node,
                    object,
                    rotate_command(unit, &cert.path),
                )
                .with("subject", &cert.subject_cn)
                .with("not_after", time_str(cert.not_after)),
            );
        }
    }
    findings.extend(deadline(facts, warn_days));
    findings
}

/// The node's renewal deadline (earliest leaf NotAfter, `common::renewal`): passed is a
/// blocker, within `warn_days` a warning.
fn deadline(facts: &Facts, warn_days: u32) -> Option<Finding> {
    let now = facts.now;
    let leaves: Vec<&CertEntry> = file_heads(facts).filter(|c| c.is_leaf()).collect();
    let state = renewal::assess(
        leaves.iter().map(|c| c.not_after),
        now,
        renewal::window(renewal::RENEW_WINDOW_DAYS),
        None,
    );
    let deadline = state.deadline?;
    let earliest = leaves.iter().find(|c| c.not_after == deadline)?;
    let unit = facts.unit_name();
    let left = deadline - now;
    let (code, severity) = if left.is_negative() {
        (Code::RenewalDeadlinePassed, Severity::Blocker)
    } else if left < renewal::window(warn_days) {
        (Code::RenewalDeadlineNear, Severity::Warning)
    } else {
        return None;
    };
    // Inside RKE2's window a restart renews; further out only a rotation does.
    let fix = if state.in_window {
        format!("systemctl restart {unit} (renews every leaf within 120 days of expiry)")
    } else {
        format!("systemctl stop {unit} && rke2 certificate rotate && systemctl start {unit}")
    };
    Some(
        Finding::new(code, severity, &facts.node, &earliest.path, fix)
            .with("deadline", time_str(deadline))
            .with("days_left", left.whole_days().to_string())
            .with("window_open", state.in_window.to_string()),
    )
}

/// `failed to find any PEM data`: files that are empty or not PEM, each with the newest
/// backup holding a valid copy and the command that restores it.
#[must_use]
pub fn broken_files(facts: &Facts) -> Vec<Finding> {
    let unit = facts.unit_name();
    facts
        .broken
        .iter()
        .map(|file| {
            let finding = Finding::new(
                Code::PemEmptyOrCorrupt,
                Severity::Blocker,
                &facts.node,
                &file.path,
                String::new(),
            )
            .with("reason", &file.reason);
            match newest_valid_copy(file) {
                Some(copy) => {
                    let mut f = finding.with("backup", &copy.backup);
                    let mut copies =
                        format!("cp -a {} {}", facts.abs(&copy.path), facts.abs(&file.path));
                    if let Some((from, to)) = &copy.partner {
                        copies = format!("{copies} && cp -a {} {}", facts.abs(from), facts.abs(to));
                    }
                    f.fix = format!("systemctl stop {unit} && {copies} && systemctl start {unit}");
                    f
                }
                None => {
                    let mut f = finding.with("backup", "none with a valid copy");
                    // A leaf's certificate or key is regenerated by rotating its service;
                    // a CA (or a file RKE2 does not reissue) only comes back from a copy.
                    let cert_path = file
                        .path
                        .strip_suffix(".key")
                        .map_or_else(|| file.path.clone(), |stem| format!("{stem}.crt"));
                    f.fix = if service_of(&cert_path).is_some() {
                        rotate_command(unit, &cert_path)
                    } else {
                        format!(
                            "no backup holds a valid copy: restore {} from another copy (CAs are \
                             not regenerated; replacing them is rke2 certificate rotate-ca)",
                            facts.abs(&file.path)
                        )
                    };
                    f
                }
            }
        })
        .collect()
}

/// The other half of a certificate/key pair: `x.key` for `x.crt` and the reverse.
#[must_use]
pub fn partner_of(path: &str) -> Option<String> {
    if let Some(stem) = path.strip_suffix(".crt") {
        Some(format!("{stem}.key"))
    } else {
        path.strip_suffix(".key").map(|stem| format!("{stem}.crt"))
    }
}

/// The newest backup copy that parses.
#[must_use]
pub fn newest_valid_copy(file: &BrokenFile) -> Option<&super::BackupCopy> {
    file.copies
        .iter()
        .filter(|c| c.valid)
        .max_by_key(|c| c.created)
}

/// Where `path` (relative to the data dir) sits inside the backup `backup`: `server/tls-N`
/// mirrors `server/tls`; `agent/tls-N` holds agent files flat by base name.
#[must_use]
pub fn path_in_backup(path: &str, backup: &str) -> Option<String> {
    if backup.starts_with("server/") {
        let rest = path.strip_prefix("server/tls/")?;
        Some(format!("{backup}/{rest}"))
    } else {
        let rest = path.strip_prefix("agent/")?;
        let base = rest.rsplit('/').next()?;
        Some(format!("{backup}/{base}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{facts_with, leaf_entry};
    use super::super::{BackupCopy, BrokenFile};
    use super::*;
    use time::macros::datetime;

    #[test]
    fn expired_and_not_yet_valid_leaves_are_blockers_with_rotate_commands() {
        let mut facts = facts_with(vec![
            leaf_entry("server/tls/client-admin.crt", -400, -1),
            leaf_entry("agent/serving-kubelet.crt", 2, 365),
            leaf_entry("server/tls/client-scheduler.crt", -10, 355),
        ]);
        facts.broken.clear();
        let findings = expiry(&facts, 120);
        let expired = findings
            .iter()
            .find(|f| f.code == Code::CertExpired)
            .expect("expired");
        assert_eq!(expired.severity, Severity::Blocker);
        assert_eq!(expired.object, "server/tls/client-admin.crt");
        assert_eq!(
            expired.fix,
            "systemctl stop rke2-server && rke2 certificate rotate --service admin && systemctl start rke2-server"
        );
        let nyv = findings
            .iter()
            .find(|f| f.code == Code::CertNotYetValid)
            .expect("not yet valid");
        assert_eq!(nyv.object, "agent/serving-kubelet.crt");
        assert!(nyv.fix.contains("--service kubelet"));
        // The deadline is the expired leaf's NotAfter: passed.
        let passed = findings
            .iter()
            .find(|f| f.code == Code::RenewalDeadlinePassed)
            .expect("deadline");
        assert_eq!(passed.severity, Severity::Blocker);
        assert!(
            !findings
                .iter()
                .any(|f| f.object == "server/tls/client-scheduler.crt")
        );
    }

    #[test]
    fn deadline_within_warn_days_warns_and_restart_is_the_fix_inside_the_window() {
        let facts = facts_with(vec![leaf_entry("server/tls/client-admin.crt", -300, 65)]);
        let findings = expiry(&facts, 120);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].code, Code::RenewalDeadlineNear);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(findings[0].fix.starts_with("systemctl restart rke2-server"));
        // A wider warning window than RKE2's: a restart would not renew yet.
        let facts = facts_with(vec![leaf_entry("server/tls/client-admin.crt", -100, 150)]);
        let findings = expiry(&facts, 200);
        assert_eq!(findings[0].code, Code::RenewalDeadlineNear);
        assert!(findings[0].fix.contains("rke2 certificate rotate"));
        assert!(expiry(&facts, 120).is_empty());
    }

    #[test]
    fn ca_within_a_year_warns_and_expired_ca_blocks() {
        let mut near = leaf_entry("server/tls/client-ca.crt", -3400, 200);
        near.is_ca = true;
        let mut gone = leaf_entry("server/tls/server-ca.crt", -3700, -2);
        gone.is_ca = true;
        let mut fine = leaf_entry("server/tls/etcd/peer-ca.crt", -10, 3640);
        fine.is_ca = true;
        let findings = expiry(&facts_with(vec![near, gone, fine]), 120);
        let sev = |o: &str| {
            findings
                .iter()
                .find(|f| f.object == o)
                .map(|f| (f.code, f.severity))
        };
        assert_eq!(
            sev("server/tls/client-ca.crt"),
            Some((Code::CaExpiring, Severity::Warning))
        );
        assert_eq!(
            sev("server/tls/server-ca.crt"),
            Some((Code::CaExpiring, Severity::Blocker))
        );
        assert_eq!(sev("server/tls/etcd/peer-ca.crt"), None);
    }

    fn copy(backup: &str, created: time::OffsetDateTime, valid: bool) -> BackupCopy {
        BackupCopy {
            backup: backup.to_owned(),
            created,
            path: format!("{backup}/client-admin.crt"),
            valid,
            partner: None,
        }
    }

    #[test]
    fn empty_pem_names_the_newest_backup_with_a_valid_copy_and_the_restore_command() {
        let mut facts = facts_with(vec![]);
        facts.broken = vec![BrokenFile {
            path: "server/tls/client-admin.crt".to_owned(),
            reason: "file is empty".to_owned(),
            copies: vec![
                copy(
                    "server/tls-1700000000",
                    datetime!(2023-11-14 22:13:20 UTC),
                    true,
                ),
                // Newer, but its copy is broken too (the failed rotation's own backup).
                copy(
                    "server/tls-2025-01-02T03-04-05",
                    datetime!(2025-01-02 03:04:05 UTC),
                    false,
                ),
                copy(
                    "server/tls-1710000000",
                    datetime!(2024-03-09 16:00 UTC),
                    true,
                ),
            ],
        }];
        let findings = broken_files(&facts);
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(
            (f.code, f.severity),
            (Code::PemEmptyOrCorrupt, Severity::Blocker)
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.field == "backup" && e.value == "server/tls-1710000000")
        );
        assert_eq!(
            f.fix,
            "systemctl stop rke2-server && cp -a /var/lib/rancher/rke2/server/tls-1710000000/client-admin.crt \
             /var/lib/rancher/rke2/server/tls/client-admin.crt && systemctl start rke2-server"
        );
    }

    #[test]
    fn broken_leaf_without_backup_falls_back_to_rotating_its_service() {
        let mut facts = facts_with(vec![]);
        facts.broken = vec![BrokenFile {
            path: "server/tls/etcd/client.crt".to_owned(),
            reason: "no PEM data".to_owned(),
            copies: vec![],
        }];
        let f = &broken_files(&facts)[0];
        assert!(
            f.fix.contains("rke2 certificate rotate --service etcd"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn backup_paths_mirror_server_tls_and_flatten_agent_files() {
        assert_eq!(
            path_in_backup("server/tls/etcd/client.crt", "server/tls-1"),
            Some("server/tls-1/etcd/client.crt".to_owned())
        );
        assert_eq!(
            path_in_backup("agent/client-kubelet.crt", "agent/tls-1"),
            Some("agent/tls-1/client-kubelet.crt".to_owned())
        );
        assert_eq!(
            path_in_backup("agent/client-kubelet.crt", "server/tls-1"),
            None
        );
    }
}
