//! Runs a plan's application probes ([`crate::probe`]) from the first pass over the plan to
//! its end: one task per plan, checking each probe at its interval, recording every result
//! (with the nodes in maintenance at that moment) in the store, and a plan event when a
//! probe goes down or comes back. The drive loop reads the records for the gate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tracing::Instrument as _;

use super::Engine;
use crate::plan::model::{Plan, PlanState};
use crate::probe::{ProbeGate, Tally, check::check, gate, tally::Transition};

/// How often the task looks at the plan's state between checks.
const TICK: Duration = Duration::from_millis(500);

impl Engine {
    /// Makes sure plan `plan`'s probes are running (a restarted hub picks them up again).
    pub(super) fn ensure_probes(self: &Arc<Self>, plan: &Plan) {
        if plan.policy.probes.is_empty() {
            return;
        }
        let Ok(mut running) = self.probing.lock() else {
            return;
        };
        if !running.insert(plan.id) {
            return;
        }
        let engine = Arc::clone(self);
        let id = plan.id;
        tokio::spawn(
            async move {
                engine.run_probes(id).await;
                if let Ok(mut running) = engine.probing.lock() {
                    running.remove(&id);
                }
            }
            .instrument(tracing::info_span!("probes", plan = id)),
        );
    }

    async fn run_probes(&self, id: i64) {
        let Ok(plan) = self.store.plan(id) else {
            return;
        };
        let specs = plan.policy.probes.clone();
        let mut tallies: Vec<Tally> = {
            let stored = self.store.plan_probes(id).unwrap_or_default();
            specs
                .iter()
                .map(|s| {
                    stored
                        .iter()
                        .find(|(n, _)| *n == s.name)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut due: Vec<Instant> = specs.iter().map(|_| Instant::now()).collect();
        loop {
            match self.store.plan(id).map(|p| p.state) {
                Ok(PlanState::Running | PlanState::Paused | PlanState::Halted) => {}
                _ => return,
            }
            for (i, spec) in specs.iter().enumerate() {
                if due[i] > Instant::now() {
                    continue;
                }
                due[i] = Instant::now() + spec.interval();
                let result = check(spec, &self.http, self.kube(&plan.cluster)).await;
                let now = OffsetDateTime::now_utc();
                let busy: Vec<String> = self
                    .store
                    .plan_nodes(id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| n.phase.in_progress())
                    .map(|n| n.node)
                    .collect();
                let error = result.as_ref().err().cloned().unwrap_or_default();
                let transition = tallies[i].record(result, now, &busy, spec.threshold);
                if let Err(e) = self.store.save_probe(id, &spec.name, &tallies[i]) {
                    tracing::warn!(probe = %spec.name, error = %e, "probe record not saved");
                }
                if let Some(t) = transition {
                    let message = match t {
                        Transition::Down => format!(
                            "probe {} down ({}): {error}",
                            spec.name,
                            spec.target.describe()
                        ),
                        Transition::Up => format!("probe {} up again", spec.name),
                    };
                    tracing::warn!(probe = %spec.name, "{message}");
                    let _ = self.store.plan_event(id, "", &message, now);
                    self.announce(&match t {
                        Transition::Down => crate::notify::Event::ProbeDown {
                            plan: id,
                            probe: spec.name.clone(),
                            target: spec.target.describe(),
                            error: error.clone(),
                        },
                        Transition::Up => crate::notify::Event::ProbeUp {
                            plan: id,
                            probe: spec.name.clone(),
                        },
                    });
                    self.notify();
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// The probes' gate for a running plan now.
    pub(super) fn probe_gate(&self, plan: &Plan, now: OffsetDateTime) -> ProbeGate {
        if plan.policy.probes.is_empty() {
            return ProbeGate::Open;
        }
        let tallies = self.store.plan_probes(plan.id).unwrap_or_default();
        gate(
            &plan.policy.probes,
            &tallies,
            plan.policy.probe_halt_secs,
            plan.resumed_at,
            now,
        )
    }
}
