//! What the simulated `rke2 --version` prints, and where the version comes from.
//!
//! RKE2's urfave/cli version printer writes `rke2 version <version> (<commit>)` then
//! `go version <go runtime>`. Tests change the simulated version without rebuilding:
//! 1. `RKE2_SIM_VERSION` (and optionally `RKE2_SIM_COMMIT`) in the environment, else
//! 2. a trailer at the very end of the binary itself ([`with_trailer`]:
//!    `\nRKE2SIM-VERSION:<version> <commit>\n`), read from `/proc/self/exe`. The version
//!    travels with the file, as in a real release: installing another release's binary changes
//!    it, putting the previous binary back restores it (a running process keeps reading its own,
//!    possibly replaced, executable), else
//! 3. a file `rke2.version` next to the running binary: first line the version, optional second
//!    line the commit (older tests rewrite it to fake an upgrade), else
//! 4. [`DEFAULT_VERSION`] / [`DEFAULT_COMMIT`].
//!
//! An ELF file ignores bytes after its last section, so the trailer does not change what runs.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// Version reported when nothing overrides it.
pub const DEFAULT_VERSION: &str = "v1.34.1+rke2r1";
/// Commit reported when nothing overrides it (RKE2 prints the full 40-hex git commit).
pub const DEFAULT_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// Go runtime RKE2 release binaries report (FIPS builds use boringcrypto).
pub const GO_VERSION: &str = "go1.24.6 X:boringcrypto";
/// Name of the version file looked up next to the binary.
pub const VERSION_FILE: &str = "rke2.version";
/// Environment variable overriding the version.
pub const VERSION_ENV: &str = "RKE2_SIM_VERSION";
/// Environment variable overriding the commit.
pub const COMMIT_ENV: &str = "RKE2_SIM_COMMIT";
/// Marks the version trailer at the end of a simulated `rke2` binary.
pub const TRAILER_MARK: &[u8] = b"\nRKE2SIM-VERSION:";
/// How many bytes at the end of the binary are searched for the trailer.
const TRAILER_MAX: u64 = 256;

/// `binary` with its version trailer set to `version` and `commit` (an existing trailer is
/// replaced, so a release can be made from any simulated binary).
#[must_use]
pub fn with_trailer(binary: &[u8], version: &str, commit: &str) -> Vec<u8> {
    let body = strip_trailer(binary);
    let mut out = Vec::with_capacity(body.len() + 80);
    out.extend_from_slice(body);
    out.extend_from_slice(TRAILER_MARK);
    out.extend_from_slice(format!("{version} {commit}\n").as_bytes());
    out
}

/// `binary` without its trailer (unchanged when it has none).
#[must_use]
pub fn strip_trailer(binary: &[u8]) -> &[u8] {
    let tail_start = binary
        .len()
        .saturating_sub(usize::try_from(TRAILER_MAX).unwrap_or(256));
    match find_mark(&binary[tail_start..]) {
        Some(at) if parse_trailer(&binary[tail_start..]).is_some() => &binary[..tail_start + at],
        _ => binary,
    }
}

fn find_mark(tail: &[u8]) -> Option<usize> {
    tail.windows(TRAILER_MARK.len())
        .rposition(|w| w == TRAILER_MARK)
}

/// The version and commit of a trailer at the end of `tail` (the last bytes of a binary).
#[must_use]
pub fn parse_trailer(tail: &[u8]) -> Option<(String, String)> {
    let at = find_mark(tail)?;
    let line = std::str::from_utf8(&tail[at + TRAILER_MARK.len()..]).ok()?;
    let line = line.strip_suffix('\n')?;
    if line.contains('\n') {
        return None;
    }
    let mut words = line.split(' ');
    let version = words.next().filter(|v| v.starts_with('v'))?;
    let commit = words.next().unwrap_or(DEFAULT_COMMIT);
    Some((version.to_owned(), commit.to_owned()))
}

/// The trailer of the file at `path`, if any.
#[must_use]
pub fn read_trailer(path: &Path) -> Option<(String, String)> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TRAILER_MAX)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    parse_trailer(&tail)
}

/// A resolved version and commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimVersion {
    /// e.g. `v1.34.1+rke2r1`.
    pub version: String,
    /// Git commit printed in parentheses.
    pub commit: String,
}

impl SimVersion {
    /// Resolve from the environment, then the running binary's trailer, then
    /// `<binary_dir>/rke2.version`, then defaults.
    #[must_use]
    pub fn resolve(binary_dir: Option<&Path>) -> SimVersion {
        Self::resolve_from(Path::new("/proc/self/exe"), binary_dir)
    }

    /// [`SimVersion::resolve`] with the trailer read from `binary` (tests).
    #[must_use]
    pub fn resolve_from(binary: &Path, binary_dir: Option<&Path>) -> SimVersion {
        let env_commit = std::env::var(COMMIT_ENV).ok().filter(|c| !c.is_empty());
        if let Some(version) = std::env::var(VERSION_ENV).ok().filter(|v| !v.is_empty()) {
            return SimVersion {
                version,
                commit: env_commit.unwrap_or_else(|| DEFAULT_COMMIT.to_owned()),
            };
        }
        if let Some((version, commit)) = read_trailer(binary) {
            return SimVersion {
                version,
                commit: env_commit.unwrap_or(commit),
            };
        }
        if let Some(text) =
            binary_dir.and_then(|dir| std::fs::read_to_string(dir.join(VERSION_FILE)).ok())
        {
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            if let Some(version) = lines.next() {
                return SimVersion {
                    version: version.to_owned(),
                    commit: env_commit
                        .or_else(|| lines.next().map(str::to_owned))
                        .unwrap_or_else(|| DEFAULT_COMMIT.to_owned()),
                };
            }
        }
        SimVersion {
            version: DEFAULT_VERSION.to_owned(),
            commit: env_commit.unwrap_or_else(|| DEFAULT_COMMIT.to_owned()),
        }
    }

    /// The two lines `rke2 --version` prints.
    #[must_use]
    pub fn banner(&self) -> String {
        format!(
            "rke2 version {} ({})\ngo version {GO_VERSION}\n",
            self.version, self.commit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_and_replaces_an_older_one() {
        let elf = b"\x7fELF....body....".to_vec();
        let once = with_trailer(&elf, "v1.33.5+rke2r1", "abc");
        assert_eq!(
            parse_trailer(&once),
            Some(("v1.33.5+rke2r1".to_owned(), "abc".to_owned()))
        );
        let twice = with_trailer(&once, "v1.34.1+rke2r1", "def");
        assert_eq!(strip_trailer(&twice), &elf[..]);
        assert_eq!(
            parse_trailer(&twice),
            Some(("v1.34.1+rke2r1".to_owned(), "def".to_owned()))
        );
        assert_eq!(parse_trailer(&elf), None);
        assert_eq!(strip_trailer(&elf), &elf[..]);
    }

    #[test]
    fn trailer_wins_over_the_version_file_but_not_over_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("rke2");
        std::fs::write(&bin, with_trailer(b"ELF", "v1.33.5+rke2r1", "c0ffee")).expect("write");
        std::fs::write(dir.path().join(VERSION_FILE), "v1.30.0+rke2r1\n").expect("write");
        // The environment is process-wide; this test only reads it (nothing here sets it).
        if std::env::var(VERSION_ENV).is_err() {
            let v = SimVersion::resolve_from(&bin, Some(dir.path()));
            assert_eq!(v.version, "v1.33.5+rke2r1");
            assert_eq!(v.commit, "c0ffee");
            std::fs::write(&bin, b"ELF").expect("write");
            let v = SimVersion::resolve_from(&bin, Some(dir.path()));
            assert_eq!(v.version, "v1.30.0+rke2r1", "no trailer: the version file");
        }
    }
}
