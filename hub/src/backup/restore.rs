//! `rke2-hub restore`: puts a backup's database and CA into a state dir.
//!
//! In order, and each step only when the ones before it passed:
//! 1. the whole archive is read and checked without writing anything;
//! 2. the state dir's `serve.lock` is taken (a hub serving it holds it: refused), and held to
//!    the end, so a `serve` started meanwhile exits instead of opening a half-restored dir;
//! 3. an existing `hub.db` (with its `-wal`/`-shm`) or `pki/` is refused, or with `--force`
//!    will be moved aside into `pre-restore-<UTC time>/` (never deleted);
//! 4. the archive is read again into a private folder inside the state dir, with the same
//!    checks, then the copy's database (SQLite's quick check, its schema version against the
//!    manifest) and CA (key matches certificate, still valid) are checked;
//! 5. only then is the old state moved aside and the new put in place (renames within one
//!    file system), and the database opened with [`Store::open`], which migrates an older
//!    schema.
//!
//! Run as root (the unit's state dir belongs to its dynamic user), the restored files get the
//! state dir's owner, so the hub can read them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::macros::format_description;

use super::archive::{DIR_MODE, FILE_MODE, read_archive};
use super::error::BackupError;
use super::manifest::Manifest;
use crate::store::{DB_FILE, DatabaseFacts, Store, inspect_database};

/// The state dir entries a restore replaces: the database with the files SQLite keeps beside
/// it (a stale `-wal` beside a restored database would be replayed into it), and the PKI
/// folder.
pub const REPLACED: [&str; 4] = ["hub.db", "hub.db-wal", "hub.db-shm", "pki"];

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The state dir restored into.
    pub state_dir: PathBuf,
    /// The backup's manifest.
    pub manifest: Manifest,
    /// What the restored database holds, after its migrations.
    pub facts: DatabaseFacts,
    /// Where the state dir's previous entries went, when there were any.
    pub moved_aside: Option<(PathBuf, Vec<String>)>,
    /// The restored CA's pin: agents that pin it reconnect.
    pub ca_pin: String,
}

/// What to do with what the state dir already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Nothing there: restore.
    Empty,
    /// Move these aside first.
    MoveAside(Vec<String>),
    /// Refuse, naming them.
    Refuse(Vec<String>),
}

/// Decides from the [`REPLACED`] entries `present` in the state dir (in that order).
#[must_use]
pub fn existing_state(present: &[&str], force: bool) -> Existing {
    let names: Vec<String> = present
        .iter()
        .map(|name| {
            if *name == crate::pki::PKI_DIR {
                format!("{name}/")
            } else {
                (*name).to_owned()
            }
        })
        .collect();
    if names.is_empty() {
        Existing::Empty
    } else if force {
        Existing::MoveAside(present.iter().map(|s| (*s).to_owned()).collect())
    } else {
        Existing::Refuse(names)
    }
}

/// The folder the previous state goes into: `pre-restore-20261207T101500Z`.
#[must_use]
pub fn aside_dir_name(now: OffsetDateTime) -> String {
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    format!("pre-restore-{stamp}")
}

/// Restores the backup `archive` into `state_dir` (created 0700 when missing). `force`
/// moves an existing state aside instead of refusing.
///
/// # Errors
/// [`BackupError`]: the archive is refused (naming the member or field; nothing changed), a
/// hub serves the state dir (naming the lock), the state dir holds a state and `force` is
/// not set, or a file operation fails (naming the file).
pub fn restore(
    state_dir: &Path,
    archive: &Path,
    force: bool,
    now: OffsetDateTime,
) -> Result<RestoreReport, BackupError> {
    let supported = crate::store::schema_version();
    let refused = |source| BackupError::Archive {
        path: archive.to_path_buf(),
        source,
    };
    let manifest =
        read_archive(BufReader::new(open(archive)?), supported, None).map_err(refused)?;

    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Write { path, source }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(state_dir)
        .map_err(write_err(state_dir))?;
    let owner = std::fs::metadata(state_dir)
        .map(|m| (m.uid(), m.gid()))
        .map_err(write_err(state_dir))?;
    let _lock = lock_state_dir(state_dir, owner)?;
    let present: Vec<&str> = REPLACED
        .into_iter()
        .filter(|name| state_dir.join(name).symlink_metadata().is_ok())
        .collect();
    let existing = existing_state(&present, force);
    if let Existing::Refuse(present) = existing {
        return Err(BackupError::StateExists {
            state_dir: state_dir.to_path_buf(),
            present,
        });
    }

    // Inside the state dir: same file system, so putting it in place is a rename.
    let staging = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(state_dir)
        .map_err(write_err(state_dir))?;
    let again = read_archive(
        BufReader::new(open(archive)?),
        supported,
        Some(staging.path()),
    )
    .map_err(refused)?;
    if again != manifest {
        return Err(BackupError::Changed {
            path: archive.to_path_buf(),
        });
    }
    let staged_db = staging.path().join(DB_FILE);
    let facts = inspect_database(&staged_db).map_err(|source| BackupError::BadDatabase {
        path: archive.to_path_buf(),
        source: Box::new(source),
    })?;
    if facts.schema_version != manifest.schema_version {
        return Err(BackupError::SchemaMismatch {
            path: archive.to_path_buf(),
            listed: manifest.schema_version,
            found: facts.schema_version,
        });
    }
    let ca = crate::pki::HubCa::load_existing(staging.path(), now).map_err(|source| {
        BackupError::BadCa {
            path: archive.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    give_to(staging.path(), owner)?;

    let moved_aside = match existing {
        Existing::MoveAside(names) => Some(move_aside(state_dir, &names, now, owner)?),
        Existing::Empty | Existing::Refuse(_) => None,
    };
    for name in [DB_FILE, crate::pki::PKI_DIR] {
        let from = staging.path().join(name);
        if from.exists() {
            let to = state_dir.join(name);
            std::fs::rename(&from, &to).map_err(write_err(&to))?;
        }
    }
    sync_dir(state_dir)?;
    drop(staging);

    let store = Store::open(&state_dir.join(DB_FILE))?;
    let facts = store.facts()?;
    drop(store);
    Ok(RestoreReport {
        state_dir: state_dir.to_path_buf(),
        manifest,
        facts,
        moved_aside,
        ca_pin: ca.ca_pin(),
    })
}

/// Opens the archive for reading.
fn open(archive: &Path) -> Result<File, BackupError> {
    File::open(archive).map_err(|source| BackupError::Read {
        path: archive.to_path_buf(),
        source,
    })
}

/// Takes `<state_dir>/serve.lock` as `serve` does (exclusive `flock`, no waiting), so no
/// hub serves the state dir while it is replaced; writes this process's id for the message a
/// `serve` started meanwhile prints.
fn lock_state_dir(state_dir: &Path, owner: (u32, u32)) -> Result<File, BackupError> {
    let path = state_dir.join(crate::serve::LOCK_FILE);
    let write_err = |source| BackupError::Write {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(write_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(BackupError::Serving {
                state_dir: state_dir.to_path_buf(),
                lock: path.clone(),
                pid: (!holder.is_empty()).then(|| holder.to_owned()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(write_err(e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(write_err)?;
    chown_if_root(&path, owner)?;
    Ok(file)
}

/// Moves `names` from `state_dir` into a new `pre-restore-<time>` folder (another suffix
/// when that name is taken); returns the folder and what went there.
fn move_aside(
    state_dir: &Path,
    names: &[String],
    now: OffsetDateTime,
    owner: (u32, u32),
) -> Result<(PathBuf, Vec<String>), BackupError> {
    let base = aside_dir_name(now);
    let mut aside = state_dir.join(&base);
    let mut n = 1;
    loop {
        match DirBuilder::new().mode(DIR_MODE).create(&aside) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
                aside = state_dir.join(format!("{base}-{n}"));
            }
            Err(source) => {
                return Err(BackupError::Write {
                    path: aside,
                    source,
                });
            }
        }
    }
    chown_if_root(&aside, owner)?;
    for name in names {
        let to = aside.join(name);
        std::fs::rename(state_dir.join(name), &to)
            .map_err(|source| BackupError::Write { path: to, source })?;
    }
    sync_dir(&aside)?;
    Ok((aside, names.to_vec()))
}

/// Gives everything under `dir` (and `dir`) to `owner` when running as root.
fn give_to(dir: &Path, owner: (u32, u32)) -> Result<(), BackupError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    chown_if_root(dir, owner)?;
    let entries = std::fs::read_dir(dir).map_err(|source| BackupError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| BackupError::Write {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            give_to(&path, owner)?;
        } else {
            chown_if_root(&path, owner)?;
        }
    }
    Ok(())
}

/// `chown` to `owner`, as root only (anyone else owns what it creates already).
fn chown_if_root(path: &Path, (uid, gid): (u32, u32)) -> Result<(), BackupError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| BackupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// fsync a folder, so the renames in it are durable.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BackupError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn an_empty_state_dir_is_restored_into_and_a_full_one_refused_without_force() {
        assert_eq!(existing_state(&[], false), Existing::Empty);
        assert_eq!(existing_state(&[], true), Existing::Empty);
        assert_eq!(
            existing_state(&["hub.db", "pki"], false),
            Existing::Refuse(vec!["hub.db".to_owned(), "pki/".to_owned()])
        );
        // A WAL left without its database still counts: it would be replayed into the
        // restored one.
        assert_eq!(
            existing_state(&["hub.db-wal"], false),
            Existing::Refuse(vec!["hub.db-wal".to_owned()])
        );
        assert_eq!(
            existing_state(&["hub.db", "hub.db-wal", "hub.db-shm", "pki"], true),
            Existing::MoveAside(REPLACED.map(str::to_owned).to_vec())
        );
    }

    #[test]
    fn the_aside_folder_is_named_for_the_utc_time() {
        assert_eq!(
            aside_dir_name(datetime!(2026-12-07 10:15:00 +01:00)),
            "pre-restore-20261207T091500Z"
        );
    }
}
