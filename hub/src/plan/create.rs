//! Which nodes a new plan holds, in which order, and which of them it skips: pure, from the
//! inventory and the request. Servers come first (by name), then workers (by name); for an
//! upgrade every node is checked against the target with the version guards.

use super::decide::Role;
use super::model::{NodePhase, PlanKind, PlanNode, PlanPolicy};
use super::version::{GuardError, Rke2Version, UpgradeStep, guard};
use super::window::MaintenanceWindow;

/// What an operator (or auto-maintenance) asks for: a plan before it holds any node.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// What to do.
    pub kind: PlanKind,
    /// Upgrade target (already resolved from a channel).
    pub target_version: Option<Rke2Version>,
    /// The channel it came from.
    pub channel: String,
    /// Nodes (empty = all).
    pub nodes: Vec<String>,
    /// How.
    pub policy: PlanPolicy,
    /// `operator` or `auto-maintenance`.
    pub origin: String,
    /// The cluster whose nodes it holds (checked; see [`crate::engine::Engine::resolve_cluster`]).
    pub cluster: String,
    /// The rollout it is a wave plan of, if any.
    pub rollout: Option<i64>,
}

/// Checks a request's fields before anything looks at the inventory: a version only for
/// upgrades (and one for them), a window that parses, known services, bounded numbers and
/// texts ([`check_policy_bounds`]).
///
/// # Errors
/// A message naming the field at fault.
pub fn validate(request: &PlanRequest) -> Result<(), String> {
    if request.kind == PlanKind::Upgrade && request.target_version.is_none() {
        return Err("upgrade: a --version or --channel is required".to_owned());
    }
    if request.kind != PlanKind::Upgrade && request.target_version.is_some() {
        return Err(format!("{}: takes no version", request.kind));
    }
    if request.kind != PlanKind::Upgrade && request.policy.stage_images {
        return Err(format!(
            "{}: --stage-images is for upgrades (it stages the target release's images)",
            request.kind
        ));
    }
    if request.kind != PlanKind::Rotate && request.policy.etcd_snapshot {
        return Err(format!(
            "{}: --etcd-snapshot is for rotations (upgrades always take one on each server)",
            request.kind
        ));
    }
    if let Some(w) = &request.policy.window
        && let Err(e) = MaintenanceWindow::parse(w)
    {
        return Err(e.to_string());
    }
    for service in &request.policy.services {
        if rke2ops_common::layout::service_certs(service).is_none() {
            return Err(format!(
                "services: unknown RKE2 service {service:?} (known: {})",
                rke2ops_common::layout::SERVICES.join(", ")
            ));
        }
    }
    if request.policy.concurrency > 100 {
        return Err("concurrency: at most 100 workers at once".to_owned());
    }
    check_policy_bounds(&request.policy)
}

/// A node the hub knows, as plan creation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Running RKE2 version as last reported (may be empty).
    pub rke2_version: String,
}

/// Why a plan cannot be created as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// Names that the hub has never seen.
    #[error("unknown nodes: {}", .0.join(", "))]
    UnknownNodes(Vec<String>),
    /// Nothing to include.
    #[error("no nodes to include (the hub knows none, or none matched)")]
    NoNodes,
    /// A node's reported version cannot be compared with the target.
    #[error("node {node}: cannot compare its RKE2 version {version:?} with the target: {reason}")]
    BadVersion {
        /// The node.
        node: String,
        /// What it reported.
        version: String,
        /// Why.
        reason: String,
    },
    /// The upgrade guards refuse the target for a node.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// Every node runs something newer than the target.
    #[error("every node runs a version newer than {0}: rke2-ops never downgrades")]
    Downgrade(String),
}

/// The plan's nodes in order, pending or skipped with the reason.
///
/// # Errors
/// [`CreateError`] naming the node or nodes at fault.
pub fn plan_nodes(
    kind: PlanKind,
    target: Option<Rke2Version>,
    inventory: &[Candidate],
    selection: &[String],
    allow_minor_skip: bool,
) -> Result<Vec<PlanNode>, CreateError> {
    let unknown: Vec<String> = selection
        .iter()
        .filter(|s| !inventory.iter().any(|c| &c.name == *s))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(CreateError::UnknownNodes(unknown));
    }
    let mut chosen: Vec<&Candidate> = inventory
        .iter()
        .filter(|c| selection.is_empty() || selection.contains(&c.name))
        .collect();
    if chosen.is_empty() {
        return Err(CreateError::NoNodes);
    }
    chosen
        .sort_by(|a, b| (a.role != Role::Server, &a.name).cmp(&(b.role != Role::Server, &b.name)));
    let mut nodes = Vec::with_capacity(chosen.len());
    let mut newer = 0usize;
    for (i, c) in chosen.iter().enumerate() {
        let position = u32::try_from(i).unwrap_or(u32::MAX);
        let mut node = PlanNode::pending(&c.name, position, c.role, &c.rke2_version);
        if let (PlanKind::Upgrade, Some(target)) = (kind, target) {
            let current: Rke2Version =
                c.rke2_version
                    .parse()
                    .map_err(|e: super::version::VersionError| CreateError::BadVersion {
                        node: c.name.clone(),
                        version: c.rke2_version.clone(),
                        reason: e.to_string(),
                    })?;
            match guard(&c.name, current, target, allow_minor_skip) {
                Ok(UpgradeStep::AlreadyAtTarget) => {
                    node.phase = NodePhase::Skipped;
                    node.detail = format!("already at {target}");
                }
                Ok(UpgradeStep::Upgrade) => {}
                Err(GuardError::Downgrade { current, .. }) => {
                    newer += 1;
                    node.phase = NodePhase::Skipped;
                    node.detail =
                        format!("runs {current}, newer than the target: never downgraded");
                }
                Err(e) => return Err(e.into()),
            }
        }
        nodes.push(node);
    }
    if let Some(target) = target
        && newer == nodes.len()
    {
        return Err(CreateError::Downgrade(target.to_string()));
    }
    Ok(nodes)
}

/// The longest wait an operator may set (settle, drain, readiness, operation): a day. A
/// typo such as `--settle 30000h` would otherwise park a plan for years with a node
/// cordoned, and out-of-range numbers overflow the time arithmetic downstream.
pub const MAX_POLICY_WAIT_SECS: u64 = 24 * 3600;

/// The longest grace period for an evicted pod: an hour (Kubernetes takes any number; a
/// drain that waits longer than [`MAX_POLICY_WAIT_SECS`] would halt anyway).
pub const MAX_GRACE_PERIOD_SECS: i64 = 3600;

/// Longest free-text policy field (window, artifact source, a service name).
pub const MAX_POLICY_TEXT: usize = 1024;

/// Checks the operator-supplied numbers and strings of `policy` against their bounds,
/// naming the field: nothing unbounded reaches the store or the engine's timers.
///
/// # Errors
/// A message naming the field, the value and the bound.
pub fn check_policy_bounds(policy: &PlanPolicy) -> Result<(), String> {
    for (field, secs) in [
        ("settle", policy.settle_secs),
        ("drain_timeout", policy.drain_timeout_secs),
        ("ready_timeout", policy.ready_timeout_secs),
        ("operation_timeout", policy.operation_timeout_secs),
    ] {
        if secs > MAX_POLICY_WAIT_SECS {
            return Err(format!(
                "{field}: {secs} s is longer than the {MAX_POLICY_WAIT_SECS} s (24 h) allowed"
            ));
        }
    }
    for (field, secs) in [
        ("ready_timeout", policy.ready_timeout_secs),
        ("operation_timeout", policy.operation_timeout_secs),
    ] {
        if secs == 0 {
            return Err(format!("{field}: must be at least 1 s"));
        }
    }
    if let Some(g) = policy.grace_period_secs
        && !(0..=MAX_GRACE_PERIOD_SECS).contains(&g)
    {
        return Err(format!(
            "grace_period: {g} s is outside 0..={MAX_GRACE_PERIOD_SECS} s"
        ));
    }
    let texts = [
        ("window", policy.window.as_deref().unwrap_or_default()),
        ("artifact_source", policy.artifact_source.as_str()),
    ]
    .into_iter()
    .chain(policy.services.iter().map(|s| ("services", s.as_str())));
    for (field, text) in texts {
        if text.len() > MAX_POLICY_TEXT {
            return Err(format!(
                "{field}: {} bytes long (at most {MAX_POLICY_TEXT})",
                text.len()
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("{field}: control characters are not allowed"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, role: Role, version: &str) -> Candidate {
        Candidate {
            name: name.into(),
            role,
            rke2_version: version.into(),
        }
    }

    fn fleet() -> Vec<Candidate> {
        vec![
            c("w2", Role::Agent, "v1.33.5+rke2r1"),
            c("s2", Role::Server, "v1.33.5+rke2r1"),
            c("w1", Role::Agent, "v1.34.1+rke2r1"),
            c("s1", Role::Server, "v1.33.5+rke2r1"),
        ]
    }

    fn v(s: &str) -> Option<Rke2Version> {
        Some(s.parse().expect("version"))
    }

    #[test]
    fn servers_first_then_workers_by_name() {
        let nodes = plan_nodes(PlanKind::Rotate, None, &fleet(), &[], false).expect("plan");
        let order: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(order, ["s1", "s2", "w1", "w2"]);
        assert!(nodes.iter().all(|n| n.phase == NodePhase::Pending));
        assert_eq!(
            nodes.iter().map(|n| n.position).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn upgrade_skips_nodes_at_or_above_the_target() {
        let nodes =
            plan_nodes(PlanKind::Upgrade, v("v1.34.1+rke2r1"), &fleet(), &[], false).expect("plan");
        let w1 = nodes.iter().find(|n| n.node == "w1").expect("w1");
        assert_eq!(w1.phase, NodePhase::Skipped);
        assert_eq!(w1.detail, "already at v1.34.1+rke2r1");
        let newer =
            plan_nodes(PlanKind::Upgrade, v("v1.33.6+rke2r1"), &fleet(), &[], false).expect("plan");
        let w1 = newer.iter().find(|n| n.node == "w1").expect("w1");
        assert!(w1.detail.contains("never downgraded"), "{}", w1.detail);
        assert_eq!(
            newer
                .iter()
                .filter(|n| n.phase == NodePhase::Pending)
                .count(),
            3
        );
    }

    #[test]
    fn guards_refuse_minor_skips_and_pure_downgrades() {
        let err = plan_nodes(PlanKind::Upgrade, v("v1.35.0+rke2r1"), &fleet(), &[], false)
            .expect_err("skips 1.34");
        assert!(err.to_string().contains("--allow-minor-skip"), "{err}");
        assert!(plan_nodes(PlanKind::Upgrade, v("v1.35.0+rke2r1"), &fleet(), &[], true).is_ok());
        let err = plan_nodes(PlanKind::Upgrade, v("v1.32.0+rke2r1"), &fleet(), &[], false)
            .expect_err("downgrade");
        assert!(matches!(err, CreateError::Downgrade(_)), "{err}");
    }

    #[test]
    fn selection_is_checked() {
        let err = plan_nodes(
            PlanKind::Restart,
            None,
            &fleet(),
            &["s1".into(), "nope".into()],
            false,
        )
        .expect_err("unknown");
        assert_eq!(err, CreateError::UnknownNodes(vec!["nope".into()]));
        let nodes =
            plan_nodes(PlanKind::Restart, None, &fleet(), &["w2".into()], false).expect("plan");
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            plan_nodes(PlanKind::Restart, None, &[], &[], false),
            Err(CreateError::NoNodes)
        );
        let mut bad = fleet();
        bad[0].rke2_version = String::new();
        let err = plan_nodes(PlanKind::Upgrade, v("v1.34.1+rke2r1"), &bad, &[], false)
            .expect_err("bad version");
        assert!(err.to_string().contains("node w2"), "{err}");
    }

    #[test]
    fn operator_waits_and_texts_are_bounded_naming_the_field() {
        let ok = PlanPolicy::default();
        assert_eq!(check_policy_bounds(&ok), Ok(()));
        let cases: [(PlanPolicy, &str); 6] = [
            (
                PlanPolicy {
                    settle_secs: 30_000 * 3600,
                    ..ok.clone()
                },
                "settle",
            ),
            (
                PlanPolicy {
                    drain_timeout_secs: u64::MAX,
                    ..ok.clone()
                },
                "drain_timeout",
            ),
            (
                PlanPolicy {
                    ready_timeout_secs: 0,
                    ..ok.clone()
                },
                "ready_timeout",
            ),
            (
                PlanPolicy {
                    grace_period_secs: Some(-1),
                    ..ok.clone()
                },
                "grace_period",
            ),
            (
                PlanPolicy {
                    artifact_source: "x".repeat(5000),
                    ..ok.clone()
                },
                "artifact_source",
            ),
            (
                PlanPolicy {
                    window: Some("Sat\u{1b}[2J".into()),
                    ..ok.clone()
                },
                "window",
            ),
        ];
        for (policy, field) in cases {
            let err = check_policy_bounds(&policy).expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        let day = PlanPolicy {
            settle_secs: MAX_POLICY_WAIT_SECS,
            ..ok
        };
        assert_eq!(check_policy_bounds(&day), Ok(()));
    }

    fn request(kind: PlanKind, target: Option<&str>) -> PlanRequest {
        PlanRequest {
            kind,
            target_version: target.and_then(v),
            channel: String::new(),
            nodes: Vec::new(),
            policy: PlanPolicy::default(),
            origin: "operator".to_owned(),
            cluster: "default".to_owned(),
            rollout: None,
        }
    }

    #[test]
    fn a_valid_request_passes() {
        assert_eq!(validate(&request(PlanKind::Rotate, None)), Ok(()));
        assert_eq!(
            validate(&request(PlanKind::Upgrade, Some("v1.34.1+rke2r1"))),
            Ok(())
        );
    }

    #[test]
    fn only_rotations_ask_for_an_etcd_snapshot() {
        let mut rotate = request(PlanKind::Rotate, None);
        rotate.policy.etcd_snapshot = true;
        assert_eq!(validate(&rotate), Ok(()));
        assert!(
            rotate
                .policy
                .describe(PlanKind::Rotate)
                .contains("etcd snapshot")
        );
        for (kind, version) in [
            (PlanKind::Upgrade, Some("v1.34.1+rke2r1")),
            (PlanKind::Restart, None),
        ] {
            let mut other = request(kind, version);
            other.policy.etcd_snapshot = true;
            let err = validate(&other).expect_err("refused");
            assert!(err.contains("--etcd-snapshot is for rotations"), "{err}");
        }
    }

    #[test]
    fn only_upgrades_stage_images() {
        let mut rotate = request(PlanKind::Rotate, None);
        rotate.policy.stage_images = true;
        let err = validate(&rotate).expect_err("refused");
        assert!(err.contains("--stage-images is for upgrades"), "{err}");
        let mut upgrade = request(PlanKind::Upgrade, Some("v1.34.1+rke2r1"));
        upgrade.policy.stage_images = true;
        assert_eq!(validate(&upgrade), Ok(()));
    }

    #[test]
    fn an_upgrade_needs_a_target_and_nothing_else_takes_one() {
        let err = validate(&request(PlanKind::Upgrade, None)).expect_err("no target");
        assert_eq!(err, "upgrade: a --version or --channel is required");
        let err = validate(&request(PlanKind::Restart, Some("v1.34.1+rke2r1"))).expect_err("v");
        assert_eq!(err, "restart: takes no version");
    }

    #[test]
    fn a_window_that_does_not_parse_is_refused() {
        let mut r = request(PlanKind::Rotate, None);
        r.policy.window = Some("whenever".to_owned());
        assert!(validate(&r).is_err());
        r.policy.window = Some("Sat,Sun 22:00-04:00 UTC".to_owned());
        assert_eq!(validate(&r), Ok(()));
    }

    #[test]
    fn unknown_services_are_refused_naming_the_known_ones() {
        let mut r = request(PlanKind::Rotate, None);
        r.policy.services = vec!["kube-bogus".to_owned()];
        let err = validate(&r).expect_err("unknown service");
        assert!(
            err.starts_with("services: unknown RKE2 service \"kube-bogus\""),
            "{err}"
        );
    }

    #[test]
    fn concurrency_and_policy_bounds_are_checked() {
        let mut r = request(PlanKind::Rotate, None);
        r.policy.concurrency = 101;
        assert_eq!(
            validate(&r),
            Err("concurrency: at most 100 workers at once".to_owned())
        );
        r.policy.concurrency = 100;
        r.policy.ready_timeout_secs = 0;
        assert_eq!(
            validate(&r),
            Err("ready_timeout: must be at least 1 s".to_owned())
        );
    }
}
