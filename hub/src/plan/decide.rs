//! The plan engine's one decision, as a pure function: given the plan's nodes, its policy
//! and the cluster's health now, which nodes may start maintenance — or why none may.
//!
//! Rules (RKE2's, from `reference/rke2.md`): servers first, one at a time, and nothing else
//! in maintenance while a server is; workers only after every server is done, at most
//! `concurrency` at once; before any node: inside the window, not paused, every etcd member
//! healthy with no alarms and quorum kept after this node goes down, every apiserver ready,
//! every node Ready except those the plan is handling. A failed node halts the plan.

use time::OffsetDateTime;

use super::window::MaintenanceWindow;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Control plane (etcd member).
    Server,
    /// Worker.
    Agent,
}

/// Where a node is in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not started.
    Pending,
    /// Nothing to do (e.g. already at the target version) or passed over by `skip`.
    Skipped,
    /// Cordoned / draining / operating / waiting healthy / settling.
    InProgress,
    /// Finished and healthy.
    Done,
    /// Stopped with a reason; halts the plan.
    Failed(String),
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanNode {
    /// Node name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its phase.
    pub phase: Phase,
}

/// The plan's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Workers in maintenance at once (at least 1).
    pub concurrency: usize,
    /// When nodes may start; `None` = any time.
    pub window: Option<MaintenanceWindow>,
    /// The operator paused the plan.
    pub paused: bool,
}

/// The cluster's health right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// etcd members.
    pub etcd_members: usize,
    /// Healthy etcd members.
    pub etcd_healthy: usize,
    /// Members some server saw unhealthy, by name: the gate names them, so an operator
    /// knows which server to look at.
    pub etcd_unhealthy: Vec<String>,
    /// Active etcd alarms.
    pub etcd_alarms: Vec<String>,
    /// Servers whose apiserver is not ready.
    pub apiservers_not_ready: Vec<String>,
    /// Nodes that are not Ready.
    pub nodes_not_ready: Vec<String>,
    /// Connected nodes the Kubernetes API has no Node for (a kubelet still registering, or
    /// a `node_name` that differs from the Node's); they hold only plans that include them.
    pub nodes_unregistered: Vec<String>,
    /// Firing Prometheus alerts that hold maintenance (the alert gate; empty without one).
    pub alerts_firing: Vec<String>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start maintenance on these nodes.
    Start(Vec<String>),
    /// Nothing may start now; why.
    Wait(String),
    /// A node failed; the plan stops until resume, skip or abort.
    Halted(String),
    /// Every node is done or skipped.
    Complete,
}

/// Pure: does etcd stay quorate if one healthy member goes down? A single-member cluster has
/// nothing to keep and may go.
#[must_use]
pub fn quorum_after_one_down(health: &Health) -> bool {
    if health.etcd_members <= 1 {
        return health.etcd_healthy == health.etcd_members;
    }
    health.etcd_healthy.saturating_sub(1) > health.etcd_members / 2
}

fn gate(
    policy: &Policy,
    health: &Health,
    handling: &[&str],
    remaining: &[&str],
    server: bool,
    now: OffsetDateTime,
) -> Option<String> {
    if let Some(window) = &policy.window
        && !window.contains(now)
    {
        return Some("outside the maintenance window".to_owned());
    }
    if !health.alerts_firing.is_empty() {
        return Some(format!(
            "alerts firing: {}",
            health.alerts_firing.join(", ")
        ));
    }
    if !health.etcd_alarms.is_empty() {
        return Some(format!(
            "etcd alarms active: {}",
            health.etcd_alarms.join(", ")
        ));
    }
    if health.etcd_healthy < health.etcd_members {
        let names = if health.etcd_unhealthy.is_empty() {
            String::new()
        } else {
            format!(" (unhealthy: {})", health.etcd_unhealthy.join(", "))
        };
        return Some(format!(
            "etcd: {} of {} members healthy{names}",
            health.etcd_healthy, health.etcd_members
        ));
    }
    if server && !quorum_after_one_down(health) {
        return Some(format!(
            "etcd quorum would be lost with one of {} members down",
            health.etcd_members
        ));
    }
    if !health.apiservers_not_ready.is_empty() {
        return Some(format!(
            "apiserver not ready on {}",
            health.apiservers_not_ready.join(", ")
        ));
    }
    let not_ready: Vec<&str> = health
        .nodes_not_ready
        .iter()
        .map(String::as_str)
        .filter(|n| !handling.contains(n))
        .collect();
    if !not_ready.is_empty() {
        return Some(format!("nodes not Ready: {}", not_ready.join(", ")));
    }
    let unregistered: Vec<&str> = health
        .nodes_unregistered
        .iter()
        .map(String::as_str)
        .filter(|n| remaining.contains(n))
        .collect();
    if !unregistered.is_empty() {
        return Some(format!(
            "no Node in the Kubernetes API for {}",
            unregistered.join(", ")
        ));
    }
    None
}

/// The decision for `nodes` (in plan order) at `now`.
#[must_use]
pub fn decide(
    nodes: &[PlanNode],
    policy: &Policy,
    health: &Health,
    now: OffsetDateTime,
) -> Decision {
    if let Some(failed) = nodes.iter().find_map(|n| match &n.phase {
        Phase::Failed(reason) => Some(format!("{} failed: {reason}", n.name)),
        _ => None,
    }) {
        return Decision::Halted(failed);
    }
    if nodes
        .iter()
        .all(|n| matches!(n.phase, Phase::Done | Phase::Skipped))
    {
        return Decision::Complete;
    }
    if policy.paused {
        return Decision::Wait("paused".to_owned());
    }
    let handling: Vec<&str> = nodes
        .iter()
        .filter(|n| n.phase == Phase::InProgress)
        .map(|n| n.name.as_str())
        .collect();
    let remaining: Vec<&str> = nodes
        .iter()
        .filter(|n| matches!(n.phase, Phase::Pending | Phase::InProgress))
        .map(|n| n.name.as_str())
        .collect();
    let pending = |role: Role| {
        nodes
            .iter()
            .filter(move |n| n.role == role && n.phase == Phase::Pending)
    };
    if let Some(server) = pending(Role::Server).next() {
        if let Some(busy) = handling.first() {
            return Decision::Wait(format!(
                "{busy} is in maintenance; servers go one at a time"
            ));
        }
        return match gate(policy, health, &handling, &remaining, true, now) {
            Some(why) => Decision::Wait(why),
            None => Decision::Start(vec![server.name.clone()]),
        };
    }
    if nodes
        .iter()
        .any(|n| n.role == Role::Server && n.phase == Phase::InProgress)
    {
        return Decision::Wait("workers start after every server is done".to_owned());
    }
    let free = policy.concurrency.max(1).saturating_sub(handling.len());
    let next: Vec<String> = pending(Role::Agent)
        .take(free)
        .map(|n| n.name.clone())
        .collect();
    if next.is_empty() {
        return Decision::Wait(format!("waiting for {}", handling.join(", ")));
    }
    match gate(policy, health, &handling, &remaining, false, now) {
        Some(why) => Decision::Wait(why),
        None => Decision::Start(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    fn node(name: &str, role: Role, phase: Phase) -> PlanNode {
        PlanNode {
            name: name.to_owned(),
            role,
            phase,
        }
    }

    fn fleet(phases: [Phase; 5]) -> Vec<PlanNode> {
        let [s1, s2, s3, w1, w2] = phases;
        vec![
            node("s1", Role::Server, s1),
            node("s2", Role::Server, s2),
            node("s3", Role::Server, s3),
            node("w1", Role::Agent, w1),
            node("w2", Role::Agent, w2),
        ]
    }

    fn healthy() -> Health {
        Health {
            etcd_members: 3,
            etcd_healthy: 3,
            ..Health::default()
        }
    }

    fn policy(concurrency: usize) -> Policy {
        Policy {
            concurrency,
            window: None,
            paused: false,
        }
    }

    use Phase::{Done, Failed, InProgress, Pending, Skipped};

    #[test]
    fn servers_go_first_one_at_a_time() {
        let nodes = fleet([Pending, Pending, Pending, Pending, Pending]);
        assert_eq!(
            decide(&nodes, &policy(2), &healthy(), NOW),
            Decision::Start(vec!["s1".into()])
        );
        let nodes = fleet([InProgress, Pending, Pending, Pending, Pending]);
        assert!(
            matches!(decide(&nodes, &policy(2), &healthy(), NOW), Decision::Wait(why) if why.contains("s1"))
        );
        let nodes = fleet([Done, Pending, Pending, Pending, Pending]);
        assert_eq!(
            decide(&nodes, &policy(2), &healthy(), NOW),
            Decision::Start(vec!["s2".into()])
        );
    }

    #[test]
    fn workers_start_after_all_servers_up_to_the_concurrency() {
        let nodes = fleet([Done, Done, Done, Pending, Pending]);
        assert_eq!(
            decide(&nodes, &policy(2), &healthy(), NOW),
            Decision::Start(vec!["w1".into(), "w2".into()])
        );
        assert_eq!(
            decide(&nodes, &policy(1), &healthy(), NOW),
            Decision::Start(vec!["w1".into()])
        );
        let nodes = fleet([Done, Done, Done, InProgress, Pending]);
        assert!(matches!(
            decide(&nodes, &policy(1), &healthy(), NOW),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(&nodes, &policy(2), &healthy(), NOW),
            Decision::Start(vec!["w2".into()])
        );
    }

    #[test]
    fn a_failure_halts_and_completion_is_reported() {
        let nodes = fleet([
            Done,
            Failed("never became ready".into()),
            Pending,
            Pending,
            Pending,
        ]);
        assert!(
            matches!(decide(&nodes, &policy(1), &healthy(), NOW), Decision::Halted(why) if why.contains("s2") && why.contains("never became ready"))
        );
        let nodes = fleet([Done, Skipped, Done, Done, Skipped]);
        assert_eq!(
            decide(&nodes, &policy(1), &healthy(), NOW),
            Decision::Complete
        );
    }

    #[test]
    fn pause_and_window_hold_the_plan() {
        let nodes = fleet([Pending, Pending, Pending, Pending, Pending]);
        let paused = Policy {
            paused: true,
            ..policy(1)
        };
        assert_eq!(
            decide(&nodes, &paused, &healthy(), NOW),
            Decision::Wait("paused".into())
        );
        let night = Policy {
            window: Some(MaintenanceWindow::parse("daily 22:00-04:00 UTC").expect("window")),
            ..policy(1)
        };
        assert!(
            matches!(decide(&nodes, &night, &healthy(), NOW), Decision::Wait(why) if why.contains("window"))
        );
    }

    #[test]
    fn unhealthy_etcd_or_apiserver_or_node_waits_with_the_reason() {
        let nodes = fleet([Done, Pending, Pending, Pending, Pending]);
        let degraded = Health {
            etcd_healthy: 2,
            etcd_unhealthy: vec!["s3".into()],
            ..healthy()
        };
        assert!(matches!(decide(&nodes, &policy(1), &degraded, NOW),
                Decision::Wait(why) if why == "etcd: 2 of 3 members healthy (unhealthy: s3)"));
        let alarm = Health {
            etcd_alarms: vec!["NOSPACE".into()],
            ..healthy()
        };
        assert!(
            matches!(decide(&nodes, &policy(1), &alarm, NOW), Decision::Wait(why) if why.contains("NOSPACE"))
        );
        let api = Health {
            apiservers_not_ready: vec!["s3".into()],
            ..healthy()
        };
        assert!(
            matches!(decide(&nodes, &policy(1), &api, NOW), Decision::Wait(why) if why.contains("s3"))
        );
        let node_down = Health {
            nodes_not_ready: vec!["w2".into()],
            ..healthy()
        };
        assert!(
            matches!(decide(&nodes, &policy(1), &node_down, NOW), Decision::Wait(why) if why.contains("w2"))
        );
        let unregistered = Health {
            nodes_unregistered: vec!["w2".into(), "elsewhere".into()],
            ..healthy()
        };
        assert_eq!(
            decide(&nodes, &policy(1), &unregistered, NOW),
            Decision::Wait("no Node in the Kubernetes API for w2".into()),
            "only nodes of the plan hold it"
        );
        let not_ours = Health {
            nodes_unregistered: vec!["elsewhere".into()],
            ..healthy()
        };
        assert!(matches!(
            decide(&nodes, &policy(1), &not_ours, NOW),
            Decision::Start(_)
        ));
        let alerting = Health {
            alerts_firing: vec!["NodeDown (2)".into()],
            ..healthy()
        };
        assert_eq!(
            decide(&nodes, &policy(1), &alerting, NOW),
            Decision::Wait("alerts firing: NodeDown (2)".into())
        );
    }

    #[test]
    fn nodes_the_plan_is_handling_may_be_not_ready() {
        let nodes = fleet([Done, Done, Done, InProgress, Pending]);
        let health = Health {
            nodes_not_ready: vec!["w1".into()],
            ..healthy()
        };
        assert_eq!(
            decide(&nodes, &policy(2), &health, NOW),
            Decision::Start(vec!["w2".into()])
        );
    }

    #[test]
    fn quorum_rule() {
        assert!(quorum_after_one_down(&Health {
            etcd_members: 3,
            etcd_healthy: 3,
            ..Health::default()
        }));
        assert!(!quorum_after_one_down(&Health {
            etcd_members: 3,
            etcd_healthy: 2,
            ..Health::default()
        }));
        assert!(quorum_after_one_down(&Health {
            etcd_members: 5,
            etcd_healthy: 4,
            ..Health::default()
        }));
        assert!(quorum_after_one_down(&Health {
            etcd_members: 1,
            etcd_healthy: 1,
            ..Health::default()
        }));
        assert!(!quorum_after_one_down(&Health {
            etcd_members: 2,
            etcd_healthy: 2,
            ..Health::default()
        }));
    }
}
