//! The node's renewal deadline: RKE2 reissues a leaf only when the service starts within
//! `CertificateRenewDays` (120) of the leaf's expiry. The last moment a restart still renews
//! is therefore the earliest NotAfter among the leaves; a service that has been running since
//! before the window opened will not renew by itself. Pure functions only.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// RKE2's renewal window (days before NotAfter in which a start reissues a leaf).
pub const RENEW_WINDOW_DAYS: u32 = 120;

/// What the node's leaves say about renewal, at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalState {
    /// Earliest NotAfter among the leaves: the last moment a restart still renews before
    /// something expires. `None` without leaves.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    /// When the window opens (`deadline - window`): from then on a start renews.
    #[serde(with = "time::serde::rfc3339::option")]
    pub window_opens: Option<OffsetDateTime>,
    /// `now` is at or past `window_opens`.
    pub in_window: bool,
    /// A restart is needed for RKE2 to renew: inside the window and the service has not
    /// started since the window opened (unknown start time counts as "not since").
    pub restart_due: bool,
}

/// Assesses renewal from the leaves' NotAfter times.
///
/// `service_started` is the unit's last start (systemd's ActiveEnterTimestamp); `None` when
/// unknown or not running.
#[must_use]
pub fn assess(
    leaf_not_after: impl IntoIterator<Item = OffsetDateTime>,
    now: OffsetDateTime,
    window: Duration,
    service_started: Option<OffsetDateTime>,
) -> RenewalState {
    let deadline = leaf_not_after.into_iter().min();
    let window_opens = deadline.map(|d| d - window);
    let in_window = window_opens.is_some_and(|opens| now >= opens);
    let started_inside = match (service_started, window_opens) {
        (Some(started), Some(opens)) => started >= opens,
        _ => false,
    };
    RenewalState {
        deadline,
        window_opens,
        in_window,
        restart_due: in_window && !started_inside,
    }
}

/// The renewal window of `days` days.
#[must_use]
pub fn window(days: u32) -> Duration {
    Duration::days(i64::from(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);
    const W: Duration = Duration::days(120);

    #[test]
    fn deadline_is_the_earliest_leaf_expiry() {
        let s = assess(
            [NOW + Duration::days(300), NOW + Duration::days(200)],
            NOW,
            W,
            None,
        );
        assert_eq!(s.deadline, Some(NOW + Duration::days(200)));
        assert_eq!(s.window_opens, Some(NOW + Duration::days(80)));
        assert!(!s.in_window);
        assert!(!s.restart_due);
    }

    #[test]
    fn no_leaves_no_deadline() {
        let s = assess([], NOW, W, None);
        assert_eq!(s.deadline, None);
        assert!(!s.in_window && !s.restart_due);
    }

    #[test]
    fn long_running_service_inside_window_must_restart() {
        // Started 250 days ago, leaves expire in 100 days: the 245-day rule was missed.
        let s = assess(
            [NOW + Duration::days(100)],
            NOW,
            W,
            Some(NOW - Duration::days(250)),
        );
        assert!(s.in_window);
        assert!(s.restart_due);
    }

    #[test]
    fn service_started_inside_window_is_not_due_again() {
        // Started 10 days ago, when the window had already opened (and certs were not
        // renewed, e.g. a simulator fault): restarting again is not what is due.
        let s = assess(
            [NOW + Duration::days(100)],
            NOW,
            W,
            Some(NOW - Duration::days(10)),
        );
        assert!(s.in_window);
        assert!(!s.restart_due);
    }

    #[test]
    fn unknown_start_inside_window_counts_as_due() {
        assert!(assess([NOW + Duration::days(1)], NOW, W, None).restart_due);
    }

    #[test]
    fn window_boundary_is_inclusive() {
        let s = assess([NOW + W], NOW, W, None);
        assert!(s.in_window);
    }

    #[test]
    fn expired_leaf_is_still_restart_due() {
        let s = assess(
            [NOW - Duration::days(1)],
            NOW,
            W,
            Some(NOW - Duration::days(400)),
        );
        assert!(s.in_window && s.restart_due);
    }
}
