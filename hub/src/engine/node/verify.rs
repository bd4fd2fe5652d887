//! Verification after the operation: the node is healthy again (its agent's reports since
//! the operation ended, its Kubernetes Node, the target version) within the ready timeout.

use std::time::Duration;

use time::OffsetDateTime;

use super::{advance, fail};
use crate::engine::Engine;
use crate::plan::health::{NodeLive, node_recovered};
use crate::plan::model::{Plan, PlanNode};
use crate::store::StoreError;

/// How often a waiting phase looks again.
const POLL: Duration = Duration::from_millis(250);

pub(super) async fn verify(
    engine: &Engine,
    plan: &Plan,
    node: PlanNode,
) -> Result<Option<PlanNode>, StoreError> {
    let id = plan.id;
    let since = node.phase_at.unwrap_or_else(OffsetDateTime::now_utc) - Duration::from_secs(2);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(plan.policy.ready_timeout_secs);
    let mut why = String::new();
    loop {
        let live = live_of(engine, &plan.cluster, &node);
        let kube = engine.kube(&plan.cluster);
        let kube_node = match kube {
            Some(c) => match c.node(&node.node).await {
                Ok(None) => {
                    why = format!("the Kubernetes API has no Node {}", node.node);
                    None
                }
                Ok(found) => found,
                Err(e) => {
                    why = format!("Kubernetes API: {e}");
                    None
                }
            },
            None => None,
        };
        if kube.is_none() || kube_node.is_some() {
            match live.as_ref().map(|l| {
                node_recovered(
                    plan.kind,
                    &plan.target_version,
                    l,
                    kube_node.as_ref(),
                    since,
                )
            }) {
                Some(Ok(summary)) => {
                    return advance(engine, plan, node, &format!("healthy: {summary}"));
                }
                Some(Err(e)) => why = e,
                None => why = "the hub does not know this node".to_owned(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return fail(
                engine,
                id,
                node,
                format!(
                    "not healthy within {} s after its operation: {why}",
                    plan.policy.ready_timeout_secs
                ),
            )
            .await;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn live_of(engine: &Engine, cluster: &str, node: &PlanNode) -> Option<NodeLive> {
    engine
        .node_lives(Some(cluster))
        .into_iter()
        .find(|l| l.name == node.node)
}
