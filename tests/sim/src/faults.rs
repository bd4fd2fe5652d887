//! Fault switches: files a test drops into `<data-dir>/.sim-faults/` (default
//! `/var/lib/rancher/rke2/.sim-faults/`) to make the next `rke2 server` / `rke2 agent` start
//! misbehave the way real RKE2 can. Read once at start; see `tests/SIMULATOR.md` §5.
//!
//! | file | content | effect | lifetime |
//! |---|---|---|---|
//! | `fail-start` | empty, or a count N | exit 1 before READY (`level=fatal`) | empty: every start until removed; N: the next N starts, then the file is removed |
//! | `slow-start` | seconds (e.g. `8` or `2.5`) | sleep that long before binding listeners, so READY comes late | until removed |
//! | `never-ready` | anything | listeners up, apiserver `/readyz` fails, READY never sent (unit stays `activating`) | until removed |
//! | `empty-pem` | a path relative to the data dir | truncate that file to 0 bytes, then exit 1 like a rotation that died half-way | consumed when it fires (the empty file stays, and later starts fail on it until it is restored) |
//! | `never-ready-version` | an RKE2 version | as `never-ready`, only while the running binary reports that version (a bad release: the previous binary, put back, starts fine) | until removed |
//! | `fail-start-version` | an RKE2 version | as an empty `fail-start`, only for that version | until removed |
//! | `no-registry` | anything | air-gapped: no registry answers, so the start needs its runtime image in `agent/images/` (else exit 1, as RKE2's failed pull) | until removed |

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The folder under the data dir.
pub const FAULTS_DIR: &str = ".sim-faults";

/// The switches found at one start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Exit 1 before READY.
    pub fail_start: bool,
    /// Sleep this long before listening.
    pub slow_start: Option<Duration>,
    /// Never send READY and fail `/readyz`.
    pub never_ready: bool,
    /// Truncate this file (relative to the data dir) and exit 1.
    pub empty_pem: Option<PathBuf>,
    /// No registry answers: images come only from `agent/images/` ([`crate::images`]).
    pub no_registry: bool,
}

/// A switch file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Reading, rewriting or removing a switch file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The content is not what the switch takes.
    #[error("{}: {why}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn read(path: &Path) -> Result<Option<String>, FaultError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FaultError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FaultError + '_ {
    move |source| FaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Faults {
    /// Reads the switches under `data_dir` and consumes what fires now (counted
    /// `fail-start`, `empty-pem`).
    pub fn take(data_dir: &Path) -> Result<Faults, FaultError> {
        let dir = data_dir.join(FAULTS_DIR);
        let mut faults = Faults::default();

        let fail = dir.join("fail-start");
        if let Some(text) = read(&fail)? {
            faults.fail_start = true;
            if !text.is_empty() {
                let n: u64 = text.parse().map_err(|_| FaultError::Bad {
                    path: fail.clone(),
                    why: format!("expected a count, found {text:?}"),
                })?;
                if n <= 1 {
                    std::fs::remove_file(&fail).map_err(io(&fail))?;
                } else {
                    std::fs::write(&fail, format!("{}\n", n - 1)).map_err(io(&fail))?;
                }
                faults.fail_start = n >= 1;
            }
        }

        let slow = dir.join("slow-start");
        if let Some(text) = read(&slow)? {
            let secs: f64 = text.parse().map_err(|_| FaultError::Bad {
                path: slow.clone(),
                why: format!("expected seconds, found {text:?}"),
            })?;
            if !(0.0..=3600.0).contains(&secs) {
                return Err(FaultError::Bad {
                    path: slow,
                    why: format!("{secs} s is outside 0..=3600"),
                });
            }
            faults.slow_start = Some(Duration::from_secs_f64(secs));
        }

        faults.never_ready = read(&dir.join("never-ready"))?.is_some();
        faults.no_registry = read(&dir.join("no-registry"))?.is_some();
        // Version-bound switches: a release that is broken, not a node.
        let running = || {
            let exe_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            super::version::SimVersion::resolve(exe_dir.as_deref()).version
        };
        if read(&dir.join("never-ready-version"))?.is_some_and(|v| v == running()) {
            faults.never_ready = true;
        }
        if read(&dir.join("fail-start-version"))?.is_some_and(|v| v == running()) {
            faults.fail_start = true;
        }

        let empty = dir.join("empty-pem");
        if let Some(text) = read(&empty)? {
            let rel = PathBuf::from(&text);
            if text.is_empty() || rel.is_absolute() || text.contains("..") {
                return Err(FaultError::Bad {
                    path: empty,
                    why: format!("expected a path relative to the data dir, found {text:?}"),
                });
            }
            std::fs::remove_file(&empty).map_err(io(&empty))?;
            faults.empty_pem = Some(rel);
        }
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("test input is valid");
        std::fs::create_dir_all(d.path().join(FAULTS_DIR)).expect("test input is valid");
        d
    }

    fn put(d: &tempfile::TempDir, name: &str, text: &str) {
        std::fs::write(d.path().join(FAULTS_DIR).join(name), text).expect("test input is valid");
    }

    #[test]
    fn nothing_set_means_no_faults() {
        let d = tempfile::tempdir().expect("test input is valid");
        assert_eq!(
            Faults::take(d.path()).expect("test input is valid"),
            Faults::default()
        );
    }

    #[test]
    fn counted_fail_start_counts_down_and_disappears() {
        let d = dir();
        put(&d, "fail-start", "2\n");
        assert!(
            Faults::take(d.path())
                .expect("test input is valid")
                .fail_start
        );
        assert!(
            Faults::take(d.path())
                .expect("test input is valid")
                .fail_start
        );
        assert!(
            !Faults::take(d.path())
                .expect("test input is valid")
                .fail_start
        );
    }

    #[test]
    fn empty_fail_start_and_slow_start_persist() {
        let d = dir();
        put(&d, "fail-start", "");
        put(&d, "slow-start", "1.5");
        put(&d, "never-ready", "");
        for _ in 0..2 {
            let f = Faults::take(d.path()).expect("test input is valid");
            assert!(f.fail_start && f.never_ready);
            assert_eq!(f.slow_start, Some(Duration::from_millis(1500)));
        }
    }

    #[test]
    fn empty_pem_is_consumed_and_must_be_relative() {
        let d = dir();
        put(&d, "empty-pem", "server/tls/serving-kube-apiserver.crt\n");
        assert_eq!(
            Faults::take(d.path())
                .expect("test input is valid")
                .empty_pem
                .as_deref(),
            Some(Path::new("server/tls/serving-kube-apiserver.crt"))
        );
        assert_eq!(
            Faults::take(d.path())
                .expect("test input is valid")
                .empty_pem,
            None
        );
        put(&d, "empty-pem", "/etc/passwd");
        assert!(Faults::take(d.path()).is_err());
    }
}
