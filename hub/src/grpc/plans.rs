//! The plan methods of `AdminService`: create (or preview), list, show, watch, act.

use std::pin::Pin;

use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;
use tokio_stream::Stream;
use tonic::Status;

use super::convert::{self, PlanAsk, TargetAsk};
use super::{Hub, internal};
use crate::engine::{Action, AlertGate, EngineError, PlanRequest};
use crate::plan::model::{Plan, PlanKind, PlanPolicy, PlanState};
use crate::store::StoreError;

/// Stream of plan views.
pub type PlanStream = Pin<Box<dyn Stream<Item = Result<pb::PlanView, Status>> + Send>>;

/// Events shown with a plan.
const EVENTS: u32 = 30;

pub(super) fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::Invalid(m) => Status::invalid_argument(m),
        EngineError::UnknownCluster(m) => Status::not_found(m),
        EngineError::Store(StoreError::PlanActive { id, state }) => {
            Status::failed_precondition(format!(
                "plan {id} is still {state} in this cluster; finish, resume or abort it before \
                 creating another"
            ))
        }
        EngineError::Store(StoreError::UnknownPlan(id)) => {
            Status::not_found(format!("no plan {id}"))
        }
        EngineError::Store(StoreError::UnknownRollout(id)) => {
            Status::not_found(format!("no rollout {id}"))
        }
        EngineError::Store(e) => internal(e),
    }
}

fn plan_id(id: &str) -> Result<i64, Status> {
    id.trim()
        .trim_start_matches("plan")
        .parse()
        .map_err(|_| Status::invalid_argument(format!("plan id {id:?} is not a number")))
}

/// The gates of a plan, in words.
fn gates(
    kind: PlanKind,
    policy: &PlanPolicy,
    kube: bool,
    alerts: Option<&AlertGate>,
) -> Vec<String> {
    let mut before = vec![
        "every etcd member healthy, no alarms".to_owned(),
        "servers: etcd keeps quorum with this member down".to_owned(),
        "every server's apiserver ready".to_owned(),
        if kube {
            "every Node Ready (except those in maintenance)".to_owned()
        } else {
            "every node's kubelet healthy (no Kubernetes access configured)".to_owned()
        },
    ];
    if let Some(w) = &policy.window {
        before.push(format!("inside the window {w}"));
    }
    if let Some(gate) = alerts {
        before.push(format!(
            "no firing alert at {} (ignoring {})",
            crate::plan::alerts::display_url(&gate.prometheus_url),
            if gate.ignore.is_empty() {
                "none".to_owned()
            } else {
                gate.ignore.join(", ")
            }
        ));
    }
    before.push(
        "no doctor blocker about the node or the cluster (checked again right before it)"
            .to_owned(),
    );
    before.push("plan not paused".to_owned());
    let mut out = Vec::new();
    if kind == PlanKind::Upgrade && policy.stage_images {
        out.push(format!(
            "before the first node: the release's air-gap image archives staged (checksum-verified, \
             the unit untouched) on every node the plan upgrades, up to {} at once; a failure \
             halts the plan before any node is upgraded; after the plan, other releases' \
             archives are pruned",
            crate::plan::images::MAX_STAGING
        ));
    }
    out.push(format!("before each node: {}", before.join("; ")));
    let per_node = if policy.drain && kube {
        "per node: cordon, drain (evictions honour PodDisruptionBudgets), operation on its agent"
    } else {
        "per node: operation on its agent (no cordon/drain)"
    };
    let mut per_node = per_node.to_owned();
    if kind == PlanKind::Upgrade {
        per_node.push_str(
            "; servers: an etcd snapshot after the release is verified and before anything \
             changes (a failed snapshot fails the node untouched)",
        );
    } else if kind == PlanKind::Rotate && policy.etcd_snapshot {
        per_node.push_str(
            "; servers: an etcd snapshot after the preflight and before the unit stops (a \
             failed snapshot fails the node untouched)",
        );
    }
    out.push(per_node);
    let mut after = vec!["agent connected with apiserver/kubelet probes passing".to_owned()];
    if kube {
        after.push("Node Ready".to_owned());
    }
    after.push("servers: every etcd member healthy".to_owned());
    if kind == PlanKind::Upgrade {
        after.push("the target version running (agent and kubelet)".to_owned());
    }
    out.push(format!(
        "after each node: {} (within {} s), then uncordon what the plan cordoned and settle {} s",
        after.join("; "),
        policy.ready_timeout_secs,
        policy.settle_secs
    ));
    if !policy.probes.is_empty() {
        out.push(format!(
            "application probes ({}) checked from before the first node to after the last: \
             every one passing before each node; one down {} s halts the plan",
            policy
                .probes
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            policy.probe_halt_secs
        ));
    }
    out.push("a failure halts the plan before the next node".to_owned());
    out
}

/// The domain request for the wire request, resolving a channel.
pub(super) async fn request_of(
    hub: &Hub,
    req: &pb::CreatePlanRequest,
) -> Result<PlanRequest, Status> {
    let mut ask = PlanAsk::try_from(req).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if ask.policy.probes.is_empty() {
        // hub.toml's `probes`: every plan watches the applications unless it names its own.
        ask.policy.probes = hub.engine.default_probes().to_vec();
    }
    let cluster = hub
        .engine
        .resolve_cluster(&req.cluster)
        .map_err(engine_status)?;
    let channel_url = hub
        .cluster_channel_urls
        .get(&cluster)
        .unwrap_or(&hub.channel_url);
    let (target, channel) = match ask.target {
        TargetAsk::None => (None, String::new()),
        TargetAsk::Version(version) => (Some(version), String::new()),
        TargetAsk::Channel(channel) => (
            Some(
                crate::fetch::channel::fetch_and_resolve(channel_url, &channel)
                    .await
                    .map_err(|e| Status::failed_precondition(e.to_string()))?,
            ),
            channel,
        ),
    };
    Ok(PlanRequest {
        kind: ask.kind,
        target_version: target,
        channel,
        nodes: ask.nodes,
        policy: ask.policy,
        origin: "operator".to_owned(),
        cluster,
        rollout: None,
    })
}

/// `CreatePlan`.
pub async fn create(
    hub: &Hub,
    actor: &str,
    req: pb::CreatePlanRequest,
) -> Result<pb::PlanView, Status> {
    let request = request_of(hub, &req).await?;
    let kube = hub.engine.has_cluster_access(&request.cluster);
    if req.dry_run {
        let nodes = hub.engine.preview(&request).map_err(engine_status)?;
        let now = OffsetDateTime::now_utc();
        let plan = Plan {
            id: 0,
            kind: request.kind,
            target_version: request
                .target_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            channel: request.channel.clone(),
            policy: request.policy.clone(),
            state: PlanState::Running,
            reason: "dry run: nothing stored or done".to_owned(),
            origin: request.origin.clone(),
            created_by: actor.to_owned(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            resumed_at: None,
            cluster: request.cluster.clone(),
            rollout: request.rollout,
        };
        let mut view = convert::plan_message(
            &plan,
            &nodes,
            &[],
            gates(plan.kind, &plan.policy, kube, hub.engine.alert_gate()),
        );
        // Per node: `images: pending` where the plan would stage images.
        convert::add_images(&mut view, &plan, &nodes, &[]);
        view.state = pb::PlanState::Preview.into();
        if let Some(target) = request
            .target_version
            .filter(|_| plan.kind == PlanKind::Upgrade)
        {
            let installs = hub.store.installs().map_err(internal)?;
            let source = hub.engine.artifact_source(&plan.policy, &plan.cluster);
            for (node, node_view) in nodes.iter().zip(view.nodes.iter_mut()) {
                let p = crate::plan::preview::preview(
                    node,
                    installs.get(&node.node),
                    &target,
                    &source,
                    crate::plan::images::stages(plan.kind, &plan.policy, node),
                );
                node_view.preview = Some(pb::NodePreview {
                    install_method: p.method,
                    current_version: p.current_version,
                    fetch: p.fetch,
                    stage_images: p.stage_images,
                    etcd_snapshot: p.etcd_snapshot,
                });
            }
        }
        return Ok(view);
    }
    let id = hub.engine.create(&request, actor).map_err(engine_status)?;
    show(hub, id)
}

/// `GetPlan`.
pub fn get(hub: &Hub, id: &str) -> Result<pb::PlanView, Status> {
    show(hub, plan_id(id)?)
}

/// `GetPlan` with up to `events` of the plan's latest events (0: the usual 30).
pub fn get_with_events(hub: &Hub, id: &str, events: u32) -> Result<pb::PlanView, Status> {
    let limit = if events == 0 {
        EVENTS
    } else {
        events.min(MAX_EVENTS)
    };
    show_with(hub, plan_id(id)?, limit)
}

/// Most events one `GetPlan` returns (a report of a long plan).
const MAX_EVENTS: u32 = 10_000;

fn show(hub: &Hub, id: i64) -> Result<pb::PlanView, Status> {
    show_with(hub, id, EVENTS)
}

fn show_with(hub: &Hub, id: i64, events: u32) -> Result<pb::PlanView, Status> {
    let store = hub.engine.store();
    let plan = store.plan(id).map_err(|e| engine_status(e.into()))?;
    let nodes = store.plan_nodes(id).map_err(internal)?;
    let events = store.plan_events(id, events).map_err(internal)?;
    let images = store.plan_images(id).map_err(internal)?;
    let gates = gates(
        plan.kind,
        &plan.policy,
        hub.engine.has_cluster_access(&plan.cluster),
        hub.engine.alert_gate(),
    );
    let mut view = convert::plan_message(&plan, &nodes, &events, gates);
    convert::add_images(&mut view, &plan, &nodes, &images);
    let probes = store.plan_probes(id).map_err(internal)?;
    view.probes = convert::probe_reports(&plan, &probes, OffsetDateTime::now_utc());
    Ok(view)
}

/// Plans per `ListPlans` page when the request names no limit.
const DEFAULT_PAGE: u32 = 100;
/// The largest page: each plan carries its nodes, so 500 plans of 500 nodes is already
/// tens of MB.
const MAX_PAGE: u32 = 500;

/// `ListPlans`: one page, newest first.
pub fn list(hub: &Hub, req: &pb::ListPlansRequest) -> Result<pb::ListPlansResponse, Status> {
    let store = hub.engine.store();
    let limit = match req.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let before = (req.before_id > 0).then_some(req.before_id);
    let plans = store.plans_page(before, limit).map_err(internal)?;
    let full = u32::try_from(plans.len()).is_ok_and(|n| n == limit);
    let next_before_id = plans.last().filter(|_| full).map_or(0, |p| p.id);
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        if !req.cluster.is_empty() && plan.cluster != req.cluster {
            continue; // the page is cut as without the filter: `next_before_id` still holds
        }
        let nodes = store.plan_nodes(plan.id).map_err(internal)?;
        out.push(convert::plan_message(&plan, &nodes, &[], Vec::new()));
    }
    Ok(pb::ListPlansResponse {
        plans: out,
        next_before_id,
    })
}

/// `WatchPlan`: the plan now, then after every change (at most every 200 ms).
pub fn watch(hub: &Hub, req: &pb::WatchPlanRequest) -> Result<PlanStream, Status> {
    let id = plan_id(&req.id)?;
    let first = show(hub, id)?;
    let until_halted = req.until_halted;
    Ok(super::watch_views(
        hub,
        first,
        move |hub| show(hub, id),
        move |view: &pb::PlanView| {
            let state = pb::PlanState::try_from(view.state).unwrap_or_default();
            matches!(state, pb::PlanState::Completed | pb::PlanState::Aborted)
                || (until_halted && state == pb::PlanState::Halted)
        },
        tracing::info_span!("watch_plan", plan = id),
    ))
}

/// `PlanAction`.
pub async fn act(
    hub: &Hub,
    actor: &str,
    req: pb::PlanActionRequest,
) -> Result<pb::PlanView, Status> {
    let id = plan_id(&req.id)?;
    let action = Action::try_from(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.dry_run {
        hub.engine
            .check(id, &action)
            .map_err(|e| dry_run(engine_status(e)))?;
        let mut view = show(hub, id)?;
        view.reason = format!("dry run: would {action}");
        return Ok(view);
    }
    hub.engine
        .act(id, &action, actor)
        .await
        .map_err(engine_status)?;
    show(hub, id)
}

/// Prefixes a refusal with "dry run" so the operator knows nothing was attempted.
fn dry_run(status: Status) -> Status {
    Status::new(
        status.code(),
        format!("dry run: would be refused: {}", status.message()),
    )
}
