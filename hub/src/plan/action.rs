//! Operator actions on a plan (`pause`, `resume`, `skip`, `abort`) and the pure rule of which
//! ones a plan's state allows. The engine and `--dry-run` both ask [`check`], so a dry run
//! refuses exactly what the real action would refuse.

use std::fmt;

use super::model::{NodePhase, PlanNode, PlanState};

/// An operator's action on a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No new node starts.
    Pause,
    /// Continue, retrying a failed node.
    Resume,
    /// Pass over a node.
    Skip(String),
    /// End the plan, uncordoning what it cordoned.
    Abort,
}

impl Action {
    /// The verb used in events and the audit log.
    #[must_use]
    pub fn word(&self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Skip(_) => "skip",
            Self::Abort => "abort",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip(node) => write!(f, "skip node {node}"),
            other => f.write_str(other.word()),
        }
    }
}

/// Whether plan `id`, in `state` with `nodes`, allows `action`; the error says why not.
///
/// # Errors
/// A sentence naming the plan (and node) and the reason: a final plan never acts again, a
/// paused plan cannot be paused, a running one has nothing to resume, only pending or failed
/// nodes can be skipped, and the node must belong to the plan.
pub fn check(id: i64, state: PlanState, nodes: &[PlanNode], action: &Action) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("plan {id} is {state}: {why}"));
    if state.is_final() {
        return refuse("it will not act again");
    }
    match action {
        Action::Pause if state == PlanState::Paused => refuse("already paused"),
        Action::Resume if state == PlanState::Running => refuse("nothing to resume"),
        Action::Skip(name) => {
            let node = nodes
                .iter()
                .find(|n| &n.node == name)
                .ok_or_else(|| format!("plan {id} has no node {name:?}"))?;
            if matches!(node.phase, NodePhase::Pending | NodePhase::Failed) {
                Ok(())
            } else {
                Err(format!(
                    "node {name} is {}: only pending or failed nodes can be skipped",
                    node.phase
                ))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::decide::Role;

    fn node(name: &str, phase: NodePhase) -> PlanNode {
        let mut n = PlanNode::pending(name, 0, Role::Agent, "");
        n.phase = phase;
        n
    }

    #[test]
    fn final_plans_refuse_everything() {
        for state in [PlanState::Completed, PlanState::Aborted] {
            for action in [Action::Pause, Action::Resume, Action::Abort] {
                let err = check(7, state, &[], &action).expect_err("refused");
                assert!(
                    err.contains("plan 7 is") && err.contains("will not act again"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn pause_and_resume_follow_the_state() {
        assert!(check(1, PlanState::Running, &[], &Action::Pause).is_ok());
        assert!(check(1, PlanState::Halted, &[], &Action::Pause).is_ok());
        assert!(
            check(1, PlanState::Paused, &[], &Action::Pause)
                .expect_err("refused")
                .contains("already paused")
        );
        assert!(
            check(1, PlanState::Running, &[], &Action::Resume)
                .expect_err("refused")
                .contains("nothing to resume")
        );
        assert!(check(1, PlanState::Paused, &[], &Action::Resume).is_ok());
        assert!(check(1, PlanState::Halted, &[], &Action::Resume).is_ok());
        assert!(check(1, PlanState::Paused, &[], &Action::Abort).is_ok());
    }

    #[test]
    fn skip_needs_a_pending_or_failed_node_of_the_plan() {
        let nodes = [
            node("a", NodePhase::Pending),
            node("b", NodePhase::Failed),
            node("c", NodePhase::Operate),
        ];
        assert!(check(2, PlanState::Halted, &nodes, &Action::Skip("a".into())).is_ok());
        assert!(check(2, PlanState::Halted, &nodes, &Action::Skip("b".into())).is_ok());
        let busy =
            check(2, PlanState::Running, &nodes, &Action::Skip("c".into())).expect_err("refused");
        assert!(
            busy.contains("node c is") && busy.contains("pending or failed"),
            "{busy}"
        );
        let unknown =
            check(2, PlanState::Running, &nodes, &Action::Skip("zz".into())).expect_err("refused");
        assert_eq!(unknown, "plan 2 has no node \"zz\"");
    }

    #[test]
    fn display_names_the_node() {
        assert_eq!(Action::Skip("w1".into()).to_string(), "skip node w1");
        assert_eq!(Action::Abort.to_string(), "abort");
    }
}
