//! `rke2-node-agent check --output json`: the inventory with statuses at one instant. Field
//! names are a contract (the issue and the README document them); extra fields may be added,
//! never renamed.

use serde::Serialize;
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::certs::Inventory;
use crate::certs::model::{ChainCheck, KeyCheck};
use crate::renewal;

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Every certificate, in inventory order.
    pub certificates: Vec<CertReport>,
    /// Files that could not be used.
    pub errors: Vec<ErrorReport>,
    /// Rotation backups, newest first.
    pub backups: Vec<BackupReport>,
    /// Earliest leaf NotAfter (RFC 3339), or null without leaves.
    pub renewal_deadline: Option<String>,
    /// When a restart starts renewing (deadline − 120 days).
    pub renewal_window_opens: Option<String>,
    /// Whether the node is inside the renewal window now.
    pub in_renewal_window: bool,
}

/// One certificate.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct CertReport {
    pub path: String,
    pub filename: String,
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub usages: Vec<&'static str>,
    pub is_ca: bool,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub residual_seconds: i64,
    pub status: &'static str,
    pub chain: ChainCheck,
    pub key: KeyCheck,
    pub fingerprint_sha256: String,
}

/// One unusable file.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct ErrorReport {
    pub path: String,
    pub kind: &'static str,
    pub reason: String,
}

/// One backup folder.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct BackupReport {
    pub path: String,
    pub created: String,
}

/// `t` as RFC 3339 in UTC (`2026-12-01T10:00:00Z`), the one time format of reports and messages.
#[must_use]
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Builds the report at `now` with warning window `warn`.
#[must_use]
pub fn report(inventory: &Inventory, now: OffsetDateTime, warn: Duration) -> CheckReport {
    let renewal = renewal::assess(
        inventory.leaves().map(|c| c.not_after),
        now,
        renewal::window(renewal::RENEW_WINDOW_DAYS),
        None,
    );
    let mut backups: Vec<BackupReport> = inventory
        .backups
        .iter()
        .map(|b| BackupReport {
            path: b.path.clone(),
            created: rfc3339(b.created),
        })
        .collect();
    backups.reverse();
    CheckReport {
        certificates: inventory
            .certificates
            .iter()
            .map(|c| CertReport {
                path: c.path.clone(),
                filename: c.filename.clone(),
                index: c.index,
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.clone(),
                usages: c.usages.iter().map(|u| u.as_str()).collect(),
                is_ca: c.is_ca,
                sans: c.sans.clone(),
                not_before: rfc3339(c.not_before),
                not_after: rfc3339(c.not_after),
                residual_seconds: (c.not_after - now).whole_seconds(),
                status: c.status(now, warn).as_str(),
                chain: c.chain.clone(),
                key: c.key.clone(),
                fingerprint_sha256: c.fingerprint.clone(),
            })
            .collect(),
        errors: inventory
            .errors
            .iter()
            .map(|e| ErrorReport {
                path: e.path.clone(),
                kind: e.kind.as_str(),
                reason: e.reason.clone(),
            })
            .collect(),
        backups,
        renewal_deadline: renewal.deadline.map(rfc3339),
        renewal_window_opens: renewal.window_opens.map(rfc3339),
        in_renewal_window: renewal.in_window,
    }
}
