//! Rollouts in the engine: creating one (checked for every wave's cluster up front), the
//! pass that moves each running rollout along ([`crate::plan::rollout::step`] decides), the
//! soak watch (doctor blockers and the plans' probes in the finished wave's clusters), and
//! the operator's pause, resume and abort, which apply to the rollout and its current
//! wave's plans together.
//!
//! Durability: a wave's plans are created with their rollout's id in the same transaction
//! as the plan, the soak's start and the wave number are written before anything acts on
//! them, and every state change is compare-and-set, so a restarted hub continues where the
//! store says and never starts a wave twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::report::json::rfc3339;
use time::OffsetDateTime;

use super::{Engine, EngineError, PlanRequest};
use crate::plan::action::Action;
use crate::plan::model::{Plan, PlanState};
use crate::plan::rollout::{Rollout, Step, WavePlan, check_action, step, wave_label};
use crate::store::NewRollout;

/// How often a soaking wave's clusters are checked (doctor blockers, probes).
const SOAK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What the soak watch remembers between checks of one rollout.
#[derive(Debug, Default)]
pub(super) struct SoakWatch {
    /// When the clusters were last checked.
    checked: Option<Instant>,
    /// Consecutive failures per (probe, cluster).
    failures: HashMap<(String, String), u32>,
}

/// A new rollout as the operator asked for it.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    /// The plan every cluster gets; its `cluster`, `nodes` and `rollout` are ignored.
    pub plan: PlanRequest,
    /// Waves of cluster names ([`crate::plan::rollout::parse_waves`]).
    pub waves: Vec<Vec<String>>,
    /// Soak between waves.
    pub soak: Duration,
}

impl Engine {
    /// Checks a rollout without storing anything: every cluster is known, the plan is valid
    /// for each one, no cluster is in another active rollout, and the first wave's clusters
    /// have no active plan. Returns each cluster's node count, in wave order.
    ///
    /// # Errors
    /// [`EngineError`] naming the cluster at fault.
    pub fn preview_rollout(
        &self,
        request: &RolloutRequest,
    ) -> Result<Vec<(String, usize)>, EngineError> {
        if !request.plan.nodes.is_empty() {
            return Err(EngineError::Invalid(
                "--node does not go with --wave: a rollout's plans hold every node of their \
                 cluster"
                    .to_owned(),
            ));
        }
        if request.soak > crate::plan::rollout::MAX_SOAK {
            return Err(EngineError::Invalid(format!(
                "--soak {} s: at most {} s",
                request.soak.as_secs(),
                crate::plan::rollout::MAX_SOAK.as_secs()
            )));
        }
        let mut counts = Vec::new();
        for cluster in request.waves.iter().flatten() {
            let cluster = self.resolve_cluster(cluster)?;
            let plan = PlanRequest {
                cluster: cluster.clone(),
                ..request.plan.clone()
            };
            let nodes = self
                .preview(&plan)
                .map_err(|e| EngineError::Invalid(format!("cluster {cluster}: {e}")))?;
            counts.push((cluster, nodes.len()));
        }
        for other in self.store.rollouts(true, u32::MAX)? {
            if let Some(c) = request
                .waves
                .iter()
                .flatten()
                .find(|c| other.facts.waves.iter().flatten().any(|o| o == *c))
            {
                return Err(EngineError::Invalid(format!(
                    "cluster {c} is in rollout {} ({}); finish or abort it first",
                    other.id, other.state
                )));
            }
        }
        let first = request.waves.first().cloned().unwrap_or_default();
        for plan in self.store.plans(true)? {
            if first.contains(&plan.cluster) {
                return Err(EngineError::Invalid(format!(
                    "cluster {} has plan {} {}; finish, resume or abort it before a rollout's \
                     first wave takes the cluster",
                    plan.cluster, plan.id, plan.state
                )));
            }
        }
        Ok(counts)
    }

    /// Creates the rollout and its first wave's plans; the loop moves it on from there.
    ///
    /// # Errors
    /// [`EngineError`]: what [`Self::preview_rollout`] refuses, or the store.
    pub fn create_rollout(
        &self,
        request: &RolloutRequest,
        actor: &str,
    ) -> Result<i64, EngineError> {
        self.preview_rollout(request)?;
        let now = OffsetDateTime::now_utc();
        let target = request
            .plan
            .target_version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let id = self.store.create_rollout(
            &NewRollout {
                kind: request.plan.kind,
                target_version: &target,
                channel: &request.plan.channel,
                policy: &request.plan.policy,
                waves: &request.waves,
                soak: request.soak,
                created_by: actor,
            },
            now,
        )?;
        tracing::info!(rollout = id, kind = %request.plan.kind, %target, waves = request.waves.len(), %actor, "rollout created");
        let rollout = self.store.rollout(id)?;
        self.create_wave_plans(&rollout, rollout.facts.clusters())?;
        self.notify();
        Ok(id)
    }

    /// Creates the plans of `clusters` (of `rollout`'s current wave); a plan that cannot be
    /// created halts the rollout with the reason.
    fn create_wave_plans(&self, rollout: &Rollout, clusters: &[String]) -> Result<(), EngineError> {
        let _creating = self
            .creating_wave_plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read again under the lock: the other caller may have made some since `clusters`
        // was worked out.
        let made = self.store.rollout_plans(rollout.id)?;
        let now = OffsetDateTime::now_utc();
        let label = wave_label(rollout.facts.wave, rollout.facts.clusters());
        for cluster in clusters {
            if made.iter().any(|p| &p.cluster == cluster) {
                continue;
            }
            let request = PlanRequest {
                kind: rollout.kind,
                target_version: rollout.target_version.parse().ok(),
                channel: rollout.channel.clone(),
                nodes: Vec::new(),
                policy: rollout.policy.clone(),
                origin: "rollout".to_owned(),
                cluster: cluster.clone(),
                rollout: Some(rollout.id),
            };
            match self.create(&request, &rollout.created_by) {
                Ok(plan) => {
                    self.store.rollout_event(
                        rollout.id,
                        &format!("{label}: plan {plan} created for cluster {cluster}"),
                        now,
                    )?;
                }
                Err(e) => {
                    let reason =
                        format!("{label}: the plan for cluster {cluster} was not created: {e}");
                    self.halt_rollout(rollout.id, &reason, now)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Halts a running rollout with `reason` (recorded, logged, announced).
    fn halt_rollout(&self, id: i64, reason: &str, now: OffsetDateTime) -> Result<(), EngineError> {
        if self
            .store
            .move_rollout_state(id, PlanState::Running, PlanState::Halted, reason, now)?
        {
            tracing::warn!(rollout = id, %reason, "rollout halted");
            self.store
                .rollout_event(id, &format!("halted: {reason}"), now)?;
            self.notify();
        }
        Ok(())
    }

    /// One look at every running rollout (the drive loop calls it after the plans).
    pub(super) async fn rollouts_pass(&self) -> Result<(), EngineError> {
        for rollout in self.store.rollouts(true, u32::MAX)? {
            if rollout.state != PlanState::Running {
                self.forget_soak(rollout.id);
                continue;
            }
            self.drive_rollout(&rollout).await?;
        }
        Ok(())
    }

    /// The latest plan of each cluster of the rollout's current wave.
    fn wave_plans(&self, rollout: &Rollout) -> Result<Vec<WavePlan>, EngineError> {
        Ok(latest_per_cluster(
            self.store.rollout_plans(rollout.id)?,
            rollout.facts.clusters(),
        ))
    }

    async fn drive_rollout(&self, rollout: &Rollout) -> Result<(), EngineError> {
        let now = OffsetDateTime::now_utc();
        let id = rollout.id;
        let plans = self.wave_plans(rollout)?;
        match step(&rollout.facts, &plans, now) {
            Step::CreatePlans(clusters) => self.create_wave_plans(rollout, &clusters)?,
            Step::StartSoak(at) => {
                if self
                    .store
                    .set_rollout_soak(id, rollout.facts.wave, Some(at), now)?
                {
                    let label = wave_label(rollout.facts.wave, rollout.facts.clusters());
                    let message = format!(
                        "{label} completed; soak of {} s until {}",
                        rollout.facts.soak.as_secs(),
                        rfc3339(at + rollout.facts.soak)
                    );
                    tracing::info!(rollout = id, "{message}");
                    self.store.rollout_event(id, &message, now)?;
                    self.notify();
                }
            }
            Step::NextWave => {
                // The last look before the next wave: fresh findings for both waves.
                let next = rollout.facts.wave + 1;
                let mut clusters = rollout.facts.clusters().to_vec();
                clusters.extend(rollout.facts.waves.get(next).cloned().unwrap_or_default());
                let target = rollout.target_version.parse().ok();
                let findings = self.fleet_findings(target.as_ref()).await?;
                if let Some(why) = self.blocker_in(rollout, &findings, &clusters)? {
                    let reason = format!(
                        "{} not started: {why}",
                        wave_label(next, &rollout.facts.waves[next])
                    );
                    return self.halt_rollout(id, &reason, now);
                }
                if let Some(why) = self.soak_probes(rollout).await {
                    return self.halt_rollout(id, &why, now);
                }
                if self.store.advance_rollout(id, rollout.facts.wave, now)? {
                    self.forget_soak(id);
                    let label = wave_label(next, &rollout.facts.waves[next]);
                    tracing::info!(rollout = id, "{label} starts");
                    self.store
                        .rollout_event(id, &format!("{label} starts"), now)?;
                    let moved = self.store.rollout(id)?;
                    self.create_wave_plans(&moved, moved.facts.clusters())?;
                    self.notify();
                }
            }
            Step::Complete(_) => {
                if self.store.move_rollout_state(
                    id,
                    PlanState::Running,
                    PlanState::Completed,
                    "every wave completed",
                    now,
                )? {
                    tracing::info!(rollout = id, "rollout completed");
                    self.store.rollout_event(id, "completed", now)?;
                    self.forget_soak(id);
                    self.notify();
                }
            }
            Step::Halt(reason) => self.halt_rollout(id, &reason, now)?,
            Step::Wait(reason) => {
                if rollout.facts.soak_started_at.is_some()
                    && let Some(why) = self.soak_check(rollout).await?
                {
                    return self.halt_rollout(id, &why, now);
                }
                if reason != rollout.reason {
                    self.store.set_rollout_reason(id, &reason, now)?;
                    self.notify();
                }
            }
        }
        Ok(())
    }

    /// During a soak, every [`SOAK_CHECK_EVERY`]: a doctor blocker in the finished wave's
    /// clusters (from the doctor's latest run, which agents' new findings refresh within
    /// seconds), or a probe down there, ends the soak with a reason.
    async fn soak_check(&self, rollout: &Rollout) -> Result<Option<String>, EngineError> {
        let due = self
            .soaking
            .lock()
            .map(|mut s| {
                let watch = s.entry(rollout.id).or_default();
                let due = watch
                    .checked
                    .is_none_or(|t| t.elapsed() >= SOAK_CHECK_EVERY);
                if due {
                    watch.checked = Some(Instant::now());
                }
                due
            })
            .unwrap_or(false);
        if !due {
            return Ok(None);
        }
        let findings = self.doctor.findings();
        if let Some(why) = self.blocker_in(rollout, &findings, rollout.facts.clusters())? {
            return Ok(Some(format!(
                "the soak of {} failed: {why}",
                wave_label(rollout.facts.wave, rollout.facts.clusters())
            )));
        }
        Ok(self.soak_probes(rollout).await)
    }

    /// A doctor blocker (not accepted by the rollout's policy) about `clusters` in
    /// `findings`, in words.
    fn blocker_in(
        &self,
        rollout: &Rollout,
        findings: &[Finding],
        clusters: &[String],
    ) -> Result<Option<String>, EngineError> {
        let accept: Vec<Code> = rollout
            .policy
            .accept
            .iter()
            .filter_map(|c| Code::parse(c))
            .collect();
        let nodes = self.store.nodes()?;
        for cluster in clusters {
            let members: Vec<String> = nodes
                .iter()
                .filter(|n| &n.cluster == cluster)
                .map(|n| n.name.clone())
                .collect();
            if let Some(f) = findings.iter().find(|f| {
                f.severity == Severity::Blocker
                    && !accept.contains(&f.code)
                    && crate::doctor::is_in_cluster(f, cluster, &members)
            }) {
                return Ok(Some(format!(
                    "doctor blocker in cluster {cluster}: {}",
                    crate::doctor::preflight::line(f)
                )));
            }
        }
        Ok(None)
    }

    /// Checks the rollout's probes once in each cluster of its current wave; a probe failing
    /// its threshold of consecutive checks is named.
    async fn soak_probes(&self, rollout: &Rollout) -> Option<String> {
        for cluster in rollout.facts.clusters() {
            for spec in &rollout.policy.probes {
                let result = crate::probe::check::check(spec, &self.http, self.kube(cluster)).await;
                let key = (spec.name.clone(), cluster.clone());
                let failures = self.soaking.lock().ok().map(|mut s| {
                    let watch = s.entry(rollout.id).or_default();
                    let n = watch.failures.entry(key).or_default();
                    *n = if result.is_ok() { 0 } else { *n + 1 };
                    *n
                });
                if let (Err(error), Some(n)) = (result, failures)
                    && n >= spec.threshold.max(1)
                {
                    return Some(format!(
                        "the soak of {} failed: probe {} ({}) down in cluster {cluster}: \
                             {error}",
                        wave_label(rollout.facts.wave, rollout.facts.clusters()),
                        spec.name,
                        spec.target.describe()
                    ));
                }
            }
        }
        None
    }

    fn forget_soak(&self, id: i64) {
        if let Ok(mut s) = self.soaking.lock() {
            s.remove(&id);
        }
    }

    /// Whether rollout `id` would accept `action` now (`--dry-run`).
    ///
    /// # Errors
    /// [`EngineError`]: unknown rollout, or why the action would be refused.
    pub fn check_rollout(&self, id: i64, action: &Action) -> Result<(), EngineError> {
        let rollout = self.store.rollout(id)?;
        check_action(id, rollout.state, action).map_err(EngineError::Invalid)
    }

    /// Applies an operator's action to a rollout and its current wave's plans: pause pauses
    /// its running plans, resume resumes its paused and halted plans (a cluster whose plan
    /// was aborted gets a new one, and a failed soak starts again), abort aborts them.
    ///
    /// # Errors
    /// [`EngineError`]: unknown rollout, or an action its state does not allow.
    pub async fn act_rollout(
        &self,
        id: i64,
        action: &Action,
        actor: &str,
    ) -> Result<(), EngineError> {
        let now = OffsetDateTime::now_utc();
        let rollout = self.store.rollout(id)?;
        check_action(id, rollout.state, action).map_err(EngineError::Invalid)?;
        let (to, reason) = match action {
            Action::Pause => (PlanState::Paused, format!("paused by {actor}")),
            Action::Abort => (PlanState::Aborted, format!("aborted by {actor}")),
            Action::Resume | Action::Skip(_) => (PlanState::Running, String::new()),
        };
        if !self
            .store
            .move_rollout_state(id, rollout.state, to, &reason, now)?
        {
            return Err(EngineError::Invalid(format!(
                "rollout {id} changed state while the {} was applied; try again",
                action.word()
            )));
        }
        let plans: Vec<Plan> = self
            .store
            .rollout_plans(id)?
            .into_iter()
            .filter(|p| !p.state.is_final())
            .collect();
        for plan in plans {
            let wanted = match action {
                Action::Pause => plan.state == PlanState::Running,
                Action::Resume => matches!(plan.state, PlanState::Paused | PlanState::Halted),
                Action::Abort => true,
                Action::Skip(_) => false,
            };
            if wanted {
                // A plan that moved on meanwhile (completed, or halted before a pause) is
                // the loop's to see: the rollout's own state is what was asked.
                if let Err(e) = self.act(plan.id, action, actor).await {
                    tracing::warn!(rollout = id, plan = plan.id, error = %e, "rollout action on a plan");
                }
            }
        }
        if matches!(action, Action::Resume) {
            // A cluster whose plan was aborted gets a new one: its wave must still prove it.
            let aborted: Vec<String> = self
                .wave_plans(&rollout)?
                .into_iter()
                .filter(|p| p.state == PlanState::Aborted)
                .map(|p| p.cluster)
                .collect();
            if !aborted.is_empty() {
                self.create_wave_plans(&self.store.rollout(id)?, &aborted)?;
            }
        }
        if matches!(action, Action::Resume) && rollout.facts.soak_started_at.is_some() {
            // A soak that failed starts over: the next wave needs a whole clean soak.
            self.store
                .set_rollout_soak(id, rollout.facts.wave, Some(now), now)?;
            self.forget_soak(id);
        }
        self.store.audit(
            actor,
            &format!("rollout.{}", action.word()),
            &format!("rollout {id} {action}"),
            now,
        )?;
        self.store
            .rollout_event(id, &format!("{} by {actor}", action.word()), now)?;
        tracing::info!(rollout = id, action = action.word(), %actor, "rollout action");
        self.notify();
        Ok(())
    }
}

/// The latest plan (highest id) of each of `clusters` among `plans`.
fn latest_per_cluster(plans: Vec<Plan>, clusters: &[String]) -> Vec<WavePlan> {
    let mut latest: HashMap<String, Plan> = HashMap::new();
    for plan in plans {
        if !clusters.contains(&plan.cluster) {
            continue;
        }
        match latest.get(&plan.cluster) {
            Some(seen) if seen.id > plan.id => {}
            _ => {
                latest.insert(plan.cluster.clone(), plan);
            }
        }
    }
    clusters
        .iter()
        .filter_map(|c| latest.remove(c))
        .map(|p| WavePlan {
            id: p.id,
            cluster: p.cluster,
            state: p.state,
            reason: p.reason,
            finished_at: p.finished_at,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use time::OffsetDateTime;

    use super::RolloutRequest;
    use crate::engine::{Engine, EngineSettings};
    use crate::plan::create::PlanRequest;
    use crate::plan::model::{PlanKind, PlanPolicy, PlanState};
    use crate::registry::Registry;
    use crate::store::Store;

    /// `CreateRollout` made the wave's plans while the loop's pass had already found the
    /// cluster without one (seen in CI: the pass's create was refused by the one-active-plan
    /// rule and halted the rollout). The late creator must find the plan and do nothing.
    #[test]
    fn a_late_second_look_at_a_wave_makes_no_plan_and_halts_nothing() {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::now_utc();
        for (node, cluster) in [("s1", "staging"), ("s2", "prod")] {
            store
                .upsert_node_hello(node, "server", "v1.34.1+rke2r1", "0", now)
                .unwrap();
            store.set_node_cluster(node, cluster).unwrap();
        }
        let engine = Engine::new(
            store.clone(),
            Arc::new(Registry::default()),
            None,
            EngineSettings::default(),
        );
        let request = RolloutRequest {
            plan: PlanRequest {
                kind: PlanKind::Restart,
                target_version: None,
                channel: String::new(),
                nodes: vec![],
                policy: PlanPolicy::default(),
                origin: "operator".into(),
                cluster: String::new(),
                rollout: None,
            },
            waves: vec![vec!["staging".into()], vec!["prod".into()]],
            soak: Duration::ZERO,
        };
        let id = engine.create_rollout(&request, "test").unwrap();
        let rollout = store.rollout(id).unwrap();
        // The pass's stale view: staging has no plan yet.
        engine
            .create_wave_plans(&rollout, &["staging".to_owned()])
            .unwrap();
        let rollout = store.rollout(id).unwrap();
        assert_eq!(rollout.state, PlanState::Running, "{}", rollout.reason);
        let plans = store.rollout_plans(id).unwrap();
        assert_eq!(plans.len(), 1, "one plan for staging");
        assert_eq!(plans[0].cluster, "staging");
    }
}
