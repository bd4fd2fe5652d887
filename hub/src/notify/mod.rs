//! Webhook notifications: plan created, node failed, plan halted, completed, aborted, probe
//! down and up, POSTed to every configured webhook as a generic JSON body or a
//! Slack-compatible one.
//!
//! The engine must never wait for a receiver: [`Notifier::send`] only puts the event on each
//! webhook's bounded queue (a full queue drops it and counts `dropped`), and one task per
//! webhook delivers in order with a timeout and retries ([`deliver`]). Outcomes are counted
//! in `rke2ops_hub_webhook_deliveries_total{webhook,outcome}`.
//!
//! - [`event`]: the events and the pure payload builders;
//! - [`spec`]: the `webhooks` setting and URL redaction;
//! - [`deliver`]: the delivery task and its pure retry schedule.

pub mod deliver;
pub mod event;
pub mod spec;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rke2ops_common::exposition::Labels;
use time::OffsetDateTime;
use tokio::sync::mpsc;

pub use event::{Event, Format};
pub use spec::{Webhook, redacted_url};

/// Events a webhook's queue holds while its receiver is slow or away.
pub const QUEUE: usize = 256;

/// The configured webhooks' queues. Cheap to share (`Arc`); dropping it ends the tasks once
/// their queues are drained.
#[derive(Debug)]
pub struct Notifier {
    queues: Vec<(String, mpsc::Sender<(Event, OffsetDateTime)>)>,
    counter: Family<Labels, Counter>,
}

impl Notifier {
    /// Starts one delivery task per webhook (on the current tokio runtime) with the default
    /// timeout and backoff; none configured, no notifier.
    #[must_use]
    pub fn start(hooks: Vec<Webhook>, counter: Family<Labels, Counter>) -> Option<Self> {
        Self::start_with(hooks, counter, deliver::BACKOFF.to_vec())
    }

    /// [`Notifier::start`] with its own retry schedule (tests).
    #[must_use]
    pub fn start_with(
        hooks: Vec<Webhook>,
        counter: Family<Labels, Counter>,
        schedule: Vec<Duration>,
    ) -> Option<Self> {
        if hooks.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(deliver::TIMEOUT)
            // A redirect would resend the body elsewhere: a receiver answers, or it fails.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let queues = hooks
            .into_iter()
            .map(|hook| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tracing::info!(webhook = %hook.name, url = %redacted_url(&hook.url), format = ?hook.format, "webhook configured");
                let name = hook.name.clone();
                tokio::spawn(deliver::run(
                    hook,
                    rx,
                    client.clone(),
                    counter.clone(),
                    schedule.clone(),
                ));
                (name, tx)
            })
            .collect();
        Some(Self { queues, counter })
    }

    /// Queues `event` (stamped now) for every webhook; never waits.
    pub fn send(&self, event: &Event) {
        let at = OffsetDateTime::now_utc();
        for (name, queue) in &self.queues {
            if queue.try_send((event.clone(), at)).is_err() {
                tracing::warn!(webhook = %name, event = event.name(), "webhook queue full: event dropped");
                deliver::count(&self.counter, name, "dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let counter = Family::<Labels, Counter>::default();
        // A receiver that never answers in time: nothing is delivered during the test.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/x", listener.local_addr().expect("addr"));
        let hook = spec::parse(&format!("q={url}"), 0).expect("ok");
        let n = Notifier::start_with(vec![hook], counter.clone(), vec![]).expect("one");
        for plan in 0..(QUEUE as i64 + 10) {
            n.send(&Event::PlanCompleted { plan });
        }
        let dropped = counter
            .get_or_create(&vec![
                ("webhook", "q".to_owned()),
                ("outcome", "dropped".to_owned()),
            ])
            .get();
        // The task may have taken one off the queue already.
        assert!((9..=10).contains(&dropped), "{dropped}");
        drop(listener);
    }

    /// A receiver answering `status()` to every request; counts the requests.
    async fn receiver(
        status: std::sync::Arc<std::sync::atomic::AtomicU16>,
        hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> String {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = conn.read(&mut buf).await;
                hits.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst);
                let reply =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_receiver_that_keeps_failing_is_given_up_counted_and_the_next_event_still_goes() {
        use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
        let status = std::sync::Arc::new(AtomicU16::new(500));
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let url = receiver(status.clone(), hits.clone()).await;
        let counter = Family::<Labels, Counter>::default();
        let hook = spec::parse(&format!("ops={url}"), 0).expect("ok");
        let schedule = vec![Duration::from_millis(10), Duration::from_millis(10)];
        let n = Notifier::start_with(vec![hook], counter.clone(), schedule).expect("one");
        let outcome = |o: &str| {
            counter
                .get_or_create(&vec![
                    ("webhook", "ops".to_owned()),
                    ("outcome", o.to_owned()),
                ])
                .get()
        };
        n.send(&Event::PlanCompleted { plan: 1 });
        let started = std::time::Instant::now();
        while outcome("failed") == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never given up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "the first try and two retries"
        );
        assert_eq!(outcome("delivered"), 0);
        // The receiver is back: the next event is delivered, the given-up one is not resent.
        status.store(200, Ordering::SeqCst);
        n.send(&Event::PlanCompleted { plan: 2 });
        while outcome("delivered") == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never delivered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        assert_eq!(outcome("failed"), 1);
    }

    #[test]
    fn no_webhooks_no_notifier() {
        assert!(Notifier::start(vec![], Family::default()).is_none());
    }
}
