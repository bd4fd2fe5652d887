//! The doctor's finding model: what is wrong on a node, how bad it is, the evidence, and the
//! command that fixes it (as the runbook gives it).
//!
//! Pure value types and decisions only: gathering facts and running checks live in the
//! binaries (`rke2-node-agent doctor`); this module owns the vocabulary both halves share
//! (the codes are a contract: scripts and the hub match on them), the exit code and the
//! table rendering.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod table;

/// What a finding is about. Serialized as a stable kebab-case string (`cert-expired`);
/// never rename one: scripts, alerts and the hub match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// A leaf's NotAfter is past (`x509: certificate has expired or is not yet valid`).
    CertExpired,
    /// A certificate's NotBefore is in the future (clock skew or a bad clock at issue).
    CertNotYetValid,
    /// The node's renewal deadline (earliest leaf NotAfter) is within the warning window.
    RenewalDeadlineNear,
    /// The node's renewal deadline has passed: a leaf has expired.
    RenewalDeadlinePassed,
    /// The unit has run longer than 365 - 120 days: its leaves will not renew by themselves.
    ServicePastRenewalWindow,
    /// A CA expires within 365 days (or has expired); `certificate rotate` never renews CAs.
    CaExpiring,
    /// A kubeconfig's client certificate is not signed by the current client CA
    /// (`x509: certificate signed by unknown authority`).
    KubeconfigUnknownAuthority,
    /// A kubeconfig's `certificate-authority-data` differs from `rke2.yaml`'s.
    KubeconfigCaDiffers,
    /// A serving certificate lacks one of the node's current names
    /// (`x509: certificate is valid for <old-names>, not <new-name>`).
    ServingCertMissingSan,
    /// A certificate or key file is empty or not PEM
    /// (`tls: failed to find any PEM data in certificate input`).
    PemEmptyOrCorrupt,
    /// Free space below the threshold where an upgrade stages or etcd writes.
    DiskLow,
    /// The RKE2 unit failed or is restarting (`rke2-server.service: Failed with result ...`).
    UnitFailed,
    /// systemd could not be asked (the unit checks were skipped).
    SystemdUnreachable,
    /// An etcd member is unhealthy.
    EtcdMemberUnhealthy,
    /// etcd has an active alarm (NOSPACE, CORRUPT).
    EtcdAlarm,
    /// etcd's database is close to its quota.
    EtcdDbNearQuota,
    /// A PodDisruptionBudget can never allow a disruption: draining a node hosting one of its
    /// pods hangs (the hub's cluster-wide check).
    PdbBlocksDrain,
    /// system-upgrade-controller (its CRD, Plans or Deployment) is still in the cluster and
    /// may upgrade nodes behind the hub's back.
    SucLeftover,
    /// The nodes' RKE2 versions are skewed beyond what Kubernetes supports, or a node is
    /// already at or above a plan's target.
    VersionSkew,
    /// The hub has no usable Kubernetes API: its cluster-wide checks were skipped.
    KubeChecksSkipped,
    /// A node's clock is off from the hub's (certificates it issues or checks become
    /// not-yet-valid or expire early elsewhere).
    ClockSkew,
    /// RKE2's own certificate monitor posted `CertificateExpirationWarning` or
    /// `CACertificateExpirationWarning` on the Node, and no agent finding explains it.
    Rke2CertWarning,
    /// etcd cannot lose one more member without losing quorum (a server's restart would stop
    /// the cluster).
    EtcdQuorumAtRisk,
    /// The node's agent is offline: its findings are as old as its last report.
    AgentOffline,
}

impl Code {
    /// Every code, in documentation order.
    pub const ALL: [Self; 24] = [
        Self::CertExpired,
        Self::CertNotYetValid,
        Self::RenewalDeadlineNear,
        Self::RenewalDeadlinePassed,
        Self::ServicePastRenewalWindow,
        Self::CaExpiring,
        Self::KubeconfigUnknownAuthority,
        Self::KubeconfigCaDiffers,
        Self::ServingCertMissingSan,
        Self::PemEmptyOrCorrupt,
        Self::DiskLow,
        Self::UnitFailed,
        Self::SystemdUnreachable,
        Self::EtcdMemberUnhealthy,
        Self::EtcdAlarm,
        Self::EtcdDbNearQuota,
        Self::PdbBlocksDrain,
        Self::SucLeftover,
        Self::VersionSkew,
        Self::KubeChecksSkipped,
        Self::ClockSkew,
        Self::Rke2CertWarning,
        Self::EtcdQuorumAtRisk,
        Self::AgentOffline,
    ];

    /// The stable string (`cert-expired`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertExpired => "cert-expired",
            Self::CertNotYetValid => "cert-not-yet-valid",
            Self::RenewalDeadlineNear => "renewal-deadline-near",
            Self::RenewalDeadlinePassed => "renewal-deadline-passed",
            Self::ServicePastRenewalWindow => "service-past-renewal-window",
            Self::CaExpiring => "ca-expiring",
            Self::KubeconfigUnknownAuthority => "kubeconfig-unknown-authority",
            Self::KubeconfigCaDiffers => "kubeconfig-ca-differs",
            Self::ServingCertMissingSan => "serving-cert-missing-san",
            Self::PemEmptyOrCorrupt => "pem-empty-or-corrupt",
            Self::DiskLow => "disk-low",
            Self::UnitFailed => "unit-failed",
            Self::SystemdUnreachable => "systemd-unreachable",
            Self::EtcdMemberUnhealthy => "etcd-member-unhealthy",
            Self::EtcdAlarm => "etcd-alarm",
            Self::EtcdDbNearQuota => "etcd-db-near-quota",
            Self::PdbBlocksDrain => "pdb-blocks-drain",
            Self::SucLeftover => "suc-leftover",
            Self::VersionSkew => "version-skew",
            Self::KubeChecksSkipped => "kube-checks-skipped",
            Self::ClockSkew => "clock-skew",
            Self::Rke2CertWarning => "rke2-cert-warning",
            Self::EtcdQuorumAtRisk => "etcd-quorum-at-risk",
            Self::AgentOffline => "agent-offline",
        }
    }

    /// The code named `word`, if any (for `--fix CODE`).
    #[must_use]
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a finding is, least first (so `max()` is the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never changes the exit code.
    Info,
    /// Will break something if left alone.
    Warning,
    /// Broken now, or breaks at the next restart.
    Blocker,
}

impl Severity {
    /// The word printed and used as a metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Blocker => "blocker",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fact behind a finding: which field of what had which value (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was looked at (`not_after`, `sans`, `journal`).
    pub field: String,
    /// What it said.
    pub value: String,
}

/// One problem on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What kind of problem (stable string).
    pub code: Code,
    /// How bad.
    pub severity: Severity,
    /// The node it was found on.
    pub node: String,
    /// What it is about: a file path, a unit, a member.
    pub object: String,
    /// The facts that led to it, in the order they matter.
    pub evidence: Vec<Evidence>,
    /// The command that fixes it, as the runbook gives it.
    pub fix: String,
}

impl Finding {
    /// A finding without evidence yet.
    #[must_use]
    pub fn new(
        code: Code,
        severity: Severity,
        node: impl Into<String>,
        object: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            code,
            severity,
            node: node.into(),
            object: object.into(),
            evidence: Vec::new(),
            fix: fix.into(),
        }
    }

    /// Adds one piece of evidence.
    #[must_use]
    pub fn with(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.evidence.push(Evidence {
            field: field.into(),
            value: value.into(),
        });
        self
    }
}

/// Exit code when nothing (or only info) was found.
pub const EXIT_OK: u8 = 0;
/// Exit code when the worst finding is a warning.
pub const EXIT_WARNING: u8 = 1;
/// Exit code when any finding is a blocker.
pub const EXIT_BLOCKER: u8 = 2;

/// The exit code for `findings`: 0 none (info alone counts as none), 1 warnings only, 2 any
/// blocker.
#[must_use]
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        None | Some(Severity::Info) => EXIT_OK,
        Some(Severity::Warning) => EXIT_WARNING,
        Some(Severity::Blocker) => EXIT_BLOCKER,
    }
}

/// Sorts findings worst first, then by code and object, so output is stable.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.code.cmp(&b.code))
            .then_with(|| a.object.cmp(&b.object))
    });
}

/// How many findings there are per (code, severity), in code order: what the agent exports
/// as `rke2ops_doctor_findings`.
#[must_use]
pub fn counts(findings: &[Finding]) -> Vec<(Code, Severity, usize)> {
    let mut map = std::collections::BTreeMap::new();
    for f in findings {
        *map.entry((f.code, f.severity)).or_insert(0usize) += 1;
    }
    map.into_iter().map(|((c, s), n)| (c, s, n)).collect()
}

/// The JSON document of `doctor --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node examined.
    pub node: String,
    /// Worst first.
    pub findings: Vec<Finding>,
    /// [`exit_code`] of the findings.
    pub exit_code: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: Code, severity: Severity) -> Finding {
        Finding::new(code, severity, "n1", "server/tls/x.crt", "fix it")
    }

    #[test]
    fn exit_code_is_zero_one_two_and_info_alone_is_zero() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(
            exit_code(&[finding(Code::SystemdUnreachable, Severity::Info)]),
            0
        );
        assert_eq!(
            exit_code(&[
                finding(Code::SystemdUnreachable, Severity::Info),
                finding(Code::DiskLow, Severity::Warning)
            ]),
            1
        );
        assert_eq!(
            exit_code(&[
                finding(Code::DiskLow, Severity::Warning),
                finding(Code::CertExpired, Severity::Blocker)
            ]),
            2
        );
    }

    #[test]
    fn severities_are_ordered_info_warning_blocker() {
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Blocker);
    }

    #[test]
    fn codes_serialize_as_their_stable_strings_and_parse_back() {
        for code in Code::ALL {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let back: Code = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, code);
        }
        assert_eq!(Code::parse("cert-expird"), None);
    }

    #[test]
    fn finding_json_names_code_severity_and_evidence_fields() {
        let f = finding(Code::PemEmptyOrCorrupt, Severity::Blocker).with("size", "0");
        let v = serde_json::to_value(&f).expect("serializes");
        assert_eq!(v["code"], "pem-empty-or-corrupt");
        assert_eq!(v["severity"], "blocker");
        assert_eq!(v["evidence"][0]["field"], "size");
        assert_eq!(v["evidence"][0]["value"], "0");
    }

    #[test]
    fn sort_puts_blockers_first_and_counts_group_by_code_and_severity() {
        let mut all = vec![
            finding(Code::DiskLow, Severity::Warning),
            finding(Code::CertExpired, Severity::Blocker),
            finding(Code::DiskLow, Severity::Warning),
        ];
        sort(&mut all);
        assert_eq!(all[0].code, Code::CertExpired);
        assert_eq!(
            counts(&all),
            vec![
                (Code::CertExpired, Severity::Blocker, 1),
                (Code::DiskLow, Severity::Warning, 2)
            ]
        );
    }
}
