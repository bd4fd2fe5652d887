//! `?watch=true` as the stand-in answers it: a long poll. The listener sends whole bodies,
//! not streams (a streaming body in `sim::server::listen` would allow real watches), so a
//! watch request waits (up to [`MAX_WAIT`], or its `timeoutSeconds`) for the first changes
//! after its `resourceVersion`, answers them as a JSON stream of watch
//! events and ends; clients (client-go's reflector, kubectl's informers) then watch again
//! from the last event's `resourceVersion`, as they do whenever a real apiserver closes a
//! watch. Pure helpers; the etcd side is `Store::changes`.

use std::time::Duration;

use serde_json::{Value, json};

/// The longest a watch request waits for a change before answering with no events. Short,
/// because client-go only gets the response headers with the whole body: kubectl's
/// informers (`kubectl delete`'s and `kubectl wait`'s) cannot stop before their pending watch
/// returns, so every command that waited would linger this long after it was satisfied.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// How long to wait: `timeoutSeconds` when given and shorter than [`MAX_WAIT`].
#[must_use]
pub fn wait_for(timeout_seconds: Option<&str>) -> Duration {
    timeout_seconds
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(MAX_WAIT, |t| Duration::from_secs(t).min(MAX_WAIT))
}

/// Whether a query asks for a watch (`watch=true` / `watch=1`).
#[must_use]
pub fn is_watch(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
}

/// The event a filtered watch reports for one change, as kube-apiserver's watch cache does:
/// an object entering the selection is `ADDED`, leaving it `DELETED`, changing inside it
/// `MODIFIED`; `None` when the change is outside the selection.
#[must_use]
pub fn event_type(
    deleted: bool,
    created: bool,
    old_matches: bool,
    new_matches: bool,
) -> Option<&'static str> {
    match (deleted, created, old_matches, new_matches) {
        (true, _, true, _) => Some("DELETED"),
        (true, _, false, _) => None,
        (false, true, _, true) => Some("ADDED"),
        (false, false, true, true) => Some("MODIFIED"),
        (false, false, false, true) => Some("ADDED"),
        (false, _, true, false) => Some("DELETED"),
        _ => None,
    }
}

/// The response body: one `{"type", "object"}` document per line.
#[must_use]
pub fn encode(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, object) in events {
        if let Ok(line) = serde_json::to_vec(&json!({"type": t, "object": object})) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_follow_the_selection() {
        assert_eq!(event_type(false, true, false, true), Some("ADDED"));
        assert_eq!(event_type(false, false, true, true), Some("MODIFIED"));
        assert_eq!(event_type(false, false, false, true), Some("ADDED"));
        assert_eq!(event_type(false, false, true, false), Some("DELETED"));
        assert_eq!(event_type(false, false, false, false), None);
        assert_eq!(event_type(true, false, true, false), Some("DELETED"));
        assert_eq!(event_type(true, false, false, false), None);
    }

    #[test]
    fn waits_and_encoding() {
        assert_eq!(wait_for(None), MAX_WAIT);
        assert_eq!(wait_for(Some("1")), Duration::from_secs(1));
        assert_eq!(wait_for(Some("600")), MAX_WAIT);
        assert!(is_watch("watch=true&resourceVersion=5"));
        assert!(is_watch("watch=1"));
        assert!(!is_watch("watch=false"));
        let body = encode(&[("ADDED", json!({"a": 1})), ("DELETED", json!({"b": 2}))]);
        let text = String::from_utf8(body).expect("utf-8");
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with(r#"{"object":{"a":1},"type":"ADDED"}"#));
    }
}
