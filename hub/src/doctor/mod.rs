//! `rke2-hub doctor`: the fleet-wide checks (what no single node can see), as pure functions
//! over what the hub gathered: the Kubernetes objects ([`ClusterFacts`], read by
//! [`crate::kube::KubeAccess::doctor_facts`]) and the store's inventory of nodes.
//!
//! - [`pdb`]: `pdb-blocks-drain`, budgets that never allow a disruption;
//! - [`suc`]: `suc-leftover`, system-upgrade-controller still installed;
//! - [`skew`]: `version-skew`, the inventory against the version skew policy;
//! - [`preflight`]: which findings refuse a plan (and which the operator accepted).
//!
//! The finding model, exit code and table are common's ([`rke2ops_common::doctor`]). This
//! module does no I/O; the admin RPC gathers and calls [`run`].

pub mod pdb;
pub mod preflight;
pub mod skew;
pub mod suc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::version::Rke2Version;

pub use self::skew::NodeVersion;
pub use self::suc::SucFacts;

/// What the Kubernetes API said, for the cluster-wide checks.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// Every PodDisruptionBudget.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// Every pod (their labels, node and readiness).
    pub pods: Vec<Pod>,
    /// What is left of system-upgrade-controller.
    pub suc: SucFacts,
}

/// Why the Kubernetes checks did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSkipped {
    /// The hub has no kubeconfig.
    NoKubeconfig,
    /// The API could not be read (the error).
    Unreachable(String),
}

/// Every finding for the fleet: the Kubernetes checks when `cluster` holds facts (one info
/// finding saying why otherwise), the version skew of `nodes` (and, with `target`, the nodes
/// already at or above it). Sorted worst first.
#[must_use]
pub fn run(
    cluster: Result<&ClusterFacts, KubeSkipped>,
    nodes: &[NodeVersion],
    target: Option<&Rke2Version>,
) -> Vec<Finding> {
    let mut out = match cluster {
        Ok(facts) => {
            let mut found = pdb::check(&facts.pdbs, &facts.pods);
            found.extend(suc::check(&facts.suc));
            found
        }
        Err(why) => vec![skipped(&why)],
    };
    out.extend(skew::check(nodes, target));
    rke2ops_common::doctor::sort(&mut out);
    out
}

fn skipped(why: &KubeSkipped) -> Finding {
    match why {
        KubeSkipped::NoKubeconfig => Finding::new(
            Code::KubeChecksSkipped,
            Severity::Info,
            "",
            "kubernetes",
            "give the hub RKE2's admin kubeconfig (hub.toml `kubeconfig`, or `--kubeconfig`) \
             and restart it",
        )
        .with("kubeconfig", "not configured")
        .with("skipped", "pdb-blocks-drain,suc-leftover"),
        KubeSkipped::Unreachable(e) => Finding::new(
            Code::KubeChecksSkipped,
            Severity::Info,
            "",
            "kubernetes",
            "check the apiservers (`kubectl get --raw /readyz`) and the hub's kubeconfig",
        )
        .with("error", e.clone())
        .with("skipped", "pdb-blocks-drain,suc-leftover"),
    }
}

/// Whether `finding` is about `node`: its `node` names it (a budget lists every node it
/// blocks, comma-separated).
#[must_use]
pub fn is_about(finding: &Finding, node: &str) -> bool {
    finding.node.split(',').any(|n| n == node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn nodes() -> Vec<NodeVersion> {
        vec![
            NodeVersion {
                name: "s1".into(),
                role: "server".into(),
                version: "v1.33.4+rke2r1".into(),
            },
            NodeVersion {
                name: "w1".into(),
                role: "agent".into(),
                version: "v1.33.5+rke2r1".into(),
            },
        ]
    }

    #[test]
    fn without_a_kubeconfig_one_info_says_the_kube_checks_were_skipped() {
        let found = run(Err(KubeSkipped::NoKubeconfig), &nodes(), None);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].code, Code::VersionSkew);
        assert_eq!(found[1].code, Code::KubeChecksSkipped);
        assert_eq!(found[1].severity, Severity::Info);
        assert_eq!(rke2ops_common::doctor::exit_code(&found), 2);
    }

    #[test]
    fn findings_come_worst_first_and_filter_by_the_nodes_they_name() {
        let facts = ClusterFacts {
            pdbs: vec![pdb::tests::pdb(
                "shop",
                "web",
                "web",
                None,
                Some(IntOrString::Int(0)),
            )],
            pods: vec![
                pdb::tests::pod("shop", "web-1", "web", "w1", true),
                pdb::tests::pod("shop", "web-2", "web", "w2", true),
            ],
            suc: SucFacts {
                crd: true,
                ..SucFacts::default()
            },
        };
        let found = run(Ok(&facts), &nodes(), None);
        assert_eq!(found.len(), 3);
        assert_eq!(found[2].code, Code::SucLeftover);
        let about_w2: Vec<_> = found.iter().filter(|f| is_about(f, "w2")).collect();
        assert_eq!(about_w2.len(), 1);
        assert_eq!(about_w2[0].code, Code::PdbBlocksDrain);
        assert_eq!(found.iter().filter(|f| is_about(f, "w1")).count(), 2);
        assert!(!found.iter().any(|f| is_about(f, "w")));
    }
}
