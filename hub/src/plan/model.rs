//! A plan's durable shape: what it does (kind, target, policy), where it is (state) and where
//! each of its nodes is (phase), with the pure transitions between a node's phases
//! ([`NodePhase::on_success`] and its siblings). The store persists exactly these types; the
//! engine performs each phase's side effect, asks the phase for the next one, and writes it
//! back before the next side effect.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::decide::{Phase, Role};

/// What a plan does to each node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanKind {
    /// `rke2 certificate rotate`, restart, verify.
    Rotate,
    /// Restart so RKE2 renews leaves inside its renewal window.
    Restart,
    /// Install another RKE2 release.
    Upgrade,
}

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanState {
    /// Starting nodes as the gates allow.
    Running,
    /// The operator paused it: no new node starts.
    Paused,
    /// A node failed: nothing starts until resume, skip or abort.
    Halted,
    /// Every node done or skipped.
    Completed,
    /// The operator ended it.
    Aborted,
}

impl PlanState {
    /// Completed or aborted: the plan will never act again.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Aborted)
    }
}

/// Where one node of a plan is. The in-progress phases run in this order; each is written
/// before its side effect, so a restarted hub re-enters the phase it was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodePhase {
    /// Not started.
    Pending,
    /// Cordoning (`spec.unschedulable`).
    Cordon,
    /// Evicting its pods.
    Drain,
    /// The operation runs on the node's agent.
    Operate,
    /// Waiting for the node to be healthy again (agent, Node Ready, version).
    Verify,
    /// Uncordoning, if the plan cordoned it.
    Uncordon,
    /// The settle delay.
    Settle,
    /// Finished and healthy.
    Done,
    /// Nothing to do, or passed over by `skip`, or left when the plan was aborted.
    Skipped,
    /// Stopped with a reason; halts the plan.
    Failed,
}

/// Every phase with its name, for parsing.
const PHASES: [(NodePhase, &str); 10] = [
    (NodePhase::Pending, "pending"),
    (NodePhase::Cordon, "cordon"),
    (NodePhase::Drain, "drain"),
    (NodePhase::Operate, "operate"),
    (NodePhase::Verify, "verify"),
    (NodePhase::Uncordon, "uncordon"),
    (NodePhase::Settle, "settle"),
    (NodePhase::Done, "done"),
    (NodePhase::Skipped, "skipped"),
    (NodePhase::Failed, "failed"),
];

impl NodePhase {
    /// The phase's word (store, CLI, JSON).
    #[must_use]
    pub fn name(self) -> &'static str {
        PHASES
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("pending", |(_, n)| n)
    }

    /// Between pending and done: the node is in maintenance.
    #[must_use]
    pub fn in_progress(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Done | Self::Skipped | Self::Failed
        )
    }

    /// Done, skipped or failed: no transition but the operator's (resume, skip) leaves it.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Skipped | Self::Failed)
    }

    /// The phase a node enters when the plan starts its maintenance: a pending node is
    /// cordoned first; any other phase is not startable and stays.
    #[must_use]
    pub fn on_start(self) -> Self {
        match self {
            Self::Pending => Self::Cordon,
            other => other,
        }
    }

    /// The phase after this one's work succeeded (or had nothing to do). `drains`: the
    /// plan cordons and drains (its policy says so and the hub has Kubernetes access);
    /// without it a node goes from cordon straight to its operation. Pending and the
    /// terminal phases stay (they have no work of their own).
    #[must_use]
    pub fn on_success(self, drains: bool) -> Self {
        match self {
            Self::Cordon if drains => Self::Drain,
            Self::Cordon | Self::Drain => Self::Operate,
            Self::Operate => Self::Verify,
            Self::Verify => Self::Uncordon,
            Self::Uncordon => Self::Settle,
            Self::Settle => Self::Done,
            other @ (Self::Pending | Self::Done | Self::Skipped | Self::Failed) => other,
        }
    }

    /// The phase after this one's work failed: a node in maintenance fails (which halts its
    /// plan); pending and terminal phases have no work to fail and stay.
    #[must_use]
    pub fn on_failure(self) -> Self {
        self.if_in_progress(Self::Failed)
    }

    /// The phase after the plan was aborted while the node was in maintenance (its running
    /// operation ended and it was released): skipped. Other phases stay.
    #[must_use]
    pub fn on_abort(self) -> Self {
        self.if_in_progress(Self::Skipped)
    }

    /// `end` for a node in maintenance; any other phase stays.
    fn if_in_progress(self, end: Self) -> Self {
        if self.in_progress() { end } else { self }
    }

    /// The phase after the operator resumed the plan: a failed node is retried from the
    /// start; every other phase stays.
    #[must_use]
    pub fn on_resume(self) -> Self {
        match self {
            Self::Failed => Self::Pending,
            other => other,
        }
    }

    /// The phase after the operator skipped the node: only a pending or failed node may be
    /// skipped ([`crate::plan::action::check`]); it is then skipped. Other phases stay.
    #[must_use]
    pub fn on_skip(self) -> Self {
        match self {
            Self::Pending | Self::Failed => Self::Skipped,
            other => other,
        }
    }
}

impl FromStr for NodePhase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PHASES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("unknown node phase {s:?}"))
    }
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! kebab_words {
    ($ty:ty, $($variant:ident => $word:literal),+ $(,)?) => {
        impl $ty {
            /// The word used in the store, the CLI and JSON.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($ty))),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kebab_words!(PlanKind, Rotate => "rotate", Restart => "restart", Upgrade => "upgrade");
kebab_words!(PlanState, Running => "running", Paused => "paused", Halted => "halted",
    Completed => "completed", Aborted => "aborted");

/// How a plan treats each node. Stored as JSON with the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanPolicy {
    /// Workers in maintenance at once (at least 1).
    pub concurrency: u32,
    /// Cordon and drain each node before its operation.
    pub drain: bool,
    /// Give up draining after this long (PDB refusals are retried meanwhile).
    pub drain_timeout_secs: u64,
    /// Grace period for evicted pods; `None` = each pod's own.
    pub grace_period_secs: Option<i64>,
    /// Wait after a node is healthy again before the next may start.
    pub settle_secs: u64,
    /// When nodes may start (`None` = any time), e.g. `Sat,Sun 22:00-04:00 Europe/Berlin`.
    pub window: Option<String>,
    /// Upgrade: a minor version may be skipped.
    pub allow_minor_skip: bool,
    /// Upgrade: restore the previous binary when the new one does not become ready.
    pub allow_rollback: bool,
    /// Rotate: only these services (empty = all).
    pub services: Vec<String>,
    /// Upgrade: artifact URL prefix or air-gap folder (empty = each agent's own).
    pub artifact_source: String,
    /// How long a node may take to be healthy again after its operation.
    pub ready_timeout_secs: u64,
    /// How long the agent may take to report the operation's result.
    pub operation_timeout_secs: u64,
    /// Doctor codes whose blockers neither refuse the plan nor hold a node (`--accept`).
    pub accept: Vec<String>,
    /// Upgrade: stage the release's air-gap image archives on every node it upgrades before
    /// the first one starts, and prune the previous release's after it completes
    /// (`--stage-images`; [`super::images`]).
    pub stage_images: bool,
    /// Application probes checked for the whole plan; no node starts while one fails
    /// (`--probe`, hub.toml `probes`; [`crate::probe`]).
    pub probes: Vec<crate::probe::ProbeSpec>,
    /// A probe down this long halts the plan.
    pub probe_halt_secs: u64,
    /// Rotate: each server takes an etcd snapshot before its unit stops (`--etcd-snapshot`;
    /// upgrades always take one on servers).
    pub etcd_snapshot: bool,
}

/// How long a probe may be down before its plan halts, when the plan does not say.
pub const DEFAULT_PROBE_HALT_SECS: u64 = 120;

impl Default for PlanPolicy {
    fn default() -> Self {
        Self {
            concurrency: 1,
            drain: true,
            drain_timeout_secs: 300,
            grace_period_secs: None,
            settle_secs: 0,
            window: None,
            allow_minor_skip: false,
            allow_rollback: true,
            services: Vec::new(),
            artifact_source: String::new(),
            ready_timeout_secs: 600,
            operation_timeout_secs: 1800,
            accept: Vec::new(),
            stage_images: false,
            probes: Vec::new(),
            probe_halt_secs: DEFAULT_PROBE_HALT_SECS,
            etcd_snapshot: false,
        }
    }
}

impl PlanPolicy {
    /// The policy in words, for `plan show`.
    #[must_use]
    pub fn describe(&self, kind: PlanKind) -> String {
        let mut parts = vec![format!(
            "servers one at a time, then workers {} at a time",
            self.concurrency.max(1)
        )];
        if self.drain {
            let grace = self
                .grace_period_secs
                .map_or("each pod's own grace period".to_owned(), |g| {
                    format!("grace period {g} s")
                });
            parts.push(format!(
                "cordon + drain (timeout {} s, {grace})",
                self.drain_timeout_secs
            ));
        } else {
            parts.push("no cordon/drain".to_owned());
        }
        parts.push(format!("settle {} s", self.settle_secs));
        parts.push(format!("ready timeout {} s", self.ready_timeout_secs));
        match &self.window {
            Some(w) => parts.push(format!("window {w}")),
            None => parts.push("any time".to_owned()),
        }
        match kind {
            PlanKind::Upgrade => {
                parts.push(if self.allow_rollback {
                    "rollback on failure".to_owned()
                } else {
                    "no rollback".to_owned()
                });
                if self.allow_minor_skip {
                    parts.push("minor skips allowed".to_owned());
                }
                if !self.artifact_source.is_empty() {
                    parts.push(format!("artifacts from {}", self.artifact_source));
                }
                if self.stage_images {
                    parts.push(
                        "air-gap images staged on every node first, previous ones pruned after"
                            .to_owned(),
                    );
                }
            }
            PlanKind::Rotate => {
                if !self.services.is_empty() {
                    parts.push(format!("services {}", self.services.join(",")));
                }
                if self.etcd_snapshot {
                    parts.push("etcd snapshot on each server before it stops".to_owned());
                }
            }
            _ => {}
        }
        if !self.accept.is_empty() {
            parts.push(format!(
                "doctor blockers accepted: {}",
                self.accept.join(",")
            ));
        }
        if !self.probes.is_empty() {
            parts.push(format!(
                "probes {} (no node starts while one fails; halts after {} s down)",
                self.probes
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.target.describe()))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.probe_halt_secs
            ));
        }
        parts.join(", ")
    }
}

/// A plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sequential id.
    pub id: i64,
    /// What it does.
    pub kind: PlanKind,
    /// Upgrade target (fixed at creation); empty otherwise.
    pub target_version: String,
    /// The channel the target was resolved from, if any.
    pub channel: String,
    /// How.
    pub policy: PlanPolicy,
    /// Where it is.
    pub state: PlanState,
    /// Why it waits or halted, or how it ended.
    pub reason: String,
    /// `operator` or `auto-maintenance`.
    pub origin: String,
    /// Who created it (audit actor).
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// When it completed or was aborted.
    pub finished_at: Option<OffsetDateTime>,
    /// When an operator last resumed it: a probe down since before then is given the whole
    /// `probe_halt_secs` again, so `resume` re-checks instead of halting on an old outage.
    pub resumed_at: Option<OffsetDateTime>,
    /// The cluster whose nodes it holds; its gates read only that cluster.
    pub cluster: String,
    /// The rollout it is a wave plan of, if any.
    pub rollout: Option<i64>,
}

/// One node of a plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanNode {
    /// Node name.
    pub node: String,
    /// Order in the plan (servers first).
    pub position: u32,
    /// Its role.
    pub role: Role,
    /// Where it is.
    pub phase: NodePhase,
    /// The plan cordoned it (and so must uncordon it).
    pub cordoned: bool,
    /// Attempts so far (resume retries with the next).
    pub attempt: u32,
    /// The operation sent to its agent in this attempt.
    pub operation_id: String,
    /// The agent's current step.
    pub step: String,
    /// Why skipped or failed; the last result otherwise.
    pub detail: String,
    /// RKE2 version when the plan started with it.
    pub from_version: String,
    /// When its maintenance began.
    pub started_at: Option<OffsetDateTime>,
    /// When it entered its phase.
    pub phase_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
    /// End of its settle delay.
    pub settle_until: Option<OffsetDateTime>,
    /// Upgrades of servers: the etcd snapshot the agent took before changing the node (its
    /// path on that server; empty when none).
    pub etcd_snapshot: String,
}

impl PlanNode {
    /// A pending node.
    #[must_use]
    pub fn pending(node: &str, position: u32, role: Role, from_version: &str) -> Self {
        Self {
            node: node.to_owned(),
            position,
            role,
            phase: NodePhase::Pending,
            cordoned: false,
            attempt: 0,
            operation_id: String::new(),
            step: String::new(),
            detail: String::new(),
            from_version: from_version.to_owned(),
            started_at: None,
            phase_at: None,
            finished_at: None,
            settle_until: None,
            etcd_snapshot: String::new(),
        }
    }

    /// The decision function's view of it.
    #[must_use]
    pub fn decision_view(&self) -> super::decide::PlanNode {
        super::decide::PlanNode {
            name: self.node.clone(),
            role: self.role,
            phase: match self.phase {
                NodePhase::Pending => Phase::Pending,
                NodePhase::Done => Phase::Done,
                NodePhase::Skipped => Phase::Skipped,
                NodePhase::Failed => Phase::Failed(self.detail.clone()),
                _ => Phase::InProgress,
            },
        }
    }
}

/// One line of a plan's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEvent {
    /// Row id (increasing).
    pub id: i64,
    /// When.
    pub at: OffsetDateTime,
    /// The node it is about (empty = the plan).
    pub node: String,
    /// What happened.
    pub message: String,
}

/// The word for a role in the store.
#[must_use]
pub fn role_word(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

/// A role from its stored word.
///
/// # Errors
/// The word when it is neither `server` nor `agent`.
pub fn role_of(word: &str) -> Result<Role, String> {
    match word {
        "server" => Ok(Role::Server),
        "agent" => Ok(Role::Agent),
        other => Err(format!("unknown role {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for (phase, name) in PHASES {
            assert_eq!(phase.name(), name);
            assert_eq!(name.parse::<NodePhase>(), Ok(phase));
        }
        for kind in [PlanKind::Rotate, PlanKind::Restart, PlanKind::Upgrade] {
            assert_eq!(kind.name().parse::<PlanKind>(), Ok(kind));
        }
        assert!("sideways".parse::<PlanState>().is_err());
    }

    #[test]
    fn in_progress_phases_map_to_in_progress() {
        let mut node = PlanNode::pending("n", 0, Role::Agent, "v1.33.5+rke2r1");
        for phase in [
            NodePhase::Cordon,
            NodePhase::Drain,
            NodePhase::Operate,
            NodePhase::Verify,
            NodePhase::Uncordon,
            NodePhase::Settle,
        ] {
            node.phase = phase;
            assert!(phase.in_progress());
            assert_eq!(node.decision_view().phase, Phase::InProgress);
        }
        node.phase = NodePhase::Failed;
        node.detail = "boom".into();
        assert_eq!(node.decision_view().phase, Phase::Failed("boom".into()));
    }

    #[test]
    fn policy_json_rejects_unknown_keys_and_fills_defaults() {
        let p: PlanPolicy = serde_json::from_str(r#"{"concurrency":2}"#).expect("valid");
        assert_eq!(p.concurrency, 2);
        assert!(p.drain && p.allow_rollback);
        assert!(serde_json::from_str::<PlanPolicy>(r#"{"bogus":1}"#).is_err());
    }

    const ALL: [NodePhase; 10] = [
        NodePhase::Pending,
        NodePhase::Cordon,
        NodePhase::Drain,
        NodePhase::Operate,
        NodePhase::Verify,
        NodePhase::Uncordon,
        NodePhase::Settle,
        NodePhase::Done,
        NodePhase::Skipped,
        NodePhase::Failed,
    ];

    /// The phase after `phase` succeeded, for both kinds of plan.
    fn succeed(phase: NodePhase) -> (NodePhase, NodePhase) {
        (phase.on_success(true), phase.on_success(false))
    }

    #[test]
    fn a_pending_node_starts_by_cordoning_and_nothing_else_starts() {
        assert_eq!(NodePhase::Pending.on_start(), NodePhase::Cordon);
        for phase in ALL.into_iter().filter(|p| *p != NodePhase::Pending) {
            assert_eq!(phase.on_start(), phase, "{phase}");
        }
    }

    #[test]
    fn a_draining_plan_walks_cordon_drain_operate_verify_uncordon_settle_done() {
        let mut walk = vec![NodePhase::Pending.on_start()];
        while let Some(&last) = walk.last()
            && !last.is_terminal()
        {
            walk.push(last.on_success(true));
        }
        assert_eq!(
            walk,
            [
                NodePhase::Cordon,
                NodePhase::Drain,
                NodePhase::Operate,
                NodePhase::Verify,
                NodePhase::Uncordon,
                NodePhase::Settle,
                NodePhase::Done,
            ]
        );
    }

    #[test]
    fn without_drain_a_node_goes_from_cordon_straight_to_its_operation() {
        assert_eq!(NodePhase::Cordon.on_success(false), NodePhase::Operate);
        // A node re-entering drain after a restart (the cluster went away) still operates.
        assert_eq!(NodePhase::Drain.on_success(false), NodePhase::Operate);
        assert_eq!(NodePhase::Drain.on_success(true), NodePhase::Operate);
    }

    #[test]
    fn the_phases_after_the_operation_do_not_depend_on_draining() {
        for (phase, next) in [
            (NodePhase::Operate, NodePhase::Verify),
            (NodePhase::Verify, NodePhase::Uncordon),
            (NodePhase::Uncordon, NodePhase::Settle),
            (NodePhase::Settle, NodePhase::Done),
        ] {
            assert_eq!(succeed(phase), (next, next), "{phase}");
        }
    }

    #[test]
    fn pending_and_terminal_phases_have_no_work_to_succeed_or_fail() {
        for phase in [
            NodePhase::Pending,
            NodePhase::Done,
            NodePhase::Skipped,
            NodePhase::Failed,
        ] {
            assert_eq!(succeed(phase), (phase, phase), "{phase}");
            assert_eq!(phase.on_failure(), phase, "{phase}");
            assert_eq!(phase.on_abort(), phase, "{phase}");
        }
    }

    #[test]
    fn any_phase_in_maintenance_fails_into_failed() {
        for phase in ALL.into_iter().filter(|p| p.in_progress()) {
            assert_eq!(phase.on_failure(), NodePhase::Failed, "{phase}");
        }
    }

    #[test]
    fn an_abort_leaves_every_node_in_maintenance_skipped() {
        for phase in ALL.into_iter().filter(|p| p.in_progress()) {
            assert_eq!(phase.on_abort(), NodePhase::Skipped, "{phase}");
        }
    }

    #[test]
    fn resume_retries_failed_nodes_only() {
        assert_eq!(NodePhase::Failed.on_resume(), NodePhase::Pending);
        for phase in ALL.into_iter().filter(|p| *p != NodePhase::Failed) {
            assert_eq!(phase.on_resume(), phase, "{phase}");
        }
    }

    #[test]
    fn only_pending_or_failed_nodes_can_be_skipped() {
        for phase in ALL {
            let expected = if matches!(phase, NodePhase::Pending | NodePhase::Failed) {
                NodePhase::Skipped
            } else {
                phase
            };
            assert_eq!(phase.on_skip(), expected, "{phase}");
        }
    }

    #[test]
    fn terminal_phases_are_exactly_done_skipped_and_failed() {
        for phase in ALL {
            assert_eq!(
                phase.is_terminal(),
                !phase.in_progress() && phase != NodePhase::Pending,
                "{phase}"
            );
        }
    }
}
