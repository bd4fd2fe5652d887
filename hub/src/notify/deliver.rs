//! Delivery to one webhook: a task that takes its events in order and POSTs each until it is
//! accepted or the retries are spent, then goes on to the next. Sequential on purpose: a
//! receiver sees `plan.created` before `plan.completed` even when it was down in between.
//!
//! The retry decision is pure ([`retry_after`]); the task does the I/O.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rke2ops_common::exposition::Labels;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::event::{Event, body};
use super::spec::{Webhook, redacted_url};

/// How long one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Waits before the retries: 1 s, 2 s, 4 s, 8 s, 16 s (about half a minute of a receiver
/// being away is ridden out; longer, the event is given up and logged).
pub const BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// After failed attempt number `attempt` (0 for the first), the wait before the next one
/// from `schedule`, or none: give up.
#[must_use]
pub fn retry_after(schedule: &[Duration], attempt: usize) -> Option<Duration> {
    schedule.get(attempt).copied()
}

/// Whether an HTTP status means the receiver took the event.
#[must_use]
pub fn accepted(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Counts an outcome for `webhook` (labels: the webhook's name, never its URL).
pub fn count(family: &Family<Labels, Counter>, webhook: &str, outcome: &'static str) {
    family
        .get_or_create(&vec![
            ("webhook", webhook.to_owned()),
            ("outcome", outcome.to_owned()),
        ])
        .inc();
}

/// One POST; the reason on failure (without the URL: reqwest's errors would carry it).
async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if accepted(status.as_u16()) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// The delivery task of `hook`: runs until every sender is gone.
pub async fn run(
    hook: Webhook,
    mut events: mpsc::Receiver<(Event, OffsetDateTime)>,
    client: reqwest::Client,
    counter: Family<Labels, Counter>,
    schedule: Vec<Duration>,
) {
    while let Some((event, at)) = events.recv().await {
        let payload = body(hook.format, &event, at);
        let mut attempt = 0;
        loop {
            match post(&client, &hook.url, payload.clone()).await {
                Ok(()) => {
                    count(&counter, &hook.name, "delivered");
                    break;
                }
                Err(reason) => match retry_after(&schedule, attempt) {
                    Some(wait) => {
                        tracing::debug!(webhook = %hook.name, event = event.name(), %reason, retry_in = ?wait, "webhook delivery failed");
                        attempt += 1;
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        tracing::warn!(
                            webhook = %hook.name,
                            url = %redacted_url(&hook.url),
                            event = event.name(),
                            plan = event.plan(),
                            %reason,
                            attempts = attempt + 1,
                            "webhook delivery given up"
                        );
                        count(&counter, &hook.name, "failed");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_five_times_then_gives_up() {
        let waits: Vec<u64> = (0..)
            .map_while(|a| retry_after(&BACKOFF, a))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(retry_after(&BACKOFF, 5), None);
        assert_eq!(retry_after(&[], 0), None, "no schedule: one attempt");
    }

    #[test]
    fn only_2xx_is_accepted() {
        assert!(accepted(200) && accepted(204));
        assert!(!accepted(301) && !accepted(429) && !accepted(500));
    }
}
