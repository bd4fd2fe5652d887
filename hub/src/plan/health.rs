//! The health gates' inputs and verdicts, pure: the cluster's health before a node starts
//! (from the agents' reports and, when the hub has Kubernetes access, the Node objects) and
//! whether a node recovered after its operation.

use std::time::Duration;

use time::OffsetDateTime;

use super::decide::{Health, Role};
use super::model::PlanKind;

/// etcd as one server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdReport {
    /// (member name, healthy).
    pub members: Vec<(String, bool)>,
    /// Active alarms.
    pub alarms: Vec<String>,
    /// Why etcd could not be asked (then `members` is empty).
    pub error: String,
    /// When the hub received it.
    pub received_at: OffsetDateTime,
}

/// A node's own probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Servers: local apiserver `/readyz` ok.
    pub apiserver_ready: bool,
    /// kubelet `/healthz` ok.
    pub kubelet_healthy: bool,
    /// Why not.
    pub detail: String,
    /// When the hub received it.
    pub received_at: OffsetDateTime,
}

/// What the hub knows live about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLive {
    /// Node name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its agent's stream is up.
    pub online: bool,
    /// Running RKE2 version as last reported.
    pub rke2_version: String,
    /// Servers: the latest etcd report.
    pub etcd: Option<EtcdReport>,
    /// The latest readiness report.
    pub readiness: Option<Readiness>,
}

/// The Kubernetes view of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNode {
    /// Node name.
    pub name: String,
    /// Ready condition is True.
    pub ready: bool,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

/// The cluster's health for the gates. `kube` is `None` when the hub has no Kubernetes
/// access; node readiness then comes from the agents' kubelet probes.
///
/// # Errors
/// Why the health cannot be known (no fresh etcd report from any server).
pub fn cluster_health(
    live: &[NodeLive],
    kube: Option<&[KubeNode]>,
    now: OffsetDateTime,
    max_age: Duration,
) -> Result<Health, String> {
    let fresh = |at: OffsetDateTime| now - at <= max_age;
    let servers: Vec<&NodeLive> = live.iter().filter(|n| n.role == Role::Server).collect();
    let mut health = Health::default();
    if !servers.is_empty() {
        let report = servers
            .iter()
            .filter(|n| n.online)
            .filter_map(|n| n.etcd.as_ref())
            .filter(|r| r.error.is_empty() && fresh(r.received_at))
            .max_by_key(|r| r.received_at)
            .ok_or("no fresh etcd health report from any server's agent")?;
        health.etcd_members = report.members.len();
        health.etcd_healthy = report.members.iter().filter(|(_, ok)| *ok).count();
        health.etcd_alarms.clone_from(&report.alarms);
    }
    for server in &servers {
        match (&server.readiness, server.online) {
            (_, false) => health
                .apiservers_not_ready
                .push(format!("{} (agent offline)", server.name)),
            (Some(r), true) if r.apiserver_ready => {}
            _ => health.apiservers_not_ready.push(server.name.clone()),
        }
    }
    match kube {
        Some(nodes) => {
            health.nodes_not_ready = nodes
                .iter()
                .filter(|n| !n.ready)
                .map(|n| n.name.clone())
                .collect();
            // A connected node the API does not know yet (a kubelet still registering, or a
            // node_name that differs from the Node's): a plan could not cordon or verify it,
            // so plans that include it wait and say why rather than the node failing later.
            health.nodes_unregistered = live
                .iter()
                .filter(|n| n.online && !nodes.iter().any(|k| k.name == n.name))
                .map(|n| n.name.clone())
                .collect();
        }
        None => {
            health.nodes_not_ready = live
                .iter()
                .filter(|n| !n.online || !n.readiness.as_ref().is_some_and(|r| r.kubelet_healthy))
                .map(|n| n.name.clone())
                .collect();
        }
    }
    Ok(health)
}

/// Whether `node` is healthy again after its operation, whose result arrived at `since`:
/// agent connected and its probes (reported no earlier than the operation began) pass, Node
/// Ready, and for an upgrade the target version running and reported by the kubelet; a
/// server's etcd reports every member healthy.
///
/// # Errors
/// Why not yet, in words.
pub fn node_recovered(
    kind: PlanKind,
    target: &str,
    node: &NodeLive,
    kube: Option<&KubeNode>,
    since: OffsetDateTime,
) -> Result<String, String> {
    if !node.online {
        return Err("its agent is not connected".to_owned());
    }
    let readiness = node
        .readiness
        .as_ref()
        .filter(|r| r.received_at >= since)
        .ok_or("no readiness report since the operation began")?;
    if node.role == Role::Server && !readiness.apiserver_ready {
        return Err(format!("apiserver not ready: {}", readiness.detail));
    }
    if !readiness.kubelet_healthy {
        return Err(format!("kubelet not healthy: {}", readiness.detail));
    }
    let mut done = vec![
        match node.role {
            Role::Server => "apiserver and kubelet healthy",
            Role::Agent => "kubelet healthy",
        }
        .to_owned(),
    ];
    if node.role == Role::Server {
        let etcd = node
            .etcd
            .as_ref()
            .filter(|r| r.received_at >= since)
            .ok_or("no etcd report since the operation began")?;
        if !etcd.error.is_empty() {
            return Err(format!("etcd: {}", etcd.error));
        }
        let sick: Vec<&str> = etcd
            .members
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n.as_str())
            .collect();
        if !sick.is_empty() {
            return Err(format!("etcd members unhealthy: {}", sick.join(", ")));
        }
        done.push(format!("etcd {} members healthy", etcd.members.len()));
    }
    if let Some(k) = kube {
        if !k.ready {
            return Err("Node not Ready".to_owned());
        }
        done.push("Node Ready".to_owned());
    }
    if kind == PlanKind::Upgrade {
        if node.rke2_version != target {
            return Err(format!(
                "agent reports {} running, not {target}",
                node.rke2_version
            ));
        }
        if let Some(k) = kube
            && k.kubelet_version != target
        {
            return Err(format!(
                "kubelet reports {}, not {target}",
                k.kubelet_version
            ));
        }
        done.push(format!("running {target}"));
    }
    Ok(done.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 10:00 UTC);
    const AGE: Duration = Duration::from_secs(60);

    fn ready(at: OffsetDateTime) -> Readiness {
        Readiness {
            apiserver_ready: true,
            kubelet_healthy: true,
            detail: String::new(),
            received_at: at,
        }
    }

    fn etcd(healthy: [bool; 3], at: OffsetDateTime) -> EtcdReport {
        EtcdReport {
            members: healthy
                .iter()
                .enumerate()
                .map(|(i, ok)| (format!("s{}", i + 1), *ok))
                .collect(),
            alarms: vec![],
            error: String::new(),
            received_at: at,
        }
    }

    fn server(name: &str, report: Option<EtcdReport>) -> NodeLive {
        NodeLive {
            name: name.into(),
            role: Role::Server,
            online: true,
            rke2_version: "v1.34.1+rke2r1".into(),
            etcd: report,
            readiness: Some(ready(NOW)),
        }
    }

    #[test]
    fn freshest_etcd_report_wins() {
        let old = etcd([true, false, true], NOW - time::Duration::seconds(20));
        let new = etcd([true, true, true], NOW - time::Duration::seconds(1));
        let live = vec![server("s1", Some(old)), server("s2", Some(new))];
        let h = cluster_health(&live, None, NOW, AGE).expect("known");
        assert_eq!((h.etcd_members, h.etcd_healthy), (3, 3));
        assert!(h.apiservers_not_ready.is_empty() && h.nodes_not_ready.is_empty());
    }

    #[test]
    fn stale_or_missing_reports_make_health_unknown() {
        let stale = etcd([true; 3], NOW - time::Duration::seconds(120));
        let err = cluster_health(&[server("s1", Some(stale))], None, NOW, AGE).expect_err("stale");
        assert!(err.contains("etcd"), "{err}");
        let agents_only = vec![NodeLive {
            role: Role::Agent,
            ..server("w1", None)
        }];
        assert!(cluster_health(&agents_only, None, NOW, AGE).is_ok());
    }

    #[test]
    fn offline_servers_and_unready_nodes_are_named() {
        let mut down = server("s2", None);
        down.online = false;
        let live = vec![server("s1", Some(etcd([true; 3], NOW))), down];
        let kube = vec![
            KubeNode {
                name: "s1".into(),
                ready: true,
                kubelet_version: String::new(),
                unschedulable: false,
            },
            KubeNode {
                name: "w1".into(),
                ready: false,
                kubelet_version: String::new(),
                unschedulable: false,
            },
        ];
        let h = cluster_health(&live, Some(&kube), NOW, AGE).expect("known");
        assert_eq!(h.apiservers_not_ready, ["s2 (agent offline)"]);
        assert_eq!(h.nodes_not_ready, ["w1"]);
        let h = cluster_health(&live, None, NOW, AGE).expect("known");
        assert_eq!(h.nodes_not_ready, ["s2"]);
    }

    #[test]
    fn a_connected_node_without_a_node_object_holds_the_gate() {
        let live = vec![server("s1", Some(etcd([true; 3], NOW)))];
        let h = cluster_health(&live, Some(&[]), NOW, AGE).expect("known");
        assert_eq!(h.nodes_unregistered, ["s1"], "a kubelet still registering");
        assert!(h.nodes_not_ready.is_empty());
    }

    #[test]
    fn recovery_needs_fresh_probes_etcd_ready_and_the_version() {
        let since = NOW - time::Duration::seconds(5);
        let mut s = server("s1", Some(etcd([true; 3], NOW)));
        let k = KubeNode {
            name: "s1".into(),
            ready: true,
            kubelet_version: "v1.34.1+rke2r1".into(),
            unschedulable: false,
        };
        let ok = node_recovered(PlanKind::Upgrade, "v1.34.1+rke2r1", &s, Some(&k), since)
            .expect("recovered");
        assert!(ok.contains("running v1.34.1+rke2r1"), "{ok}");
        let old_kubelet = KubeNode {
            kubelet_version: "v1.33.5+rke2r1".into(),
            ..k.clone()
        };
        assert!(
            node_recovered(
                PlanKind::Upgrade,
                "v1.34.1+rke2r1",
                &s,
                Some(&old_kubelet),
                since
            )
            .expect_err("kubelet")
            .contains("kubelet reports v1.33.5")
        );
        s.readiness = Some(ready(since - time::Duration::seconds(1)));
        assert!(
            node_recovered(PlanKind::Rotate, "", &s, Some(&k), since)
                .expect_err("stale")
                .contains("since the operation")
        );
        s.readiness = Some(ready(NOW));
        s.etcd = Some(etcd([true, false, true], NOW));
        assert!(
            node_recovered(PlanKind::Rotate, "", &s, None, since)
                .expect_err("etcd")
                .contains("s2")
        );
        s.online = false;
        assert!(node_recovered(PlanKind::Rotate, "", &s, None, since).is_err());
    }
}
