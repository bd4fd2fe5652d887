//! Operations the hub asks for over the stream (`RunOperation`, `CancelOperation`).
//!
//! The hub re-sends a `RunOperation` after every reconnect until it has the result, so the
//! agent is idempotent by operation id ([`decide_run`], pure): a finished id is reported again
//! from the journal's history, the id being run continues, an interrupted one (the agent was
//! restarted) is resumed, another id is refused while one runs. Operations run in a task of
//! their own, so heartbeats go on; their progress and result go into a channel that outlives
//! any one stream and is drained by whichever session is connected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rke2ops_common::text::{MAX_DETAIL, clip};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::messages::{OpProgress, OpResult, Outcome, Outgoing, RunRequest, StepPhase};
use crate::config::Config;
use crate::ops::journal::{Journal, JournalError, OpRecord};
use crate::ops::runner::{OpError, Progress, Runner};
use crate::ops::steps::{OpKind, Step};

/// What to do with a `RunOperation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunDecision {
    /// It finished earlier: send its result again.
    Report(Box<OpRecord>),
    /// It is running in this process: its progress and result will come.
    Continue,
    /// It was interrupted (agent restart): resume it from the journal.
    Resume,
    /// Refuse it, saying why.
    Reject(String),
    /// Start it with this id.
    Start,
}

/// The pure idempotence decision for operation `id`, given the operation running in this
/// process, the journal's unfinished operation and the finished one with that id.
#[must_use]
pub fn decide_run(
    id: &str,
    running: Option<&str>,
    current: Option<&OpRecord>,
    finished: Option<&OpRecord>,
) -> RunDecision {
    if let Err(e) = rke2ops_common::ids::check_operation_id(id) {
        return RunDecision::Reject(format!("bad request: {e}"));
    }
    if let Some(done) = finished {
        return RunDecision::Report(Box::new(done.clone()));
    }
    match (running, current) {
        (Some(r), _) if r == id => RunDecision::Continue,
        (Some(r), _) => RunDecision::Reject(format!("busy with {r}")),
        (None, Some(c)) if c.id == id => RunDecision::Resume,
        (None, Some(c)) => RunDecision::Reject(format!("busy with {}", c.id)),
        (None, None) => RunDecision::Start,
    }
}

/// `; etcd-snapshot: saved <path> (<n> bytes)` when the operation took one: the step's
/// progress may have been lost with a hub restart, and the result, which the agent keeps and
/// sends again, names it too (a failed operation's snapshot is the one an operator needs).
fn snapshot_suffix(record: &OpRecord) -> String {
    record
        .log
        .iter()
        .rev()
        .find(|l| l.ok && l.step == Step::EtcdSnapshot)
        .map(|l| format!("; etcd-snapshot: {}", l.detail))
        .unwrap_or_default()
}

/// The result of a finished operation (pure): succeeded, skipped, failed, or rejected when it
/// was cancelled before changing anything.
#[must_use]
pub fn result_of(record: &OpRecord, rke2_version: String) -> OpResult {
    let (outcome, detail) = match record.step {
        Step::Done => {
            let mut detail = format!(
                "{} succeeded: {}",
                record.kind.name(),
                record
                    .log
                    .iter()
                    .rev()
                    .find(|l| l.ok && !l.detail.is_empty())
                    .map_or("", |l| l.detail.as_str())
            );
            detail.push_str(&snapshot_suffix(record));
            (Outcome::Succeeded, detail)
        }
        Step::Skipped => (Outcome::Skipped, record.skipped.clone().unwrap_or_default()),
        _ if record.cancelled => (Outcome::Rejected, "cancelled".to_owned()),
        _ => (
            Outcome::Failed,
            record
                .failure
                .clone()
                .unwrap_or_else(|| "failed".to_owned())
                + &snapshot_suffix(record),
        ),
    };
    OpResult {
        operation_id: record.id.clone(),
        outcome,
        detail: clip(&detail, MAX_DETAIL).into_owned(),
        unit_journal: record.unit_journal.clone(),
        rke2_version,
        finished_at: record.finished_at,
    }
}

/// A REJECTED result. The id is echoed as sent (clipped to the longest valid id), so the hub
/// can match it; an invalid id matches nothing there.
#[must_use]
pub fn rejected(id: &str, why: String, rke2_version: String) -> OpResult {
    OpResult {
        operation_id: clip(id, rke2ops_common::ids::MAX_OPERATION_ID).into_owned(),
        outcome: Outcome::Rejected,
        detail: clip(&why, MAX_DETAIL).into_owned(),
        unit_journal: vec![],
        rke2_version,
        finished_at: Some(OffsetDateTime::now_utc()),
    }
}

fn progress_message(p: &Progress<'_>) -> Outgoing {
    let (phase, detail) = match p.outcome {
        None => (StepPhase::Started, String::new()),
        Some(Ok(d)) => (StepPhase::Succeeded, clip(d, MAX_DETAIL).into_owned()),
        Some(Err(d)) => (StepPhase::Failed, clip(d, MAX_DETAIL).into_owned()),
    };
    Outgoing::Progress(OpProgress {
        operation_id: p.record.id.clone(),
        step: p.step.name().to_owned(),
        phase,
        detail,
        elapsed_ms: u64::try_from(p.elapsed.as_millis()).unwrap_or(u64::MAX),
    })
}

fn result_message(result: OpResult) -> Outgoing {
    Outgoing::Result(result)
}

/// The operation running in this process: its id and cancel flag.
type Running = Option<(String, Arc<AtomicBool>)>;

/// Runs the hub's operations, one at a time.
#[derive(Debug)]
pub struct OpsDriver {
    /// The agent's configuration (node setup, journal, binary).
    config: Config,
    /// Progress and results, drained by the connected session.
    events: mpsc::UnboundedSender<Outgoing>,
    /// The operation running now.
    running: Mutex<Running>,
}

impl OpsDriver {
    /// A driver and the receiving end of its events.
    #[must_use]
    pub fn new(config: Config) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                config,
                events,
                running: Mutex::new(None),
            }),
            rx,
        )
    }

    fn journal(&self) -> Result<Journal, JournalError> {
        Journal::open(self.config.state_dir.join("ops"))
    }

    fn running_id(&self) -> Option<String> {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|(id, _)| id.clone()))
    }

    /// Resumes an operation a previous agent process left unfinished, reporting it under its
    /// own id (the daemon calls this at start when the hub link is configured).
    pub fn resume_interrupted(self: &Arc<Self>) {
        match self.journal().and_then(|j| j.current()) {
            Ok(Some(record)) => {
                tracing::warn!(op = %record.id, step = record.step.name(), "resuming an interrupted operation");
                self.spawn(record.id, None);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the operation journal"),
        }
    }

    /// Handles a `RunOperation`.
    pub async fn handle_run(self: &Arc<Self>, run: RunRequest) {
        let id = run.operation_id;
        if let Err(e) = rke2ops_common::ids::check_operation_id(&id) {
            // Before anything reads the journal with it or names a folder after it.
            return self.reject(&id, format!("bad request: {e}")).await;
        }
        // Every field checked before the journal is even opened: a hostile request leaves
        // no trace on the node but the log line.
        let kind = match run.kind {
            Ok(kind) => kind,
            Err(why) => return self.reject(&id, why).await,
        };
        let journal = match self.journal() {
            Ok(j) => j,
            Err(e) => return self.reject(&id, format!("journal unusable: {e}")).await,
        };
        let current = journal.current().ok().flatten();
        let finished = journal.finished(&id).ok().flatten();
        let running = self.running_id();
        match decide_run(&id, running.as_deref(), current.as_ref(), finished.as_ref()) {
            RunDecision::Report(record) => {
                tracing::info!(op = %id, "operation already finished: reporting its result again");
                let version = self.version().await;
                let _ = self
                    .events
                    .send(result_message(result_of(&record, version)));
            }
            RunDecision::Continue => tracing::debug!(op = %id, "operation already running"),
            RunDecision::Resume => self.spawn(id, None),
            RunDecision::Reject(why) => self.reject(&id, why).await,
            RunDecision::Start => self.spawn(id, Some(kind)),
        }
    }

    /// Handles a `CancelOperation`: honoured until the operation's first change to the node.
    pub fn handle_cancel(&self, id: &str) {
        let guard = self.running.lock().ok();
        match guard.as_ref().and_then(|r| r.as_ref()) {
            Some((running, flag)) if running == id => {
                flag.store(true, Ordering::SeqCst);
                tracing::info!(op = %id, "cancel requested (honoured only before the first change to the node)");
            }
            _ => {
                tracing::info!(op = %rke2ops_common::text::quoted(id), "cancel ignored: that operation is not running")
            }
        }
    }

    async fn version(&self) -> String {
        crate::ops::runner::binary_version(&crate::ops::setup::effective_rke2_bin(
            &self.config.rke2_bin,
        ))
        .await
        .unwrap_or_default()
    }

    async fn reject(&self, id: &str, why: String) {
        tracing::warn!(op = %rke2ops_common::text::quoted(id), reason = %why, "operation rejected");
        let version = self.version().await;
        let _ = self.events.send(result_message(rejected(id, why, version)));
    }

    /// Runs (`kind`) or resumes (`None`) operation `id` in a task.
    fn spawn(self: &Arc<Self>, id: String, kind: Option<OpKind>) {
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut running) = self.running.lock() {
            *running = Some((id.clone(), Arc::clone(&cancel)));
        }
        let driver = Arc::clone(self);
        let span = tracing::info_span!("operation", node = %crate::state::node_name(&self.config), op = %id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let outcome = driver.execute(&id, kind, &cancel).await;
                // An upgrade (or its rollback) may have changed the install.
                super::probe::forget_install();
                if let Ok(mut running) = driver.running.lock() {
                    *running = None;
                }
                let version = driver.version().await;
                let result = match outcome {
                    Ok(Some(record)) => result_of(&record, version),
                    Ok(None) => return,
                    Err(OpError::Journal(JournalError::Busy { .. })) => rejected(
                        &id,
                        "busy: another operation holds this node's lock (a local rke2-node-agent command?)"
                            .to_owned(),
                        version,
                    ),
                    Err(e) => rejected(&id, e.to_string(), version),
                };
                tracing::info!(outcome = ?result.outcome, detail = %result.detail, "operation ended");
                let _ = driver.events.send(result_message(result));
            },
            span,
        ));
    }

    async fn execute(
        &self,
        id: &str,
        kind: Option<OpKind>,
        cancel: &AtomicBool,
    ) -> Result<Option<OpRecord>, OpError> {
        let runner = Runner::from_config(&self.config).await?;
        let events = self.events.clone();
        let progress = move |p: &Progress<'_>| {
            let _ = events.send(progress_message(p));
        };
        match kind {
            Some(kind) => runner
                .run_with(Some(id.to_owned()), kind, Some(cancel), progress)
                .await
                .map(Some),
            None => runner.resume(progress).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::steps::Role;

    fn record(id: &str, step: Step) -> OpRecord {
        OpRecord::new(
            id.into(),
            OpKind::RenewByRestart,
            Role::Server,
            "rke2-server.service".into(),
            step,
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_finished_operation_is_reported_again() {
        let done = record("plan-1-n1-1", Step::Done);
        assert_eq!(
            decide_run("plan-1-n1-1", None, None, Some(&done)),
            RunDecision::Report(Box::new(done))
        );
    }

    #[test]
    fn the_running_or_interrupted_operation_continues() {
        assert_eq!(
            decide_run("a", Some("a"), None, None),
            RunDecision::Continue
        );
        let interrupted = record("a", Step::WaitReady);
        assert_eq!(
            decide_run("a", None, Some(&interrupted), None),
            RunDecision::Resume
        );
    }

    #[test]
    fn another_operation_is_refused_while_one_holds_the_node() {
        assert_eq!(
            decide_run("b", Some("a"), None, None),
            RunDecision::Reject("busy with a".into())
        );
        let interrupted = record("a", Step::StopUnit);
        assert_eq!(
            decide_run("b", None, Some(&interrupted), None),
            RunDecision::Reject("busy with a".into())
        );
        assert_eq!(decide_run("b", None, None, None), RunDecision::Start);
        assert!(matches!(
            decide_run("", None, None, None),
            RunDecision::Reject(_)
        ));
    }

    #[test]
    fn outcomes_follow_the_journal_record() {
        let mut skipped = record("s", Step::Skipped);
        skipped.skipped = Some("v1.34.1+rke2r1 is installed".into());
        let r = result_of(&skipped, "v1.34.1+rke2r1".into());
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!(r.detail, "v1.34.1+rke2r1 is installed");
        let mut cancelled = record("c", Step::Failed);
        cancelled.cancelled = true;
        cancelled.failure = Some("cancelled".into());
        let r = result_of(&cancelled, String::new());
        assert_eq!(r.outcome, Outcome::Rejected);
        assert_eq!(r.detail, "cancelled");
        let mut failed = record("f", Step::Failed);
        failed.failure = Some("wait-ready: not ready within 20 s".into());
        let r = result_of(&failed, String::new());
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(r.detail.contains("wait-ready"));
    }

    #[test]
    fn hostile_operation_ids_are_rejected_naming_the_field() {
        let long = "x".repeat(10_000);
        for bad in [
            "/var/lib/rancher/rke2",
            ".",
            "..",
            "../x",
            long.as_str(),
            "a\nb",
        ] {
            match decide_run(bad, None, None, None) {
                RunDecision::Reject(why) => {
                    assert!(why.contains("operation_id"), "{why}");
                    assert!(why.len() < 200, "the reason stays short: {why}");
                }
                other => panic!("{bad:?} was not rejected: {other:?}"),
            }
        }
        let r = rejected(&long, "x".repeat(100_000), String::new());
        assert_eq!(r.operation_id.len(), 128 + "…(9872 bytes cut)".len());
        assert!(r.detail.len() <= MAX_DETAIL + 32);
    }
}
