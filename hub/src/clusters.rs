//! `rke2-hub clusters`: one line per cluster the hub knows, summed up from the inventory, the
//! active plans and the hub's Kubernetes access. Pure: records in, summaries out.

use std::collections::BTreeMap;

use crate::plan::model::Plan;
use crate::store::NodeRecord;

/// One cluster at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSummary {
    /// Its name.
    pub name: String,
    /// Server nodes.
    pub servers: u32,
    /// Worker nodes.
    pub agents: u32,
    /// Nodes whose agent is connected.
    pub online: u32,
    /// The RKE2 versions its nodes run, sorted, without duplicates (empty ones left out).
    pub versions: Vec<String>,
    /// The hub can cordon and drain there.
    pub kubernetes_access: bool,
    /// Its active plan, `(id, state)`, if any.
    pub active_plan: Option<(i64, String)>,
}

/// The clusters of `nodes`, by name, with `active` plans and `access(cluster)`.
#[must_use]
pub fn summarize(
    nodes: &[NodeRecord],
    active: &[Plan],
    access: impl Fn(&str) -> bool,
) -> Vec<ClusterSummary> {
    let mut by_name: BTreeMap<&str, ClusterSummary> = BTreeMap::new();
    for node in nodes {
        let entry = by_name
            .entry(node.cluster.as_str())
            .or_insert_with(|| ClusterSummary {
                name: node.cluster.clone(),
                servers: 0,
                agents: 0,
                online: 0,
                versions: Vec::new(),
                kubernetes_access: access(&node.cluster),
                active_plan: active
                    .iter()
                    .filter(|p| p.cluster == node.cluster)
                    .min_by_key(|p| p.id)
                    .map(|p| (p.id, p.state.to_string())),
            });
        if node.role == "server" {
            entry.servers += 1;
        } else {
            entry.agents += 1;
        }
        entry.online += u32::from(node.online);
        if !node.rke2_version.is_empty() && !entry.versions.contains(&node.rke2_version) {
            entry.versions.push(node.rke2_version.clone());
        }
    }
    by_name
        .into_values()
        .map(|mut s| {
            s.versions.sort();
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn node(name: &str, cluster: &str, role: &str, version: &str, online: bool) -> NodeRecord {
        let t = datetime!(2026-01-01 00:00 UTC);
        NodeRecord {
            name: name.into(),
            role: role.into(),
            rke2_version: version.into(),
            agent_version: String::new(),
            service_state: "active".into(),
            worst_status: None,
            renewal_deadline: None,
            online,
            online_changed_at: t,
            first_seen: t,
            last_seen: t,
            certificates_at: None,
            cluster: cluster.into(),
        }
    }

    #[test]
    fn clusters_are_counted_apart_with_their_access_and_active_plan() {
        let nodes = [
            node("e1", "east", "server", "v1.34.1+rke2r1", true),
            node("e2", "east", "agent", "v1.33.5+rke2r1", false),
            node("e3", "east", "agent", "v1.34.1+rke2r1", true),
            node("w1", "west", "server", "v1.31.9+rke2r1", true),
        ];
        let store = crate::store::Store::open_in_memory().expect("store");
        let now = datetime!(2026-01-01 00:00 UTC);
        let policy = crate::plan::model::PlanPolicy::default();
        let id = store
            .create_plan(
                &crate::store::NewPlan {
                    kind: crate::plan::model::PlanKind::Rotate,
                    target_version: "",
                    channel: "",
                    policy: &policy,
                    origin: "operator",
                    created_by: "t",
                    cluster: "west",
                    rollout: None,
                },
                &[],
                now,
            )
            .expect("plan");
        let active = store.plans(true).expect("plans");
        let out = summarize(&nodes, &active, |c| c == "east");
        assert_eq!(out.len(), 2);
        assert_eq!(
            (
                out[0].name.as_str(),
                out[0].servers,
                out[0].agents,
                out[0].online
            ),
            ("east", 1, 2, 2)
        );
        assert_eq!(out[0].versions, ["v1.33.5+rke2r1", "v1.34.1+rke2r1"]);
        assert!(out[0].kubernetes_access && out[0].active_plan.is_none());
        assert!(!out[1].kubernetes_access);
        assert_eq!(out[1].active_plan, Some((id, "running".to_owned())));
    }
}
