//! Rollouts: one plan per cluster, wave by wave (`--wave staging --wave prod-eu,prod-us`),
//! with a soak between waves. The pure parts: reading the waves an operator wrote, and the
//! decision what a running rollout does next ([`step`]) from its wave's plans. The engine
//! ([`crate::engine`]) creates the plans, watches the soak for doctor blockers and failing
//! probes, and writes the rollout's state.
//!
//! Why waves wait for *completed* plans: a wave proves the release (or the rotation) on the
//! clusters that matter least first; a plan that was skipped through or aborted proved
//! nothing, so an aborted plan halts the rollout instead of letting the next wave start.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use super::action::Action;
use super::model::{PlanKind, PlanPolicy, PlanState};

/// Most waves in one rollout.
pub const MAX_WAVES: usize = 20;
/// Most clusters in one rollout.
pub const MAX_CLUSTERS: usize = 500;
/// The longest soak (a month): longer is a typo, not a policy.
pub const MAX_SOAK: Duration = Duration::from_secs(31 * 86_400);

/// The waves of `--wave A --wave B,C`, in order: each a non-empty list of cluster names,
/// every cluster once.
///
/// # Errors
/// A message naming the wave (1-based) and the cluster at fault.
pub fn parse_waves(args: &[String]) -> Result<Vec<Vec<String>>, String> {
    if args.is_empty() {
        return Err("a rollout needs at least one --wave".to_owned());
    }
    if args.len() > MAX_WAVES {
        return Err(format!(
            "{} waves: at most {MAX_WAVES} per rollout",
            args.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut waves = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        let mut wave = Vec::new();
        for name in arg.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(format!(
                    "--wave {arg:?} (wave {}): an empty cluster name",
                    i + 1
                ));
            }
            rke2ops_common::ids::check_cluster_name(name)
                .map_err(|e| format!("--wave {arg:?} (wave {}): {e}", i + 1))?;
            if !seen.insert(name.to_owned()) {
                return Err(format!(
                    "--wave {arg:?} (wave {}): cluster {name} is already in an earlier wave; \
                     a cluster is upgraded once per rollout",
                    i + 1
                ));
            }
            wave.push(name.to_owned());
        }
        waves.push(wave);
    }
    if seen.len() > MAX_CLUSTERS {
        return Err(format!(
            "{} clusters: at most {MAX_CLUSTERS} per rollout",
            seen.len()
        ));
    }
    Ok(waves)
}

/// A rollout as stored: the plan every cluster gets, its waves and where it is. Its states
/// are a plan's ([`PlanState`]): running, paused, halted, completed, aborted.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Sequential id.
    pub id: i64,
    /// What each plan does.
    pub kind: PlanKind,
    /// Upgrade target, resolved once for every wave; empty otherwise.
    pub target_version: String,
    /// The channel it was resolved from, if any.
    pub channel: String,
    /// Each plan's policy.
    pub policy: PlanPolicy,
    /// Waves, current wave and soak.
    pub facts: RolloutFacts,
    /// Where it is.
    pub state: PlanState,
    /// What it waits for, why it halted, or how it ended.
    pub reason: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// When it completed or was aborted.
    pub finished_at: Option<OffsetDateTime>,
}

/// A rollout as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutFacts {
    /// The waves, in order.
    pub waves: Vec<Vec<String>>,
    /// The wave it is at (0-based).
    pub wave: usize,
    /// The pause between a wave's completion and the next wave.
    pub soak: Duration,
    /// When the current wave's soak began (every plan completed), if it did.
    pub soak_started_at: Option<OffsetDateTime>,
}

impl RolloutFacts {
    /// The current wave's clusters.
    #[must_use]
    pub fn clusters(&self) -> &[String] {
        self.waves.get(self.wave).map_or(&[], Vec::as_slice)
    }

    /// When the current wave's soak ends, once it began.
    #[must_use]
    pub fn soak_until(&self) -> Option<OffsetDateTime> {
        self.soak_started_at.map(|at| at + self.soak)
    }

    /// The current wave is the last one.
    #[must_use]
    pub fn last_wave(&self) -> bool {
        self.wave + 1 >= self.waves.len()
    }
}

/// The latest plan of one cluster of the current wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavePlan {
    /// Its id.
    pub id: i64,
    /// The cluster.
    pub cluster: String,
    /// Where it is.
    pub state: PlanState,
    /// Why it waits or halted.
    pub reason: String,
    /// When it completed or was aborted.
    pub finished_at: Option<OffsetDateTime>,
}

/// What a running rollout does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These clusters of the current wave have no plan yet: create them.
    CreatePlans(Vec<String>),
    /// Every plan of the current (not last) wave completed, the latest at `at`: the soak
    /// begins there.
    StartSoak(OffsetDateTime),
    /// The soak passed: start the next wave (after checking its clusters).
    NextWave,
    /// Every plan of the last wave completed at `at`.
    Complete(OffsetDateTime),
    /// Nothing starts until the operator decides (the reason says what happened).
    Halt(String),
    /// Nothing to do now; why, in words.
    Wait(String),
}

/// What a running rollout does next, from its current wave's latest plan per cluster
/// (`plans`; a cluster without one has not started).
#[must_use]
pub fn step(rollout: &RolloutFacts, plans: &[WavePlan], now: OffsetDateTime) -> Step {
    let clusters = rollout.clusters();
    let label = wave_label(rollout.wave, clusters);
    let missing: Vec<String> = clusters
        .iter()
        .filter(|c| !plans.iter().any(|p| &p.cluster == *c))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Step::CreatePlans(missing);
    }
    let wave_plans: Vec<&WavePlan> = plans
        .iter()
        .filter(|p| clusters.contains(&p.cluster))
        .collect();
    if let Some(p) = wave_plans.iter().find(|p| p.state == PlanState::Aborted) {
        return Step::Halt(format!(
            "{label}: plan {} of cluster {} was aborted, so the wave proved nothing; \
             `rollout resume` makes a new plan for {}, `rollout abort` ends the rollout",
            p.id, p.cluster, p.cluster
        ));
    }
    let open: Vec<&&WavePlan> = wave_plans
        .iter()
        .filter(|p| p.state != PlanState::Completed)
        .collect();
    if !open.is_empty() {
        let parts: Vec<String> = open
            .iter()
            .map(|p| {
                let mut part = format!("plan {} ({}) {}", p.id, p.cluster, p.state);
                if matches!(p.state, PlanState::Halted | PlanState::Paused) && !p.reason.is_empty()
                {
                    part.push_str(": ");
                    part.push_str(&p.reason);
                }
                part
            })
            .collect();
        return Step::Wait(format!("{label}: {}", parts.join("; ")));
    }
    let done_at = wave_plans
        .iter()
        .filter_map(|p| p.finished_at)
        .max()
        .unwrap_or(now);
    if rollout.last_wave() {
        return Step::Complete(done_at);
    }
    match rollout.soak_until() {
        None => Step::StartSoak(done_at),
        Some(until) if now >= until => Step::NextWave,
        Some(until) => {
            let left = (until - now).whole_seconds().max(1);
            Step::Wait(format!(
                "{label} completed; soaking until {} ({left} s left) with no doctor blocker \
                 and no failing probe before wave {}",
                rke2ops_common::report::json::rfc3339(until),
                rollout.wave + 2
            ))
        }
    }
}

/// "wave 2 (prod-eu, prod-us)": waves are numbered from 1 for people.
#[must_use]
pub fn wave_label(index: usize, clusters: &[String]) -> String {
    format!("wave {} ({})", index + 1, clusters.join(", "))
}

/// A wave's state in words for `rollout show`: pending, running, soaking or done.
#[must_use]
pub fn wave_state(rollout: &RolloutFacts, index: usize, finished: bool) -> &'static str {
    if finished || index < rollout.wave {
        "done"
    } else if index > rollout.wave {
        "pending"
    } else if rollout.soak_started_at.is_some() {
        "soaking"
    } else {
        "running"
    }
}

/// Whether rollout `id` in `state` allows `action`; the error says why not. Pause, resume
/// and abort apply to the whole rollout (and its current wave's plans); skipping a node is a
/// plan's action.
///
/// # Errors
/// A sentence naming the rollout, its state and the reason.
pub fn check_action(id: i64, state: PlanState, action: &Action) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("rollout {id} is {state}: {why}"));
    if state.is_final() {
        return refuse("it will not act again");
    }
    match action {
        Action::Pause if state != PlanState::Running => refuse("only a running rollout pauses"),
        Action::Resume if state == PlanState::Running => refuse("nothing to resume"),
        Action::Skip(node) => Err(format!(
            "rollout {id}: skipping node {node} is an action on one plan: \
             `rke2-hub skip PLAN --node {node}` with the plan `rke2-hub rollout show {id}` lists"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn waves(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn facts(wave: usize, soak_started: Option<i64>) -> RolloutFacts {
        RolloutFacts {
            waves: parse_waves(&waves(&["staging", "prod-eu,prod-us"])).unwrap_or_default(),
            wave,
            soak: Duration::from_secs(60),
            soak_started_at: soak_started.map(at),
        }
    }

    fn plan(id: i64, cluster: &str, state: PlanState, finished: Option<i64>) -> WavePlan {
        WavePlan {
            id,
            cluster: cluster.to_owned(),
            state,
            reason: String::new(),
            finished_at: finished.map(at),
        }
    }

    #[test]
    fn waves_are_cluster_lists_each_cluster_once() {
        assert_eq!(
            parse_waves(&waves(&["staging", "prod-eu, prod-us"])),
            Ok(vec![
                vec!["staging".to_owned()],
                vec!["prod-eu".to_owned(), "prod-us".to_owned()]
            ])
        );
        let twice = parse_waves(&waves(&["a", "b,a"])).unwrap_err();
        assert!(
            twice.contains("wave 2") && twice.contains("cluster a"),
            "{twice}"
        );
        assert!(parse_waves(&[]).unwrap_err().contains("at least one"));
        assert!(
            parse_waves(&waves(&["a,,b"]))
                .unwrap_err()
                .contains("empty")
        );
        let bad = parse_waves(&waves(&["Prod EU"])).unwrap_err();
        assert!(bad.contains("wave 1"), "{bad}");
        let many: Vec<String> = (0..=MAX_WAVES).map(|i| format!("c{i}")).collect();
        assert!(parse_waves(&many).is_err());
    }

    #[test]
    fn a_wave_starts_with_a_plan_per_cluster() {
        assert_eq!(
            step(&facts(1, None), &[], at(0)),
            Step::CreatePlans(waves(&["prod-eu", "prod-us"]))
        );
        let one = [plan(4, "prod-eu", PlanState::Running, None)];
        assert_eq!(
            step(&facts(1, None), &one, at(0)),
            Step::CreatePlans(waves(&["prod-us"]))
        );
    }

    #[test]
    fn a_wave_waits_for_every_plan_then_soaks_then_the_next_starts() {
        let f = facts(0, None);
        let running = [plan(3, "staging", PlanState::Running, None)];
        assert!(
            matches!(step(&f, &running, at(0)), Step::Wait(w) if w.contains("plan 3 (staging) running"))
        );
        let mut halted = running.clone();
        halted[0].state = PlanState::Halted;
        halted[0].reason = "agent-1 failed".to_owned();
        assert!(
            matches!(step(&f, &halted, at(0)), Step::Wait(w) if w.contains("halted: agent-1 failed"))
        );
        let done = [plan(3, "staging", PlanState::Completed, Some(10))];
        assert_eq!(step(&f, &done, at(20)), Step::StartSoak(at(10)));
        let soaking = facts(0, Some(10));
        assert!(
            matches!(step(&soaking, &done, at(69)), Step::Wait(w) if w.contains("1 s left") && w.contains("wave 2"))
        );
        assert_eq!(step(&soaking, &done, at(70)), Step::NextWave);
    }

    #[test]
    fn the_last_wave_completes_the_rollout_without_a_soak() {
        let last = [
            plan(4, "prod-eu", PlanState::Completed, Some(100)),
            plan(5, "prod-us", PlanState::Completed, Some(130)),
        ];
        assert_eq!(
            step(&facts(1, None), &last, at(200)),
            Step::Complete(at(130))
        );
        let mut one_open = last.clone();
        one_open[1].state = PlanState::Paused;
        assert!(matches!(
            step(&facts(1, None), &one_open, at(200)),
            Step::Wait(_)
        ));
    }

    #[test]
    fn an_aborted_plan_halts_the_rollout() {
        let aborted = [
            plan(4, "prod-eu", PlanState::Completed, Some(100)),
            plan(5, "prod-us", PlanState::Aborted, Some(90)),
        ];
        let Step::Halt(why) = step(&facts(1, None), &aborted, at(200)) else {
            panic!("an aborted plan must halt the rollout");
        };
        assert!(
            why.contains("plan 5 of cluster prod-us was aborted"),
            "{why}"
        );
    }

    #[test]
    fn actions_apply_to_the_whole_rollout_but_skip_is_a_plan_s() {
        assert!(check_action(1, PlanState::Running, &Action::Pause).is_ok());
        assert!(check_action(1, PlanState::Halted, &Action::Pause).is_err());
        assert!(check_action(1, PlanState::Halted, &Action::Resume).is_ok());
        assert!(check_action(1, PlanState::Running, &Action::Resume).is_err());
        assert!(check_action(1, PlanState::Paused, &Action::Abort).is_ok());
        let done = check_action(1, PlanState::Completed, &Action::Abort).unwrap_err();
        assert!(done.contains("rollout 1 is completed"), "{done}");
        let skip = check_action(1, PlanState::Running, &Action::Skip("a".into())).unwrap_err();
        assert!(skip.contains("rke2-hub skip"), "{skip}");
    }

    #[test]
    fn wave_states_follow_the_rollout() {
        let f = facts(1, None);
        assert_eq!(wave_state(&f, 0, false), "done");
        assert_eq!(wave_state(&f, 1, false), "running");
        assert_eq!(wave_state(&facts(0, Some(1)), 0, false), "soaking");
        assert_eq!(wave_state(&facts(0, None), 1, false), "pending");
        assert_eq!(wave_state(&f, 1, true), "done");
    }
}
