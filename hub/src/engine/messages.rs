//! What the hub and its agents say to each other, as domain types: the engine, the live
//! reports and the registry speak only these. The wire (`rke2ops.v1`) forms and the
//! conversions both ways live beside the gRPC handlers ([`crate::grpc::convert`]); nothing
//! here knows about prost or tonic.

use time::OffsetDateTime;

use crate::plan::health::{EtcdReport, Readiness};
use crate::store::model::{CertRow, FileErrorRow};

/// A request from the hub to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    /// Send a fresh status now (the gates wait on it).
    RequestStatus,
    /// Run (or report on) an operation.
    Run(RunOperation),
    /// Cancel an operation that has not begun changing the node.
    Cancel {
        /// The operation's id.
        operation_id: String,
    },
}

/// An operation the hub asks one node to run; idempotent by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOperation {
    /// Stable across hub restarts ([`super::ops::operation_id`]).
    pub operation_id: String,
    /// What to do (`None` only in tests: agents refuse an operation without a kind).
    pub kind: Option<Operation>,
}

/// What an operation does on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `rke2 certificate rotate` (all services, or the listed ones), restart, verify.
    Rotate {
        /// Services to rotate (empty = all).
        services: Vec<String>,
        /// Servers take an etcd snapshot before the unit stops.
        etcd_snapshot: bool,
    },
    /// Restart so RKE2 reissues leaves inside its renewal window.
    Restart,
    /// Install another RKE2 release.
    Upgrade {
        /// The target version.
        version: String,
        /// Artifact URL prefix or air-gap folder (empty = the agent's own).
        artifact_source: String,
        /// Restore the previous release when the new one does not become ready.
        allow_rollback: bool,
    },
    /// Stage a release's air-gap image archives (never touches the unit).
    StageImages {
        /// The release.
        version: String,
        /// Artifact URL prefix or air-gap folder (empty = the agent's own).
        artifact_source: String,
    },
    /// Remove other releases' image archives that staging (or RKE2's install) put there.
    PruneImages {
        /// The release whose archives stay.
        version: String,
    },
}

/// Where a step of an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepPhase {
    /// Not said (an older or malformed agent).
    #[default]
    Unspecified,
    /// The step began.
    Started,
    /// The step ended well.
    Succeeded,
    /// The step ended badly.
    Failed,
}

impl StepPhase {
    /// The step ended (either way).
    #[must_use]
    pub fn ended(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A step of an operation began or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationProgress {
    /// The operation.
    pub operation_id: String,
    /// The step's kebab-case name.
    pub step: String,
    /// Began or ended.
    pub phase: StepPhase,
    /// What it found or did (empty when it begins).
    pub detail: String,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Not said, or a value this hub does not know (treated as a failure).
    #[default]
    Unspecified,
    /// Every step succeeded and was verified.
    Succeeded,
    /// A step failed; the agent rolled back where it could.
    Failed,
    /// Nothing to do (already at or above the target).
    Skipped,
    /// Not started (another operation holds the node, a bad request, or cancelled).
    Rejected,
}

impl Outcome {
    /// The word used in plan events (`operation … failed: …`).
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Rejected => "rejected",
        }
    }
}

/// An operation's result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationResult {
    /// The operation.
    pub operation_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed, was skipped or refused; a summary when it succeeded.
    pub detail: String,
    /// The RKE2 unit's last journal lines when it failed.
    pub unit_journal: Vec<String>,
    /// The RKE2 version running afterwards (empty when unknown).
    pub rke2_version: String,
}

/// A status an agent sent, its fields checked: what the store records about the node and
/// what the gates read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// A full status's snapshot: every certificate and every file error (none: a summary).
    pub snapshot: Option<(Vec<CertRow>, Vec<FileErrorRow>)>,
    /// When the node's first leaf enters RKE2's renewal window.
    pub renewal_deadline: Option<OffsetDateTime>,
    /// The RKE2 word of its worst certificate status (none: no certificates).
    pub worst_status: Option<&'static str>,
    /// systemd's ActiveState of the RKE2 unit (empty when unknown).
    pub service_state: String,
    /// Its health and running version, for the engine.
    pub health: HealthStatus,
    /// The agent's clock when it sent the status (none: an older agent).
    pub sent_at: Option<OffsetDateTime>,
    /// The node's doctor findings when they changed (none: unchanged), each with the node
    /// set to the stream's node (never the agent's word for it).
    pub findings: Option<Vec<rke2ops_common::doctor::Finding>>,
    /// How RKE2 is installed on the node (none: not reported).
    pub install: Option<InstallFacts>,
}

/// How RKE2 is installed on a node, as its agent reported it (bounded and checked by the
/// conversion; shown in `nodes` and upgrade dry runs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstallFacts {
    /// `rpm`, `tarball` or `mixed`.
    pub method: String,
    /// Packages, prefix, or what a mixed node has.
    pub detail: String,
    /// RPM: dnf, yum or zypper.
    pub package_manager: String,
    /// RPM: the repository or air-gap folder.
    pub rpm_repository: String,
}

/// The part of an agent's status the engine keeps (its health, for the gates).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthStatus {
    /// Running RKE2 version (empty when unknown).
    pub rke2_version: String,
    /// Servers: etcd as this member sees it.
    pub etcd: Option<EtcdHealth>,
    /// The node's own probes.
    pub readiness: Option<ReadinessProbe>,
}

/// etcd as one server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdHealth {
    /// Members by name and whether each is healthy.
    pub members: Vec<(String, bool)>,
    /// Active alarms.
    pub alarms: Vec<String>,
    /// Why etcd could not be asked.
    pub error: String,
}

/// A node's own health probes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadinessProbe {
    /// Servers: the local apiserver answers `/readyz`.
    pub apiserver_ready: bool,
    /// The kubelet answers `/healthz`.
    pub kubelet_healthy: bool,
    /// Why not, when either is false.
    pub detail: String,
}

impl EtcdHealth {
    /// The report the gates read, as received at `now`.
    #[must_use]
    pub fn report(&self, now: OffsetDateTime) -> EtcdReport {
        EtcdReport {
            members: self.members.clone(),
            alarms: self.alarms.clone(),
            error: self.error.clone(),
            received_at: now,
        }
    }
}

impl ReadinessProbe {
    /// The report the gates read, as received at `now`.
    #[must_use]
    pub fn report(&self, now: OffsetDateTime) -> Readiness {
        Readiness {
            apiserver_ready: self.apiserver_ready,
            kubelet_healthy: self.kubelet_healthy,
            detail: self.detail.clone(),
            received_at: now,
        }
    }
}
