//! Whether the node may be touched and whether RKE2 came back: the preflight (etcd healthy,
//! no alarms, quorum kept without this member) and the wait for readiness after a start
//! (unit active, apiserver ready with the new certificates, kubelet healthy). Probes only:
//! nothing here changes the node.

use std::time::{Duration, Instant};

use super::journal::OpRecord;
use super::restart;
use super::setup::NodeSetup;
use super::steps::{OpKind, Role};
use crate::health::HealthProbes;
use crate::health::etcd;
use crate::service::ServiceManager;

/// The preflight step: on servers, etcd must survive this member going down; for
/// renew-by-restart, notes which leaves are inside the renewal window (the later check
/// compares against them).
pub async fn preflight(
    setup: &NodeSetup,
    probes: &impl HealthProbes,
    record: &mut OpRecord,
) -> Result<String, String> {
    let mut detail = Vec::new();
    if record.role == Role::Server {
        detail.push(etcd_allows_restart(probes).await?);
    }
    if record.kind == OpKind::RenewByRestart {
        detail.push(restart::note_due_leaves(setup, record));
    }
    if detail.is_empty() {
        detail.push(format!("{} installed", record.unit));
    }
    Ok(detail.join("; "))
}

/// etcd healthy, without alarms, and keeping its quorum while this member restarts.
async fn etcd_allows_restart(probes: &impl HealthProbes) -> Result<String, String> {
    let health = probes
        .etcd_health(Duration::from_secs(5))
        .await
        .map_err(|e| format!("etcd: {e}"))?;
    let unhealthy: Vec<&str> = health
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();
    if !health.alarms.is_empty() {
        return Err(format!("etcd alarms active: {}", health.alarms.join(", ")));
    }
    let verdict = etcd::quorum_without(&health, health.local_member);
    if !unhealthy.is_empty() && verdict.survives {
        return Err(format!("etcd members unhealthy: {}", unhealthy.join(", ")));
    }
    match verdict.members {
        // A single-server cluster cannot keep its API up while its only member
        // restarts; nothing else depends on a quorum here, so it may proceed.
        1 if unhealthy.is_empty() => Ok(
            "etcd: single healthy member (the API is down while it restarts), no alarms".to_owned(),
        ),
        _ if !verdict.survives => Err(format!(
            "etcd quorum would be lost: {} of {} other members healthy, quorum is {} (unhealthy: {})",
            verdict.healthy_others,
            verdict.members.saturating_sub(1),
            verdict.quorum,
            unhealthy.join(", ")
        )),
        _ => Ok(format!(
            "etcd {}/{} healthy, no alarms, quorum kept without this member ({} ≥ {})",
            health.members.len(),
            health.members.len(),
            verdict.healthy_others,
            verdict.quorum
        )),
    }
}

/// Waits up to `timeout` for the unit to be ready; gives up at once when the unit fails or
/// systemd restarts it (RKE2 crashed with what it was given).
pub async fn wait_ready(
    manager: &impl ServiceManager,
    probes: &impl HealthProbes,
    record: &OpRecord,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let restarts_before = manager
        .state(&record.unit)
        .await
        .map(|s| s.n_restarts)
        .unwrap_or(0);
    loop {
        let last = match readiness(manager, probes, record, restarts_before).await {
            Ok(detail) => return Ok(detail),
            Err(Wait::Fatal(reason)) => return Err(reason),
            Err(Wait::NotYet(reason)) => reason,
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready within {} s: {last}", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Readiness verdicts: keep waiting, or give up now (the unit failed).
enum Wait {
    NotYet(String),
    Fatal(String),
}

async fn readiness(
    manager: &impl ServiceManager,
    probes: &impl HealthProbes,
    record: &OpRecord,
    restarts_before: u32,
) -> Result<String, Wait> {
    let state = manager
        .state(&record.unit)
        .await
        .map_err(|e| Wait::NotYet(e.to_string()))?;
    if state.active_state == "failed" || state.n_restarts > restarts_before {
        return Err(Wait::Fatal(format!(
            "{} {} (result {}, exit status {}, restarts {})",
            record.unit, state.active_state, state.result, state.exec_main_status, state.n_restarts
        )));
    }
    if !state.is_active() {
        return Err(Wait::NotYet(format!(
            "{} is {}/{}",
            record.unit, state.active_state, state.sub_state
        )));
    }
    let mut detail = vec![format!("{} active", record.unit)];
    if record.role == Role::Server {
        let readyz = probes
            .apiserver_readyz(Duration::from_secs(5))
            .await
            .map_err(|e| Wait::NotYet(format!("apiserver: {e}")))?;
        if !readyz.is_ready() {
            return Err(Wait::NotYet(format!(
                "apiserver /readyz {}: {}",
                readyz.status,
                readyz.failures().join(", ")
            )));
        }
        detail.push("apiserver ready (new certificates accepted)".to_owned());
    }
    let healthy = probes
        .kubelet_healthz(Duration::from_secs(5))
        .await
        .map_err(|e| Wait::NotYet(format!("kubelet: {e}")))?;
    if !healthy {
        return Err(Wait::NotYet("kubelet /healthz not ok".to_owned()));
    }
    detail.push("kubelet healthy".to_owned());
    Ok(detail.join(", "))
}
