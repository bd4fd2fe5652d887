//! The drive loop: every tick (or when woken by a change), one pass over the active plans.
//! A pass adopts nodes in maintenance that have no task (a restarted hub), asks the pure
//! decision ([`crate::plan::decide`]) which nodes may start behind the gates
//! ([`super::gates`]) once the images phase let them ([`super::images`]), starts them (one task per node, [`super::node`]), and records why a
//! plan waits, halts or completed. Ended plans are made to leave nothing cordoned, and old
//! history is pruned hourly.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::Instrument as _;

use super::{Engine, node};
use crate::plan::decide::{Decision, Policy, Role, decide};
use crate::plan::model::{NodePhase, Plan, PlanNode, PlanState};
use crate::plan::window::MaintenanceWindow;
use crate::store::StoreError;

/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Engine {
    /// Runs the engine until the task is dropped, in its own span whoever spawns it.
    pub async fn run(self: Arc<Self>) {
        self.run_loop()
            .instrument(tracing::info_span!("plan_engine"))
            .await;
    }

    async fn run_loop(self: Arc<Self>) {
        let mut pruned_at: Option<std::time::Instant> = None;
        let mut doctor_at: Option<std::time::Instant> = None;
        loop {
            let due = self.doctor_due.load(std::sync::atomic::Ordering::Relaxed);
            if doctor_at.is_none_or(|t| {
                t.elapsed() >= super::doctor::REFRESH_EVERY
                    || (due && t.elapsed() >= super::doctor::REFRESH_SOON)
            }) {
                doctor_at = Some(std::time::Instant::now());
                self.doctor_due
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                self.refresh_doctor();
            }
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
        let span = tracing::info_span!("prune_history");
        match tokio::task::spawn_blocking(move || span.in_scope(|| store.prune_history(before)))
            .await
        {
            Ok(Ok(p)) if p.plans + p.audit_rows > 0 => {
                tracing::info!(plans = p.plans, audit_rows = p.audit_rows, %before, "old history pruned");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune old history"),
            Err(e) => tracing::warn!(error = %e, "history pruning task failed"),
        }
    }

    /// One look at every active plan.
    pub(super) async fn pass(self: Arc<Self>) -> Result<(), StoreError> {
        for plan in self.store.plans(true)? {
            Arc::clone(&self).drive(plan).await?;
        }
        if let Err(e) = self.rollouts_pass().await {
            tracing::error!(error = %e, "rollout pass failed");
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
        let span = tracing::info_span!("plan_node", plan = id, node = %node);
        let node_task = async move {
            node::run(&engine, key.0, &key.1).await;
            if let Ok(mut r) = engine.running.lock() {
                r.remove(&key);
            }
            engine.notify();
        };
        tokio::spawn(node_task.instrument(span));
    }

    async fn drive(self: Arc<Self>, plan: Plan) -> Result<(), StoreError> {
        let id = plan.id;
        let nodes = self.store.plan_nodes(id)?;
        // Adopt nodes in maintenance that have no task (the hub restarted mid-node).
        for node in nodes.iter().filter(|n| n.phase.in_progress()) {
            self.spawn_node(id, &node.node);
        }
        // And image stagings in flight (`--stage-images`), whatever the plan's state: their
        // results are recorded even while it is paused or halted.
        let images = self.store.plan_images(id)?;
        self.adopt_images(id, &images);
        // Probes run for the whole plan (paused and halted ones too: the report goes on).
        self.ensure_probes(&plan);
        if plan.state != PlanState::Running {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        // A probe down too long halts the plan even while a node is in maintenance (that
        // node finishes its operation; no other starts).
        if let crate::probe::ProbeGate::Halt(why) = self.probe_gate(&plan, now) {
            self.halt(&plan, &why, now)?;
            return Ok(());
        }
        // The images phase comes first: no node starts its upgrade before every node the
        // plan upgrades has the release's images. Staging is not maintenance: no window and
        // no health gate hold it.
        if self.images_phase(&plan, &nodes, &images, now)? {
            return Ok(());
        }
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
        let health = self.cluster_health(&plan.cluster, now).await;
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
        // The application probes: every one passing (its baseline taken) before a node starts.
        if let Decision::Start(_) = &decision
            && let crate::probe::ProbeGate::Wait(why) = self.probe_gate(&plan, now)
        {
            decision = Decision::Wait(why);
        }
        // The doctor's checks again, right before these nodes are touched: a budget or a
        // failure that appeared since the plan was created holds them here, not mid-drain.
        if let Decision::Start(names) = &decision
            && let Some(why) = self.node_checks(&plan, names).await
        {
            decision = Decision::Wait(why);
        }
        if let Decision::Start(names) = &decision
            && let Some(server) = names.iter().find(|n| {
                nodes
                    .iter()
                    .any(|p| &p.node == *n && p.role == Role::Server)
            })
        {
            decision = self
                .confirm_server_start(&plan.cluster, &views, &policy, server, now)
                .await;
        }
        match decision {
            Decision::Start(names) => {
                // The gates above can take seconds: an operator may have paused or aborted
                // the plan meanwhile. (A node started in the instant after this read is
                // released by its own task, which sees the abort.)
                if self.store.plan(id)?.state != PlanState::Running {
                    return Ok(());
                }
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
                    node.phase = node.phase.on_start();
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
            Decision::Halted(why) => {
                if let Some(failed) = nodes.iter().find(|n| n.phase == NodePhase::Failed) {
                    self.announce(&crate::notify::Event::NodeFailed {
                        plan: id,
                        node: failed.node.clone(),
                        reason: failed.detail.clone(),
                    });
                }
                self.halt(&plan, &why, now)?;
            }
            Decision::Complete => {
                // Only from running: an operator who aborted or paused it meanwhile wins.
                if !self.store.move_plan_state(
                    id,
                    plan.state,
                    PlanState::Completed,
                    "every node done or skipped",
                    now,
                )? {
                    return Ok(());
                }
                self.store.plan_event(id, "", "completed", now)?;
                tracing::info!(plan = id, "plan completed");
                self.announce(&crate::notify::Event::PlanCompleted { plan: id });
                // The previous releases' image archives are not needed any more.
                self.spawn_prune(&plan);
                self.notify();
            }
        }
        Ok(())
    }

    fn set_reason(&self, plan: &Plan, why: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        if plan.reason != why
            && self
                .store
                .move_plan_state(plan.id, plan.state, PlanState::Running, why, now)?
        {
            self.notify();
        }
        Ok(())
    }

    fn halt(&self, plan: &Plan, why: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        if !self
            .store
            .move_plan_state(plan.id, plan.state, PlanState::Halted, why, now)?
        {
            return Ok(()); // aborted or paused meanwhile
        }
        self.store
            .plan_event(plan.id, "", &format!("halted: {why}"), now)?;
        tracing::warn!(plan = plan.id, reason = %why, "plan halted");
        self.announce(&crate::notify::Event::PlanHalted {
            plan: plan.id,
            reason: why.to_owned(),
        });
        self.notify();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use crate::engine::{Engine, EngineSettings};
    use crate::plan::action::Action;
    use crate::plan::create::PlanRequest;
    use crate::plan::model::{NodePhase, PlanKind, PlanPolicy, PlanState};
    use crate::registry::Registry;
    use crate::store::Store;

    /// An engine without a cluster and a one-node rotate plan whose node is already done.
    fn finished_plan() -> (Store, Arc<Engine>, i64) {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::now_utc();
        store
            .upsert_node_hello("w1", "agent", "v1.34.1+rke2r1", "0", now)
            .unwrap();
        let engine = Engine::new(
            store.clone(),
            Arc::new(Registry::default()),
            None,
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
        let mut node = store.plan_nodes(id).unwrap().remove(0);
        node.phase = NodePhase::Done;
        node.finished_at = Some(now);
        store.save_plan_node(id, &node, None, now).unwrap();
        (store, engine, id)
    }

    #[tokio::test]
    async fn a_pass_that_read_the_plan_before_an_abort_does_not_complete_it() {
        let (store, engine, id) = finished_plan();
        // The pass read the plan while it was running ...
        let stale = store.plan(id).unwrap();
        assert_eq!(stale.state, PlanState::Running);
        // ... the operator aborts it before the pass writes ...
        engine.act(id, &Action::Abort, "uid:0").await.unwrap();
        // ... and the pass decides "complete" on what it read.
        Arc::clone(&engine).drive(stale).await.unwrap();
        let plan = store.plan(id).unwrap();
        assert_eq!(plan.state, PlanState::Aborted, "{plan:?}");
        let events = store.plan_events(id, 50).unwrap();
        assert!(
            events.iter().all(|e| e.message != "completed"),
            "{events:?}"
        );
        // A fresh pass completes nothing either.
        Arc::clone(&engine).drive(plan).await.unwrap();
        assert_eq!(store.plan(id).unwrap().state, PlanState::Aborted);
    }

    #[tokio::test]
    async fn a_pass_that_read_the_plan_before_a_pause_does_not_resume_it() {
        let (store, engine, id) = finished_plan();
        let mut node = store.plan_nodes(id).unwrap().remove(0);
        node.phase = NodePhase::Pending;
        node.finished_at = None;
        store
            .save_plan_node(id, &node, None, OffsetDateTime::now_utc())
            .unwrap();
        let stale = store.plan(id).unwrap();
        engine.act(id, &Action::Pause, "uid:0").await.unwrap();
        // The pass would write a waiting reason (w1's agent is not connected) as "running".
        Arc::clone(&engine).drive(stale).await.unwrap();
        assert_eq!(store.plan(id).unwrap().state, PlanState::Paused);
    }

    #[test]
    fn upgrades_fetch_from_the_plan_then_the_cluster_then_the_hub() {
        let engine = Engine::new(
            Store::open_in_memory().unwrap(),
            Arc::new(Registry::default()),
            None,
            EngineSettings {
                artifact_mirror: "https://hub.example/rke2".into(),
                cluster_mirrors: [("lab".to_owned(), "/srv/lab-artifacts".to_owned())].into(),
                ..EngineSettings::default()
            },
        );
        let mut policy = PlanPolicy::default();
        assert_eq!(engine.artifact_source(&policy, "lab"), "/srv/lab-artifacts");
        assert_eq!(
            engine.artifact_source(&policy, "default"),
            "https://hub.example/rke2"
        );
        policy.artifact_source = "https://plan.example".into();
        assert_eq!(
            engine.artifact_source(&policy, "lab"),
            "https://plan.example"
        );
    }

    #[tokio::test]
    async fn the_pass_completes_a_plan_nobody_touched() {
        let (store, engine, id) = finished_plan();
        let plan = store.plan(id).unwrap();
        Arc::clone(&engine).drive(plan).await.unwrap();
        assert_eq!(store.plan(id).unwrap().state, PlanState::Completed);
        // And an abort afterwards is refused: a final plan never acts again.
        let err = engine.act(id, &Action::Abort, "uid:0").await.unwrap_err();
        assert!(err.to_string().contains("will not act again"), "{err}");
    }
}
