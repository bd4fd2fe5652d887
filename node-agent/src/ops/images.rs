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
/// RKE2's default CNI.
pub const DEFAULT_CNI: &str = "canal";

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

/// `rke2-images.linux-<arch>.tar.zst`: every image of the release in one archive.
#[must_use]
pub fn whole_name(arch: &str) -> String {
    format!("rke2-images.linux-{arch}.tar.zst")
}

/// `rke2-images-<part>.linux-<arch>.tar.zst` (`core`, or a CNI's name).
#[must_use]
pub fn part_name(part: &str, arch: &str) -> String {
    format!("rke2-images-{part}.linux-{arch}.tar.zst")
}

/// Pure: the archives this node needs from a release whose sum file is `listing`: the
/// all-in-one archive when listed, else core plus one per CNI (`cni` empty: canal; `none`
/// needs none), each of which must be listed.
///
/// # Errors
/// [`ImagesError::NotListed`] naming the first archive the sum file lacks.
pub fn choose(listing: &str, arch: &str, cni: &[String]) -> Result<Vec<String>, ImagesError> {
    let whole = whole_name(arch);
    if artifacts::sum_for(listing, &whole).is_some() {
        return Ok(vec![whole]);
    }
    let default = [DEFAULT_CNI.to_owned()];
    let cnis = if cni.is_empty() { &default[..] } else { cni };
    let mut wanted = vec![part_name("core", arch)];
    for c in cnis.iter().filter(|c| c.as_str() != "none") {
        let name = part_name(c, arch);
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    if let Some(missing) = wanted
        .iter()
        .find(|w| artifacts::sum_for(listing, w).is_none())
    {
        return Err(ImagesError::NotListed {
            sums: artifacts::sums_name(arch),
            whole,
            missing: missing.clone(),
        });
    }
    Ok(wanted)
}

/// Pure: the name an archive gets in `agent/images`: the version before `.tar.zst`
/// (`rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst`), so each release's archives can be told
/// apart and the previous ones pruned, and RKE2 still imports it.
#[must_use]
pub fn placed_name(file: &str, version: &str) -> String {
    let stem = file.strip_suffix(".tar.zst").unwrap_or(file);
    format!("{stem}.{version}.tar.zst")
}

/// Pure: whether `name` is an RKE2 release image archive (as published, `rke2-images*.linux-
/// <arch>.tar.zst`, or as [`placed_name`] names it). Anything else in the folder is the
/// operator's and is never pruned.
#[must_use]
pub fn is_release_archive(name: &str) -> bool {
    name.starts_with("rke2-images")
        && name.contains(".linux-")
        && name.ends_with(".tar.zst")
        && !name.contains('/')
}

/// Pure: of the names in `agent/images`, the release archives that do not carry `keep`.
#[must_use]
pub fn to_prune(names: &[String], keep: &str) -> Vec<String> {
    let kept = format!(".{keep}.tar.zst");
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| is_release_archive(n) && !n.ends_with(&kept))
        .cloned()
        .collect();
    out.sort();
    out
}

/// Pure: the free bytes staging needs: twice the archives' size when known (the download,
/// and its copy in `agent/images`), else `floor`; plus `reserve`.
#[must_use]
pub fn space_needed(sizes: Option<u64>, floor: u64, reserve: u64) -> (u64, String) {
    match sizes {
        Some(s) => (
            s.saturating_mul(2).saturating_add(reserve),
            format!("twice the archives' {s} bytes"),
        ),
        None => (
            floor.saturating_add(reserve),
            "the archives' size is unknown until downloaded: the floor for a release's images"
                .to_owned(),
        ),
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
mod tests {
    use super::*;

    const V: &str = "v1.34.1+rke2r1";

    fn hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// An air-gap folder with `files` (name, content) and a sum file listing each (a
    /// `(name, None)` entry is listed with a wrong hash).
    fn release(files: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sums = String::new();
        for (name, content) in files {
            let (content, listed) = match content {
                Some(c) => (c.as_bytes(), hash(c.as_bytes())),
                None => (&b"published"[..], hash(b"something else")),
            };
            std::fs::write(dir.path().join(name), content).expect("write");
            sums.push_str(&format!("{listed}  {name}\n"));
        }
        sums.push_str(&format!("{}  rke2.linux-amd64.tar.gz\n", hash(b"tarball")));
        std::fs::write(dir.path().join("sha256sum-amd64.txt"), sums).expect("write");
        dir
    }

    fn limits() -> ImagesLimits {
        ImagesLimits {
            archive_bytes: 1 << 20,
            deadline: Duration::from_secs(30),
            unknown_size_floor: 0,
            reserve: 0,
        }
    }

    async fn stage(
        source: &Path,
        data: &Path,
        cni: &[String],
        limits: ImagesLimits,
    ) -> Result<String, ImagesError> {
        let source = Source::Dir(source.to_path_buf());
        fetch_within(&source, &[], V, "amd64", cni, data, limits).await?;
        verify(data, "amd64", cni)?;
        place(data, V, "amd64", cni)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    #[test]
    fn the_whole_archive_is_preferred_else_core_and_the_nodes_cni() {
        let both = format!(
            "{h}  rke2-images.linux-amd64.tar.zst\n{h}  rke2-images-core.linux-amd64.tar.zst\n{h}  rke2-images-canal.linux-amd64.tar.zst\n{h}  rke2-images-cilium.linux-amd64.tar.zst\n",
            h = hash(b"x")
        );
        assert_eq!(
            choose(&both, "amd64", &[]).expect("listed"),
            ["rke2-images.linux-amd64.tar.zst"]
        );
        let split = both.replace("rke2-images.linux", "other.linux");
        assert_eq!(
            choose(&split, "amd64", &[]).expect("listed"),
            [
                "rke2-images-core.linux-amd64.tar.zst",
                "rke2-images-canal.linux-amd64.tar.zst"
            ]
        );
        assert_eq!(
            choose(&split, "amd64", &["cilium".to_owned()]).expect("listed"),
            [
                "rke2-images-core.linux-amd64.tar.zst",
                "rke2-images-cilium.linux-amd64.tar.zst"
            ]
        );
        assert_eq!(
            choose(&split, "amd64", &["none".to_owned()]).expect("listed"),
            ["rke2-images-core.linux-amd64.tar.zst"]
        );
        let err = choose(&split, "amd64", &["calico".to_owned()])
            .expect_err("unlisted")
            .to_string();
        assert!(
            err.contains("rke2-images-calico.linux-amd64.tar.zst")
                && err.contains("sha256sum-amd64.txt"),
            "{err}"
        );
    }

    #[test]
    fn placed_names_carry_the_version_and_prune_spares_other_files() {
        assert_eq!(
            placed_name("rke2-images-core.linux-amd64.tar.zst", V),
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
        );
        let names: Vec<String> = [
            "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst",
            "rke2-images.linux-amd64.tar.zst",
            "rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst",
            "my-app.tar.zst",
            "rke2-images-notes.txt",
            ".rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst.rke2ops-tmp.1",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            to_prune(&names, V),
            [
                "rke2-images.linux-amd64.tar.zst",
                "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst"
            ]
        );
    }

    #[test]
    fn space_needed_is_twice_the_known_size_else_the_floor() {
        assert_eq!(space_needed(Some(10), 99, 1).0, 21);
        assert_eq!(space_needed(None, 99, 1).0, 100);
        assert_eq!(space_needed(Some(u64::MAX), 0, 0).0, u64::MAX);
    }

    #[tokio::test]
    async fn the_whole_archive_is_staged_under_a_versioned_name_and_a_rerun_changes_nothing() {
        let src = release(&[
            ("rke2-images.linux-amd64.tar.zst", Some("all images")),
            ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
            ("rke2-images-canal.linux-amd64.tar.zst", Some("canal")),
        ]);
        let data = tempfile::tempdir().expect("tempdir");
        let detail = stage(src.path(), data.path(), &[], limits())
            .await
            .expect("staged");
        let images = data.path().join(IMAGES_DIR);
        assert_eq!(
            names(&images),
            ["rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"]
        );
        assert!(
            detail.contains("placed rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"),
            "{detail}"
        );
        // Again (a crash re-runs any step): the same file, nothing new.
        let again = stage(src.path(), data.path(), &[], limits())
            .await
            .expect("staged");
        assert!(
            again.contains("placed nothing new") && again.contains("already there"),
            "{again}"
        );
        assert_eq!(
            std::fs::read(images.join("rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"))
                .expect("read"),
            b"all images"
        );
        // Each step alone re-runs too: place after place, verify after a re-fetch.
        let source = Source::Dir(src.path().to_path_buf());
        fetch_within(&source, &[], V, "amd64", &[], data.path(), limits())
            .await
            .expect("fetch");
        fetch_within(&source, &[], V, "amd64", &[], data.path(), limits())
            .await
            .expect("fetch again");
        verify(data.path(), "amd64", &[]).expect("verify");
        verify(data.path(), "amd64", &[]).expect("verify again");
        place(data.path(), V, "amd64", &[]).expect("place");
        assert_eq!(
            names(&images),
            ["rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"]
        );
    }

    #[tokio::test]
    async fn without_the_whole_archive_core_and_the_configured_cni_are_staged() {
        let src = release(&[
            ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
            ("rke2-images-canal.linux-amd64.tar.zst", Some("canal")),
            ("rke2-images-cilium.linux-amd64.tar.zst", Some("cilium")),
        ]);
        let data = tempfile::tempdir().expect("tempdir");
        stage(src.path(), data.path(), &[], limits())
            .await
            .expect("staged");
        assert_eq!(
            names(&data.path().join(IMAGES_DIR)),
            [
                "rke2-images-canal.linux-amd64.v1.34.1+rke2r1.tar.zst",
                "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
            ]
        );
        let cilium = tempfile::tempdir().expect("tempdir");
        stage(src.path(), cilium.path(), &["cilium".to_owned()], limits())
            .await
            .expect("staged");
        assert_eq!(
            names(&cilium.path().join(IMAGES_DIR)),
            [
                "rke2-images-cilium.linux-amd64.v1.34.1+rke2r1.tar.zst",
                "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
            ]
        );
    }

    #[tokio::test]
    async fn a_checksum_mismatch_names_the_file_and_both_hashes_and_places_nothing() {
        let src = release(&[
            ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
            ("rke2-images-canal.linux-amd64.tar.zst", None),
        ]);
        let data = tempfile::tempdir().expect("tempdir");
        let err = stage(src.path(), data.path(), &[], limits())
            .await
            .expect_err("mismatch")
            .to_string();
        assert!(
            err.contains("checksum mismatch for rke2-images-canal.linux-amd64.tar.zst")
                && err.contains(&hash(b"something else"))
                && err.contains(&hash(b"published")),
            "{err}"
        );
        assert!(
            names(&data.path().join(IMAGES_DIR)).is_empty(),
            "nothing placed"
        );
        // A place run anyway (a resumed journal) re-checks each hash while copying.
        std::fs::write(
            data.path()
                .join(STAGING_DIR)
                .join("rke2-images-canal.linux-amd64.tar.zst"),
            b"published",
        )
        .expect("write");
        let err = place(data.path(), V, "amd64", &[])
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(
            !names(&data.path().join(IMAGES_DIR))
                .iter()
                .any(|n| n.contains("canal")),
            "the bad archive is never placed"
        );
    }

    #[tokio::test]
    async fn too_little_free_space_refuses_naming_the_folder_and_both_numbers() {
        let src = release(&[("rke2-images.linux-amd64.tar.zst", Some("all images"))]);
        let data = tempfile::tempdir().expect("tempdir");
        let tight = ImagesLimits {
            reserve: u64::MAX / 2,
            ..limits()
        };
        let err = stage(src.path(), data.path(), &[], tight)
            .await
            .expect_err("no space")
            .to_string();
        let staging = data.path().join(STAGING_DIR);
        assert!(
            err.contains(&staging.display().to_string())
                && err.contains("refused to stage images")
                && err.contains("bytes free")
                && err.contains(&(u64::MAX / 2 + 20).to_string()),
            "{err}"
        );
        assert_eq!(
            names(&staging),
            ["sha256sum-amd64.txt"],
            "no archive fetched"
        );
        assert!(names(&data.path().join(IMAGES_DIR)).is_empty());
    }

    #[test]
    fn prune_removes_other_releases_archives_only() {
        let data = tempfile::tempdir().expect("tempdir");
        let images = data.path().join(IMAGES_DIR);
        std::fs::create_dir_all(&images).expect("mkdir");
        for name in [
            "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst",
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst",
            "rke2-images.linux-amd64.tar.zst",
            "my-app.tar.zst",
            "registries-notes.txt",
        ] {
            std::fs::write(images.join(name), b"x").expect("write");
        }
        let detail = prune(data.path(), V).expect("pruned");
        assert_eq!(
            names(&images),
            [
                "my-app.tar.zst",
                "registries-notes.txt",
                "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
            ]
        );
        assert!(
            detail.contains("rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst"),
            "{detail}"
        );
        // Again: nothing left to remove.
        assert!(
            prune(data.path(), V)
                .expect("pruned")
                .starts_with("removed no other")
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(
            prune(empty.path(), V)
                .expect("ok")
                .contains("nothing to prune")
        );
    }

    /// A mirror serving `dir`'s files at `/<version, + as %2B>/<file>` (GET and HEAD, with
    /// Content-Length), one connection per request.
    async fn mirror(dir: PathBuf) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let dir = dir.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..n]).into_owned();
                    let mut words = text.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let file = path.rsplit('/').next().unwrap_or("");
                    let reply = match std::fs::read(dir.join(file)) {
                        Ok(body) if path == format!("/v1.34.1%2Brke2r1/{file}") => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            if method == "GET" {
                                r.extend(body);
                            }
                            r
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = socket.write_all(&reply).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_mirror_s_announced_sizes_decide_the_space_needed() {
        let src = release(&[
            ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
            ("rke2-images-canal.linux-amd64.tar.zst", Some("canal!")),
        ]);
        let url = mirror(src.path().to_path_buf()).await;
        let source = Source::parse(&url).expect("url");
        let files = [
            "rke2-images-core.linux-amd64.tar.zst".to_owned(),
            "rke2-images-canal.linux-amd64.tar.zst".to_owned(),
        ];
        assert_eq!(
            artifacts::announced_size(&url, &[], V, &files).await,
            Some(10)
        );
        assert_eq!(
            artifacts::announced_size(&url, &[], V, &["absent.tar.zst".to_owned()]).await,
            None
        );
        // The floor is not asked for when the mirror says how large the archives are.
        let data = tempfile::tempdir().expect("tempdir");
        let known = ImagesLimits {
            unknown_size_floor: u64::MAX,
            ..limits()
        };
        let detail = fetch_within(&source, &[], V, "amd64", &[], data.path(), known)
            .await
            .expect("fetched");
        assert!(detail.contains("(10 bytes;"), "{detail}");
        verify(data.path(), "amd64", &[]).expect("verified");
        place(data.path(), V, "amd64", &[]).expect("placed");
        assert_eq!(names(&data.path().join(IMAGES_DIR)).len(), 2);
    }
}
