//! Certificate rotation's side effects: the agent's snapshot and `rke2 certificate rotate`,
//! finding and checking RKE2's backup, checking the reissued leaves and the certificate the
//! apiserver serves, refreshing kubeconfig copies, and putting the old certificates back on
//! failure. The order and the decisions are the step machine's ([`super::steps`]).

use std::time::Duration;

use rke2ops_common::certs::parse::parse_bundle;
use time::OffsetDateTime;

use super::files;
use super::journal::{Journal, OpRecord};
use super::setup::NodeSetup;
use super::steps::OpKind;
use crate::health::HealthProbes;
use crate::service::ServiceManager;

/// How long `rke2 certificate rotate` may take.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Snapshots the certificates (once), records when the rotation began (journaled before
/// RKE2 acts, so a re-run recognises its own backup) and runs `rke2 certificate rotate`.
pub async fn rotate(
    setup: &NodeSetup,
    journal: &Journal,
    record: &mut OpRecord,
) -> Result<String, String> {
    if let Some(since) = record.rotate_started_unix
        && let Some(backup) = files::backup_since(&setup.data_dir, since)
    {
        // Re-run after a crash: the rotation already happened.
        return Ok(format!("already rotated (backup {backup})"));
    }
    if record.snapshot.is_none() {
        // Taken once: a re-run after a crash must not snapshot an already-rotated tree.
        let snapshot = super::runner::op_dir(journal, record)?.join("snapshot");
        let n = files::take_snapshot(&setup.data_dir, &snapshot)?;
        tracing::info!(files = n, snapshot = %snapshot.display(), "certificates snapshotted");
        record.snapshot = Some(snapshot);
    }
    record.rotate_started_unix = Some(OffsetDateTime::now_utc().unix_timestamp());
    journal.save(record).map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(&setup.rke2_bin);
    command
        .args(["certificate", "rotate", "--data-dir"])
        .arg(&setup.data_dir);
    if let OpKind::Rotate { services, .. } = &record.kind {
        for service in services {
            command.args(["--service", service]);
        }
    }
    let output = tokio::time::timeout(ROTATE_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            format!(
                "{} certificate rotate did not finish within 120 s",
                setup.rke2_bin.display()
            )
        })?
        .map_err(|e| format!("cannot run {}: {e}", setup.rke2_bin.display()))?;
    if output.status.success() {
        Ok(format!(
            "{} certificate rotate: ok",
            setup.rke2_bin.display()
        ))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "{} certificate rotate exited {}: {}",
            setup.rke2_bin.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }
}

/// RKE2 made its backup since the rotation began and it holds certificates; records it.
pub fn verify_backup(setup: &NodeSetup, record: &mut OpRecord) -> Result<String, String> {
    let since = record
        .rotate_started_unix
        .ok_or("rotation start time not recorded")?;
    let backup = files::backup_since(&setup.data_dir, since).ok_or_else(|| {
        format!(
            "no tls-* backup made since {since} under {}",
            setup.data_dir.display()
        )
    })?;
    let count = files::backup_cert_count(&setup.data_dir.join(&backup));
    record.backup = Some(backup.clone());
    if count == 0 {
        return Err(format!("backup {backup} holds no certificate"));
    }
    Ok(format!("{backup} holds {count} certificates"))
}

/// Every rotated leaf was reissued since the rotation began, and every file is usable.
pub fn verify_fresh(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
    let services = match &record.kind {
        OpKind::Rotate { services, .. } => services.clone(),
        OpKind::RenewByRestart
        | OpKind::Upgrade { .. }
        | OpKind::StageImages { .. }
        | OpKind::PruneImages { .. } => vec![],
    };
    let leaves = files::rotated_leaves(&inventory, &services);
    let since = OffsetDateTime::from_unix_timestamp(record.rotate_started_unix.unwrap_or(0))
        .unwrap_or(record.started_at);
    let problems = files::freshness_problems(&inventory, &leaves, since);
    if problems.is_empty() {
        Ok(format!(
            "{} leaves reissued, every file valid",
            leaves.len()
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// The kubeconfig copies get the admin kubeconfig's new credentials (rotation and
/// renew-by-restart both end with this).
pub fn refresh_kubeconfigs(setup: &NodeSetup) -> Result<String, String> {
    if setup.kubeconfig_copies.is_empty() {
        return Ok("no kubeconfig copies configured".to_owned());
    }
    for copy in &setup.kubeconfig_copies {
        files::refresh_kubeconfig(&setup.admin_kubeconfig, copy)?;
    }
    Ok(format!(
        "refreshed {}",
        files::display(&setup.kubeconfig_copies)
    ))
}

/// The apiserver serves the serving certificate that is on disk (it picked up the rotation).
pub async fn verify_served(
    setup: &NodeSetup,
    probes: &impl HealthProbes,
) -> Result<String, String> {
    let readyz = probes
        .apiserver_readyz(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let file = setup.data_dir.join("server/tls/serving-kube-apiserver.crt");
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let on_disk = parse_bundle(&bytes);
    let disk_der = on_disk
        .certs
        .first()
        .map(|c| c.der.clone())
        .ok_or("serving certificate unreadable")?;
    match readyz.served_chain.first() {
        Some(served) if *served == disk_der => {
            Ok("apiserver serves the certificate on disk".to_owned())
        }
        Some(_) => Err(
            "apiserver still serves a different certificate than serving-kube-apiserver.crt"
                .to_owned(),
        ),
        None => Err("apiserver presented no certificate".to_owned()),
    }
}

/// Puts the certificates back as they were before the rotation: from the agent's own
/// snapshot when it took one, else from RKE2's backup.
pub async fn restore_backup(
    setup: &NodeSetup,
    manager: &impl ServiceManager,
    record: &OpRecord,
) -> Result<String, String> {
    // Stop first: with Restart=always the unit may be starting again meanwhile.
    let _ = manager.stop(&record.unit).await;
    if let Some(snapshot) = &record.snapshot {
        let n = files::restore_snapshot(&setup.data_dir, snapshot)?;
        return Ok(format!(
            "restored {n} files from the agent's snapshot {}",
            snapshot.display()
        ));
    }
    let backup = record
        .backup
        .clone()
        .or_else(|| {
            record
                .rotate_started_unix
                .and_then(|t| files::backup_since(&setup.data_dir, t))
        })
        .ok_or("no backup to restore")?;
    let n = files::restore_backup(&setup.data_dir, &backup)?;
    Ok(format!("restored {n} files from {backup}"))
}
