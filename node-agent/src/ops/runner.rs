//! Runs an operation's steps with their side effects, journaling each step before it acts.
//!
//! Every step is idempotent, because a crash between a side effect and the next journal
//! write re-runs it: stopping and starting units, probing and verifying are naturally so;
//! `rotate` records when it began and, on a re-run, recognises its own backup instead of
//! rotating twice; restoring copies the same files again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rke2ops_common::renewal;
use time::OffsetDateTime;

use super::files;
use super::journal::{Journal, JournalError, OpRecord, StepLog};
use super::steps::{OpKind, Role, Step, first_step, on_failure, on_success};
use crate::health::apiserver::{self, ApiserverCredentials};
use crate::health::etcd::{self, EtcdCredentials};
use crate::health::kubelet;
use crate::health::node_config::{APISERVER_PORT, ETCD_CLIENT_PORT};
use crate::service::{ServiceManager, detect_rke2_unit};

/// Everything an operation needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// RKE2's data dir.
    pub data_dir: PathBuf,
    /// RKE2's admin kubeconfig (written by RKE2 on servers).
    pub admin_kubeconfig: PathBuf,
    /// Kubeconfig copies to refresh after a rotation.
    pub kubeconfig_copies: Vec<PathBuf>,
    /// The `rke2` binary (for `certificate rotate`).
    pub rke2_bin: PathBuf,
    /// This node's IP (from config.yaml).
    pub node_ip: std::net::IpAddr,
    /// kubelet's health endpoint, `host:port`.
    pub kubelet_healthz: String,
    /// How long RKE2 may take to become ready after a start.
    pub ready_timeout: Duration,
}

impl NodeSetup {
    fn apiserver(&self) -> SocketAddr {
        SocketAddr::new(self.node_ip, APISERVER_PORT)
    }

    fn etcd_endpoint(&self) -> String {
        let ip = match self.node_ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        format!("https://{ip}:{ETCD_CLIENT_PORT}")
    }
}

/// One progress event (printed by the CLI, sent to the hub by the daemon).
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// The operation.
    pub record: &'a OpRecord,
    /// The step.
    pub step: Step,
    /// `None` when the step starts; its result when it ended.
    pub outcome: Option<Result<&'a str, &'a str>>,
    /// Time the step took.
    pub elapsed: Duration,
}

/// Why an operation could not be run at all (its own failures are in the record).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The journal is unusable or busy.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Neither rke2-server nor rke2-agent is installed.
    #[error("neither rke2-server.service nor rke2-agent.service is installed on this node")]
    NoRke2Unit,
    /// systemd could not be asked.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// A `--service` name RKE2 does not know.
    #[error("unknown service {0:?} (known: {list})", list = rke2ops_common::layout::SERVICES.join(", "))]
    UnknownService(String),
}

/// A test-only crash switch: `RKE2OPS_TEST_CRASH_AT=<step>` SIGKILLs the agent right after
/// journaling that step (before its side effect), `<step>:after` right after the side
/// effect (before the journal records it). End-to-end tests use it to prove that an agent
/// killed at any point finishes or rolls back; nothing else reads it.
fn crash_point(step: Step, after: bool) {
    let Ok(spec) = std::env::var("RKE2OPS_TEST_CRASH_AT") else {
        return;
    };
    let (name, when) = spec.split_once(':').unwrap_or((spec.as_str(), "before"));
    if Step::from_name(name) == Some(step) && (when == "after") == after {
        tracing::warn!(
            step = step.name(),
            after,
            "RKE2OPS_TEST_CRASH_AT: killing myself"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs operations of one node.
#[derive(Debug)]
pub struct Runner<M> {
    manager: M,
    setup: NodeSetup,
    journal: Journal,
}

impl<M: ServiceManager> Runner<M> {
    /// A runner.
    pub fn new(manager: M, setup: NodeSetup, journal: Journal) -> Self {
        Self {
            manager,
            setup,
            journal,
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Starts `kind` (after finishing an interrupted operation, if any) and runs it to the
    /// end. The returned record says whether it succeeded.
    ///
    /// # Errors
    /// [`OpError`] when it cannot start (lock held, no RKE2 unit, bad service name).
    pub async fn run(
        &self,
        kind: OpKind,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<OpRecord, OpError> {
        if let OpKind::Rotate { services } = &kind
            && let Some(bad) = services
                .iter()
                .find(|s| rke2ops_common::layout::service_certs(s).is_none())
        {
            return Err(OpError::UnknownService(bad.clone()));
        }
        let _lock = self.journal.lock()?;
        if let Some(interrupted) = self.journal.current()? {
            tracing::warn!(id = %interrupted.id, step = interrupted.step.name(), "finishing an interrupted operation first");
            self.drive(interrupted, &mut progress).await?;
        }
        let unit = detect_rke2_unit(&self.manager)
            .await?
            .ok_or(OpError::NoRke2Unit)?;
        let role = match unit {
            crate::service::Rke2Unit::Server => Role::Server,
            crate::service::Rke2Unit::Agent => Role::Agent,
        };
        let now = OffsetDateTime::now_utc();
        let record = OpRecord {
            id: format!("{}-{}", kind.name(), now.unix_timestamp_nanos() / 1_000_000),
            step: first_step(&kind),
            kind,
            role,
            unit: unit.name().to_owned(),
            started_at: now,
            rotate_started_unix: None,
            backup: None,
            snapshot: None,
            due_for_renewal: vec![],
            failure: None,
            unit_journal: vec![],
            log: vec![],
            finished_at: None,
        };
        self.drive(record, &mut progress).await
    }

    /// Finishes an interrupted operation, if the journal holds one.
    ///
    /// # Errors
    /// [`OpError`] when the journal is unusable or busy.
    pub async fn resume(
        &self,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<Option<OpRecord>, OpError> {
        let _lock = self.journal.lock()?;
        match self.journal.current()? {
            Some(record) => Ok(Some(self.drive(record, &mut progress).await?)),
            None => Ok(None),
        }
    }

    async fn drive(
        &self,
        mut record: OpRecord,
        progress: &mut impl FnMut(&Progress<'_>),
    ) -> Result<OpRecord, OpError> {
        while !record.step.is_terminal() {
            let step = record.step;
            self.journal.save(&record)?;
            crash_point(step, false);
            progress(&Progress {
                record: &record,
                step,
                outcome: None,
                elapsed: Duration::ZERO,
            });
            let started = Instant::now();
            let result = self.execute(&mut record, step).await;
            crash_point(step, true);
            let elapsed = started.elapsed();
            let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            match result {
                Ok(detail) => {
                    progress(&Progress {
                        record: &record,
                        step,
                        outcome: Some(Ok(&detail)),
                        elapsed,
                    });
                    record.log.push(StepLog {
                        step,
                        ok: true,
                        detail,
                        millis,
                    });
                    record.step = on_success(&record.kind, record.role, step);
                }
                Err(reason) => {
                    progress(&Progress {
                        record: &record,
                        step,
                        outcome: Some(Err(&reason)),
                        elapsed,
                    });
                    if record.failure.is_none() {
                        record.failure = Some(format!("{}: {reason}", step.name()));
                        record.unit_journal = crate::dbus::journal_tail(&record.unit, 20).await;
                    }
                    record.log.push(StepLog {
                        step,
                        ok: false,
                        detail: reason,
                        millis,
                    });
                    record.step = on_failure(step, record.backup.is_some());
                }
            }
        }
        record.finished_at = Some(OffsetDateTime::now_utc());
        if record.step == Step::Done
            && let Some(snapshot) = &record.snapshot
            && let Some(op_dir) = snapshot.parent()
        {
            // Verified success: RKE2's own backup stays; the key copies are not needed.
            let _ = std::fs::remove_dir_all(op_dir);
        }
        self.journal.finish(&record)?;
        Ok(record)
    }

    async fn execute(&self, record: &mut OpRecord, step: Step) -> Result<String, String> {
        let setup = &self.setup;
        match step {
            Step::Preflight => self.preflight(record).await,
            Step::StopUnit => self.job("stop", &record.unit).await,
            Step::Rotate => self.rotate(record).await,
            Step::VerifyBackup => {
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
            Step::StartUnit | Step::StartAfterFailure => self.job("start", &record.unit).await,
            Step::RestartUnit => self.job("restart", &record.unit).await,
            Step::WaitReady => self.wait_ready(record, setup.ready_timeout).await,
            Step::WaitAfterFailure => {
                self.wait_ready(record, setup.ready_timeout.min(Duration::from_secs(120)))
                    .await
            }
            Step::VerifyFresh => {
                let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
                let services = match &record.kind {
                    OpKind::Rotate { services } => services.clone(),
                    OpKind::RenewByRestart => vec![],
                };
                let leaves = files::rotated_leaves(&inventory, &services);
                let since =
                    OffsetDateTime::from_unix_timestamp(record.rotate_started_unix.unwrap_or(0))
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
            Step::VerifyRenewed => {
                let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
                let stale: Vec<String> = record
                    .due_for_renewal
                    .iter()
                    .filter(|(path, before)| {
                        inventory
                            .certificates
                            .iter()
                            .find(|c| &c.path == path && c.index == 0)
                            .is_none_or(|c| c.not_after.unix_timestamp() <= *before)
                    })
                    .map(|(path, _)| path.clone())
                    .collect();
                if stale.is_empty() {
                    Ok(format!(
                        "{} leaves inside the renewal window were reissued",
                        record.due_for_renewal.len()
                    ))
                } else {
                    Err(format!("not reissued by the restart: {}", stale.join(", ")))
                }
            }
            Step::RefreshKubeconfigs => {
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
            Step::VerifyServed => {
                let readyz = apiserver::readyz(
                    setup.apiserver(),
                    &ApiserverCredentials::rke2(&setup.data_dir),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| e.to_string())?;
                let file = setup.data_dir.join("server/tls/serving-kube-apiserver.crt");
                let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let on_disk = rke2ops_common::certs::parse::parse_bundle(&bytes);
                let disk_der = on_disk
                    .certs
                    .first()
                    .map(|c| c.der.clone())
                    .ok_or("serving certificate unreadable")?;
                match readyz.served_chain.first() {
                    Some(served) if *served == disk_der => Ok("apiserver serves the certificate on disk".to_owned()),
                    Some(_) => Err("apiserver still serves a different certificate than serving-kube-apiserver.crt".to_owned()),
                    None => Err("apiserver presented no certificate".to_owned()),
                }
            }
            Step::RestoreBackup => {
                // Stop first: with Restart=always the unit may be starting again meanwhile.
                let _ = self.manager.stop(&record.unit).await;
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
            Step::Done | Step::Failed => Ok(String::new()),
        }
    }

    async fn job(&self, action: &'static str, unit: &str) -> Result<String, String> {
        if action != "stop" {
            // Earlier starts (RKE2's own restarts and a rollback's included) may have used up
            // the unit's start-rate limit, even while it looks inactive; a deliberate start
            // must not be refused for that (`systemctl reset-failed` resets the counter).
            self.manager
                .reset_failed(unit)
                .await
                .map_err(|e| e.to_string())?;
        }
        let result = match action {
            "stop" => self.manager.stop(unit).await,
            "restart" => self.manager.restart(unit).await,
            _ => self.manager.start(unit).await,
        }
        .map_err(|e| e.to_string())?;
        if result.is_success() {
            Ok(format!("{action} {unit}: {result}"))
        } else {
            let state = self
                .manager
                .state(unit)
                .await
                .map(|s| s.result)
                .unwrap_or_default();
            Err(format!(
                "{action} {unit}: job {result} (service result {state})"
            ))
        }
    }

    async fn preflight(&self, record: &mut OpRecord) -> Result<String, String> {
        let setup = &self.setup;
        let mut detail = Vec::new();
        if record.role == Role::Server {
            let health = etcd::health(
                &setup.etcd_endpoint(),
                &EtcdCredentials::rke2(&setup.data_dir),
                Duration::from_secs(5),
            )
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
                1 if unhealthy.is_empty() => detail.push(
                    "etcd: single healthy member (the API is down while it restarts), no alarms"
                        .to_owned(),
                ),
                _ if !verdict.survives => {
                    return Err(format!(
                        "etcd quorum would be lost: {} of {} other members healthy, quorum is {} (unhealthy: {})",
                        verdict.healthy_others,
                        verdict.members.saturating_sub(1),
                        verdict.quorum,
                        unhealthy.join(", ")
                    ));
                }
                _ => detail.push(format!(
                    "etcd {}/{} healthy, no alarms, quorum kept without this member ({} ≥ {})",
                    health.members.len(),
                    health.members.len(),
                    verdict.healthy_others,
                    verdict.quorum
                )),
            }
        }
        if record.kind == OpKind::RenewByRestart {
            let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
            let now = OffsetDateTime::now_utc();
            let window = renewal::window(renewal::RENEW_WINDOW_DAYS);
            record.due_for_renewal = inventory
                .certificates
                .iter()
                .filter(|c| {
                    c.index == 0
                        && c.is_leaf()
                        && c.origin == rke2ops_common::certs::model::Origin::File
                })
                .filter(|c| c.not_after - now < window)
                .map(|c| (c.path.clone(), c.not_after.unix_timestamp()))
                .collect();
            detail.push(format!(
                "{} leaves inside the renewal window",
                record.due_for_renewal.len()
            ));
        }
        if detail.is_empty() {
            detail.push(format!("{} installed", record.unit));
        }
        Ok(detail.join("; "))
    }

    async fn rotate(&self, record: &mut OpRecord) -> Result<String, String> {
        let setup = &self.setup;
        if let Some(since) = record.rotate_started_unix
            && let Some(backup) = files::backup_since(&setup.data_dir, since)
        {
            // Re-run after a crash: the rotation already happened.
            return Ok(format!("already rotated (backup {backup})"));
        }
        if record.snapshot.is_none() {
            // Taken once: a re-run after a crash must not snapshot an already-rotated tree.
            let snapshot = self.journal.dir().join(&record.id).join("snapshot");
            let n = files::take_snapshot(&setup.data_dir, &snapshot)?;
            tracing::info!(files = n, snapshot = %snapshot.display(), "certificates snapshotted");
            record.snapshot = Some(snapshot);
        }
        record.rotate_started_unix = Some(OffsetDateTime::now_utc().unix_timestamp());
        self.journal.save(record).map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&setup.rke2_bin);
        command
            .args(["certificate", "rotate", "--data-dir"])
            .arg(&setup.data_dir);
        if let OpKind::Rotate { services } = &record.kind {
            for service in services {
                command.args(["--service", service]);
            }
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
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

    async fn wait_ready(&self, record: &OpRecord, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let restarts_before = self
            .manager
            .state(&record.unit)
            .await
            .map(|s| s.n_restarts)
            .unwrap_or(0);
        loop {
            let last = match self.readiness(record, restarts_before).await {
                Ok(detail) => return Ok(detail),
                Err(Fatal(reason)) => return Err(reason),
                Err(NotYet(reason)) => reason,
            };
            if Instant::now() >= deadline {
                return Err(format!("not ready within {} s: {last}", timeout.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn readiness(&self, record: &OpRecord, restarts_before: u32) -> Result<String, Wait> {
        let setup = &self.setup;
        let state = self
            .manager
            .state(&record.unit)
            .await
            .map_err(|e| NotYet(e.to_string()))?;
        if state.active_state == "failed" || state.n_restarts > restarts_before {
            return Err(Fatal(format!(
                "{} {} (result {}, exit status {}, restarts {})",
                record.unit,
                state.active_state,
                state.result,
                state.exec_main_status,
                state.n_restarts
            )));
        }
        if !state.is_active() {
            return Err(NotYet(format!(
                "{} is {}/{}",
                record.unit, state.active_state, state.sub_state
            )));
        }
        let mut detail = vec![format!("{} active", record.unit)];
        if record.role == Role::Server {
            let readyz = apiserver::readyz(
                setup.apiserver(),
                &ApiserverCredentials::rke2(&setup.data_dir),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| NotYet(format!("apiserver: {e}")))?;
            if !readyz.is_ready() {
                return Err(NotYet(format!(
                    "apiserver /readyz {}: {}",
                    readyz.status,
                    readyz.failures().join(", ")
                )));
            }
            detail.push("apiserver ready (new certificates accepted)".to_owned());
        }
        let healthy = kubelet::healthz(&setup.kubelet_healthz, Duration::from_secs(5))
            .await
            .map_err(|e| NotYet(format!("kubelet: {e}")))?;
        if !healthy {
            return Err(NotYet("kubelet /healthz not ok".to_owned()));
        }
        detail.push("kubelet healthy".to_owned());
        Ok(detail.join(", "))
    }
}

/// Readiness verdicts: keep waiting, or give up now (the unit failed).
enum Wait {
    NotYet(String),
    Fatal(String),
}
use Wait::{Fatal, NotYet};
