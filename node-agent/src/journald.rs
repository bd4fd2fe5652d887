//! The last lines a unit logged, for rollback reports: [`Journald`], the real
//! [`UnitLog`]. It runs `journalctl`, not D-Bus: journald has no D-Bus
//! API for reading, which is why this lives beside [`crate::dbus`] rather than in it.

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tracing::warn;

use crate::service::UnitLog;

/// How long `journalctl` may take before the report goes without its lines.
const JOURNALCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// The last `lines` messages of `unit` (`journalctl -u UNIT -n N --no-pager -o cat`), oldest
/// first, without timestamps or prefixes.
///
/// A report is more useful without the journal than not at all, so this never fails: when
/// `journalctl` is missing, fails or hangs it logs a warning and returns what it has (usually
/// nothing).
pub async fn journal_tail(unit: &str, lines: usize) -> Vec<String> {
    if lines == 0 {
        return Vec::new();
    }
    let run = Command::new("journalctl")
        .args(["--unit", unit, "--lines"])
        .arg(lines.to_string())
        // --quiet: no "-- No entries --" line standing in for an empty journal.
        .args(["--no-pager", "--quiet", "--output", "cat"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(JOURNALCTL_TIMEOUT, run).await {
        Err(_elapsed) => {
            warn!(
                unit,
                "journalctl did not finish within {JOURNALCTL_TIMEOUT:?}; no journal lines"
            );
            return Vec::new();
        }
        Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
            warn!(unit, "journalctl is not installed; no journal lines");
            return Vec::new();
        }
        Ok(Err(e)) => {
            warn!(unit, error = %e, "cannot run journalctl; no journal lines");
            return Vec::new();
        }
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        warn!(
            unit,
            status = %output.status,
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "journalctl failed"
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The system journal, read with `journalctl` ([`journal_tail`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Journald;

impl UnitLog for Journald {
    async fn tail(&self, unit: &str, lines: usize) -> Vec<String> {
        journal_tail(unit, lines).await
    }
}
