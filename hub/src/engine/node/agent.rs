//! The phases that talk to the node's agent: the operation (sent, re-sent until its result
//! arrives, its progress recorded) and, when the plan was aborted meanwhile, the wait for a
//! running operation's end before the node is released.

use std::time::Duration;

use time::OffsetDateTime;

use super::{drains, fail, save};
use crate::engine::Engine;
use crate::engine::messages::{Operation, Outcome, RunOperation};
use crate::engine::ops::{OpEvent, operation_id};
use crate::plan::model::{NodePhase, Plan, PlanKind, PlanNode, PlanPolicy};
use crate::store::StoreError;

/// How often an operation without a result is asked for again.
const RESEND: Duration = Duration::from_secs(10);

/// The plan was aborted while this node was in maintenance: a running operation finishes
/// (the agent keeps the node consistent), then the node is uncordoned if the plan did it.
pub(super) async fn abort(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, StoreError> {
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
            etcd_snapshot: plan.policy.etcd_snapshot,
        },
        PlanKind::Restart => Operation::Restart,
        PlanKind::Upgrade => Operation::Upgrade {
            version: plan.target_version.clone(),
            artifact_source: engine.artifact_source(&plan.policy, &plan.cluster),
            allow_rollback: plan.policy.allow_rollback,
        },
    };
    RunOperation {
        operation_id: node.operation_id.clone(),
        kind: Some(kind),
    }
}

/// The snapshot's path in the agent's `etcd-snapshot` step detail (`saved <path> (<n>
/// bytes)`). Pure.
fn snapshot_path<'a>(step: &str, detail: &'a str) -> Option<&'a str> {
    if step != "etcd-snapshot" {
        return None;
    }
    let (path, _) = detail.strip_prefix("saved ")?.rsplit_once(" (")?;
    (path.starts_with('/') && !path.contains(char::is_control)).then_some(path)
}

/// Records the snapshot a result names (`; etcd-snapshot: saved <path> (<n> bytes)`) when
/// its step's progress was lost (a hub restart between the step and the result); returns
/// `; restore: <command>` for the event then.
fn snapshot_from_result(node: &mut PlanNode, detail: &str) -> Option<String> {
    if !node.etcd_snapshot.is_empty() {
        return None;
    }
    let path = detail
        .rsplit_once("; etcd-snapshot: ")
        .and_then(|(_, step)| snapshot_path("etcd-snapshot", step))?;
    node.etcd_snapshot = path.to_owned();
    Some(format!(
        "; restore: {}",
        rke2ops_common::layout::etcd_restore_command(path)
    ))
}

/// Whether `node` should have reported an etcd snapshot by now and did not: servers of
/// upgrades, and of rotations that asked for one. Pure.
fn snapshot_owed(kind: PlanKind, policy: &PlanPolicy, node: &PlanNode) -> bool {
    let asked = match kind {
        PlanKind::Upgrade => true,
        PlanKind::Rotate => policy.etcd_snapshot,
        PlanKind::Restart => false,
    };
    asked && node.role == crate::plan::decide::Role::Server && node.etcd_snapshot.is_empty()
}

/// The journal line that says why the unit failed: RKE2's last fatal line, as systemd's own
/// "Failed to start ..." comes after it and says nothing; else the last line (RKE2 logs
/// harmless errors while it starts, so an error line is no better than systemd's). Pure.
fn telling_line(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .rev()
        .find(|l| l.contains("level=fatal"))
        .or_else(|| lines.last())
        .map(String::as_str)
}

pub(super) async fn operate(
    engine: &Engine,
    plan: &Plan,
    mut node: PlanNode,
) -> Result<Option<PlanNode>, StoreError> {
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
                let mut event = ended.then(|| node.detail.clone());
                if p.phase == crate::engine::messages::StepPhase::Succeeded
                    && let Some(path) = snapshot_path(&p.step, &p.detail)
                {
                    node.etcd_snapshot = path.to_owned();
                    event = Some(format!(
                        "etcd snapshot saved before the {}: {path}; restore: {}",
                        match plan.kind {
                            PlanKind::Rotate => "rotation",
                            PlanKind::Restart => "restart",
                            PlanKind::Upgrade => "upgrade",
                        },
                        rke2ops_common::layout::etcd_restore_command(path)
                    ));
                }
                save(engine, id, &node, event.as_deref())?;
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
            let mut event = format!("operation {word}: {}", result.detail);
            if let Some(restore) = snapshot_from_result(&mut node, &result.detail) {
                event.push_str(&restore);
            }
            if outcome == Outcome::Succeeded && snapshot_owed(plan.kind, &plan.policy, &node) {
                // An agent older than the hub ignores the request: say so, the operator
                // counted on a way back.
                event.push_str("; no etcd snapshot was reported although the plan asked for one");
            }
            node.phase = node.phase.on_success(drains(engine, plan));
            save(engine, id, &node, Some(&event))?;
            Ok(None)
        }
        _ => {
            let mut reason = format!("operation {op} {}: {}", outcome.word(), result.detail);
            // A failure after the snapshot is when its restore command is needed most.
            if let Some(restore) = snapshot_from_result(&mut node, &result.detail) {
                reason.push_str(&restore);
            }
            if let Some(line) = telling_line(&result.unit_journal) {
                reason.push_str(&format!(" (unit journal: {line})"));
            }
            fail(engine, id, node, reason).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{snapshot_from_result, snapshot_owed, snapshot_path, telling_line};
    use crate::plan::decide::Role;
    use crate::plan::model::{PlanKind, PlanNode, PlanPolicy};

    #[test]
    fn a_snapshot_is_owed_by_servers_of_upgrades_and_of_rotations_that_asked() {
        let mut policy = PlanPolicy::default();
        let mut server = PlanNode::pending("s1", 0, Role::Server, "");
        let agent = PlanNode::pending("a1", 1, Role::Agent, "");
        assert!(!snapshot_owed(PlanKind::Rotate, &policy, &server));
        assert!(snapshot_owed(PlanKind::Upgrade, &policy, &server));
        assert!(!snapshot_owed(PlanKind::Upgrade, &policy, &agent));
        policy.etcd_snapshot = true;
        assert!(snapshot_owed(PlanKind::Rotate, &policy, &server));
        assert!(!snapshot_owed(PlanKind::Rotate, &policy, &agent));
        assert!(!snapshot_owed(PlanKind::Restart, &policy, &server));
        server.etcd_snapshot = "/var/lib/rancher/rke2/server/db/snapshots/x".into();
        assert!(!snapshot_owed(PlanKind::Rotate, &policy, &server));
    }

    #[test]
    fn a_results_snapshot_is_recorded_when_its_progress_was_lost() {
        let mut node = PlanNode::pending("s1", 0, Role::Server, "");
        let path = "/var/lib/rancher/rke2/server/db/snapshots/rke2ops-plan1-s1-1-s1-17";
        let detail = format!(
            "verify-served: apiserver serves an old certificate; etcd-snapshot: saved {path} (4096 bytes)"
        );
        let restore = snapshot_from_result(&mut node, &detail).expect("recorded");
        assert_eq!(node.etcd_snapshot, path);
        assert!(
            restore.contains(&format!("--cluster-reset-restore-path={path}")),
            "{restore}"
        );
        // Already known from the step's progress: nothing again.
        assert_eq!(snapshot_from_result(&mut node, &detail), None);
        let mut other = PlanNode::pending("s2", 1, Role::Server, "");
        assert_eq!(
            snapshot_from_result(&mut other, "rotate succeeded: ok"),
            None
        );
        assert!(other.etcd_snapshot.is_empty());
    }

    #[test]
    fn the_failures_own_line_is_picked_over_systemds() {
        let lines: Vec<String> = [
            r#"time="t" level=error msg="retrying""#,
            r#"time="t" level=fatal msg="failed to get runtime image x""#,
            "rke2-server.service: Main process exited, code=exited, status=1/FAILURE",
            "Failed to start rke2-server.service - Rancher Kubernetes Engine v2 (server).",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            telling_line(&lines),
            Some(r#"time="t" level=fatal msg="failed to get runtime image x""#)
        );
        assert_eq!(telling_line(&lines[..1]), Some(lines[0].as_str()));
        // No fatal line: the last one, not an earlier error.
        let timeout = [
            lines[0].clone(),
            "rke2-server.service: start operation timed out".into(),
        ];
        assert_eq!(telling_line(&timeout), Some(timeout[1].as_str()));
        assert_eq!(telling_line(&lines[2..]), Some(lines[3].as_str()));
        assert_eq!(telling_line(&[]), None);
    }

    #[test]
    fn the_snapshot_path_comes_from_the_agents_etcd_snapshot_step_only() {
        let detail =
            "saved /var/lib/rancher/rke2/server/db/snapshots/rke2ops-plan1-s1-1-s1-17 (4096 bytes)";
        assert_eq!(
            snapshot_path("etcd-snapshot", detail),
            Some("/var/lib/rancher/rke2/server/db/snapshots/rke2ops-plan1-s1-1-s1-17")
        );
        assert_eq!(snapshot_path("fetch-artifacts", detail), None);
        assert_eq!(
            snapshot_path("etcd-snapshot", "saved relative (1 bytes)"),
            None
        );
        assert_eq!(
            snapshot_path("etcd-snapshot", "saved /x\n/y (1 bytes)"),
            None
        );
    }
}
