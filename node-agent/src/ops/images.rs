//! Air-gap images: stage a release's image archives into `<data-dir>/agent/images/` before
//! the release is installed anywhere, and prune the previous releases' afterwards.
//!
//! Why: RKE2 imports every `*.tar.zst` (and `.tar`, `.tar.gz`...) it finds under
//! `agent/images` at start, and newer releases import one dropped there while running. A
//! rolling upgrade whose first server upgrades the bundled charts breaks every node that lacks
//! the new images, so a plan stages them on every node first (`reference/rke2.md`).
//!
//! What is staged: `rke2-images.linux-<arch>.tar.zst` when the release's sum file lists it,
//! else `rke2-images-core.linux-<arch>.tar.zst` plus one archive per CNI of config.yaml's
//! `cni` (default canal: `rke2-images-canal.linux-<arch>.tar.zst`; `none` needs none). They
//! come from the same source as the upgrade's tarball, through [`super::artifacts`]'s fetch
//! (allow-list, redirects, size and time bounds), and are checked against the same sum file.
//!
//! Steps (each safe to run twice, as the runner requires):
//! - `fetch-images`: the sum file, then (after checking the data dir's free space: twice the
//!   archives' size when the source says it, else [`UNKNOWN_SIZE_FLOOR`]) the chosen archives
//!   (sizes: a folder source's files', a mirror's `Content-Length` for HEAD),
//!   into a staging folder beside `agent/images` ([`STAGING_DIR`]): not inside it, since
//!   RKE2 walks that tree and would import an unverified download. A re-run replaces them.
//! - `verify-images`: every archive's sha256 against its line; a mismatch removes the bad
//!   download and fails naming the file and both hashes, before anything is placed.
//! - `place-images`: each archive copied into `agent/images` under a name that carries the
//!   version ([`placed_name`]), through a temporary file in that folder (hidden, not ending
//!   in `.tar.zst`, so RKE2 ignores it), fsynced and renamed, its hash checked again on the
//!   way. An archive already there with the right hash is left alone. Only adds files. The
//!   runner removes the staging folder when the operation ends, whichever way.
//! - `prune-images`: removes the release archives ([`is_release_archive`]) there that do not
//!   carry the kept version; files of any other name (the operator's own) stay.
//!
//! None of them touches the RKE2 unit.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rke2ops_common::atomic_file::{Attrs, NewFile, Policy};
use sha2::{Digest as _, Sha256};

use super::artifacts::{self, ArtifactError, Source};
use super::journal::OpRecord;
use super::setup::NodeSetup;
use super::steps::OpKind;

mod names;

pub use names::{
    DEFAULT_CNI, choose, is_release_archive, part_name, placed_name, space_needed, to_prune,
    whole_name,
};

/// Where RKE2 imports image archives from, relative to its data dir.
pub const IMAGES_DIR: &str = "agent/images";
/// Where archives are downloaded and verified before they are placed, relative to the data
/// dir: on the same file system as [`IMAGES_DIR`], outside the tree RKE2 imports from.
pub const STAGING_DIR: &str = "agent/rke2ops-images-staging";
/// Bytes one image archive may have. RKE2's all-in-one amd64 archive is about 1 GB; 8 GiB
/// leaves room for growth and still refuses an endless download.
pub const MAX_ARCHIVE_BYTES: u64 = 8 << 30;
/// How long fetching the archives may take in all: 1 GB at about 300 kB/s.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// Free bytes required when the source does not say how large the archives are (a mirror):
/// twice the largest archive RKE2 publishes today, rounded up.
pub const UNKNOWN_SIZE_FLOOR: u64 = 4 << 30;

/// The bounds of one staging (the release's in production; small ones in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagesLimits {
    /// Bytes each archive may have.
    pub archive_bytes: u64,
    /// Time for fetching the archives.
    pub deadline: Duration,
    /// Free bytes needed when the archives' sizes are unknown.
    pub unknown_size_floor: u64,
    /// Free bytes needed on top of twice the archives' size (0 in production).
    pub reserve: u64,
}

impl ImagesLimits {
    /// The limits of a release's images.
    pub const RELEASE: Self = Self {
        archive_bytes: MAX_ARCHIVE_BYTES,
        deadline: FETCH_DEADLINE,
        unknown_size_floor: UNKNOWN_SIZE_FLOOR,
        reserve: 0,
    };
}

/// Why images could not be staged or pruned.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// Fetching (source, allow-list, HTTP, size, missing file) failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The sum file lists no archive this node can use.
    #[error(
        "{sums} lists neither {whole} nor {missing}: the release publishes no air-gap image archives for this node"
    )]
    NotListed {
        /// The sum file's name.
        sums: String,
        /// The all-in-one archive.
        whole: String,
        /// The first split archive it lacks (core or a CNI's).
        missing: String,
    },
    /// Too little free space where the archives go.
    #[error(
        "{}: refused to stage images: {available} bytes free, staging needs {needed} ({why})",
        dir.display()
    )]
    NoSpace {
        /// The staging folder.
        dir: PathBuf,
        /// Free bytes (for an unprivileged user).
        available: u64,
        /// Bytes needed.
        needed: u64,
        /// How `needed` was reckoned.
        why: String,
    },
    /// An archive is not the published one.
    #[error("checksum mismatch for {file}: expected {expected}, got {actual}; nothing placed")]
    Mismatch {
        /// The archive's name.
        file: String,
        /// The sum file's value.
        expected: String,
        /// What the download hashes to.
        actual: String,
    },
    /// Reading, writing or removing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The fetch took longer than its deadline.
    #[error("fetching {files} from {from}: not done within the deadline of {} s", limit.as_secs())]
    Deadline {
        /// The archives.
        files: String,
        /// The source.
        from: String,
        /// The deadline.
        limit: Duration,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImagesError + '_ {
    move |source| ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The staged sum file's listing and the archives this node needs from it.
fn staged_choice(
    staging: &Path,
    arch: &str,
    cni: &[String],
) -> Result<(String, Vec<String>), ImagesError> {
    let listing = artifacts::read_bounded(
        &staging.join(artifacts::sums_name(arch)),
        artifacts::MAX_SUMS_BYTES,
    )?;
    let chosen = choose(&listing, arch, cni)?;
    Ok((listing, chosen))
}

/// The archives' total size: at a folder source, their files' (`None` when one is missing
/// there: the fetch names it); at a mirror, what it announces (`None` when it does not).
async fn sizes_at(
    source: &Source,
    allowed: &[Source],
    version: &str,
    files: &[String],
) -> Option<u64> {
    let dir = match source {
        Source::Dir(dir) => dir,
        Source::Url(prefix) => {
            return artifacts::announced_size(prefix, allowed, version, files).await;
        }
    };
    files.iter().try_fold(0u64, |total, file| {
        [dir.join(version).join(file), dir.join(file)]
            .iter()
            .find_map(|p| std::fs::metadata(p).ok().filter(std::fs::Metadata::is_file))
            .map(|m| total.saturating_add(m.len()))
    })
}

/// Fetches the sum file and the archives this node needs into the staging folder under
/// `data_dir`, after checking the free space there; returns a one-line description.
///
/// # Errors
/// [`ImagesError`] naming the file, the folder or the limit.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_within(
    source: &Source,
    allowed: &[Source],
    version: &str,
    arch: &str,
    cni: &[String],
    data_dir: &Path,
    limits: ImagesLimits,
) -> Result<String, ImagesError> {
    artifacts::check_allowed(source, allowed)?;
    let staging = data_dir.join(STAGING_DIR);
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(io(&staging))?;
    let sums = artifacts::sums_name(arch);
    let sums_file = [(sums.clone(), artifacts::MAX_SUMS_BYTES)];
    let fetching_sums = artifacts::fetch_files(source, allowed, version, &staging, &sums_file);
    tokio::time::timeout(limits.deadline, fetching_sums)
        .await
        .map_err(|_| ImagesError::Deadline {
            files: sums.clone(),
            from: source.to_string(),
            limit: limits.deadline,
        })??;
    let (_, chosen) = staged_choice(&staging, arch, cni)?;
    let (needed, why) = space_needed(
        sizes_at(source, allowed, version, &chosen).await,
        limits.unknown_size_floor,
        limits.reserve,
    );
    let available = artifacts::available_bytes(&staging)?;
    if available < needed {
        return Err(ImagesError::NoSpace {
            dir: staging,
            available,
            needed,
            why,
        });
    }
    let files: Vec<(String, u64)> = chosen
        .iter()
        .map(|f| (f.clone(), limits.archive_bytes))
        .collect();
    let fetching = artifacts::fetch_files(source, allowed, version, &staging, &files);
    let bytes = tokio::time::timeout(limits.deadline, fetching)
        .await
        .map_err(|_| ImagesError::Deadline {
            files: chosen.join(", "),
            from: source.to_string(),
            limit: limits.deadline,
        })??;
    let how = if chosen.len() == 1 {
        "the all-in-one archive"
    } else {
        "no all-in-one archive listed: core and CNI archives"
    };
    Ok(format!(
        "{} from {source} ({bytes} bytes; {how}; {available} bytes were free in {})",
        chosen.join(", "),
        staging.display()
    ))
}

/// Checks every staged archive against the staged sum file; a mismatching one is removed.
///
/// # Errors
/// [`ImagesError::Mismatch`] naming the archive and both hashes.
pub fn verify(data_dir: &Path, arch: &str, cni: &[String]) -> Result<String, ImagesError> {
    let staging = data_dir.join(STAGING_DIR);
    let (listing, chosen) = staged_choice(&staging, arch, cni)?;
    for file in &chosen {
        let expected = artifacts::sum_for(&listing, file).unwrap_or_default();
        let path = staging.join(file);
        let actual = artifacts::sha256_file(&path)?;
        if actual != expected {
            let _ = std::fs::remove_file(&path);
            return Err(ImagesError::Mismatch {
                file: file.clone(),
                expected,
                actual,
            });
        }
    }
    Ok(format!(
        "{} match {}",
        chosen.join(", "),
        artifacts::sums_name(arch)
    ))
}

/// Copies `from` into `target` through a temporary file beside it, hashing on the way; the
/// copy is committed only when the hash is `expected`. Returns the bytes copied.
fn copy_verified(from: &Path, target: &Path, expected: &str) -> Result<u64, ImagesError> {
    let mut input = std::fs::File::open(from).map_err(io(from))?;
    let mut new = NewFile::create(target, Policy::Exactly(Attrs::mode(0o644))).map_err(|e| {
        ImagesError::Io {
            path: e.path,
            source: e.source,
        }
    })?;
    let tmp = new.temp_path().to_path_buf();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        new.file().write_all(&buf[..n]).map_err(io(&tmp))?;
        total += n as u64;
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        // Dropping `new` removes the temporary file: nothing is placed.
        return Err(ImagesError::Mismatch {
            file: file_name(from),
            expected: expected.to_owned(),
            actual,
        });
    }
    new.commit().map_err(|e| ImagesError::Io {
        path: e.path,
        source: e.source,
    })?;
    Ok(total)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Places the verified archives into `agent/images` under their versioned names (an archive
/// already there with the right hash stays as it is). The staging folder stays for a re-run
/// of this step after a crash; the runner removes it when the operation ends.
///
/// # Errors
/// [`ImagesError`] naming the file; what was placed before stays (verified, complete).
pub fn place(
    data_dir: &Path,
    version: &str,
    arch: &str,
    cni: &[String],
) -> Result<String, ImagesError> {
    let staging = data_dir.join(STAGING_DIR);
    let images = data_dir.join(IMAGES_DIR);
    std::fs::create_dir_all(&images).map_err(io(&images))?;
    let (listing, chosen) = staged_choice(&staging, arch, cni)?;
    let mut placed = Vec::new();
    let mut kept = Vec::new();
    for file in &chosen {
        let expected = artifacts::sum_for(&listing, file).unwrap_or_default();
        let name = placed_name(file, version);
        let target = images.join(&name);
        let already = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file())
            && artifacts::sha256_file(&target).is_ok_and(|h| h == expected);
        if already {
            kept.push(name);
            continue;
        }
        copy_verified(&staging.join(file), &target, &expected)?;
        placed.push(name);
    }
    let mut detail = format!("placed {} into {}", list(&placed), images.display());
    if !kept.is_empty() {
        detail.push_str(&format!(" ({} already there)", kept.join(", ")));
    }
    Ok(detail)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing new".to_owned()
    } else {
        names.join(", ")
    }
}

/// Removes the release archives in `agent/images` that do not carry `keep`.
///
/// # Errors
/// [`ImagesError::Io`] when the folder cannot be read or an archive not removed.
pub fn prune(data_dir: &Path, keep: &str) -> Result<String, ImagesError> {
    let images = data_dir.join(IMAGES_DIR);
    let entries = match std::fs::read_dir(&images) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!(
                "{} does not exist: nothing to prune",
                images.display()
            ));
        }
        Err(e) => return Err(io(&images)(e)),
    };
    let names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let doomed = to_prune(&names, keep);
    for name in &doomed {
        let path = images.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
    }
    Ok(format!(
        "removed {} from {}; {} other files kept",
        if doomed.is_empty() {
            "no other release's archive".to_owned()
        } else {
            doomed.join(", ")
        },
        images.display(),
        names.len() - doomed.len()
    ))
}

/// The version and source of a staging operation.
fn staging_target(setup: &NodeSetup, record: &OpRecord) -> Result<(String, Source), String> {
    let OpKind::StageImages { version, source } = &record.kind else {
        return Err("not an image staging".to_owned());
    };
    let source = source
        .clone()
        .or_else(|| setup.artifact_source.clone())
        .ok_or_else(|| ArtifactError::NoSource.to_string())?;
    let source = Source::parse(&source).map_err(|e| e.to_string())?;
    Ok((version.clone(), source))
}

/// Step `fetch-images`.
pub async fn fetch_step(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let (version, source) = staging_target(setup, record)?;
    fetch_within(
        &source,
        &setup.allowed_artifact_sources,
        &version,
        artifacts::arch(),
        &setup.cni,
        &setup.data_dir,
        ImagesLimits::RELEASE,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Step `verify-images`.
pub fn verify_step(setup: &NodeSetup) -> Result<String, String> {
    verify(&setup.data_dir, artifacts::arch(), &setup.cni).map_err(|e| e.to_string())
}

/// Step `place-images`.
pub fn place_step(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let (version, _) = staging_target(setup, record)?;
    place(&setup.data_dir, &version, artifacts::arch(), &setup.cni).map_err(|e| e.to_string())
}

/// Step `prune-images`.
pub fn prune_step(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let OpKind::PruneImages { version } = &record.kind else {
        return Err("not an image prune".to_owned());
    };
    prune(&setup.data_dir, version).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
