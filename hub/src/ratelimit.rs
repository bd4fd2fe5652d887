//! Per-node rate limits on what agents send: a token bucket per node and kind of message,
//! pure (time is passed in), so a broken or hostile agent cannot make the hub parse and
//! store full certificate lists, or sign certificates, as fast as it can send them.
//!
//! The limits are far above what a healthy agent does: one full status when its files
//! change (debounced) and a summary or heartbeat every 10 s; one renewal a month. Full
//! statuses (certificate lists) are limited much tighter than summaries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Most messages at once.
    pub burst: u32,
    /// One more allowed per this interval.
    pub every: Duration,
}

/// Full statuses (every certificate, stored as a new snapshot): a burst of 20 (reconnects,
/// a rotation touching every file), then one per second.
pub const FULL_STATUS: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(1),
};

/// Summary statuses (a few fields): a burst of 100, then ten a second, far above an agent's
/// one per heartbeat plus its answers to `RequestStatus`.
pub const SUMMARY_STATUS: Rate = Rate {
    burst: 100,
    every: Duration::from_millis(100),
};

/// Certificate renewals: 3 in a row (a retry after a lost answer), then one per 10 minutes.
pub const RENEWAL: Rate = Rate {
    burst: 3,
    every: Duration::from_secs(600),
};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by node. Nodes are few (one entry each, bounded by the inventory), so entries
/// are never evicted.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// A limiter with `rate` for every node.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Whether `node` may send one more message at `now` (and takes its token if so).
    pub fn allow(&self, node: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let burst = f64::from(self.rate.burst);
        let bucket = buckets.entry(node.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill =
            now.saturating_duration_since(bucket.at).as_secs_f64() / self.rate.every.as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_per_interval_per_node() {
        let limiter = Limiter::new(Rate {
            burst: 3,
            every: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow("n1", t0)));
        assert!(!limiter.allow("n1", t0), "burst spent");
        assert!(limiter.allow("n2", t0), "other nodes have their own bucket");
        assert!(!limiter.allow("n1", t0 + Duration::from_secs(9)));
        assert!(limiter.allow("n1", t0 + Duration::from_secs(10)));
        assert!(!limiter.allow("n1", t0 + Duration::from_secs(11)));
        // A long silence refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| limiter.allow("n1", later)));
        assert!(!limiter.allow("n1", later));
    }

    #[test]
    fn the_shipped_limits_leave_a_healthy_agent_alone() {
        // A healthy agent: a reconnect burst of 3 statuses, then one every 10 s for a day.
        let full = Limiter::new(FULL_STATUS);
        let t0 = Instant::now();
        assert!((0..3).all(|_| full.allow("n", t0)));
        assert!((1..8640).all(|i| full.allow("n", t0 + Duration::from_secs(10 * i))));
        // Summaries every 300 ms (a test fleet's heartbeat) for an hour.
        let summary = Limiter::new(SUMMARY_STATUS);
        assert!((0..12_000).all(|i| summary.allow("n", t0 + Duration::from_millis(300 * i))));
    }
}
