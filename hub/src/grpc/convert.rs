//! Wire (`rke2ops.v1`) ↔ domain conversions, beside the gRPC handlers: the only hub code
//! that touches prost structs besides the service glue (and the CLI's gRPC clients). Incoming
//! messages convert with `TryFrom` (or `From` where every wire value has a domain meaning),
//! malformed ones becoming errors that name the field; outgoing ones with `From`.

use prost_types::Timestamp;
use rke2ops_common::doctor::{Code, Evidence, Finding, Severity};
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

use crate::engine::messages::{
    AgentStatus, EtcdHealth, HealthStatus, InstallFacts, Operation, OperationProgress,
    OperationResult, Outcome, ReadinessProbe, RunOperation, StepPhase, ToAgent,
};
use crate::plan::action::Action;
use crate::plan::images::NodeImages;
use crate::plan::model::{Plan, PlanEvent, PlanKind, PlanNode, PlanPolicy, PlanState};
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

/// An optional role word (a token's binding, a removed node) → enum value; none is
/// unspecified.
#[must_use]
pub fn optional_role_value(word: Option<&str>) -> i32 {
    word.map_or(pb::NodeRole::Unspecified.into(), role_value)
}

/// The role a new token binds its node to (unspecified: none, the first hello fixes it).
///
/// # Errors
/// A value outside the enum, naming the role.
pub fn token_role(value: i32) -> Result<Option<&'static str>, RequestError> {
    match pb::NodeRole::try_from(value) {
        Ok(pb::NodeRole::Unspecified) => Ok(None),
        Ok(pb::NodeRole::Server) => Ok(Some("server")),
        Ok(pb::NodeRole::Agent) => Ok(Some("agent")),
        Err(_) => Err(refuse(
            "role",
            format!("role {value} is neither server nor agent"),
        )),
    }
}

/// A node's file error → the wire.
#[must_use]
pub fn node_file_error(node: String, error: FileErrorRow) -> pb::NodeFileError {
    pb::NodeFileError {
        node,
        error: Some(pb::FileError {
            path: error.path,
            reason: error.reason,
        }),
    }
}

/// A node's certificate → the wire.
#[must_use]
pub fn node_certificate(node: &str, row: &CertRow) -> pb::NodeCertificate {
    pb::NodeCertificate {
        node: node.to_owned(),
        certificate: Some(pb::Certificate::from(row)),
    }
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
    pb::Certificate::from(row)
}

impl From<&CertRow> for pb::Certificate {
    fn from(row: &CertRow) -> Self {
        Self {
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
pub fn node_message(node: &NodeRecord, error_count: u32, worst_finding: String) -> pb::NodeInfo {
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
        worst_finding,
        install_method: String::new(),
        install_detail: String::new(),
        cluster: node.cluster.clone(),
    }
}

/// The wire word for a plan kind.
#[must_use]
pub fn plan_kind_value(kind: PlanKind) -> i32 {
    pb::PlanKind::from(kind).into()
}

impl From<PlanKind> for pb::PlanKind {
    fn from(kind: PlanKind) -> Self {
        match kind {
            PlanKind::Rotate => Self::Rotate,
            PlanKind::Restart => Self::Restart,
            PlanKind::Upgrade => Self::Upgrade,
        }
    }
}

/// A plan kind from the wire.
///
/// # Errors
/// [`ConvertError`] for an unspecified or unknown kind.
pub fn plan_kind(value: i32) -> Result<PlanKind, ConvertError> {
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
pub fn plan_state_value(state: PlanState) -> i32 {
    pb::PlanState::from(state).into()
}

impl From<PlanState> for pb::PlanState {
    fn from(state: PlanState) -> Self {
        match state {
            PlanState::Running => Self::Running,
            PlanState::Paused => Self::Paused,
            PlanState::Halted => Self::Halted,
            PlanState::Completed => Self::Completed,
            PlanState::Aborted => Self::Aborted,
        }
    }
}

/// One plan node on the wire.
#[must_use]
pub fn plan_node_message(n: &PlanNode) -> pb::PlanNodeView {
    pb::PlanNodeView::from(n)
}

impl From<&PlanNode> for pb::PlanNodeView {
    fn from(n: &PlanNode) -> Self {
        Self {
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
            etcd_snapshot: n.etcd_snapshot.clone(),
            ..Self::default()
        }
    }
}

/// Each of the plan's probes with its record (an empty record before its first check).
#[must_use]
pub fn probe_reports(
    plan: &Plan,
    tallies: &[(String, crate::probe::Tally)],
    now: OffsetDateTime,
) -> Vec<pb::ProbeReport> {
    plan.policy
        .probes
        .iter()
        .map(|spec| {
            let tally = tallies
                .iter()
                .find(|(n, _)| *n == spec.name)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            let longest = tally.longest.as_ref();
            pb::ProbeReport {
                name: spec.name.clone(),
                target: spec.target.describe(),
                samples: tally.samples,
                failures: tally.failures,
                availability_percent: tally.availability(),
                down: tally.down,
                last_error: tally.last_error.clone(),
                longest_outage_start: longest.map(|o| timestamp(o.start)),
                longest_outage_end: longest.and_then(|o| o.end.map(timestamp)),
                longest_outage_seconds: longest.map_or(0, |o| o.seconds(now)),
                longest_outage_nodes: longest.map(|o| o.nodes.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Adds the images phase to a plan on the wire: the summary line and each staged node's
/// state (`pending` for one not started: what a dry run shows per node).
pub fn add_images(view: &mut pb::PlanView, plan: &Plan, nodes: &[PlanNode], rows: &[NodeImages]) {
    let all = crate::plan::images::of_nodes(plan.kind, &plan.policy, nodes, rows);
    view.images = crate::plan::images::summary(&all);
    for n in &mut view.nodes {
        if let Some(r) = all.iter().find(|r| r.node == n.name) {
            n.images = r.state.name().to_owned();
            n.images_detail.clone_from(&r.detail);
            n.images_started_at = r.started_at.map(timestamp);
            n.images_finished_at = r.finished_at.map(timestamp);
        }
    }
}

impl From<&PlanEvent> for pb::PlanEvent {
    fn from(e: &PlanEvent) -> Self {
        Self {
            at: Some(timestamp(e.at)),
            node: e.node.clone(),
            message: e.message.clone(),
        }
    }
}

/// A plan on the wire.
#[must_use]
pub fn plan_message(
    plan: &Plan,
    nodes: &[PlanNode],
    events: &[PlanEvent],
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
        nodes: nodes.iter().map(pb::PlanNodeView::from).collect(),
        gates,
        events: events.iter().map(pb::PlanEvent::from).collect(),
        origin: plan.origin.clone(),
        images: String::new(),
        probes: Vec::new(),
        cluster: plan.cluster.clone(),
        rollout: plan.rollout.map(|r| r.to_string()).unwrap_or_default(),
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

/// A status, every field checked before anything is written: a refused message changes
/// nothing. Errors name the field (`status.certificates[3].not_after`).
impl TryFrom<&pb::Status> for AgentStatus {
    type Error = ConvertError;

    fn try_from(status: &pb::Status) -> Result<Self, ConvertError> {
        let snapshot = if status.full {
            let rows = status
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| cert_row(c, &format!("status.certificates[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let errors: Vec<_> = status.errors.iter().map(error_row).collect();
            Some((rows, errors))
        } else {
            None
        };
        let renewal_deadline = status
            .renewal_deadline
            .as_ref()
            .map(|t| time_of(t, "status.renewal_deadline"))
            .transpose()?;
        let worst_status = worst_status_word(status.worst_status, "status.worst_status")?;
        let sent_at = status
            .sent_at
            .as_ref()
            .map(|t| time_of(t, "status.sent_at"))
            .transpose()?;
        let findings = status
            .doctor
            .as_ref()
            .map(|d| agent_findings(&d.findings))
            .transpose()?;
        Ok(Self {
            snapshot,
            renewal_deadline,
            worst_status,
            service_state: status.service_state.clone(),
            health: HealthStatus::from(status),
            sent_at,
            findings,
            install: status.install.as_ref().map(install_facts).transpose()?,
        })
    }
}

/// Longest text of an agent's install report (a package list is a few hundred bytes).
pub const MAX_INSTALL_FIELD: usize = 4096;

/// An agent's install report, bounded; an unknown method is refused naming the field.
///
/// # Errors
/// [`ConvertError`] naming `status.install.<field>`.
pub fn install_facts(install: &pb::InstallInfo) -> Result<InstallFacts, ConvertError> {
    for (name, text) in [
        ("method", &install.method),
        ("detail", &install.detail),
        ("package_manager", &install.package_manager),
        ("rpm_repository", &install.rpm_repository),
    ] {
        if text.len() > MAX_INSTALL_FIELD {
            return Err(bad(
                format!("status.install.{name}"),
                format!("longer than {MAX_INSTALL_FIELD} bytes"),
            ));
        }
        if text.contains(char::is_control) {
            return Err(bad(
                format!("status.install.{name}"),
                "control characters".to_owned(),
            ));
        }
    }
    if rke2ops_common::install::InstallMethod::from_name(&install.method).is_none()
        && install.method != rke2ops_common::install::MIXED
    {
        return Err(bad(
            "status.install.method".to_owned(),
            format!(
                "unknown method {} (rpm, tarball or mixed)",
                rke2ops_common::text::quoted(&install.method)
            ),
        ));
    }
    if !install.package_manager.is_empty()
        && !["dnf", "yum", "zypper"].contains(&install.package_manager.as_str())
    {
        return Err(bad(
            "status.install.package_manager".to_owned(),
            format!(
                "unknown package manager {}",
                rke2ops_common::text::quoted(&install.package_manager)
            ),
        ));
    }
    Ok(InstallFacts {
        method: install.method.clone(),
        detail: install.detail.clone(),
        package_manager: install.package_manager.clone(),
        rpm_repository: install.rpm_repository.clone(),
    })
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
                Operation::Rotate {
                    services,
                    etcd_snapshot,
                } => Kind::Rotate(pb::RotateOperation {
                    services,
                    etcd_snapshot,
                }),
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
                Operation::StageImages {
                    version,
                    artifact_source,
                } => Kind::StageImages(pb::StageImagesOperation {
                    version,
                    artifact_source,
                }),
                Operation::PruneImages { version } => {
                    Kind::PruneImages(pb::PruneImagesOperation { version })
                }
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
        let mut policy = PlanPolicy::from(req);
        policy.probes = crate::probe::spec::parse_all(&req.probes)
            .map_err(|e| refuse("probes", e.to_string()))?;
        if req.probe_halt_seconds > 0 {
            policy.probe_halt_secs = req.probe_halt_seconds;
        }
        Ok(Self {
            kind,
            target,
            nodes: req.nodes.clone(),
            policy,
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
            accept: req.accept.clone(),
            stage_images: req.stage_images,
            etcd_snapshot: req.etcd_snapshot,
            artifact_source: req.artifact_source.clone(),
            ready_timeout_secs: if req.ready_timeout_seconds == 0 {
                defaults.ready_timeout_secs
            } else {
                req.ready_timeout_seconds
            },
            operation_timeout_secs: defaults.operation_timeout_secs,
            // Parsed (and refused when bad) by `PlanAsk`.
            probes: Vec::new(),
            probe_halt_secs: if req.probe_halt_seconds == 0 {
                defaults.probe_halt_secs
            } else {
                req.probe_halt_seconds
            },
        }
    }
}

/// A doctor finding → wire.
#[must_use]
pub fn doctor_finding(f: &Finding) -> pb::DoctorFinding {
    pb::DoctorFinding::from(f)
}

/// Most findings one agent may report: a node has a few dozen files; more is an agent gone
/// wrong or hostile, and the store would keep it.
pub const MAX_AGENT_FINDINGS: usize = 256;
/// Longest text field of an agent's finding (object, fix, one piece of evidence).
pub const MAX_FINDING_FIELD: usize = 4096;
/// Most pieces of evidence on one finding.
pub const MAX_FINDING_EVIDENCE: usize = 32;

/// An agent's findings, bounded ([`MAX_AGENT_FINDINGS`], [`MAX_FINDING_FIELD`],
/// [`MAX_FINDING_EVIDENCE`]). A finding whose code this hub does not know (a newer agent) is
/// left out rather than refusing the status: the certificates in it still count. The node
/// of each finding is the stream's business and is filled in by the caller.
///
/// # Errors
/// [`ConvertError`] naming `status.doctor.findings[i]` and the field over a bound or with an
/// unknown severity.
pub fn agent_findings(findings: &[pb::DoctorFinding]) -> Result<Vec<Finding>, ConvertError> {
    if findings.len() > MAX_AGENT_FINDINGS {
        return Err(bad(
            "status.doctor.findings".to_owned(),
            format!(
                "{} findings, more than {MAX_AGENT_FINDINGS}",
                findings.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(findings.len());
    for (i, f) in findings.iter().enumerate() {
        let field = format!("status.doctor.findings[{i}]");
        if f.evidence.len() > MAX_FINDING_EVIDENCE {
            return Err(bad(
                format!("{field}.evidence"),
                format!("more than {MAX_FINDING_EVIDENCE} entries"),
            ));
        }
        let texts = [("object", &f.object), ("fix", &f.fix)]
            .into_iter()
            .chain(f.evidence.iter().map(|e| ("evidence.value", &e.value)))
            .chain(f.evidence.iter().map(|e| ("evidence.field", &e.field)));
        for (name, text) in texts {
            if text.len() > MAX_FINDING_FIELD {
                return Err(bad(
                    format!("{field}.{name}"),
                    format!("longer than {MAX_FINDING_FIELD} bytes"),
                ));
            }
        }
        if Code::parse(&f.code).is_none() {
            tracing::debug!(code = %rke2ops_common::text::quoted(&f.code), "finding with an unknown code left out");
            continue;
        }
        out.push(finding_of(f, &field)?);
    }
    Ok(out)
}

/// Wire → a doctor finding.
///
/// # Errors
/// [`ConvertError`] for a code or severity this build does not know (a newer hub).
pub fn finding_of(f: &pb::DoctorFinding, field: &str) -> Result<Finding, ConvertError> {
    let code = Code::parse(&f.code).ok_or_else(|| {
        bad(
            format!("{field}.code"),
            format!("unknown code {:?}", f.code),
        )
    })?;
    let severity = match f.severity.as_str() {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "blocker" => Severity::Blocker,
        other => {
            return Err(bad(
                format!("{field}.severity"),
                format!("unknown severity {other:?}"),
            ));
        }
    };
    Ok(Finding {
        code,
        severity,
        node: f.node.clone(),
        object: f.object.clone(),
        evidence: f
            .evidence
            .iter()
            .map(|e| Evidence {
                field: e.field.clone(),
                value: e.value.clone(),
            })
            .collect(),
        fix: f.fix.clone(),
    })
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

    #[test]
    fn plan_actions_convert_and_refusals_name_the_field() {
        let req = |action: pb::PlanAction, node: &str| pb::PlanActionRequest {
            action: action.into(),
            node: node.to_owned(),
            ..Default::default()
        };
        assert_eq!(
            Action::try_from(&req(pb::PlanAction::Pause, "")),
            Ok(Action::Pause)
        );
        assert_eq!(
            Action::try_from(&req(pb::PlanAction::Resume, "")),
            Ok(Action::Resume)
        );
        assert_eq!(
            Action::try_from(&req(pb::PlanAction::Abort, "")),
            Ok(Action::Abort)
        );
        assert_eq!(
            Action::try_from(&req(pb::PlanAction::Skip, "w1")),
            Ok(Action::Skip("w1".to_owned()))
        );
        let err = Action::try_from(&req(pb::PlanAction::Skip, "")).expect_err("no node");
        assert_eq!(
            (err.field, err.to_string().as_str()),
            ("node", "skip: which node (--node)")
        );
        let err = Action::try_from(&req(pb::PlanAction::Unspecified, "")).expect_err("none");
        assert_eq!(err.field, "action");
        assert_eq!(err.to_string(), "action: pause, resume, skip or abort");
    }

    fn create(kind: pb::PlanKind, version: &str, channel: &str) -> pb::CreatePlanRequest {
        pb::CreatePlanRequest {
            kind: kind.into(),
            version: version.to_owned(),
            channel: channel.to_owned(),
            grace_period_seconds: -1,
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_request_takes_its_target_from_exactly_one_of_version_and_channel() {
        let ask = PlanAsk::try_from(&create(pb::PlanKind::Upgrade, "v1.34.1+rke2r1", ""))
            .expect("a version");
        assert_eq!(
            ask.target,
            TargetAsk::Version("v1.34.1+rke2r1".parse().expect("version"))
        );
        let ask = PlanAsk::try_from(&create(pb::PlanKind::Upgrade, "", "stable")).expect("channel");
        assert_eq!(ask.target, TargetAsk::Channel("stable".to_owned()));
        let err = PlanAsk::try_from(&create(pb::PlanKind::Upgrade, "v1.34.1+rke2r1", "stable"))
            .expect_err("both");
        assert_eq!(
            err.to_string(),
            "upgrade: exactly one of --version and --channel"
        );
        let err = PlanAsk::try_from(&create(pb::PlanKind::Upgrade, "latest", ""))
            .expect_err("not a version");
        assert!(err.to_string().starts_with("version: "), "{err}");
        let err = PlanAsk::try_from(&create(pb::PlanKind::Rotate, "", "stable"))
            .expect_err("rotate takes no channel");
        assert_eq!(
            err.to_string(),
            "rotate: --version and --channel are for upgrades"
        );
        let ask = PlanAsk::try_from(&create(pb::PlanKind::Restart, "", "")).expect("restart");
        assert_eq!((ask.kind, ask.target), (PlanKind::Restart, TargetAsk::None));
    }

    #[test]
    fn an_unspecified_plan_kind_is_refused_naming_the_kind() {
        let err = PlanAsk::try_from(&create(pb::PlanKind::Unspecified, "", "")).expect_err("kind");
        assert_eq!(err.field, "kind");
        assert_eq!(
            err.to_string(),
            "invalid kind: 0 is not rotate, restart or upgrade"
        );
    }

    #[test]
    fn zero_timeouts_mean_the_defaults_and_a_negative_grace_period_each_pod_s_own() {
        let policy = PlanPolicy::from(&create(pb::PlanKind::Rotate, "", ""));
        let defaults = PlanPolicy::default();
        assert_eq!(policy.drain_timeout_secs, defaults.drain_timeout_secs);
        assert_eq!(policy.ready_timeout_secs, defaults.ready_timeout_secs);
        assert_eq!(policy.grace_period_secs, None);
        assert_eq!(policy.concurrency, 1, "at least one worker");
        assert!(policy.drain && policy.allow_rollback);
        let policy = PlanPolicy::from(&pb::CreatePlanRequest {
            no_drain: true,
            no_rollback: true,
            grace_period_seconds: 0,
            window: "  Sat 22:00-04:00 UTC ".to_owned(),
            ..create(pb::PlanKind::Rotate, "", "")
        });
        assert!(!policy.drain && !policy.allow_rollback);
        assert_eq!(policy.grace_period_secs, Some(0));
        assert_eq!(policy.window.as_deref(), Some("Sat 22:00-04:00 UTC"));
    }

    #[test]
    fn unknown_outcomes_and_step_phases_are_unspecified() {
        assert_eq!(Outcome::from(99), Outcome::Unspecified);
        assert_eq!(
            Outcome::from(i32::from(pb::OperationOutcome::Rejected)),
            Outcome::Rejected
        );
        assert_eq!(StepPhase::from(99), StepPhase::Unspecified);
        let result = OperationResult::from(pb::OperationResult {
            operation_id: "plan1-w1-1".into(),
            outcome: pb::OperationOutcome::Skipped.into(),
            detail: "already there".into(),
            unit_journal: vec!["line".into()],
            rke2_version: "v1.34.1+rke2r1".into(),
            finished_at: None,
        });
        assert_eq!(result.outcome, Outcome::Skipped);
        assert_eq!(result.unit_journal, ["line"]);
        let progress = OperationProgress::from(pb::OperationProgress {
            operation_id: "plan1-w1-1".into(),
            step: "wait-ready".into(),
            phase: pb::StepPhase::Failed.into(),
            detail: "timed out".into(),
            elapsed_ms: 5,
        });
        assert!(progress.phase.ended());
    }

    #[test]
    fn requests_to_agents_reach_the_wire_unchanged() {
        let run = ToAgent::Run(RunOperation {
            operation_id: "plan2-s1-1".into(),
            kind: Some(Operation::Upgrade {
                version: "v1.34.1+rke2r1".into(),
                artifact_source: "/srv/rke2".into(),
                allow_rollback: true,
            }),
        });
        let wire = pb::HubMessage::from(run);
        let Some(pb::hub_message::Body::Run(run)) = wire.body else {
            panic!("a run: {wire:?}");
        };
        assert_eq!(run.operation_id, "plan2-s1-1");
        assert_eq!(
            run.kind,
            Some(pb::run_operation::Kind::Upgrade(pb::UpgradeOperation {
                version: "v1.34.1+rke2r1".into(),
                artifact_source: "/srv/rke2".into(),
                allow_rollback: true,
            }))
        );
        let cancel = pb::HubMessage::from(ToAgent::Cancel {
            operation_id: "plan2-s1-1".into(),
        });
        assert!(matches!(
            cancel.body,
            Some(pb::hub_message::Body::Cancel(c)) if c.operation_id == "plan2-s1-1"
        ));
        assert!(matches!(
            pb::HubMessage::from(ToAgent::RequestStatus).body,
            Some(pb::hub_message::Body::RequestStatus(_))
        ));
    }

    #[test]
    fn a_status_s_health_reaches_the_engine() {
        let status = pb::Status {
            rke2_version: "v1.34.1+rke2r1".into(),
            etcd: Some(pb::EtcdHealth {
                members: vec![pb::EtcdMember {
                    name: "s1".into(),
                    healthy: false,
                }],
                alarms: vec!["NOSPACE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let health = HealthStatus::from(&status);
        assert_eq!(health.rke2_version, "v1.34.1+rke2r1");
        let etcd = health.etcd.expect("etcd");
        assert_eq!(etcd.members, [("s1".to_owned(), false)]);
        assert_eq!(etcd.alarms, ["NOSPACE"]);
        assert!(health.readiness.is_none());
    }

    #[test]
    fn a_status_is_checked_whole_and_refusals_name_the_field() {
        let mut full = pb::Status {
            full: true,
            certificates: vec![cert(), cert()],
            worst_status: pb::CertStatus::Warning.into(),
            service_state: "active".into(),
            ..Default::default()
        };
        let status = AgentStatus::try_from(&full).expect("valid");
        assert_eq!(status.snapshot.map(|(rows, _)| rows.len()), Some(2));
        assert_eq!(status.worst_status, Some("WARNING"));
        full.certificates[1].not_after = None;
        let err = AgentStatus::try_from(&full).expect_err("missing time");
        assert_eq!(err.field, "status.certificates[1].not_after");
        let summary = pb::Status {
            worst_status: 42,
            ..Default::default()
        };
        let err = AgentStatus::try_from(&summary).expect_err("unknown worst status");
        assert_eq!(err.field, "status.worst_status");
        let summary = pb::Status::default();
        let status = AgentStatus::try_from(&summary).expect("an empty summary is valid");
        assert!(status.snapshot.is_none() && status.worst_status.is_none());
    }

    #[test]
    fn token_roles_are_optional_but_never_unknown() {
        assert_eq!(token_role(0), Ok(None));
        assert_eq!(token_role(pb::NodeRole::Server.into()), Ok(Some("server")));
        assert_eq!(token_role(pb::NodeRole::Agent.into()), Ok(Some("agent")));
        let err = token_role(7).expect_err("outside the enum");
        assert_eq!(err.field, "role");
        assert_eq!(err.to_string(), "role 7 is neither server nor agent");
        assert_eq!(
            optional_role_value(None),
            i32::from(pb::NodeRole::Unspecified)
        );
        assert_eq!(
            optional_role_value(Some("agent")),
            i32::from(pb::NodeRole::Agent)
        );
    }

    #[test]
    fn doctor_findings_cross_the_wire_unchanged_and_unknown_codes_are_refused() {
        let f = Finding::new(
            Code::PdbBlocksDrain,
            Severity::Blocker,
            "w1,w2",
            "pdb shop/web",
            "kubectl -n shop get pdb web -o yaml",
        )
        .with("maxUnavailable", "0");
        let wire = doctor_finding(&f);
        assert_eq!(wire.code, "pdb-blocks-drain");
        assert_eq!(finding_of(&wire, "findings[0]"), Ok(f));
        let unknown = pb::DoctorFinding {
            code: "from-the-future".into(),
            severity: "blocker".into(),
            ..pb::DoctorFinding::default()
        };
        let err = finding_of(&unknown, "findings[0]").expect_err("unknown code");
        assert_eq!(err.field, "findings[0].code");
    }

    #[test]
    fn agent_findings_are_bounded_named_by_field_and_unknown_codes_left_out() {
        let f = |code: &str| pb::DoctorFinding {
            code: code.into(),
            severity: "warning".into(),
            node: "lies".into(),
            object: "agent/client-kubelet.crt".into(),
            evidence: vec![pb::DoctorEvidence {
                field: "reason".into(),
                value: "x".into(),
            }],
            fix: "restart".into(),
        };
        let kept = agent_findings(&[f("disk-low"), f("from-a-newer-agent")]).expect("accepted");
        assert_eq!(kept.len(), 1, "the unknown code is left out, the rest kept");
        assert_eq!(kept[0].code, Code::DiskLow);

        let many = vec![f("disk-low"); MAX_AGENT_FINDINGS + 1];
        let err = agent_findings(&many).expect_err("too many");
        assert_eq!(err.field, "status.doctor.findings");

        let mut long = f("disk-low");
        long.evidence[0].value = "x".repeat(MAX_FINDING_FIELD + 1);
        let err = agent_findings(&[f("disk-low"), long]).expect_err("too long");
        assert_eq!(err.field, "status.doctor.findings[1].evidence.value");

        let mut bad = f("disk-low");
        bad.severity = "catastrophic".into();
        let err = agent_findings(&[bad]).expect_err("bad severity");
        assert_eq!(err.field, "status.doctor.findings[0].severity");
    }
}

#[cfg(test)]
mod install_tests {
    use super::*;

    fn info(method: &str, pm: &str) -> pb::InstallInfo {
        pb::InstallInfo {
            method: method.into(),
            detail: "rke2-common-1.34.1~rke2r1-0".into(),
            package_manager: pm.into(),
            rpm_repository: "https://rpm.rancher.io/rke2/stable".into(),
        }
    }

    #[test]
    fn install_reports_are_checked_field_by_field() {
        let ok = install_facts(&info("rpm", "dnf")).expect("valid");
        assert_eq!(ok.method, "rpm");
        assert!(install_facts(&info("mixed", "")).is_ok());
        let err = install_facts(&info("deb", "")).expect_err("unknown method");
        assert!(err.to_string().contains("status.install.method"), "{err}");
        let err = install_facts(&info("rpm", "apt")).expect_err("unknown tool");
        assert!(
            err.to_string().contains("status.install.package_manager"),
            "{err}"
        );
        let mut long = info("rpm", "dnf");
        long.detail = "x".repeat(MAX_INSTALL_FIELD + 1);
        let err = install_facts(&long).expect_err("too long");
        assert!(err.to_string().contains("status.install.detail"), "{err}");
        let mut control = info("tarball", "");
        control.detail = "/usr/local\u{1b}[2J".into();
        assert!(install_facts(&control).is_err());
    }
}
