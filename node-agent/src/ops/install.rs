//! Installing an RKE2 tarball into the prefix without ever leaving a half-written file, and
//! putting the previous files back.
//!
//! Three folders under the operation's folder, each finished with a `.complete` marker so a
//! re-run after a crash knows whether to redo it:
//! - `staged/`: the tarball extracted (regular files and folders only; absolute paths, `..`
//!   and links are refused);
//! - `previous/`: a copy of every file the release replaces, taken once, *before* the first
//!   file is replaced (so a re-run never copies a new file as "previous"), plus `.existed`
//!   listing which files existed at all (the others are removed on restore);
//! - then each file goes to `<prefix>/<path>` through a temporary file in the same folder,
//!   fsynced and renamed over the old one (a running `rke2` keeps its old inode).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

/// Why installing or restoring failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// File I/O failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The tarball holds something that must not be installed.
    #[error("tarball entry {entry:?} refused: {why}")]
    BadEntry {
        /// The entry's path.
        entry: String,
        /// Why.
        why: &'static str,
    },
    /// The tarball holds no `bin/rke2`.
    #[error("the tarball has no bin/rke2")]
    NoBinary,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const COMPLETE: &str = ".complete";
const EXISTED: &str = ".existed";

/// A tarball entry's path, relative and clean (`./bin/rke2` → `bin/rke2`), or why not.
///
/// # Errors
/// [`InstallError::BadEntry`] for absolute paths and `..`.
pub fn clean_entry(raw: &Path) -> Result<PathBuf, InstallError> {
    let mut clean = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(p) => clean.push(p),
            Component::ParentDir => {
                return Err(InstallError::BadEntry {
                    entry: raw.display().to_string(),
                    why: "contains ..",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(InstallError::BadEntry {
                    entry: raw.display().to_string(),
                    why: "absolute path",
                });
            }
        }
    }
    Ok(clean)
}

/// Extracts `tarball` into `staged` (once: kept when already complete); returns the regular
/// files' relative paths, sorted.
///
/// # Errors
/// On I/O failure or a refused entry.
pub fn stage(tarball: &Path, staged: &Path) -> Result<Vec<String>, InstallError> {
    if !staged.join(COMPLETE).is_file() {
        if staged.exists() {
            fs::remove_dir_all(staged).map_err(io(staged))?;
        }
        fs::create_dir_all(staged).map_err(io(staged))?;
        let file = File::open(tarball).map_err(io(tarball))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().map_err(io(tarball))? {
            let mut entry = entry.map_err(io(tarball))?;
            let raw = entry.path().map_err(io(tarball))?.into_owned();
            let rel = clean_entry(&raw)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let target = staged.join(&rel);
            match entry.header().entry_type() {
                tar::EntryType::Directory => fs::create_dir_all(&target).map_err(io(&target))?,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                    let mut out = File::create(&target).map_err(io(&target))?;
                    std::io::copy(&mut entry, &mut out).map_err(io(&target))?;
                    out.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(io(&target))?;
                }
                _ => {
                    return Err(InstallError::BadEntry {
                        entry: raw.display().to_string(),
                        why: "not a regular file or folder",
                    });
                }
            }
        }
        write_marker(staged, COMPLETE, "")?;
    }
    let mut files = Vec::new();
    walk(staged, staged, &mut files)?;
    files.sort();
    if !files.iter().any(|f| f == "bin/rke2") {
        return Err(InstallError::NoBinary);
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), InstallError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
            && !(dir == root && rel.to_string_lossy().starts_with('.'))
        {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn write_marker(dir: &Path, name: &str, text: &str) -> Result<(), InstallError> {
    let path = dir.join(name);
    let mut file = File::create(&path).map_err(io(&path))?;
    file.write_all(text.as_bytes()).map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Copies the files of `prefix` that `files` would replace into `previous` (once); returns how
/// many existed.
///
/// # Errors
/// On I/O failure.
pub fn keep_previous(
    prefix: &Path,
    files: &[String],
    previous: &Path,
) -> Result<usize, InstallError> {
    if previous.join(COMPLETE).is_file() {
        return Ok(existed(previous)?.len());
    }
    if previous.exists() {
        fs::remove_dir_all(previous).map_err(io(previous))?;
    }
    fs::create_dir_all(previous).map_err(io(previous))?;
    let mut found = Vec::new();
    for rel in files {
        let source = prefix.join(rel);
        if source.is_file() {
            copy_synced(&source, &previous.join(rel))?;
            found.push(rel.clone());
        }
    }
    write_marker(previous, EXISTED, &found.join("\n"))?;
    write_marker(previous, COMPLETE, "")?;
    Ok(found.len())
}

fn existed(previous: &Path) -> Result<Vec<String>, InstallError> {
    let path = previous.join(EXISTED);
    Ok(fs::read_to_string(&path)
        .map_err(io(&path))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn copy_synced(source: &Path, target: &Path) -> Result<(), InstallError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    fs::copy(source, target).map_err(io(source))?;
    File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(io(target))
}

/// Writes `source`'s bytes and mode to `target` atomically (temp file in the same folder,
/// fsync, rename, fsync folder).
fn replace_atomically(source: &Path, target: &Path) -> Result<(), InstallError> {
    let parent = target.parent().unwrap_or_else(|| Path::new("/"));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = parent.join(format!(".{name}.rke2ops-new"));
    let mode = fs::metadata(source)
        .map_err(io(source))?
        .permissions()
        .mode()
        & 0o7777;
    {
        let mut input = File::open(source).map_err(io(source))?;
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        std::io::copy(&mut input, &mut out).map_err(io(&tmp))?;
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        out.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, target).map_err(io(target))?;
    sync_dir(parent)
}

/// Installs every staged file into `prefix`.
///
/// # Errors
/// On I/O failure (files installed so far stay; the caller restores `previous`).
pub fn install(staged: &Path, prefix: &Path, files: &[String]) -> Result<(), InstallError> {
    for rel in files {
        replace_atomically(&staged.join(rel), &prefix.join(rel))?;
    }
    Ok(())
}

/// Puts `previous` back: files that existed are restored, the release's new files removed.
/// Returns how many were restored.
///
/// # Errors
/// On I/O failure.
pub fn restore(previous: &Path, prefix: &Path, files: &[String]) -> Result<usize, InstallError> {
    let existed = existed(previous)?;
    for rel in files {
        let target = prefix.join(rel);
        if existed.contains(rel) {
            replace_atomically(&previous.join(rel), &target)?;
        } else {
            match fs::remove_file(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(InstallError::Io {
                        path: target,
                        source: e,
                    });
                }
            }
        }
    }
    Ok(existed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("rke2.linux-amd64.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).expect("create"),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, *bytes).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gz");
        path
    }

    #[test]
    fn entries_are_made_relative_and_escapes_refused() {
        assert_eq!(
            clean_entry(Path::new("./bin/rke2")).expect("ok"),
            PathBuf::from("bin/rke2")
        );
        assert!(clean_entry(Path::new("/etc/passwd")).is_err());
        assert!(clean_entry(Path::new("bin/../../etc/passwd")).is_err());
    }

    #[test]
    fn install_keeps_the_previous_files_and_restore_puts_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("usr-local");
        fs::create_dir_all(prefix.join("bin")).expect("mkdir");
        fs::write(prefix.join("bin/rke2"), b"old").expect("write");
        let tar = tarball(
            dir.path(),
            &[("./bin/rke2", b"new"), ("share/rke2/LICENSE.txt", b"L")],
        );
        let staged = dir.path().join("op/staged");
        let previous = dir.path().join("op/previous");
        let files = stage(&tar, &staged).expect("stage");
        assert_eq!(files, vec!["bin/rke2", "share/rke2/LICENSE.txt"]);
        assert_eq!(keep_previous(&prefix, &files, &previous).expect("keep"), 1);
        install(&staged, &prefix, &files).expect("install");
        assert_eq!(fs::read(prefix.join("bin/rke2")).expect("read"), b"new");
        let mode = fs::metadata(prefix.join("bin/rke2"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // A re-run (after a crash) must not take the new files as "previous".
        assert_eq!(keep_previous(&prefix, &files, &previous).expect("keep"), 1);
        assert_eq!(fs::read(previous.join("bin/rke2")).expect("read"), b"old");
        assert_eq!(restore(&previous, &prefix, &files).expect("restore"), 1);
        assert_eq!(fs::read(prefix.join("bin/rke2")).expect("read"), b"old");
        assert!(
            !prefix.join("share/rke2/LICENSE.txt").exists(),
            "new file removed"
        );
    }

    #[test]
    fn a_tarball_without_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = tarball(dir.path(), &[("share/rke2/LICENSE.txt", b"L")]);
        assert!(matches!(
            stage(&tar, &dir.path().join("staged")),
            Err(InstallError::NoBinary)
        ));
    }
}
