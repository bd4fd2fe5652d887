//! Operations in flight on agents' streams: which node runs which operation id, and where
//! its progress and result go. The hub re-sends a node's pending operation whenever its agent
//! reconnects (agents treat a known id idempotently); a result that arrives before anyone
//! waits for it (a hub that just restarted) is kept until the node's task asks.

use std::collections::HashMap;
use std::sync::Mutex;

use rke2ops_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::registry::Registry;

/// What an agent said about an operation.
#[derive(Debug, Clone)]
pub enum OpEvent {
    /// A step started or ended.
    Progress(pb::OperationProgress),
    /// It ended.
    Result(pb::OperationResult),
}

#[derive(Debug)]
struct Slot {
    node: String,
    run: pb::RunOperation,
    tx: mpsc::UnboundedSender<OpEvent>,
}

/// The operations in flight.
#[derive(Debug, Default)]
pub struct Ops {
    slots: Mutex<HashMap<String, Slot>>,
    early: Mutex<HashMap<String, pb::OperationResult>>,
}

impl Ops {
    /// Registers `run` for `node` and sends it; events arrive on the returned receiver (a
    /// result that came before is delivered at once).
    pub fn start(
        &self,
        registry: &Registry,
        node: &str,
        run: pb::RunOperation,
    ) -> mpsc::UnboundedReceiver<OpEvent> {
        // Registered before it is sent, so a result that comes back at once finds its slot.
        let id = run.operation_id.clone();
        let rx = self.listen(node, run.clone());
        let sent = registry.send(
            node,
            pb::HubMessage {
                body: Some(pb::hub_message::Body::Run(run)),
            },
        );
        tracing::info!(%node, operation = %id, sent, "operation requested");
        rx
    }

    /// Registers `run` for `node` *without* sending it (an aborted plan waits for the result
    /// of an operation that may be running, but must never start one).
    pub fn listen(&self, node: &str, run: pb::RunOperation) -> mpsc::UnboundedReceiver<OpEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = run.operation_id.clone();
        if let Some(result) = self.early.lock().ok().and_then(|mut e| e.remove(&id)) {
            let _ = tx.send(OpEvent::Result(result));
        }
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(
                id,
                Slot {
                    node: node.to_owned(),
                    run,
                    tx,
                },
            );
        }
        rx
    }

    /// Forgets operation `id` (its task finished with it).
    pub fn finish(&self, id: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(id);
        }
    }

    /// `node`'s agent (re)connected: send it its pending operations again.
    pub fn resend(&self, registry: &Registry, node: &str) {
        let runs: Vec<pb::RunOperation> = self
            .slots
            .lock()
            .map(|s| {
                s.values()
                    .filter(|s| s.node == node)
                    .map(|s| s.run.clone())
                    .collect()
            })
            .unwrap_or_default();
        for run in runs {
            tracing::info!(%node, operation = %run.operation_id, "re-sending the operation after a reconnect");
            registry.send(
                node,
                pb::HubMessage {
                    body: Some(pb::hub_message::Body::Run(run)),
                },
            );
        }
    }

    /// Sends operation `id` to `node` again (the agent reports its result if it finished).
    pub fn resend_one(&self, registry: &Registry, node: &str, id: &str) {
        let run = self
            .slots
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|s| s.run.clone()));
        if let Some(run) = run {
            registry.send(
                node,
                pb::HubMessage {
                    body: Some(pb::hub_message::Body::Run(run)),
                },
            );
        }
    }

    /// Cancels `id` on `node` (the agent refuses if it already began).
    pub fn cancel(&self, registry: &Registry, node: &str, id: &str) {
        registry.send(
            node,
            pb::HubMessage {
                body: Some(pb::hub_message::Body::Cancel(pb::CancelOperation {
                    operation_id: id.to_owned(),
                })),
            },
        );
    }

    /// Delivers an agent's event. Returns false when `node` reports on an operation that is
    /// not its own (ignored).
    pub fn deliver(&self, node: &str, id: &str, event: OpEvent) -> bool {
        let Ok(slots) = self.slots.lock() else {
            return false;
        };
        match slots.get(id) {
            Some(slot) if slot.node == node => {
                let _ = slot.tx.send(event);
                true
            }
            Some(_) => false,
            None => {
                drop(slots);
                if let OpEvent::Result(result) = event
                    && id.contains(&format!("-{node}-"))
                    && let Ok(mut early) = self.early.lock()
                {
                    early.insert(id.to_owned(), result);
                }
                true
            }
        }
    }
}

/// The id of `node`'s operation in `attempt` of plan `plan`: stable across hub restarts, so
/// an agent that already ran it reports it instead of running it twice.
#[must_use]
pub fn operation_id(plan: i64, node: &str, attempt: u32) -> String {
    format!("plan{plan}-{node}-{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_go_to_the_owner_only_and_early_results_are_kept() {
        let registry = Registry::default();
        let ops = Ops::default();
        let id = operation_id(3, "s1", 1);
        let result = pb::OperationResult {
            operation_id: id.clone(),
            ..Default::default()
        };
        // Before anyone waits (hub just restarted): kept.
        assert!(ops.deliver("s1", &id, OpEvent::Result(result.clone())));
        let run = pb::RunOperation {
            operation_id: id.clone(),
            kind: None,
        };
        let mut rx = ops.start(&registry, "s1", run);
        assert!(matches!(rx.try_recv(), Ok(OpEvent::Result(_))));
        // Another node cannot report on s1's operation.
        assert!(!ops.deliver("w1", &id, OpEvent::Result(result)));
        assert!(rx.try_recv().is_err());
        ops.finish(&id);
    }
}
