//! Agent reports coming in: connection and disconnection, statuses and heartbeats (kept in
//! [`super::live`] for the gates), and operation progress and results (delivered to the node
//! task waiting for them, [`super::ops`]). The gRPC layer converts the wire messages to the
//! domain types taken here; nothing here writes a plan.

use time::OffsetDateTime;

use super::Engine;
use super::messages::{HealthStatus, OperationProgress, OperationResult};
use super::ops::OpEvent;

impl Engine {
    /// An agent connected (after its hello): pending operations are sent again.
    pub fn on_connected(&self, node: &str, version: &str) {
        self.live.hello(node, version);
        self.ops.resend(&self.registry, node);
        self.wake.notify_one();
    }

    /// An agent's status.
    pub fn on_status(&self, node: &str, status: &HealthStatus) {
        self.live.status(node, status, OffsetDateTime::now_utc());
        if status.etcd.is_some() || status.readiness.is_some() {
            self.wake.notify_one();
        }
    }

    /// An agent's bare heartbeat: its last reports hold as of now.
    pub fn on_heartbeat(&self, node: &str) {
        self.live.heartbeat(node, OffsetDateTime::now_utc());
    }

    /// An agent's stream ended: what it reported no longer holds.
    pub fn on_disconnected(&self, node: &str) {
        self.live.forget(node);
    }

    /// An agent's operation progress.
    pub fn on_progress(&self, node: &str, progress: OperationProgress) {
        let id = progress.operation_id.clone();
        if !self
            .ops
            .deliver(node, &id, OpEvent::Progress(progress), |_, _| false)
        {
            tracing::warn!(%node, operation = %id, "progress for another node's operation ignored");
        }
    }

    /// An agent's operation result.
    pub fn on_result(&self, node: &str, result: OperationResult) {
        self.live.version(node, &result.rke2_version);
        let id = result.operation_id.clone();
        let in_maintenance = |plan: i64, attempt: u32| {
            self.store.plan_nodes(plan).is_ok_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.node == node && n.attempt == attempt && n.phase.in_progress())
            })
        };
        if !self
            .ops
            .deliver(node, &id, OpEvent::Result(result), in_maintenance)
        {
            tracing::warn!(%node, operation = %id, "result for another node's operation ignored");
        }
    }
}
