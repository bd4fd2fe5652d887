//! Wire (`rke2ops.v1`) ↔ domain conversions, beside the gRPC handlers: the only hub code
//! that touches prost structs besides the service glue (and the CLI's gRPC clients). Incoming
//! messages convert with `TryFrom` (or `From` where every wire value has a domain meaning),
//! malformed ones becoming errors that name the field; outgoing ones with `From`.

use prost_types::Timestamp;
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

use crate::engine::messages::{
    EtcdHealth, HealthStatus, Operation, OperationProgress, OperationResult, Outcome,
    ReadinessProbe, RunOperation, StepPhase, ToAgent,
};
use crate::plan::action::Action;
use crate::plan::model::{PlanKind, PlanPolicy};
use crate::plan::version::Rke2Version;
use crate::store::model::{CertRow, FileErrorRow, NodeRecord};

/// A message field that is missing or out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    /// The field, e.g. `status.certificates[3].not_after`.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A protobuf timestamp → time.
///
/// # Errors
/// Out of range.
pub fn time_of(ts: &Timestamp, field: &str) -> Result<OffsetDateTime, ConvertError> {
    OffsetDateTime::from_unix_timestamp(ts.seconds).map_err(|e| bad(field, e.to_string()))
}

/// time → protobuf timestamp.
#[must_use]
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    }
}

/// The RKE2 word of a status enum value.
#[must_use]
pub fn status_word(value: i32) -> Option<&'static str> {
    match pb::CertStatus::try_from(value).ok()? {
        pb::CertStatus::Ok => Some("OK"),
        pb::CertStatus::Warning => Some("WARNING"),
        pb::CertStatus::Expired => Some("EXPIRED"),
        pb::CertStatus::NotYetValid => Some("NOT YET VALID"),
        pb::CertStatus::Unspecified => None,
    }
}

/// The RKE2 word of a node's worst status: `None` for unspecified (a node without
/// certificates).
///
/// # Errors
/// A value outside the enum.
pub fn worst_status_word(value: i32, field: &str) -> Result<Option<&'static str>, ConvertError> {
    match pb::CertStatus::try_from(value) {
        Ok(_) => Ok(status_word(value)),
        Err(_) => Err(bad(field, format!("unknown value {value}"))),
    }
}

/// An RKE2 status word → enum value.
#[must_use]
pub fn status_value(word: Option<&str>) -> i32 {
    match word {
        Some("OK") => pb::CertStatus::Ok,
        Some("WARNING") => pb::CertStatus::Warning,
        Some("EXPIRED") => pb::CertStatus::Expired,
        Some("NOT YET VALID") => pb::CertStatus::NotYetValid,
        _ => pb::CertStatus::Unspecified,
    }
    .into()
}

/// Role enum → the store's word.
#[must_use]
pub fn role_word(value: i32) -> &'static str {
    match pb::NodeRole::try_from(value) {
        Ok(pb::NodeRole::Server) => "server",
        Ok(pb::NodeRole::Agent) => "agent",
        _ => "unknown",
    }
}

/// The store's role word → enum value.
#[must_use]
pub fn role_value(word: &str) -> i32 {
    match word {
        "server" => pb::NodeRole::Server,
        "agent" => pb::NodeRole::Agent,
        _ => pb::NodeRole::Unspecified,
    }
    .into()
}

/// One reported certificate → a row.
///
/// # Errors
/// Missing validity times or an unknown status.
pub fn cert_row(c: &pb::Certificate, field: &str) -> Result<CertRow, ConvertError> {
    let not_before = time_of(
        c.not_before
            .as_ref()
            .ok_or_else(|| bad(format!("{field}.not_before"), "missing"))?,
        field,
    )?;
    let not_after = time_of(
        c.not_after
            .as_ref()
            .ok_or_else(|| bad(format!("{field}.not_after"), "missing"))?,
        field,
    )?;
    let status = status_word(c.status).ok_or_else(|| {
        bad(
            format!("{field}.status"),
            format!("unknown value {}", c.status),
        )
    })?;
    if c.path.is_empty() {
        return Err(bad(format!("{field}.path"), "empty"));
    }
    Ok(CertRow {
        path: c.path.clone(),
        index: c.index,
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        serial: c.serial.clone(),
        usages: c.usages.clone(),
        is_ca: c.is_ca,
        sans: c.sans.clone(),
        not_before,
        not_after,
        status: status.to_owned(),
    })
}

/// A row → the wire.
#[must_use]
pub fn cert_message(row: &CertRow) -> pb::Certificate {
    pb::Certificate {
        path: row.path.clone(),
        index: row.index,
        subject: row.subject.clone(),
        issuer: row.issuer.clone(),
        serial: row.serial.clone(),
        usages: row.usages.clone(),
        is_ca: row.is_ca,
        sans: row.sans.clone(),
        not_before: Some(timestamp(row.not_before)),
        not_after: Some(timestamp(row.not_after)),
        status: status_value(Some(&row.status)),
    }
}

/// A file error → row.
#[must_use]
pub fn error_row(e: &pb::FileError) -> FileErrorRow {
    FileErrorRow {
        path: e.path.clone(),
        reason: e.reason.clone(),
    }
}

/// A node → the wire.
#[must_use]
pub fn node_message(node: &NodeRecord, error_count: u32) -> pb::NodeInfo {
    pb::NodeInfo {
        name: node.name.clone(),
        role: role_value(&node.role),
        rke2_version: node.rke2_version.clone(),
        agent_version: node.agent_version.clone(),
        service_state: node.service_state.clone(),
        worst_status: status_value(node.worst_status.as_deref()),
        renewal_deadline: node.renewal_deadline.map(timestamp),
        last_seen: Some(timestamp(node.last_seen)),
        online: node.online,
        error_count,
    }
}

/// The wire word for a plan kind.
#[must_use]
pub fn plan_kind_value(kind: crate::plan::model::PlanKind) -> i32 {
    use crate::plan::model::PlanKind;
    match kind {
        PlanKind::Rotate => pb::PlanKind::Rotate,
        PlanKind::Restart => pb::PlanKind::Restart,
        PlanKind::Upgrade => pb::PlanKind::Upgrade,
    }
    .into()
}

/// A plan kind from the wire.
///
/// # Errors
/// [`ConvertError`] for an unspecified or unknown kind.
pub fn plan_kind(value: i32) -> Result<crate::plan::model::PlanKind, ConvertError> {
    use crate::plan::model::PlanKind;
    match pb::PlanKind::try_from(value) {
        Ok(pb::PlanKind::Rotate) => Ok(PlanKind::Rotate),
        Ok(pb::PlanKind::Restart) => Ok(PlanKind::Restart),
        Ok(pb::PlanKind::Upgrade) => Ok(PlanKind::Upgrade),
        _ => Err(ConvertError {
            field: "kind".to_owned(),
            reason: format!("{value} is not rotate, restart or upgrade"),
        }),
    }
}

/// The wire value for a plan state.
#[must_use]
pub fn plan_state_value(state: crate::plan::model::PlanState) -> i32 {
    use crate::plan::model::PlanState;
    match state {
        PlanState::Running => pb::PlanState::Running,
        PlanState::Paused => pb::PlanState::Paused,
        PlanState::Halted => pb::PlanState::Halted,
        PlanState::Completed => pb::PlanState::Completed,
        PlanState::Aborted => pb::PlanState::Aborted,
    }
    .into()
}

/// One plan node on the wire.
#[must_use]
pub fn plan_node_message(n: &crate::plan::model::PlanNode) -> pb::PlanNodeView {
    pb::PlanNodeView {
        name: n.node.clone(),
        role: role_value(crate::plan::model::role_word(n.role)),
        phase: n.phase.name().to_owned(),
        step: n.step.clone(),
        detail: n.detail.clone(),
        started_at: n.started_at.map(timestamp),
        finished_at: n.finished_at.map(timestamp),
        from_version: n.from_version.clone(),
        cordoned_by_plan: n.cordoned,
        attempt: n.attempt,
        operation_id: n.operation_id.clone(),
        phase_since: n.phase_at.map(timestamp),
    }
}

/// A plan on the wire.
#[must_use]
pub fn plan_message(
    plan: &crate::plan::model::Plan,
    nodes: &[crate::plan::model::PlanNode],
    events: &[crate::plan::model::PlanEvent],
    gates: Vec<String>,
) -> pb::PlanView {
    pb::PlanView {
        id: plan.id.to_string(),
        kind: plan_kind_value(plan.kind),
        target_version: plan.target_version.clone(),
        channel: plan.channel.clone(),
        state: plan_state_value(plan.state),
        reason: plan.reason.clone(),
        created_by: plan.created_by.clone(),
        created_at: Some(timestamp(plan.created_at)),
        finished_at: plan.finished_at.map(timestamp),
        policy: plan.policy.describe(plan.kind),
        nodes: nodes.iter().map(plan_node_message).collect(),
        gates,
        events: events
            .iter()
            .map(|e| pb::PlanEvent {
                at: Some(timestamp(e.at)),
                node: e.node.clone(),
                message: e.message.clone(),
            })
            .collect(),
        origin: plan.origin.clone(),
    }
}

// ---- agents' messages ------------------------------------------------------------------

/// The health part of a status (the rest goes to the store, checked field by field in
/// [`super::agent::handle`]).
impl From<&pb::Status> for HealthStatus {
    fn from(status: &pb::Status) -> Self {
        Self {
            rke2_version: status.rke2_version.clone(),
            etcd: status.etcd.as_ref().map(|e| EtcdHealth {
                members: e
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.healthy))
                    .collect(),
                alarms: e.alarms.clone(),
                error: e.error.clone(),
            }),
            readiness: status.readiness.as_ref().map(|r| ReadinessProbe {
                apiserver_ready: r.apiserver_ready,
                kubelet_healthy: r.kubelet_healthy,
                detail: r.detail.clone(),
            }),
        }
    }
}

/// A step phase this hub does not know is unspecified (progress is informational).
impl From<i32> for StepPhase {
    fn from(value: i32) -> Self {
        match pb::StepPhase::try_from(value) {
            Ok(pb::StepPhase::Started) => Self::Started,
            Ok(pb::StepPhase::Succeeded) => Self::Succeeded,
            Ok(pb::StepPhase::Failed) => Self::Failed,
            Ok(pb::StepPhase::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

impl From<pb::OperationProgress> for OperationProgress {
    fn from(p: pb::OperationProgress) -> Self {
        Self {
            operation_id: p.operation_id,
            step: p.step,
            phase: StepPhase::from(p.phase),
            detail: p.detail,
        }
    }
}

/// An outcome this hub does not know is unspecified, which the engine treats as a failure.
impl From<i32> for Outcome {
    fn from(value: i32) -> Self {
        match pb::OperationOutcome::try_from(value) {
            Ok(pb::OperationOutcome::Succeeded) => Self::Succeeded,
            Ok(pb::OperationOutcome::Failed) => Self::Failed,
            Ok(pb::OperationOutcome::Skipped) => Self::Skipped,
            Ok(pb::OperationOutcome::Rejected) => Self::Rejected,
            Ok(pb::OperationOutcome::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

impl From<pb::OperationResult> for OperationResult {
    fn from(r: pb::OperationResult) -> Self {
        Self {
            operation_id: r.operation_id,
            outcome: Outcome::from(r.outcome),
            detail: r.detail,
            unit_journal: r.unit_journal,
            rke2_version: r.rke2_version,
        }
    }
}

// ---- the hub's requests to agents -----------------------------------------------------

impl From<RunOperation> for pb::RunOperation {
    fn from(run: RunOperation) -> Self {
        use pb::run_operation::Kind;
        Self {
            operation_id: run.operation_id,
            kind: run.kind.map(|kind| match kind {
                Operation::Rotate { services } => Kind::Rotate(pb::RotateOperation { services }),
                Operation::Restart => Kind::Restart(pb::RestartOperation {}),
                Operation::Upgrade {
                    version,
                    artifact_source,
                    allow_rollback,
                } => Kind::Upgrade(pb::UpgradeOperation {
                    version,
                    artifact_source,
                    allow_rollback,
                }),
            }),
        }
    }
}

impl From<ToAgent> for pb::HubMessage {
    fn from(message: ToAgent) -> Self {
        use pb::hub_message::Body;
        let body = match message {
            ToAgent::RequestStatus => Body::RequestStatus(pb::RequestStatus {}),
            ToAgent::Run(run) => Body::Run(run.into()),
            ToAgent::Cancel { operation_id } => Body::Cancel(pb::CancelOperation { operation_id }),
        };
        Self { body: Some(body) }
    }
}

// ---- operators' plan requests ----------------------------------------------------------

/// A request field the hub refuses. The message names the field the way the CLI spells it
/// (`skip: which node (--node)`), and is what the operator reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct RequestError {
    /// The wire field at fault.
    pub field: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        field,
        message: message.into(),
    }
}

impl TryFrom<&pb::PlanActionRequest> for Action {
    type Error = RequestError;

    fn try_from(req: &pb::PlanActionRequest) -> Result<Self, RequestError> {
        match pb::PlanAction::try_from(req.action) {
            Ok(pb::PlanAction::Pause) => Ok(Self::Pause),
            Ok(pb::PlanAction::Resume) => Ok(Self::Resume),
            Ok(pb::PlanAction::Skip) if !req.node.is_empty() => Ok(Self::Skip(req.node.clone())),
            Ok(pb::PlanAction::Skip) => Err(refuse("node", "skip: which node (--node)")),
            Ok(pb::PlanAction::Abort) => Ok(Self::Abort),
            _ => Err(refuse("action", "action: pause, resume, skip or abort")),
        }
    }
}

/// Where an upgrade's target comes from, as asked (the channel is resolved by the handler:
/// that is a fetch, not a conversion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAsk {
    /// Not an upgrade: no target.
    None,
    /// `--version`.
    Version(Rke2Version),
    /// `--channel`.
    Channel(String),
}

/// A `CreatePlanRequest` in domain terms, before its channel is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanAsk {
    /// What to do.
    pub kind: PlanKind,
    /// The upgrade's target.
    pub target: TargetAsk,
    /// Nodes (empty = all).
    pub nodes: Vec<String>,
    /// How (defaults filled in for the fields left at zero).
    pub policy: PlanPolicy,
    /// Preview only.
    pub dry_run: bool,
}

impl TryFrom<&pb::CreatePlanRequest> for PlanAsk {
    type Error = RequestError;

    fn try_from(req: &pb::CreatePlanRequest) -> Result<Self, RequestError> {
        let kind = plan_kind(req.kind).map_err(|e| refuse("kind", e.to_string()))?;
        let target = match (kind, req.version.is_empty(), req.channel.is_empty()) {
            (PlanKind::Upgrade, false, true) => TargetAsk::Version(
                req.version
                    .parse()
                    .map_err(|e| refuse("version", format!("version: {e}")))?,
            ),
            (PlanKind::Upgrade, true, false) => TargetAsk::Channel(req.channel.clone()),
            (PlanKind::Upgrade, _, _) => {
                return Err(refuse(
                    "version",
                    "upgrade: exactly one of --version and --channel",
                ));
            }
            (_, true, true) => TargetAsk::None,
            (other, _, _) => {
                return Err(refuse(
                    "version",
                    format!("{other}: --version and --channel are for upgrades"),
                ));
            }
        };
        Ok(Self {
            kind,
            target,
            nodes: req.nodes.clone(),
            policy: PlanPolicy::from(req),
            dry_run: req.dry_run,
        })
    }
}

/// The policy a `CreatePlanRequest` asks for: zero means "the default" for the timeouts, a
/// negative grace period means "each pod's own". Bounds are checked by plan creation
/// ([`crate::plan::create::validate`]), not here.
impl From<&pb::CreatePlanRequest> for PlanPolicy {
    fn from(req: &pb::CreatePlanRequest) -> Self {
        let defaults = Self::default();
        Self {
            concurrency: req.concurrency.max(1),
            drain: !req.no_drain,
            drain_timeout_secs: if req.drain_timeout_seconds == 0 {
                defaults.drain_timeout_secs
            } else {
                req.drain_timeout_seconds
            },
            grace_period_secs: (req.grace_period_seconds >= 0).then_some(req.grace_period_seconds),
            settle_secs: req.settle_seconds,
            window: (!req.window.trim().is_empty()).then(|| req.window.trim().to_owned()),
            allow_minor_skip: req.allow_minor_skip,
            allow_rollback: !req.no_rollback,
            services: req.services.clone(),
            artifact_source: req.artifact_source.clone(),
            ready_timeout_secs: if req.ready_timeout_seconds == 0 {
                defaults.ready_timeout_secs
            } else {
                req.ready_timeout_seconds
            },
            operation_timeout_secs: defaults.operation_timeout_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> pb::Certificate {
        pb::Certificate {
            path: "server/tls/client-admin.crt".into(),
            index: 0,
            subject: "CN=system:admin".into(),
            issuer: "CN=ca".into(),
            serial: "01".into(),
            usages: vec!["ClientAuth".into()],
            is_ca: false,
            sans: vec![],
            not_before: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            not_after: Some(Timestamp {
                seconds: 1_731_536_000,
                nanos: 0,
            }),
            status: pb::CertStatus::Warning.into(),
        }
    }

    #[test]
    fn certificates_round_trip() {
        let row = cert_row(&cert(), "status.certificates[0]").expect("valid");
        assert_eq!(row.status, "WARNING");
        assert_eq!(cert_message(&row), cert());
    }

    #[test]
    fn missing_time_names_the_field() {
        let mut c = cert();
        c.not_after = None;
        let err = cert_row(&c, "status.certificates[2]").expect_err("invalid");
        assert_eq!(err.field, "status.certificates[2].not_after");
    }

    #[test]
    fn unknown_status_value_is_refused() {
        let mut c = cert();
        c.status = 42;
        assert!(cert_row(&c, "x").is_err());
        c.status = 0;
        assert!(cert_row(&c, "x").is_err(), "unspecified is not a status");
    }

    #[test]
    fn worst_status_may_be_unspecified_but_not_unknown() {
        assert_eq!(worst_status_word(0, "w"), Ok(None));
        assert_eq!(
            worst_status_word(pb::CertStatus::Expired.into(), "w"),
            Ok(Some("EXPIRED"))
        );
        let err = worst_status_word(99, "status.worst_status").expect_err("out of the enum");
        assert_eq!(err.field, "status.worst_status");
    }

    #[test]
    fn roles_and_words_round_trip() {
        for word in ["server", "agent"] {
            assert_eq!(role_word(role_value(word)), word);
        }
        assert_eq!(role_word(99), "unknown");
    }
}
