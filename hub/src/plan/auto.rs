//! Auto-maintenance, pure: which nodes need a renew-by-restart now. A node's renewal
//! deadline is its earliest leaf expiry; RKE2 reissues leaves on a start within 120 days of
//! it. A node is due when its deadline is `lead` away or closer (the lead must be inside RKE2's
//! window, so the restart renews), and it was not restarted by an auto plan in the last day
//! (a restart that renewed nothing — a leaf RKE2 does not manage — must not loop).

use std::time::Duration;

use time::OffsetDateTime;

/// RKE2's renewal window: a start renews leaves expiring within it.
pub const RKE2_WINDOW: Duration = Duration::from_secs(120 * 86_400);

/// Nodes due for a renew-by-restart at `now`.
#[must_use]
pub fn due_nodes(
    deadlines: &[(String, Option<OffsetDateTime>)],
    recently_restarted: &[String],
    now: OffsetDateTime,
    lead: Duration,
) -> Vec<String> {
    let lead = lead.min(RKE2_WINDOW);
    let mut due: Vec<String> = deadlines
        .iter()
        .filter(|(name, _)| !recently_restarted.contains(name))
        .filter_map(|(name, deadline)| {
            let deadline = (*deadline)?;
            (deadline - now <= lead).then(|| name.clone())
        })
        .collect();
    due.sort();
    due
}

/// Due nodes whose renewal deadline comes before the maintenance window next opens
/// (`next_open`; `None` when there is no window or it never opens): an auto plan waiting for
/// that window would restart them too late, so the operator must be told.
#[must_use]
pub fn late_for_window(
    deadlines: &[(String, Option<OffsetDateTime>)],
    due: &[String],
    next_open: Option<OffsetDateTime>,
) -> Vec<(String, OffsetDateTime)> {
    deadlines
        .iter()
        .filter(|(name, _)| due.contains(name))
        .filter_map(|(name, deadline)| {
            let deadline = (*deadline)?;
            next_open
                .is_none_or(|open| open > deadline)
                .then(|| (name.clone(), deadline))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn nodes_inside_the_lead_are_due_once() {
        let nodes = vec![
            ("s1".to_owned(), Some(NOW + time::Duration::days(20))),
            ("s2".to_owned(), Some(NOW + time::Duration::days(200))),
            ("w1".to_owned(), None),
            ("w2".to_owned(), Some(NOW - time::Duration::days(1))),
        ];
        assert_eq!(due_nodes(&nodes, &[], NOW, 30 * DAY), ["s1", "w2"]);
        assert_eq!(due_nodes(&nodes, &["s1".to_owned()], NOW, 30 * DAY), ["w2"]);
    }

    #[test]
    fn nodes_whose_deadline_comes_before_the_window_are_late() {
        let nodes = vec![
            ("s1".to_owned(), Some(NOW + time::Duration::days(2))),
            ("s2".to_owned(), Some(NOW + time::Duration::days(20))),
            ("w1".to_owned(), None),
        ];
        let due = ["s1".to_owned(), "s2".to_owned(), "w1".to_owned()];
        let opens = Some(NOW + time::Duration::days(5));
        assert_eq!(
            late_for_window(&nodes, &due, opens),
            [("s1".to_owned(), NOW + time::Duration::days(2))]
        );
        assert!(
            late_for_window(&nodes, &due[1..], opens).is_empty(),
            "only due nodes"
        );
        assert_eq!(
            late_for_window(&nodes, &due, None).len(),
            2,
            "a window that never opens"
        );
    }

    #[test]
    fn the_lead_is_capped_at_rke2s_window() {
        let nodes = vec![("s1".to_owned(), Some(NOW + time::Duration::days(150)))];
        assert!(due_nodes(&nodes, &[], NOW, 365 * DAY).is_empty());
        let inside = vec![("s1".to_owned(), Some(NOW + time::Duration::days(110)))];
        assert_eq!(due_nodes(&inside, &[], NOW, 365 * DAY), ["s1"]);
    }
}
