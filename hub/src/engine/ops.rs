//! Operations in flight on agents' streams: which node runs which operation id, and where
//! its progress and result go. The hub re-sends a node's pending operation whenever its agent
//! reconnects (agents treat a known id idempotently); a result that arrives before anyone
//! waits for it (a hub that just restarted) is kept until the node's task asks, but only
//! when its id names the very node that sent it and the caller says the plan node is in
//! maintenance with that attempt, and at most one per node, [`MAX_EARLY`] in all: a peer
//! cannot park results for other nodes or grow the hub's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use rke2ops_common::ids::MAX_OPERATION_ID;
use sha2::Digest as _;

use super::messages::{OperationProgress, OperationResult, RunOperation, ToAgent};
use crate::registry::Registry;

/// What an agent said about an operation.
#[derive(Debug, Clone)]
pub enum OpEvent {
    /// A step started or ended.
    Progress(OperationProgress),
    /// It ended.
    Result(OperationResult),
}

#[derive(Debug)]
struct Slot {
    node: String,
    run: RunOperation,
    tx: mpsc::UnboundedSender<OpEvent>,
}

/// Most early results kept at once (one per node at most).
pub const MAX_EARLY: usize = 1024;

/// The operations in flight.
#[derive(Debug, Default)]
pub struct Ops {
    slots: Mutex<HashMap<String, Slot>>,
    /// Early results by node: (operation id, result).
    early: Mutex<HashMap<String, (String, OperationResult)>>,
}

impl Ops {
    /// Registers `run` for `node` and sends it; events arrive on the returned receiver (a
    /// result that came before is delivered at once).
    pub fn start(
        &self,
        registry: &Registry,
        node: &str,
        run: RunOperation,
    ) -> mpsc::UnboundedReceiver<OpEvent> {
        // Registered before it is sent, so a result that comes back at once finds its slot.
        let id = run.operation_id.clone();
        let rx = self.listen(node, run.clone());
        let sent = registry.send(node, ToAgent::Run(run));
        tracing::info!(%node, operation = %id, sent, "operation requested");
        rx
    }

    /// Registers `run` for `node` *without* sending it (an aborted plan waits for the result
    /// of an operation that may be running, but must never start one).
    pub fn listen(&self, node: &str, run: RunOperation) -> mpsc::UnboundedReceiver<OpEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = run.operation_id.clone();
        if let Ok(mut early) = self.early.lock()
            && early.get(node).is_some_and(|(kept, _)| *kept == id)
            && let Some((_, result)) = early.remove(node)
        {
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
        let runs: Vec<RunOperation> = self
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
            registry.send(node, ToAgent::Run(run));
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
            registry.send(node, ToAgent::Run(run));
        }
    }

    /// Cancels `id` on `node` (the agent refuses if it already began).
    pub fn cancel(&self, registry: &Registry, node: &str, id: &str) {
        registry.send(
            node,
            ToAgent::Cancel {
                operation_id: id.to_owned(),
            },
        );
    }

    /// Delivers an agent's event. Returns false when `node` reports on an operation that is
    /// not its own (ignored). A result nobody waits for is kept only when its id is exactly
    /// one of `node`'s operation ids and `in_maintenance(plan, attempt)` says that plan node
    /// is in maintenance with that attempt (a restarted hub is about to adopt it).
    pub fn deliver(
        &self,
        node: &str,
        id: &str,
        event: OpEvent,
        in_maintenance: impl FnOnce(i64, u32) -> bool,
    ) -> bool {
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
                let Some((plan, attempt)) = parse_operation_id(id, node) else {
                    return false;
                };
                if let OpEvent::Result(result) = event
                    && in_maintenance(plan, attempt)
                    && let Ok(mut early) = self.early.lock()
                    && (early.len() < MAX_EARLY || early.contains_key(node))
                {
                    early.insert(node.to_owned(), (id.to_owned(), result));
                }
                true
            }
        }
    }
}

/// Pure: the (plan, attempt) of an id that [`operation_id`] makes for `node`, or `None`
/// when `id` is not exactly such an id (another node's, leading zeros, signs, spaces or
/// anything else make it `None`).
#[must_use]
pub fn parse_operation_id(id: &str, node: &str) -> Option<(i64, u32)> {
    let rest = id.strip_prefix("plan")?;
    let (plan, rest) = rest.split_once('-')?;
    let (_, attempt) = rest.rsplit_once('-')?;
    let plan: i64 = plan.parse().ok()?;
    let attempt: u32 = attempt.parse().ok()?;
    (!node.is_empty() && operation_id(plan, node, attempt) == id).then_some((plan, attempt))
}

/// The id of `node`'s operation in `attempt` of plan `plan`: stable across hub restarts, so
/// an agent that already ran it reports it instead of running it twice. Agents accept ids
/// of at most [`MAX_OPERATION_ID`] characters (they name a folder); a node name too long
/// for that (names may have 253) is cut and followed by 8 hex digits of its SHA-256, so
/// the id stays unique per node.
#[must_use]
pub fn operation_id(plan: i64, node: &str, attempt: u32) -> String {
    let plain = format!("plan{plan}-{node}-{attempt}");
    if plain.len() <= MAX_OPERATION_ID {
        return plain;
    }
    let digest = sha2::Sha256::digest(node.as_bytes());
    let tag = hex::encode(digest.get(..4).unwrap_or_default());
    let fixed = format!("plan{plan}--{tag}-{attempt}").len();
    let keep = node
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end + fixed <= MAX_OPERATION_ID)
        .last()
        .unwrap_or(0);
    format!("plan{plan}-{}-{tag}-{attempt}", &node[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_go_to_the_owner_only_and_early_results_are_kept() {
        let registry = Registry::default();
        let ops = Ops::default();
        let id = operation_id(3, "s1", 1);
        let result = OperationResult {
            operation_id: id.clone(),
            ..Default::default()
        };
        // Before anyone waits (hub just restarted): kept.
        assert!(ops.deliver("s1", &id, OpEvent::Result(result.clone()), |_, _| true));
        let run = RunOperation {
            operation_id: id.clone(),
            kind: None,
        };
        let mut rx = ops.start(&registry, "s1", run);
        assert!(matches!(rx.try_recv(), Ok(OpEvent::Result(_))));
        // Another node cannot report on s1's operation.
        assert!(!ops.deliver("w1", &id, OpEvent::Result(result), |_, _| true));
        assert!(rx.try_recv().is_err());
        ops.finish(&id);
    }

    fn result(id: &str) -> OpEvent {
        OpEvent::Result(OperationResult {
            operation_id: id.to_owned(),
            ..Default::default()
        })
    }

    #[test]
    fn early_results_are_kept_only_for_the_callers_own_plan_node_in_maintenance() {
        let registry = Registry::default();
        let ops = Ops::default();
        // Another node's id, ids that only contain the node's name, and a plan node that is
        // not in maintenance are all dropped.
        assert!(!ops.deliver("s1", "plan3-s2-1", result("plan3-s2-1"), |_, _| true));
        assert!(!ops.deliver("s1", "xplan3-s1-1", result("xplan3-s1-1"), |_, _| true));
        assert!(!ops.deliver("1", "plan3-s-1-1", result("plan3-s-1-1"), |_, _| true));
        assert!(
            ops.deliver("s1", "plan3-s1-2", result("plan3-s1-2"), |p, a| p == 3
                && a == 1)
        );
        let run = |id: &str| RunOperation {
            operation_id: id.to_owned(),
            kind: None,
        };
        let mut rx = ops.listen("s1", run("plan3-s1-2"));
        assert!(rx.try_recv().is_err(), "not in maintenance: not kept");
        // One per node: a second early result replaces the first.
        assert!(ops.deliver("s1", "plan3-s1-3", result("plan3-s1-3"), |_, _| true));
        assert!(ops.deliver("s1", "plan3-s1-4", result("plan3-s1-4"), |_, _| true));
        assert!(ops.listen("s1", run("plan3-s1-3")).try_recv().is_err());
        assert!(matches!(
            ops.listen("s1", run("plan3-s1-4")).try_recv(),
            Ok(OpEvent::Result(_))
        ));
        // Bounded overall.
        for i in 0..(MAX_EARLY + 10) {
            let node = format!("n{i}");
            let id = operation_id(1, &node, 1);
            ops.deliver(&node, &id, result(&id), |_, _| true);
        }
        assert_eq!(ops.early.lock().map(|e| e.len()).unwrap_or(0), MAX_EARLY);
        drop(registry);
    }

    #[test]
    fn operation_ids_parse_exactly() {
        assert_eq!(parse_operation_id("plan3-s1-2", "s1"), Some((3, 2)));
        assert_eq!(
            parse_operation_id("plan12-node-with-dashes-7", "node-with-dashes"),
            Some((12, 7))
        );
        assert_eq!(
            parse_operation_id("plan3-s1-2", "s2"),
            None,
            "another node's"
        );
        for bad in [
            "",
            "plan",
            "plan3",
            "plan3-s1",
            "plan-s1-1",
            "plan03-s1-1",
            "plan3-s1-01",
            "plan3--1",
            "plan+3-s1-1",
            "plan3-s1-+1",
            " plan3-s1-1",
            "plan3-s1-1 ",
            "Plan3-s1-1",
            "plan3-s1-99999999999",
        ] {
            assert_eq!(parse_operation_id(bad, "s1"), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_of_long_node_names_stay_valid_unique_and_parse() {
        let long = format!("{}.example.com", "a".repeat(200));
        let other = format!("{}.example.org", "a".repeat(200));
        let id = operation_id(123_456, &long, 42);
        assert!(id.len() <= MAX_OPERATION_ID, "{}", id.len());
        assert_eq!(rke2ops_common::ids::check_operation_id(&id), Ok(()));
        assert_ne!(id, operation_id(123_456, &other, 42), "unique per node");
        assert_eq!(parse_operation_id(&id, &long), Some((123_456, 42)));
        assert_eq!(parse_operation_id(&id, &other), None);
        // Every node name the hub accepts (lowercase, digits, '-', '.') makes a valid id.
        for node in ["s1", "a", &"b".repeat(253), "node-1.zone-a.example.com"] {
            let id = operation_id(i64::MAX, node, u32::MAX);
            assert_eq!(rke2ops_common::ids::check_operation_id(&id), Ok(()), "{id}");
        }
    }
}
