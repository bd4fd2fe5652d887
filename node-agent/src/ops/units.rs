//! The unit jobs the operations run (stop, start, restart, daemon-reload) through the
//! [`ServiceManager`], turning systemd's verdict into a step's detail or failure.

use crate::service::ServiceManager;

/// A job on the RKE2 unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitJob {
    /// `StopUnit`.
    Stop,
    /// `StartUnit`, after `ResetFailedUnit`.
    Start,
    /// `RestartUnit`, after `ResetFailedUnit`.
    Restart,
}

impl UnitJob {
    /// The word in step details (`stop rke2-server.service: done`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Restart => "restart",
        }
    }
}

/// Runs `job` on `unit` and waits for it; a job that does not reach its goal is a failure
/// naming the unit's service result.
pub async fn run(
    manager: &impl ServiceManager,
    job: UnitJob,
    unit: &str,
) -> Result<String, String> {
    let action = job.name();
    if job != UnitJob::Stop {
        // Earlier starts (RKE2's own restarts and a rollback's included) may have used up
        // the unit's start-rate limit, even while it looks inactive; a deliberate start
        // must not be refused for that (`systemctl reset-failed` resets the counter).
        manager
            .reset_failed(unit)
            .await
            .map_err(|e| e.to_string())?;
    }
    let result = match job {
        UnitJob::Stop => manager.stop(unit).await,
        UnitJob::Restart => manager.restart(unit).await,
        UnitJob::Start => manager.start(unit).await,
    }
    .map_err(|e| e.to_string())?;
    if result.is_success() {
        Ok(format!("{action} {unit}: {result}"))
    } else {
        let state = manager
            .state(unit)
            .await
            .map(|s| s.result)
            .unwrap_or_default();
        Err(format!(
            "{action} {unit}: job {result} (service result {state})"
        ))
    }
}

/// systemd reloads its unit files (an upgrade may have replaced them).
pub async fn daemon_reload(manager: &impl ServiceManager) -> Result<String, String> {
    manager.daemon_reload().await.map_err(|e| e.to_string())?;
    Ok("systemd reloaded its units".to_owned())
}
