//! What the agents report about their node's health (etcd, probes, running version), kept in
//! memory as it arrives: the gates read it; nothing here is durable (a restarted hub waits
//! for fresh reports, which arrive within one heartbeat).
//!
//! A quiet node still proves its health: its agent probes at every heartbeat and sends a
//! status only when the result changed, a bare heartbeat otherwise. So a heartbeat means
//! "as last reported, checked just now", and refreshes the age of the last reports.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use super::messages::HealthStatus;
use crate::plan::health::{EtcdReport, Readiness};

/// Reports of one node.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    /// Running version as last reported.
    pub rke2_version: String,
    /// Latest etcd report (servers).
    pub etcd: Option<EtcdReport>,
    /// Latest readiness report.
    pub readiness: Option<Readiness>,
}

/// The reports of every node.
#[derive(Debug, Default)]
pub struct Live {
    nodes: Mutex<HashMap<String, Reports>>,
}

impl Live {
    /// Records a hello's version.
    pub fn hello(&self, node: &str, version: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.entry(node.to_owned()).or_default().rke2_version = version.to_owned();
        }
    }

    /// Records what a status carries.
    pub fn status(&self, node: &str, status: &HealthStatus, now: OffsetDateTime) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        let entry = nodes.entry(node.to_owned()).or_default();
        if !status.rke2_version.is_empty() {
            entry.rke2_version.clone_from(&status.rke2_version);
        }
        if let Some(e) = &status.etcd {
            entry.etcd = Some(e.report(now));
        }
        if let Some(r) = &status.readiness {
            entry.readiness = Some(r.report(now));
        }
    }

    /// Records a bare heartbeat: the agent probed and found nothing changed since its last
    /// status, so its last reports hold as of `now`.
    pub fn heartbeat(&self, node: &str, now: OffsetDateTime) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        if let Some(entry) = nodes.get_mut(node) {
            if let Some(e) = entry.etcd.as_mut() {
                e.received_at = now;
            }
            if let Some(r) = entry.readiness.as_mut() {
                r.received_at = now;
            }
        }
    }

    /// Forgets `node`'s reports (its stream ended: what it said no longer holds).
    pub fn forget(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock()
            && let Some(entry) = nodes.get_mut(node)
        {
            entry.etcd = None;
            entry.readiness = None;
        }
    }

    /// Records the version an operation result reports.
    pub fn version(&self, node: &str, version: &str) {
        if !version.is_empty() {
            self.hello(node, version);
        }
    }

    /// The reports of `node`.
    #[must_use]
    pub fn get(&self, node: &str) -> Reports {
        self.nodes
            .lock()
            .ok()
            .and_then(|n| n.get(node).cloned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-05 10:00 UTC);

    fn status() -> HealthStatus {
        HealthStatus {
            etcd: Some(crate::engine::messages::EtcdHealth {
                members: vec![("s1".into(), true)],
                ..Default::default()
            }),
            readiness: Some(crate::engine::messages::ReadinessProbe {
                apiserver_ready: true,
                kubelet_healthy: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_heartbeat_refreshes_the_age_of_the_last_reports() {
        let live = Live::default();
        live.status("s1", &status(), T0);
        let later = T0 + time::Duration::minutes(10);
        live.heartbeat("s1", later);
        let r = live.get("s1");
        assert_eq!(r.etcd.map(|e| e.received_at), Some(later));
        assert_eq!(r.readiness.map(|e| e.received_at), Some(later));
        // A heartbeat never invents a report for a node that sent none.
        live.heartbeat("w1", later);
        assert!(live.get("w1").etcd.is_none());
        live.forget("s1");
        assert!(live.get("s1").etcd.is_none() && live.get("s1").readiness.is_none());
    }
}
