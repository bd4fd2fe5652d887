//! `AgentService`: enrollment (token + CSR), certificate renewal, and each agent's stream.

use std::pin::Pin;

use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_server::AgentService;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{Caller, Hub, caller, internal, observed};
use crate::convert;
use crate::pki::token::JoinToken;
use crate::store::TokenError;

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

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.enroll_inner(request).await;
        observed(&self.hub, "Enroll", started, result)
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.renew_inner(request).await;
        observed(&self.hub, "RenewCertificate", started, result)
    }

    type ConnectStream = HubStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        let started = std::time::Instant::now();
        let result = self.connect_inner(request).await;
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
        // the certificate is only released once the token is consumed.
        let signed = self
            .hub
            .ca
            .sign_node_csr(&req.csr_pem, &req.node_name, now)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        let store = self.hub.store.clone();
        let (node, token_id) = (req.node_name.clone(), id.clone());
        let hash = secret.hash();
        tokio::task::spawn_blocking(move || store.consume_token(&token_id, &hash, &node, now))
            .await
            .map_err(internal)?
            .map_err(|e| match e {
                TokenError::Store(e) => internal(e),
                refused => {
                    // The reason (unknown, used, expired, wrong secret) goes to the log only:
                    // an enrolling peer learns nothing about which tokens exist.
                    tracing::warn!(token = %id, node = %req.node_name, reason = %refused, "join token refused");
                    Status::permission_denied("join token refused")
                }
            })?;
        let _ = self.hub.store.audit(
            &format!("node:{}", req.node_name),
            "node.enroll",
            &format!("token {id}"),
            now,
        );
        tracing::info!(node = %req.node_name, token = %id, "node enrolled");
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
        let node = node_of(&request)?;
        let now = OffsetDateTime::now_utc();
        let signed = self
            .hub
            .ca
            .sign_node_csr(&request.get_ref().csr_pem, &node, now)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        let _ = self.hub.store.audit(
            &format!("node:{node}"),
            "node.renew",
            "client certificate",
            now,
        );
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
        let node = node_of(&request)?;
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
        let role = convert::role_word(hello.role);
        if role == "unknown" {
            return Err(Status::invalid_argument(
                "hello.role must be server or agent",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let store = self.hub.store.clone();
        store
            .upsert_node_hello(
                &node,
                convert::role_word(hello.role),
                &hello.rke2_version,
                &hello.agent_version,
                now,
            )
            .map_err(internal)?;
        store.set_online(&node, true, now).map_err(internal)?;
        let (tx, rx) = mpsc::channel(16);
        let session = self.hub.registry.connect(&node, tx.clone(), now);
        let heartbeat_timeout = self.hub.heartbeat_timeout;
        self.hub.engine.on_connected(&node, &hello.rke2_version);
        tracing::info!(%node, role = convert::role_word(hello.role), version = %hello.rke2_version, "agent connected");

        let registry = std::sync::Arc::clone(&self.hub.registry);
        let engine = std::sync::Arc::clone(&self.hub.engine);
        let shutdown = self.hub.shutdown.clone();
        let metrics = std::sync::Arc::clone(&self.hub.metrics);
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            let mut ended = session.ended;
            let reason = loop {
                // The select arms only pick; anything that awaits runs after it, so no
                // watch guard is held across an await.
                let next = tokio::select! {
                    next = inbound.next() => Some(next),
                    _ = shutdown.wait_for(|stop| *stop) => break "hub shutting down".to_owned(),
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
                        let result = handle(&store, &engine, &node, message, now);
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
        });
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
            let invalid = |e: convert::ConvertError| Status::invalid_argument(e.to_string());
            let snapshot = if status.full {
                let rows = status
                    .certificates
                    .iter()
                    .enumerate()
                    .map(|(i, c)| convert::cert_row(c, &format!("status.certificates[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                let errors: Vec<_> = status.errors.iter().map(convert::error_row).collect();
                Some((rows, errors))
            } else {
                None
            };
            let deadline = status
                .renewal_deadline
                .as_ref()
                .map(|t| convert::time_of(t, "status.renewal_deadline"))
                .transpose()
                .map_err(invalid)?;
            let worst = convert::worst_status_word(status.worst_status, "status.worst_status")
                .map_err(invalid)?;
            let state = if status.service_state.is_empty() {
                "unknown"
            } else {
                &status.service_state
            };
            if status.rke2_version.len() > MAX_FIELD || status.service_state.len() > MAX_FIELD {
                return Err(Status::invalid_argument(format!(
                    "status.rke2_version / status.service_state: longer than {MAX_FIELD} bytes"
                )));
            }
            if let Some((rows, errors)) = snapshot {
                store
                    .replace_certificates(node, &rows, &errors, now)
                    .map_err(internal)?;
            }
            engine.on_status(node, &status);
            if !status.rke2_version.is_empty() {
                store
                    .set_rke2_version(node, &status.rke2_version)
                    .map_err(internal)?;
            }
            store
                .update_node_status(node, state, worst, deadline, now)
                .map_err(internal)
        }
        Some(pb::agent_message::Body::Heartbeat(_)) => {
            engine.on_heartbeat(node);
            Ok(())
        }
        Some(pb::agent_message::Body::Progress(progress)) => {
            engine.on_progress(node, progress);
            Ok(())
        }
        Some(pb::agent_message::Body::Result(result)) => {
            if !result.rke2_version.is_empty() && result.rke2_version.len() <= MAX_FIELD {
                store
                    .set_rke2_version(node, &result.rke2_version)
                    .map_err(internal)?;
            }
            engine.on_result(node, result);
            Ok(())
        }
        Some(pb::agent_message::Body::Hello(_)) => Err(Status::invalid_argument(
            "hello may only be the first message",
        )),
        None => Err(Status::invalid_argument("empty message")),
    }
}
