//! Replacing a file as root without a torn write, a followed link or a changed owner.
//!
//! Every file the agent (and the hub) writes over an existing one goes through [`NewFile`]:
//! a temporary file beside the target, created with `O_CREAT|O_EXCL|O_NOFOLLOW` (so a link
//! or file someone planted at the temporary name is never written through), filled, given
//! its final owner and mode on the open descriptor (`fchown`, then `fchmod`: a `chown` clears
//! set-id bits), fsynced, renamed over the target, and the folder fsynced. A reader sees the
//! old content or the new, never a part; a crash leaves at most a stale temporary file, which
//! the next write of the same target removes (unlinking never follows a link).
//!
//! Which mode and owner the new file gets is a [`Policy`], decided by [`final_attrs`] (pure):
//! most files keep the mode and owner of the file they replace (a kubeconfig copy stays 0600
//! and its user's; a restored certificate keeps its owner), secrets are always 0600, and a
//! release's files get exactly the mode the release gives them (masked by the installer).
//!
//! This module must not decide *what* is written or where: callers own their paths.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A file-system call on one path failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    /// The file or folder.
    pub path: PathBuf,
    /// What was being done (`read`, `create`, `rename into place`, ...).
    pub action: &'static str,
    /// The OS error.
    pub source: io::Error,
}

/// Builds a `map_err` closure naming `action` on `path`.
pub fn file_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError {
        path,
        action,
        source,
    }
}

/// A file's permission bits and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// `(uid, gid)`; `None`: whoever writes (the agent: root).
    pub owner: Option<(u32, u32)>,
}

impl Attrs {
    /// `mode`, owned by the writer.
    #[must_use]
    pub const fn mode(mode: u32) -> Self {
        Self { mode, owner: None }
    }

    /// The mode and owner of an existing file.
    #[must_use]
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            mode: meta.mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }
}

/// Which mode and owner a replacement gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The replaced file's mode and owner when a regular file is replaced; these for a new
    /// file (or when a link or something else is replaced: its own bits mean nothing here).
    KeepExisting(Attrs),
    /// Always these, whatever was there: secrets that must be 0600 even if an old file was
    /// looser, and a release's files, whose modes come from the release.
    Exactly(Attrs),
}

/// Pure: the mode and owner the new file gets under `policy`, given what it replaces
/// (`None` when nothing, or no regular file, is there).
#[must_use]
pub fn final_attrs(policy: Policy, replaced: Option<Attrs>) -> Attrs {
    let attrs = match (policy, replaced) {
        (Policy::KeepExisting(_), Some(existing)) => existing,
        (Policy::KeepExisting(attrs) | Policy::Exactly(attrs), _) => attrs,
    };
    Attrs {
        mode: attrs.mode & 0o7777,
        ..attrs
    }
}

/// Infix of the temporary file (`.<name>.rke2ops-tmp.<pid>`) beside the target.
const TMP_INFIX: &str = ".rke2ops-tmp.";

/// The temporary name this process uses for `target`: hidden, in the same folder (so the
/// rename is atomic), with the pid so that two processes replacing the same file never
/// share it. One writer per target within a process (the journal's lock, the installer's
/// single thread): a second concurrent writer would remove the first one's file.
#[must_use]
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    parent_of(target).join(format!(".{name}{TMP_INFIX}{}", std::process::id()))
}

/// A replacement being written: the temporary file, open for writing. [`NewFile::commit`]
/// puts it in place; dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct NewFile {
    /// The open temporary file (mode 0600 until committed).
    file: File,
    /// Its path.
    tmp: PathBuf,
    /// What it replaces.
    target: PathBuf,
    /// Mode and owner it gets at commit.
    attrs: Attrs,
    /// Set once renamed, so `Drop` leaves the target alone.
    committed: bool,
}

impl NewFile {
    /// Starts replacing `target` (its folder must exist). The mode and owner are decided now,
    /// from what `target` is at this moment.
    ///
    /// # Errors
    /// [`FileError`] naming the temporary file (also when something appeared at its name
    /// between the removal of a stale one and the creation: it is not followed).
    pub fn create(target: &Path, policy: Policy) -> Result<Self, FileError> {
        let replaced = match fs::symlink_metadata(target) {
            Ok(meta) if meta.file_type().is_file() => Some(Attrs::of(&meta)),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(file_error("inspect", target)(e)),
        };
        let attrs = final_attrs(policy, replaced);
        let tmp = temp_path_for(target);
        // Left by a crash, or planted: unlinking removes a link itself, never its target.
        remove_if_present(&tmp)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_error("create", &tmp))?;
        Ok(Self {
            file,
            tmp,
            target: target.to_path_buf(),
            attrs,
            committed: false,
        })
    }

    /// The temporary file, to write the content into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temporary file's path (for error messages).
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Gives the file its owner and mode, fsyncs it, renames it over the target and fsyncs
    /// the folder.
    ///
    /// # Errors
    /// [`FileError`] naming the file; the temporary file is removed.
    pub fn commit(mut self) -> Result<(), FileError> {
        if let Some((uid, gid)) = self.attrs.owner {
            let meta = self
                .file
                .metadata()
                .map_err(file_error("inspect", &self.tmp))?;
            // Only when it differs: an unprivileged writer (tests, a hub under DynamicUser)
            // may not chown, even to itself with another group.
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
                    .map_err(file_error("set the owner of", &self.tmp))?;
            }
        }
        self.file
            .set_permissions(fs::Permissions::from_mode(self.attrs.mode))
            .map_err(file_error("set the mode of", &self.tmp))?;
        self.file
            .sync_all()
            .map_err(file_error("fsync", &self.tmp))?;
        fs::rename(&self.tmp, &self.target)
            .map_err(file_error("rename into place", &self.target))?;
        self.committed = true;
        sync_dir(parent_of(&self.target))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the write already failed, and that error is the one reported.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `target` with `bytes` (see the module docs).
///
/// # Errors
/// [`FileError`] naming the file that failed.
pub fn replace_file(target: &Path, bytes: &[u8], policy: Policy) -> Result<(), FileError> {
    let mut new = NewFile::create(target, policy)?;
    let tmp = new.temp_path().to_path_buf();
    new.file()
        .write_all(bytes)
        .map_err(file_error("write", &tmp))?;
    new.commit()
}

/// Replaces `target` with a copy of `source`'s content.
///
/// # Errors
/// [`FileError`] naming the file that failed.
pub fn replace_with_copy(source: &Path, target: &Path, policy: Policy) -> Result<(), FileError> {
    let mut input = File::open(source).map_err(file_error("read", source))?;
    let mut new = NewFile::create(target, policy)?;
    let tmp = new.temp_path().to_path_buf();
    io::copy(&mut input, new.file()).map_err(file_error("write", &tmp))?;
    new.commit()
}

/// `path`'s folder (`.` for a bare name).
#[must_use]
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Removes `path` (a file or link, never followed); nothing there is fine.
///
/// # Errors
/// [`FileError`] naming the path.
pub fn remove_if_present(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_error("remove", path)(e)),
    }
}

/// fsyncs a folder, so a rename or removal in it survives a crash.
///
/// # Errors
/// [`FileError`] naming the folder.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error("fsync folder", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;

    fn attrs(path: &Path) -> Attrs {
        Attrs::of(&fs::metadata(path).unwrap())
    }

    fn is_root() -> bool {
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn policy_keeps_a_replaced_files_mode_and_owner_or_imposes_exactly() {
        let existing = Attrs {
            mode: 0o640,
            owner: Some((1234, 5678)),
        };
        let default = Attrs::mode(0o600);
        assert_eq!(
            final_attrs(Policy::KeepExisting(default), Some(existing)),
            existing
        );
        assert_eq!(final_attrs(Policy::KeepExisting(default), None), default);
        assert_eq!(
            final_attrs(Policy::Exactly(default), Some(existing)),
            default
        );
        assert_eq!(
            final_attrs(Policy::Exactly(Attrs::mode(0o100_755)), None).mode,
            0o755,
            "file-type bits never reach fchmod"
        );
    }

    #[test]
    fn replacing_keeps_the_mode_and_owner_of_the_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let owner = if is_root() {
            std::os::unix::fs::chown(&path, Some(1234), Some(1234)).unwrap();
            (1234, 1234)
        } else {
            eprintln!("not root: the owner is checked to stay the writer's");
            attrs(&path).owner.unwrap()
        };
        replace_file(&path, b"new", Policy::KeepExisting(Attrs::mode(0o600))).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            attrs(&path),
            Attrs {
                mode: 0o640,
                owner: Some(owner)
            }
        );
        assert!(!temp_path_for(&path).exists(), "no temporary file left");
    }

    #[test]
    fn a_new_file_gets_the_policys_mode_and_exactly_tightens_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        replace_file(&path, b"{}", Policy::KeepExisting(Attrs::mode(0o600))).unwrap();
        assert_eq!(attrs(&path).mode, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        replace_file(&path, b"{}", Policy::Exactly(Attrs::mode(0o600))).unwrap();
        assert_eq!(attrs(&path).mode, 0o600);
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("etc-shadow");
        fs::write(&victim, "untouched").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("current.json");
        fs::write(&path, "old").unwrap();
        std::os::unix::fs::symlink(&victim, temp_path_for(&path)).unwrap();
        replace_file(&path, b"new", Policy::KeepExisting(Attrs::mode(0o600))).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(attrs(&victim).mode, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn the_temporary_file_refuses_an_existing_name_and_a_link() {
        // What `create_new` + `O_NOFOLLOW` guarantee when a name appears after the stale
        // one was removed (the race the removal alone cannot close).
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o600)
                .open(p)
        };
        assert!(open(&link).is_err());
        assert!(open(&victim).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, "old").unwrap();
        let new = NewFile::create(&path, Policy::Exactly(Attrs::mode(0o600))).unwrap();
        let tmp = new.temp_path().to_path_buf();
        assert!(tmp.exists());
        drop(new);
        assert!(!tmp.exists());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    }
}
