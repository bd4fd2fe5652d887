//! The hub's durable state in an embedded SQLite database: the node inventory, the latest
//! certificate snapshot of every node, join tokens (hashes only), the certificate serial the
//! hub accepts per node and admin (and the ones it stopped accepting), and the audit log of
//! admin actions.
//!
//! What it guarantees:
//! - **Durability**: WAL journal with `synchronous = FULL`, so a write whose call returned `Ok`
//!   survives `kill -9` of the hub and a power loss (each commit fsyncs the WAL).
//! - **Atomicity**: every method is one transaction. A certificate snapshot replaces the previous
//!   one whole or not at all; a join token is consumed by exactly one caller, even across
//!   processes sharing the file.
//! - **Confidentiality**: the database file is mode 0600; it stores only SHA-256 hashes of token
//!   secrets, and no read method returns them.
//!
//! What it does not do: decide anything. Validation of what agents send, the mapping from gRPC
//! messages, and the policy of when a node counts as offline live with their callers.
//!
//! [`Store`] is a cheap `Clone` handle (`Arc<Mutex<Connection>>`), `Send + Sync`. Every method
//! is short and synchronous (one transaction, microseconds to a few milliseconds, dominated by the
//! commit's fsync); async callers may call them directly for single rows, and should move large
//! batches (many snapshots at once) onto `tokio::task::spawn_blocking`.

mod audit;
mod certs;
mod error;
mod findings;
mod identities;
mod images;
mod install;
pub mod model;
mod nodes;
mod plans;
mod probes;
pub mod replicate;
mod rollouts;
mod schema;
mod snapshot;
mod tokens;

use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use time::OffsetDateTime;

pub use error::{StoreError, TokenError};
pub use findings::NodeFindings;
pub use model::{
    AuditEntry, CertRow, CredentialKind, FileErrorRow, IdentityRecord, NodeRecord, RemovedNode,
    TokenRecord,
};
pub use plans::NewPlan;
pub use rollouts::NewRollout;
pub use snapshot::{DatabaseFacts, SnapshotError, inspect_database, snapshot_database};
pub use tokens::hash_secret;
pub use tokens::{Enrolled, Enrollment};

/// The database's file name in the hub's state dir.
pub const DB_FILE: &str = "hub.db";

/// The schema version this build writes (the number of its migrations): a backup records
/// it, a restore refuses a newer one, and replicated log entries carry it.
#[must_use]
pub fn schema_version() -> u32 {
    schema::latest_version()
}

/// How long a statement waits for another connection's write lock before failing with
/// `SQLITE_BUSY` (only another process on the same file can hold it: in-process calls are
/// serialized by the mutex).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Mode of the database file and of the WAL and shared-memory files beside it.
const FILE_MODE: u32 = 0o600;

/// A handle on the hub's database. Clones share one connection.
#[derive(Debug, Clone)]
pub struct Store {
    /// The one connection. The mutex serializes this process's calls; each call holds it for
    /// one transaction only.
    conn: Arc<Mutex<Connection>>,
    /// The database file; `None` for an in-memory store.
    path: Option<PathBuf>,
    /// Replication's capture of this connection's changes, when the store is a replica of
    /// the replicated log ([`replicate`]).
    capture: Option<Arc<replicate::Capture>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, restricts it to mode 0600, sets WAL,
    /// `synchronous = FULL`, foreign keys and the busy timeout, and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError`] naming the file when it cannot be created, opened, restricted or
    /// configured, or when a migration fails or the schema is newer than this build.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Create the file ourselves so it is never, even briefly, readable by others; SQLite
        // gives the -wal and -shm files the database file's mode.
        restrict(path, true)?;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, true).map_err(|err| match err {
            ConfigureError::Sql(source) => open_err(source),
            ConfigureError::Pragma(err) => err,
        })?;
        schema::migrate(&mut conn)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            restrict(Path::new(&side), false)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Some(path.to_path_buf()),
            capture: None,
        })
    }

    /// [`Self::open`], with every committed transaction's changes shipped to `sink` before
    /// SQLite commits them (see [`replicate`]).
    ///
    /// # Errors
    /// As [`Self::open`]; [`StoreError::Replicate`] when the capture cannot be installed.
    pub fn open_replicated(
        path: &Path,
        sink: Arc<dyn replicate::Replicator>,
    ) -> Result<Self, StoreError> {
        Self::open(path)?.replicated(sink)
    }

    /// [`Self::open_in_memory`] with replication's capture (for tests).
    ///
    /// # Errors
    /// As [`Self::open_in_memory`].
    pub fn open_in_memory_replicated(
        sink: Arc<dyn replicate::Replicator>,
    ) -> Result<Self, StoreError> {
        Self::open_in_memory()?.replicated(sink)
    }

    fn replicated(mut self, sink: Arc<dyn replicate::Replicator>) -> Result<Self, StoreError> {
        let capture = {
            let mut conn = self.conn();
            replicate::install(&mut conn, sink).map_err(|e| StoreError::Replicate {
                entry: 0,
                reason: format!("cannot capture this store's changes: {e}"),
            })?
        };
        self.capture = Some(capture);
        Ok(self)
    }

    /// Opens a fresh, empty in-memory store with the same schema (for tests).
    ///
    /// # Errors
    /// [`StoreError`] if SQLite cannot allocate the database or apply the schema.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn, false).map_err(|err| match err {
            ConfigureError::Sql(source) => open_err(source),
            ConfigureError::Pragma(err) => err,
        })?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
            capture: None,
        })
    }

    /// Writes a consistent copy of the whole database to `path` (`VACUUM INTO`, replacing
    /// the file) and returns `index()` read while no write can happen (the replicated log's
    /// last entry the copy holds).
    ///
    /// # Errors
    /// [`StoreError::Sql`] when SQLite cannot write the copy.
    pub fn copy_to(&self, path: &Path, index: impl FnOnce() -> u64) -> Result<u64, StoreError> {
        let _ = std::fs::remove_file(path);
        let conn = self.conn();
        conn.execute("VACUUM INTO ?1", [path.to_string_lossy()])
            .map_err(|source| StoreError::Sql {
                table: "*",
                action: "copying the database",
                source,
            })?;
        Ok(index())
    }

    /// The database file, or `None` for an in-memory store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The connection, for one transaction. A panic in another call cannot leave a transaction
    /// open (rusqlite rolls back on drop while unwinding), so a poisoned lock is still usable.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why configuring a fresh connection failed.
enum ConfigureError {
    /// A statement failed outright.
    Sql(rusqlite::Error),
    /// A pragma ran but did not take the value asked for.
    Pragma(StoreError),
}

impl From<rusqlite::Error> for ConfigureError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sql(err)
    }
}

/// Sets the connection's durability and integrity settings and checks each one took: SQLite
/// ignores some pragmas silently (WAL is impossible on some file systems, for instance), and the
/// hub must not run believing it is durable when it is not.
fn configure(conn: &Connection, file_backed: bool) -> Result<(), ConfigureError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if file_backed && !mode.eq_ignore_ascii_case("wal") {
        return Err(ConfigureError::Pragma(StoreError::Pragma {
            pragma: "journal_mode",
            reason: format!("asked for WAL, SQLite kept {mode}"),
        }));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if synchronous != 2 {
        return Err(ConfigureError::Pragma(StoreError::Pragma {
            pragma: "synchronous",
            reason: format!("asked for FULL (2), SQLite kept {synchronous}"),
        }));
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    let foreign_keys: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    if !foreign_keys {
        return Err(ConfigureError::Pragma(StoreError::Pragma {
            pragma: "foreign_keys",
            reason: "SQLite kept foreign keys off".to_owned(),
        }));
    }
    Ok(())
}

/// Makes `path` mode 0600, creating it (empty, which SQLite treats as a new database) when
/// `create` is set; a missing file is fine otherwise.
fn restrict(path: &Path, create: bool) -> Result<(), StoreError> {
    let perm_err = |source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    if create {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(perm_err)?;
    } else if !path.exists() {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)).map_err(perm_err)
}

/// A timestamp as stored: Unix seconds (sub-second parts are dropped).
fn to_db(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// A stored timestamp back, naming the row and column if it is out of range.
fn from_db(
    secs: i64,
    table: &'static str,
    key: impl FnOnce() -> String,
    column: &'static str,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|err| StoreError::Corrupt {
        table,
        key: key(),
        column,
        reason: err.to_string(),
    })
}

/// [`from_db`] for a nullable column.
fn from_db_opt(
    secs: Option<i64>,
    table: &'static str,
    key: impl FnOnce() -> String,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    secs.map(|secs| from_db(secs, table, key, column))
        .transpose()
}

/// RKE2's certificate status words, the only values the status columns accept.
const STATUS_WORDS: [&str; 4] = ["OK", "WARNING", "EXPIRED", "NOT YET VALID"];

/// Refuses a status word RKE2 does not use, naming where it was going.
fn check_status(table: &'static str, column: &'static str, word: &str) -> Result<(), StoreError> {
    if STATUS_WORDS.contains(&word) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            table,
            column,
            value: word.to_owned(),
            reason: "not one of RKE2's words OK, WARNING, EXPIRED, NOT YET VALID",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pragma<T: rusqlite::types::FromSql>(store: &Store, name: &str) -> T {
        store
            .conn()
            .pragma_query_value(None, name, |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn store_is_send_sync_and_clone() {
        fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
        assert_shareable::<Store>();
    }

    #[test]
    fn file_store_uses_wal_full_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hub.db")).unwrap();
        assert_eq!(pragma::<String>(&store, "journal_mode"), "wal");
        assert_eq!(pragma::<i64>(&store, "synchronous"), 2);
        assert!(pragma::<bool>(&store, "foreign_keys"));
        assert_eq!(pragma::<i64>(&store, "busy_timeout"), 5000);
    }

    #[test]
    fn database_and_wal_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        // A pre-existing file with a wide mode is narrowed.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&path).unwrap();
        store
            .audit("uid:0", "test", "", OffsetDateTime::now_utc())
            .unwrap();
        for name in ["hub.db", "hub.db-wal", "hub.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let first = Store::open(&path).unwrap();
        first
            .upsert_node_hello(
                "n1",
                "server",
                "v1.31.4+rke2r1",
                "0.1.0",
                OffsetDateTime::UNIX_EPOCH,
            )
            .unwrap();
        drop(first);
        let again = Store::open(&path).unwrap();
        assert_eq!(
            pragma::<u32>(&again, "user_version"),
            schema::latest_version()
        );
        // Running the migrations on a connection already at the latest version changes nothing.
        schema::migrate(&mut again.conn()).unwrap();
        assert_eq!(again.nodes().unwrap().len(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let store = Store::open(&path).unwrap();
        store
            .conn()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(store);
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn open_names_the_file_it_cannot_create() {
        let err = Store::open(Path::new("/nonexistent-dir/hub.db")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/hub.db"), "{err}");
    }
}
