//! `rke2-hub backup`: a consistent copy of a state dir, while `serve` may be running.
//!
//! The database is copied as of one commit (`store::snapshot_database`) into a private
//! folder beside the output; the PKI files are read once each. The archive is written to a
//! temp file in the output's folder (mode 0600 from its creation: it holds the CA key),
//! synced, and renamed to its name, refusing to replace an existing file unless asked: a
//! reader never finds a half-written backup under the final name, and a crash leaves at
//! most a `.partial` temp file.

use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::archive::{FILE_MODE, Staged, write_archive};
use super::error::BackupError;
use super::manifest::{
    CA_CERT_MEMBER, CA_KEY_MEMBER, DB_MEMBER, Manifest, SERVER_CERT_MEMBER, SERVER_KEY_MEMBER,
};
use crate::store::{DB_FILE, DatabaseFacts, snapshot_database};

/// What a backup saved.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The archive written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its manifest.
    pub manifest: Manifest,
    /// What the database copy holds.
    pub facts: DatabaseFacts,
    /// The CA's pin (public: what agents were given at enrollment).
    pub ca_pin: String,
}

/// Backs up `state_dir` into the archive `output`. `force` replaces an existing `output`.
///
/// # Errors
/// [`BackupError`] naming the file: no database or no usable CA in `state_dir`, `output`
/// exists (without `force`) or its folder cannot be written, the snapshot fails.
pub fn backup(
    state_dir: &Path,
    output: &Path,
    force: bool,
    now: OffsetDateTime,
) -> Result<BackupReport, BackupError> {
    // A replica of an etcd-backed hub (`store = "etcd"`) holds its copy of the replicated
    // state in `replica.db`: current to the log entry it applied last, and restored like a
    // single hub's database (then `migrate --to etcd` into an empty prefix).
    let replica = state_dir.join(crate::ha::REPLICA_DB);
    let db = if !state_dir.join(DB_FILE).is_file() && replica.is_file() {
        replica
    } else {
        state_dir.join(DB_FILE)
    };
    if !db.is_file() {
        return Err(BackupError::NoDatabase { path: db });
    }
    // Checked before anything is copied: a backup without a usable CA could not bring the
    // agents back.
    let ca =
        crate::pki::HubCa::load_existing(state_dir, now).map_err(|source| BackupError::Ca {
            state_dir: state_dir.to_path_buf(),
            source: Box::new(source),
        })?;
    if !force && output.symlink_metadata().is_ok() {
        return Err(BackupError::OutputExists {
            path: output.to_path_buf(),
        });
    }
    let out_dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Write { path, source }
    };
    // The snapshot's private folder (0700), removed on every return.
    let scratch = tempfile::Builder::new()
        .prefix(".rke2-hub-backup-")
        .tempdir_in(&out_dir)
        .map_err(write_err(&out_dir))?;
    let snapshot = scratch.path().join(DB_FILE);
    let facts = snapshot_database(&db, &snapshot)?;

    let pki = state_dir.join(crate::pki::PKI_DIR);
    let read = |name: &str| -> Result<Vec<u8>, BackupError> {
        let path = pki.join(name);
        std::fs::read(&path).map_err(|source| BackupError::Read { path, source })
    };
    let mut staged = vec![
        Staged::file(DB_MEMBER, &snapshot).map_err(|source| BackupError::Read {
            path: snapshot.clone(),
            source,
        })?,
        Staged::bytes(CA_CERT_MEMBER, read(crate::pki::CA_CERT_FILE)?),
        Staged::bytes(CA_KEY_MEMBER, read(crate::pki::CA_KEY_FILE)?),
    ];
    // The server pair is kept when whole; without it `serve` issues a new one from the CA,
    // which agents accept just the same.
    let server = [crate::pki::SERVER_CERT_FILE, crate::pki::SERVER_KEY_FILE];
    if server.iter().all(|name| pki.join(name).is_file()) {
        staged.push(Staged::bytes(
            SERVER_CERT_MEMBER,
            read(crate::pki::SERVER_CERT_FILE)?,
        ));
        staged.push(Staged::bytes(
            SERVER_KEY_MEMBER,
            read(crate::pki::SERVER_KEY_FILE)?,
        ));
    }
    let manifest = Manifest::new(
        facts.schema_version,
        rke2ops_common::report::json::rfc3339(now.replace_nanosecond(0).unwrap_or(now)),
        staged.iter().map(|s| s.member.clone()).collect(),
    );

    let file_name = output
        .file_name()
        .map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(&out_dir)
        .map_err(write_err(&out_dir))?;
    let mtime = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let writer = write_archive(BufWriter::new(partial.as_file()), &manifest, &staged, mtime)
        .map_err(write_err(partial.path()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(File::sync_all)
        .map_err(write_err(partial.path()))?;
    let persisted = if force {
        partial.persist(output)
    } else {
        partial.persist_noclobber(output)
    };
    let file = persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::OutputExists {
                path: output.to_path_buf(),
            }
        } else {
            BackupError::Write {
                path: output.to_path_buf(),
                source: e.error,
            }
        }
    })?;
    File::open(&out_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(write_err(&out_dir))?;
    let size = file.metadata().map_err(write_err(output))?.len();
    Ok(BackupReport {
        path: output.to_path_buf(),
        size,
        manifest,
        facts,
        ca_pin: ca.ca_pin(),
    })
}
