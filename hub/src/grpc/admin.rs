//! `AdminService`: the operator's API. Admins only: root or the hub's user on the Unix
//! socket, or an admin certificate over TLS that is still the current one of its name (not
//! superseded by a newer one, not revoked); agent certificates are refused. Every action is
//! audited with who did it.

use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_server::AdminService;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::agent::{check_credential, peer_serial};
use super::convert;
use super::{Caller, Hub, caller, internal, observed};
use crate::doctor::preflight::{self, Preflight};
use crate::pki::token::JoinToken;
use crate::pki::{ADMIN_CN_PREFIX, TokenBinding};
use crate::plan::version::Rke2Version;
use crate::store::{CredentialKind, StoreError};
use rke2ops_common::doctor::Code;

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

    /// The admin calling (the audit actor), after checking an admin certificate is still
    /// current. Local socket users have no certificate to check.
    fn admin_of<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let actor = admin_of(request)?;
        if let Some(name) = actor.strip_prefix(ADMIN_CN_PREFIX)
            && request.peer_certs().is_some()
        {
            check_credential(
                &self.hub,
                CredentialKind::Admin,
                name,
                &peer_serial(request)?,
            )?;
        }
        Ok(actor)
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
        let result = match self.hub.leader_only() {
            Ok(()) => self.create_token_inner(request).await,
            Err(refusal) => Err(refusal),
        };
        observed(&self.hub, "CreateToken", started, result)
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let started = std::time::Instant::now();
        let result = (|| {
            self.admin_of(&request)?;
            let nodes = self.hub.store.nodes().map_err(internal)?;
            let active = self.hub.store.plans(true).map_err(internal)?;
            let clusters = crate::clusters::summarize(&nodes, &active, |c| {
                self.hub.engine.has_cluster_access(c)
            })
            .into_iter()
            .map(|s| pb::ClusterInfo {
                name: s.name,
                servers: s.servers,
                agents: s.agents,
                online: s.online,
                versions: s.versions,
                kubernetes_access: s.kubernetes_access,
                active_plan: s
                    .active_plan
                    .as_ref()
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default(),
                active_plan_state: s.active_plan.map(|(_, state)| state).unwrap_or_default(),
            })
            .collect();
            Ok(Response::new(pb::ListClustersResponse { clusters }))
        })();
        observed(&self.hub, "ListClusters", started, result)
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
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            self.create_plan_checked(&actor, request.into_inner())
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
        let result = self
            .admin_of(&request)
            .and_then(|_| super::plans::list(&self.hub, request.get_ref()))
            .map(Response::new);
        observed(&self.hub, "ListPlans", started, result)
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .admin_of(&request)
            .and_then(|_| {
                super::plans::get_with_events(
                    &self.hub,
                    &request.get_ref().id,
                    request.get_ref().events,
                )
            })
            .map(Response::new);
        observed(&self.hub, "GetPlan", started, result)
    }

    type WatchPlanStream = super::plans::PlanStream;

    async fn watch_plan(
        &self,
        request: Request<pb::WatchPlanRequest>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .admin_of(&request)
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
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            super::plans::act(&self.hub, &actor, request.into_inner())
                .await
                .map(Response::new)
        }
        .await;
        observed(&self.hub, "PlanAction", started, result)
    }

    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::RolloutView>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            super::rollouts::create(&self.hub, &actor, request.into_inner())
                .await
                .map(Response::new)
        }
        .await;
        observed(&self.hub, "CreateRollout", started, result)
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .admin_of(&request)
            .and_then(|_| super::rollouts::list(&self.hub, request.get_ref()))
            .map(Response::new);
        observed(&self.hub, "ListRollouts", started, result)
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::RolloutView>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .admin_of(&request)
            .and_then(|_| super::rollouts::get(&self.hub, &request.get_ref().id))
            .map(Response::new);
        observed(&self.hub, "GetRollout", started, result)
    }

    type WatchRolloutStream = super::rollouts::RolloutStream;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .admin_of(&request)
            .and_then(|_| super::rollouts::watch(&self.hub, request.get_ref()))
            .map(Response::new);
        observed(&self.hub, "WatchRollout", started, result)
    }

    async fn rollout_action(
        &self,
        request: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutView>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            super::rollouts::act(&self.hub, &actor, request.into_inner())
                .await
                .map(Response::new)
        }
        .await;
        observed(&self.hub, "RolloutAction", started, result)
    }

    async fn create_bound_token(
        &self,
        request: Request<pb::CreateBoundTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            self.create_token_for(&actor, request.into_inner())
        }
        .await;
        observed(&self.hub, "CreateBoundToken", started, result)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            let actor = self.admin_of(&request)?;
            self.hub.leader_only()?;
            self.remove_node_for(&actor, &request.into_inner())
        }
        .await;
        observed(&self.hub, "RemoveNode", started, result)
    }

    async fn doctor(
        &self,
        request: Request<pb::DoctorRequest>,
    ) -> Result<Response<pb::DoctorReport>, Status> {
        let started = std::time::Instant::now();
        let result = async {
            self.admin_of(&request)?;
            let req = request.into_inner();
            self.doctor_for(&req.node, &req.target, &req.cluster).await
        }
        .await;
        observed(&self.hub, "Doctor", started, result)
    }
}

impl AdminApi {
    async fn create_token_inner(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let actor = self.admin_of(&request)?;
        self.create_token_for(
            &actor,
            pb::CreateBoundTokenRequest {
                ttl_seconds: request.get_ref().ttl_seconds,
                ..pb::CreateBoundTokenRequest::default()
            },
        )
    }

    /// Creates a token for `actor`. A token bound to a node that is already enrolled is
    /// refused here, at once, unless it replaces it: the operator learns now, not when the
    /// node fails to enroll.
    fn create_token_for(
        &self,
        actor: &str,
        req: pb::CreateBoundTokenRequest,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TTL_SECS,
            t if t > MAX_TTL_SECS => {
                return Err(Status::invalid_argument(format!(
                    "ttl {t} s is over the 30-day limit"
                )));
            }
            t => t,
        };
        let binding = self.binding(&req)?;
        let now = OffsetDateTime::now_utc();
        let ttl = time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
        let token = JoinToken::generate(ttl, now).map_err(internal)?;
        let expires_at = now + ttl;
        self.hub
            .store
            .insert_bound_token(
                token.id(),
                &token.secret().hash(),
                expires_at,
                actor,
                &binding,
                now,
            )
            .map_err(internal)?;
        let mut detail = format!("token {} expires {expires_at}", token.id());
        if let Some(node) = &binding.node {
            detail.push_str(&format!(", for node {node}"));
        }
        if binding.replace {
            detail.push_str(", replaces its certificate");
        }
        if let Some(role) = &binding.role {
            detail.push_str(&format!(", role {role}"));
        }
        if let Some(cluster) = &binding.cluster {
            detail.push_str(&format!(", cluster {cluster}"));
        }
        self.hub
            .store
            .audit(actor, "token.create", &detail, now)
            .map_err(internal)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: token.expose(),
            ca_pin: self.hub.ca.ca_pin(),
            expires_at: Some(convert::timestamp(expires_at)),
            hub_address: self.hub.advertise_address.clone(),
            node: binding.node.unwrap_or_default(),
            replace: binding.replace,
            role: convert::optional_role_value(binding.role.as_deref()),
            cluster: binding.cluster.unwrap_or_default(),
        }))
    }

    /// Checks what a token is to allow.
    fn binding(&self, req: &pb::CreateBoundTokenRequest) -> Result<TokenBinding, Status> {
        let node = (!req.node.is_empty()).then(|| req.node.clone());
        if let Some(node) = &node {
            rke2ops_common::identity::validate_node_name(node)
                .map_err(|e| Status::invalid_argument(format!("--node: {e}")))?;
        }
        if req.replace && node.is_none() {
            return Err(Status::invalid_argument(
                "--replace needs --node: a token may replace only the node it is bound to",
            ));
        }
        let role = convert::token_role(req.role)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .map(str::to_owned);
        if let Some(name) = &node
            && !req.replace
        {
            let enrolled = self
                .hub
                .store
                .identity(CredentialKind::Node, name)
                .map_err(internal)?
                .is_some()
                || self.hub.store.node(name).map_err(internal)?.is_some();
            if enrolled {
                return Err(Status::already_exists(format!(
                    "node {name:?} is already enrolled; add --replace to let the token replace \
                     its certificate (the current one is then refused)"
                )));
            }
        }
        let cluster = (!req.cluster.is_empty()).then(|| req.cluster.clone());
        if let Some(cluster) = &cluster {
            rke2ops_common::ids::check_cluster_name(cluster)
                .map_err(|e| Status::invalid_argument(format!("--cluster: {e}")))?;
        }
        Ok(TokenBinding {
            node,
            replace: req.replace,
            role,
            cluster,
        })
    }

    /// `nodes remove`: forgets the node and revokes its certificate (store, one transaction),
    /// then ends its live stream so its agent is refused on its next connection.
    fn remove_node_for(
        &self,
        actor: &str,
        req: &pb::RemoveNodeRequest,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let now = OffsetDateTime::now_utc();
        let removed = self
            .hub
            .store
            .remove_node(&req.name, actor, req.dry_run, now)
            .map_err(|e| match e {
                StoreError::NotEnrolled { .. } => Status::not_found(e.to_string()),
                StoreError::NodeInActivePlan { .. } => Status::failed_precondition(e.to_string()),
                other => internal(other),
            })?;
        let connected = self.hub.registry.connected().contains(&req.name);
        if !req.dry_run {
            if self.hub.registry.end(&req.name) {
                self.hub.engine.on_disconnected(&req.name);
            }
            tracing::info!(node = %req.name, %actor, serial = removed.revoked_serial.as_deref().unwrap_or(""), "node removed and its certificate revoked");
        }
        Ok(Response::new(pb::RemoveNodeResponse {
            name: removed.name,
            role: convert::optional_role_value(removed.role.as_deref()),
            revoked_serial: removed.revoked_serial.unwrap_or_default(),
            in_inventory: removed.in_inventory,
            certificates: removed.certificates,
            was_connected: connected,
            dry_run: req.dry_run,
        }))
    }

    /// `doctor`: the fleet's findings, keeping those about `node` (when given; the info
    /// saying the Kubernetes checks were skipped is always kept).
    async fn doctor_for(
        &self,
        node: &str,
        target: &str,
        cluster: &str,
    ) -> Result<Response<pb::DoctorReport>, Status> {
        let members = if cluster.is_empty() {
            None
        } else {
            let nodes = in_cluster(self.hub.store.nodes().map_err(internal)?, cluster)?;
            Some(nodes.into_iter().map(|n| n.name).collect::<Vec<_>>())
        };
        if !node.is_empty() && self.hub.store.node(node).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!("unknown node {node:?}")));
        }
        let target: Option<Rke2Version> = if target.is_empty() {
            None
        } else {
            Some(
                target
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("target {target:?}: {e}")))?,
            )
        };
        let mut findings = self.fleet_findings(target.as_ref()).await?;
        if !node.is_empty() {
            findings
                .retain(|f| f.code == Code::KubeChecksSkipped || crate::doctor::is_about(f, node));
        }
        if let Some(members) = &members {
            findings.retain(|f| crate::doctor::is_in_cluster(f, cluster, members));
        }
        Ok(Response::new(pb::DoctorReport {
            findings: findings.iter().map(convert::doctor_finding).collect(),
        }))
    }

    /// `CreatePlan` behind its preflight: the fleet doctor runs first; blockers in the
    /// plan's scope refuse it (naming each) unless their code is accepted; a dry run shows
    /// them as events; accepted ones are recorded in the plan's events and the audit log.
    async fn create_plan_checked(
        &self,
        actor: &str,
        req: pb::CreatePlanRequest,
    ) -> Result<pb::PlanView, Status> {
        let accept = req
            .accept
            .iter()
            .map(|word| {
                Code::parse(word).ok_or_else(|| {
                    Status::invalid_argument(format!("--accept {word}: no such doctor code"))
                })
            })
            .collect::<Result<Vec<Code>, Status>>()?;
        let dry_run = req.dry_run;
        if !dry_run {
            // One active plan per cluster, said before the preflight: the active plan's own
            // maintenance makes the doctor's blockers (a server down for its rotation), and
            // they would hide the reason that matters.
            let cluster = self
                .hub
                .engine
                .resolve_cluster(&req.cluster)
                .map_err(super::plans::engine_status)?;
            if let Some(active) = self
                .hub
                .store
                .plans(true)
                .map_err(internal)?
                .into_iter()
                .filter(|p| p.cluster == cluster)
                .min_by_key(|p| p.id)
            {
                return Err(super::plans::engine_status(
                    crate::engine::EngineError::Store(crate::store::StoreError::PlanActive {
                        id: active.id,
                        state: active.state.to_string(),
                    }),
                ));
            }
        }
        let target: Option<Rke2Version> = req.version.parse().ok();
        let findings = self.fleet_findings(target.as_ref()).await?;
        let preflight = Preflight::of(findings, &req.nodes, !req.no_drain, &accept);
        if !dry_run && !preflight.refused.is_empty() {
            return Err(Status::failed_precondition(preflight.refusal()));
        }
        let mut view = super::plans::create(&self.hub, actor, req).await?;
        let now = OffsetDateTime::now_utc();
        if dry_run {
            let sets = [
                ("refuses the plan unless accepted", &preflight.refused),
                ("accepted", &preflight.accepted),
                ("noted", &preflight.noted),
            ];
            for (what, set) in sets {
                for f in set {
                    view.events.push(pb::PlanEvent {
                        at: Some(convert::timestamp(now)),
                        node: f.node.clone(),
                        message: format!(
                            "preflight {} ({what}): {}",
                            f.severity,
                            preflight::line(f)
                        ),
                    });
                }
            }
            return Ok(view);
        }
        // Warnings (and blockers the plan remedies) are recorded with the plan too, so its
        // history says what was known when it started.
        let noted: Vec<_> = preflight
            .noted
            .iter()
            .filter(|f| f.severity >= rke2ops_common::doctor::Severity::Warning)
            .collect();
        if preflight.accepted.is_empty() && noted.is_empty() {
            return Ok(view);
        }
        let id: i64 = view
            .id
            .trim_start_matches("plan")
            .parse()
            .map_err(|_| Status::internal(format!("plan id {:?} is not a number", view.id)))?;
        for f in noted {
            let message = format!("preflight {} noted: {}", f.severity, preflight::line(f));
            let node = if f.node.contains(',') { "" } else { &f.node };
            self.hub
                .store
                .plan_event(id, node, &message, now)
                .map_err(internal)?;
        }
        for f in &preflight.accepted {
            let message = format!(
                "preflight blocker accepted by {actor}: {}",
                preflight::line(f)
            );
            self.hub
                .store
                .plan_event(id, "", &message, now)
                .map_err(internal)?;
            self.hub
                .store
                .audit(actor, "plan.accept", &format!("plan {id}: {message}"), now)
                .map_err(internal)?;
        }
        super::plans::get(&self.hub, &view.id)
    }

    /// Every finding of the fleet doctor (the engine gathers; see
    /// [`crate::engine::Engine::fleet_findings`]).
    async fn fleet_findings(
        &self,
        target: Option<&Rke2Version>,
    ) -> Result<Vec<rke2ops_common::doctor::Finding>, Status> {
        self.hub
            .engine
            .fleet_findings(target)
            .await
            .map_err(internal)
    }

    async fn list_nodes_inner(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.admin_of(&request)?;
        let cluster = request.into_inner().cluster;
        let nodes = in_cluster(self.hub.store.nodes().map_err(internal)?, &cluster)?;
        let errors = self.hub.store.file_errors(None).map_err(internal)?;
        let worst = self.hub.engine.doctor_latest().worst_per_node();
        let installs = self.hub.store.installs().map_err(internal)?;
        let out = nodes
            .iter()
            .map(|node| {
                let count = errors.iter().filter(|(n, _)| *n == node.name).count();
                let finding = worst
                    .get(&node.name)
                    .map(|(severity, code)| format!("{severity} {code}"))
                    .unwrap_or_default();
                let mut message =
                    convert::node_message(node, u32::try_from(count).unwrap_or(u32::MAX), finding);
                if let Some(install) = installs.get(&node.name) {
                    message.install_method.clone_from(&install.method);
                    message.install_detail.clone_from(&install.detail);
                }
                message
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes: out }))
    }

    async fn list_certificates_inner(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        self.admin_of(&request)?;
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
        let limit = match req.limit {
            0 => CERT_PAGE,
            n => n.min(MAX_CERT_PAGE),
        };
        let after = page_key(&req.page_token)?;
        let rows = self
            .hub
            .store
            .certificates_page(
                node,
                within,
                now,
                after.as_ref().map(|(n, p, i)| (n.as_str(), p.as_str(), *i)),
                limit,
            )
            .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some((node, row)) if u32::try_from(rows.len()).is_ok_and(|n| n == limit) => {
                hex::encode(format!("{node}\0{}\0{}", row.path, row.index))
            }
            _ => String::new(),
        };
        let errors = if after.is_some() {
            Vec::new()
        } else {
            self.hub.store.file_errors(node).map_err(internal)?
        };
        // `--cluster`: the page is cut as without it (the token names the last row read), and
        // only that cluster's rows are returned.
        let members: Option<std::collections::HashSet<String>> = if req.cluster.is_empty() {
            None
        } else {
            let nodes = in_cluster(self.hub.store.nodes().map_err(internal)?, &req.cluster)?;
            Some(nodes.into_iter().map(|n| n.name).collect())
        };
        let wanted = |name: &str| members.as_ref().is_none_or(|m| m.contains(name));
        let errors = errors
            .into_iter()
            .filter(|(node, _)| wanted(node))
            .map(|(node, e)| convert::node_file_error(node, e))
            .collect();
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: rows
                .iter()
                .filter(|(node, _)| wanted(node))
                .map(|(node, row)| convert::node_certificate(node, row))
                .collect(),
            errors,
            next_page_token,
        }))
    }
}

/// The nodes of `cluster` (all of them when it is empty); NOT_FOUND naming the clusters there
/// are when no node is in it (a typo must not look like an empty cluster).
fn in_cluster(
    nodes: Vec<crate::store::NodeRecord>,
    cluster: &str,
) -> Result<Vec<crate::store::NodeRecord>, Status> {
    if cluster.is_empty() {
        return Ok(nodes);
    }
    let known: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n.cluster.as_str()).collect();
    if !known.contains(cluster) {
        let known: Vec<&str> = known.into_iter().collect();
        return Err(Status::not_found(format!(
            "no node is in cluster {cluster:?} (clusters: {})",
            if known.is_empty() {
                "none yet".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(nodes.into_iter().filter(|n| n.cluster == cluster).collect())
}

/// Certificates per `ListCertificates` page when the request names no limit.
const CERT_PAGE: u32 = 2000;
/// The largest page (each certificate is a few hundred bytes on the wire).
const MAX_CERT_PAGE: u32 = 10_000;

/// The (node, path, index) a page token names; `None` for the first page.
fn page_key(token: &str) -> Result<Option<(String, String, u32)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("page_token: not a token from a previous page");
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(node), Some(path), Some(index), None) => Ok(Some((
            node.to_owned(),
            path.to_owned(),
            index.parse().map_err(|_| bad())?,
        ))),
        _ => Err(bad()),
    }
}
