//! The hub's gRPC services: [`agent::AgentApi`] (enrollment, renewal, the agents' streams)
//! and [`admin::AdminApi`] (the CLI's). Authorization is decided here from the transport:
//! the TLS peer certificate (node or admin, by the hub CA's issuance) or the Unix socket's
//! peer uid. Every prost type the hub reads or writes is converted here ([`convert`]): the
//! engine, the registry and the store see only domain types.

pub mod admin;
pub mod agent;
pub mod convert;
pub mod plans;
pub mod rollouts;

use std::sync::Arc;

/// The generated servers, for [`crate::serve`] to mount the services with.
pub use rke2ops_proto::v1::admin_service_server::AdminServiceServer;
pub use rke2ops_proto::v1::agent_service_server::AgentServiceServer;

use tonic::{Request, Status};

use crate::pki::{HubCa, PeerIdentity, peer_identity};
use crate::registry::Registry;
use crate::store::Store;

/// What the services share.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Durable state.
    pub store: Store,
    /// Live streams.
    pub registry: Arc<Registry>,
    /// The hub CA.
    pub ca: Arc<HubCa>,
    /// What agents dial (for token output).
    pub advertise_address: String,
    /// Heartbeat silence after which a node is offline.
    pub heartbeat_timeout: std::time::Duration,
    /// RPC counters and latencies.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    /// The plan engine (agents' reports and operations go through it).
    pub engine: Arc<crate::engine::Engine>,
    /// RKE2's channels JSON (for `upgrade --channel`).
    pub channel_url: String,
    /// Clusters whose channels JSON is another (`[clusters.NAME] channel_url`).
    pub cluster_channel_urls: std::collections::BTreeMap<String, String>,
    /// Drains when the hub stops: agent streams end so the server can drain.
    pub shutdown: rke2ops_common::shutdown::Listener,
    /// Per-node limit on full statuses ([`crate::ratelimit::FULL_STATUS`]).
    pub full_status_limit: Arc<crate::ratelimit::Limiter>,
    /// Per-node limit on summary statuses ([`crate::ratelimit::SUMMARY_STATUS`]).
    pub summary_status_limit: Arc<crate::ratelimit::Limiter>,
    /// Per-node limit on certificate renewals ([`crate::ratelimit::RENEWAL`]).
    pub renewal_limit: Arc<crate::ratelimit::Limiter>,
    /// Whether this hub leads (always, with SQLite; see [`crate::ha`]).
    pub role: Arc<crate::ha::Role>,
}

impl Hub {
    /// Refuses what only the leader may do (a write, an agent's enrollment, renewal or
    /// stream) on a follower replica: `UNAVAILABLE` naming the leader, whose address is also
    /// in the `x-rke2ops-leader` metadata for agents to move there.
    ///
    /// # Errors
    /// The refusal, on a follower.
    pub fn leader_only(&self) -> Result<(), Status> {
        let Some(why) = self.role.refusal() else {
            return Ok(());
        };
        let mut status = Status::unavailable(why);
        let leader = self.role.leader_address();
        if let Ok(value) = leader.parse() {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        Err(status)
    }
}

/// The metadata key naming the leader's address in a follower's refusal.
pub const LEADER_METADATA: &str = "x-rke2ops-leader";

/// Records `result` of `method` that started at `started`, and passes it through.
pub fn observed<T>(
    hub: &Hub,
    method: &str,
    started: std::time::Instant,
    result: Result<T, Status>,
) -> Result<T, Status> {
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    hub.metrics
        .observe(method, code, started.elapsed().as_secs_f64());
    result
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node certificate (CN = node name).
    Node(String),
    /// An admin certificate, or a permitted local user on the admin socket.
    Admin(String),
    /// No client certificate over TLS.
    Anonymous,
}

impl Caller {
    /// The audit-log actor.
    #[must_use]
    pub fn actor(&self) -> String {
        match self {
            Self::Node(name) => format!("node:{name}"),
            Self::Admin(name) => name.clone(),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }
}

/// Identifies the caller of `request`.
///
/// Over the Unix socket only root and the hub's own user are admins (the socket's mode says
/// the same; this is the second lock). Over TLS the client certificate decides; rustls has
/// already verified it was issued by the hub CA.
///
/// # Errors
/// `Unauthenticated` for an unusable certificate, `PermissionDenied` for a local user who is
/// neither root nor the hub.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        let uid = info.peer_cred.map(|c| c.uid());
        let own = nix::unistd::getuid().as_raw();
        return match uid {
            Some(0) => Ok(Caller::Admin("uid:0".to_owned())),
            Some(u) if u == own => Ok(Caller::Admin(format!("uid:{u}"))),
            Some(u) => Err(Status::permission_denied(format!(
                "local uid {u} may not use the admin socket"
            ))),
            None => Err(Status::permission_denied(
                "cannot tell who is on the admin socket",
            )),
        };
    }
    let Some(certs) = request.peer_certs() else {
        return Ok(Caller::Anonymous);
    };
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    match peer_identity(leaf.as_ref()) {
        Ok(PeerIdentity::Node(name)) => Ok(Caller::Node(name)),
        Ok(PeerIdentity::Admin(name)) => Ok(Caller::Admin(format!("admin:{name}"))),
        Err(e) => Err(Status::unauthenticated(format!(
            "client certificate not usable here: {e}"
        ))),
    }
}

/// Maps a store failure to a gRPC status without leaking internals beyond the message.
#[must_use]
pub fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "store failure");
    Status::internal(format!("hub store: {e}"))
}

/// A stream of views of one plan or rollout: `first` at once, then `show()` after every
/// engine change (at most every 200 ms, and every 5 s anyway, since elapsed times move),
/// ending after a view for which `end` holds, or after `show`'s error. The task runs in
/// `span`. `WatchPlan` and `WatchRollout` are this with their own view and end.
pub(crate) fn watch_views<V, S, E>(
    hub: &Hub,
    first: V,
    show: S,
    end: E,
    span: tracing::Span,
) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<V, Status>> + Send>>
where
    V: Send + 'static,
    S: Fn(&Hub) -> Result<V, Status> + Send + 'static,
    E: Fn(&V) -> bool + Send + 'static,
{
    use tracing::Instrument as _;
    let hub = hub.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let task = async move {
        let mut changes = hub.engine.subscribe();
        let mut view = first;
        loop {
            let last = end(&view);
            if tx.send(Ok(view)).await.is_err() || last {
                return;
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = changes.borrow_and_update();
            view = match show(&hub) {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
        }
    };
    tokio::spawn(task.instrument(span));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
