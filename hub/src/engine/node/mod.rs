//! One node's maintenance: cordon → drain → operation on its agent → verify → uncordon →
//! settle. Each phase is written to the store before its side effect; this task is the only
//! writer of its node's row while it runs, so progress, results and phase changes never race.
//!
//! Which phase follows which is not decided here: the pure transitions on
//! [`NodePhase`] (`on_success`, `on_failure`, `on_abort`) say; this module performs each
//! phase's side effect and records the outcome.

mod agent;
mod verify;

use std::time::Duration;

use time::OffsetDateTime;

use super::Engine;
use crate::plan::model::{NodePhase, Plan, PlanNode, PlanState};
use agent::{abort, operate};
use verify::verify;

/// Walks `node` of plan `id` to done, failed, or (plan aborted) released.
pub async fn run(engine: &Engine, id: i64, name: &str) {
    loop {
        let (plan, node) = match load(engine, id, name) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(plan = id, node = %name, error = %e, "cannot read the plan");
                return;
            }
        };
        if !node.phase.in_progress() {
            return;
        }
        let next = if plan.state == PlanState::Aborted {
            abort(engine, &plan, node).await
        } else {
            phase(engine, &plan, node).await
        };
        match next {
            Ok(Some(node)) => {
                if let Err(e) = save(engine, id, &node, None) {
                    tracing::error!(plan = id, node = %name, error = %e, "cannot save the node");
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(plan = id, node = %name, error = %e, "store failure");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn load(
    engine: &Engine,
    id: i64,
    name: &str,
) -> Result<(Plan, PlanNode), crate::store::StoreError> {
    let plan = engine.store.plan(id)?;
    let node = engine
        .store
        .plan_nodes(id)?
        .into_iter()
        .find(|n| n.node == name)
        .ok_or(crate::store::StoreError::UnknownPlan(id))?;
    Ok((plan, node))
}

fn save(
    engine: &Engine,
    id: i64,
    node: &PlanNode,
    event: Option<&str>,
) -> Result<(), crate::store::StoreError> {
    engine
        .store
        .save_plan_node(id, node, event, OffsetDateTime::now_utc())?;
    engine.notify();
    Ok(())
}

/// Whether `plan` cordons and drains its nodes: its policy says so and the hub can.
fn drains(engine: &Engine, plan: &Plan) -> bool {
    plan.policy.drain && engine.kube(&plan.cluster).is_some()
}

/// Moves `node` to the phase after its current one succeeded ([`NodePhase::on_success`]),
/// recording `event`, and returns it for the loop to re-read.
fn advance(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
    event: &str,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    let now = OffsetDateTime::now_utc();
    node.phase = node.phase.on_success(drains(engine, plan));
    node.phase_at = Some(now);
    if node.phase == NodePhase::Done {
        node.finished_at = Some(now);
    }
    save(engine, plan.id, &node, Some(event))?;
    Ok(None)
}

async fn fail(
    engine: &Engine,
    id: i64,
    mut node: PlanNode,
    reason: String,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    tracing::warn!(plan = id, node = %node.node, %reason, "node failed");
    if let Some(cluster) = engine.kube_of_plan(id) {
        cluster
            .event(&node.node, "Rke2OpsMaintenanceFailed", &reason)
            .await;
    }
    let now = OffsetDateTime::now_utc();
    node.phase = node.phase.on_failure();
    node.detail.clone_from(&reason);
    node.phase_at = Some(now);
    node.finished_at = Some(now);
    save(engine, id, &node, Some(&format!("failed: {reason}")))?;
    Ok(None)
}
async fn phase(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    let id = plan.id;
    let kube = engine.kube(&plan.cluster).filter(|_| plan.policy.drain);
    match node.phase {
        NodePhase::Cordon => {
            let Some(cluster) = kube else {
                return advance(engine, plan, node, "no cordon/drain");
            };
            // Who cordoned it is recorded *before* cordoning: a hub killed between the
            // cordon and the next write must still know, after its restart, that the plan
            // cordoned the node (else it would stay cordoned for ever). A node cordoned before
            // the plan began is never claimed.
            if !node.cordoned {
                let schedulable = match cluster.nodes().await {
                    Ok(nodes) => nodes
                        .iter()
                        .find(|n| n.name == node.node)
                        .map(|n| !n.unschedulable),
                    Err(e) => return fail(engine, id, node, format!("cordon: {e}")).await,
                };
                let Some(schedulable) = schedulable else {
                    let why = format!("cordon: no Node {} in the cluster", node.node);
                    return fail(engine, id, node, why).await;
                };
                if schedulable {
                    node.cordoned = true;
                    save(engine, id, &node, None)?;
                }
            }
            match cluster.cordon(&node.node).await {
                Ok(changed) => {
                    let event = if changed {
                        "cordoned"
                    } else if node.cordoned {
                        "cordoned (already, by this plan)"
                    } else {
                        "was already cordoned: it stays cordoned afterwards"
                    };
                    advance(engine, plan, node, event)
                }
                Err(e) => fail(engine, id, node, format!("cordon: {e}")).await,
            }
        }
        NodePhase::Drain => {
            let Some(cluster) = kube else {
                return advance(engine, plan, node, "no drain");
            };
            let name = node.node.clone();
            let mut progress = |line: String| {
                tracing::info!(plan = id, node = %name, "{line}");
            };
            match cluster.drain(&node.node, &plan.policy, &mut progress).await {
                Ok(summary) => {
                    node.detail.clone_from(&summary);
                    advance(engine, plan, node, &format!("drained: {summary}"))
                }
                Err(e) => fail(engine, id, node, format!("drain: {e}")).await,
            }
        }
        NodePhase::Operate => operate(engine, plan, node).await,
        NodePhase::Verify => verify(engine, plan, node).await,
        NodePhase::Uncordon => {
            if node.cordoned {
                if let Some(cluster) = engine.kube(&plan.cluster)
                    && let Err(e) = cluster.uncordon(&node.node).await
                {
                    return fail(engine, id, node, format!("uncordon: {e}")).await;
                }
                node.cordoned = false;
            }
            let now = OffsetDateTime::now_utc();
            node.settle_until = Some(now + Duration::from_secs(plan.policy.settle_secs));
            let event = if plan.policy.drain && engine.kube(&plan.cluster).is_some() {
                "uncordoned"
            } else {
                "healthy"
            };
            advance(engine, plan, node, event)
        }
        NodePhase::Settle => {
            if let Some(until) = node.settle_until {
                let left = until - OffsetDateTime::now_utc();
                if left.is_positive() {
                    tokio::time::sleep(left.unsigned_abs()).await;
                }
            }
            advance(engine, plan, node, "done")
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::cluster::{BoxFut, Cluster};
    use crate::engine::{EngineSettings, PlanRequest};
    use crate::plan::decide::Role;
    use crate::plan::health::KubeNode;
    use crate::plan::model::{PlanKind, PlanPolicy};
    use crate::registry::Registry;
    use crate::store::Store;

    /// One node; `cordon` records whether the store already said "cordoned by the plan".
    #[derive(Debug)]
    struct FakeCluster {
        store: Store,
        unschedulable: Mutex<bool>,
        flag_before_cordon: Mutex<Option<bool>>,
    }

    impl Cluster for FakeCluster {
        fn nodes(&self) -> BoxFut<'_, Result<Vec<KubeNode>, String>> {
            let unschedulable = *self.unschedulable.lock().unwrap();
            Box::pin(async move {
                Ok(vec![KubeNode {
                    name: "w1".into(),
                    ready: true,
                    kubelet_version: String::new(),
                    unschedulable,
                }])
            })
        }
        fn node<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Option<KubeNode>, String>> {
            Box::pin(async move {
                let nodes = self.nodes().await?;
                Ok(nodes.into_iter().find(|n| n.name == name))
            })
        }
        fn cordon<'a>(&'a self, _node: &'a str) -> BoxFut<'a, Result<bool, String>> {
            Box::pin(async move {
                let stored = self.store.plan_nodes(1).unwrap()[0].cordoned;
                *self.flag_before_cordon.lock().unwrap() = Some(stored);
                let mut u = self.unschedulable.lock().unwrap();
                let changed = !*u;
                *u = true;
                Ok(changed)
            })
        }
        fn uncordon<'a>(&'a self, _node: &'a str) -> BoxFut<'a, Result<(), String>> {
            Box::pin(async move {
                *self.unschedulable.lock().unwrap() = false;
                Ok(())
            })
        }
        fn drain<'a>(
            &'a self,
            _node: &'a str,
            _policy: &'a PlanPolicy,
            _progress: &'a mut (dyn FnMut(String) + Send),
        ) -> BoxFut<'a, Result<String, String>> {
            Box::pin(async move { Ok(String::new()) })
        }
        fn event<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> BoxFut<'a, ()> {
            Box::pin(async {})
        }
        fn doctor_facts(&self) -> BoxFut<'_, Result<crate::doctor::ClusterFacts, String>> {
            Box::pin(async { Ok(crate::doctor::ClusterFacts::default()) })
        }

        fn workload_replicas<'a>(
            &'a self,
            _namespace: &'a str,
            _kind: crate::probe::spec::WorkloadKind,
            _name: &'a str,
        ) -> BoxFut<'a, Result<(i64, i64), String>> {
            Box::pin(async { Ok((1, 1)) })
        }
    }

    /// A store with node `w1`, a fake cluster (w1 cordoned or not) and an engine with a
    /// one-node rotate plan; returns the plan id.
    fn setup(already_cordoned: bool) -> (Store, Arc<FakeCluster>, Arc<crate::engine::Engine>, i64) {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_node_hello(
                "w1",
                "agent",
                "v1.34.1+rke2r1",
                "0",
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let cluster = Arc::new(FakeCluster {
            store: store.clone(),
            unschedulable: Mutex::new(already_cordoned),
            flag_before_cordon: Mutex::new(None),
        });
        let engine = crate::engine::Engine::new(
            store.clone(),
            Arc::new(Registry::default()),
            Some(cluster.clone() as Arc<dyn Cluster>),
            EngineSettings::default(),
        );
        let request = PlanRequest {
            kind: PlanKind::Rotate,
            target_version: None,
            channel: String::new(),
            nodes: vec![],
            policy: PlanPolicy::default(),
            origin: "operator".into(),
            cluster: "default".to_owned(),
            rollout: None,
        };
        let id = engine.create(&request, "test").unwrap();
        (store, cluster, engine, id)
    }

    async fn cordon_once(already_cordoned: bool) -> (PlanNode, Option<bool>) {
        let (store, cluster, engine, id) = setup(already_cordoned);
        let now = OffsetDateTime::now_utc();
        let plan = store.plan(id).unwrap();
        let mut node = store.plan_nodes(id).unwrap().remove(0);
        assert_eq!(node.role, Role::Agent);
        node.phase = NodePhase::Cordon;
        store.save_plan_node(id, &node, None, now).unwrap();
        phase(&engine, &plan, node).await.unwrap();
        let after = store.plan_nodes(id).unwrap().remove(0);
        let flag = *cluster.flag_before_cordon.lock().unwrap();
        (after, flag)
    }

    #[tokio::test]
    async fn the_plan_records_that_it_cordons_before_it_cordons() {
        let (node, flag_before) = cordon_once(false).await;
        assert_eq!(flag_before, Some(true), "persisted before the side effect");
        assert!(node.cordoned);
        assert_eq!(node.phase, NodePhase::Drain);
    }

    #[tokio::test]
    async fn a_node_cordoned_before_the_plan_is_never_claimed() {
        let (node, flag_before) = cordon_once(true).await;
        assert_eq!(flag_before, Some(false));
        assert!(
            !node.cordoned,
            "the plan must not uncordon what it did not cordon"
        );
        assert_eq!(node.phase, NodePhase::Drain);
    }

    #[tokio::test]
    async fn an_aborted_plan_s_cordoned_node_is_released_after_a_restart() {
        let (store, cluster, engine, id) = setup(true);
        let now = OffsetDateTime::now_utc();
        // As a hub killed mid-abort leaves it: plan aborted, the failed node still cordoned.
        let mut node = store.plan_nodes(id).unwrap().remove(0);
        node.phase = NodePhase::Failed;
        node.cordoned = true;
        store.save_plan_node(id, &node, None, now).unwrap();
        store
            .set_plan_state(id, crate::plan::model::PlanState::Aborted, "aborted", now)
            .unwrap();
        // A fresh engine (the restarted hub) makes one pass.
        Arc::clone(&engine).pass().await.unwrap();
        assert!(!*cluster.unschedulable.lock().unwrap(), "uncordoned");
        assert!(!store.plan_nodes(id).unwrap()[0].cordoned);
    }
}
