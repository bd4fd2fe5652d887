//! What the agent and the hub say to each other, as domain types. [`super::convert`] maps
//! them to and from the wire (`rke2ops.v1`); the rest of the link never sees a prost struct.

use std::sync::Arc;

use time::OffsetDateTime;

use super::probe::{HealthSummary, Probe};
use crate::ops::steps::OpKind;
use crate::state::Snapshot;

/// A message to the hub on the stream.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// The first message of a session: who this node is.
    Hello(Hello),
    /// The node's status (full, or a summary without certificates).
    Status(Box<StatusReport>),
    /// Still here, nothing changed.
    Heartbeat,
    /// A step of an operation started or ended.
    Progress(OpProgress),
    /// An operation ended.
    Result(OpResult),
}

/// Who this node is, sent first on every stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The node's name (its certificate's CN).
    pub node_name: String,
    /// The cluster its config names.
    pub cluster: String,
    /// A server (control plane, etcd) rather than an agent.
    pub is_server: bool,
    /// `rke2 --version`; empty when unknown.
    pub rke2_version: String,
    /// This agent's version.
    pub agent_version: String,
}

/// The node's status at one instant: its certificates, the RKE2 unit's state and its health.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The published inventory.
    pub snapshot: Arc<Snapshot>,
    /// The instant the statuses are computed for.
    pub now: OffsetDateTime,
    /// The warning window.
    pub warn: time::Duration,
    /// The RKE2 unit's `ActiveState`; empty without systemd.
    pub service_state: String,
    /// Every certificate and file error, or only the summary.
    pub full: bool,
    /// The latest probes.
    pub health: Probe,
    /// The node's doctor findings when they changed since the last status of this stream
    /// (`None`: unchanged, not sent).
    pub doctor: Option<Vec<rke2ops_common::doctor::Finding>>,
}

/// What a summary status carries (unit state, worst status, deadline, errors, and the health
/// probes without their timestamps), to tell whether it changed.
pub type Summary = (
    String,
    Option<rke2ops_common::certs::CertStatus>,
    Option<i64>,
    usize,
    HealthSummary,
);

impl StatusReport {
    /// Its summary.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let inventory = &self.snapshot.inventory;
        (
            self.service_state.clone(),
            inventory.worst_status(self.now, self.warn),
            inventory
                .leaves()
                .map(|c| c.not_after.unix_timestamp())
                .min(),
            inventory.errors.len(),
            self.health.summary(),
        )
    }
}

/// Where a step of an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// It started.
    Started,
    /// It ended well.
    Succeeded,
    /// It ended badly.
    Failed,
}

/// A step of an operation started or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpProgress {
    /// The operation.
    pub operation_id: String,
    /// The step's name.
    pub step: String,
    /// Started or ended how.
    pub phase: StepPhase,
    /// The step's one-line result (clipped).
    pub detail: String,
    /// Time since the operation started, in milliseconds.
    pub elapsed_ms: u64,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Succeeded,
    /// Nothing to do (e.g. the version is installed already).
    Skipped,
    /// It failed (after any rollback).
    Failed,
    /// It was refused or cancelled before changing anything.
    Rejected,
}

/// An operation's end, as reported to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    /// The operation (as the hub sent it, clipped).
    pub operation_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in one line (clipped).
    pub detail: String,
    /// The RKE2 unit's journal lines around a failure.
    pub unit_journal: Vec<String>,
    /// `rke2 --version` after the operation; empty when unknown.
    pub rke2_version: String,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// A message from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Send a full status now.
    RequestStatus,
    /// Run an operation.
    Run(RunRequest),
    /// Cancel the operation with this id.
    Cancel(String),
    /// Something this agent does not know (a newer hub): ignored.
    Unknown,
}

/// The hub's request to run an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// The operation's id, as sent (checked by the driver before use).
    pub operation_id: String,
    /// What to run, every field the hub chose already checked; or why it is refused.
    pub kind: Result<OpKind, String>,
}
