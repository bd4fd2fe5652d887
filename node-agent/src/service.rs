//! What node operations need from the service manager and its journal, as small traits, so
//! the step machines can be unit-tested with fakes and run for real against systemd's D-Bus
//! API ([`crate::dbus::Systemd`]) and journald ([`crate::journald::Journald`]).

use std::fmt;

use time::OffsetDateTime;

/// RKE2's two units; a node runs one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rke2Unit {
    /// `rke2-server.service` (control-plane node).
    Server,
    /// `rke2-agent.service` (worker).
    Agent,
}

impl Rke2Unit {
    /// The systemd unit name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "rke2-server.service",
            Self::Agent => "rke2-agent.service",
        }
    }

    /// Both, server first.
    pub const ALL: [Rke2Unit; 2] = [Rke2Unit::Server, Rke2Unit::Agent];
}

impl fmt::Display for Rke2Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a start/stop/restart job ended (systemd's `JobRemoved` result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// `done`: the job succeeded.
    Done,
    /// `failed`: e.g. the service exited with an error during start.
    Failed,
    /// `timeout`: the unit's start or stop timeout elapsed.
    Timeout,
    /// `canceled`: another job replaced it.
    Canceled,
    /// `dependency`: a required unit failed.
    Dependency,
    /// `skipped`: nothing to do (e.g. stop of an inactive unit).
    Skipped,
    /// Anything else systemd reports.
    Other(String),
}

impl JobResult {
    /// Parses systemd's result word.
    #[must_use]
    pub fn from_word(word: &str) -> Self {
        match word {
            "done" => Self::Done,
            "failed" => Self::Failed,
            "timeout" => Self::Timeout,
            "canceled" => Self::Canceled,
            "dependency" => Self::Dependency,
            "skipped" => Self::Skipped,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether the job reached its goal.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Done | Self::Skipped)
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("done"),
            Self::Failed => f.write_str("failed"),
            Self::Timeout => f.write_str("timeout"),
            Self::Canceled => f.write_str("canceled"),
            Self::Dependency => f.write_str("dependency"),
            Self::Skipped => f.write_str("skipped"),
            Self::Other(word) => f.write_str(word),
        }
    }
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `LoadState`: `loaded`, `not-found`, ...
    pub load_state: String,
    /// `ActiveState`: `active`, `activating`, `inactive`, `failed`, ...
    pub active_state: String,
    /// `SubState`: `running`, `start`, `dead`, ...
    pub sub_state: String,
    /// Service `Result`: `success`, `exit-code`, `watchdog`, ...
    pub result: String,
    /// When the unit last entered `active` (`ActiveEnterTimestamp`); `None` if never.
    pub active_enter: Option<OffsetDateTime>,
    /// Service `NRestarts`.
    pub n_restarts: u32,
    /// Service `ExecMainStatus` (exit status of the main process).
    pub exec_main_status: i32,
    /// Service `MainPID` (0 when not running).
    pub main_pid: u32,
}

impl UnitState {
    /// Loaded and `active`.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }

    /// The unit file exists.
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.load_state == "loaded"
    }
}

/// Why a service-manager call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The system bus or systemd cannot be reached.
    #[error("cannot reach systemd on the system bus: {0}")]
    Connect(String),
    /// A D-Bus call about `unit` failed; names the D-Bus error.
    #[error("{unit}: {action} failed: {error}")]
    Call {
        /// The unit.
        unit: String,
        /// What was attempted (`start`, `stop`, `read state`, ...).
        action: &'static str,
        /// The D-Bus error name and message.
        error: String,
    },
    /// The job did not finish within the caller's deadline.
    #[error("{unit}: {action} job did not finish within {seconds} s")]
    JobTimeout {
        /// The unit.
        unit: String,
        /// What was attempted.
        action: &'static str,
        /// The deadline.
        seconds: u64,
    },
}

/// The service manager operations need. Each job-starting call waits for the job to finish
/// and returns systemd's verdict; a failed job is an `Ok(JobResult::Failed)`, not an error.
#[allow(async_fn_in_trait)] // used with generics only, never as a trait object
pub trait ServiceManager {
    /// `StartUnit(unit, "replace")` and wait for its job.
    async fn start(&self, unit: &str) -> Result<JobResult, ServiceError>;
    /// `StopUnit(unit, "replace")` and wait for its job.
    async fn stop(&self, unit: &str) -> Result<JobResult, ServiceError>;
    /// `RestartUnit(unit, "replace")` and wait for its job.
    async fn restart(&self, unit: &str) -> Result<JobResult, ServiceError>;
    /// The unit's current state (works for units that are not loaded: `not-found`).
    async fn state(&self, unit: &str) -> Result<UnitState, ServiceError>;
    /// `ResetFailedUnit`: clears the failed state and the start-rate counter, so a unit that
    /// hit `StartLimitBurst` during a rollback can be started again.
    async fn reset_failed(&self, unit: &str) -> Result<(), ServiceError>;
    /// `Reload` (daemon-reload), waiting until systemd has finished it.
    async fn daemon_reload(&self) -> Result<(), ServiceError>;
}

/// Where a failed operation reads the unit's last log lines for its report.
#[allow(async_fn_in_trait)] // used with generics only, never as a trait object
pub trait UnitLog {
    /// The last `lines` messages of `unit`, oldest first. Never fails: a report is more
    /// useful without the lines than not at all, so a reader that cannot read returns none.
    async fn tail(&self, unit: &str, lines: usize) -> Vec<String>;
}

/// Which RKE2 unit this node runs: of the loaded ones, an active one; else one systemd is
/// starting, stopping or holds `failed` (a crash loop under `Restart=always` is
/// `activating (auto-restart)`); else one that has run since boot; servers first at each rank.
/// RKE2's installer ships both unit files on every node, so "loaded" alone cannot tell an
/// agent node whose `rke2-agent` fails from a server node.
///
/// # Errors
/// When systemd cannot be asked.
pub async fn detect_rke2_unit(
    manager: &impl ServiceManager,
) -> Result<Option<Rke2Unit>, ServiceError> {
    let mut best: Option<(u8, Rke2Unit)> = None;
    for unit in Rke2Unit::ALL {
        let state = manager.state(unit.name()).await?;
        if !state.is_loaded() {
            continue;
        }
        let rank = if state.is_active() {
            3
        } else if state.active_state != "inactive" {
            2
        } else if state.active_enter.is_some() {
            1
        } else {
            0
        };
        if best.is_none_or(|(b, _)| rank > b) {
            best = Some((rank, unit));
        }
    }
    Ok(best.map(|(_, unit)| unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `state` is asked by [`detect_rke2_unit`].
    struct States(Vec<(&'static str, &'static str, &'static str, &'static str, bool)>);

    impl ServiceManager for States {
        async fn start(&self, _: &str) -> Result<JobResult, ServiceError> {
            unreachable!()
        }
        async fn stop(&self, _: &str) -> Result<JobResult, ServiceError> {
            unreachable!()
        }
        async fn restart(&self, _: &str) -> Result<JobResult, ServiceError> {
            unreachable!()
        }
        async fn state(&self, unit: &str) -> Result<UnitState, ServiceError> {
            let (load, active, sub, ran) = self
                .0
                .iter()
                .find(|(name, ..)| *name == unit)
                .map_or(("not-found", "inactive", "dead", false), |s| {
                    (s.1, s.2, s.3, s.4)
                });
            Ok(UnitState {
                load_state: load.into(),
                active_state: active.into(),
                sub_state: sub.into(),
                result: "success".into(),
                active_enter: ran.then(OffsetDateTime::now_utc),
                n_restarts: 0,
                exec_main_status: 0,
                main_pid: 0,
            })
        }
        async fn reset_failed(&self, _: &str) -> Result<(), ServiceError> {
            unreachable!()
        }
        async fn daemon_reload(&self) -> Result<(), ServiceError> {
            unreachable!()
        }
    }

    fn detect(
        states: Vec<(&'static str, &'static str, &'static str, &'static str, bool)>,
    ) -> Option<Rke2Unit> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(detect_rke2_unit(&States(states)))
            .expect("detect")
    }

    #[test]
    fn an_agent_node_whose_agent_crash_loops_is_an_agent_node() {
        // RKE2's installer ships both units; only rke2-agent was ever started here.
        let server = ("rke2-server.service", "loaded", "inactive", "dead", false);
        for (active, sub) in [("activating", "auto-restart"), ("failed", "failed")] {
            let agent = ("rke2-agent.service", "loaded", active, sub, true);
            assert_eq!(detect(vec![server, agent]), Some(Rke2Unit::Agent), "{sub}");
        }
        // Stopped (during an operation): the one that ran.
        let agent = ("rke2-agent.service", "loaded", "inactive", "dead", true);
        assert_eq!(detect(vec![server, agent]), Some(Rke2Unit::Agent));
    }

    #[test]
    fn active_wins_then_servers_first() {
        let server = ("rke2-server.service", "loaded", "active", "running", true);
        let agent = ("rke2-agent.service", "loaded", "inactive", "dead", false);
        assert_eq!(detect(vec![server, agent]), Some(Rke2Unit::Server));
        let server = ("rke2-server.service", "loaded", "failed", "failed", true);
        assert_eq!(detect(vec![server, agent]), Some(Rke2Unit::Server));
        let server = ("rke2-server.service", "loaded", "inactive", "dead", false);
        assert_eq!(detect(vec![server, agent]), Some(Rke2Unit::Server));
        assert_eq!(detect(vec![agent]), Some(Rke2Unit::Agent));
        assert_eq!(detect(vec![]), None);
    }
}
