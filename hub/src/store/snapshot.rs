//! Copies of the hub's database for `rke2-hub backup` and the checks `rke2-hub restore` runs
//! on a copy before it replaces anything.
//!
//! A snapshot uses SQLite's online backup API with every page copied in one step, rather
//! than `VACUUM INTO`: one step is one read transaction, so the copy is the database as of
//! one commit even while `serve` keeps writing (in WAL mode a reader never blocks the writer,
//! and the writer never disturbs the reader's view), and the pages are copied as they are
//! instead of every table and index being rebuilt, which keeps that read transaction short.
//! The destination is a file this module creates itself (mode 0600), where `VACUUM INTO`
//! would create it with the process's umask.
//!
//! A finished snapshot is switched to the rollback journal (`journal_mode = DELETE`) and
//! closed, so it is one self-contained file: no `-wal` or `-shm` beside it to lose, and it
//! can be opened read-only anywhere. [`crate::store::Store::open`] puts a restored copy back
//! in WAL mode.
//!
//! Nothing here opens the live database through [`super::Store::open`]: a backup must not
//! migrate, restrict or otherwise write the database of a hub that is serving.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, FILE_MODE, Store, StoreError};

/// How long a snapshot keeps retrying while SQLite reports the source busy (a WAL recovery
/// by another connection, for instance) before it gives up.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

/// What a database holds, as a backup or restore reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseFacts {
    /// `PRAGMA user_version`: the number of the last migration applied.
    pub schema_version: u32,
    /// Rows of `nodes`: the inventory.
    pub nodes: u64,
    /// Rows of `identities`: the certificate serials the hub accepts, nodes and admins.
    pub identities: u64,
    /// Rows of `plans`, ended ones included.
    pub plans: u64,
}

/// Why a snapshot could not be taken or a copy does not pass its checks.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The database to copy or check does not exist.
    #[error("no hub database at {path}")]
    Missing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The destination file could not be created (it must not exist yet).
    #[error("creating the snapshot file {path}")]
    Create {
        /// The snapshot file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed on one of the files.
    #[error("{action} {path}")]
    Sql {
        /// What was being done, e.g. "copying the hub database".
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The source stayed busy for [`SNAPSHOT_PATIENCE`].
    #[error("the hub database {path} stayed busy for {secs} s; try again", secs = SNAPSHOT_PATIENCE.as_secs())]
    Busy {
        /// The live database.
        path: PathBuf,
    },
    /// SQLite's own check of the copy found damage.
    #[error("the database {path} fails SQLite's integrity check: {report}")]
    Damaged {
        /// The copy.
        path: PathBuf,
        /// The first lines `PRAGMA quick_check` reported.
        report: String,
    },
    /// A pragma did not take.
    #[error("setting PRAGMA {pragma} on {path}: SQLite kept {kept}")]
    Pragma {
        /// The pragma.
        pragma: &'static str,
        /// The file.
        path: PathBuf,
        /// What SQLite answered.
        kept: String,
    },
}

/// Copies the database at `live` (which a `serve` may be writing) into `dest`, a new file
/// created mode 0600, as of one commit; checks the copy and returns what it holds.
///
/// # Errors
/// [`SnapshotError`] naming the file: no database at `live`, `dest` exists or cannot be
/// created, SQLite fails, or the copy fails its integrity check.
pub fn snapshot_database(live: &Path, dest: &Path) -> Result<DatabaseFacts, SnapshotError> {
    if !live.is_file() {
        return Err(SnapshotError::Missing {
            path: live.to_path_buf(),
        });
    }
    let sql = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Sql {
            action,
            path,
            source,
        }
    };
    // Read-write without create: a read-only connection may be unable to set up the WAL
    // index of a database whose hub is stopped; this connection still never writes.
    let source = Connection::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("opening the hub database", live))?;
    source
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("opening the hub database", live))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(dest)
        .map_err(|source| SnapshotError::Create {
            path: dest.to_path_buf(),
            source,
        })?;
    let mut copy = Connection::open(dest).map_err(sql("opening the snapshot", dest))?;
    {
        let backup =
            Backup::new(&source, &mut copy).map_err(sql("copying the hub database", live))?;
        let started = Instant::now();
        loop {
            // -1: every page in one step, so in one read transaction of the source.
            match backup
                .step(-1)
                .map_err(sql("copying the hub database", live))?
            {
                StepResult::Done => break,
                _ if started.elapsed() > SNAPSHOT_PATIENCE => {
                    return Err(SnapshotError::Busy {
                        path: live.to_path_buf(),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    drop(source);
    let mode: String = copy
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(sql("finishing the snapshot", dest))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(SnapshotError::Pragma {
            pragma: "journal_mode",
            path: dest.to_path_buf(),
            kept: mode,
        });
    }
    let facts = check_and_count(&copy, dest)?;
    copy.close().map_err(|(_, source)| SnapshotError::Sql {
        action: "closing the snapshot",
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(facts)
}

/// Opens the database copy at `path` read-only, checks it with `PRAGMA quick_check` and
/// returns what it holds: what `restore` verifies before the copy replaces anything.
///
/// # Errors
/// [`SnapshotError`] naming the file when it is missing, not a database, or damaged.
pub fn inspect_database(path: &Path) -> Result<DatabaseFacts, SnapshotError> {
    if !path.is_file() {
        return Err(SnapshotError::Missing {
            path: path.to_path_buf(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| SnapshotError::Sql {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    check_and_count(&conn, path)
}

impl Store {
    /// What this database holds now (after [`Store::open`] migrated it).
    ///
    /// # Errors
    /// [`StoreError::Sql`] when a count fails.
    pub fn facts(&self) -> Result<DatabaseFacts, StoreError> {
        let conn = self.conn();
        let sql = |source| StoreError::Sql {
            table: "sqlite_master",
            action: "counting rows",
            source,
        };
        Ok(DatabaseFacts {
            schema_version: conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(sql)?,
            nodes: count(&conn, "nodes").map_err(sql)?,
            identities: count(&conn, "identities").map_err(sql)?,
            plans: count(&conn, "plans").map_err(sql)?,
        })
    }
}

/// `PRAGMA quick_check`, then the schema version and the counts.
fn check_and_count(conn: &Connection, path: &Path) -> Result<DatabaseFacts, SnapshotError> {
    let sql = |source| SnapshotError::Sql {
        action: "checking",
        path: path.to_path_buf(),
        source,
    };
    let report: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql)?;
    if report != ["ok"] {
        return Err(SnapshotError::Damaged {
            path: path.to_path_buf(),
            report: report.join("; "),
        });
    }
    Ok(DatabaseFacts {
        schema_version: conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?,
        nodes: count(conn, "nodes").map_err(sql)?,
        identities: count(conn, "identities").map_err(sql)?,
        plans: count(conn, "plans").map_err(sql)?,
    })
}

/// Rows of `table`, or 0 when the schema is too old to have it (a backup of an old hub still
/// counts what it has).
fn count(conn: &Connection, table: &'static str) -> rusqlite::Result<u64> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [table],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    // `table` is one of the fixed names above, never input.
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use time::OffsetDateTime;

    use super::*;

    fn hub_with_a_node(dir: &Path) -> Store {
        let store = Store::open(&dir.join("hub.db")).unwrap();
        store
            .upsert_node_hello(
                "n1",
                "server",
                "v1.31.4+rke2r1",
                "0.1.0",
                OffsetDateTime::UNIX_EPOCH,
            )
            .unwrap();
        store
    }

    #[test]
    fn a_snapshot_of_a_live_database_is_one_private_self_contained_file() {
        let dir = tempfile::tempdir().unwrap();
        // The store stays open (as a serving hub's would) and has uncheckpointed WAL frames.
        let live = hub_with_a_node(dir.path());
        let dest = dir.path().join("copy.db");
        let facts = snapshot_database(&dir.path().join("hub.db"), &dest).unwrap();
        assert_eq!(facts.nodes, 1);
        assert_eq!(facts.schema_version, super::super::schema::latest_version());
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("copy.db-wal").exists());
        // Later writes to the live database are not in the copy.
        live.upsert_node_hello("n2", "agent", "v1", "0.1.0", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(inspect_database(&dest).unwrap().nodes, 1);
        assert_eq!(live.facts().unwrap().nodes, 2);
    }

    #[test]
    fn a_snapshot_never_overwrites_its_destination() {
        let dir = tempfile::tempdir().unwrap();
        let _live = hub_with_a_node(dir.path());
        let dest = dir.path().join("copy.db");
        std::fs::write(&dest, b"keep").unwrap();
        let err = snapshot_database(&dir.path().join("hub.db"), &dest).unwrap_err();
        assert!(matches!(err, SnapshotError::Create { .. }), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep");
    }

    #[test]
    fn a_file_that_is_not_a_database_fails_inspection_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let err = inspect_database(&path).unwrap_err();
        assert!(err.to_string().contains("hub.db"), "{err}");
        let missing = inspect_database(&dir.path().join("nope.db")).unwrap_err();
        assert!(
            matches!(missing, SnapshotError::Missing { .. }),
            "{missing}"
        );
    }
}
