//! Which folders to watch, and the inotify glue.
//!
//! Only RKE2's certificate folders are watched, each non-recursively: the data dir also holds
//! containerd's huge trees, and a recursive watch would cost thousands of inotify watches.
//! A folder that does not exist yet is covered by watching its nearest existing ancestor, so
//! folders created later and a tree deleted and recreated are noticed; after every batch of
//! events the watch set is reconciled (a recreated folder has a new inode and is re-watched).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::Config;
use rke2ops_common::layout::{BACKUP_PARENTS, CERT_DIRS};

/// Quiet time that ends a batch of events (rotations touch dozens of files at once).
const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// Longest batch: a steady trickle of events must not starve the rescan.
const DEBOUNCE_MAX: Duration = Duration::from_millis(1000);

/// The folders whose changes matter for `config`.
#[must_use]
pub fn targets(config: &Config) -> Vec<PathBuf> {
    let mut targets = vec![config.data_dir.clone()];
    targets.extend(
        CERT_DIRS
            .iter()
            .chain(BACKUP_PARENTS.iter())
            .map(|d| config.data_dir.join(d)),
    );
    targets.extend(
        // config.yaml too: its `tls-san` and `node-ip` feed the doctor's SAN check.
        std::iter::once(&config.admin_kubeconfig)
            .chain(std::iter::once(&config.node_config))
            .chain(config.kubeconfigs.iter())
            .filter_map(|k| k.parent().map(Path::to_path_buf)),
    );
    targets.sort();
    targets.dedup();
    targets
}

/// For each target: itself if it exists, else its nearest existing ancestor; with the inode
/// each was seen with. `inode_of` returns `None` for a path that does not exist (pure
/// decision; the caller passes the file system).
#[must_use]
pub fn desired_watches(
    targets: &[PathBuf],
    inode_of: impl Fn(&Path) -> Option<u64>,
) -> BTreeMap<PathBuf, u64> {
    let mut watches = BTreeMap::new();
    for target in targets {
        let mut candidate = Some(target.as_path());
        while let Some(path) = candidate {
            if let Some(inode) = inode_of(path) {
                watches.insert(path.to_path_buf(), inode);
                break;
            }
            candidate = path.parent();
        }
    }
    watches
}

fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| m.ino())
}

/// The live watcher: notify's inotify watcher plus the current watch set.
pub struct FileWatcher {
    watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    targets: Vec<PathBuf>,
    watched: BTreeMap<PathBuf, u64>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Starts watching `targets`.
    ///
    /// # Errors
    /// When inotify cannot be initialised.
    pub fn new(targets: Vec<PathBuf>) -> notify::Result<Self> {
        // Capacity 1 + try_send: events only say "something changed", so they coalesce.
        let (tx, events) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => !matches!(e.kind, EventKind::Access(_)),
                Err(_) => true, // e.g. queue overflow: rescan to be safe
            };
            if relevant {
                let _ = tx.try_send(());
            }
        })?;
        let mut this = Self {
            watcher,
            events,
            targets,
            watched: BTreeMap::new(),
        };
        this.reconcile();
        Ok(this)
    }

    /// The folders watched now.
    #[must_use]
    pub fn watched(&self) -> &BTreeMap<PathBuf, u64> {
        &self.watched
    }

    /// Brings the watch set in line with the file system. Returns whether it changed.
    ///
    /// Every desired folder is watched again even when its path and inode are unchanged: a
    /// folder deleted and recreated at once often gets its old inode number back, while the
    /// kernel dropped the old watch with the old folder, and a set that merely looks the same
    /// would then never hear from the new folder (re-adding a live watch is a no-op). A folder
    /// that vanishes between the look and the watch is replaced by its nearest ancestor that
    /// can be watched, so some watch always sees it come back.
    pub fn reconcile(&mut self) -> bool {
        let desired = desired_watches(&self.targets, inode_of);
        for (path, inode) in &self.watched {
            if desired.get(path) != Some(inode) {
                // The folder may be gone already, which removed the watch by itself.
                let _ = self.watcher.unwatch(path);
            }
        }
        let mut actual = BTreeMap::new();
        for (path, inode) in desired {
            if self
                .watcher
                .watch(&path, RecursiveMode::NonRecursive)
                .is_ok()
            {
                actual.insert(path, inode);
                continue;
            }
            let fallback = path.ancestors().skip(1).find_map(|parent| {
                let inode = inode_of(parent)?;
                self.watcher
                    .watch(parent, RecursiveMode::NonRecursive)
                    .ok()
                    .map(|()| (parent.to_path_buf(), inode))
            });
            match fallback {
                Some((parent, inode)) => {
                    tracing::debug!(path = %path.display(), watching = %parent.display(), "folder vanished while being watched; watching its ancestor");
                    actual.insert(parent, inode);
                }
                None => {
                    tracing::warn!(path = %path.display(), "cannot watch folder; will retry on the next event");
                }
            }
        }
        let changed = actual != self.watched;
        self.watched = actual;
        if changed {
            tracing::debug!(watched = ?self.watched.keys().collect::<Vec<_>>(), "watch set updated");
        }
        changed
    }

    /// Waits for the next batch of changes (debounced). `None` if the watcher died.
    pub async fn next_batch(&mut self) -> Option<()> {
        self.events.recv().await?;
        let started = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout(DEBOUNCE_QUIET, self.events.recv()).await {
                Err(_) => return Some(()), // quiet: batch complete
                Ok(None) => return None,
                Ok(Some(())) if started.elapsed() >= DEBOUNCE_MAX => return Some(()),
                Ok(Some(())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs<'a>(existing: &'a [&'a str]) -> impl Fn(&Path) -> Option<u64> + 'a {
        move |p: &Path| {
            existing
                .iter()
                .position(|e| Path::new(e) == p)
                .map(|i| i as u64 + 1)
        }
    }

    #[test]
    fn existing_targets_are_watched_themselves() {
        let targets = vec![PathBuf::from("/d"), PathBuf::from("/d/server/tls")];
        let w = desired_watches(&targets, fs(&["/", "/d", "/d/server", "/d/server/tls"]));
        assert_eq!(
            w.keys().collect::<Vec<_>>(),
            vec![Path::new("/d"), Path::new("/d/server/tls")]
        );
    }

    #[test]
    fn missing_targets_fall_back_to_nearest_existing_ancestor() {
        let targets = vec![
            PathBuf::from("/d/server/tls/etcd"),
            PathBuf::from("/d/agent"),
        ];
        let w = desired_watches(&targets, fs(&["/", "/d"]));
        assert_eq!(w.keys().collect::<Vec<_>>(), vec![Path::new("/d")]);
    }

    #[test]
    fn deleted_tree_falls_back_to_root_side() {
        let targets = vec![PathBuf::from("/var/lib/rancher/rke2/server/tls")];
        let w = desired_watches(&targets, fs(&["/", "/var", "/var/lib"]));
        assert_eq!(w.keys().collect::<Vec<_>>(), vec![Path::new("/var/lib")]);
    }

    #[test]
    fn recreated_folder_has_a_new_inode() {
        let targets = vec![PathBuf::from("/d")];
        let before = desired_watches(&targets, |_| Some(1));
        let after = desired_watches(&targets, |_| Some(2));
        assert_ne!(before, after);
    }
}
