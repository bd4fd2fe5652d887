//! The images phase of an upgrade plan (`--stage-images`, [`crate::plan::images`] decides):
//! one task per node staging the release's image archives on its agent, and after the plan
//! completes, one prune per staged node.
//!
//! Durability as for a node's maintenance: a node's row says `staging` (with its attempt)
//! before the operation is sent, so a restarted hub adopts the row and asks for the same
//! operation id again; the agent runs an id once and reports the result of one it finished.
//! The task is the only writer of its row while it runs. The prune is best effort and not
//! resumed by a restarted hub (what it removes would only take disk space).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::Instrument as _;

use super::Engine;
use super::messages::{Operation, OperationResult, Outcome, RunOperation};
use super::ops::{OpEvent, operation_id};
use crate::plan::images::{ImagesNext, ImagesState, MAX_STAGING, NodeImages, next};
use crate::plan::model::{Plan, PlanNode, PlanState};
use crate::store::StoreError;

/// How often an operation without a result is asked for again.
const RESEND: Duration = Duration::from_secs(10);
/// The least time a staging is given: the agent's own fetch deadline for the archives
/// (an hour) plus verifying and placing them; a plan's shorter operation timeout (meant for
/// an upgrade's restart) does not cut it short.
const MIN_STAGING_SECS: u64 = 70 * 60;
/// How long a node's prune may take before the hub stops waiting for it.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(120);

/// The id of `node`'s staging in `attempt` of plan `plan`: the node's operation id with a
/// prefix no node name can have (node names are lower case), so it never equals an
/// upgrade's id, stable across hub restarts.
#[must_use]
pub fn staging_id(plan: i64, node: &str, attempt: u32) -> String {
    operation_id(plan, &format!("IMAGES.{node}"), attempt)
}

/// The id of `node`'s prune after plan `plan`.
#[must_use]
pub fn prune_id(plan: i64, node: &str) -> String {
    operation_id(plan, &format!("PRUNE.{node}"), 1)
}

/// The key of a staging task in [`Engine::running`] (`:` is never in a node name).
fn task_key(node: &str) -> String {
    format!("images:{node}")
}

/// The artifact source a plan's operations name: the plan's, else the hub's mirror.
fn source(engine: &Engine, plan: &Plan) -> String {
    engine.artifact_source(&plan.policy, &plan.cluster)
}

impl Engine {
    /// Adopts stagings in flight that have no task (a restarted hub).
    pub(super) fn adopt_images(self: &Arc<Self>, id: i64, rows: &[NodeImages]) {
        for row in rows.iter().filter(|r| r.state == ImagesState::Staging) {
            self.spawn_images(id, &row.node);
        }
    }

    /// The images phase of a running plan on this pass: `true` while it holds the plan's
    /// nodes (stagings started or in flight, or a failure halted the plan).
    pub(super) fn images_phase(
        self: &Arc<Self>,
        plan: &Plan,
        nodes: &[PlanNode],
        rows: &[NodeImages],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        match next(plan.kind, &plan.policy, nodes, rows, MAX_STAGING) {
            ImagesNext::Ready => Ok(false),
            ImagesNext::Start(names) => {
                for name in names {
                    let mut row = rows
                        .iter()
                        .find(|r| r.node == name)
                        .cloned()
                        .unwrap_or_else(|| NodeImages::pending(&name));
                    row.attempt = row.attempt.max(1);
                    row.state = ImagesState::Staging;
                    row.started_at = Some(now);
                    row.finished_at = None;
                    row.detail.clear();
                    let op = staging_id(plan.id, &name, row.attempt);
                    // Recorded before it is sent, so a restarted hub asks for the same id.
                    self.store.save_node_images(
                        plan.id,
                        &row,
                        Some(&format!(
                            "images: staging {} (operation {op})",
                            plan.target_version
                        )),
                        now,
                    )?;
                    self.spawn_images(plan.id, &name);
                }
                let rows = self.store.plan_images(plan.id)?;
                let all = crate::plan::images::of_nodes(plan.kind, &plan.policy, nodes, &rows);
                let why = format!(
                    "staging images before any node is upgraded: {}",
                    crate::plan::images::summary(&all)
                );
                if plan.reason != why {
                    self.store.move_plan_state(
                        plan.id,
                        plan.state,
                        PlanState::Running,
                        &why,
                        now,
                    )?;
                }
                self.notify();
                Ok(true)
            }
            ImagesNext::Wait(why) => {
                if plan.reason != why
                    && self.store.move_plan_state(
                        plan.id,
                        plan.state,
                        PlanState::Running,
                        &why,
                        now,
                    )?
                {
                    self.notify();
                }
                Ok(true)
            }
            ImagesNext::Halt(why) => {
                if !self
                    .store
                    .move_plan_state(plan.id, plan.state, PlanState::Halted, &why, now)?
                {
                    return Ok(true); // aborted or paused meanwhile
                }
                self.store
                    .plan_event(plan.id, "", &format!("halted: {why}"), now)?;
                tracing::warn!(plan = plan.id, reason = %why, "plan halted");
                self.notify();
                Ok(true)
            }
        }
    }

    fn spawn_images(self: &Arc<Self>, id: i64, node: &str) {
        let key = (id, task_key(node));
        let fresh = self
            .running
            .lock()
            .map(|mut r| r.insert(key.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let engine = Arc::clone(self);
        let name = node.to_owned();
        let span = tracing::info_span!("stage_images", plan = id, node = %node);
        let task = async move {
            if let Err(e) = engine.stage(id, &name).await {
                tracing::error!(plan = id, node = %name, error = %e, "image staging: store failure");
            }
            if let Ok(mut r) = engine.running.lock() {
                r.remove(&key);
            }
            engine.notify();
        };
        tokio::spawn(task.instrument(span));
    }

    /// Sends `node` its staging (again, after a restart) and records how it ended.
    async fn stage(&self, id: i64, node: &str) -> Result<(), StoreError> {
        let plan = self.store.plan(id)?;
        let Some(mut row) = self
            .store
            .plan_images(id)?
            .into_iter()
            .find(|r| r.node == node && r.state == ImagesState::Staging)
        else {
            return Ok(());
        };
        let op = staging_id(id, node, row.attempt);
        let run = RunOperation {
            operation_id: op.clone(),
            kind: Some(Operation::StageImages {
                version: plan.target_version.clone(),
                artifact_source: source(self, &plan),
            }),
        };
        let mut rx = self.ops.start(&self.registry, node, run);
        let timeout = plan.policy.operation_timeout_secs.max(MIN_STAGING_SECS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let outcome: Result<OperationResult, String> = loop {
            let wait = (tokio::time::Instant::now() + RESEND).min(deadline);
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Err(_) if wait < deadline => {
                    if self
                        .store
                        .plan(id)
                        .is_ok_and(|p| p.state == PlanState::Aborted)
                    {
                        // Honoured by the agent until it starts placing files.
                        self.ops.cancel(&self.registry, node, &op);
                        break Err("the plan was aborted".to_owned());
                    }
                    // A result sent on a stream that broke is lost; agents answer a known id.
                    self.ops.resend_one(&self.registry, node, &op);
                }
                Ok(Some(OpEvent::Progress(p))) => {
                    if p.phase.ended() {
                        row.detail = format!("{}: {}", p.step, p.detail);
                        self.store
                            .save_node_images(id, &row, None, OffsetDateTime::now_utc())?;
                        self.notify();
                    }
                }
                Ok(Some(OpEvent::Result(r))) => break Ok(r),
                Ok(None) => break Err("the operation's channel closed".to_owned()),
                Err(_) => {
                    break Err(format!("no result from the agent within {timeout} s"));
                }
            }
        };
        self.ops.finish(&op);
        let now = OffsetDateTime::now_utc();
        row.finished_at = Some(now);
        let event = match outcome {
            Ok(r) if r.outcome == Outcome::Succeeded => {
                row.state = ImagesState::Staged;
                row.detail = r.detail;
                format!("images staged: {}", row.detail)
            }
            Ok(r) => {
                row.state = ImagesState::Failed;
                row.detail = format!("operation {op} {}: {}", r.outcome.word(), r.detail);
                format!("images: staging failed: {}", row.detail)
            }
            Err(reason) => {
                row.state = ImagesState::Failed;
                row.detail = format!("operation {op}: {reason}");
                format!("images: staging failed: {}", row.detail)
            }
        };
        self.store.save_node_images(id, &row, Some(&event), now)?;
        Ok(())
    }

    /// After `plan` completed: every staged node is asked to remove the other releases'
    /// archives, concurrently; each outcome becomes a plan event (best effort).
    pub(super) fn spawn_prune(self: &Arc<Self>, plan: &Plan) {
        let Ok(rows) = self.store.plan_images(plan.id) else {
            return;
        };
        let staged: Vec<String> = rows
            .into_iter()
            .filter(|r| r.state == ImagesState::Staged)
            .map(|r| r.node)
            .collect();
        if staged.is_empty() {
            return;
        }
        let (id, version) = (plan.id, plan.target_version.clone());
        for node in staged {
            let engine = Arc::clone(self);
            let version = version.clone();
            let span = tracing::info_span!("prune_images", plan = id, node = %node);
            let task = async move {
                let message = match engine.prune(id, &node, &version).await {
                    Ok(r) if r.outcome == Outcome::Succeeded => {
                        format!("images: previous releases' archives pruned: {}", r.detail)
                    }
                    Ok(r) => format!(
                        "images: prune {} (best effort): {}",
                        r.outcome.word(),
                        r.detail
                    ),
                    Err(why) => format!("images: prune not confirmed (best effort): {why}"),
                };
                let now = OffsetDateTime::now_utc();
                if let Err(e) = engine.store.plan_event(id, &node, &message, now) {
                    tracing::warn!(error = %e, "prune outcome not recorded");
                }
                engine.notify();
            };
            tokio::spawn(task.instrument(span));
        }
    }

    async fn prune(&self, id: i64, node: &str, version: &str) -> Result<OperationResult, String> {
        let op = prune_id(id, node);
        let run = RunOperation {
            operation_id: op.clone(),
            kind: Some(Operation::PruneImages {
                version: version.to_owned(),
            }),
        };
        let mut rx = self.ops.start(&self.registry, node, run);
        let deadline = tokio::time::Instant::now() + PRUNE_TIMEOUT;
        let result = loop {
            let wait = (tokio::time::Instant::now() + RESEND).min(deadline);
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Err(_) if wait < deadline => self.ops.resend_one(&self.registry, node, &op),
                Ok(Some(OpEvent::Progress(_))) => {}
                Ok(Some(OpEvent::Result(r))) => break Ok(r),
                Ok(None) => break Err("the operation's channel closed".to_owned()),
                Err(_) => {
                    break Err(format!(
                        "no result from the agent within {} s",
                        PRUNE_TIMEOUT.as_secs()
                    ));
                }
            }
        };
        self.ops.finish(&op);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_and_prune_ids_are_valid_and_never_an_upgrades() {
        for node in ["s1", "agent-1", &"n".repeat(253)] {
            for id in [staging_id(7, node, 2), prune_id(7, node)] {
                assert_eq!(rke2ops_common::ids::check_operation_id(&id), Ok(()), "{id}");
                assert_eq!(crate::engine::ops::parse_operation_id(&id, node), None);
            }
            assert_ne!(staging_id(7, node, 1), staging_id(7, node, 2));
            assert_ne!(staging_id(7, node, 1), operation_id(7, node, 1));
        }
        assert_eq!(staging_id(3, "s1", 1), "plan3-IMAGES.s1-1");
    }
}
