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
    fn the_lead_is_capped_at_rke2s_window() {
        let nodes = vec![("s1".to_owned(), Some(NOW + time::Duration::days(150)))];
        assert!(due_nodes(&nodes, &[], NOW, 365 * DAY).is_empty());
        let inside = vec![("s1".to_owned(), Some(NOW + time::Duration::days(110)))];
        assert_eq!(due_nodes(&inside, &[], NOW, 365 * DAY), ["s1"]);
    }
}
