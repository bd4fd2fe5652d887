//! The fleet doctor's gathering: the Kubernetes objects (through the engine's [`Cluster`]),
//! the inventory, every agent's stored findings and clock, the servers' etcd reports and
//! each node's last renewal, handed to the pure checks ([`crate::doctor::run`]). The admin
//! RPC, a plan's preflight, the checks before each node and the periodic refresh all come
//! here, and each run is kept as [`crate::doctor::Latest`].
//!
//! [`Cluster`]: super::cluster::Cluster

use std::time::Duration;

use rke2ops_common::doctor::Finding;
use rke2ops_common::version::Rke2Version;
use time::OffsetDateTime;

use super::Engine;
use crate::doctor::agents::AgentView;
use crate::doctor::{ClusterFacts, FleetFacts, KubeSkipped, NodeVersion};
use crate::plan::decide::Role;
use crate::store::StoreError;

/// An etcd report older than this says nothing about etcd now.
const ETCD_REPORT_MAX_AGE: Duration = Duration::from_secs(120);

/// Nodes held by the doctor's checks: who, since when, and the Kubernetes facts read then.
pub(super) type Held = (
    Vec<String>,
    std::time::Instant,
    Result<ClusterFacts, KubeSkipped>,
);

/// Kubernetes facts this recent serve the checks of nodes still held (see
/// [`Engine::node_checks`]).
const NODE_CHECK_REUSE: Duration = Duration::from_secs(5);

/// After an agent's findings changed, the last run is refreshed no sooner than this after
/// the previous one (each run reads the cluster's pods and budgets).
pub(super) const REFRESH_SOON: Duration = Duration::from_secs(10);

/// How often the engine refreshes [`crate::doctor::Latest`] on its own.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(60);

impl Engine {
    /// Every finding of the fleet now, worst first (with a plan's `target`, the nodes already
    /// at or above it too); kept as the latest run.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn fleet_findings(
        &self,
        target: Option<&Rke2Version>,
    ) -> Result<Vec<Finding>, StoreError> {
        let mut facts = std::collections::BTreeMap::new();
        for cluster in self.cluster_names()? {
            let read = self.cluster_facts(&cluster).await;
            facts.insert(cluster, read);
        }
        let findings = self.findings_with(&facts, target)?;
        self.doctor.set(OffsetDateTime::now_utc(), findings.clone());
        Ok(findings)
    }

    /// The clusters the inventory's nodes are in.
    fn cluster_names(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        Ok(self.store.nodes()?.into_iter().map(|n| n.cluster).collect())
    }

    /// What the fleet doctor reads from `cluster`'s Kubernetes API, or why it could not.
    async fn cluster_facts(&self, cluster: &str) -> Result<ClusterFacts, KubeSkipped> {
        match self.kube(cluster) {
            None => Err(KubeSkipped::NoKubeconfig),
            Some(c) => c.doctor_facts().await.map_err(|e| {
                tracing::warn!(%cluster, error = %e, "doctor: cannot read the cluster");
                KubeSkipped::Unreachable(e)
            }),
        }
    }

    /// The findings of each cluster in `facts` (its Kubernetes objects, or why they could not
    /// be read) over what the store and the live reports hold now. Each cluster is checked on
    /// its own: version skew, etcd agreement and budgets hold within a cluster, never across.
    fn findings_with(
        &self,
        facts: &std::collections::BTreeMap<String, Result<ClusterFacts, KubeSkipped>>,
        target: Option<&Rke2Version>,
    ) -> Result<Vec<Finding>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let nodes = self.store.nodes()?;
        let reported = self.store.node_findings()?;
        let connected = self.registry.connected();
        let max_age = time::Duration::try_from(ETCD_REPORT_MAX_AGE).unwrap_or_default();
        // Only the events need each node's last renewal.
        let renewed_at = if facts.values().any(Result::is_ok) {
            self.store.last_renewals()?
        } else {
            std::collections::HashMap::new()
        };
        let mut all = Vec::new();
        let several = facts.len() > 1;
        for (cluster, kube) in facts {
            let members: Vec<&crate::store::NodeRecord> =
                nodes.iter().filter(|n| &n.cluster == cluster).collect();
            let versions: Vec<NodeVersion> = members
                .iter()
                .map(|n| NodeVersion {
                    name: n.name.clone(),
                    role: n.role.clone(),
                    version: n.rke2_version.clone(),
                })
                .collect();
            let agents: Vec<AgentView<'_>> = reported
                .iter()
                .filter_map(|r| {
                    let node = members.iter().find(|n| n.name == r.node)?;
                    Some(AgentView {
                        reported: r,
                        online: connected.contains(&r.node),
                        last_seen: node.last_seen,
                    })
                })
                .collect();
            let etcd: Vec<_> = self
                .node_lives(Some(cluster))
                .into_iter()
                .filter(|n| n.online && n.role == Role::Server)
                .filter_map(|n| {
                    let report = n.etcd?;
                    (now - report.received_at <= max_age).then_some((n.name, report))
                })
                .collect();
            let found = crate::doctor::run(&FleetFacts {
                cluster: kube.as_ref().map_err(Clone::clone),
                nodes: &versions,
                target,
                agents: &agents,
                etcd: &etcd,
                renewed_at: &renewed_at,
                clock_threshold: self.settings.clock_skew,
            });
            // A finding about no node says which cluster it is about when there are several.
            all.extend(found.into_iter().map(|f| {
                if several && f.node.is_empty() {
                    f.with("cluster", cluster.clone())
                } else {
                    f
                }
            }));
        }
        rke2ops_common::doctor::sort(&mut all);
        Ok(all)
    }

    /// The doctor's checks right before `names` start in `plan`: why they must wait (a
    /// blocker about them or the cluster that the plan did not accept), if anything. The
    /// agents' findings are always the store's latest; the Kubernetes objects are read fresh
    /// for every start, and reused for [`NODE_CHECK_REUSE`] only while these same nodes are
    /// held, so a hold does not list the cluster's pods every tick.
    pub(super) async fn node_checks(
        &self,
        plan: &crate::plan::model::Plan,
        names: &[String],
    ) -> Option<String> {
        let reuse = self.held.lock().ok().and_then(|held| {
            held.as_ref()
                .filter(|(who, at, _)| who == names && at.elapsed() < NODE_CHECK_REUSE)
                .map(|(_, _, facts)| facts.clone())
        });
        let cluster = match reuse {
            Some(facts) => facts,
            None => self.cluster_facts(&plan.cluster).await,
        };
        let target: Option<Rke2Version> = plan.target_version.parse().ok();
        let only = std::collections::BTreeMap::from([(plan.cluster.clone(), cluster.clone())]);
        let findings = match self.findings_with(&only, target.as_ref()) {
            Ok(findings) => findings,
            Err(e) => return Some(format!("the doctor's checks could not run: {e}")),
        };
        let accept: Vec<rke2ops_common::doctor::Code> = plan
            .policy
            .accept
            .iter()
            .filter_map(|c| rke2ops_common::doctor::Code::parse(c))
            .collect();
        let hold =
            crate::doctor::preflight::Preflight::of(findings, names, plan.policy.drain, &accept)
                .hold();
        if let Ok(mut held) = self.held.lock() {
            *held = match (&hold, held.take()) {
                // Still held: the facts keep their first read's time.
                (Some(_), Some(same)) if same.0 == names && same.1.elapsed() < NODE_CHECK_REUSE => {
                    Some(same)
                }
                (Some(_), _) => Some((names.to_vec(), std::time::Instant::now(), cluster)),
                (None, _) => None,
            };
        }
        hold
    }

    /// Refreshes the latest run in the background (the loop calls it every
    /// [`REFRESH_EVERY`]), so a slow API never holds the plan loop.
    pub(super) fn refresh_doctor(self: &std::sync::Arc<Self>) {
        let engine = std::sync::Arc::clone(self);
        let task = async move {
            if let Err(e) = engine.fleet_findings(None).await {
                tracing::warn!(error = %e, "doctor refresh failed");
            }
        };
        tokio::spawn(tracing::Instrument::instrument(
            task,
            tracing::info_span!("doctor_refresh"),
        ));
    }
}
