//! RKE2's own certificate monitor: every 30 minutes each node posts `CertificateExpirationWarning`
//! (a leaf expired, not yet valid, or within 120 days) and, on servers,
//! `CACertificateExpirationWarning` (a CA within 365 days) on its Node; `CertificateExpirationOK`
//! once after a clean start. The hub reads them and shows each beside the agent's finding it
//! confirms; a warning no agent finding explains (the agent is old, offline, or sees other
//! files) is a finding of its own.
//!
//! Events outlive their cause (the API keeps them about an hour), so a warning counts only
//! when it is newer than the node's last renewal (its newest leaf's NotBefore, from the
//! stored snapshot) and than its last `CertificateExpirationOK`.

use std::collections::HashMap;

use rke2ops_common::doctor::{Code, Finding, Severity};
use time::OffsetDateTime;

/// The leaf warning's reason.
pub const LEAF_WARNING: &str = "CertificateExpirationWarning";
/// The CA warning's reason.
pub const CA_WARNING: &str = "CACertificateExpirationWarning";
/// The clean check's reason.
pub const OK: &str = "CertificateExpirationOK";

/// One certificate-monitor event on a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEvent {
    /// The Node it is about.
    pub node: String,
    /// [`LEAF_WARNING`], [`CA_WARNING`] or [`OK`].
    pub reason: String,
    /// RKE2's message (which files, which dates).
    pub message: String,
    /// When it was last posted.
    pub last_seen: OffsetDateTime,
}

/// The agent codes each warning confirms.
fn confirms(reason: &str) -> &'static [Code] {
    match reason {
        LEAF_WARNING => &[
            Code::CertExpired,
            Code::CertNotYetValid,
            Code::RenewalDeadlinePassed,
            Code::RenewalDeadlineNear,
            Code::ServicePastRenewalWindow,
        ],
        CA_WARNING => &[Code::CaExpiring],
        _ => &[],
    }
}

/// Adds the current warnings among `events` to `findings`: as evidence on the findings of
/// their node they confirm, else as an `rke2-cert-warning` of their own. `renewed_at`: each
/// node's newest leaf NotBefore.
pub fn merge(
    findings: &mut Vec<Finding>,
    events: &[CertEvent],
    renewed_at: &HashMap<String, OffsetDateTime>,
) {
    let last_ok: HashMap<&str, OffsetDateTime> =
        events
            .iter()
            .filter(|e| e.reason == OK)
            .fold(HashMap::new(), |mut m, e| {
                let at = m.entry(e.node.as_str()).or_insert(e.last_seen);
                *at = (*at).max(e.last_seen);
                m
            });
    // The newest warning per (node, reason).
    let mut current: HashMap<(&str, &str), &CertEvent> = HashMap::new();
    for e in events.iter().filter(|e| !confirms(&e.reason).is_empty()) {
        let stale = renewed_at.get(&e.node).is_some_and(|at| e.last_seen < *at)
            || last_ok
                .get(e.node.as_str())
                .is_some_and(|at| e.last_seen < *at);
        if stale {
            continue;
        }
        let slot = current
            .entry((e.node.as_str(), e.reason.as_str()))
            .or_insert(e);
        if e.last_seen > slot.last_seen {
            *slot = e;
        }
    }
    let mut current: Vec<&CertEvent> = current.into_values().collect();
    current.sort_by(|a, b| (&a.node, &a.reason).cmp(&(&b.node, &b.reason)));
    for e in current {
        let said = format!("{} at {}: {}", e.reason, e.last_seen, e.message);
        let mut confirmed = false;
        for f in findings
            .iter_mut()
            .filter(|f| f.node == e.node && confirms(&e.reason).contains(&f.code))
        {
            f.evidence.push(rke2ops_common::doctor::Evidence {
                field: "rke2_event".to_owned(),
                value: said.clone(),
            });
            confirmed = true;
        }
        if !confirmed {
            findings.push(
                Finding::new(
                    Code::Rke2CertWarning,
                    Severity::Warning,
                    &e.node,
                    format!("event {}", e.reason),
                    format!(
                        "on {}: rke2-node-agent doctor names the files; renew with \
                         rke2-hub restart --node {} (CAs: rke2 certificate rotate-ca)",
                        e.node, e.node
                    ),
                )
                .with("reason", &e.reason)
                .with("last_seen", e.last_seen.to_string())
                .with("message", &e.message),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000 + secs).expect("time")
    }

    fn event(node: &str, reason: &str, secs: i64) -> CertEvent {
        CertEvent {
            node: node.into(),
            reason: reason.into(),
            message: format!("{reason} message"),
            last_seen: at(secs),
        }
    }

    fn near(node: &str) -> Finding {
        Finding::new(
            Code::RenewalDeadlineNear,
            Severity::Warning,
            node,
            "server/tls/serving-kube-apiserver.crt",
            "restart",
        )
    }

    #[test]
    fn a_warning_confirms_the_agents_finding_on_its_node() {
        let mut findings = vec![near("s1"), near("s2")];
        merge(
            &mut findings,
            &[
                event("s1", LEAF_WARNING, 100),
                event("s1", LEAF_WARNING, 50),
            ],
            &HashMap::new(),
        );
        assert_eq!(findings.len(), 2);
        let evidence = findings[0].evidence.last().expect("evidence");
        assert_eq!(evidence.field, "rke2_event");
        assert!(
            evidence
                .value
                .starts_with("CertificateExpirationWarning at "),
            "{}",
            evidence.value
        );
        assert!(findings[1].evidence.is_empty(), "s2 had no event");
    }

    #[test]
    fn an_unexplained_warning_is_a_finding_of_its_own() {
        let mut findings = vec![near("s1")];
        merge(
            &mut findings,
            &[event("w1", CA_WARNING, 0)],
            &HashMap::new(),
        );
        assert_eq!(findings.len(), 2);
        assert_eq!(
            (
                findings[1].code,
                findings[1].severity,
                findings[1].node.as_str()
            ),
            (Code::Rke2CertWarning, Severity::Warning, "w1")
        );
        let mut findings = vec![near("w1")];
        merge(
            &mut findings,
            &[event("w1", CA_WARNING, 0)],
            &HashMap::new(),
        );
        assert_eq!(
            findings.len(),
            2,
            "a CA warning does not confirm a leaf finding"
        );
    }

    #[test]
    fn warnings_older_than_the_last_renewal_or_a_clean_check_are_history() {
        let mut findings = Vec::new();
        let renewed = HashMap::from([("s1".to_owned(), at(200))]);
        merge(
            &mut findings,
            &[
                event("s1", LEAF_WARNING, 100),
                event("s2", LEAF_WARNING, 100),
                event("s2", OK, 150),
            ],
            &renewed,
        );
        assert!(findings.is_empty(), "{findings:?}");
    }
}
