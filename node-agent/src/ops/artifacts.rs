//! Where an upgrade's release artifacts come from and whether they are the published ones.
//!
//! RKE2's tarball install method (install.sh) downloads `rke2.linux-<arch>.tar.gz` and
//! `sha256sum-<arch>.txt` from `<artifact url>/<version>/` (GitHub's release layout, `+` in the
//! version written `%2B`), or copies them from a local folder on air-gapped sites, and refuses
//! a tarball whose sha256 differs from its line in the sum file. The agent does the same, into
//! its own operation folder, before anything of RKE2 is touched.
//!
//! A mirror (or a hub naming one) is a peer that can make a node's state grow, so a fetch is
//! bounded ([`FetchLimits::RELEASE`]): each file's size ([`MAX_TARBALL_BYTES`],
//! [`MAX_SUMS_BYTES`]), the whole fetch's time ([`FETCH_DEADLINE`]), and it does not start
//! unless the operation folder's file system has [`FREE_SPACE_NEEDED`] free: `/var` is
//! usually where etcd keeps its data, and a full disk stops etcd.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rke2ops_common::atomic_file::{Attrs, NewFile, Policy};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

/// Bytes a release tarball may have. RKE2's `rke2.linux-amd64.tar.gz` is 30-40 MB; 512 MiB
/// leaves room for years of growth and still refuses an endless or hostile download.
pub const MAX_TARBALL_BYTES: u64 = 512 << 20;
/// Bytes a sum file may have. RKE2's lists a few dozen artifacts in about 4 KB.
pub const MAX_SUMS_BYTES: u64 = 1 << 20;
/// How long fetching both files may take in all. Each read already times out after a
/// minute of silence; this bounds a mirror that trickles. 15 minutes is 40 MB at 45 kB/s.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// Free bytes the operation folder's file system must have before fetching: what the limits
/// allow the download and its staging to take (the tarball, the sum file and the unpacked
/// release; the `previous/` copy is the size of the installed release, well inside the
/// unpacked limit's margin).
pub const FREE_SPACE_NEEDED: u64 =
    MAX_TARBALL_BYTES + MAX_SUMS_BYTES + super::install::MAX_UNPACKED_BYTES;

/// The bounds of one fetch (the release's in production; smaller ones in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Bytes the tarball may have.
    pub tarball_bytes: u64,
    /// Bytes the sum file may have.
    pub sums_bytes: u64,
    /// Time for the whole fetch.
    pub deadline: Duration,
    /// Free bytes needed before fetching.
    pub free_space: u64,
}

impl FetchLimits {
    /// The limits of a release fetch.
    pub const RELEASE: Self = Self {
        tarball_bytes: MAX_TARBALL_BYTES,
        sums_bytes: MAX_SUMS_BYTES,
        deadline: FETCH_DEADLINE,
        free_space: FREE_SPACE_NEEDED,
    };
}

/// Why artifacts could not be fetched or verified.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// No source given and none configured.
    #[error(
        "no artifact source: set `artifact_source` (URL prefix or absolute folder) or pass --source"
    )]
    NoSource,
    /// A source that is neither a plain http(s) URL nor an absolute folder.
    #[error("artifact source {0:?} is neither a plain http(s) URL prefix nor an absolute folder")]
    BadSource(String),
    /// A source outside the node's `allowed_artifact_sources`.
    #[error(
        "artifact source {requested} is not allowed on this node: `allowed_artifact_sources` lists only {allowed}"
    )]
    NotAllowed {
        /// The source the request named.
        requested: String,
        /// The allow-list.
        allowed: String,
    },
    /// The HTTP request failed or did not answer 200.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Status or transport error.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The air-gap folder lacks a file.
    #[error("{file} not found in {} (nor under {version}/)", dir.display())]
    Missing {
        /// The folder.
        dir: PathBuf,
        /// The version sub-folder also looked at.
        version: String,
        /// The file.
        file: String,
    },
    /// The sum file has no line for the tarball.
    #[error("{sums} has no sha256 line for {file}")]
    NoSumLine {
        /// The sum file's name.
        sums: String,
        /// The tarball's name.
        file: String,
    },
    /// A file is larger than its limit.
    #[error(
        "{file} from {origin}: refused: over the limit of {limit} bytes for it (reached {value} bytes)"
    )]
    TooLarge {
        /// The file's name.
        file: String,
        /// The URL or path it came from.
        origin: String,
        /// The limit.
        limit: u64,
        /// The size announced or reached when refused.
        value: u64,
    },
    /// The fetch took longer than its deadline.
    #[error("fetching {files} from {from}: not done within the deadline of {} s", limit.as_secs())]
    Deadline {
        /// The files.
        files: String,
        /// The source.
        from: String,
        /// The deadline.
        limit: Duration,
    },
    /// The operation folder's file system has too little free space.
    #[error(
        "{}: refused to fetch: {available} bytes free, the upgrade needs {needed} (the size limits of the artifacts and of the unpacked release)",
        dir.display()
    )]
    NoSpace {
        /// The operation folder.
        dir: PathBuf,
        /// Free bytes (for an unprivileged user; root's reserve is not counted).
        available: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The tarball is not the published one.
    #[error("checksum mismatch for {file}: expected {expected}, got {actual}")]
    Mismatch {
        /// The tarball's name.
        file: String,
        /// The sum file's value.
        expected: String,
        /// What the download hashes to.
        actual: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An artifact source, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http(s)://host/prefix` (no trailing slash).
    Url(String),
    /// An absolute folder on the node.
    Dir(PathBuf),
}

impl Source {
    /// Parses `artifact_source`.
    ///
    /// # Errors
    /// [`ArtifactError::BadSource`] for anything else.
    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = reqwest::Url::parse(text)
                .map_err(|e| ArtifactError::BadSource(format!("{text} ({e})")))?;
            // Messages travel to the hub and its audit log: never with a password in them.
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            let bad = |why: &str| ArtifactError::BadSource(format!("{shown} ({why})"));
            if url.host_str().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
            // The agent appends `/<version>/<file>`: a query or fragment would swallow it,
            // and credentials would be echoed into messages. Encoded separators (`%2F`,
            // `%5C`) and `;` parameters are decoded or cut differently by some servers than
            // by the allow-list, so they are refused too.
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("credentials in the URL"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad("a query or fragment"));
            }
            if url.path().contains(['%', ';', '\\']) {
                return Err(bad("'%', ';' or '\\' in the path"));
            }
            Ok(Self::Url(url.as_str().trim_end_matches('/').to_owned()))
        } else if text.starts_with('/') {
            Ok(Self::Dir(PathBuf::from(text)))
        } else {
            Err(ArtifactError::BadSource(text.to_owned()))
        }
    }
}

impl Source {
    /// Whether this source lies within `allowed`: a URL with the same scheme, host and port
    /// and a path at or under it (after `..` is resolved, as the fetch would), or a folder at
    /// or under it with no `..` in it.
    #[must_use]
    pub fn within(&self, allowed: &Self) -> bool {
        match (self, allowed) {
            (Self::Url(url), Self::Url(prefix)) => url_within(url, prefix),
            (Self::Dir(dir), Self::Dir(prefix)) => {
                !dir.components().any(|c| c == Component::ParentDir) && dir.starts_with(prefix)
            }
            _ => false,
        }
    }
}

fn url_within(url: &str, prefix: &str) -> bool {
    let (Ok(url), Ok(prefix)) = (reqwest::Url::parse(url), reqwest::Url::parse(prefix)) else {
        return false;
    };
    let segments = |u: &reqwest::Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    // Encoded separators and `;` parameters could be resolved differently by the server
    // (see `Source::parse`); a redirect target carrying them is not within anything.
    let path = url.path().to_ascii_lowercase();
    if path.contains("%2f") || path.contains("%5c") || path.contains([';', '\\']) {
        return false;
    }
    url.scheme() == prefix.scheme()
        && url.host_str() == prefix.host_str()
        && url.port_or_known_default() == prefix.port_or_known_default()
        && url.username() == prefix.username()
        && segments(&url).starts_with(&segments(&prefix))
}

/// Follows at most 10 redirects, each of which must stay within the allow-list (when there
/// is one): an open redirect on an allowed mirror must not lead anywhere. GitHub's release
/// downloads redirect to `objects.githubusercontent.com`, which a list must then name.
fn redirect_policy(allowed: Vec<Source>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("more than 10 redirects");
        }
        let target = Source::Url(attempt.url().as_str().to_owned());
        if allowed.is_empty() || allowed.iter().any(|a| target.within(a)) {
            attempt.follow()
        } else {
            let message = format!(
                "redirect to {} is outside allowed_artifact_sources",
                attempt.url()
            );
            attempt.error(message)
        }
    })
}

/// Checks `source` against a node's allow-list; an empty list allows every source.
///
/// # Errors
/// [`ArtifactError::NotAllowed`] naming the source and the list.
pub fn check_allowed(source: &Source, allowed: &[Source]) -> Result<(), ArtifactError> {
    if allowed.is_empty() || allowed.iter().any(|a| source.within(a)) {
        return Ok(());
    }
    Err(ArtifactError::NotAllowed {
        requested: source.to_string(),
        allowed: allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(u) => f.write_str(u),
            Self::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// RKE2's architecture name for this machine (`amd64`, `arm64`, `s390x`).
#[must_use]
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "s390x" => "s390x",
        _ => "amd64",
    }
}

/// `rke2.linux-<arch>.tar.gz`.
#[must_use]
pub fn tarball_name(arch: &str) -> String {
    format!("rke2.linux-{arch}.tar.gz")
}

/// `sha256sum-<arch>.txt`.
#[must_use]
pub fn sums_name(arch: &str) -> String {
    format!("sha256sum-{arch}.txt")
}

/// `<prefix>/<version, + as %2B>/<file>`.
#[must_use]
pub fn artifact_url(prefix: &str, version: &str, file: &str) -> String {
    format!(
        "{}/{}/{file}",
        prefix.trim_end_matches('/'),
        version.replace('+', "%2B")
    )
}

/// The sha256 (lower-case hex) of `file` in a `sha256sum` listing (`<hex>  <name>` or
/// `<hex> *<name>` in binary mode), if listed.
#[must_use]
pub fn sum_for(listing: &str, file: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let hash = words.next()?;
        let name = words.next()?.trim_start_matches('*');
        let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && name == file && words.next().is_none()).then(|| hash.to_ascii_lowercase())
    })
}

/// The sha256 (hex) of a file, read in blocks.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String, ArtifactError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads a text file of at most `limit` bytes.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<String, ArtifactError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut text = String::new();
    let read = file
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(io(path))? as u64;
    if read > limit {
        return Err(ArtifactError::TooLarge {
            file: file_name(path),
            origin: path.display().to_string(),
            limit,
            value: read,
        });
    }
    Ok(text)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Pure: whether a size (announced or reached) is within `limit`.
///
/// # Errors
/// [`ArtifactError::TooLarge`] naming the file, where it came from, the limit and the size.
pub fn check_size(file: &str, origin: &str, limit: u64, value: u64) -> Result<(), ArtifactError> {
    if value > limit {
        return Err(ArtifactError::TooLarge {
            file: file.to_owned(),
            origin: origin.to_owned(),
            limit,
            value,
        });
    }
    Ok(())
}

/// Pure: whether `available` free bytes in `dir` are enough for a fetch needing `needed`.
///
/// # Errors
/// [`ArtifactError::NoSpace`] naming the folder and both numbers.
pub fn check_free_space(dir: &Path, available: u64, needed: u64) -> Result<(), ArtifactError> {
    if available < needed {
        return Err(ArtifactError::NoSpace {
            dir: dir.to_path_buf(),
            available,
            needed,
        });
    }
    Ok(())
}

/// Free bytes for unprivileged users on `dir`'s file system (root's reserved blocks are
/// left to the system: the agent must not be what eats them).
pub(crate) fn available_bytes(dir: &Path) -> Result<u64, ArtifactError> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| ArtifactError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::from(e),
    })?;
    // Both are u64 here but u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(stat.blocks_available()),
        u64::from(stat.fragment_size()),
    );
    Ok(blocks.saturating_mul(size))
}

/// Checks the tarball in `dir` against the sum file in `dir`; returns the hash.
///
/// # Errors
/// [`ArtifactError::NoSumLine`] or [`ArtifactError::Mismatch`].
pub fn verify(dir: &Path, arch: &str) -> Result<String, ArtifactError> {
    let tarball = tarball_name(arch);
    let sums = sums_name(arch);
    let sums_path = dir.join(&sums);
    let listing = read_bounded(&sums_path, MAX_SUMS_BYTES)?;
    let expected = sum_for(&listing, &tarball).ok_or_else(|| ArtifactError::NoSumLine {
        sums,
        file: tarball.clone(),
    })?;
    let actual = sha256_file(&dir.join(&tarball))?;
    if actual == expected {
        Ok(actual)
    } else {
        Err(ArtifactError::Mismatch {
            file: tarball,
            expected,
            actual,
        })
    }
}

/// Fetches both artifacts of `version` from `source` into `dest` (created); returns a one-line
/// description. Re-running replaces what an interrupted run left. Bounded by
/// [`FetchLimits::RELEASE`].
///
/// # Errors
/// [`ArtifactError`] naming the URL or file (and the limit, when one is reached).
pub async fn fetch(
    source: &Source,
    allowed: &[Source],
    version: &str,
    arch: &str,
    dest: &Path,
) -> Result<String, ArtifactError> {
    fetch_within(source, allowed, version, arch, dest, FetchLimits::RELEASE).await
}

/// [`fetch`] with explicit limits.
///
/// # Errors
/// As [`fetch`].
pub async fn fetch_within(
    source: &Source,
    allowed: &[Source],
    version: &str,
    arch: &str,
    dest: &Path,
    limits: FetchLimits,
) -> Result<String, ArtifactError> {
    // Checked here too, not only when the operation starts: an interrupted upgrade resumed
    // after the list was tightened must not fetch from a source it no longer allows.
    check_allowed(source, allowed)?;
    tokio::fs::create_dir_all(dest).await.map_err(io(dest))?;
    check_free_space(dest, available_bytes(dest)?, limits.free_space)?;
    let files = [
        (sums_name(arch), limits.sums_bytes),
        (tarball_name(arch), limits.tarball_bytes),
    ];
    let fetching = fetch_files(source, allowed, version, dest, &files);
    let bytes_total = tokio::time::timeout(limits.deadline, fetching)
        .await
        .map_err(|_| ArtifactError::Deadline {
            files: format!("{} and {}", files[1].0, files[0].0),
            from: source.to_string(),
            limit: limits.deadline,
        })??;
    Ok(format!(
        "{} and {} from {source} ({bytes_total} bytes)",
        files[1].0, files[0].0
    ))
}

/// The HTTP client of a fetch from `prefix`: redirects only within `allowed`, bounded waits.
fn client(prefix: &str, allowed: &[Source]) -> Result<reqwest::Client, ArtifactError> {
    reqwest::Client::builder()
        .redirect(redirect_policy(allowed.to_vec()))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("rke2-node-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ArtifactError::Http {
            url: prefix.to_owned(),
            reason: e.to_string(),
        })
}

/// The total size a mirror announces for `files` (HEAD, `Content-Length`), so a free-space
/// check can ask for what the download really needs; `None` when any is not announced or
/// the mirror does not answer within 30 s (the caller then assumes a floor).
pub(crate) async fn announced_size(
    prefix: &str,
    allowed: &[Source],
    version: &str,
    files: &[String],
) -> Option<u64> {
    let client = client(prefix, allowed).ok()?;
    let asking = async {
        let mut total = 0u64;
        for file in files {
            let response = client
                .head(artifact_url(prefix, version, file))
                .send()
                .await
                .ok()?;
            // Not `content_length()`: a HEAD answer's body is empty whatever it announces.
            let len: u64 = response
                .status()
                .is_success()
                .then(|| response.headers().get(reqwest::header::CONTENT_LENGTH))??
                .to_str()
                .ok()?
                .parse()
                .ok()?;
            total = total.saturating_add(len);
        }
        Some(total)
    };
    tokio::time::timeout(Duration::from_secs(30), asking)
        .await
        .ok()
        .flatten()
}

/// Fetches `files` (name, size limit); returns the bytes fetched.
pub(crate) async fn fetch_files(
    source: &Source,
    allowed: &[Source],
    version: &str,
    dest: &Path,
    files: &[(String, u64)],
) -> Result<u64, ArtifactError> {
    let mut bytes_total = 0u64;
    match source {
        Source::Url(prefix) => {
            let client = client(prefix, allowed)?;
            for (file, limit) in files {
                let url = artifact_url(prefix, version, file);
                bytes_total += download(&client, &url, &dest.join(file), *limit).await?;
            }
        }
        Source::Dir(dir) => {
            for (file, limit) in files {
                let candidates = [dir.join(version).join(file), dir.join(file)];
                let found = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
                    ArtifactError::Missing {
                        dir: dir.clone(),
                        version: version.to_owned(),
                        file: file.clone(),
                    }
                })?;
                let (found, target, limit) = (found.clone(), dest.join(file), *limit);
                let span = tracing::Span::current();
                bytes_total += tokio::task::spawn_blocking(move || {
                    span.in_scope(|| copy_bounded(&found, &target, limit))
                })
                .await
                .map_err(|e| ArtifactError::Io {
                    path: dest.to_path_buf(),
                    source: std::io::Error::other(e),
                })??;
            }
        }
    }
    Ok(bytes_total)
}

/// The temporary file a fetched artifact is written to: 0600, never through a link.
fn new_artifact(target: &Path) -> Result<NewFile, ArtifactError> {
    NewFile::create(target, Policy::Exactly(Attrs::mode(0o600))).map_err(|e| ArtifactError::Io {
        path: e.path,
        source: e.source,
    })
}

fn commit(new: NewFile) -> Result<(), ArtifactError> {
    new.commit().map_err(|e| ArtifactError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Copies an air-gap file of at most `limit` bytes into `target`; returns the size.
fn copy_bounded(found: &Path, target: &Path, limit: u64) -> Result<u64, ArtifactError> {
    let name = file_name(target);
    let origin = found.display().to_string();
    let input = std::fs::File::open(found).map_err(io(found))?;
    let announced = input.metadata().map_err(io(found))?.len();
    check_size(&name, &origin, limit, announced)?;
    let mut new = new_artifact(target)?;
    let tmp = new.temp_path().to_path_buf();
    // The file may grow while it is copied: read one byte past the limit to notice.
    let copied = std::io::copy(&mut input.take(limit + 1), new.file()).map_err(io(&tmp))?;
    check_size(&name, &origin, limit, copied)?;
    commit(new)?;
    Ok(copied)
}

/// Streams `url` into `target` (temp file + rename), at most `limit` bytes; returns the size.
async fn download(
    client: &reqwest::Client,
    url: &str,
    target: &Path,
    limit: u64,
) -> Result<u64, ArtifactError> {
    let http = |reason: String| ArtifactError::Http {
        url: url.to_owned(),
        reason,
    };
    let name = file_name(target);
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| http(format!("{e:#}")))?;
    if !response.status().is_success() {
        return Err(http(format!("HTTP {}", response.status())));
    }
    // Refused before a byte of the body when the server says how large it is.
    if let Some(announced) = response.content_length() {
        check_size(&name, url, limit, announced)?;
    }
    let mut new = new_artifact(target)?;
    let tmp = new.temp_path().to_path_buf();
    let std_file = new.file().try_clone().map_err(io(&tmp))?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| http(format!("{e:#}")))? {
        size += chunk.len() as u64;
        check_size(&name, url, limit, size)?;
        file.write_all(&chunk).await.map_err(io(&tmp))?;
    }
    file.flush().await.map_err(io(&tmp))?;
    drop(file);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| commit(new)))
        .await
        .map_err(|e| ArtifactError::Io {
            path: tmp,
            source: std::io::Error::other(e),
        })??;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_by_origin_and_path_segments() {
        let allowed = [
            Source::parse("https://mirror.example/rke2").expect("url"),
            Source::parse("/srv/rke2").expect("dir"),
        ];
        let ok = |s: &str| check_allowed(&Source::parse(s).expect("source"), &allowed).is_ok();
        assert!(ok("https://mirror.example/rke2"));
        assert!(ok("https://mirror.example/rke2/"));
        assert!(ok("https://mirror.example:443/rke2/releases"));
        assert!(ok("/srv/rke2/v1.34.1"));
        assert!(!ok("https://mirror.example/rke2-evil"), "segment boundary");
        assert!(
            !ok("https://mirror.example/rke2/../evil"),
            "dot-dot resolved"
        );
        assert!(!ok("http://mirror.example/rke2"), "scheme");
        assert!(!ok("https://mirror.example:8443/rke2"), "port");
        assert!(!ok("https://mirror.example.evil.net/rke2"), "host");
        assert!(!ok("/srv/rke2/../../etc"), "dot-dot in a folder");
        for refused in [
            "https://mirror.example/rke2/..%2F..%2Fother",
            "https://mirror.example/rke2/%2e%2e%5cother",
            "https://mirror.example/rke2/..;/other",
            "https://mirror.example/rke2?x=/rke2",
            "https://mirror.example/rke2#frag",
            "https://user:secret@mirror.example/rke2",
            "https://",
        ] {
            let err = Source::parse(refused).expect_err(refused).to_string();
            assert!(!err.contains("secret"), "no credentials echoed: {err}");
        }
        assert!(ok("HTTPS://Mirror.Example/rke2/x"), "scheme and host case");
        assert!(!ok("/srv/rke2-old"), "folder boundary");
        let err = check_allowed(&Source::parse("/tmp/x").expect("dir"), &allowed)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("/tmp/x")
                && err.contains("allowed_artifact_sources")
                && err.contains("https://mirror.example/rke2, /srv/rke2"),
            "{err}"
        );
        assert!(check_allowed(&Source::parse("/tmp/x").expect("dir"), &[]).is_ok());
    }

    const HASH: &str = "3f5a9c0e1b2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60";

    #[test]
    fn urls_follow_githubs_release_layout() {
        assert_eq!(
            artifact_url(
                "https://mirror.example/rke2/",
                "v1.34.1+rke2r1",
                "sha256sum-amd64.txt"
            ),
            "https://mirror.example/rke2/v1.34.1%2Brke2r1/sha256sum-amd64.txt"
        );
    }

    #[test]
    fn sources_are_urls_or_absolute_folders() {
        assert_eq!(
            Source::parse("http://127.0.50.1:8080/").expect("url"),
            Source::Url("http://127.0.50.1:8080".into())
        );
        assert_eq!(
            Source::parse("/srv/rke2-artifacts").expect("dir"),
            Source::Dir("/srv/rke2-artifacts".into())
        );
        assert!(Source::parse("ftp://x").is_err());
        assert!(Source::parse("relative/dir").is_err());
    }

    #[test]
    fn sum_file_lines_are_matched_by_exact_name() {
        let listing = format!(
            "{HASH}  rke2.linux-amd64\n{}  rke2.linux-amd64.tar.gz\n{HASH} *rke2-images.linux-amd64.tar.zst\n",
            HASH.to_uppercase().replace('3', "4")
        );
        assert_eq!(
            sum_for(&listing, "rke2.linux-amd64.tar.gz"),
            Some(HASH.replace('3', "4"))
        );
        assert_eq!(
            sum_for(&listing, "rke2-images.linux-amd64.tar.zst"),
            Some(HASH.to_owned())
        );
        assert_eq!(sum_for(&listing, "rke2.linux-arm64.tar.gz"), None);
        assert_eq!(
            sum_for("nothex  rke2.linux-amd64.tar.gz", "rke2.linux-amd64.tar.gz"),
            None
        );
    }

    #[test]
    fn verify_refuses_a_tarball_that_is_not_the_published_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(tarball_name("amd64")), b"release").expect("write");
        let good = hex::encode(Sha256::digest(b"release"));
        std::fs::write(
            dir.path().join(sums_name("amd64")),
            format!("{good}  rke2.linux-amd64.tar.gz\n"),
        )
        .expect("write");
        assert_eq!(verify(dir.path(), "amd64").expect("matches"), good);
        std::fs::write(dir.path().join(tarball_name("amd64")), b"tampered").expect("write");
        let err = verify(dir.path(), "amd64")
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn sizes_and_free_space_are_checked_against_their_limits_by_name() {
        assert!(
            check_size(
                "sha256sum-amd64.txt",
                "/srv",
                MAX_SUMS_BYTES,
                MAX_SUMS_BYTES
            )
            .is_ok()
        );
        let err = check_size(
            "rke2.linux-amd64.tar.gz",
            "https://m/x",
            MAX_TARBALL_BYTES,
            MAX_TARBALL_BYTES + 1,
        )
        .expect_err("over")
        .to_string();
        assert!(
            err.contains("rke2.linux-amd64.tar.gz")
                && err.contains("https://m/x")
                && err.contains("limit of 536870912 bytes")
                && err.contains("reached 536870913 bytes"),
            "{err}"
        );
        assert!(check_free_space(Path::new("/var"), FREE_SPACE_NEEDED, FREE_SPACE_NEEDED).is_ok());
        let err = check_free_space(Path::new("/var/op"), 10, FREE_SPACE_NEEDED)
            .expect_err("short")
            .to_string();
        assert!(
            err.contains("/var/op") && err.contains("10 bytes free") && err.contains("1611661312"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_sum_file_is_refused_by_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(tarball_name("amd64")), b"release").expect("write");
        let line = format!("{HASH}  other\n");
        let big = line.repeat(usize::try_from(MAX_SUMS_BYTES).expect("fits") / line.len() + 1);
        std::fs::write(dir.path().join(sums_name("amd64")), big).expect("write");
        let err = verify(dir.path(), "amd64")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("sha256sum-amd64.txt") && err.contains("limit of 1048576"),
            "{err}"
        );
    }

    /// A mirror answering every request with `head` then `body`, `pause` between body
    /// chunks of 1 KiB (forever when `endless`).
    async fn serve_once(head: String, body: Vec<u8>, pause: Duration, endless: bool) -> String {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (head, body) = (head.clone(), body.clone());
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    loop {
                        for chunk in body.chunks(1024) {
                            if socket.write_all(chunk).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(pause).await;
                        }
                        if !endless {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn small_limits() -> FetchLimits {
        FetchLimits {
            tarball_bytes: 64 << 10,
            sums_bytes: 4 << 10,
            deadline: Duration::from_secs(60),
            free_space: 0,
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fetches from `url` within `limits` into a fresh folder, expects a refusal, checks that
    /// nothing was kept, and returns the refusal's text.
    async fn refused_leaving_nothing(url: &str, version: &str, limits: FetchLimits) -> String {
        let dest = tempfile::tempdir().expect("tempdir");
        let source = Source::parse(url).expect("source");
        let err = fetch_within(&source, &[], version, "amd64", dest.path(), limits)
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            leftovers(dest.path()).is_empty(),
            "{err}: {:?} kept",
            leftovers(dest.path())
        );
        err
    }

    #[tokio::test]
    async fn an_announced_size_over_the_limit_is_refused_before_the_body() {
        let url = serve_once(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1u64 << 40),
            vec![],
            Duration::ZERO,
            false,
        )
        .await;
        let err = refused_leaving_nothing(&url, "v1.34.1+rke2r1", small_limits()).await;
        assert!(
            err.contains("sha256sum-amd64.txt")
                && err.contains("limit of 4096 bytes")
                && err.contains("reached 1099511627776 bytes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_body_growing_past_the_limit_is_cut_off_and_nothing_kept() {
        // No Content-Length: the body ends when the connection closes, or never.
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned(),
            vec![b'x'; 1024],
            Duration::ZERO,
            true,
        )
        .await;
        let err = refused_leaving_nothing(&url, "v1", small_limits()).await;
        assert!(
            err.contains("sha256sum-amd64.txt") && err.contains("limit of 4096 bytes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_trickling_mirror_is_given_up_at_the_deadline() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n".to_owned(),
            vec![b'x'; 4000],
            Duration::from_millis(500),
            false,
        )
        .await;
        let limits = FetchLimits {
            deadline: Duration::from_secs(1),
            ..small_limits()
        };
        let err = refused_leaving_nothing(&url, "v1", limits).await;
        assert!(
            err.contains("rke2.linux-amd64.tar.gz and sha256sum-amd64.txt")
                && err.contains("deadline of 1 s"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn too_little_free_space_refuses_before_fetching_and_folders_are_bounded_too() {
        let air_gap = tempfile::tempdir().expect("tempdir");
        std::fs::write(air_gap.path().join(sums_name("amd64")), "sums").expect("write");
        std::fs::write(
            air_gap.path().join(tarball_name("amd64")),
            vec![0u8; 65 << 10],
        )
        .expect("write");
        let source = Source::Dir(air_gap.path().to_path_buf());
        let dest = tempfile::tempdir().expect("tempdir");
        let limits = FetchLimits {
            free_space: u64::MAX,
            ..small_limits()
        };
        let err = fetch_within(&source, &[], "v1", "amd64", dest.path(), limits)
            .await
            .expect_err("no space")
            .to_string();
        assert!(
            err.contains("refused to fetch") && err.contains(&u64::MAX.to_string()),
            "{err}"
        );
        assert!(leftovers(dest.path()).is_empty(), "nothing fetched");

        let err = fetch_within(&source, &[], "v1", "amd64", dest.path(), small_limits())
            .await
            .expect_err("too large")
            .to_string();
        assert!(
            err.contains("rke2.linux-amd64.tar.gz")
                && err.contains("limit of 65536 bytes")
                && err.contains("reached 66560 bytes"),
            "{err}"
        );
        assert_eq!(
            leftovers(dest.path()),
            vec![sums_name("amd64")],
            "only the sum file"
        );
    }
}
