//! `suc-leftover`: system-upgrade-controller still in the cluster. Its Plans upgrade nodes on
//! their own (and label, cordon and drain them) behind the hub's back, so a cluster the hub
//! drives should have none of it. Pure: what the API listed in, findings out.

use rke2ops_common::doctor::{Code, Finding, Severity};

/// The CRD system-upgrade-controller installs.
pub const PLAN_CRD: &str = "plans.upgrade.cattle.io";
/// The controller's Deployment name (any namespace).
pub const DEPLOYMENT: &str = "system-upgrade-controller";

/// What the Kubernetes API holds of system-upgrade-controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SucFacts {
    /// The CRD `plans.upgrade.cattle.io` exists.
    pub crd: bool,
    /// `namespace/name` of every `upgrade.cattle.io/v1` Plan.
    pub plans: Vec<String>,
    /// Namespaces holding a Deployment named `system-upgrade-controller`.
    pub deployments: Vec<String>,
}

/// One warning per leftover: each controller Deployment, the Plans (together), the CRD.
#[must_use]
pub fn check(facts: &SucFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    for ns in &facts.deployments {
        out.push(
            Finding::new(
                Code::SucLeftover,
                Severity::Warning,
                "",
                format!("deployment {ns}/{DEPLOYMENT}"),
                format!("kubectl -n {ns} delete deployment {DEPLOYMENT}"),
            )
            .with("deployment", format!("{ns}/{DEPLOYMENT}")),
        );
    }
    if !facts.plans.is_empty() {
        out.push(
            Finding::new(
                Code::SucLeftover,
                Severity::Warning,
                "",
                "plans.upgrade.cattle.io",
                format!("kubectl delete {PLAN_CRD} --all -A"),
            )
            .with("plans", facts.plans.join(",")),
        );
    }
    if facts.crd {
        out.push(
            Finding::new(
                Code::SucLeftover,
                Severity::Warning,
                "",
                format!("crd {PLAN_CRD}"),
                format!("kubectl delete {PLAN_CRD} --all -A && kubectl delete crd {PLAN_CRD}"),
            )
            .with("crd", PLAN_CRD),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_cluster_has_no_leftover() {
        assert!(check(&SucFacts::default()).is_empty());
    }

    #[test]
    fn crd_plans_and_controller_are_each_reported_with_their_delete_command() {
        let found = check(&SucFacts {
            crd: true,
            plans: vec![
                "system-upgrade/server-plan".into(),
                "system-upgrade/agent-plan".into(),
            ],
            deployments: vec!["system-upgrade".into()],
        });
        assert_eq!(found.len(), 3);
        assert!(
            found
                .iter()
                .all(|f| f.code == Code::SucLeftover && f.severity == Severity::Warning)
        );
        assert_eq!(
            found[0].fix,
            "kubectl -n system-upgrade delete deployment system-upgrade-controller"
        );
        assert_eq!(
            found[1].fix,
            "kubectl delete plans.upgrade.cattle.io --all -A"
        );
        assert_eq!(
            found[1].evidence[0].value,
            "system-upgrade/server-plan,system-upgrade/agent-plan"
        );
        assert!(
            found[2]
                .fix
                .ends_with("kubectl delete crd plans.upgrade.cattle.io")
        );
    }

    #[test]
    fn the_crd_alone_is_a_leftover() {
        let found = check(&SucFacts {
            crd: true,
            ..SucFacts::default()
        });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].object, "crd plans.upgrade.cattle.io");
    }
}
