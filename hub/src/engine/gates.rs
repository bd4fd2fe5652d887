//! The health gates' inputs: what the hub knows live about every node (agents' reports and
//! the Kubernetes API), fresh statuses asked for when a gate waits on an old report, and the
//! confirmation with every server before one is taken down. The gates themselves are pure
//! ([`crate::plan::health`], [`crate::plan::decide`]).

use std::time::Duration;

use time::OffsetDateTime;

use super::Engine;
use super::messages::ToAgent;
use crate::plan::decide::{Decision, Health, PlanNode as DecisionNode, Policy, Role, decide};
use crate::plan::health::{KubeNode, NodeLive, Unknown, cluster_health};
use crate::plan::model::role_of;

/// How old an etcd or readiness report may be and still open a gate. Agents refresh it with
/// every heartbeat (10 s by default); older than this, the hub asks for a fresh status.
const REPORT_MAX_AGE: Duration = Duration::from_secs(45);

/// How often the gate asks one node for a fresh status while it waits for it.
const STATUS_ASK_INTERVAL: Duration = Duration::from_secs(10);

/// How long a confirmation before taking a server down ([`Engine::confirm_server_start`])
/// waits for the servers' answers before it asks again.
const CONFIRM_TIMEOUT: time::Duration = time::Duration::seconds(30);

impl Engine {
    /// What the hub knows live about every node of `cluster` (`None`: of every cluster).
    pub(super) fn node_lives(&self, cluster: Option<&str>) -> Vec<NodeLive> {
        let connected = self.registry.connected();
        self.store
            .nodes()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| cluster.is_none_or(|c| n.cluster == c))
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

    async fn kube_nodes(&self, cluster: &str) -> Result<Option<Vec<KubeNode>>, String> {
        match self.kube(cluster) {
            Some(c) => c.nodes().await.map(Some),
            None => Ok(None),
        }
    }

    /// The health of `cluster` (its own etcd, apiservers and Nodes; other clusters' never
    /// hold it).
    pub(super) async fn cluster_health(
        &self,
        cluster: &str,
        now: OffsetDateTime,
    ) -> Result<Health, Unknown> {
        self.cluster_health_within(cluster, now, REPORT_MAX_AGE)
            .await
    }

    /// [`Engine::cluster_health`] on reports at most `max_age` old.
    async fn cluster_health_within(
        &self,
        cluster: &str,
        now: OffsetDateTime,
        max_age: Duration,
    ) -> Result<Health, Unknown> {
        let kube = self.kube_nodes(cluster).await.map_err(|e| Unknown {
            reason: format!("Kubernetes API of cluster {cluster}: {e}"),
            ask: Vec::new(),
        })?;
        cluster_health(
            &self.node_lives(Some(cluster)),
            kube.as_deref(),
            now,
            max_age,
        )
    }

    /// Taking a server down rests on etcd's state now, not on reports up to
    /// [`REPORT_MAX_AGE`] old: a partition that began after the last heartbeat would
    /// otherwise pass the gate (and only the agent's own preflight would stop it, halting the
    /// plan). So every connected server is asked for a fresh status first, and the gates are
    /// decided again on reports that arrived after that question; until they are in, the plan
    /// waits and says so. Unanswered questions are asked again after [`CONFIRM_TIMEOUT`].
    pub(super) async fn confirm_server_start(
        &self,
        cluster: &str,
        views: &[DecisionNode],
        policy: &Policy,
        server: &str,
        now: OffsetDateTime,
    ) -> Decision {
        let asked_at = {
            let Ok(mut confirming) = self.confirming.lock() else {
                return Decision::Wait("internal: confirmation state poisoned".to_owned());
            };
            // One question per server: plans of several clusters confirm at the same time.
            match confirming.get(server) {
                Some(at) if now - *at < CONFIRM_TIMEOUT => *at,
                _ => {
                    confirming.insert(server.to_owned(), now);
                    // Every node whose report the check below needs fresh: the servers (etcd,
                    // apiserver) and, without Kubernetes access, every node (its kubelet).
                    // Asking only the servers left a worker's report older than the question,
                    // and the plan waited for that worker's next heartbeat.
                    let kube = self.kube(cluster).is_some();
                    let asked: Vec<String> = self
                        .node_lives(Some(cluster))
                        .into_iter()
                        .filter(|n| n.online && (n.role == Role::Server || !kube))
                        .map(|n| n.name)
                        .collect();
                    self.request_status(&asked);
                    return Decision::Wait(format!(
                        "confirming etcd and apiserver health with every server before taking \
                         {server} down"
                    ));
                }
            }
        };
        let since = (now - asked_at).max(time::Duration::ZERO);
        let since = Duration::try_from(since).unwrap_or_default();
        let health = match self.cluster_health_within(cluster, now, since).await {
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
            confirming.remove(server);
        }
        decision
    }

    /// Asks `nodes` for a fresh status (their agents probe again and answer within a
    /// moment), at most once per [`STATUS_ASK_INTERVAL`] each, so a gate that waits on a
    /// quiet or slow node neither waits a whole heartbeat nor floods it.
    pub(super) fn ask_for_status(&self, nodes: &[String]) {
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
            let sent = self.registry.send(node, ToAgent::RequestStatus);
            tracing::debug!(%node, sent, "asked for a fresh status before a gate");
        }
    }
}
