//! Runs an operation's steps with their side effects, journaling each step before it acts.
//!
//! Every step is idempotent, because a crash between a side effect and the next journal
//! write re-runs it: stopping and starting units, probing and verifying are naturally so;
//! `rotate` records when it began and, on a re-run, recognises its own backup instead of
//! rotating twice; restoring copies the same files again; an upgrade's fetch replaces its
//! download, and its install keeps the previous files once (see [`super::install`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rke2ops_common::renewal;
use time::OffsetDateTime;

use super::journal::{Journal, JournalError, OpRecord, StepLog};
use super::steps::{OpKind, Role, Step, first_step, on_failure_of, on_skip, on_success};
use super::{artifacts, files, install, paths};
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
    /// Where RKE2's tarball is installed (`<prefix>/bin/rke2`...).
    pub install_prefix: PathBuf,
    /// Upgrades' artifact source when the request names none.
    pub artifact_source: Option<String>,
    /// Where upgrades may fetch from (empty: anywhere), checked before anything starts.
    pub allowed_artifact_sources: Vec<artifacts::Source>,
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
    /// An upgrade target that is not an RKE2 version.
    #[error(transparent)]
    BadVersion(#[from] rke2ops_common::version::VersionError),
    /// An upgrade without a usable artifact source.
    #[error(transparent)]
    BadSource(#[from] artifacts::ArtifactError),
    /// An operation id that could name a path outside the journal.
    #[error(transparent)]
    BadId(#[from] rke2ops_common::ids::IdError),
}

/// The version `bin --version` reports (`rke2 version v1.34.1+rke2r1 (<commit>)`), if it runs.
pub async fn binary_version(bin: &Path) -> Option<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(bin).arg("--version").output(),
    )
    .await
    .ok()?
    .ok()?;
    parse_version_banner(&String::from_utf8_lossy(&output.stdout))
}

/// The version in RKE2's `--version` banner.
#[must_use]
pub fn parse_version_banner(stdout: &str) -> Option<String> {
    let line = stdout.lines().next()?;
    let mut words = line.split_whitespace();
    (words.next()? == "rke2" && words.next()? == "version")
        .then(|| words.next().map(str::to_owned))
        .flatten()
}

/// Whether an upgrade to `target` has nothing to do: the installed version is at or above it
/// and the unit does not still run a replaced binary.
#[must_use]
pub fn at_or_above(installed: &str, target: &str, running_replaced: bool) -> bool {
    use rke2ops_common::version::Rke2Version;
    match (
        installed.parse::<Rke2Version>(),
        target.parse::<Rke2Version>(),
    ) {
        (Ok(installed), Ok(target)) => installed >= target && !running_replaced,
        _ => false,
    }
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
        progress: impl FnMut(&Progress<'_>),
    ) -> Result<OpRecord, OpError> {
        self.run_with(None, kind, None, progress).await
    }

    /// [`Runner::run`] with the journal id chosen by the caller (the hub's operation id) and a
    /// cancel flag honoured until the first step that changes the node.
    ///
    /// # Errors
    /// As [`Runner::run`].
    pub async fn run_with(
        &self,
        id: Option<String>,
        kind: OpKind,
        cancel: Option<&AtomicBool>,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<OpRecord, OpError> {
        if let Some(id) = &id {
            // The id names the operation's folder under the journal, which is removed when
            // the operation ends: it must be one plain path component.
            rke2ops_common::ids::check_operation_id(id)?;
        }
        if let OpKind::Upgrade {
            version, source, ..
        } = &kind
        {
            version.parse::<rke2ops_common::version::Rke2Version>()?;
            let source = source
                .clone()
                .or_else(|| self.setup.artifact_source.clone())
                .ok_or(artifacts::ArtifactError::NoSource)?;
            artifacts::check_allowed(
                &artifacts::Source::parse(&source)?,
                &self.setup.allowed_artifact_sources,
            )?;
        }
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
            self.drive(interrupted, None, &mut progress).await?;
        }
        let unit = detect_rke2_unit(&self.manager)
            .await?
            .ok_or(OpError::NoRke2Unit)?;
        let role = match unit {
            crate::service::Rke2Unit::Server => Role::Server,
            crate::service::Rke2Unit::Agent => Role::Agent,
        };
        let now = OffsetDateTime::now_utc();
        let record = OpRecord::new(
            id.unwrap_or_else(|| {
                format!("{}-{}", kind.name(), now.unix_timestamp_nanos() / 1_000_000)
            }),
            kind.clone(),
            role,
            unit.name().to_owned(),
            first_step(&kind),
            now,
        );
        self.drive(record, cancel, &mut progress).await
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
            Some(record) => Ok(Some(self.drive(record, None, &mut progress).await?)),
            None => Ok(None),
        }
    }

    async fn drive(
        &self,
        mut record: OpRecord,
        cancel: Option<&AtomicBool>,
        progress: &mut impl FnMut(&Progress<'_>),
    ) -> Result<OpRecord, OpError> {
        let mut cancel_noted = false;
        while !record.step.is_terminal() {
            let step = record.step;
            if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) && !cancel_noted {
                if may_cancel(&record) {
                    record.cancelled = true;
                    record.failure = Some("cancelled".to_owned());
                    record.step = Step::Failed;
                    break;
                }
                cancel_noted = true;
                tracing::info!(op = %record.id, step = step.name(), "cancel ignored: the operation already changed the node");
            }
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
                    record.step = if record.skipped.is_some() {
                        on_skip(&record.kind, step)
                    } else {
                        on_success(&record.kind, record.role, step)
                    };
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
                    record.step = on_failure_of(&record.kind, step, record.backup.is_some());
                }
            }
        }
        record.finished_at = Some(OffsetDateTime::now_utc());
        // Every removal is checked to stay under the journal: the record (and its id) may
        // come from a journal written by an older agent, or from the hub.
        let journal_dir = self.journal.dir();
        if record.step == Step::Done
            && record.snapshot.is_some()
            && let Ok(op_dir) = self.op_dir(&record)
        {
            // Verified success: RKE2's own backup stays; the key copies are not needed.
            if let Err(e) = paths::remove_tree_within(journal_dir, &op_dir) {
                tracing::warn!(error = %e, "operation folder not removed");
            }
        }
        if matches!(record.kind, OpKind::Upgrade { .. })
            && let Ok(op_dir) = self.op_dir(&record)
        {
            // The download and its extraction are not needed any more; `previous/` stays (the
            // files the release replaced, for a manual rollback).
            for sub in ["artifacts", "staged"] {
                if let Err(e) = paths::remove_tree_within(journal_dir, &op_dir.join(sub)) {
                    tracing::warn!(error = %e, "upgrade staging not removed");
                }
            }
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
                    OpKind::RenewByRestart | OpKind::Upgrade { .. } => vec![],
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
            Step::CheckVersion => self.check_version(record).await,
            Step::FetchArtifacts => {
                let (version, source) = self.upgrade_target(record)?;
                artifacts::fetch(
                    &source,
                    &self.setup.allowed_artifact_sources,
                    &version,
                    artifacts::arch(),
                    &self.op_dir(record)?.join("artifacts"),
                )
                .await
                .map_err(|e| e.to_string())
            }
            Step::VerifyChecksum => {
                let hash =
                    artifacts::verify(&self.op_dir(record)?.join("artifacts"), artifacts::arch())
                        .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} sha256 {hash} matches {}",
                    artifacts::tarball_name(artifacts::arch()),
                    artifacts::sums_name(artifacts::arch())
                ))
            }
            Step::InstallFiles => {
                let dir = self.op_dir(record)?;
                let tarball = dir
                    .join("artifacts")
                    .join(artifacts::tarball_name(artifacts::arch()));
                let files =
                    install::stage(&tarball, &dir.join("staged")).map_err(|e| e.to_string())?;
                record.installed_files.clone_from(&files);
                let previous = dir.join("previous");
                let kept = install::keep_previous(&setup.install_prefix, &files, &previous)
                    .map_err(|e| e.to_string())?;
                record.backup = Some(previous.display().to_string());
                self.journal.save(record).map_err(|e| e.to_string())?;
                install::install(&dir.join("staged"), &setup.install_prefix, &files)
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} files installed into {} ({kept} previous kept in {})",
                    files.len(),
                    setup.install_prefix.display(),
                    previous.display()
                ))
            }
            Step::DaemonReload => {
                self.manager
                    .daemon_reload()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok("systemd reloaded its units".to_owned())
            }
            Step::VerifyVersion => self.verify_version(record).await,
            Step::RestorePrevious => {
                // Stop first: a release that never gets ready may still be starting.
                let _ = self.manager.stop(&record.unit).await;
                let previous = self.op_dir(record)?.join("previous");
                let n = install::restore(&previous, &setup.install_prefix, &record.installed_files)
                    .map_err(|e| e.to_string())?;
                self.manager
                    .daemon_reload()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "restored {n} previous files into {}{}, systemd reloaded",
                    setup.install_prefix.display(),
                    record
                        .previous_version
                        .as_deref()
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default()
                ))
            }
            Step::Done | Step::Failed | Step::Skipped => Ok(String::new()),
        }
    }

    /// The operation's own folder under the journal.
    /// The operation's own folder under the journal; an id that is not one plain path
    /// component is refused (a journal record is as untrusted as the request that made it).
    fn op_dir(&self, record: &OpRecord) -> Result<PathBuf, String> {
        paths::op_dir(self.journal.dir(), &record.id).map_err(|e| e.to_string())
    }

    fn installed_bin(&self) -> PathBuf {
        self.setup.install_prefix.join("bin/rke2")
    }

    fn upgrade_target(&self, record: &OpRecord) -> Result<(String, artifacts::Source), String> {
        let OpKind::Upgrade {
            version, source, ..
        } = &record.kind
        else {
            return Err("not an upgrade".to_owned());
        };
        let source = source
            .clone()
            .or_else(|| self.setup.artifact_source.clone())
            .ok_or_else(|| artifacts::ArtifactError::NoSource.to_string())?;
        let source = artifacts::Source::parse(&source).map_err(|e| e.to_string())?;
        Ok((version.clone(), source))
    }

    /// Whether the unit's main process runs an executable that was replaced on disk.
    async fn running_replaced(&self, unit: &str) -> Option<bool> {
        let state = self.manager.state(unit).await.ok()?;
        if state.main_pid == 0 {
            return None;
        }
        // Under the shipped unit the agent lacks CAP_SYS_PTRACE, so the kernel hides other
        // processes' `exe` links. The upgrade restarts the unit after installing, so an
        // unreadable link counts as "runs what is installed" (the CLI outside the sandbox
        // still checks it).
        match std::fs::read_link(format!("/proc/{}/exe", state.main_pid)) {
            Ok(exe) => Some(exe.to_string_lossy().ends_with(" (deleted)")),
            Err(e) => {
                tracing::debug!(pid = state.main_pid, error = %e, "cannot read the main process's exe link");
                Some(false)
            }
        }
    }

    async fn check_version(&self, record: &mut OpRecord) -> Result<String, String> {
        let (target, source) = self.upgrade_target(record)?;
        let bin = self.installed_bin();
        let installed = binary_version(&bin)
            .await
            .ok_or_else(|| format!("{} --version did not print a version", bin.display()))?;
        if record.previous_version.is_none() {
            record.previous_version = Some(installed.clone());
        }
        let replaced = self.running_replaced(&record.unit).await.unwrap_or(false);
        if at_or_above(&installed, &target, replaced) {
            let why =
                format!("{installed} is installed and running, at or above the target {target}");
            record.skipped = Some(why.clone());
            return Ok(why);
        }
        Ok(format!(
            "{installed} installed{}; upgrading to {target} from {source}",
            if replaced {
                " (the unit runs a replaced binary)"
            } else {
                ""
            }
        ))
    }

    async fn verify_version(&self, record: &OpRecord) -> Result<String, String> {
        let (target, _) = self.upgrade_target(record)?;
        let bin = self.installed_bin();
        let installed = binary_version(&bin)
            .await
            .ok_or_else(|| format!("{} --version did not print a version", bin.display()))?;
        if installed != target {
            return Err(format!(
                "{} reports {installed}, not {target}",
                bin.display()
            ));
        }
        match self.running_replaced(&record.unit).await {
            Some(true) => Err(format!(
                "{} still runs the binary that was replaced",
                record.unit
            )),
            Some(false) => Ok(format!(
                "{} reports {installed}; {} runs it",
                bin.display(),
                record.unit
            )),
            None => Err(format!("{} has no main process", record.unit)),
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
            let snapshot = self.op_dir(record)?.join("snapshot");
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

/// Whether a cancel may still end `record`: none of its steps so far changed the node.
#[must_use]
pub fn may_cancel(record: &OpRecord) -> bool {
    !record.step.changes_node() && record.log.iter().all(|l| !l.step.changes_node())
}

/// Readiness verdicts: keep waiting, or give up now (the unit failed).
enum Wait {
    NotYet(String),
    Fatal(String),
}
use Wait::{Fatal, NotYet};
