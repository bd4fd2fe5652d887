//! `version-skew`: the fleet's RKE2 versions (as the hub's inventory has them) against
//! Kubernetes' version skew policy. Pure: nodes in, findings out.
//!
//! - a worker newer than the oldest server: its kubelet is newer than an apiserver (blocker);
//! - servers on different minors: an upgrade half done (warning; more than one minor apart
//!   is outside the apiservers' supported skew: blocker);
//! - a worker more than [`KUBELET_MAX_MINORS_BEHIND`] minors older than the newest server
//!   (blocker);
//! - for a plan's target, each node already at or above it (info: the plan skips it).

use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::version::Rke2Version;

/// How many minors a kubelet may be older than the apiserver.
pub const KUBELET_MAX_MINORS_BEHIND: u64 = 3;

/// One node of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// Node name.
    pub name: String,
    /// `server` or `agent` (the store's words).
    pub role: String,
    /// What it runs (`v1.34.1+rke2r1`); empty or unparsable nodes are left out.
    pub version: String,
}

/// A comparable minor across majors.
fn minor_index(v: &Rke2Version) -> u64 {
    u64::from(v.major) * 1000 + u64::from(v.minor)
}

/// The skew findings of `nodes`, and (with a `target`) the nodes already at or above it.
#[must_use]
pub fn check(nodes: &[NodeVersion], target: Option<&Rke2Version>) -> Vec<Finding> {
    let parsed: Vec<(&NodeVersion, Rke2Version)> = nodes
        .iter()
        .filter_map(|n| n.version.parse().ok().map(|v| (n, v)))
        .collect();
    let servers: Vec<&(&NodeVersion, Rke2Version)> =
        parsed.iter().filter(|(n, _)| n.role == "server").collect();
    let mut out = Vec::new();
    let oldest = servers.iter().map(|(_, v)| *v).min();
    let newest = servers.iter().map(|(_, v)| *v).max();
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        for (node, v) in &servers {
            let behind = minor_index(&newest).saturating_sub(minor_index(v));
            if behind == 0 {
                continue;
            }
            let severity = if behind > 1 {
                Severity::Blocker
            } else {
                Severity::Warning
            };
            out.push(
                Finding::new(
                    Code::VersionSkew,
                    severity,
                    &node.name,
                    format!("server {}", node.name),
                    format!(
                        "finish the server upgrade one minor at a time: rke2-hub upgrade \
                         --version <latest v{}.{} patch> --node {}",
                        v.major,
                        u64::from(v.minor) + 1,
                        node.name
                    ),
                )
                .with("version", v.to_string())
                .with("newest-server", newest.to_string())
                .with("minors-behind", behind.to_string()),
            );
        }
        for (node, v) in parsed.iter().filter(|(n, _)| n.role != "server") {
            if *v > oldest {
                out.push(
                    Finding::new(
                        Code::VersionSkew,
                        Severity::Blocker,
                        &node.name,
                        format!("agent {}", node.name),
                        format!(
                            "upgrade every server to at least {v} first (servers before \
                             agents): rke2-hub upgrade --version {v}"
                        ),
                    )
                    .with("version", v.to_string())
                    .with("oldest-server", oldest.to_string()),
                );
                continue;
            }
            let behind = minor_index(&newest).saturating_sub(minor_index(v));
            if behind > KUBELET_MAX_MINORS_BEHIND {
                out.push(
                    Finding::new(
                        Code::VersionSkew,
                        Severity::Blocker,
                        &node.name,
                        format!("agent {}", node.name),
                        format!(
                            "upgrade {} one minor at a time (kubelet at most \
                             {KUBELET_MAX_MINORS_BEHIND} minors behind the apiserver): \
                             rke2-hub upgrade --version <latest v{}.{} patch> --node {}",
                            node.name,
                            v.major,
                            u64::from(v.minor) + 1,
                            node.name
                        ),
                    )
                    .with("version", v.to_string())
                    .with("newest-server", newest.to_string())
                    .with("minors-behind", behind.to_string()),
                );
            }
        }
    }
    if let Some(target) = target {
        for (node, v) in &parsed {
            if v >= target {
                out.push(
                    Finding::new(
                        Code::VersionSkew,
                        Severity::Info,
                        &node.name,
                        format!("{} {}", node.role, node.name),
                        "nothing to do: the plan skips this node",
                    )
                    .with("version", v.to_string())
                    .with("target", target.to_string()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, version: &str) -> NodeVersion {
        NodeVersion {
            name: name.into(),
            role: role.into(),
            version: version.into(),
        }
    }

    #[test]
    fn a_fleet_on_one_version_has_no_skew() {
        let nodes = [
            node("s1", "server", "v1.33.5+rke2r1"),
            node("w1", "agent", "v1.33.5+rke2r1"),
        ];
        assert!(check(&nodes, None).is_empty());
    }

    #[test]
    fn a_worker_newer_than_the_oldest_server_is_a_blocker() {
        let nodes = [
            node("s1", "server", "v1.33.5+rke2r1"),
            node("s2", "server", "v1.33.4+rke2r1"),
            node("w1", "agent", "v1.33.5+rke2r1"),
        ];
        let found = check(&nodes, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Blocker);
        assert_eq!(found[0].node, "w1");
        assert_eq!(found[0].evidence[1].value, "v1.33.4+rke2r1");
    }

    #[test]
    fn servers_one_minor_apart_are_a_warning_on_the_older_one() {
        let nodes = [
            node("s1", "server", "v1.34.1+rke2r1"),
            node("s2", "server", "v1.33.5+rke2r1"),
            node("w1", "agent", "v1.33.5+rke2r1"),
        ];
        let found = check(&nodes, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].node, "s2");
        assert!(found[0].fix.contains("v1.34"));
    }

    #[test]
    fn servers_two_minors_apart_are_a_blocker() {
        let nodes = [
            node("s1", "server", "v1.34.1+rke2r1"),
            node("s2", "server", "v1.32.5+rke2r1"),
        ];
        let found = check(&nodes, None);
        assert_eq!(found[0].severity, Severity::Blocker);
        assert_eq!(found[0].evidence[2].value, "2");
    }

    #[test]
    fn a_worker_three_minors_behind_is_fine_and_four_is_a_blocker() {
        let nodes = [
            node("s1", "server", "v1.34.1+rke2r1"),
            node("w3", "agent", "v1.31.9+rke2r1"),
            node("w4", "agent", "v1.30.9+rke2r1"),
        ];
        let found = check(&nodes, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].node, "w4");
        assert_eq!(found[0].severity, Severity::Blocker);
        assert_eq!(found[0].evidence[2].value, "4");
    }

    #[test]
    fn nodes_at_or_above_the_target_are_info() {
        let nodes = [
            node("s1", "server", "v1.34.1+rke2r1"),
            node("w1", "agent", "v1.33.5+rke2r1"),
        ];
        let target: Rke2Version = "v1.34.1+rke2r1".parse().expect("valid");
        let found = check(&nodes, Some(&target));
        let info: Vec<_> = found
            .iter()
            .filter(|f| f.severity == Severity::Info)
            .collect();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].node, "s1");
    }

    #[test]
    fn nodes_without_a_known_version_are_left_out() {
        let nodes = [
            node("s1", "server", "v1.34.1+rke2r1"),
            node("w1", "agent", ""),
            node("w2", "agent", "garbage"),
        ];
        assert!(check(&nodes, None).is_empty());
    }
}
