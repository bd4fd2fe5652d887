//! What the agents report about their node's health (etcd, probes, running version), kept in
//! memory as it arrives: the gates read it; nothing here is durable (a restarted hub waits
//! for fresh reports, which arrive within one heartbeat).

use std::collections::HashMap;
use std::sync::Mutex;

use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

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
    pub fn status(&self, node: &str, status: &pb::Status, now: OffsetDateTime) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        let entry = nodes.entry(node.to_owned()).or_default();
        if !status.rke2_version.is_empty() {
            entry.rke2_version.clone_from(&status.rke2_version);
        }
        if let Some(e) = &status.etcd {
            entry.etcd = Some(EtcdReport {
                members: e
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.healthy))
                    .collect(),
                alarms: e.alarms.clone(),
                error: e.error.clone(),
                received_at: now,
            });
        }
        if let Some(r) = &status.readiness {
            entry.readiness = Some(Readiness {
                apiserver_ready: r.apiserver_ready,
                kubelet_healthy: r.kubelet_healthy,
                detail: r.detail.clone(),
                received_at: now,
            });
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
