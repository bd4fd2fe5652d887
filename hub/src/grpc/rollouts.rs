//! The rollout methods of `AdminService`: create (or check), list, show, watch, act. A
//! rollout's plans are ordinary plans (`plans`, `plan show` work on them); these methods add
//! the waves around them.

use std::pin::Pin;
use std::time::Duration;

use rke2ops_common::doctor::Code;
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;
use tokio_stream::Stream;
use tonic::Status;

use super::convert::{self, timestamp};
use super::plans::{engine_status, request_of};
use super::{Hub, internal};
use crate::doctor::preflight::{self, Preflight};
use crate::engine::{Action, RolloutRequest};
use crate::plan::model::{NodePhase, Plan, PlanState};
use crate::plan::rollout::{Rollout, parse_waves, wave_state};

/// Stream of rollout views.
pub type RolloutStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutView, Status>> + Send>>;

/// Events shown with a rollout.
const EVENTS: u32 = 30;

fn rollout_id(id: &str) -> Result<i64, Status> {
    id.trim()
        .trim_start_matches("rollout")
        .parse()
        .map_err(|_| Status::invalid_argument(format!("rollout id {id:?} is not a number")))
}

/// `CreateRollout`: checks every wave's plan, refuses on a doctor blocker in the first
/// wave's clusters (unless accepted), then stores the rollout and its first wave's plans.
pub async fn create(
    hub: &Hub,
    actor: &str,
    req: pb::CreateRolloutRequest,
) -> Result<pb::RolloutView, Status> {
    let mut plan = req
        .plan
        .ok_or_else(|| Status::invalid_argument("plan: the plan every cluster gets is missing"))?;
    if !plan.cluster.is_empty() {
        return Err(Status::invalid_argument(
            "plan.cluster: a rollout names its clusters in its waves (--wave), not --cluster",
        ));
    }
    let waves = parse_waves(&req.waves).map_err(Status::invalid_argument)?;
    let dry_run = plan.dry_run;
    // The first cluster's channel resolves the target once, for every wave.
    plan.cluster = waves[0][0].clone();
    let accept = plan
        .accept
        .iter()
        .map(|word| {
            Code::parse(word).ok_or_else(|| {
                Status::invalid_argument(format!("--accept {word}: no such doctor code"))
            })
        })
        .collect::<Result<Vec<Code>, Status>>()?;
    let mut template = request_of(hub, &plan).await?;
    template.origin = "rollout".to_owned();
    let request = RolloutRequest {
        plan: template,
        waves,
        soak: Duration::from_secs(req.soak_seconds),
    };
    let counts = hub
        .engine
        .preview_rollout(&request)
        .map_err(engine_status)?;
    let findings = hub
        .engine
        .fleet_findings(request.plan.target_version.as_ref())
        .await
        .map_err(internal)?;
    let nodes = hub.store.nodes().map_err(internal)?;
    let first = &request.waves[0];
    let in_first: Vec<_> = findings
        .into_iter()
        .filter(|f| {
            first.iter().any(|c| {
                let members: Vec<String> = nodes
                    .iter()
                    .filter(|n| &n.cluster == c)
                    .map(|n| n.name.clone())
                    .collect();
                crate::doctor::is_in_cluster(f, c, &members)
            })
        })
        .collect();
    let check = Preflight::of(in_first, &[], request.plan.policy.drain, &accept);
    if dry_run {
        let now = OffsetDateTime::now_utc();
        let mut view = preview_view(&request, &counts, actor, now);
        for f in &check.refused {
            view.events.push(pb::PlanEvent {
                at: Some(timestamp(now)),
                node: f.node.clone(),
                message: format!(
                    "preflight blocker (refuses the rollout unless accepted): {}",
                    preflight::line(f)
                ),
            });
        }
        return Ok(view);
    }
    if !check.refused.is_empty() {
        return Err(Status::failed_precondition(format!(
            "wave 1: {}",
            check.refusal()
        )));
    }
    let id = hub
        .engine
        .create_rollout(&request, actor)
        .map_err(engine_status)?;
    show(hub, id)
}

/// The view of a rollout that would be created (`--dry-run`).
fn preview_view(
    request: &RolloutRequest,
    counts: &[(String, usize)],
    actor: &str,
    now: OffsetDateTime,
) -> pb::RolloutView {
    let words: Vec<String> = request
        .waves
        .iter()
        .enumerate()
        .map(|(i, wave)| {
            let parts: Vec<String> = wave
                .iter()
                .map(|c| {
                    let n = counts.iter().find(|(name, _)| name == c).map_or(0, |x| x.1);
                    format!("{c} ({n} nodes)")
                })
                .collect();
            format!("wave {}: {}", i + 1, parts.join(", "))
        })
        .collect();
    pb::RolloutView {
        id: String::new(),
        kind: convert::plan_kind_value(request.plan.kind),
        target_version: request
            .plan
            .target_version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        channel: request.plan.channel.clone(),
        state: pb::RolloutState::Preview.into(),
        reason: format!("dry run: nothing stored or done; {}", words.join("; ")),
        created_by: actor.to_owned(),
        created_at: Some(timestamp(now)),
        finished_at: None,
        soak_seconds: request.soak.as_secs(),
        current_wave: 0,
        waves: request
            .waves
            .iter()
            .enumerate()
            .map(|(i, clusters)| pb::RolloutWave {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                clusters: clusters.clone(),
                state: "pending".to_owned(),
                ..pb::RolloutWave::default()
            })
            .collect(),
        policy: request.plan.policy.describe(request.plan.kind),
        events: Vec::new(),
    }
}

/// `GetRollout`.
pub fn get(hub: &Hub, id: &str) -> Result<pb::RolloutView, Status> {
    show(hub, rollout_id(id)?)
}

fn show(hub: &Hub, id: i64) -> Result<pb::RolloutView, Status> {
    let rollout = hub.store.rollout(id).map_err(|e| engine_status(e.into()))?;
    let events = hub.store.rollout_events(id, EVENTS).map_err(internal)?;
    view(hub, &rollout, &events)
}

fn view(
    hub: &Hub,
    rollout: &Rollout,
    events: &[crate::plan::model::PlanEvent],
) -> Result<pb::RolloutView, Status> {
    let plans = hub.store.rollout_plans(rollout.id).map_err(internal)?;
    let mut waves = Vec::with_capacity(rollout.facts.waves.len());
    let last = rollout.facts.waves.len().saturating_sub(1);
    for (i, clusters) in rollout.facts.waves.iter().enumerate() {
        let latest: Vec<&Plan> = clusters
            .iter()
            .filter_map(|c| {
                plans
                    .iter()
                    .filter(|p| &p.cluster == c)
                    .max_by_key(|p| p.id)
            })
            .collect();
        let mut wave_plans = Vec::with_capacity(latest.len());
        for p in &latest {
            let nodes = hub.store.plan_nodes(p.id).map_err(internal)?;
            let done = nodes
                .iter()
                .filter(|n| matches!(n.phase, NodePhase::Done | NodePhase::Skipped))
                .count();
            wave_plans.push(pb::RolloutPlan {
                cluster: p.cluster.clone(),
                plan_id: p.id.to_string(),
                state: convert::plan_state_value(p.state),
                reason: p.reason.clone(),
                nodes_done: u32::try_from(done).unwrap_or(u32::MAX),
                nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            });
        }
        let all_done = latest.len() == clusters.len()
            && latest.iter().all(|p| p.state == PlanState::Completed);
        let completed_at = if all_done {
            latest.iter().filter_map(|p| p.finished_at).max()
        } else {
            None
        };
        let soak_from = if i == rollout.facts.wave {
            rollout.facts.soak_started_at.or(completed_at)
        } else {
            completed_at
        };
        waves.push(pb::RolloutWave {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            clusters: clusters.clone(),
            state: wave_state(&rollout.facts, i, rollout.state == PlanState::Completed).to_owned(),
            plans: wave_plans,
            started_at: latest.iter().map(|p| p.created_at).min().map(timestamp),
            completed_at: completed_at.map(timestamp),
            soak_until: soak_from
                .filter(|_| i < last)
                .map(|at| timestamp(at + rollout.facts.soak)),
        });
    }
    Ok(pb::RolloutView {
        id: rollout.id.to_string(),
        kind: convert::plan_kind_value(rollout.kind),
        target_version: rollout.target_version.clone(),
        channel: rollout.channel.clone(),
        state: rollout_state_value(rollout.state),
        reason: rollout.reason.clone(),
        created_by: rollout.created_by.clone(),
        created_at: Some(timestamp(rollout.created_at)),
        finished_at: rollout.finished_at.map(timestamp),
        soak_seconds: rollout.facts.soak.as_secs(),
        current_wave: u32::try_from(rollout.facts.wave).unwrap_or(u32::MAX),
        waves,
        policy: rollout.policy.describe(rollout.kind),
        events: events.iter().map(pb::PlanEvent::from).collect(),
    })
}

/// A rollout's state on the wire (its words are a plan's).
fn rollout_state_value(state: PlanState) -> i32 {
    match state {
        PlanState::Running => pb::RolloutState::Running,
        PlanState::Paused => pb::RolloutState::Paused,
        PlanState::Halted => pb::RolloutState::Halted,
        PlanState::Completed => pb::RolloutState::Completed,
        PlanState::Aborted => pb::RolloutState::Aborted,
    }
    .into()
}

/// Most rollouts per `ListRollouts` answer.
const MAX_LIST: u32 = 500;

/// `ListRollouts`: newest first.
pub fn list(hub: &Hub, req: &pb::ListRolloutsRequest) -> Result<pb::ListRolloutsResponse, Status> {
    let limit = match req.limit {
        0 => 100,
        n => n.min(MAX_LIST),
    };
    let rollouts = hub.store.rollouts(false, limit).map_err(internal)?;
    let mut out = Vec::with_capacity(rollouts.len());
    for r in &rollouts {
        out.push(view(hub, r, &[])?);
    }
    Ok(pb::ListRolloutsResponse { rollouts: out })
}

/// `WatchRollout`: the rollout now, then after every change (at most every 200 ms).
pub fn watch(hub: &Hub, req: &pb::WatchRolloutRequest) -> Result<RolloutStream, Status> {
    let id = rollout_id(&req.id)?;
    let first = show(hub, id)?;
    let until_halted = req.until_halted;
    Ok(super::watch_views(
        hub,
        first,
        move |hub| show(hub, id),
        move |view: &pb::RolloutView| {
            let state = pb::RolloutState::try_from(view.state).unwrap_or_default();
            matches!(
                state,
                pb::RolloutState::Completed | pb::RolloutState::Aborted
            ) || (until_halted && state == pb::RolloutState::Halted)
        },
        tracing::info_span!("watch_rollout", rollout = id),
    ))
}

/// `RolloutAction`.
pub async fn act(
    hub: &Hub,
    actor: &str,
    req: pb::RolloutActionRequest,
) -> Result<pb::RolloutView, Status> {
    let id = rollout_id(&req.id)?;
    let action = match pb::PlanAction::try_from(req.action) {
        Ok(pb::PlanAction::Pause) => Action::Pause,
        Ok(pb::PlanAction::Resume) => Action::Resume,
        Ok(pb::PlanAction::Abort) => Action::Abort,
        Ok(pb::PlanAction::Skip) => {
            return Err(Status::invalid_argument(format!(
                "rollout {id}: skip is an action on one plan: `rke2-hub skip PLAN --node NODE` \
                 with a plan `rke2-hub rollout show {id}` lists"
            )));
        }
        _ => {
            return Err(Status::invalid_argument("action: pause, resume or abort"));
        }
    };
    if req.dry_run {
        hub.engine.check_rollout(id, &action).map_err(|e| {
            let status = engine_status(e);
            Status::new(
                status.code(),
                format!("dry run: would be refused: {}", status.message()),
            )
        })?;
        let mut view = show(hub, id)?;
        view.reason = format!("dry run: would {action}");
        return Ok(view);
    }
    hub.engine
        .act_rollout(id, &action, actor)
        .await
        .map_err(engine_status)?;
    show(hub, id)
}
