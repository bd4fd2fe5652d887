//! Air-gap image staging as a phase of an upgrade plan (`--stage-images`), the pure part.
//!
//! Why a phase of its own: a rolling upgrade whose first server upgrades RKE2's bundled
//! charts breaks every node that lacks the new release's images, and an air-gapped node can
//! only get them from its `agent/images` folder. So before the first node of the plan starts
//! its upgrade, every node the plan upgrades gets the release's image archives staged (the
//! agent's `stage-images` operation: fetched, checksum-verified, placed; the unit untouched).
//! Staging is not maintenance: no cordon, no drain, no health gate, no window; it runs on up
//! to [`MAX_STAGING`] nodes at once. A failed staging halts the plan before any node is
//! upgraded; `resume` retries the failed nodes (with a new operation id), `skip` passes the
//! node (it is then neither staged nor upgraded).
//!
//! Which nodes: those the plan upgrades ([`stages`]). A node already at the target, or newer
//! (skipped when the plan was made), is not staged: it runs a release whose images it has,
//! and staging an older release's archives there would have the prune after the plan
//! remove its current ones. After the plan completes, every staged node is asked to prune
//! the other releases' archives (best effort; the outcome is recorded as plan events).

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use super::model::{NodePhase, PlanKind, PlanNode, PlanPolicy};

/// Nodes staging at once: staging reads the mirror and writes each node's disk, and needs
/// no health gate, so more than one, but a mirror serving five 1-GB downloads is enough.
pub const MAX_STAGING: usize = 5;

/// Where one node's staging is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImagesState {
    /// Not started (or to be retried after a resume).
    Pending,
    /// The operation was sent to the agent.
    Staging,
    /// The archives are in place.
    Staged,
    /// The staging failed (halts the plan).
    Failed,
}

impl ImagesState {
    /// The word used in the store, the CLI and JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Staging => "staging",
            Self::Staged => "staged",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for ImagesState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Staging, Self::Staged, Self::Failed]
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown images state {s:?}"))
    }
}

impl fmt::Display for ImagesState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One node's staging, as stored (a node without a row has not started: pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImages {
    /// The node.
    pub node: String,
    /// Where it is.
    pub state: ImagesState,
    /// Attempts so far (each has its own operation id; a resume retries with the next).
    pub attempt: u32,
    /// The agent's last step result, or why it failed.
    pub detail: String,
    /// When the operation was sent.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

impl NodeImages {
    /// A node whose staging has not started.
    #[must_use]
    pub fn pending(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            state: ImagesState::Pending,
            attempt: 0,
            detail: String::new(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// Pure: whether the plan stages images on `node`: an upgrade plan with `stage_images`, and a
/// node it upgrades (not skipped). Also what `upgrade --dry-run` shows per node.
#[must_use]
pub fn stages(kind: PlanKind, policy: &PlanPolicy, node: &PlanNode) -> bool {
    kind == PlanKind::Upgrade && policy.stage_images && node.phase != NodePhase::Skipped
}

/// Pure: each staged node's staging, in plan order (pending where no row exists yet).
#[must_use]
pub fn of_nodes(
    kind: PlanKind,
    policy: &PlanPolicy,
    nodes: &[PlanNode],
    rows: &[NodeImages],
) -> Vec<NodeImages> {
    nodes
        .iter()
        .filter(|n| stages(kind, policy, n))
        .map(|n| {
            rows.iter()
                .find(|r| r.node == n.node)
                .cloned()
                .unwrap_or_else(|| NodeImages::pending(&n.node))
        })
        .collect()
}

/// What the images phase asks of the engine on this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagesNext {
    /// Nothing (more) to stage: the plan's nodes may start.
    Ready,
    /// Send these nodes their staging (in plan order, within [`MAX_STAGING`]).
    Start(Vec<String>),
    /// Stagings are in flight; nothing to start. The plan's reason.
    Wait(String),
    /// A staging failed: halt before any node is upgraded. The reason, naming the node.
    Halt(String),
}

/// Pure: the images phase's next move, given the plan and its nodes' stagings.
#[must_use]
pub fn next(
    kind: PlanKind,
    policy: &PlanPolicy,
    nodes: &[PlanNode],
    rows: &[NodeImages],
    limit: usize,
) -> ImagesNext {
    let all = of_nodes(kind, policy, nodes, rows);
    if let Some(failed) = all.iter().find(|r| r.state == ImagesState::Failed) {
        return ImagesNext::Halt(format!(
            "images: staging failed on {}: {}",
            failed.node, failed.detail
        ));
    }
    if all.iter().all(|r| r.state == ImagesState::Staged) {
        return ImagesNext::Ready;
    }
    let in_flight = all
        .iter()
        .filter(|r| r.state == ImagesState::Staging)
        .count();
    let start: Vec<String> = all
        .iter()
        .filter(|r| r.state == ImagesState::Pending)
        .take(limit.saturating_sub(in_flight))
        .map(|r| r.node.clone())
        .collect();
    if start.is_empty() {
        ImagesNext::Wait(format!(
            "staging images before any node is upgraded: {}",
            summary(&all)
        ))
    } else {
        ImagesNext::Start(start)
    }
}

/// Pure: the phase in words for `plan show` (`staged 5/5`, `staged 2/5, 3 staging`,
/// `staged 4/5, failed on agent-2`); empty when nothing is staged.
#[must_use]
pub fn summary(all: &[NodeImages]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let count = |s: ImagesState| all.iter().filter(|r| r.state == s).count();
    let mut text = format!("staged {}/{}", count(ImagesState::Staged), all.len());
    let staging = count(ImagesState::Staging);
    if staging > 0 {
        text.push_str(&format!(", {staging} staging"));
    }
    let failed: Vec<&str> = all
        .iter()
        .filter(|r| r.state == ImagesState::Failed)
        .map(|r| r.node.as_str())
        .collect();
    if !failed.is_empty() {
        text.push_str(&format!(", failed on {}", failed.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::decide::Role;

    fn plan_nodes() -> Vec<PlanNode> {
        let mut nodes: Vec<PlanNode> = ["s1", "s2", "s3", "a1", "a2", "a3", "a4"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let role = if n.starts_with('s') {
                    Role::Server
                } else {
                    Role::Agent
                };
                PlanNode::pending(n, u32::try_from(i).unwrap_or(0), role, "v1.33.5+rke2r1")
            })
            .collect();
        nodes[6].phase = NodePhase::Skipped;
        nodes
    }

    fn policy(stage_images: bool) -> PlanPolicy {
        PlanPolicy {
            stage_images,
            ..PlanPolicy::default()
        }
    }

    fn row(node: &str, state: ImagesState) -> NodeImages {
        NodeImages {
            state,
            attempt: 1,
            detail: "checksum mismatch".into(),
            ..NodeImages::pending(node)
        }
    }

    #[test]
    fn only_upgrade_plans_that_ask_stage_and_only_on_nodes_they_upgrade() {
        let nodes = plan_nodes();
        assert!(stages(PlanKind::Upgrade, &policy(true), &nodes[0]));
        assert!(!stages(PlanKind::Upgrade, &policy(false), &nodes[0]));
        assert!(!stages(PlanKind::Rotate, &policy(true), &nodes[0]));
        assert!(
            !stages(PlanKind::Upgrade, &policy(true), &nodes[6]),
            "skipped"
        );
        assert_eq!(
            next(PlanKind::Upgrade, &policy(false), &nodes, &[], 5),
            ImagesNext::Ready
        );
    }

    #[test]
    fn staging_starts_in_plan_order_at_most_the_limit_at_once() {
        let nodes = plan_nodes();
        let p = policy(true);
        assert_eq!(
            next(PlanKind::Upgrade, &p, &nodes, &[], 5),
            ImagesNext::Start(["s1", "s2", "s3", "a1", "a2"].map(str::to_owned).to_vec())
        );
        let rows = [
            row("s1", ImagesState::Staged),
            row("s2", ImagesState::Staging),
            row("s3", ImagesState::Staging),
            row("a1", ImagesState::Staging),
            row("a2", ImagesState::Staging),
        ];
        assert_eq!(
            next(PlanKind::Upgrade, &p, &nodes, &rows, 5),
            ImagesNext::Start(vec!["a3".to_owned()])
        );
        let mut rows = rows.to_vec();
        rows.push(row("a3", ImagesState::Staging));
        assert_eq!(
            next(PlanKind::Upgrade, &p, &nodes, &rows, 5),
            ImagesNext::Wait(
                "staging images before any node is upgraded: staged 1/6, 5 staging".to_owned()
            )
        );
        for r in &mut rows {
            r.state = ImagesState::Staged;
        }
        assert_eq!(
            next(PlanKind::Upgrade, &p, &nodes, &rows, 5),
            ImagesNext::Ready
        );
        assert_eq!(
            summary(&of_nodes(PlanKind::Upgrade, &p, &nodes, &rows)),
            "staged 6/6"
        );
    }

    #[test]
    fn a_failed_staging_halts_naming_the_node_and_why() {
        let nodes = plan_nodes();
        let rows = [
            row("s1", ImagesState::Staged),
            row("a2", ImagesState::Failed),
        ];
        assert_eq!(
            next(PlanKind::Upgrade, &policy(true), &nodes, &rows, 5),
            ImagesNext::Halt("images: staging failed on a2: checksum mismatch".to_owned())
        );
        assert_eq!(
            summary(&of_nodes(PlanKind::Upgrade, &policy(true), &nodes, &rows)),
            "staged 1/6, failed on a2"
        );
        // Skipped by the operator: no longer staged, the plan goes on.
        let mut nodes = nodes;
        nodes[4].phase = NodePhase::Skipped;
        assert!(matches!(
            next(PlanKind::Upgrade, &policy(true), &nodes, &rows, 5),
            ImagesNext::Start(_)
        ));
    }

    #[test]
    fn state_words_round_trip() {
        for s in [
            ImagesState::Pending,
            ImagesState::Staging,
            ImagesState::Staged,
            ImagesState::Failed,
        ] {
            assert_eq!(s.name().parse::<ImagesState>(), Ok(s));
        }
        assert!("half".parse::<ImagesState>().is_err());
    }
}
