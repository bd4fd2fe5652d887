//! Where an operation keeps its files: one folder per operation under the journal, named by
//! its id. Every folder the agent creates or removes for an operation is resolved here and
//! checked to stay under the journal, so an id from a hostile hub (`..`, an absolute path)
//! can never point a `remove_dir_all` at RKE2's data dir.

use std::path::{Component, Path, PathBuf};

/// A path that would leave the folder it must stay in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The operation id is not a plain id.
    #[error(transparent)]
    BadId(#[from] rke2ops_common::ids::IdError),
    /// A path outside `base`.
    #[error("{path} is not inside {base}: refusing to create or remove it")]
    Outside {
        /// The offending path.
        path: String,
        /// Where it must be.
        base: String,
    },
}

/// The folder of operation `id` under `journal_dir`.
///
/// # Errors
/// [`PathError::BadId`] when `id` is not `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn op_dir(journal_dir: &Path, id: &str) -> Result<PathBuf, PathError> {
    rke2ops_common::ids::check_operation_id(id)?;
    let dir = journal_dir.join(id);
    ensure_within(journal_dir, &dir)?;
    Ok(dir)
}

/// Checks, without touching the file system, that `path` lies strictly below `base`: it
/// starts with `base` and the rest holds only ordinary components (no `..`, `.`, or root).
///
/// # Errors
/// [`PathError::Outside`].
pub fn ensure_within(base: &Path, path: &Path) -> Result<(), PathError> {
    let outside = || PathError::Outside {
        path: path.display().to_string(),
        base: base.display().to_string(),
    };
    let rest = path.strip_prefix(base).map_err(|_| outside())?;
    let mut components = rest.components().peekable();
    if components.peek().is_none() {
        return Err(outside());
    }
    if components.all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(outside())
    }
}

/// `remove_dir_all(path)` once [`ensure_within`] holds; a missing folder is not an error.
///
/// # Errors
/// [`PathError::Outside`] (nothing removed), or the I/O error.
pub fn remove_tree_within(base: &Path, path: &Path) -> std::io::Result<()> {
    ensure_within(base, path).map_err(std::io::Error::other)?;
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_never_name_a_folder_outside_the_journal() {
        let journal = Path::new("/var/lib/rke2-ops/ops");
        assert_eq!(
            op_dir(journal, "plan1-server-1-1"),
            Ok(journal.join("plan1-server-1-1"))
        );
        for bad in ["/var/lib/rancher/rke2", ".", "..", "../x", "a/../../b", ""] {
            assert!(op_dir(journal, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_paths_strictly_below_the_base_are_within() {
        let base = Path::new("/s/ops");
        assert!(ensure_within(base, Path::new("/s/ops/a/staged")).is_ok());
        for bad in [
            "/s/ops",
            "/s/ops/..",
            "/s/ops/a/../../x",
            "/s/opsx/a",
            "/var/lib/rancher/rke2",
            "relative",
        ] {
            assert!(ensure_within(base, Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn removal_outside_the_base_touches_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("ops");
        let victim = dir.path().join("data");
        std::fs::create_dir_all(&base).expect("mkdir");
        std::fs::create_dir_all(&victim).expect("mkdir");
        let err = remove_tree_within(&base, &base.join("../data")).expect_err("refused");
        assert!(err.to_string().contains("not inside"), "{err}");
        assert!(victim.is_dir());
        std::fs::create_dir_all(base.join("op/staged")).expect("mkdir");
        remove_tree_within(&base, &base.join("op/staged")).expect("removed");
        assert!(!base.join("op/staged").exists());
        remove_tree_within(&base, &base.join("op/staged")).expect("missing is fine");
    }
}
