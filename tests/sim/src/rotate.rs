//! The simulated `rke2 certificate rotate` (k3s `pkg/cli/cert/cert.go` `rotate`,
//! `backupCertificates`, `removeCerts`; `reference/rke2.md`).
//!
//! 1. Which services: `--service` values (each must be in `services.All`), else all services
//!    when `<data-dir>/server` exists, else the agent services.
//! 2. Backup: `server/tls` is copied whole to `server/tls-<unix seconds>`; on a node without
//!    `server/tls` the backup folder is `agent/tls-<unix seconds>`. Then the selected
//!    services' files under `agent/` are copied into the backup folder flat, by base name
//!    (on servers this overwrites same-named copies of `server/tls` files, as k3s does).
//! 3. `server/tls/dynamic-cert-regenerate` is written when `rke2-server` is among the
//!    services (also implicitly, when no `--service` is given on a server).
//! 4. The selected services' files (certificates and keys) are deleted; CAs are never
//!    touched.
//! 5. `<data-dir>/force-restart` is written (RKE2's addition: the next start recreates the
//!    static pods).
//!
//! Nothing is issued here: new certificates appear at the next `rke2 server`/`agent` start
//! (see [`super::renew`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::check::{AGENT_SERVICES, ALL_SERVICES, files_for_service};
use super::renew::{DYNAMIC_CERT_REGENERATE, FORCE_RESTART};

/// How the services were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// No `--service`, `<data-dir>/server` exists: all services.
    Server,
    /// No `--service`, no `<data-dir>/server`: the agent services.
    Agent,
    /// Given with `--service`.
    Explicit,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// How the services were chosen.
    pub detection: Detection,
    /// The services rotated.
    pub services: Vec<String>,
    /// The backup folder.
    pub backup_dir: PathBuf,
    /// Files deleted (they existed).
    pub deleted: Vec<PathBuf>,
    /// Whether `dynamic-cert-regenerate` was written.
    pub dynamic_cert_regenerate: bool,
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A `--service` value is not one of RKE2's.
    #[error("service {0} is not recognized")]
    UnknownService(String),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RotateError + '_ {
    move |source| RotateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `from` into `to` recursively, keeping modes and symlinks (otiai10/copy defaults).
fn copy_tree(from: &Path, to: &Path) -> Result<(), RotateError> {
    let meta = std::fs::symlink_metadata(from).map_err(io_err(from))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(io_err(from))?;
        return std::os::unix::fs::symlink(target, to).map_err(io_err(to));
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(io_err(to))?;
        std::fs::set_permissions(to, meta.permissions()).map_err(io_err(to))?;
        for entry in std::fs::read_dir(from).map_err(io_err(from))? {
            let entry = entry.map_err(io_err(from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io_err(from))?;
    Ok(())
}

/// Rotates the selected services' certificates under `data_dir` (see the module docs).
pub fn rotate(
    data_dir: &Path,
    services: &[String],
    now: OffsetDateTime,
) -> Result<RotateReport, RotateError> {
    for s in services {
        if !ALL_SERVICES.contains(&s.as_str()) {
            return Err(RotateError::UnknownService(s.clone()));
        }
    }
    let (detection, services): (Detection, Vec<String>) = if !services.is_empty() {
        (Detection::Explicit, services.to_vec())
    } else if data_dir.join("server").exists() {
        (
            Detection::Server,
            ALL_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
        )
    } else {
        (
            Detection::Agent,
            AGENT_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
        )
    };
    // A Go map in k3s: each file once.
    let files: BTreeSet<&'static str> =
        services.iter().flat_map(|s| files_for_service(s)).collect();

    let backup_name = format!("tls-{}", now.unix_timestamp());
    let server_tls = data_dir.join("server/tls");
    let backup_dir = if server_tls.exists() {
        let dir = data_dir.join("server").join(&backup_name);
        copy_tree(&server_tls, &dir)?;
        dir
    } else {
        data_dir.join("agent").join(&backup_name)
    };
    for rel in files.iter().filter(|r| r.starts_with("agent/")) {
        let src = data_dir.join(rel);
        if !src.exists() {
            continue;
        }
        std::fs::create_dir_all(&backup_dir).map_err(io_err(&backup_dir))?;
        let name = src.file_name().map(PathBuf::from).unwrap_or_default();
        let dst = backup_dir.join(name);
        std::fs::copy(&src, &dst).map_err(io_err(&src))?;
    }

    let dynamic_cert_regenerate = services.iter().any(|s| s == "rke2-server");
    if dynamic_cert_regenerate {
        let trigger = data_dir.join(DYNAMIC_CERT_REGENERATE);
        std::fs::write(&trigger, b"").map_err(io_err(&trigger))?;
    }

    let mut deleted = Vec::new();
    for rel in &files {
        let path = data_dir.join(rel);
        if std::fs::remove_file(&path).is_ok() {
            deleted.push(path);
        }
    }

    let force = data_dir.join(FORCE_RESTART);
    std::fs::write(&force, b"").map_err(io_err(&force))?;

    Ok(RotateReport {
        detection,
        services,
        backup_dir,
        deleted,
        dynamic_cert_regenerate,
    })
}

/// The logrus messages k3s prints for a rotation, in order.
#[must_use]
pub fn log_messages(report: &RotateReport) -> Vec<String> {
    let mut out = Vec::new();
    match report.detection {
        Detection::Server => {
            out.push("Server detected, rotating agent and server certificates".to_owned());
        }
        Detection::Agent => out.push("Agent detected, rotating agent certificates".to_owned()),
        Detection::Explicit => {}
    }
    if report.dynamic_cert_regenerate {
        out.push("Rotating dynamic listener certificate".to_owned());
    }
    for s in &report.services {
        out.push(format!("Rotating certificates for {s}"));
    }
    out.push(format!(
        "Successfully backed up certificates to {}, please restart rke2 server or agent to \
         rotate certificates",
        report.backup_dir.display()
    ));
    out
}
