//! The RKE2 unit: failed or crash-looping (`rke2-server.service: Failed with result
//! 'exit-code'`), or running so long that its leaves will not renew by themselves (the
//! 245-day rule: a start renews only within 120 days of a 365-day leaf's expiry).

use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::renewal::RENEW_WINDOW_DAYS;
use time::Duration;

use super::{Facts, UnitFacts};

/// Leaves last 365 days; a service up longer than 365 - 120 days started before the window.
pub const PAST_WINDOW_DAYS: i64 = 365 - RENEW_WINDOW_DAYS as i64;

/// Journal lines kept as evidence.
pub const JOURNAL_LINES: usize = 10;

/// Whether systemd reports the unit failed, or restarting after a failure.
#[must_use]
pub fn is_failing(state: &crate::service::UnitState) -> bool {
    state.active_state == "failed"
        || (state.active_state == "activating" && state.sub_state == "auto-restart")
}

/// Findings about the unit; an unreachable systemd is an info finding (exit code unchanged).
#[must_use]
pub fn check(facts: &Facts) -> Vec<Finding> {
    check_unit(&facts.node, &facts.unit, &facts.inventory, facts.now)
}

/// [`check`] on its inputs alone: what the daemon's hub link runs at each heartbeat with the
/// unit state it already holds (the inventory says whether a leaf has expired already).
#[must_use]
pub fn check_unit(
    node: &str,
    unit: &UnitFacts,
    inventory: &rke2ops_common::certs::Inventory,
    now: time::OffsetDateTime,
) -> Vec<Finding> {
    let (unit, state, journal) = match unit {
        UnitFacts::Unreachable { reason } => {
            return vec![
                Finding::new(
                    Code::SystemdUnreachable,
                    Severity::Info,
                    node,
                    "systemd",
                    "run as root on the node (the unit checks need systemd's D-Bus API)",
                )
                .with("reason", reason),
            ];
        }
        UnitFacts::NotInstalled => return Vec::new(),
        UnitFacts::Found {
            unit,
            state,
            journal,
        } => (unit, state, journal),
    };
    let mut findings = Vec::new();
    if is_failing(state) {
        let mut f = Finding::new(
            Code::UnitFailed,
            Severity::Blocker,
            node,
            unit,
            format!(
                "journalctl -u {unit} -n 200 --no-pager (fix the cause), then systemctl \
                 reset-failed {unit} && systemctl start {unit}"
            ),
        )
        .with("active_state", &state.active_state)
        .with("sub_state", &state.sub_state)
        .with("result", &state.result)
        .with("n_restarts", state.n_restarts.to_string());
        let skip = journal.len().saturating_sub(JOURNAL_LINES);
        for line in &journal[skip..] {
            f = f.with("journal", line);
        }
        findings.push(f);
    } else if state.is_active()
        && let Some(since) = state.active_enter
    {
        let up = now - since;
        if up > Duration::days(PAST_WINDOW_DAYS) {
            // Blocker once a leaf has expired already: the restart is overdue, not upcoming.
            let expired = inventory.leaves().any(|c| c.not_after < now);
            findings.push(
                Finding::new(
                    Code::ServicePastRenewalWindow,
                    if expired {
                        Severity::Blocker
                    } else {
                        Severity::Warning
                    },
                    node,
                    unit,
                    format!("systemctl restart {unit} (in a maintenance window)"),
                )
                .with("active_since", since.to_string())
                .with("days_up", up.whole_days().to_string()),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{facts_with, leaf_entry};
    use super::*;
    use crate::service::UnitState;

    fn state(active: &str, sub: &str, days_up: i64) -> UnitState {
        UnitState {
            load_state: "loaded".to_owned(),
            active_state: active.to_owned(),
            sub_state: sub.to_owned(),
            result: if active == "active" {
                "success"
            } else {
                "exit-code"
            }
            .to_owned(),
            active_enter: Some(time::OffsetDateTime::now_utc() - Duration::days(days_up)),
            n_restarts: 3,
            exec_main_status: 1,
            main_pid: 0,
        }
    }

    fn found(state: UnitState, journal: usize) -> UnitFacts {
        UnitFacts::Found {
            unit: "rke2-server".to_owned(),
            state,
            journal: (0..journal).map(|i| format!("line {i}")).collect(),
        }
    }

    #[test]
    fn crash_looping_unit_is_a_blocker_with_its_last_journal_lines() {
        let mut facts = facts_with(vec![]);
        facts.unit = found(state("activating", "auto-restart", 1), 15);
        let findings = check(&facts);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            (findings[0].code, findings[0].severity),
            (Code::UnitFailed, Severity::Blocker)
        );
        let lines: Vec<&str> = findings[0]
            .evidence
            .iter()
            .filter(|e| e.field == "journal")
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(lines.len(), JOURNAL_LINES);
        assert_eq!(lines[JOURNAL_LINES - 1], "line 14");
        facts.unit = found(state("failed", "failed", 1), 0);
        assert_eq!(check(&facts)[0].code, Code::UnitFailed);
    }

    #[test]
    fn service_up_past_245_days_warns_and_blocks_once_a_leaf_expired() {
        let mut facts = facts_with(vec![leaf_entry("server/tls/client-admin.crt", -300, 60)]);
        facts.unit = found(state("active", "running", 250), 0);
        let findings = check(&facts);
        assert_eq!(
            (findings[0].code, findings[0].severity),
            (Code::ServicePastRenewalWindow, Severity::Warning)
        );
        facts.inventory.certificates = vec![leaf_entry("server/tls/client-admin.crt", -400, -1)];
        assert_eq!(check(&facts)[0].severity, Severity::Blocker);
        facts.unit = found(state("active", "running", 200), 0);
        assert_eq!(check(&facts), vec![]);
    }

    #[test]
    fn unreachable_systemd_is_info_only() {
        let facts = facts_with(vec![]);
        let findings = check(&facts);
        assert_eq!(findings[0].code, Code::SystemdUnreachable);
        assert_eq!(rke2ops_common::doctor::exit_code(&findings), 0);
    }
}
