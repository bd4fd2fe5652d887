//! A probe's record over a plan: samples, failures, whether it is down (its threshold of
//! consecutive failures reached), the outage in progress and the longest one, with the nodes
//! that were in maintenance meanwhile. Pure: the caller passes each result, the time and the
//! nodes in maintenance.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An outage: consecutive failed samples, from the first failure to the first success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// The first failed sample.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// The first passing sample after it (`None`: still failing).
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// Nodes in maintenance at any failed sample of it.
    pub nodes: Vec<String>,
}

impl Outage {
    /// How long it lasted (until `now` while it goes on).
    #[must_use]
    pub fn seconds(&self, now: OffsetDateTime) -> i64 {
        (self.end.unwrap_or(now) - self.start)
            .whole_seconds()
            .max(0)
    }
}

/// A change worth telling: the probe went down (threshold reached) or came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Its threshold of consecutive failures was reached.
    Down,
    /// It passed again after being down.
    Up,
}

/// One probe's record in one plan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Checks made.
    pub samples: u64,
    /// Checks failed.
    pub failures: u64,
    /// Failures in a row up to now.
    pub consecutive_failures: u32,
    /// Down: `consecutive_failures` reached the threshold.
    pub down: bool,
    /// When it went down (the threshold's sample).
    #[serde(with = "time::serde::rfc3339::option")]
    pub down_since: Option<OffsetDateTime>,
    /// The last failure's error.
    pub last_error: String,
    /// The last check.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_at: Option<OffsetDateTime>,
    /// The outage in progress.
    pub current: Option<Outage>,
    /// The longest outage so far (ended or not).
    pub longest: Option<Outage>,
}

impl Tally {
    /// Records one check; returns the transition it caused, if any.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        at: OffsetDateTime,
        in_maintenance: &[String],
        threshold: u32,
    ) -> Option<Transition> {
        self.samples += 1;
        self.last_at = Some(at);
        match result {
            Ok(()) => {
                self.consecutive_failures = 0;
                if let Some(mut outage) = self.current.take() {
                    outage.end = Some(at);
                    self.keep_longest(&outage, at);
                }
                if self.down {
                    self.down = false;
                    self.down_since = None;
                    return Some(Transition::Up);
                }
                None
            }
            Err(error) => {
                self.failures += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = error;
                let outage = self.current.get_or_insert_with(|| Outage {
                    start: at,
                    end: None,
                    nodes: Vec::new(),
                });
                for node in in_maintenance {
                    if !outage.nodes.contains(node) {
                        outage.nodes.push(node.clone());
                    }
                }
                let outage = outage.clone();
                self.keep_longest(&outage, at);
                if !self.down && self.consecutive_failures >= threshold.max(1) {
                    self.down = true;
                    self.down_since = Some(at);
                    return Some(Transition::Down);
                }
                None
            }
        }
    }

    fn keep_longest(&mut self, outage: &Outage, now: OffsetDateTime) {
        let same = self
            .longest
            .as_ref()
            .is_some_and(|l| l.start == outage.start);
        if same
            || self
                .longest
                .as_ref()
                .is_none_or(|l| outage.seconds(now) > l.seconds(now))
        {
            self.longest = Some(outage.clone());
        }
    }

    /// Passing samples over all samples, in percent (100 with no samples).
    #[must_use]
    pub fn availability(&self) -> f64 {
        if self.samples == 0 {
            return 100.0;
        }
        #[allow(clippy::cast_precision_loss)] // counts of a plan's samples
        let percent = (self.samples - self.failures) as f64 * 100.0 / self.samples as f64;
        percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000 + s).expect("time")
    }

    #[test]
    fn threshold_failures_make_it_down_and_a_pass_brings_it_up() {
        let mut tally = Tally::default();
        assert_eq!(tally.record(Ok(()), t(0), &[], 3), None);
        let nodes = vec!["agent-1".to_owned()];
        assert_eq!(tally.record(Err("refused".into()), t(2), &nodes, 3), None);
        assert_eq!(tally.record(Err("refused".into()), t(4), &nodes, 3), None);
        assert_eq!(
            tally.record(Err("timeout".into()), t(6), &[], 3),
            Some(Transition::Down)
        );
        assert!(tally.down);
        assert_eq!(tally.down_since, Some(t(6)));
        assert_eq!(tally.last_error, "timeout");
        assert_eq!(tally.record(Ok(()), t(8), &[], 3), Some(Transition::Up));
        assert_eq!((tally.samples, tally.failures), (5, 3));
        assert!((tally.availability() - 40.0).abs() < 1e-9);
        let longest = tally.longest.expect("outage");
        assert_eq!((longest.start, longest.end), (t(2), Some(t(8))));
        assert_eq!(longest.seconds(t(100)), 6);
        assert_eq!(longest.nodes, ["agent-1"]);
        assert!(tally.current.is_none());
    }

    #[test]
    fn the_longest_outage_is_kept_and_a_short_blip_is_not_down() {
        let mut tally = Tally::default();
        tally.record(Err("x".into()), t(0), &[], 3);
        tally.record(Err("x".into()), t(10), &[], 3);
        tally.record(Ok(()), t(20), &[], 3);
        assert!(!tally.down, "two failures under a threshold of 3");
        tally.record(Err("y".into()), t(30), &["server-2".into()], 3);
        tally.record(Ok(()), t(32), &[], 3);
        let longest = tally.longest.expect("outage");
        assert_eq!(longest.start, t(0));
        assert_eq!(longest.seconds(t(99)), 20);
        assert!(longest.nodes.is_empty());
        assert_eq!(Tally::default().availability(), 100.0);
    }
}
