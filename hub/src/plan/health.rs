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

/// Why the gates cannot decide yet: some connected node's report is missing, stale or says
/// etcd could not be asked. `ask` names the nodes whose agents should be asked for a fresh
/// status (`RequestStatus`); the reason names them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// In words, naming the nodes.
    pub reason: String,
    /// Nodes to ask for a fresh status.
    pub ask: Vec<String>,
}

/// The cluster's health for the gates. `kube` is `None` when the hub has no Kubernetes
/// access; node readiness then comes from the agents' kubelet probes.
///
/// etcd: the reports of every connected server are combined and the worst one wins (fewest
/// healthy members, most members, every alarm), so one server that sees a sick member holds
/// the gate even when another server's view is rosier. Offline servers are not asked; they
/// hold the gate as "agent offline" apiservers.
///
/// # Errors
/// [`Unknown`] when a connected server has no fresh etcd or readiness report (or its agent
/// could not ask etcd), or, without Kubernetes access, a connected node has no fresh
/// readiness report.
pub fn cluster_health(
    live: &[NodeLive],
    kube: Option<&[KubeNode]>,
    now: OffsetDateTime,
    max_age: Duration,
) -> Result<Health, Unknown> {
    let age = |at: OffsetDateTime| now - at;
    let fresh = |at: OffsetDateTime| age(at) <= max_age;
    let servers: Vec<&NodeLive> = live.iter().filter(|n| n.role == Role::Server).collect();
    let mut health = Health::default();
    let mut missing: Vec<String> = Vec::new();
    let mut ask: Vec<String> = Vec::new();
    let mut note_stale = |name: &str, what: &str, at: Option<OffsetDateTime>| {
        missing.push(match at {
            None => format!("{name} (no {what} report yet)"),
            Some(at) => format!(
                "{name} ({what} report {}s old)",
                age(at).whole_seconds().max(0)
            ),
        });
        if !ask.iter().any(|n| n == name) {
            ask.push(name.to_owned());
        }
    };
    let mut etcd_errors: Vec<String> = Vec::new();
    // (members, healthy) as each connected server sees etcd.
    let mut views: Vec<(usize, usize)> = Vec::new();
    for server in servers.iter().filter(|n| n.online) {
        match &server.etcd {
            Some(r) if fresh(r.received_at) && !r.error.is_empty() => {
                etcd_errors.push(format!("{}: {}", server.name, r.error));
            }
            Some(r) if fresh(r.received_at) => {
                let healthy = r.members.iter().filter(|(_, ok)| *ok).count();
                views.push((r.members.len(), healthy));
                for (name, ok) in &r.members {
                    if !ok && !health.etcd_unhealthy.contains(name) {
                        health.etcd_unhealthy.push(name.clone());
                    }
                }
                for alarm in &r.alarms {
                    if !health.etcd_alarms.contains(alarm) {
                        health.etcd_alarms.push(alarm.clone());
                    }
                }
            }
            other => note_stale(&server.name, "etcd", other.as_ref().map(|r| r.received_at)),
        }
    }
    let needs_readiness = |n: &NodeLive| n.online && (n.role == Role::Server || kube.is_none());
    for node in live.iter().filter(|n| needs_readiness(n)) {
        match &node.readiness {
            Some(r) if fresh(r.received_at) => {}
            other => note_stale(
                &node.name,
                "readiness",
                other.as_ref().map(|r| r.received_at),
            ),
        }
    }
    if !missing.is_empty() {
        return Err(Unknown {
            reason: format!(
                "waiting for fresh health reports from {} (asked for a fresh status)",
                missing.join(", ")
            ),
            ask,
        });
    }
    if !etcd_errors.is_empty() {
        return Err(Unknown {
            reason: format!("etcd could not be asked on {}", etcd_errors.join("; ")),
            ask: Vec::new(),
        });
    }
    if !servers.is_empty() && views.is_empty() {
        return Err(Unknown {
            reason: "no connected server's agent reports etcd health".to_owned(),
            ask: Vec::new(),
        });
    }
    health.etcd_members = views.iter().map(|v| v.0).max().unwrap_or(0);
    health.etcd_healthy = views.iter().map(|v| v.1).min().unwrap_or(0);
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
    fn the_worst_etcd_report_wins() {
        let sick = etcd([true, false, true], NOW - time::Duration::seconds(20));
        let well = etcd([true, true, true], NOW - time::Duration::seconds(1));
        let mut alarmed = etcd([true, true, true], NOW);
        alarmed.alarms = vec!["NOSPACE".into()];
        let live = vec![
            server("s1", Some(sick)),
            server("s2", Some(well)),
            server("s3", Some(alarmed)),
        ];
        let h = cluster_health(&live, None, NOW, AGE).expect("known");
        assert_eq!((h.etcd_members, h.etcd_healthy), (3, 2), "s1's view wins");
        assert_eq!(h.etcd_unhealthy, ["s2"], "and names the member it saw sick");
        assert_eq!(h.etcd_alarms, ["NOSPACE"], "s3's alarm is kept");
        assert!(h.apiservers_not_ready.is_empty() && h.nodes_not_ready.is_empty());
    }

    #[test]
    fn stale_or_missing_reports_name_the_node_and_ask_it() {
        let stale = etcd([true; 3], NOW - time::Duration::seconds(120));
        let live = vec![
            server("s1", Some(stale)),
            server("s2", None),
            server("s3", Some(etcd([true; 3], NOW))),
        ];
        let err = cluster_health(&live, None, NOW, AGE).expect_err("stale");
        assert_eq!(err.ask, ["s1", "s2"]);
        assert!(
            err.reason.contains("s1 (etcd report 120s old)")
                && err.reason.contains("s2 (no etcd report yet)"),
            "{}",
            err.reason
        );
        // Old readiness alone also holds; an offline server is not asked.
        let mut old_ready = server("s1", Some(etcd([true; 3], NOW)));
        old_ready.readiness = Some(ready(NOW - time::Duration::seconds(61)));
        let mut offline = server("s2", None);
        offline.online = false;
        let err = cluster_health(&[old_ready, offline], None, NOW, AGE).expect_err("old");
        assert_eq!(err.ask, ["s1"], "{}", err.reason);
        let agents_only = vec![NodeLive {
            role: Role::Agent,
            ..server("w1", None)
        }];
        assert!(cluster_health(&agents_only, None, NOW, AGE).is_ok());
        let mut silent_worker = agents_only[0].clone();
        silent_worker.readiness = None;
        let err = cluster_health(&[silent_worker.clone()], None, NOW, AGE).expect_err("no kube");
        assert_eq!(err.ask, ["w1"]);
        assert!(
            cluster_health(&[silent_worker], Some(&[]), NOW, AGE).is_ok(),
            "with Kubernetes access a worker's Node says whether it is Ready"
        );
    }

    #[test]
    fn a_server_that_cannot_ask_etcd_holds_the_gate() {
        let mut broken = etcd([true; 3], NOW);
        broken.members.clear();
        broken.error = "connection refused".into();
        let live = vec![
            server("s1", Some(etcd([true; 3], NOW))),
            server("s2", Some(broken)),
        ];
        let err = cluster_health(&live, None, NOW, AGE).expect_err("error");
        assert!(
            err.reason.contains("s2: connection refused"),
            "{}",
            err.reason
        );
        let mut all_offline = server("s1", Some(etcd([true; 3], NOW)));
        all_offline.online = false;
        assert!(cluster_health(&[all_offline], None, NOW, AGE).is_err());
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
