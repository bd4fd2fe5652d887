//! The systemd notify protocol: READY, STATUS, WATCHDOG, STOPPING. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op. The STATUS line is a pure function of the
//! inventory so it can be tested.

use std::time::Duration;

use rke2ops_common::certs::status::warn_window;
use rke2ops_common::certs::{CertStatus, Inventory};
use rke2ops_common::renewal;
use sd_notify::NotifyState;
use time::OffsetDateTime;

use crate::service::UnitState;

/// Tells systemd the agent is ready, with its first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line (`systemctl status` shows it).
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Keeps the watchdog fed.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// Says the agent is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) recommends.
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// One line: counts by status, file errors, and the renewal deadline.
#[must_use]
pub fn status_line(
    inventory: &Inventory,
    now: OffsetDateTime,
    warn_days: u32,
    service: Option<&(String, UnitState)>,
) -> String {
    let warn = warn_window(warn_days);
    let count = |s: CertStatus| {
        inventory
            .certificates
            .iter()
            .filter(|c| c.status(now, warn) == s)
            .count()
    };
    let mut line = format!(
        "{} certificates: {} ok, {} warning, {} expired, {} not yet valid; {} file errors",
        inventory.certificates.len(),
        count(CertStatus::Ok),
        count(CertStatus::Warning),
        count(CertStatus::Expired),
        count(CertStatus::NotYetValid),
        inventory.errors.len(),
    );
    let started = service.and_then(|(_, s)| s.active_enter.filter(|_| s.is_active()));
    let state = renewal::assess(
        inventory.leaves().map(|c| c.not_after),
        now,
        renewal::window(renewal::RENEW_WINDOW_DAYS),
        started,
    );
    if let Some((unit, unit_state)) = service {
        line.push_str(&format!("; {unit} {}", unit_state.active_state));
        if let Some(since) = started {
            line.push_str(&format!(" since {}", since.date()));
        }
    }
    if let Some(deadline) = state.deadline {
        let days = (deadline - now).whole_days();
        line.push_str(&format!(
            "; renewal deadline {} ({days} days)",
            deadline.date()
        ));
        if state.in_window {
            line.push_str(", inside the renewal window");
        }
        if state.restart_due {
            line.push_str(": restart due");
        }
    }
    line
}

/// The next instant at which some certificate's status word changes (NotBefore, the start
/// of the warning window, NotAfter), so the STATUS line can be refreshed exactly then and
/// the agent does no periodic work in between.
#[must_use]
pub fn next_status_change(
    inventory: &Inventory,
    now: OffsetDateTime,
    warn_days: u32,
) -> Option<OffsetDateTime> {
    let warn = warn_window(warn_days);
    inventory
        .certificates
        .iter()
        .flat_map(|c| {
            [
                c.not_before,
                c.not_after - warn,
                c.not_after + time::Duration::SECOND,
            ]
        })
        .filter(|t| *t > now)
        .min()
}
