//! The crash-safe operation journal under the agent's state dir.
//!
//! `current.json` holds the operation in progress; every update is written to a temporary
//! file, fsynced, renamed over it, and the folder fsynced, so a crash leaves either the old or
//! the new record, never a torn one. A finished operation moves to `last.json` and is
//! appended to `history.jsonl`. A lock file keeps two operations (daemon and CLI) apart.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rke2ops_common::atomic_file::{self, Attrs, Policy};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::steps::{OpKind, Role, Step};

/// One operation's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Unique id (reported to the hub as the same id after a restart).
    pub id: String,
    /// What it does.
    pub kind: OpKind,
    /// The node's role when it began.
    pub role: Role,
    /// The RKE2 unit it drives.
    pub unit: String,
    /// The step about to run (or running when the agent died).
    pub step: Step,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Unix time written just before `rke2 certificate rotate` ran: a backup named at or
    /// after it was made by this operation.
    pub rotate_started_unix: Option<i64>,
    /// The backup folder this operation made, relative to the data dir.
    pub backup: Option<String>,
    /// The agent's own exact copy of the certificates taken just before the rotation (RKE2's
    /// backup flattens agent files into the server backup by name, so it cannot be restored
    /// exactly).
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// renew-by-restart: leaves inside the renewal window before the restart, with their
    /// NotAfter (Unix seconds); each must have a later NotAfter afterwards.
    #[serde(default)]
    pub due_for_renewal: Vec<(String, i64)>,
    /// Upgrades: the files the release installs (relative to the prefix), once staged.
    #[serde(default)]
    pub installed_files: Vec<String>,
    /// Upgrades: the version installed before (what a rollback returns to).
    #[serde(default)]
    pub previous_version: Option<String>,
    /// Upgrades: the install found at the version check (method, prefix or packages), so
    /// a resumed or rolled-back upgrade works on the same one.
    #[serde(default)]
    pub install: Option<InstallRecord>,
    /// Why there was nothing to do (the operation ended `skipped`).
    #[serde(default)]
    pub skipped: Option<String>,
    /// Cancelled (by the hub) before its first side effect; ends `failed` with this set.
    #[serde(default)]
    pub cancelled: bool,
    /// Why it failed (first failure), once it did.
    pub failure: Option<String>,
    /// The unit's last journal lines at the failure.
    pub unit_journal: Vec<String>,
    /// Completed steps with their one-line results, in order.
    pub log: Vec<StepLog>,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl OpRecord {
    /// A new operation about to run `step` first, with nothing recorded yet.
    #[must_use]
    pub fn new(
        id: String,
        kind: OpKind,
        role: Role,
        unit: String,
        step: Step,
        started_at: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            kind,
            role,
            unit,
            step,
            started_at,
            rotate_started_unix: None,
            backup: None,
            snapshot: None,
            due_for_renewal: vec![],
            installed_files: vec![],
            previous_version: None,
            install: None,
            skipped: None,
            cancelled: false,
            failure: None,
            unit_journal: vec![],
            log: vec![],
            finished_at: None,
        }
    }
}

/// How the node's RKE2 is installed, as an upgrade found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum InstallRecord {
    /// The tarball in `prefix`.
    Tarball {
        /// e.g. `/usr/local`.
        prefix: std::path::PathBuf,
        /// Where its units go ([`super::install::Layout`]), fixed when the operation began
        /// so that a restore after an agent update puts them back where they were installed.
        /// Absent in records of agents before it: `<prefix>/lib/systemd/system`, where those
        /// agents installed them.
        #[serde(default)]
        units: Option<std::path::PathBuf>,
    },
    /// RPM packages.
    Rpm {
        /// The package manager used.
        tool: super::pkg::PackageTool,
        /// The RKE2 packages installed before (`name-version-release`): a rollback
        /// installs exactly these again.
        previous: Vec<String>,
        /// The downloaded (or copied) `.rpm` files the upgrade installs.
        #[serde(default)]
        files: Vec<std::path::PathBuf>,
        /// The unit's main PID just before the install: a different one afterwards means
        /// the package's `%postun` restarted it.
        #[serde(default)]
        pid_before: Option<u32>,
        /// The key the packages must be signed with (`rpm_gpg_key` when the operation
        /// started), so a resumed operation checks what it started checking; `None`:
        /// signatures unchecked.
        #[serde(default)]
        gpg_key: Option<String>,
    },
}

/// One completed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step.
    pub step: Step,
    /// `ok` or `failed`.
    pub ok: bool,
    /// What it found or did.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// Of which waiting on others (package manager, `rke2` CLI, systemd jobs, readiness;
    /// see [`super::waits`]): the rest is the agent's own work.
    #[serde(default)]
    pub waited_millis: u64,
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O on a journal file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A journal file that is not a valid record.
    #[error("{path}: not a valid operation record: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// Another operation holds the lock.
    #[error("another operation is running on this node (lock {path} is held)")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

/// The journal folder.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// Held while an operation runs; dropping it releases the lock.
#[derive(Debug)]
pub struct OpLock {
    _file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// The journal in `dir` (created 0700 when missing).
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Records name files and units only, but nobody else needs to read them.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io(&dir))?;
        Ok(Self { dir })
    }

    /// Where the journal lives.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current.json")
    }

    /// Takes the operations lock (flock) without waiting.
    ///
    /// # Errors
    /// [`JournalError::Busy`] when another process holds it.
    pub fn lock(&self) -> Result<OpLock, JournalError> {
        let path = self.dir.join("ops.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(OpLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(JournalError::Busy { path }),
            Err(fs::TryLockError::Error(source)) => Err(JournalError::Io { path, source }),
        }
    }

    /// The unfinished operation, if any.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed (it is kept for inspection).
    pub fn current(&self) -> Result<Option<OpRecord>, JournalError> {
        let path = self.current_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::Io { path, source: e }),
        }
    }

    /// The last finished operation, if any.
    ///
    /// # Errors
    /// As [`Journal::current`].
    pub fn last(&self) -> Result<Option<OpRecord>, JournalError> {
        let path = self.dir.join("last.json");
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::Io { path, source: e }),
        }
    }

    /// Durably records `record` as the operation in progress.
    ///
    /// # Errors
    /// On I/O failure (the operation must then stop: its progress is not durable).
    pub fn save(&self, record: &OpRecord) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| JournalError::Corrupt {
            path: self.current_path(),
            reason: e.to_string(),
        })?;
        write_atomically(&self.current_path(), &bytes)
    }

    /// The finished operation with this id (the newest, from `history.jsonl`), if any.
    ///
    /// # Errors
    /// When the history cannot be read.
    pub fn finished(&self, id: &str) -> Result<Option<OpRecord>, JournalError> {
        let path = self.dir.join("history.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::Io { path, source: e }),
        };
        // Lines are independent: a torn last line (crash while appending) is skipped.
        Ok(text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<OpRecord>(l).ok())
            .find(|r| r.id == id))
    }

    /// Moves a finished `record` to `last.json` and `history.jsonl`.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn finish(&self, record: &OpRecord) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| JournalError::Corrupt {
            path: self.dir.join("last.json"),
            reason: e.to_string(),
        })?;
        write_atomically(&self.dir.join("last.json"), &bytes)?;
        let history = self.dir.join("history.jsonl");
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history)
            .map_err(io(&history))?;
        file.write_all(&line).map_err(io(&history))?;
        file.sync_all().map_err(io(&history))?;
        let current = self.current_path();
        match fs::remove_file(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(JournalError::Io {
                    path: current,
                    source: e,
                });
            }
        }
        sync_dir(&self.dir)
    }
}

/// Writes a journal file atomically (see [`rke2ops_common::atomic_file`]); a new one is 0600,
/// nobody else needs to read it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    atomic_file::replace_file(path, bytes, Policy::KeepExisting(Attrs::mode(0o600))).map_err(|e| {
        JournalError::Io {
            path: e.path,
            source: e.source,
        }
    })
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_journaled_before_unit_folders_existed_still_reads() {
        let old: InstallRecord =
            serde_json::from_str(r#"{"method":"tarball","prefix":"/opt/rke2"}"#).expect("old");
        assert_eq!(
            old,
            InstallRecord::Tarball {
                prefix: "/opt/rke2".into(),
                units: None
            }
        );
    }

    #[test]
    fn a_rotation_journaled_before_snapshots_existed_still_reads() {
        let kind: OpKind = serde_json::from_str(r#"{"kind":"rotate","services":["etcd"]}"#)
            .expect("an older agent's journal");
        assert_eq!(
            kind,
            OpKind::Rotate {
                services: vec!["etcd".into()],
                etcd_snapshot: false
            }
        );
    }

    fn record() -> OpRecord {
        OpRecord::new(
            "op-1".into(),
            OpKind::Rotate {
                services: vec!["kubelet".into()],
                etcd_snapshot: false,
            },
            Role::Server,
            "rke2-server.service".into(),
            Step::StopUnit,
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn save_then_current_round_trips_and_finish_moves_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path().join("ops")).expect("open");
        assert_eq!(journal.current().expect("read"), None);
        let mut r = record();
        journal.save(&r).expect("save");
        assert_eq!(journal.current().expect("read"), Some(r.clone()));
        r.step = Step::Done;
        journal.finish(&r).expect("finish");
        assert_eq!(journal.current().expect("read"), None);
        assert_eq!(journal.last().expect("read"), Some(r));
        let history =
            std::fs::read_to_string(dir.path().join("ops/history.jsonl")).expect("history");
        assert_eq!(history.lines().count(), 1);
        assert_eq!(
            journal.finished("op-1").expect("read").map(|r| r.step),
            Some(Step::Done)
        );
        assert_eq!(journal.finished("op-2").expect("read"), None);
    }

    #[test]
    fn journal_files_are_0600_and_never_written_through_a_planted_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path().join("ops")).expect("open");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let current = journal.current_path();
        std::os::unix::fs::symlink(&victim, atomic_file::temp_path_for(&current)).expect("link");
        journal.save(&record()).expect("save");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
        let mode = std::fs::metadata(&current)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_current_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        std::fs::write(dir.path().join("current.json"), b"{not json").expect("write");
        let err = journal.current().expect_err("corrupt").to_string();
        assert!(err.contains("current.json"), "{err}");
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        let held = journal.lock().expect("first lock");
        assert!(matches!(journal.lock(), Err(JournalError::Busy { .. })));
        drop(held);
        assert!(journal.lock().is_ok());
    }
}
