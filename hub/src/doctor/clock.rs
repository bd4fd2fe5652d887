//! `clock-skew`: a node's clock against the hub's. Each status carries the agent's clock
//! when it was sent; the hub records the difference on arrival. A node far off issues or
//! checks certificates against the wrong "now": what it issues is not yet valid elsewhere
//! (`x509: certificate has expired or is not yet valid`), what it checks expires early.

use std::time::Duration;

use rke2ops_common::doctor::{Code, Finding, Severity};

/// Default threshold: well above network delay and the time a status waits to be sent, far
/// below what breaks TLS.
pub const DEFAULT_THRESHOLD_SECS: u64 = 30;
/// A blocker from this many thresholds off.
pub const BLOCKER_FACTOR: u32 = 10;

/// The finding for `node` whose clock was `offset_ms` ahead of the hub's (negative: behind),
/// if it is more than `threshold` off.
#[must_use]
pub fn check(node: &str, offset_ms: i64, threshold: Duration) -> Option<Finding> {
    let off = Duration::from_millis(offset_ms.unsigned_abs());
    if off <= threshold {
        return None;
    }
    let severity = if off > threshold * BLOCKER_FACTOR {
        Severity::Blocker
    } else {
        Severity::Warning
    };
    let direction = if offset_ms > 0 { "ahead of" } else { "behind" };
    #[allow(clippy::cast_precision_loss)]
    let secs = offset_ms as f64 / 1000.0;
    Some(
        Finding::new(
            Code::ClockSkew,
            severity,
            node,
            "clock",
            format!(
                "on {node}: timedatectl status; turn time sync on (timedatectl set-ntp true, \
                 or chronyc makestep with chrony)"
            ),
        )
        .with("offset", format!("{secs:+.1} s ({direction} the hub)"))
        .with("threshold", format!("{} s", threshold.as_secs())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn a_clock_within_the_threshold_is_fine_either_way() {
        assert!(check("n1", 0, T).is_none());
        assert!(check("n1", 30_000, T).is_none());
        assert!(check("n1", -30_000, T).is_none());
    }

    #[test]
    fn past_the_threshold_a_warning_and_ten_times_past_it_a_blocker() {
        let ahead = check("n1", 45_000, T).expect("finding");
        assert_eq!(
            (ahead.code, ahead.severity),
            (Code::ClockSkew, Severity::Warning)
        );
        assert_eq!(ahead.evidence[0].value, "+45.0 s (ahead of the hub)");
        let behind = check("n1", -301_000, T).expect("finding");
        assert_eq!(behind.severity, Severity::Blocker);
        assert_eq!(behind.evidence[0].value, "-301.0 s (behind the hub)");
        assert_eq!(behind.node, "n1");
    }
}
