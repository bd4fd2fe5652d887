//! Why a backup or a restore failed. Every variant names the file (the archive, the state
//! dir, the lock) and, for an archive refused, the member or manifest field at fault. The
//! underlying error is the `source`, not repeated in the message (the CLI prints the chain).

use std::path::PathBuf;

use super::archive::ArchiveError;

/// A failed `backup` or `restore`.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The state dir has no database: not the hub's state dir, or a hub never started.
    #[error("no hub database at {path}; pass the hub's --state-dir (or --config)")]
    NoDatabase {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The state dir's CA is missing or unusable.
    #[error("the hub CA in {state_dir}")]
    Ca {
        /// The state dir.
        state_dir: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<crate::pki::PkiError>,
    },
    /// Copying or checking the database failed.
    #[error(transparent)]
    Snapshot(Box<crate::store::SnapshotError>),
    /// The output file exists and `--force` was not given.
    #[error("{path} exists; pass --force to replace it")]
    OutputExists {
        /// The output file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder could not be written, created, moved or synced.
    #[error("writing {path}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is refused; nothing was changed.
    #[error("backup {path} is refused")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong, naming the member or field.
        #[source]
        source: ArchiveError,
    },
    /// The archive read differently the second time (it changed during the restore).
    #[error("backup {path} changed while it was being restored; nothing was replaced")]
    Changed {
        /// The archive.
        path: PathBuf,
    },
    /// The database in the archive is not at the schema version its manifest says.
    #[error(
        "backup {path}: member hub.db is at schema version {found}, manifest.json's field \
         schema_version says {listed}"
    )]
    SchemaMismatch {
        /// The archive.
        path: PathBuf,
        /// The manifest's.
        listed: u32,
        /// The database's.
        found: u32,
    },
    /// The archive's database fails its checks.
    #[error("backup {path}: member hub.db")]
    BadDatabase {
        /// The archive.
        path: PathBuf,
        /// What SQLite found.
        #[source]
        source: Box<crate::store::SnapshotError>,
    },
    /// The archive's CA is unusable (key not the certificate's, expired, not a CA).
    #[error("backup {path}: members pki/ca.crt and pki/ca.key")]
    BadCa {
        /// The archive.
        path: PathBuf,
        /// What is wrong with them.
        #[source]
        source: Box<crate::pki::PkiError>,
    },
    /// A hub is serving the state dir.
    #[error(
        "state dir {state_dir} is in use: a running `rke2-hub serve`{by} holds the lock {lock}; \
         stop it first (systemctl stop rke2-hub)",
        by = pid.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Serving {
        /// The state dir.
        state_dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The pid written in the lock file, when there is one.
        pid: Option<String>,
    },
    /// The state dir already holds a hub's state and `--force` was not given.
    #[error(
        "state dir {state_dir} already holds {present}; pass --force to move them aside into \
         {state_dir}/pre-restore-<UTC time>/ first (nothing is deleted)",
        present = present.join(", ")
    )]
    StateExists {
        /// The state dir.
        state_dir: PathBuf,
        /// What is there.
        present: Vec<String>,
    },
    /// The restored database could not be opened (or migrated).
    #[error("opening the restored database")]
    Store(#[source] Box<crate::store::StoreError>),
}

// The sources are boxed: SQLite's and the PKI's errors are large, and every result here
// would carry their size.
impl From<crate::store::SnapshotError> for BackupError {
    fn from(err: crate::store::SnapshotError) -> Self {
        Self::Snapshot(Box::new(err))
    }
}

impl From<crate::store::StoreError> for BackupError {
    fn from(err: crate::store::StoreError) -> Self {
        Self::Store(Box::new(err))
    }
}
