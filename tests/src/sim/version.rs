//! What the simulated `rke2 --version` prints, and where the version comes from.
//!
//! RKE2's urfave/cli version printer writes `rke2 version <version> (<commit>)` then
//! `go version <go runtime>`. Tests change the simulated version without rebuilding:
//! 1. `RKE2_SIM_VERSION` (and optionally `RKE2_SIM_COMMIT`) in the environment, else
//! 2. a file `rke2.version` next to the running binary: first line the version, optional second
//!    line the commit (this is what a simulated install or upgrade rewrites), else
//! 3. [`DEFAULT_VERSION`] / [`DEFAULT_COMMIT`].

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

/// A resolved version and commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimVersion {
    /// e.g. `v1.34.1+rke2r1`.
    pub version: String,
    /// Git commit printed in parentheses.
    pub commit: String,
}

impl SimVersion {
    /// Resolve from the environment, then `<binary_dir>/rke2.version`, then defaults.
    #[must_use]
    pub fn resolve(binary_dir: Option<&Path>) -> SimVersion {
        let env_commit = std::env::var(COMMIT_ENV).ok().filter(|c| !c.is_empty());
        if let Some(version) = std::env::var(VERSION_ENV).ok().filter(|v| !v.is_empty()) {
            return SimVersion {
                version,
                commit: env_commit.unwrap_or_else(|| DEFAULT_COMMIT.to_owned()),
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
