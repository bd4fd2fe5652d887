//! Auto-maintenance: the hub creating `restart` plans by itself for nodes whose renewal
//! deadline is near ([`crate::plan::auto`] decides which), inside the configured window, and
//! warning when that window opens too late for a node.

use std::sync::Arc;
use std::time::Duration;

use rke2ops_common::report::json::rfc3339;
use time::OffsetDateTime;
use tracing::Instrument as _;

use super::{Engine, EngineError, PlanRequest};
use crate::plan::model::{PlanKind, PlanPolicy};
use crate::plan::window::MaintenanceWindow;

/// Auto-maintenance settings.
#[derive(Debug, Clone)]
pub struct AutoMaintenance {
    /// Restart nodes whose renewal deadline is this close.
    pub lead: Duration,
    /// The window those plans run in.
    pub window: Option<String>,
    /// How often to look.
    pub every: Duration,
}

impl Engine {
    /// Auto-maintenance: every `every`, when no plan is active, creates a `restart` plan for
    /// the nodes whose renewal deadline is near (see [`crate::plan::auto`]). Runs in its own
    /// span whoever spawns it.
    pub async fn auto_maintenance(self: Arc<Self>, auto: AutoMaintenance) {
        self.auto_loop(auto)
            .instrument(tracing::info_span!("auto_maintenance"))
            .await;
    }

    async fn auto_loop(self: Arc<Self>, auto: AutoMaintenance) {
        let mut tick = tokio::time::interval(auto.every);
        loop {
            tick.tick().await;
            if let Err(e) = self.auto_once(&auto) {
                tracing::warn!(error = %e, "auto-maintenance could not create a plan");
            }
        }
    }

    /// One auto-maintenance look over every cluster; returns the plans it created.
    ///
    /// # Errors
    /// Store failures or a refused plan.
    pub fn auto_once(&self, auto: &AutoMaintenance) -> Result<Vec<i64>, EngineError> {
        let clusters: std::collections::BTreeSet<String> =
            self.store.nodes()?.into_iter().map(|n| n.cluster).collect();
        let busy: Vec<String> = self
            .store
            .plans(true)?
            .into_iter()
            .map(|p| p.cluster)
            .collect();
        let mut created = Vec::new();
        for cluster in clusters.into_iter().filter(|c| !busy.contains(c)) {
            if let Some(id) = self.auto_cluster(auto, &cluster)? {
                created.push(id);
            }
        }
        Ok(created)
    }

    /// Auto-maintenance of one cluster that has no active plan.
    fn auto_cluster(
        &self,
        auto: &AutoMaintenance,
        cluster: &str,
    ) -> Result<Option<i64>, EngineError> {
        let now = OffsetDateTime::now_utc();
        let day_ago = now - Duration::from_secs(86_400);
        let mut recent = Vec::new();
        for plan in self.store.plans_created_since(day_ago)? {
            if plan.origin == "auto-maintenance" && plan.created_at > day_ago {
                recent.extend(self.store.plan_nodes(plan.id)?.into_iter().map(|n| n.node));
            }
        }
        let deadlines: Vec<(String, Option<OffsetDateTime>)> = self
            .store
            .nodes()?
            .into_iter()
            .filter(|n| n.cluster == cluster)
            .map(|n| (n.name, n.renewal_deadline))
            .collect();
        let due = crate::plan::auto::due_nodes(&deadlines, &recent, now, auto.lead);
        if due.is_empty() {
            return Ok(None);
        }
        let request = PlanRequest {
            kind: PlanKind::Restart,
            target_version: None,
            channel: String::new(),
            nodes: due.clone(),
            policy: PlanPolicy {
                window: auto.window.clone(),
                ..PlanPolicy::default()
            },
            origin: "auto-maintenance".to_owned(),
            cluster: cluster.to_owned(),
            rollout: None,
        };
        let id = self.create(&request, "hub:auto-maintenance")?;
        tracing::info!(plan = id, %cluster, nodes = %due.join(","), "auto-maintenance: renew-by-restart plan created");
        if let Some(window) = &auto.window {
            let next_open = MaintenanceWindow::parse(window)
                .ok()
                .and_then(|w| w.next_open(now));
            for (node, deadline) in crate::plan::auto::late_for_window(&deadlines, &due, next_open)
            {
                let opens = next_open.map_or_else(|| "never".to_owned(), rfc3339);
                let message = format!(
                    "renewal deadline {} comes before the window {window} opens ({opens}): \
                     restart it by hand now (`rke2-node-agent restart` on the node, or abort \
                     plan {id} and run `rke2-hub restart --node {node}`) or widen the window",
                    rfc3339(deadline)
                );
                tracing::warn!(plan = id, %node, "auto-maintenance: {message}");
                self.store.plan_event(id, &node, &message, now)?;
            }
        }
        Ok(Some(id))
    }
}
