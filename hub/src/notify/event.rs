//! What the hub tells webhooks about, and the two bodies it sends: a generic JSON object
//! (one flat object per event, for scripts and chat bridges alike) and a Slack-compatible
//! `{"text": ...}` (Slack, Mattermost and Rocket.Chat incoming webhooks all take it).
//!
//! Pure: the payload builders take the event and its time and touch nothing else, so every
//! body the hub can send is unit-tested here.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Something a plan or its probes did that an operator may want pushed to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A plan was created (by an operator or auto-maintenance).
    PlanCreated {
        /// Plan id.
        plan: i64,
        /// `restart`, `rotate`, `upgrade`.
        kind: String,
        /// Who created it.
        actor: String,
    },
    /// A node's maintenance failed (the plan halts next).
    NodeFailed {
        /// Plan id.
        plan: i64,
        /// The node.
        node: String,
        /// Why, as the node's detail says.
        reason: String,
    },
    /// The plan halted: a node failed, a probe stayed down, its window is invalid.
    PlanHalted {
        /// Plan id.
        plan: i64,
        /// The plan's reason.
        reason: String,
    },
    /// Every node done or skipped.
    PlanCompleted {
        /// Plan id.
        plan: i64,
    },
    /// An operator aborted the plan.
    PlanAborted {
        /// Plan id.
        plan: i64,
        /// Who aborted it.
        actor: String,
    },
    /// An application probe went down.
    ProbeDown {
        /// Plan id.
        plan: i64,
        /// The probe's name.
        probe: String,
        /// What it checks (URL without secrets, host:port, workload).
        target: String,
        /// The last check's error.
        error: String,
    },
    /// An application probe passes again.
    ProbeUp {
        /// Plan id.
        plan: i64,
        /// The probe's name.
        probe: String,
    },
}

impl Event {
    /// The event's name in the generic body (`plan.halted`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::PlanCreated { .. } => "plan.created",
            Self::NodeFailed { .. } => "node.failed",
            Self::PlanHalted { .. } => "plan.halted",
            Self::PlanCompleted { .. } => "plan.completed",
            Self::PlanAborted { .. } => "plan.aborted",
            Self::ProbeDown { .. } => "probe.down",
            Self::ProbeUp { .. } => "probe.up",
        }
    }

    /// The plan it concerns.
    #[must_use]
    pub fn plan(&self) -> i64 {
        match self {
            Self::PlanCreated { plan, .. }
            | Self::NodeFailed { plan, .. }
            | Self::PlanHalted { plan, .. }
            | Self::PlanCompleted { plan }
            | Self::PlanAborted { plan, .. }
            | Self::ProbeDown { plan, .. }
            | Self::ProbeUp { plan, .. } => *plan,
        }
    }

    /// One line for a human (the Slack text and the generic body's `message`).
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::PlanCreated { plan, kind, actor } => {
                format!("plan {plan} ({kind}) created by {actor}")
            }
            Self::NodeFailed { plan, node, reason } => {
                format!("plan {plan}: node {node} failed: {reason}")
            }
            Self::PlanHalted { plan, reason } => format!("plan {plan} halted: {reason}"),
            Self::PlanCompleted { plan } => format!("plan {plan} completed"),
            Self::PlanAborted { plan, actor } => format!("plan {plan} aborted by {actor}"),
            Self::ProbeDown {
                plan,
                probe,
                target,
                error,
            } => format!("plan {plan}: probe {probe} down ({target}): {error}"),
            Self::ProbeUp { plan, probe } => format!("plan {plan}: probe {probe} up again"),
        }
    }

    /// The event's own fields, for the generic body.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::PlanCreated { kind, actor, .. } => vec![("kind", kind), ("actor", actor)],
            Self::NodeFailed { node, reason, .. } => vec![("node", node), ("reason", reason)],
            Self::PlanHalted { reason, .. } => vec![("reason", reason)],
            Self::PlanCompleted { .. } => vec![],
            Self::PlanAborted { actor, .. } => vec![("actor", actor)],
            Self::ProbeDown {
                probe,
                target,
                error,
                ..
            } => vec![("probe", probe), ("target", target), ("error", error)],
            Self::ProbeUp { probe, .. } => vec![("probe", probe)],
        }
    }
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`generic`].
    Generic,
    /// [`slack`].
    Slack,
}

/// The generic body: `{"event": "plan.halted", "plan": "3", "at": RFC 3339, "message": ...,
/// <the event's fields>}`. The plan id is a string, as in `plan show --output json`.
#[must_use]
pub fn generic(event: &Event, at: OffsetDateTime) -> Value {
    let mut body = Map::new();
    body.insert("event".into(), json!(event.name()));
    body.insert("plan".into(), json!(event.plan().to_string()));
    body.insert("at".into(), json!(at.format(&Rfc3339).unwrap_or_default()));
    body.insert("message".into(), json!(event.message()));
    for (key, value) in event.fields() {
        body.insert(key.into(), json!(value));
    }
    Value::Object(body)
}

/// The Slack-compatible body: `{"text": "rke2-ops: <message>"}`.
#[must_use]
pub fn slack(event: &Event) -> Value {
    json!({ "text": format!("rke2-ops: {}", event.message()) })
}

/// The body for `format`, serialized.
#[must_use]
pub fn body(format: Format, event: &Event, at: OffsetDateTime) -> String {
    match format {
        Format::Generic => generic(event, at),
        Format::Slack => slack(event),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const AT: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

    #[test]
    fn the_generic_body_is_flat_with_the_events_fields() {
        let e = Event::PlanHalted {
            plan: 3,
            reason: "server-2 failed: rke2 never became ready".into(),
        };
        assert_eq!(
            generic(&e, AT),
            json!({
                "event": "plan.halted",
                "plan": "3",
                "at": "2026-03-01T12:00:00Z",
                "message": "plan 3 halted: server-2 failed: rke2 never became ready",
                "reason": "server-2 failed: rke2 never became ready",
            })
        );
        let e = Event::ProbeDown {
            plan: 4,
            probe: "app".into(),
            target: "http://app/health".into(),
            error: "HTTP 503".into(),
        };
        let b = generic(&e, AT);
        assert_eq!(b["event"], "probe.down");
        assert_eq!(b["probe"], "app");
        assert_eq!(b["target"], "http://app/health");
        assert_eq!(b["error"], "HTTP 503");
        let e = Event::PlanCreated {
            plan: 1,
            kind: "restart".into(),
            actor: "root".into(),
        };
        let b = generic(&e, AT);
        assert_eq!(
            (b["event"].as_str(), b["kind"].as_str(), b["actor"].as_str()),
            (Some("plan.created"), Some("restart"), Some("root"))
        );
    }

    #[test]
    fn every_event_has_a_distinct_name_and_a_message_naming_the_plan() {
        let events = [
            Event::PlanCreated {
                plan: 7,
                kind: "rotate".into(),
                actor: "a".into(),
            },
            Event::NodeFailed {
                plan: 7,
                node: "n".into(),
                reason: "r".into(),
            },
            Event::PlanHalted {
                plan: 7,
                reason: "r".into(),
            },
            Event::PlanCompleted { plan: 7 },
            Event::PlanAborted {
                plan: 7,
                actor: "a".into(),
            },
            Event::ProbeDown {
                plan: 7,
                probe: "p".into(),
                target: "t".into(),
                error: "e".into(),
            },
            Event::ProbeUp {
                plan: 7,
                probe: "p".into(),
            },
        ];
        let names: std::collections::HashSet<_> = events.iter().map(Event::name).collect();
        assert_eq!(names.len(), events.len());
        for e in &events {
            assert!(e.message().starts_with("plan 7"), "{}", e.message());
            assert_eq!(generic(e, AT)["plan"], "7");
        }
    }

    #[test]
    fn the_slack_body_is_text_only() {
        let e = Event::PlanAborted {
            plan: 2,
            actor: "alice".into(),
        };
        assert_eq!(
            slack(&e),
            json!({"text": "rke2-ops: plan 2 aborted by alice"})
        );
        assert_eq!(
            body(Format::Slack, &e, AT),
            r#"{"text":"rke2-ops: plan 2 aborted by alice"}"#
        );
    }
}
