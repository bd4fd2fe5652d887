//! Operator requests: preview and create a plan, and the actions on one (pause, resume, skip,
//! abort), each checked by the pure rules first ([`crate::plan::create::validate`],
//! [`crate::plan::action::check`]) and written to the store before the loop acts on it.

use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::plan::action::{self, Action};
use crate::plan::create::{Candidate, PlanRequest, plan_nodes, validate};
use crate::plan::model::{NodePhase, PlanNode, PlanState, role_of};
use crate::store::NewPlan;

impl Engine {
    /// The nodes a request would hold, in order, with skips (nothing stored).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field or node.
    pub fn preview(&self, request: &PlanRequest) -> Result<Vec<PlanNode>, EngineError> {
        validate(request).map_err(EngineError::Invalid)?;
        let all = self.store.nodes()?;
        // A named node of another cluster: say so rather than "unknown".
        for name in &request.nodes {
            if let Some(other) = all
                .iter()
                .find(|n| &n.name == name && n.cluster != request.cluster)
            {
                return Err(EngineError::Invalid(format!(
                    "node {name} is in cluster {}, not {}: a plan holds one cluster's nodes",
                    other.cluster, request.cluster
                )));
            }
        }
        let inventory = all
            .into_iter()
            .filter(|n| n.cluster == request.cluster)
            .filter_map(|n| {
                Some(Candidate {
                    role: role_of(&n.role).ok()?,
                    rke2_version: {
                        let live = self.live.get(&n.name).rke2_version;
                        if live.is_empty() {
                            n.rke2_version
                        } else {
                            live
                        }
                    },
                    name: n.name,
                })
            })
            .collect::<Vec<_>>();
        plan_nodes(
            request.kind,
            request.target_version,
            &inventory,
            &request.nodes,
            request.policy.allow_minor_skip,
        )
        .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// The cluster a plan request names: `named` when some node is in it; when empty, the
    /// fleet's only cluster (the default one when there is no node yet).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a bad name or an empty one in a fleet of several clusters,
    /// [`EngineError::UnknownCluster`] naming the clusters there are.
    pub fn resolve_cluster(&self, named: &str) -> Result<String, EngineError> {
        let clusters: std::collections::BTreeSet<String> =
            self.store.nodes()?.into_iter().map(|n| n.cluster).collect();
        let list = || clusters.iter().cloned().collect::<Vec<_>>().join(", ");
        if named.is_empty() {
            return match clusters.len() {
                0 => Ok(rke2ops_common::ids::DEFAULT_CLUSTER.to_owned()),
                1 => Ok(clusters.iter().next().cloned().unwrap_or_default()),
                _ => Err(EngineError::Invalid(format!(
                    "the fleet has several clusters ({}): name one with --cluster",
                    list()
                ))),
            };
        }
        rke2ops_common::ids::check_cluster_name(named)
            .map_err(|e| EngineError::Invalid(format!("--cluster: {e}")))?;
        if clusters.contains(named) {
            Ok(named.to_owned())
        } else {
            Err(EngineError::UnknownCluster(format!(
                "no node is in cluster {named:?} (clusters: {})",
                if clusters.is_empty() {
                    "none yet".to_owned()
                } else {
                    list()
                }
            )))
        }
    }

    /// Creates the plan; the loop starts it.
    ///
    /// # Errors
    /// [`EngineError`]: invalid request, another plan active.
    pub fn create(&self, request: &PlanRequest, actor: &str) -> Result<i64, EngineError> {
        let nodes = self.preview(request)?;
        let target = request
            .target_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let id = self.store.create_plan(
            &NewPlan {
                kind: request.kind,
                target_version: &target,
                channel: &request.channel,
                policy: &request.policy,
                origin: &request.origin,
                created_by: actor,
                cluster: &request.cluster,
                rollout: request.rollout,
            },
            &nodes,
            OffsetDateTime::now_utc(),
        )?;
        tracing::info!(plan = id, kind = %request.kind, %target, nodes = nodes.len(), %actor, "plan created");
        self.announce(&crate::notify::Event::PlanCreated {
            plan: id,
            kind: request.kind.to_string(),
            actor: actor.to_owned(),
        });
        self.notify();
        Ok(id)
    }

    /// Whether plan `id` would accept `action` now (`--dry-run`): the same check as [`Self::act`].
    ///
    /// # Errors
    /// [`EngineError`]: unknown plan, or the reason the action would be refused.
    pub fn check(&self, id: i64, action: &Action) -> Result<(), EngineError> {
        let plan = self.store.plan(id)?;
        let nodes = self.store.plan_nodes(id)?;
        action::check(id, plan.state, &nodes, action).map_err(EngineError::Invalid)
    }

    /// Applies an operator's action.
    ///
    /// # Errors
    /// [`EngineError`]: unknown plan or node, or an action the plan's state does not allow.
    pub async fn act(&self, id: i64, action: &Action, actor: &str) -> Result<(), EngineError> {
        let now = OffsetDateTime::now_utc();
        // The engine may move a running plan (to halted or completed) between the read and
        // the write: the write is conditional on the state read, and a lost race is checked
        // again against the fresh state instead of overwriting it.
        let mut tries = 0;
        let (plan, nodes) = loop {
            let plan = self.store.plan(id)?;
            let nodes = self.store.plan_nodes(id)?;
            action::check(id, plan.state, &nodes, action).map_err(EngineError::Invalid)?;
            let moved = match action {
                Action::Pause => self.store.move_plan_state(
                    id,
                    plan.state,
                    PlanState::Paused,
                    &format!("paused by {actor}"),
                    now,
                )?,
                Action::Abort => self.store.move_plan_state(
                    id,
                    plan.state,
                    PlanState::Aborted,
                    &format!("aborted by {actor}"),
                    now,
                )?,
                Action::Resume | Action::Skip(_) => true,
            };
            if moved {
                break (plan, nodes);
            }
            tries += 1;
            if tries == 5 {
                return Err(EngineError::Invalid(format!(
                    "plan {id} kept changing state while the {} was applied; try again",
                    action.word()
                )));
            }
        };
        let word = action.word();
        match action {
            Action::Pause => {}
            Action::Resume => {
                for mut node in nodes {
                    if node.phase == NodePhase::Failed {
                        node.phase = node.phase.on_resume();
                        node.detail = format!("retrying (resumed by {actor})");
                        node.finished_at = None;
                        self.store
                            .save_plan_node(id, &node, Some("resumed: will retry"), now)?;
                    }
                }
                // A failed image staging is retried too (with its next operation id).
                self.store.retry_failed_images(id, now)?;
                self.store.mark_resumed(id, now)?;
                self.store
                    .move_plan_state(id, plan.state, PlanState::Running, "", now)?;
            }
            Action::Skip(name) => {
                let mut node = nodes.into_iter().find(|n| &n.node == name).ok_or_else(|| {
                    EngineError::Invalid(format!("plan {id} has no node {name:?}"))
                })?;
                self.release(id, &mut node).await;
                node.phase = node.phase.on_skip();
                node.detail = format!("skipped by {actor}");
                node.finished_at = Some(now);
                self.store
                    .save_plan_node(id, &node, Some(&format!("skipped by {actor}")), now)?;
                if plan.state == PlanState::Halted {
                    self.store.move_plan_state(
                        id,
                        PlanState::Halted,
                        PlanState::Running,
                        "",
                        now,
                    )?;
                }
            }
            Action::Abort => {
                // Image stagings in flight are cancelled (the agent honours it until it
                // starts placing files); their tasks record how they ended.
                for row in self.store.plan_images(id)? {
                    if row.state == crate::plan::images::ImagesState::Staging {
                        let op = super::images::staging_id(id, &row.node, row.attempt);
                        self.ops.cancel(&self.registry, &row.node, &op);
                    }
                }
                for mut node in self.store.plan_nodes(id)? {
                    let running = self
                        .running
                        .lock()
                        .map(|r| r.contains(&(id, node.node.clone())))
                        .unwrap_or(false);
                    if running {
                        if node.phase == NodePhase::Operate && !node.operation_id.is_empty() {
                            self.ops
                                .cancel(&self.registry, &node.node, &node.operation_id);
                        }
                        continue; // its task uncordons it at the next phase boundary
                    }
                    if node.cordoned || node.phase == NodePhase::Failed {
                        self.release(id, &mut node).await;
                        self.store.save_plan_node(id, &node, None, now)?;
                    }
                }
            }
        }
        self.store.audit(
            actor,
            &format!("plan.{word}"),
            &format!("plan {id} {action}"),
            now,
        )?;
        self.store
            .plan_event(id, "", &format!("{word} by {actor}"), now)?;
        tracing::info!(plan = id, action = word, %actor, "plan action");
        if let Action::Abort = action {
            self.announce(&crate::notify::Event::PlanAborted {
                plan: id,
                actor: actor.to_owned(),
            });
        }
        self.notify();
        Ok(())
    }
}
