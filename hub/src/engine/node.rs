//! One node's maintenance: cordon → drain → operation on its agent → verify → uncordon →
//! settle. Each phase is written to the store before its side effect; this task is the only
//! writer of its node's row while it runs, so progress, results and phase changes never race.
//!
//! Which phase follows which is not decided here: the pure transitions on
//! [`NodePhase`] (`on_success`, `on_failure`, `on_abort`) say; this module performs each
//! phase's side effect and records the outcome.

use std::time::Duration;

use time::OffsetDateTime;

use super::Engine;
use super::messages::{Operation, Outcome, RunOperation};
use super::ops::{OpEvent, operation_id};
use crate::plan::health::{NodeLive, node_recovered};
use crate::plan::model::{NodePhase, Plan, PlanKind, PlanNode, PlanState};

/// How often a waiting phase looks again.
const POLL: Duration = Duration::from_millis(250);
/// How often an operation without a result is asked for again.
const RESEND: Duration = Duration::from_secs(10);

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
    plan.policy.drain && engine.cluster.is_some()
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
    if let Some(cluster) = &engine.cluster {
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

/// The plan was aborted while this node was in maintenance: a running operation finishes
/// (the agent keeps the node consistent), then the node is uncordoned if the plan did it.
async fn abort(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    if node.phase == NodePhase::Operate && !node.operation_id.is_empty() {
        // Wait for the agent's answer without ever (re)sending the operation: a cancel goes
        // out (the agent refuses it once the operation changed the node), and a running
        // operation reports its result; none within the ready timeout → released anyway.
        let mut rx = engine
            .ops
            .listen(&node.node, run_message(engine, plan, &node));
        engine
            .ops
            .cancel(&engine.registry, &node.node, &node.operation_id);
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(
                plan.policy
                    .ready_timeout_secs
                    .min(plan.policy.operation_timeout_secs),
            );
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(OpEvent::Result(r))) => {
                    node.detail = format!("aborted; operation ended: {}", r.detail);
                    break;
                }
                Ok(Some(OpEvent::Progress(_))) => {}
                Ok(None) | Err(_) => {
                    node.detail = "aborted; no result from the agent".to_owned();
                    break;
                }
            }
        }
        engine.ops.finish(&node.operation_id);
    } else {
        node.detail = "plan aborted".to_owned();
    }
    engine.release(plan.id, &mut node).await;
    let detail = node.detail.clone();
    let now = OffsetDateTime::now_utc();
    node.phase = node.phase.on_abort();
    node.finished_at = Some(now);
    save(engine, plan.id, &node, Some(&detail))?;
    Ok(None)
}

fn run_message(engine: &Engine, plan: &Plan, node: &PlanNode) -> RunOperation {
    let kind = match plan.kind {
        PlanKind::Rotate => Operation::Rotate {
            services: plan.policy.services.clone(),
        },
        PlanKind::Restart => Operation::Restart,
        PlanKind::Upgrade => Operation::Upgrade {
            version: plan.target_version.clone(),
            artifact_source: if plan.policy.artifact_source.is_empty() {
                engine.settings.artifact_mirror.clone()
            } else {
                plan.policy.artifact_source.clone()
            },
            allow_rollback: plan.policy.allow_rollback,
        },
    };
    RunOperation {
        operation_id: node.operation_id.clone(),
        kind: Some(kind),
    }
}

async fn phase(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    let id = plan.id;
    let kube = engine.cluster.as_ref().filter(|_| plan.policy.drain);
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
                if let Some(cluster) = engine.cluster.as_ref()
                    && let Err(e) = cluster.uncordon(&node.node).await
                {
                    return fail(engine, id, node, format!("uncordon: {e}")).await;
                }
                node.cordoned = false;
            }
            let now = OffsetDateTime::now_utc();
            node.settle_until = Some(now + Duration::from_secs(plan.policy.settle_secs));
            let event = if plan.policy.drain && engine.cluster.is_some() {
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

async fn operate(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    let id = plan.id;
    let op = operation_id(id, &node.node, node.attempt);
    if node.operation_id != op {
        // Recorded before it is sent, so a restarted hub asks for the same id again.
        node.operation_id.clone_from(&op);
        node.phase_at = Some(OffsetDateTime::now_utc());
        save(
            engine,
            id,
            &node,
            Some(&format!("operation {op} sent to the agent")),
        )?;
    }
    let mut rx = engine.ops.start(
        &engine.registry,
        &node.node,
        run_message(engine, plan, &node),
    );
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(plan.policy.operation_timeout_secs);
    let result = loop {
        // Re-ask now and then: a result sent on a stream that broke (hub or network
        // restart) is lost, and agents answer a known id with its result.
        let wait = (tokio::time::Instant::now() + RESEND).min(deadline);
        match tokio::time::timeout_at(wait, rx.recv()).await {
            Err(_) if wait < deadline => {
                engine.ops.resend_one(&engine.registry, &node.node, &op);
                continue;
            }
            Ok(Some(OpEvent::Progress(p))) => {
                node.step.clone_from(&p.step);
                let ended = p.phase.ended();
                if ended {
                    node.detail = format!("{}: {}", p.step, p.detail);
                }
                save(engine, id, &node, ended.then_some(node.detail.as_str()))?;
            }
            Ok(Some(OpEvent::Result(r))) => break Ok(r),
            Ok(None) => break Err("the operation's channel closed".to_owned()),
            Err(_) => {
                break Err(format!(
                    "no result from the agent within {} s",
                    plan.policy.operation_timeout_secs
                ));
            }
        }
    };
    engine.ops.finish(&op);
    let result = match result {
        Ok(r) => r,
        Err(reason) => return fail(engine, id, node, format!("operation {op}: {reason}")).await,
    };
    let outcome = result.outcome;
    node.step.clear();
    match outcome {
        Outcome::Succeeded | Outcome::Skipped => {
            let word = if outcome == Outcome::Skipped {
                "skipped by the agent"
            } else {
                "succeeded"
            };
            node.detail = format!("{word}: {}", result.detail);
            // Verification counts only reports from now on.
            node.phase_at = Some(OffsetDateTime::now_utc());
            let event = format!("operation {word}: {}", result.detail);
            node.phase = node.phase.on_success(drains(engine, plan));
            save(engine, id, &node, Some(&event))?;
            Ok(None)
        }
        _ => {
            let mut reason = format!("operation {op} {}: {}", outcome.word(), result.detail);
            if let Some(last) = result.unit_journal.last() {
                reason.push_str(&format!(" (unit journal: {last})"));
            }
            fail(engine, id, node, reason).await
        }
    }
}

async fn verify(
    engine: &Engine,
    plan: &Plan,
    node: PlanNode,
) -> Result<Option<PlanNode>, crate::store::StoreError> {
    let id = plan.id;
    let since = node.phase_at.unwrap_or_else(OffsetDateTime::now_utc) - Duration::from_secs(2);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(plan.policy.ready_timeout_secs);
    let mut why = String::new();
    loop {
        let live = live_of(engine, &node);
        let kube_node = match &engine.cluster {
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
        if engine.cluster.is_none() || kube_node.is_some() {
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

fn live_of(engine: &Engine, node: &PlanNode) -> Option<NodeLive> {
    engine
        .node_lives()
        .into_iter()
        .find(|l| l.name == node.node)
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
