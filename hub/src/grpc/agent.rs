//! `AgentService`: enrollment (token + CSR), certificate renewal, and each agent's stream.
//!
//! Every call made with a node certificate is checked against the serial the hub recorded for
//! that node ([`crate::pki::judge_credential`]): a superseded or revoked certificate is refused
//! with `UNAUTHENTICATED` and the reason, although its chain is the hub CA's.

use std::pin::Pin;

use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_server::AgentService;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::convert;
use super::{Caller, Hub, caller, internal, observed};
use crate::engine::messages::{AgentStatus, ToAgent};
use crate::pki::token::JoinToken;
use crate::pki::{
    CredentialVerdict, EnrollmentKind, EnrollmentRefusal, HelloCluster, HelloRole,
    certificate_serial,
};
use crate::registry::AgentLink;
use crate::store::{CredentialKind, Enrollment, StoreError, TokenError};

/// The service.
#[derive(Debug, Clone)]
pub struct AgentApi {
    hub: Hub,
}

impl AgentApi {
    /// Serves `hub`.
    #[must_use]
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }
}

type HubStream = Pin<Box<dyn Stream<Item = Result<pb::HubMessage, Status>> + Send>>;

/// An agent's response stream as the registry sees it: domain requests in, wire messages out.
#[derive(Debug)]
struct AgentStream(mpsc::Sender<Result<pb::HubMessage, Status>>);

impl AgentLink for AgentStream {
    fn try_send(&self, message: ToAgent) -> bool {
        self.0.try_send(Ok(message.into())).is_ok()
    }
}

/// The cluster an agent names in its enrollment or hello: the default when it names none
/// (agents from before clusters), else a checked DNS label.
fn claimed_cluster(named: &str) -> Result<String, Status> {
    if named.is_empty() {
        return Ok(rke2ops_common::ids::DEFAULT_CLUSTER.to_owned());
    }
    rke2ops_common::ids::check_cluster_name(named)
        .map_err(|e| Status::invalid_argument(format!("cluster: {e}")))?;
    Ok(named.to_owned())
}

fn node_of<T>(request: &Request<T>) -> Result<String, Status> {
    match caller(request)? {
        Caller::Node(name) => Ok(name),
        Caller::Admin(_) => Err(Status::permission_denied(
            "admin certificates cannot act as a node",
        )),
        Caller::Anonymous => Err(Status::unauthenticated(
            "a node client certificate is required (enroll first)",
        )),
    }
}

/// The serial of the TLS client certificate of `request`, as the hub records serials.
///
/// # Errors
/// `Unauthenticated` when there is no client certificate or it cannot be read.
pub(super) fn peer_serial<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    certificate_serial(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate not usable here: {e}")))
}

/// Checks that the certificate with `serial` is still the current one of `name` (adopting it
/// for a name enrolled before serials were kept). Shared by both services: admin
/// certificates are checked the same way.
///
/// # Errors
/// `Unauthenticated` naming the holder and why (superseded, revoked, not enrolled, not
/// current); `Internal` when the store fails.
pub(super) fn check_credential(
    hub: &Hub,
    kind: CredentialKind,
    name: &str,
    serial: &str,
) -> Result<(), Status> {
    let now = OffsetDateTime::now_utc();
    match hub
        .store
        .check_credential(kind, name, serial, now)
        .map_err(internal)?
    {
        CredentialVerdict::Accept => Ok(()),
        CredentialVerdict::Adopt => {
            tracing::info!(holder = %kind.who(name), %serial, "recorded the certificate of a holder enrolled before serials were kept");
            Ok(())
        }
        CredentialVerdict::Refuse(refusal) => {
            tracing::warn!(holder = %kind.who(name), %serial, reason = %refusal, "certificate refused");
            Err(Status::unauthenticated(refusal.to_string()))
        }
    }
}

/// The node calling with a node certificate that is still current: its name and serial.
fn current_node<T>(hub: &Hub, request: &Request<T>) -> Result<(String, String), Status> {
    let node = node_of(request)?;
    let serial = peer_serial(request)?;
    check_credential(hub, CredentialKind::Node, &node, &serial)?;
    Ok((node, serial))
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let started = std::time::Instant::now();
        let result = match self.hub.leader_only() {
            Ok(()) => self.enroll_inner(request).await,
            Err(refusal) => Err(refusal),
        };
        observed(&self.hub, "Enroll", started, result)
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let started = std::time::Instant::now();
        let result = match self.hub.leader_only() {
            Ok(()) => self.renew_inner(request).await,
            Err(refusal) => Err(refusal),
        };
        observed(&self.hub, "RenewCertificate", started, result)
    }

    type ConnectStream = HubStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        let started = std::time::Instant::now();
        let result = match self.hub.leader_only() {
            Ok(()) => self.connect_inner(request).await,
            Err(refusal) => Err(refusal),
        };
        observed(&self.hub, "Connect", started, result)
    }
}

impl AgentApi {
    async fn enroll_inner(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let now = OffsetDateTime::now_utc();
        let req = request.into_inner();
        let (id, secret) = JoinToken::parse(&req.token)
            .map_err(|e| Status::invalid_argument(format!("join token: {e}")))?;
        // Sign first (validates the CSR and name) so a bad request does not burn the token;
        // the certificate is only released once the enrollment is recorded.
        let signed = self
            .hub
            .ca
            .sign_node_csr(&req.csr_pem, &req.node_name, now)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        let cluster = claimed_cluster(&req.cluster)?;
        let store = self.hub.store.clone();
        let (node, token_id, serial) = (req.node_name.clone(), id.clone(), signed.serial.clone());
        let hash = secret.hash();
        let not_after = signed.not_after;
        let span = tracing::info_span!("enroll", node = %req.node_name);
        let enrolled = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                store.enroll_node(&Enrollment {
                    token_id: &token_id,
                    secret_hash: &hash,
                    node: &node,
                    claimed_role: None,
                    cluster: &cluster,
                    serial: &serial,
                    not_after,
                    now,
                })
            })
        })
        .await
        .map_err(internal)?
        .map_err(|e| match e {
            TokenError::Store(e) => internal(e),
            TokenError::Refused(refusal) => {
                // Only a holder of the token's secret gets here: the reason is theirs to know.
                tracing::warn!(token = %id, node = %req.node_name, reason = %refusal, "enrollment refused");
                match refusal {
                    EnrollmentRefusal::AlreadyEnrolled { .. } => {
                        Status::already_exists(refusal.to_string())
                    }
                    EnrollmentRefusal::BoundToOtherNode { .. }
                    | EnrollmentRefusal::BoundToOtherCluster { .. } => {
                        Status::permission_denied(refusal.to_string())
                    }
                }
            }
            refused => {
                // The reason (unknown, used, expired, wrong secret) goes to the log only:
                // an enrolling peer learns nothing about which tokens exist.
                tracing::warn!(token = %id, node = %req.node_name, reason = %refused, "join token refused");
                Status::permission_denied("join token refused")
            }
        })?;
        if enrolled.kind == EnrollmentKind::Replace && self.hub.registry.end(&req.node_name) {
            // The superseded certificate's stream ends now, not at its next reconnect.
            self.hub.engine.on_disconnected(&req.node_name);
            let _ = self
                .hub
                .store
                .set_online(&req.node_name, false, OffsetDateTime::now_utc());
        }
        tracing::info!(
            node = %req.node_name,
            token = %id,
            serial = %signed.serial,
            role = enrolled.role.as_deref().unwrap_or("(first hello)"),
            replaced = enrolled.superseded.as_deref().unwrap_or(""),
            "node enrolled"
        );
        Ok(Response::new(pb::EnrollResponse {
            certificate_pem: signed.cert_pem,
            ca_pem: self.hub.ca.cert_pem().to_owned(),
            not_after: Some(convert::timestamp(signed.not_after)),
        }))
    }

    async fn renew_inner(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let (node, presented) = current_node(&self.hub, &request)?;
        if !self
            .hub
            .renewal_limit
            .allow(&node, std::time::Instant::now())
        {
            return Err(Status::resource_exhausted(format!(
                "node {node}: more than {} certificate renewals within {} s; try later",
                crate::ratelimit::RENEWAL.burst,
                crate::ratelimit::RENEWAL.every.as_secs()
                    * u64::from(crate::ratelimit::RENEWAL.burst)
            )));
        }
        let now = OffsetDateTime::now_utc();
        let signed = self
            .hub
            .ca
            .sign_node_csr(&request.get_ref().csr_pem, &node, now)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        self.hub
            .store
            .renew_node_certificate(&node, &presented, &signed.serial, signed.not_after, now)
            .map_err(|e| match e {
                StoreError::CredentialChanged { .. } | StoreError::NotEnrolled { .. } => {
                    Status::unauthenticated(e.to_string())
                }
                other => internal(other),
            })?;
        tracing::info!(%node, old = %presented, new = %signed.serial, "node certificate renewed");
        Ok(Response::new(pb::EnrollResponse {
            certificate_pem: signed.cert_pem,
            ca_pem: self.hub.ca.cert_pem().to_owned(),
            not_after: Some(convert::timestamp(signed.not_after)),
        }))
    }

    async fn connect_inner(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        let (node, _serial) = current_node(&self.hub, &request)?;
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Hello(hello)),
            })) => hello,
            Some(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
            Some(Err(e)) => return Err(e),
            None => return Err(Status::cancelled("stream closed before hello")),
        };
        if hello.node_name != node {
            tracing::warn!(certificate = %node, claimed = %hello.node_name, "hello claims another node");
            return Err(Status::permission_denied(format!(
                "certificate is for node {node:?}, hello claims {:?}",
                hello.node_name
            )));
        }
        if hello.rke2_version.len() > MAX_FIELD || hello.agent_version.len() > MAX_FIELD {
            return Err(Status::invalid_argument(format!(
                "hello.rke2_version / hello.agent_version: longer than {MAX_FIELD} bytes"
            )));
        }
        let claimed = convert::role_word(hello.role);
        if claimed == "unknown" {
            return Err(Status::invalid_argument(
                "hello.role must be server or agent",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let store = self.hub.store.clone();
        // The cluster is the enrolled one; a node never moves between clusters. Checked
        // first: a refused hello changes nothing, not even a role it would have fixed.
        let cluster = match store
            .hello_cluster(&node, &claimed_cluster(&hello.cluster)?)
            .map_err(internal)?
        {
            HelloCluster::Fix(cluster) => {
                tracing::info!(%node, %cluster, "cluster fixed by the first hello of a node enrolled before clusters");
                cluster
            }
            HelloCluster::Matches(cluster) => cluster,
            HelloCluster::Refuse { fixed, claimed } => {
                tracing::warn!(%node, cluster = %fixed, %claimed, "hello names another cluster than the enrolled one; refused");
                return Err(Status::failed_precondition(format!(
                    "node {node:?} is enrolled in cluster {fixed:?} but its agent names cluster \
                     {claimed:?}: a node never moves between clusters; fix `cluster` in its \
                     config, or re-enroll it with a token from `rke2-hub token create --node \
                     {node} --replace --cluster {claimed}`"
                )));
            }
        };
        // The role is the enrolled one: a hello fixes it only when nothing did before.
        let decision = store.hello_role(&node, claimed).map_err(internal)?;
        match &decision {
            HelloRole::Fix(role) => {
                tracing::info!(%node, %role, "role fixed by the node's first hello");
            }
            HelloRole::Matches(_) => {}
            HelloRole::Ignore { fixed, claimed } => {
                tracing::warn!(%node, role = %fixed, %claimed, "hello claims another role than the enrolled one; ignored");
            }
        }
        let role = decision.role();
        store
            .upsert_node_hello(&node, role, &hello.rke2_version, &hello.agent_version, now)
            .map_err(internal)?;
        store.set_node_cluster(&node, &cluster).map_err(internal)?;
        store.set_online(&node, true, now).map_err(internal)?;
        let (tx, rx) = mpsc::channel(16);
        let session = self
            .hub
            .registry
            .connect(&node, AgentStream(tx.clone()), now);
        let heartbeat_timeout = self.hub.heartbeat_timeout;
        self.hub.engine.on_connected(&node, &hello.rke2_version);
        tracing::info!(%node, %role, version = %hello.rke2_version, "agent connected");

        let registry = std::sync::Arc::clone(&self.hub.registry);
        let engine = std::sync::Arc::clone(&self.hub.engine);
        let shutdown = self.hub.shutdown.clone();
        let metrics = std::sync::Arc::clone(&self.hub.metrics);
        let full_status_limit = std::sync::Arc::clone(&self.hub.full_status_limit);
        let summary_status_limit = std::sync::Arc::clone(&self.hub.summary_status_limit);
        let span = tracing::info_span!("agent_stream", %node);
        let stream_task = async move {
            let mut shutdown = shutdown;
            let mut ended = session.ended;
            let reason = loop {
                // The select arms only pick; anything that awaits runs after it, so no
                // watch guard is held across an await.
                let next = tokio::select! {
                    next = inbound.next() => Some(next),
                    () = shutdown.draining() => break "hub shutting down".to_owned(),
                    _ = &mut ended => None,
                };
                let Some(next) = next else {
                    // Reaped (silent past the timeout) or replaced by a newer stream: end
                    // this one so the agent reconnects instead of talking into a stream
                    // nobody counts.
                    let reason = format!(
                        "session ended by the hub (silent for over {} s, or replaced)",
                        heartbeat_timeout.as_secs()
                    );
                    let _ = tx.send(Err(Status::unavailable(reason.clone()))).await;
                    break reason;
                };
                match next {
                    None => break "stream closed".to_owned(),
                    Some(Err(e)) => {
                        // Tell the agent why (e.g. a message over the size limit) instead of
                        // ending its stream as if all were well.
                        let reason = format!("stream error: {}", e.message());
                        let _ = tx.send(Err(e)).await;
                        break reason;
                    }
                    Some(Ok(message)) => {
                        let started = std::time::Instant::now();
                        let now = OffsetDateTime::now_utc();
                        registry.seen(&node, now);
                        let kind = match &message.body {
                            Some(pb::agent_message::Body::Status(s)) if s.full => {
                                "Connect/status-full"
                            }
                            Some(pb::agent_message::Body::Status(_)) => "Connect/status",
                            Some(pb::agent_message::Body::Heartbeat(_)) => "Connect/heartbeat",
                            _ => "Connect/other",
                        };
                        let limit = match &message.body {
                            Some(pb::agent_message::Body::Status(s)) if s.full => {
                                Some((&full_status_limit, crate::ratelimit::FULL_STATUS, "full"))
                            }
                            Some(pb::agent_message::Body::Status(_)) => Some((
                                &summary_status_limit,
                                crate::ratelimit::SUMMARY_STATUS,
                                "summary",
                            )),
                            _ => None,
                        };
                        let is_status = limit.is_some();
                        // Only statuses and results write to SQLite; heartbeats and progress
                        // touch memory, so they are handled in place (200 heartbeats a second
                        // at 2,000 nodes would otherwise each hop to a blocking thread).
                        let writes = is_status
                            || matches!(message.body, Some(pb::agent_message::Body::Result(_)));
                        let over = limit.filter(|(limiter, _, _)| {
                            !limiter.allow(&node, std::time::Instant::now())
                        });
                        let result = if let Some((_, rate, what)) = over {
                            Err(Status::resource_exhausted(format!(
                                "node {node}: more than {} {what} statuses at once, or more \
                             than one per {} ms after that; reconnect later",
                                rate.burst,
                                rate.every.as_millis()
                            )))
                        } else if !writes {
                            handle(&store, &engine, &node, message, now)
                        } else {
                            // SQLite commits fsync: off the async workers, so one node's
                            // large snapshot never stalls every other stream.
                            let (store, engine, node) =
                                (store.clone(), std::sync::Arc::clone(&engine), node.clone());
                            let span = tracing::info_span!("agent_message", kind);
                            tokio::task::spawn_blocking(move || {
                                span.in_scope(|| handle(&store, &engine, &node, message, now))
                            })
                            .await
                            .unwrap_or_else(|e| Err(internal(e)))
                        };
                        let code = result
                            .as_ref()
                            .map_or_else(Status::code, |()| tonic::Code::Ok);
                        metrics.observe(kind, code, started.elapsed().as_secs_f64());
                        if let Err(status) = result {
                            let _ = tx.send(Err(status.clone())).await;
                            break format!("refused a message: {}", status.message());
                        }
                    }
                }
            };
            if registry.disconnect(&node, session.id) {
                engine.on_disconnected(&node);
                let _ = store.set_online(&node, false, OffsetDateTime::now_utc());
            }
            tracing::info!(%node, %reason, "agent disconnected");
        };
        tokio::spawn(stream_task.instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Longest version or unit-state string accepted from an agent.
const MAX_FIELD: usize = 256;

/// Applies one agent message to the store.
///
/// Public only so the fuzz harness (`fuzz/src/lib.rs`) can drive it with decoded bytes
/// against an in-memory store; the service is its one real caller.
#[doc(hidden)]
pub fn handle(
    store: &crate::store::Store,
    engine: &crate::engine::Engine,
    node: &str,
    message: pb::AgentMessage,
    now: OffsetDateTime,
) -> Result<(), Status> {
    match message.body {
        Some(pb::agent_message::Body::Status(status)) => {
            // Everything is checked before anything is written: a refused message changes
            // nothing.
            let status = AgentStatus::try_from(&status)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let state = if status.service_state.is_empty() {
                "unknown"
            } else {
                &status.service_state
            };
            let version = &status.health.rke2_version;
            if version.len() > MAX_FIELD || status.service_state.len() > MAX_FIELD {
                return Err(Status::invalid_argument(format!(
                    "status.rke2_version / status.service_state: longer than {MAX_FIELD} bytes"
                )));
            }
            if let Some((rows, errors)) = &status.snapshot {
                store
                    .replace_certificates(node, rows, errors, now)
                    .map_err(internal)?;
            }
            engine.on_status(node, &status.health);
            if let Some(mut findings) = status.findings {
                for f in &mut findings {
                    node.clone_into(&mut f.node);
                }
                store
                    .replace_node_findings(node, &findings, now)
                    .map_err(internal)?;
                engine.findings_changed();
            }
            if let Some(sent_at) = status.sent_at {
                let offset = (sent_at - now).whole_milliseconds();
                let offset =
                    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
                store.set_clock_offset(node, offset).map_err(internal)?;
            }
            if !version.is_empty() {
                store.set_rke2_version(node, version).map_err(internal)?;
            }
            if let Some(install) = &status.install {
                store.set_install(node, install).map_err(internal)?;
            }
            store
                .update_node_status(
                    node,
                    state,
                    status.worst_status,
                    status.renewal_deadline,
                    now,
                )
                .map_err(internal)
        }
        Some(pb::agent_message::Body::Heartbeat(_)) => {
            engine.on_heartbeat(node);
            Ok(())
        }
        Some(pb::agent_message::Body::Progress(progress)) => {
            engine.on_progress(node, progress.into());
            Ok(())
        }
        Some(pb::agent_message::Body::Result(result)) => {
            if !result.rke2_version.is_empty() && result.rke2_version.len() <= MAX_FIELD {
                store
                    .set_rke2_version(node, &result.rke2_version)
                    .map_err(internal)?;
            }
            engine.on_result(node, result.into());
            Ok(())
        }
        Some(pb::agent_message::Body::Hello(_)) => Err(Status::invalid_argument(
            "hello may only be the first message",
        )),
        None => Err(Status::invalid_argument("empty message")),
    }
}
