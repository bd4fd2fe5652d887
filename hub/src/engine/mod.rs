//! The plan engine: one loop that, for the active plan, asks the pure decision which nodes
//! may start now and starts them; one task per node in maintenance that walks it through
//! cordon → drain → operation on its agent → verify → uncordon → settle (module `node`).
//!
//! Durability: a node's phase is written to the store before the phase's side effect, and
//! the plan's state before the plan acts on it. A restarted hub finds in-progress nodes in the
//! store and adopts them (re-entering their phase: cordon and drain are idempotent, the
//! operation id is stable so the agent reports instead of re-running, the settle deadline is
//! stored) before it considers starting anything else, so it never has two servers down at
//! once.

mod auto;
pub mod cluster;
pub mod kube_cluster;
pub mod live;
mod node;
pub mod ops;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::plan::action;
use crate::plan::create::{Candidate, plan_nodes};
use crate::plan::decide::{Decision, Policy, Role, decide};
use crate::plan::health::{KubeNode, NodeLive, Unknown, cluster_health};
use crate::plan::model::{NodePhase, Plan, PlanKind, PlanNode, PlanPolicy, PlanState, role_of};
use crate::plan::version::Rke2Version;
use crate::plan::window::MaintenanceWindow;
use crate::registry::Registry;
use crate::store::{NewPlan, Store, StoreError};
use cluster::Cluster;
use live::Live;
use ops::{OpEvent, Ops};

/// How old an etcd or readiness report may be and still open a gate. Agents refresh it with
/// every heartbeat (10 s by default); older than this, the hub asks for a fresh status.
const REPORT_MAX_AGE: Duration = Duration::from_secs(45);

/// How often the gate asks one node for a fresh status while it waits for it.
const STATUS_ASK_INTERVAL: Duration = Duration::from_secs(10);

/// How long a confirmation before taking a server down ([`Engine::confirm_server_start`])
/// waits for the servers' answers before it asks again.
const CONFIRM_TIMEOUT: time::Duration = time::Duration::seconds(30);

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How often the loop looks at the plan when nothing wakes it.
    pub tick: Duration,
    /// Default artifact source for upgrades (URL prefix or folder on the nodes).
    pub artifact_mirror: String,
    /// Hold every node while Prometheus has a firing alert (none: no alert gate).
    pub alert_gate: Option<AlertGate>,
    /// Ended plans and audit rows older than this are removed (hourly, and at start).
    pub history_retention: Duration,
}

/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The alert gate's settings ([`crate::plan::alerts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGate {
    /// Prometheus's base URL (`http://prometheus:9090`).
    pub prometheus_url: String,
    /// Alert names that never hold maintenance.
    pub ignore: Vec<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            artifact_mirror: String::new(),
            alert_gate: None,
            history_retention: Duration::from_secs(
                crate::config::DEFAULT_HISTORY_RETENTION_DAYS * 86_400,
            ),
        }
    }
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// What to do.
    pub kind: PlanKind,
    /// Upgrade target (already resolved from a channel).
    pub target_version: Option<Rke2Version>,
    /// The channel it came from.
    pub channel: String,
    /// Nodes (empty = all).
    pub nodes: Vec<String>,
    /// How.
    pub policy: PlanPolicy,
    /// `operator` or `auto-maintenance`.
    pub origin: String,
}

/// Why a plan request or action is refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is not valid (the message says which field).
    #[error("{0}")]
    Invalid(String),
    /// The store refused (another plan active, unknown plan) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use crate::plan::action::Action;
pub use auto::AutoMaintenance;

/// The engine. Shared (`Arc`) by the gRPC services and its own tasks.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    registry: Arc<Registry>,
    cluster: Option<Arc<dyn Cluster>>,
    settings: EngineSettings,
    /// Agents' health reports.
    pub live: Live,
    ops: Ops,
    running: Mutex<HashSet<(i64, String)>>,
    /// When each node was last asked for a fresh status by the gate.
    asked: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The server about to be taken down and when every server was asked to confirm
    /// etcd's health for it ([`Engine::confirm_server_start`]).
    confirming: Mutex<Option<(String, OffsetDateTime)>>,
    changed: watch::Sender<u64>,
    wake: Notify,
    /// For the alert gate's Prometheus queries.
    http: reqwest::Client,
}

impl Engine {
    /// An engine over `store`, reaching agents through `registry` and Kubernetes through
    /// `cluster` (none: no cordon/drain).
    #[must_use]
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        cluster: Option<Arc<dyn Cluster>>,
        settings: EngineSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            cluster,
            settings,
            live: Live::default(),
            ops: Ops::default(),
            running: Mutex::new(HashSet::new()),
            asked: Mutex::default(),
            confirming: Mutex::default(),
            changed: watch::channel(0).0,
            wake: Notify::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })
    }

    /// The alert gate, when configured.
    #[must_use]
    pub fn alert_gate(&self) -> Option<&AlertGate> {
        self.settings.alert_gate.as_ref()
    }

    /// Whether the hub can cordon and drain.
    #[must_use]
    pub fn has_cluster_access(&self) -> bool {
        self.cluster.is_some()
    }

    /// Changes to any plan bump this counter (for watchers).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    // ---- agents' reports -------------------------------------------------------------

    /// An agent connected (after its hello): pending operations are sent again.
    pub fn on_connected(&self, node: &str, version: &str) {
        self.live.hello(node, version);
        self.ops.resend(&self.registry, node);
        self.wake.notify_one();
    }

    /// An agent's status.
    pub fn on_status(&self, node: &str, status: &pb::Status) {
        self.live.status(node, status, OffsetDateTime::now_utc());
        if status.etcd.is_some() || status.readiness.is_some() {
            self.wake.notify_one();
        }
    }

    /// An agent's bare heartbeat: its last reports hold as of now.
    pub fn on_heartbeat(&self, node: &str) {
        self.live.heartbeat(node, OffsetDateTime::now_utc());
    }

    /// An agent's stream ended: what it reported no longer holds.
    pub fn on_disconnected(&self, node: &str) {
        self.live.forget(node);
    }

    /// An agent's operation progress.
    pub fn on_progress(&self, node: &str, progress: pb::OperationProgress) {
        let id = progress.operation_id.clone();
        if !self
            .ops
            .deliver(node, &id, OpEvent::Progress(progress), |_, _| false)
        {
            tracing::warn!(%node, operation = %id, "progress for another node's operation ignored");
        }
    }

    /// An agent's operation result.
    pub fn on_result(&self, node: &str, result: pb::OperationResult) {
        self.live.version(node, &result.rke2_version);
        let id = result.operation_id.clone();
        let in_maintenance = |plan: i64, attempt: u32| {
            self.store.plan_nodes(plan).is_ok_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.node == node && n.attempt == attempt && n.phase.in_progress())
            })
        };
        if !self
            .ops
            .deliver(node, &id, OpEvent::Result(result), in_maintenance)
        {
            tracing::warn!(%node, operation = %id, "result for another node's operation ignored");
        }
    }

    // ---- operator requests -------------------------------------------------------------

    /// The nodes a request would hold, in order, with skips (nothing stored).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field or node.
    pub fn preview(&self, request: &PlanRequest) -> Result<Vec<PlanNode>, EngineError> {
        validate(request)?;
        let inventory = self
            .store
            .nodes()?
            .into_iter()
            .filter_map(|n| {
                Some(Candidate {
                    role: role_of(&n.role).ok()?,
                    rke2_version: {
                        let live = self.live.get(&n.name).rke2_version;
                        if live.is_empty() {
                            n.rke2_version
                        } else {
                            live
                        }
                    },
                    name: n.name,
                })
            })
            .collect::<Vec<_>>();
        plan_nodes(
            request.kind,
            request.target_version,
            &inventory,
            &request.nodes,
            request.policy.allow_minor_skip,
        )
        .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// Creates the plan; the loop starts it.
    ///
    /// # Errors
    /// [`EngineError`]: invalid request, another plan active.
    pub fn create(&self, request: &PlanRequest, actor: &str) -> Result<i64, EngineError> {
        let nodes = self.preview(request)?;
        let target = request
            .target_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let id = self.store.create_plan(
            &NewPlan {
                kind: request.kind,
                target_version: &target,
                channel: &request.channel,
                policy: &request.policy,
                origin: &request.origin,
                created_by: actor,
            },
            &nodes,
            OffsetDateTime::now_utc(),
        )?;
        tracing::info!(plan = id, kind = %request.kind, %target, nodes = nodes.len(), %actor, "plan created");
        self.notify();
        Ok(id)
    }

    /// Whether plan `id` would accept `action` now (`--dry-run`): the same check as [`Self::act`].
    ///
    /// # Errors
    /// [`EngineError`]: unknown plan, or the reason the action would be refused.
    pub fn check(&self, id: i64, action: &Action) -> Result<(), EngineError> {
        let plan = self.store.plan(id)?;
        let nodes = self.store.plan_nodes(id)?;
        action::check(id, plan.state, &nodes, action).map_err(EngineError::Invalid)
    }

    /// Applies an operator's action.
    ///
    /// # Errors
    /// [`EngineError`]: unknown plan or node, or an action the plan's state does not allow.
    pub async fn act(&self, id: i64, action: &Action, actor: &str) -> Result<(), EngineError> {
        let plan = self.store.plan(id)?;
        let now = OffsetDateTime::now_utc();
        let nodes = self.store.plan_nodes(id)?;
        action::check(id, plan.state, &nodes, action).map_err(EngineError::Invalid)?;
        let word = action.word();
        match action {
            Action::Pause => {
                self.store.set_plan_state(
                    id,
                    PlanState::Paused,
                    &format!("paused by {actor}"),
                    now,
                )?;
            }
            Action::Resume => {
                for mut node in nodes {
                    if node.phase == NodePhase::Failed {
                        node.phase = NodePhase::Pending;
                        node.detail = format!("retrying (resumed by {actor})");
                        node.finished_at = None;
                        self.store
                            .save_plan_node(id, &node, Some("resumed: will retry"), now)?;
                    }
                }
                self.store.set_plan_state(id, PlanState::Running, "", now)?;
            }
            Action::Skip(name) => {
                let mut node = nodes.into_iter().find(|n| &n.node == name).ok_or_else(|| {
                    EngineError::Invalid(format!("plan {id} has no node {name:?}"))
                })?;
                self.release(id, &mut node).await;
                node.phase = NodePhase::Skipped;
                node.detail = format!("skipped by {actor}");
                node.finished_at = Some(now);
                self.store
                    .save_plan_node(id, &node, Some(&format!("skipped by {actor}")), now)?;
                if plan.state == PlanState::Halted {
                    self.store.set_plan_state(id, PlanState::Running, "", now)?;
                }
            }
            Action::Abort => {
                self.store.set_plan_state(
                    id,
                    PlanState::Aborted,
                    &format!("aborted by {actor}"),
                    now,
                )?;
                for mut node in self.store.plan_nodes(id)? {
                    let running = self
                        .running
                        .lock()
                        .map(|r| r.contains(&(id, node.node.clone())))
                        .unwrap_or(false);
                    if running {
                        if node.phase == NodePhase::Operate && !node.operation_id.is_empty() {
                            self.ops
                                .cancel(&self.registry, &node.node, &node.operation_id);
                        }
                        continue; // its task uncordons it at the next phase boundary
                    }
                    if node.cordoned || node.phase == NodePhase::Failed {
                        self.release(id, &mut node).await;
                        self.store.save_plan_node(id, &node, None, now)?;
                    }
                }
            }
        }
        self.store.audit(
            actor,
            &format!("plan.{word}"),
            &format!("plan {id} {action}"),
            now,
        )?;
        self.store
            .plan_event(id, "", &format!("{word} by {actor}"), now)?;
        tracing::info!(plan = id, action = word, %actor, "plan action");
        self.notify();
        Ok(())
    }

    /// Uncordons `node` if the plan cordoned it.
    async fn release(&self, id: i64, node: &mut PlanNode) {
        if !node.cordoned {
            return;
        }
        if let Some(cluster) = &self.cluster {
            match cluster.uncordon(&node.node).await {
                Ok(()) => {
                    node.cordoned = false;
                    let _ = self.store.plan_event(
                        id,
                        &node.node,
                        "uncordoned",
                        OffsetDateTime::now_utc(),
                    );
                }
                Err(e) => {
                    tracing::warn!(plan = id, node = %node.node, error = %e, "uncordon failed");
                }
            }
        } else {
            node.cordoned = false;
        }
    }

    // ---- the loop ----------------------------------------------------------------------

    /// Runs the engine until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(std::time::Instant::now());
                self.prune_history().await;
            }
            if let Err(e) = Arc::clone(&self).pass().await {
                tracing::error!(error = %e, "plan engine pass failed");
            }
            let _ = tokio::time::timeout(self.settings.tick, self.wake.notified()).await;
        }
    }

    /// Removes ended plans and audit rows older than the retention, off the async workers
    /// (a year of history is a large delete).
    async fn prune_history(&self) {
        let store = self.store.clone();
        let before = OffsetDateTime::now_utc() - self.settings.history_retention;
        match tokio::task::spawn_blocking(move || store.prune_history(before)).await {
            Ok(Ok(p)) if p.plans + p.audit_rows > 0 => {
                tracing::info!(plans = p.plans, audit_rows = p.audit_rows, %before, "old history pruned");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune old history"),
            Err(e) => tracing::warn!(error = %e, "history pruning task failed"),
        }
    }

    /// One look at every active plan.
    async fn pass(self: Arc<Self>) -> Result<(), StoreError> {
        for plan in self.store.plans(true)? {
            Arc::clone(&self).drive(plan).await?;
        }
        self.release_leftovers().await
    }

    /// Ended plans must leave nothing behind: a node still in maintenance when its plan was
    /// aborted (the hub may have restarted since) is walked to its end by its task, and a node
    /// the plan cordoned but could not uncordon yet (hub killed mid-abort, API unreachable) is
    /// uncordoned now; retried every pass until it works.
    async fn release_leftovers(self: &Arc<Self>) -> Result<(), StoreError> {
        // Only the ended plans that still hold something: the history is never read whole.
        for plan_id in self.store.ended_plans_to_release()? {
            for mut node in self.store.plan_nodes(plan_id)? {
                let running = self
                    .running
                    .lock()
                    .map(|r| r.contains(&(plan_id, node.node.clone())))
                    .unwrap_or(false);
                if node.phase.in_progress() {
                    self.spawn_node(plan_id, &node.node);
                } else if node.cordoned && !running {
                    self.release(plan_id, &mut node).await;
                    if !node.cordoned {
                        self.store.save_plan_node(
                            plan_id,
                            &node,
                            None,
                            OffsetDateTime::now_utc(),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn_node(self: &Arc<Self>, id: i64, node: &str) {
        let key = (id, node.to_owned());
        let fresh = self
            .running
            .lock()
            .map(|mut r| r.insert(key.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            node::run(&engine, key.0, &key.1).await;
            if let Ok(mut r) = engine.running.lock() {
                r.remove(&key);
            }
            engine.notify();
        });
    }

    async fn drive(self: Arc<Self>, plan: Plan) -> Result<(), StoreError> {
        let id = plan.id;
        let nodes = self.store.plan_nodes(id)?;
        // Adopt nodes in maintenance that have no task (the hub restarted mid-node).
        for node in nodes.iter().filter(|n| n.phase.in_progress()) {
            self.spawn_node(id, &node.node);
        }
        if plan.state != PlanState::Running {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let window = match plan.policy.window.as_deref().map(MaintenanceWindow::parse) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                self.halt(&plan, &e.to_string(), now)?;
                return Ok(());
            }
            None => None,
        };
        let policy = Policy {
            concurrency: usize::try_from(plan.policy.concurrency.max(1)).unwrap_or(1),
            window,
            paused: false,
        };
        let views: Vec<_> = nodes.iter().map(PlanNode::decision_view).collect();
        let health = self.cluster_health(now).await;
        let mut decision = match (
            decide(&views, &policy, &health.clone().unwrap_or_default(), now),
            &health,
        ) {
            (Decision::Start(_), Err(unknown)) => {
                self.ask_for_status(&unknown.ask);
                Decision::Wait(unknown.reason.clone())
            }
            (d, _) => d,
        };
        // The alert gate asks Prometheus only when a node would start now, so a slow or
        // absent Prometheus never delays the rest of a pass.
        if let (Decision::Start(_), Ok(mut health), Some(gate)) =
            (&decision, health, &self.settings.alert_gate)
        {
            decision = match crate::fetch::alerts::fetch_blocking(
                &self.http,
                &gate.prometheus_url,
                &gate.ignore,
            )
            .await
            {
                Ok(firing) => {
                    health.alerts_firing = firing;
                    decide(&views, &policy, &health, now)
                }
                Err(e) => Decision::Wait(e.to_string()),
            };
        }
        if let Decision::Start(names) = &decision
            && let Some(server) = names.iter().find(|n| {
                nodes
                    .iter()
                    .any(|p| &p.node == *n && p.role == Role::Server)
            })
        {
            decision = self
                .confirm_server_start(&views, &policy, server, now)
                .await;
        }
        match decision {
            Decision::Start(names) => {
                for name in names {
                    let Some(mut node) = nodes.iter().find(|n| n.node == name).cloned() else {
                        continue;
                    };
                    if !self.registry.connected().contains(&name) {
                        self.set_reason(
                            &plan,
                            &format!("waiting for {name}'s agent to connect"),
                            now,
                        )?;
                        return Ok(());
                    }
                    node.attempt += 1;
                    node.phase = NodePhase::Cordon;
                    node.started_at = Some(now);
                    node.phase_at = Some(now);
                    node.finished_at = None;
                    node.step.clear();
                    node.detail.clear();
                    node.operation_id.clear();
                    self.store.save_plan_node(
                        id,
                        &node,
                        Some(&format!("maintenance starts (attempt {})", node.attempt)),
                        now,
                    )?;
                    self.spawn_node(id, &name);
                }
                self.set_reason(&plan, "", now)?;
                self.notify();
            }
            Decision::Wait(why) => self.set_reason(&plan, &why, now)?,
            Decision::Halted(why) => self.halt(&plan, &why, now)?,
            Decision::Complete => {
                self.store.set_plan_state(
                    id,
                    PlanState::Completed,
                    "every node done or skipped",
                    now,
                )?;
                self.store.plan_event(id, "", "completed", now)?;
                tracing::info!(plan = id, "plan completed");
                self.notify();
            }
        }
        Ok(())
    }

    fn set_reason(&self, plan: &Plan, why: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        if plan.reason != why {
            self.store
                .set_plan_state(plan.id, PlanState::Running, why, now)?;
            self.notify();
        }
        Ok(())
    }

    fn halt(&self, plan: &Plan, why: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        self.store
            .set_plan_state(plan.id, PlanState::Halted, why, now)?;
        self.store
            .plan_event(plan.id, "", &format!("halted: {why}"), now)?;
        tracing::warn!(plan = plan.id, reason = %why, "plan halted");
        self.notify();
        Ok(())
    }

    /// What the hub knows live about every node.
    fn node_lives(&self) -> Vec<NodeLive> {
        let connected = self.registry.connected();
        self.store
            .nodes()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| {
                let reports = self.live.get(&n.name);
                Some(NodeLive {
                    role: role_of(&n.role).ok()?,
                    online: connected.contains(&n.name),
                    rke2_version: if reports.rke2_version.is_empty() {
                        n.rke2_version
                    } else {
                        reports.rke2_version
                    },
                    etcd: reports.etcd,
                    readiness: reports.readiness,
                    name: n.name,
                })
            })
            .collect()
    }

    async fn kube_nodes(&self) -> Result<Option<Vec<KubeNode>>, String> {
        match &self.cluster {
            Some(c) => c.nodes().await.map(Some),
            None => Ok(None),
        }
    }

    async fn cluster_health(
        &self,
        now: OffsetDateTime,
    ) -> Result<crate::plan::decide::Health, Unknown> {
        self.cluster_health_within(now, REPORT_MAX_AGE).await
    }

    /// [`Engine::cluster_health`] on reports at most `max_age` old.
    async fn cluster_health_within(
        &self,
        now: OffsetDateTime,
        max_age: Duration,
    ) -> Result<crate::plan::decide::Health, Unknown> {
        let kube = self.kube_nodes().await.map_err(|e| Unknown {
            reason: format!("Kubernetes API: {e}"),
            ask: Vec::new(),
        })?;
        cluster_health(&self.node_lives(), kube.as_deref(), now, max_age)
    }

    /// Taking a server down rests on etcd's state now, not on reports up to
    /// [`REPORT_MAX_AGE`] old: a partition that began after the last heartbeat would
    /// otherwise pass the gate (and only the agent's own preflight would stop it, halting the
    /// plan). So every connected server is asked for a fresh status first, and the gates are
    /// decided again on reports that arrived after that question; until they are in, the plan
    /// waits and says so. Unanswered questions are asked again after [`CONFIRM_TIMEOUT`].
    async fn confirm_server_start(
        &self,
        views: &[crate::plan::decide::PlanNode],
        policy: &Policy,
        server: &str,
        now: OffsetDateTime,
    ) -> Decision {
        let asked_at = {
            let Ok(mut confirming) = self.confirming.lock() else {
                return Decision::Wait("internal: confirmation state poisoned".to_owned());
            };
            match &*confirming {
                Some((name, at)) if name == server && now - *at < CONFIRM_TIMEOUT => *at,
                _ => {
                    *confirming = Some((server.to_owned(), now));
                    let servers: Vec<String> = self
                        .node_lives()
                        .into_iter()
                        .filter(|n| n.online && n.role == Role::Server)
                        .map(|n| n.name)
                        .collect();
                    self.request_status(&servers);
                    return Decision::Wait(format!(
                        "confirming etcd and apiserver health with every server before taking \
                         {server} down"
                    ));
                }
            }
        };
        let since = (now - asked_at).max(time::Duration::ZERO);
        let since = Duration::try_from(since).unwrap_or_default();
        let health = match self.cluster_health_within(now, since).await {
            Ok(health) => health,
            Err(unknown) => {
                return Decision::Wait(format!(
                    "confirming health before taking {server} down: {}",
                    unknown.reason
                ));
            }
        };
        let decision = decide(views, policy, &health, now);
        if matches!(decision, Decision::Start(_))
            && let Ok(mut confirming) = self.confirming.lock()
        {
            *confirming = None;
        }
        decision
    }

    /// Asks `nodes` for a fresh status (their agents probe again and answer within a
    /// moment), at most once per [`STATUS_ASK_INTERVAL`] each, so a gate that waits on a
    /// quiet or slow node neither waits a whole heartbeat nor floods it.
    fn ask_for_status(&self, nodes: &[String]) {
        let now = std::time::Instant::now();
        let Ok(mut asked) = self.asked.lock() else {
            return;
        };
        asked.retain(|_, at| now.duration_since(*at) < STATUS_ASK_INTERVAL);
        let due: Vec<String> = nodes
            .iter()
            .filter(|n| !asked.contains_key(*n))
            .cloned()
            .collect();
        for node in &due {
            asked.insert(node.clone(), now);
        }
        drop(asked);
        self.request_status(&due);
    }

    /// Sends `RequestStatus` to each of `nodes` now.
    fn request_status(&self, nodes: &[String]) {
        for node in nodes {
            let sent = self.registry.send(
                node,
                pb::HubMessage {
                    body: Some(pb::hub_message::Body::RequestStatus(pb::RequestStatus {})),
                },
            );
            tracing::debug!(%node, sent, "asked for a fresh status before a gate");
        }
    }
}

/// Checks a request's fields.
fn validate(request: &PlanRequest) -> Result<(), EngineError> {
    let invalid = |m: String| Err(EngineError::Invalid(m));
    if request.kind == PlanKind::Upgrade && request.target_version.is_none() {
        return invalid("upgrade: a --version or --channel is required".to_owned());
    }
    if request.kind != PlanKind::Upgrade && request.target_version.is_some() {
        return invalid(format!("{}: takes no version", request.kind));
    }
    if let Some(w) = &request.policy.window
        && let Err(e) = MaintenanceWindow::parse(w)
    {
        return invalid(e.to_string());
    }
    for service in &request.policy.services {
        if rke2ops_common::layout::service_certs(service).is_none() {
            return invalid(format!(
                "services: unknown RKE2 service {service:?} (known: {})",
                rke2ops_common::layout::SERVICES.join(", ")
            ));
        }
    }
    if request.policy.concurrency > 100 {
        return invalid("concurrency: at most 100 workers at once".to_owned());
    }
    crate::plan::create::check_policy_bounds(&request.policy).map_err(EngineError::Invalid)?;
    Ok(())
}
