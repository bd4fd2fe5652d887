//! Which agents are connected now, and when each was last heard from. In memory: the store
//! keeps the durable inventory; this keeps the live streams (to send them requests) and the
//! liveness decision.
//!
//! A session that leaves the registry (reaped as stale, replaced by a newer stream of the
//! same node, or dropped at shutdown) ends its stream: its task waits on the session's
//! `ended` signal. Otherwise a stream the hub stopped counting (say, after the hub itself was
//! frozen past the heartbeat timeout) would stay open with the agent talking into it, and
//! the node would look offline forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::engine::messages::ToAgent;

/// Where a session's requests go: the agent's response stream. The gRPC layer implements it
/// (converting to the wire there), so the registry and the engine never see prost types.
pub trait AgentLink: Send + Sync + std::fmt::Debug {
    /// Queues `message` without waiting; false when the stream is full or gone.
    fn try_send(&self, message: ToAgent) -> bool;
}

/// A plain channel of domain messages (tests, and any link that converts on its own).
impl AgentLink for mpsc::Sender<ToAgent> {
    fn try_send(&self, message: ToAgent) -> bool {
        mpsc::Sender::try_send(self, message).is_ok()
    }
}

/// One live stream.
#[derive(Debug)]
struct Session {
    id: u64,
    last_seen: OffsetDateTime,
    to_agent: Arc<dyn AgentLink>,
    /// Dropped with the session, which tells its stream task to end the stream.
    _ended: oneshot::Sender<()>,
}

/// What the stream task of a new session holds.
#[derive(Debug)]
pub struct SessionHandle {
    /// The session id (for [`Registry::disconnect`]).
    pub id: u64,
    /// Resolves when the session left the registry: the stream must end.
    pub ended: oneshot::Receiver<()>,
}

/// The live streams, by node name.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Session>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Pure: a node silent since `last_seen` is offline at `now` after `timeout`.
#[must_use]
pub fn is_stale(last_seen: OffsetDateTime, now: OffsetDateTime, timeout: Duration) -> bool {
    now - last_seen > timeout
}

impl Registry {
    /// Registers a new stream for `node`, replacing an older one (an agent that reconnected
    /// before the hub noticed its old stream died; the old stream is ended).
    pub fn connect(
        &self,
        node: &str,
        to_agent: impl AgentLink + 'static,
        now: OffsetDateTime,
    ) -> SessionHandle {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (end, ended) = oneshot::channel();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(
                node.to_owned(),
                Session {
                    id,
                    last_seen: now,
                    to_agent: Arc::new(to_agent),
                    _ended: end,
                },
            );
        }
        SessionHandle { id, ended }
    }

    /// Records that `node` spoke.
    pub fn seen(&self, node: &str, now: OffsetDateTime) {
        if let Ok(mut sessions) = self.sessions.lock()
            && let Some(session) = sessions.get_mut(node)
        {
            session.last_seen = now;
        }
    }

    /// Ends session `id` of `node`; returns whether it was the current one (a replaced
    /// session ending must not mark the node offline).
    pub fn disconnect(&self, node: &str, id: u64) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else {
            return false;
        };
        if sessions.get(node).is_some_and(|s| s.id == id) {
            sessions.remove(node);
            true
        } else {
            false
        }
    }

    /// Nodes whose streams went silent; their sessions are dropped, which ends the streams
    /// (the agents reconnect).
    pub fn reap_stale(&self, now: OffsetDateTime, timeout: Duration) -> Vec<String> {
        let Ok(mut sessions) = self.sessions.lock() else {
            return Vec::new();
        };
        let stale: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| is_stale(s.last_seen, now, timeout))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            sessions.remove(name);
        }
        stale
    }

    /// Ends `node`'s session, if it has one (its response stream ends): the node was removed
    /// and its certificate revoked, so its agent must not keep talking on an old stream.
    pub fn end(&self, node: &str) -> bool {
        self.sessions
            .lock()
            .map(|mut sessions| sessions.remove(node).is_some())
            .unwrap_or(false)
    }

    /// Drops every session (their response streams end): the hub is stopping.
    pub fn close_all(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.clear();
        }
    }

    /// Names of connected nodes.
    #[must_use]
    pub fn connected(&self) -> Vec<String> {
        self.sessions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends `message` to `node`'s agent; false if it is not connected.
    pub fn send(&self, node: &str, message: ToAgent) -> bool {
        let link = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(node).map(|s| Arc::clone(&s.to_agent)));
        link.is_some_and(|link| link.try_send(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: OffsetDateTime = time::macros::datetime!(2026-11-24 12:00 UTC);

    #[test]
    fn silence_longer_than_the_timeout_is_offline() {
        assert!(!is_stale(
            T0,
            T0 + time::Duration::seconds(30),
            Duration::from_secs(35)
        ));
        assert!(is_stale(
            T0,
            T0 + time::Duration::seconds(36),
            Duration::from_secs(35)
        ));
    }

    #[test]
    fn a_replaced_session_ending_does_not_disconnect_the_node() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel::<ToAgent>(1);
        let mut old = registry.connect("n1", tx.clone(), T0);
        let new = registry.connect("n1", tx, T0);
        assert!(
            old.ended
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed),
            "the replaced stream is told to end"
        );
        assert!(!registry.disconnect("n1", old.id));
        assert_eq!(registry.connected(), vec!["n1".to_owned()]);
        assert!(registry.disconnect("n1", new.id));
        assert!(registry.connected().is_empty());
    }

    #[test]
    fn stale_sessions_are_reaped() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel::<ToAgent>(1);
        let mut quiet = registry.connect("quiet", tx.clone(), T0);
        let mut chatty = registry.connect("chatty", tx, T0);
        registry.seen("chatty", T0 + time::Duration::seconds(40));
        assert_eq!(
            registry.reap_stale(T0 + time::Duration::seconds(41), Duration::from_secs(35)),
            vec!["quiet".to_owned()]
        );
        assert_eq!(registry.connected(), vec!["chatty".to_owned()]);
        assert_eq!(
            quiet.ended.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "a reaped session's stream is told to end"
        );
        assert_eq!(
            chatty.ended.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn requests_reach_only_a_connected_node_s_stream() {
        let registry = Registry::default();
        let (tx, mut rx) = mpsc::channel::<ToAgent>(1);
        let _session = registry.connect("n1", tx, T0);
        assert!(registry.send("n1", ToAgent::RequestStatus));
        assert_eq!(rx.try_recv(), Ok(ToAgent::RequestStatus));
        assert!(
            !registry.send("n2", ToAgent::RequestStatus),
            "not connected"
        );
        assert!(registry.send("n1", ToAgent::RequestStatus));
        assert!(
            !registry.send("n1", ToAgent::RequestStatus),
            "a full stream refuses instead of waiting"
        );
    }
}
