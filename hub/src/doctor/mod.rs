//! `rke2-hub doctor`: the fleet-wide checks (what no single node can see), as pure functions
//! over what the hub gathered: the Kubernetes objects ([`ClusterFacts`], read by
//! [`crate::kube::KubeAccess::doctor_facts`]) and the store's inventory of nodes.
//!
//! - [`pdb`]: `pdb-blocks-drain`, budgets that never allow a disruption;
//! - [`suc`]: `suc-leftover`, system-upgrade-controller still installed;
//! - [`skew`]: `version-skew`, the inventory against the version skew policy;
//! - [`agents`]: every node's own findings as its agent reported them, `clock-skew`
//!   ([`clock`]) and `agent-offline`;
//! - [`etcd`]: members any server sees unhealthy, alarms, `etcd-quorum-at-risk`;
//! - [`events`]: RKE2's certificate-monitor events beside the finding they confirm;
//! - [`preflight`]: which findings refuse a plan (and which the operator accepted).
//!
//! The finding model, exit code and table are common's ([`rke2ops_common::doctor`]). This
//! module does no I/O; the engine gathers ([`crate::engine::Engine::fleet_findings`]) and
//! calls [`run`].

pub mod agents;
pub mod clock;
pub mod etcd;
pub mod events;
pub mod pdb;
pub mod preflight;
pub mod skew;
pub mod suc;

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

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
    /// RKE2's certificate-monitor events on Nodes.
    pub cert_events: Vec<events::CertEvent>,
}

/// Everything the fleet doctor looks at, gathered by the engine.
#[derive(Debug, Clone)]
pub struct FleetFacts<'a> {
    /// The Kubernetes objects, or why they could not be read.
    pub cluster: Result<&'a ClusterFacts, KubeSkipped>,
    /// Every node's role and version.
    pub nodes: &'a [NodeVersion],
    /// A plan's target version (its nodes already there are noted).
    pub target: Option<&'a Rke2Version>,
    /// Every node's agent and what it reported.
    pub agents: &'a [agents::AgentView<'a>],
    /// The latest fresh etcd report of each online server.
    pub etcd: &'a [(String, crate::plan::health::EtcdReport)],
    /// Each node's newest leaf NotBefore (its last renewal), from the stored snapshots.
    pub renewed_at: &'a HashMap<String, OffsetDateTime>,
    /// A node's clock further off than this is `clock-skew`.
    pub clock_threshold: Duration,
}

/// Why the Kubernetes checks did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSkipped {
    /// The hub has no kubeconfig.
    NoKubeconfig,
    /// The API could not be read (the error).
    Unreachable(String),
}

/// Every finding for the fleet, worst first: the Kubernetes checks when `cluster` holds facts
/// (one info finding saying why otherwise), the version skew of `nodes` (and, with `target`,
/// the nodes already at or above it), every node's agent findings and clock, etcd across the
/// servers, and RKE2's certificate events merged into the findings they confirm.
#[must_use]
pub fn run(facts: &FleetFacts<'_>) -> Vec<Finding> {
    let mut out = match &facts.cluster {
        Ok(cluster) => {
            let mut found = pdb::check(&cluster.pdbs, &cluster.pods);
            found.extend(suc::check(&cluster.suc));
            found
        }
        Err(why) => vec![skipped(why)],
    };
    out.extend(skew::check(facts.nodes, facts.target));
    out.extend(agents::check(facts.agents, facts.clock_threshold));
    out.extend(etcd::check(facts.etcd));
    if let Ok(cluster) = &facts.cluster {
        events::merge(&mut out, &cluster.cert_events, facts.renewed_at);
    }
    rke2ops_common::doctor::sort(&mut out);
    out
}

/// The fleet doctor's last run: what `nodes` and `certs` show per node and the hub's
/// `rke2ops_hub_doctor_findings` exports, between runs (the engine refreshes it every
/// minute and whenever a doctor or a plan's preflight runs).
#[derive(Debug, Default)]
pub struct Latest(std::sync::Mutex<Option<(OffsetDateTime, Vec<Finding>)>>);

impl Latest {
    /// Replaces the last run.
    pub fn set(&self, at: OffsetDateTime, findings: Vec<Finding>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((at, findings));
        }
    }

    /// The last run (none yet: empty).
    #[must_use]
    pub fn findings(&self) -> Vec<Finding> {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(_, f)| f.clone()))
            .unwrap_or_default()
    }

    /// The worst finding about each node in the last run (a finding naming several nodes
    /// counts for each): (severity, code) per node name.
    #[must_use]
    pub fn worst_per_node(&self) -> HashMap<String, (Severity, Code)> {
        worst_per_node(&self.findings())
    }
}

/// The worst finding about each node of `findings` (worst severity, then first code).
#[must_use]
pub fn worst_per_node(findings: &[Finding]) -> HashMap<String, (Severity, Code)> {
    let mut out: HashMap<String, (Severity, Code)> = HashMap::new();
    for f in findings {
        for node in f.node.split(',').filter(|n| !n.is_empty()) {
            let slot = out.entry(node.to_owned()).or_insert((f.severity, f.code));
            if f.severity > slot.0 || (f.severity == slot.0 && f.code < slot.1) {
                *slot = (f.severity, f.code);
            }
        }
    }
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
        .with("skipped", "pdb-blocks-drain,suc-leftover,rke2-cert-warning"),
        KubeSkipped::Unreachable(e) => Finding::new(
            Code::KubeChecksSkipped,
            Severity::Info,
            "",
            "kubernetes",
            "check the apiservers (`kubectl get --raw /readyz`) and the hub's kubeconfig",
        )
        .with("error", e.clone())
        .with("skipped", "pdb-blocks-drain,suc-leftover,rke2-cert-warning"),
    }
}

/// Whether `finding` is about `node`: its `node` names it (a budget lists every node it
/// blocks, comma-separated).
#[must_use]
pub fn is_about(finding: &Finding, node: &str) -> bool {
    finding.node.split(',').any(|n| n == node)
}

/// Whether `finding` belongs to cluster `cluster`, whose nodes are `members`: it is about one
/// of them, or about no node and carries `cluster=<cluster>` (a fleet of several clusters)
/// or no cluster at all (a fleet of one).
#[must_use]
pub fn is_in_cluster(finding: &Finding, cluster: &str, members: &[String]) -> bool {
    if finding.node.is_empty() {
        return finding
            .evidence
            .iter()
            .find(|e| e.field == "cluster")
            .is_none_or(|e| e.value == cluster);
    }
    members.iter().any(|m| is_about(finding, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn a_finding_belongs_to_its_node_s_cluster_or_the_one_it_names() {
        let members = vec!["e1".to_owned(), "e2".to_owned()];
        let about = |node: &str| Finding::new(Code::ClockSkew, Severity::Warning, node, "", "");
        assert!(is_in_cluster(&about("e1"), "east", &members));
        assert!(is_in_cluster(&about("w1,e2"), "east", &members));
        assert!(!is_in_cluster(&about("w1"), "east", &members));
        let wide = about("").with("cluster", "west");
        assert!(!is_in_cluster(&wide, "east", &members));
        assert!(is_in_cluster(&wide, "west", &[]));
        assert!(
            is_in_cluster(&about(""), "east", &members),
            "a fleet of one"
        );
    }

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

    fn fleet<'a>(
        cluster: Result<&'a ClusterFacts, KubeSkipped>,
        nodes: &'a [NodeVersion],
        renewed: &'a HashMap<String, OffsetDateTime>,
    ) -> FleetFacts<'a> {
        FleetFacts {
            cluster,
            nodes,
            target: None,
            agents: &[],
            etcd: &[],
            renewed_at: renewed,
            clock_threshold: Duration::from_secs(30),
        }
    }

    #[test]
    fn without_a_kubeconfig_one_info_says_the_kube_checks_were_skipped() {
        let nodes = nodes();
        let renewed = HashMap::new();
        let found = run(&fleet(Err(KubeSkipped::NoKubeconfig), &nodes, &renewed));
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
            cert_events: Vec::new(),
        };
        let nodes = nodes();
        let renewed = HashMap::new();
        let found = run(&fleet(Ok(&facts), &nodes, &renewed));
        assert_eq!(found.len(), 3);
        assert_eq!(found[2].code, Code::SucLeftover);
        let about_w2: Vec<_> = found.iter().filter(|f| is_about(f, "w2")).collect();
        assert_eq!(about_w2.len(), 1);
        assert_eq!(about_w2[0].code, Code::PdbBlocksDrain);
        assert_eq!(found.iter().filter(|f| is_about(f, "w1")).count(), 2);
        assert!(!found.iter().any(|f| is_about(f, "w")));
    }

    #[test]
    fn agents_etcd_and_events_come_together_worst_first() {
        use crate::store::NodeFindings;
        let facts = ClusterFacts {
            cert_events: vec![events::CertEvent {
                node: "w1".into(),
                reason: events::LEAF_WARNING.into(),
                message: "agent/client-kubelet.crt: certificate will expire within 120 days".into(),
                last_seen: OffsetDateTime::UNIX_EPOCH,
            }],
            ..ClusterFacts::default()
        };
        let near = Finding::new(
            Code::RenewalDeadlineNear,
            Severity::Warning,
            "w1",
            "agent/client-kubelet.crt",
            "restart",
        );
        let w1 = NodeFindings {
            node: "w1".into(),
            reported_at: None,
            clock_offset_ms: Some(-400_000),
            findings: vec![near],
        };
        let agents = [agents::AgentView {
            reported: &w1,
            online: true,
            last_seen: OffsetDateTime::UNIX_EPOCH,
        }];
        let nodes = nodes();
        let renewed = HashMap::new();
        let mut input = fleet(Ok(&facts), &nodes, &renewed);
        input.agents = &agents;
        let found = run(&input);
        let codes: Vec<Code> = found.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                Code::VersionSkew,
                Code::ClockSkew,
                Code::RenewalDeadlineNear
            ]
        );
        assert_eq!(
            found[2].evidence.last().map(|e| e.field.as_str()),
            Some("rke2_event"),
            "the event confirms the agent's finding"
        );
    }
}
