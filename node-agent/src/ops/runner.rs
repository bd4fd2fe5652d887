//! Drives an operation's steps: journals each step before it acts, offers the test-only
//! crash points, reports progress, resumes an interrupted operation and follows the step
//! machine ([`super::steps`]) into its rollback path on failure. The steps' side effects
//! live in their own modules ([`super::readiness`], [`super::units`], [`super::rotation`],
//! [`super::restart`], [`super::upgrade`]); the runner only dispatches to them.
//!
//! Every step is idempotent, because a crash between a side effect and the next journal
//! write re-runs it: stopping and starting units, probing and verifying are naturally so;
//! `rotate` records when it began and, on a re-run, recognises its own backup instead of
//! rotating twice; restoring copies the same files again; an upgrade's fetch replaces its
//! download, and its install keeps the previous files once (see [`super::install`]).
//!
//! The runner reaches the node only through [`ServiceManager`], [`HealthProbes`] and
//! [`UnitLog`] (plus the files under the data dir and the `rke2` binary), so it runs against
//! fakes in tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::journal::{Journal, JournalError, OpRecord, StepLog};
use super::steps::{OpKind, Role, Step, first_step, on_failure_of, on_skip, on_success};
use super::units::{self, UnitJob};
use super::waits::waited;
use super::{artifacts, images, paths, readiness, restart, rotation, snapshot, upgrade};
use crate::health::{HealthProbes, NodeProbes};
use crate::journald::Journald;
use crate::service::{ServiceManager, UnitLog, detect_rke2_unit};

pub use super::setup::NodeSetup;
pub use super::upgrade::{at_or_above, binary_version, parse_version_banner};

/// A start after a failure waits at most this long for readiness (or the configured
/// timeout, if shorter): the report matters more than a long wait.
const AFTER_FAILURE_READY_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// The runner could not be built (config.yaml, journal, D-Bus).
    #[error(transparent)]
    Setup(#[from] super::setup::RunnerSetupError),
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
pub struct Runner<M, P = NodeProbes, L = Journald> {
    /// Starts, stops and reads the RKE2 unit.
    manager: M,
    /// Asks etcd, the apiserver and the kubelet whether the node is healthy.
    probes: P,
    /// Where a failure report gets the unit's last log lines.
    unit_log: L,
    /// What the operations need to know about the node.
    setup: NodeSetup,
    /// Where each step is recorded before it acts; outlives the process.
    journal: Journal,
}

impl<M: ServiceManager> Runner<M> {
    /// A runner probing the node's real endpoints and reading journald.
    pub fn new(manager: M, setup: NodeSetup, journal: Journal) -> Self {
        let probes = setup.probes();
        Self::with_seams(manager, probes, Journald, setup, journal)
    }
}

impl<M: ServiceManager, P: HealthProbes, L: UnitLog> Runner<M, P, L> {
    /// A runner over any service manager, probes and unit log (tests pass fakes).
    pub fn with_seams(
        manager: M,
        probes: P,
        unit_log: L,
        setup: NodeSetup,
        journal: Journal,
    ) -> Self {
        Self {
            manager,
            probes,
            unit_log,
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
        }
        | OpKind::StageImages { version, source } = &kind
        {
            version.parse::<rke2ops_common::version::Rke2Version>()?;
            // No source at all is reported by a tarball upgrade's fetch: an RPM install
            // needs none (its packages come from `rpm_repository`).
            if let Some(source) = source
                .clone()
                .or_else(|| self.setup.artifact_source.clone())
            {
                artifacts::check_allowed(
                    &artifacts::Source::parse(&source)?,
                    &self.setup.allowed_artifact_sources,
                )?;
            }
        }
        if let OpKind::PruneImages { version } = &kind {
            version.parse::<rke2ops_common::version::Rke2Version>()?;
        }
        if let OpKind::Rotate { services, .. } = &kind
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
            let (result, waited) = super::waits::measure(self.execute(&mut record, step)).await;
            let waited_millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
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
                        waited_millis,
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
                        record.unit_journal = self.unit_log.tail(&record.unit, 20).await;
                    }
                    record.log.push(StepLog {
                        step,
                        ok: false,
                        detail: reason,
                        millis,
                        waited_millis,
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
            && let Ok(op_dir) = op_dir(&self.journal, &record)
        {
            // Verified success: RKE2's own backup stays; the key copies are not needed.
            if let Err(e) = paths::remove_tree_within(journal_dir, &op_dir) {
                tracing::warn!(error = %e, "operation folder not removed");
            }
        }
        if matches!(record.kind, OpKind::Upgrade { .. })
            && let Ok(op_dir) = op_dir(&self.journal, &record)
        {
            // The download and its extraction are not needed any more; `previous/` stays (the
            // files the release replaced, for a manual rollback).
            for sub in ["artifacts", "staged"] {
                if let Err(e) = paths::remove_tree_within(journal_dir, &op_dir.join(sub)) {
                    tracing::warn!(error = %e, "upgrade staging not removed");
                }
            }
        }
        if matches!(record.kind, OpKind::StageImages { .. }) {
            // A failed or cancelled staging leaves no download behind (a successful one
            // removed it when it placed the archives).
            let staging = self.setup.data_dir.join(images::STAGING_DIR);
            if let Err(e) = paths::remove_tree_within(&self.setup.data_dir, &staging) {
                tracing::warn!(error = %e, "image staging folder not removed");
            }
        }
        self.journal.finish(&record)?;
        Ok(record)
    }

    /// Runs one step's side effect, in the module that owns it; the runner only dispatches.
    async fn execute(&self, record: &mut OpRecord, step: Step) -> Result<String, String> {
        let setup = &self.setup;
        let manager = &self.manager;
        let probes = &self.probes;
        let journal = &self.journal;
        match step {
            Step::Preflight => readiness::preflight(setup, probes, record).await,
            Step::StopUnit => waited(units::run(manager, UnitJob::Stop, &record.unit)).await,
            Step::Rotate => waited(rotation::rotate(setup, journal, record)).await,
            Step::VerifyBackup => rotation::verify_backup(setup, record),
            Step::StartUnit | Step::StartAfterFailure => {
                waited(units::run(manager, UnitJob::Start, &record.unit)).await
            }
            Step::RestartUnit if matches!(record.kind, OpKind::Upgrade { .. }) => {
                waited(upgrade::restart(manager, record)).await
            }
            Step::RestartUnit => waited(units::run(manager, UnitJob::Restart, &record.unit)).await,
            Step::WaitReady => {
                waited(readiness::wait_ready(
                    manager,
                    probes,
                    record,
                    setup.ready_timeout,
                ))
                .await
            }
            Step::WaitAfterFailure => {
                let timeout = setup.ready_timeout.min(AFTER_FAILURE_READY_TIMEOUT);
                waited(readiness::wait_ready(manager, probes, record, timeout)).await
            }
            Step::VerifyFresh => rotation::verify_fresh(setup, record),
            Step::VerifyRenewed => restart::verify_renewed(setup, record),
            Step::RefreshKubeconfigs => rotation::refresh_kubeconfigs(setup),
            Step::VerifyServed => rotation::verify_served(setup, probes).await,
            Step::RestoreBackup => rotation::restore_backup(setup, manager, record).await,
            Step::CheckVersion => upgrade::check_version(setup, manager, record).await,
            Step::FetchArtifacts => upgrade::fetch(setup, journal, record).await,
            Step::VerifyChecksum => upgrade::verify_checksum(journal, record).await,
            Step::EtcdSnapshot => waited(snapshot::save(setup, record)).await,
            Step::InstallFiles => upgrade::install_files(setup, manager, journal, record).await,
            Step::DaemonReload => waited(units::daemon_reload(manager)).await,
            Step::VerifyVersion => upgrade::verify_version(setup, manager, record).await,
            Step::RestorePrevious => {
                upgrade::restore_previous(setup, manager, journal, record).await
            }
            Step::FetchImages => images::fetch_step(setup, record).await,
            Step::VerifyImages => images::verify_step(setup),
            Step::PlaceImages => images::place_step(setup, record),
            Step::PruneImages => images::prune_step(setup, record),
            Step::Done | Step::Failed | Step::Skipped => Ok(String::new()),
        }
    }
}

/// The operation's own folder under the journal; an id that is not one plain path component
/// is refused (a journal record is as untrusted as the request that made it).
pub(super) fn op_dir(journal: &Journal, record: &OpRecord) -> Result<PathBuf, String> {
    paths::op_dir(journal.dir(), &record.id).map_err(|e| e.to_string())
}

/// Whether a cancel may still end `record`: none of its steps so far changed the node.
#[must_use]
pub fn may_cancel(record: &OpRecord) -> bool {
    !record.step.changes_node() && record.log.iter().all(|l| !l.step.changes_node())
}
