//! `AdminService`: the operator's API. Admins only: root or the hub's user on the Unix
//! socket, or an admin certificate over TLS; agent certificates are refused. Every action is
//! audited with who did it.

use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_server::AdminService;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::{Caller, Hub, caller, internal, observed};
use crate::convert;
use crate::pki::token::JoinToken;

/// The service.
#[derive(Debug, Clone)]
pub struct AdminApi {
    hub: Hub,
}

impl AdminApi {
    /// Serves `hub`.
    #[must_use]
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }
}

fn admin_of<T>(request: &Request<T>) -> Result<String, Status> {
    match caller(request)? {
        Caller::Admin(actor) => Ok(actor),
        Caller::Node(name) => {
            tracing::warn!(%name, "node certificate tried an admin method");
            Err(Status::permission_denied(format!(
                "node {name:?} may not call admin methods"
            )))
        }
        Caller::Anonymous => Err(Status::unauthenticated("an admin certificate is required")),
    }
}

const DEFAULT_TTL_SECS: u64 = 24 * 3600;
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.create_token_inner(request).await;
        observed(&self.hub, "CreateToken", started, result)
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.list_nodes_inner(request).await;
        observed(&self.hub, "ListNodes", started, result)
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.list_certificates_inner(request).await;
        observed(&self.hub, "ListCertificates", started, result)
    }

    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = admin_of(&request)?;
            super::plans::create(&self.hub, &actor, request.into_inner())
                .await
                .map(Response::new)
        }
        .await;
        observed(&self.hub, "CreatePlan", started, result)
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let started = std::time::Instant::now();
        let result = admin_of(&request)
            .and_then(|_| super::plans::list(&self.hub, request.get_ref()))
            .map(Response::new);
        observed(&self.hub, "ListPlans", started, result)
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let started = std::time::Instant::now();
        let result = admin_of(&request)
            .and_then(|_| super::plans::get(&self.hub, &request.get_ref().id))
            .map(Response::new);
        observed(&self.hub, "GetPlan", started, result)
    }

    type WatchPlanStream = super::plans::PlanStream;

    async fn watch_plan(
        &self,
        request: Request<pb::WatchPlanRequest>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let started = std::time::Instant::now();
        let result = admin_of(&request)
            .and_then(|_| super::plans::watch(&self.hub, request.get_ref()))
            .map(Response::new);
        observed(&self.hub, "WatchPlan", started, result)
    }

    async fn plan_action(
        &self,
        request: Request<pb::PlanActionRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = admin_of(&request)?;
            super::plans::act(&self.hub, &actor, request.into_inner())
                .await
                .map(Response::new)
        }
        .await;
        observed(&self.hub, "PlanAction", started, result)
    }
}

impl AdminApi {
    async fn create_token_inner(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let actor = admin_of(&request)?;
        let ttl = match request.get_ref().ttl_seconds {
            0 => DEFAULT_TTL_SECS,
            t if t > MAX_TTL_SECS => {
                return Err(Status::invalid_argument(format!(
                    "ttl {t} s is over the 30-day limit"
                )));
            }
            t => t,
        };
        let now = OffsetDateTime::now_utc();
        let ttl = time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
        let token = JoinToken::generate(ttl, now).map_err(internal)?;
        let expires_at = now + ttl;
        self.hub
            .store
            .insert_token(token.id(), &token.secret().hash(), expires_at, &actor, now)
            .map_err(internal)?;
        self.hub
            .store
            .audit(
                &actor,
                "token.create",
                &format!("token {} expires {expires_at}", token.id()),
                now,
            )
            .map_err(internal)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: token.expose(),
            ca_pin: self.hub.ca.ca_pin(),
            expires_at: Some(convert::timestamp(expires_at)),
            hub_address: self.hub.advertise_address.clone(),
        }))
    }

    async fn list_nodes_inner(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        admin_of(&request)?;
        let nodes = self.hub.store.nodes().map_err(internal)?;
        let errors = self.hub.store.file_errors(None).map_err(internal)?;
        let out = nodes
            .iter()
            .map(|node| {
                let count = errors.iter().filter(|(n, _)| *n == node.name).count();
                convert::node_message(node, u32::try_from(count).unwrap_or(u32::MAX))
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes: out }))
    }

    async fn list_certificates_inner(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        admin_of(&request)?;
        let req = request.into_inner();
        let node = (!req.node.is_empty()).then_some(req.node.as_str());
        if let Some(name) = node
            && self.hub.store.node(name).map_err(internal)?.is_none()
        {
            return Err(Status::not_found(format!("unknown node {name:?}")));
        }
        let within = (req.expiring_within_seconds > 0)
            .then(|| std::time::Duration::from_secs(req.expiring_within_seconds));
        let now = OffsetDateTime::now_utc();
        let rows = self
            .hub
            .store
            .certificates(node, within, now)
            .map_err(internal)?;
        let errors = self
            .hub
            .store
            .file_errors(node)
            .map_err(internal)?
            .into_iter()
            .map(|(node, e)| pb::NodeFileError {
                node,
                error: Some(pb::FileError {
                    path: e.path,
                    reason: e.reason,
                }),
            })
            .collect();
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: rows
                .iter()
                .map(|(node, row)| pb::NodeCertificate {
                    node: node.clone(),
                    certificate: Some(convert::cert_message(row)),
                })
                .collect(),
            errors,
        }))
    }
}
