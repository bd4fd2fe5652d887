//! The agent's domain types ↔ the wire (`rke2ops.v1`), and the hub's `AgentService` client
//! in domain terms ([`HubClient`]). The only module of the agent that touches prost structs
//! or generated clients: the rest of the link speaks [`super::messages`].

use prost_types::Timestamp;
use rke2ops_common::certs::{CertStatus, Inventory};
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_client::AgentServiceClient;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::messages::{
    Hello, Incoming, OpProgress, OpResult, Outcome, Outgoing, RunRequest, StatusReport, StepPhase,
};
use super::probe::{EtcdHealth, Readiness};
use crate::ops::steps::OpKind;

/// A protobuf timestamp.
#[must_use]
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// RKE2 status word → wire enum.
#[must_use]
pub fn status(s: CertStatus) -> pb::CertStatus {
    match s {
        CertStatus::Ok => pb::CertStatus::Ok,
        CertStatus::Warning => pb::CertStatus::Warning,
        CertStatus::Expired => pb::CertStatus::Expired,
        CertStatus::NotYetValid => pb::CertStatus::NotYetValid,
    }
}

/// The node's status; with `full`, every certificate and file error.
#[must_use]
pub fn status_message(
    inventory: &Inventory,
    now: OffsetDateTime,
    warn: time::Duration,
    service_state: &str,
    full: bool,
) -> pb::Status {
    let deadline = inventory.leaves().map(|c| c.not_after).min();
    let certificates = if full {
        inventory
            .certificates
            .iter()
            .map(|c| pb::Certificate {
                path: c.path.clone(),
                index: u32::try_from(c.index).unwrap_or(u32::MAX),
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.clone(),
                usages: c.usages.iter().map(|u| u.as_str().to_owned()).collect(),
                is_ca: c.is_ca,
                sans: c.sans.clone(),
                not_before: Some(timestamp(c.not_before)),
                not_after: Some(timestamp(c.not_after)),
                status: status(c.status(now, warn)).into(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let errors = if full {
        inventory
            .errors
            .iter()
            .map(|e| pb::FileError {
                path: e.path.clone(),
                reason: e.reason.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    pb::Status {
        full,
        certificates,
        errors,
        renewal_deadline: deadline.map(timestamp),
        service_state: service_state.to_owned(),
        worst_status: inventory
            .worst_status(now, warn)
            .map_or(pb::CertStatus::Unspecified, status)
            .into(),
        error_count: u32::try_from(inventory.errors.len()).unwrap_or(u32::MAX),
        ..pb::Status::default()
    }
}

/// A status report on the wire: the certificates (see [`status_message`]) and the health.
#[must_use]
pub fn status_report(report: &StatusReport) -> pb::Status {
    let mut message = status_message(
        &report.snapshot.inventory,
        report.now,
        report.warn,
        &report.service_state,
        report.full,
    );
    message.readiness = Some(pb::Readiness::from(&report.health.readiness));
    message.etcd = report.health.etcd.as_ref().map(pb::EtcdHealth::from);
    message.rke2_version.clone_from(&report.health.rke2_version);
    let install = &report.health.install;
    message.install = (!install.method.is_empty()).then(|| pb::InstallInfo {
        method: install.method.clone(),
        detail: install.detail.clone(),
        package_manager: install.package_manager.clone(),
        rpm_repository: install.rpm_repository.clone(),
    });
    message.sent_at = Some(timestamp(report.now));
    message.doctor = report.doctor.as_ref().map(|findings| pb::DoctorFindings {
        findings: findings.iter().map(pb::DoctorFinding::from).collect(),
    });
    message
}

impl From<&Readiness> for pb::Readiness {
    fn from(r: &Readiness) -> Self {
        Self {
            apiserver_ready: r.apiserver_ready,
            kubelet_healthy: r.kubelet_healthy,
            detail: r.detail.clone(),
            checked_at: r.checked_at.map(timestamp),
        }
    }
}

impl From<&EtcdHealth> for pb::EtcdHealth {
    fn from(e: &EtcdHealth) -> Self {
        Self {
            members: e
                .members
                .iter()
                .map(|m| pb::EtcdMember {
                    name: m.name.clone(),
                    healthy: m.healthy,
                })
                .collect(),
            alarms: e.alarms.clone(),
            checked_at: e.checked_at.map(timestamp),
            error: e.error.clone(),
        }
    }
}

impl From<Hello> for pb::Hello {
    fn from(h: Hello) -> Self {
        let role = if h.is_server {
            pb::NodeRole::Server
        } else {
            pb::NodeRole::Agent
        };
        Self {
            node_name: h.node_name,
            role: role.into(),
            rke2_version: h.rke2_version,
            agent_version: h.agent_version,
            cluster: h.cluster,
        }
    }
}

impl From<StepPhase> for pb::StepPhase {
    fn from(p: StepPhase) -> Self {
        match p {
            StepPhase::Started => Self::Started,
            StepPhase::Succeeded => Self::Succeeded,
            StepPhase::Failed => Self::Failed,
        }
    }
}

impl From<OpProgress> for pb::OperationProgress {
    fn from(p: OpProgress) -> Self {
        Self {
            operation_id: p.operation_id,
            step: p.step,
            phase: pb::StepPhase::from(p.phase).into(),
            detail: p.detail,
            elapsed_ms: p.elapsed_ms,
        }
    }
}

impl From<Outcome> for pb::OperationOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Succeeded => Self::Succeeded,
            Outcome::Skipped => Self::Skipped,
            Outcome::Failed => Self::Failed,
            Outcome::Rejected => Self::Rejected,
        }
    }
}

impl From<OpResult> for pb::OperationResult {
    fn from(r: OpResult) -> Self {
        Self {
            operation_id: r.operation_id,
            outcome: pb::OperationOutcome::from(r.outcome).into(),
            detail: r.detail,
            unit_journal: r.unit_journal,
            rke2_version: r.rke2_version,
            finished_at: r.finished_at.map(timestamp),
        }
    }
}

impl From<Outgoing> for pb::AgentMessage {
    fn from(message: Outgoing) -> Self {
        use pb::agent_message::Body;
        let body = match message {
            Outgoing::Hello(hello) => Body::Hello(hello.into()),
            Outgoing::Status(report) => Body::Status(status_report(&report)),
            Outgoing::Heartbeat => Body::Heartbeat(pb::Heartbeat {}),
            Outgoing::Progress(progress) => Body::Progress(progress.into()),
            Outgoing::Result(result) => Body::Result(result.into()),
        };
        Self { body: Some(body) }
    }
}

/// The wire request as an operation, every field the hub chose checked before it can reach
/// a path, a unit or a command line: an upgrade's `version` must be a canonical RKE2
/// version (it names the release folder to fetch), a rotation's `services` must be names
/// RKE2 knows (they become `--service` arguments), an `artifact_source` must be a URL or an
/// absolute folder (`allowed_artifact_sources` is checked when it runs).
///
/// # Errors
/// A message for the REJECTED result naming the field.
pub fn kind_of(run: &pb::RunOperation) -> Result<OpKind, String> {
    use pb::run_operation::Kind;
    match &run.kind {
        Some(Kind::Rotate(r)) => {
            if let Some(bad) = r
                .services
                .iter()
                .find(|s| rke2ops_common::layout::service_certs(s).is_none())
            {
                return Err(format!(
                    "bad request: rotate.services: unknown service {} (known: {})",
                    rke2ops_common::text::quoted(bad),
                    rke2ops_common::layout::SERVICES.join(", ")
                ));
            }
            Ok(OpKind::Rotate {
                services: r.services.clone(),
                etcd_snapshot: r.etcd_snapshot,
            })
        }
        Some(Kind::Restart(_)) => Ok(OpKind::RenewByRestart),
        Some(Kind::Upgrade(u)) => {
            u.version
                .parse::<rke2ops_common::version::Rke2Version>()
                .map_err(|e| format!("bad request: upgrade.version: {e}"))?;
            let source = Some(u.artifact_source.clone()).filter(|s| !s.is_empty());
            if let Some(source) = &source {
                crate::ops::artifacts::Source::parse(source)
                    .map_err(|e| format!("bad request: upgrade.artifact_source: {e}"))?;
            }
            Ok(OpKind::Upgrade {
                version: u.version.clone(),
                source,
                allow_rollback: u.allow_rollback,
            })
        }
        Some(Kind::StageImages(i)) => {
            i.version
                .parse::<rke2ops_common::version::Rke2Version>()
                .map_err(|e| format!("bad request: stage_images.version: {e}"))?;
            let source = Some(i.artifact_source.clone()).filter(|s| !s.is_empty());
            if let Some(source) = &source {
                crate::ops::artifacts::Source::parse(source)
                    .map_err(|e| format!("bad request: stage_images.artifact_source: {e}"))?;
            }
            Ok(OpKind::StageImages {
                version: i.version.clone(),
                source,
            })
        }
        Some(Kind::PruneImages(p)) => {
            // The version is the suffix every kept archive's name carries: it must be one.
            p.version
                .parse::<rke2ops_common::version::Rke2Version>()
                .map_err(|e| format!("bad request: prune_images.version: {e}"))?;
            Ok(OpKind::PruneImages {
                version: p.version.clone(),
            })
        }
        None => Err("bad request: no operation kind".to_owned()),
    }
}

impl From<pb::RunOperation> for RunRequest {
    fn from(run: pb::RunOperation) -> Self {
        Self {
            kind: kind_of(&run),
            operation_id: run.operation_id,
        }
    }
}

impl From<pb::HubMessage> for Incoming {
    fn from(message: pb::HubMessage) -> Self {
        use pb::hub_message::Body;
        match message.body {
            Some(Body::RequestStatus(_)) => Self::RequestStatus,
            Some(Body::Run(run)) => Self::Run(run.into()),
            Some(Body::Cancel(cancel)) => Self::Cancel(cancel.operation_id),
            _ => Self::Unknown,
        }
    }
}

/// What the hub returns for an enrollment or a renewal.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The node's new certificate (PEM).
    pub certificate_pem: String,
    /// The hub CA (PEM).
    pub ca_pem: String,
}

/// The hub's `AgentService` over one channel, in domain terms.
#[derive(Debug, Clone)]
pub struct HubClient {
    /// The generated client.
    inner: AgentServiceClient<tonic::transport::Channel>,
}

impl HubClient {
    /// A client over `channel` (see [`super::tls::channel`]).
    #[must_use]
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            inner: AgentServiceClient::new(channel),
        }
    }

    /// `Enroll`: the join token and a CSR for `node_name` buy a certificate.
    ///
    /// # Errors
    /// The hub's refusal.
    pub async fn enroll(
        &mut self,
        token: &str,
        node_name: &str,
        cluster: &str,
        csr_pem: String,
    ) -> Result<Issued, tonic::Status> {
        let response = self
            .inner
            .enroll(pb::EnrollRequest {
                token: token.to_owned(),
                node_name: node_name.to_owned(),
                csr_pem,
                cluster: cluster.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Issued {
            certificate_pem: response.certificate_pem,
            ca_pem: response.ca_pem,
        })
    }

    /// `RenewCertificate` over the authenticated channel.
    ///
    /// # Errors
    /// The hub's refusal.
    pub async fn renew(&mut self, csr_pem: String) -> Result<Issued, tonic::Status> {
        let response = self
            .inner
            .renew_certificate(pb::RenewRequest { csr_pem })
            .await?
            .into_inner();
        Ok(Issued {
            certificate_pem: response.certificate_pem,
            ca_pem: response.ca_pem,
        })
    }

    /// `Connect`: `outgoing` becomes the agent's side of the stream.
    ///
    /// # Errors
    /// The hub's refusal of the stream.
    pub async fn connect(
        &mut self,
        outgoing: mpsc::Receiver<Outgoing>,
    ) -> Result<Inbound, tonic::Status> {
        let stream = ReceiverStream::new(outgoing).map(pb::AgentMessage::from);
        let inner = self.inner.connect(stream).await?.into_inner();
        Ok(Inbound { inner })
    }
}

/// The hub's side of the stream.
#[derive(Debug)]
pub struct Inbound {
    /// The generated stream.
    inner: tonic::Streaming<pb::HubMessage>,
}

impl Inbound {
    /// The next message; `None` when the hub ended the stream.
    ///
    /// # Errors
    /// A stream error.
    pub async fn message(&mut self) -> Result<Option<Incoming>, tonic::Status> {
        Ok(self.inner.message().await?.map(Incoming::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_seconds_and_nanos() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_500_000_123_456_789).expect("time");
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_795_500_000, 123_456_789));
    }

    #[test]
    fn empty_inventory_has_no_deadline_and_unspecified_worst() {
        let msg = status_message(
            &Inventory::default(),
            OffsetDateTime::now_utc(),
            time::Duration::days(120),
            "active",
            true,
        );
        assert!(msg.renewal_deadline.is_none());
        assert_eq!(msg.worst_status, i32::from(pb::CertStatus::Unspecified));
        assert_eq!(msg.service_state, "active");
    }

    #[test]
    fn upgrade_requests_take_the_configured_source_when_empty() {
        let run = pb::RunOperation {
            operation_id: "u".into(),
            kind: Some(pb::run_operation::Kind::Upgrade(pb::UpgradeOperation {
                version: "v1.34.1+rke2r1".into(),
                artifact_source: String::new(),
                allow_rollback: true,
            })),
        };
        assert_eq!(
            kind_of(&run),
            Ok(OpKind::Upgrade {
                version: "v1.34.1+rke2r1".into(),
                source: None,
                allow_rollback: true
            })
        );
        assert!(kind_of(&pb::RunOperation::default()).is_err());
    }

    #[test]
    fn image_operations_convert_and_bad_fields_are_named() {
        let stage = |version: &str, source: &str| pb::RunOperation {
            operation_id: "i".into(),
            kind: Some(pb::run_operation::Kind::StageImages(
                pb::StageImagesOperation {
                    version: version.into(),
                    artifact_source: source.into(),
                },
            )),
        };
        assert_eq!(
            kind_of(&stage("v1.34.1+rke2r1", "/srv/rke2")),
            Ok(OpKind::StageImages {
                version: "v1.34.1+rke2r1".into(),
                source: Some("/srv/rke2".into()),
            })
        );
        let why = kind_of(&stage("../x", "")).expect_err("bad version");
        assert!(why.contains("stage_images.version"), "{why}");
        let why = kind_of(&stage("v1.34.1+rke2r1", "rel")).expect_err("bad source");
        assert!(why.contains("stage_images.artifact_source"), "{why}");
        let prune = |version: &str| pb::RunOperation {
            operation_id: "p".into(),
            kind: Some(pb::run_operation::Kind::PruneImages(
                pb::PruneImagesOperation {
                    version: version.into(),
                },
            )),
        };
        assert_eq!(
            kind_of(&prune("v1.34.1+rke2r1")),
            Ok(OpKind::PruneImages {
                version: "v1.34.1+rke2r1".into()
            })
        );
        let why = kind_of(&prune("*")).expect_err("bad version");
        assert!(why.contains("prune_images.version"), "{why}");
    }

    #[test]
    fn hostile_fields_are_rejected_naming_the_field() {
        let upgrade = |version: &str, source: &str| pb::RunOperation {
            operation_id: "u".into(),
            kind: Some(pb::run_operation::Kind::Upgrade(pb::UpgradeOperation {
                version: version.into(),
                artifact_source: source.into(),
                allow_rollback: true,
            })),
        };
        for bad in ["v1.34.01+rke2r1", "../../etc", "v1.34.1+rke2r1/../x", ""] {
            let why = kind_of(&upgrade(bad, "")).expect_err(bad);
            assert!(why.contains("upgrade.version"), "{why}");
        }
        let why = kind_of(&upgrade("v1.34.1+rke2r1", "relative/dir")).expect_err("relative");
        assert!(why.contains("upgrade.artifact_source"), "{why}");
        let rotate = pb::RunOperation {
            operation_id: "r".into(),
            kind: Some(pb::run_operation::Kind::Rotate(pb::RotateOperation {
                services: vec!["kubelet".into(), "--data-dir=/".into()],
                etcd_snapshot: true,
            })),
        };
        let why = kind_of(&rotate).expect_err("unknown service");
        assert!(
            why.contains("rotate.services") && why.contains("--data-dir=/"),
            "{why}"
        );
    }

    #[test]
    fn outcomes_and_phases_map_to_their_wire_enums() {
        for (outcome, wire) in [
            (Outcome::Succeeded, pb::OperationOutcome::Succeeded),
            (Outcome::Skipped, pb::OperationOutcome::Skipped),
            (Outcome::Failed, pb::OperationOutcome::Failed),
            (Outcome::Rejected, pb::OperationOutcome::Rejected),
        ] {
            assert_eq!(pb::OperationOutcome::from(outcome), wire);
        }
        for (phase, wire) in [
            (StepPhase::Started, pb::StepPhase::Started),
            (StepPhase::Succeeded, pb::StepPhase::Succeeded),
            (StepPhase::Failed, pb::StepPhase::Failed),
        ] {
            assert_eq!(pb::StepPhase::from(phase), wire);
        }
    }

    #[test]
    fn a_status_report_carries_the_health_probes() {
        let now = OffsetDateTime::from_unix_timestamp(1_795_500_000).expect("time");
        let report = StatusReport {
            snapshot: std::sync::Arc::new(crate::state::Snapshot {
                inventory: Inventory::default(),
                scanned_at: now,
                findings: Vec::new(),
            }),
            now,
            warn: time::Duration::days(120),
            service_state: "active".into(),
            full: false,
            health: super::super::probe::Probe {
                readiness: Readiness {
                    apiserver_ready: true,
                    kubelet_healthy: false,
                    detail: "kubelet: refused".into(),
                    checked_at: Some(now),
                },
                etcd: None,
                rke2_version: "v1.34.1+rke2r1".into(),
                install: super::super::probe::InstallInfo {
                    method: "rpm".into(),
                    detail: "rke2-common-1.34.1~rke2r1-0".into(),
                    package_manager: "dnf".into(),
                    rpm_repository: "/srv/rpms".into(),
                },
            },
            doctor: Some(vec![
                rke2ops_common::doctor::Finding::new(
                    rke2ops_common::doctor::Code::UnitFailed,
                    rke2ops_common::doctor::Severity::Blocker,
                    "n1",
                    "rke2-server",
                    "journalctl -u rke2-server",
                )
                .with("result", "exit-code"),
            ]),
        };
        let message = pb::AgentMessage::from(Outgoing::Status(Box::new(report)));
        let Some(pb::agent_message::Body::Status(status)) = message.body else {
            panic!("not a status: {message:?}");
        };
        let readiness = status.readiness.expect("readiness");
        assert!(readiness.apiserver_ready && !readiness.kubelet_healthy);
        assert_eq!(readiness.checked_at, Some(timestamp(now)));
        assert_eq!(status.rke2_version, "v1.34.1+rke2r1");
        let install = status.install.as_ref().expect("install");
        assert_eq!(
            (install.method.as_str(), install.package_manager.as_str()),
            ("rpm", "dnf")
        );
        assert!(status.etcd.is_none() && !status.full);
        // The agent's clock rides along (the hub's clock-skew check), and changed findings.
        assert_eq!(status.sent_at, Some(timestamp(now)));
        let findings = status.doctor.expect("findings sent").findings;
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].code, "unit-failed");
        assert_eq!(findings[0].evidence[0].value, "exit-code");
    }

    #[test]
    fn hub_messages_become_domain_requests() {
        let run = pb::HubMessage {
            body: Some(pb::hub_message::Body::Run(pb::RunOperation {
                operation_id: "op-1".into(),
                kind: None,
            })),
        };
        match Incoming::from(run) {
            Incoming::Run(request) => {
                assert_eq!(request.operation_id, "op-1");
                assert!(request.kind.is_err(), "no kind is refused");
            }
            other => panic!("not a run: {other:?}"),
        }
        let cancel = pb::HubMessage {
            body: Some(pb::hub_message::Body::Cancel(pb::CancelOperation {
                operation_id: "op-1".into(),
            })),
        };
        assert_eq!(Incoming::from(cancel), Incoming::Cancel("op-1".into()));
        assert_eq!(
            Incoming::from(pb::HubMessage { body: None }),
            Incoming::Unknown
        );
    }
}
