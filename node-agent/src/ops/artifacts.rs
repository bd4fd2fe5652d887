//! Where an upgrade's release artifacts come from and whether they are the published ones.
//!
//! RKE2's tarball install method (install.sh) downloads `rke2.linux-<arch>.tar.gz` and
//! `sha256sum-<arch>.txt` from `<artifact url>/<version>/` (GitHub's release layout, `+` in the
//! version written `%2B`), or copies them from a local folder on air-gapped sites, and refuses
//! a tarball whose sha256 differs from its line in the sum file. The agent does the same, into
//! its own operation folder, before anything of RKE2 is touched.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

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

/// Checks the tarball in `dir` against the sum file in `dir`; returns the hash.
///
/// # Errors
/// [`ArtifactError::NoSumLine`] or [`ArtifactError::Mismatch`].
pub fn verify(dir: &Path, arch: &str) -> Result<String, ArtifactError> {
    let tarball = tarball_name(arch);
    let sums = sums_name(arch);
    let sums_path = dir.join(&sums);
    let listing = std::fs::read_to_string(&sums_path).map_err(io(&sums_path))?;
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
/// description. Re-running replaces what an interrupted run left.
///
/// # Errors
/// [`ArtifactError`] naming the URL or file.
pub async fn fetch(
    source: &Source,
    allowed: &[Source],
    version: &str,
    arch: &str,
    dest: &Path,
) -> Result<String, ArtifactError> {
    // Checked here too, not only when the operation starts: an interrupted upgrade resumed
    // after the list was tightened must not fetch from a source it no longer allows.
    check_allowed(source, allowed)?;
    tokio::fs::create_dir_all(dest).await.map_err(io(dest))?;
    let files = [sums_name(arch), tarball_name(arch)];
    let mut bytes_total = 0u64;
    match source {
        Source::Url(prefix) => {
            let client = reqwest::Client::builder()
                .redirect(redirect_policy(allowed.to_vec()))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60))
                .user_agent(concat!("rke2-node-agent/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ArtifactError::Http {
                    url: prefix.clone(),
                    reason: e.to_string(),
                })?;
            for file in &files {
                let url = artifact_url(prefix, version, file);
                bytes_total += download(&client, &url, &dest.join(file)).await?;
            }
        }
        Source::Dir(dir) => {
            for file in &files {
                let candidates = [dir.join(version).join(file), dir.join(file)];
                let found = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
                    ArtifactError::Missing {
                        dir: dir.clone(),
                        version: version.to_owned(),
                        file: file.clone(),
                    }
                })?;
                let target = dest.join(file);
                bytes_total += tokio::fs::copy(found, &target).await.map_err(io(found))?;
            }
        }
    }
    Ok(format!(
        "{} and {} from {source} ({bytes_total} bytes)",
        files[1], files[0]
    ))
}

/// Streams `url` into `target` (temp file + rename); returns the size.
async fn download(
    client: &reqwest::Client,
    url: &str,
    target: &Path,
) -> Result<u64, ArtifactError> {
    let http = |reason: String| ArtifactError::Http {
        url: url.to_owned(),
        reason,
    };
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| http(format!("{e:#}")))?;
    if !response.status().is_success() {
        return Err(http(format!("HTTP {}", response.status())));
    }
    let tmp = target.with_extension("part");
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| http(format!("{e:#}")))? {
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io(&tmp))?;
    }
    file.sync_all().await.map_err(io(&tmp))?;
    drop(file);
    tokio::fs::rename(&tmp, target).await.map_err(io(target))?;
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
}
