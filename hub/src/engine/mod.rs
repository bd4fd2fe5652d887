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
//!
//! Layout, by job:
//! - `reports`: agent reports coming in (connection, status, heartbeat, operation progress
//!   and results);
//! - `requests`: operator requests (preview, create, pause, resume, skip, abort);
//! - `drive`: the loop and its pass over the active plans; `gates` feeds the health gates;
//!   `images` stages an upgrade's air-gap images on every node before the first one starts
//!   (and prunes the old ones after the plan);
//!   `node` walks one node through its phases (which phase follows which is decided by the
//!   pure [`NodePhase`](crate::plan::model::NodePhase) transitions);
//! - [`ops`]: operations in flight; [`live`]: agents' health reports; [`cluster`]: what the
//!   engine needs from Kubernetes; [`messages`]: what the hub and agents say, as domain
//!   types; `auto`: auto-maintenance.
//!
//! The engine never touches prost types: the gRPC layer converts at its edge
//! ([`crate::grpc::convert`]).

mod auto;
pub mod cluster;
mod doctor;
mod drive;
mod gates;
mod images;
pub mod kube_cluster;
pub mod live;
pub mod messages;
mod node;
pub mod ops;
mod probes;
mod reports;
mod requests;
mod rollouts;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::plan::model::PlanNode;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use cluster::Cluster;
use live::Live;
use ops::Ops;

pub use crate::plan::action::Action;
pub use crate::plan::create::PlanRequest;
pub use auto::AutoMaintenance;
pub use rollouts::RolloutRequest;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How often the loop looks at the plan when nothing wakes it.
    pub tick: Duration,
    /// Default artifact source for upgrades (URL prefix or folder on the nodes).
    pub artifact_mirror: String,
    /// Clusters whose default artifact source is another (`[clusters.NAME]
    /// artifact_mirror`).
    pub cluster_mirrors: std::collections::BTreeMap<String, String>,
    /// Hold every node while Prometheus has a firing alert (none: no alert gate).
    pub alert_gate: Option<AlertGate>,
    /// Ended plans and audit rows older than this are removed (hourly, and at start).
    pub history_retention: Duration,
    /// The doctor's clock-skew threshold ([`crate::doctor::clock`]).
    pub clock_skew: Duration,
    /// Probes for plans whose request names none (hub.toml `probes`).
    pub default_probes: Vec<crate::probe::ProbeSpec>,
    /// Webhooks told about plan and probe events (none: no webhooks configured).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

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
            cluster_mirrors: std::collections::BTreeMap::new(),
            alert_gate: None,
            history_retention: Duration::from_secs(
                crate::config::DEFAULT_HISTORY_RETENTION_DAYS * 86_400,
            ),
            clock_skew: Duration::from_secs(crate::doctor::clock::DEFAULT_THRESHOLD_SECS),
            default_probes: Vec::new(),
            notifier: None,
        }
    }
}

/// Why a plan request or action is refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is not valid (the message says which field).
    #[error("{0}")]
    Invalid(String),
    /// A request named a cluster no node is in (the message names the clusters there are).
    #[error("{0}")]
    UnknownCluster(String),
    /// The store refused (another plan active, unknown plan) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine. Shared (`Arc`) by the gRPC services and its own tasks.
#[derive(Debug)]
pub struct Engine {
    /// Plans, nodes and their phases: written before every side effect.
    store: Store,
    /// The agents' live streams, to send them operations and status requests.
    registry: Arc<Registry>,
    /// Cordon, drain and Node readiness, per cluster name (a cluster without an entry: the
    /// hub has no Kubernetes access there, so no cordon/drain).
    clusters: std::collections::BTreeMap<String, Arc<dyn Cluster>>,
    /// Fixed for the engine's life.
    settings: EngineSettings,
    /// Agents' health reports.
    pub live: Live,
    /// Operations in flight and where their reports go.
    ops: Ops,
    /// The (plan, node) pairs that have a task walking them now: at most one each.
    running: Mutex<HashSet<(i64, String)>>,
    /// When each node was last asked for a fresh status by the gate.
    asked: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The server about to be taken down and when every server was asked to confirm
    /// etcd's health for it ([`Engine::confirm_server_start`]).
    confirming: Mutex<std::collections::HashMap<String, OffsetDateTime>>,
    /// Bumped on every plan change, for watchers.
    changed: watch::Sender<u64>,
    /// Wakes the loop before its tick (a change, a report a gate waits on).
    wake: Notify,
    /// For the alert gate's Prometheus queries.
    http: reqwest::Client,
    /// The fleet doctor's last run.
    doctor: Arc<crate::doctor::Latest>,
    /// An agent reported changed findings: the last run is refreshed at the loop's next
    /// chance (at most every [`doctor::REFRESH_SOON`]).
    doctor_due: std::sync::atomic::AtomicBool,
    /// The nodes the doctor's checks hold now, since when, and the Kubernetes facts read
    /// then (reused briefly while they stay held).
    held: Mutex<Option<doctor::Held>>,
    /// Plans whose probes have a task running ([`probes`]).
    probing: Mutex<HashSet<i64>>,
    /// The soak watch of each rollout between waves ([`rollouts`]).
    soaking: Mutex<std::collections::HashMap<i64, rollouts::SoakWatch>>,
    /// Held while a rollout's wave plans are created: `CreateRollout` (an RPC) and the loop's
    /// pass may both find a cluster of the wave without a plan; the second must see the
    /// first's plan, not be refused by the one-active-plan rule and halt the rollout.
    creating_wave_plans: Mutex<()>,
}

impl Engine {
    /// An engine over `store`, reaching agents through `registry` and the default cluster's
    /// Kubernetes API through `cluster` (none: no cordon/drain there).
    #[must_use]
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        cluster: Option<Arc<dyn Cluster>>,
        settings: EngineSettings,
    ) -> Arc<Self> {
        let clusters = cluster
            .map(|c| (rke2ops_common::ids::DEFAULT_CLUSTER.to_owned(), c))
            .into_iter()
            .collect();
        Self::with_clusters(store, registry, clusters, settings)
    }

    /// [`Self::new`] with Kubernetes access per cluster name.
    #[must_use]
    pub fn with_clusters(
        store: Store,
        registry: Arc<Registry>,
        clusters: std::collections::BTreeMap<String, Arc<dyn Cluster>>,
        settings: EngineSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            clusters,
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
            doctor: Arc::default(),
            held: Mutex::default(),
            probing: Mutex::default(),
            soaking: Mutex::default(),
            creating_wave_plans: Mutex::default(),
            doctor_due: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// An agent's findings changed: `nodes`, `certs` and the metrics should show it soon.
    pub fn findings_changed(&self) {
        self.doctor_due
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // The loop's own tick picks it up; plan watchers are not concerned.
    }

    /// The fleet doctor's last run (for `nodes`, `certs` and the metrics).
    #[must_use]
    pub fn doctor_latest(&self) -> Arc<crate::doctor::Latest> {
        Arc::clone(&self.doctor)
    }

    /// The alert gate, when configured.
    #[must_use]
    pub fn alert_gate(&self) -> Option<&AlertGate> {
        self.settings.alert_gate.as_ref()
    }

    /// Where a plan's upgrades fetch from: its own `--artifact-source`, else its cluster's
    /// mirror, else the hub's.
    #[must_use]
    pub fn artifact_source(
        &self,
        policy: &crate::plan::model::PlanPolicy,
        cluster: &str,
    ) -> String {
        if !policy.artifact_source.is_empty() {
            return policy.artifact_source.clone();
        }
        self.settings
            .cluster_mirrors
            .get(cluster)
            .unwrap_or(&self.settings.artifact_mirror)
            .clone()
    }

    /// The probes a plan gets when its request names none.
    #[must_use]
    pub fn default_probes(&self) -> &[crate::probe::ProbeSpec] {
        &self.settings.default_probes
    }

    /// Whether the hub can cordon and drain in `cluster`.
    #[must_use]
    pub fn has_cluster_access(&self, cluster: &str) -> bool {
        self.clusters.contains_key(cluster)
    }

    /// Kubernetes access to `cluster`, if the hub has it.
    fn kube(&self, cluster: &str) -> Option<&Arc<dyn Cluster>> {
        self.clusters.get(cluster)
    }

    /// Kubernetes access to plan `id`'s cluster, if the hub has it.
    fn kube_of_plan(&self, id: i64) -> Option<&Arc<dyn Cluster>> {
        let cluster = self.store.plan(id).ok()?.cluster;
        self.kube(&cluster)
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

    /// Tells the webhooks, if any, about `event`: queued, never awaited, so a slow or
    /// absent receiver cannot hold a plan.
    fn announce(&self, event: &crate::notify::Event) {
        if let Some(notifier) = &self.settings.notifier {
            notifier.send(event);
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Uncordons `node` if the plan cordoned it.
    async fn release(&self, id: i64, node: &mut PlanNode) {
        if !node.cordoned {
            return;
        }
        if let Some(cluster) = self.kube_of_plan(id) {
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
}
