//! Installing an RKE2 tarball into the prefix without ever leaving a half-written file, and
//! putting the previous files back.
//!
//! Three folders under the operation's folder, each finished with a `.complete` marker so a
//! re-run after a crash knows whether to redo it:
//! - `staged/`: the tarball extracted (regular files and folders only; absolute paths, `..`,
//!   links, devices and duplicate entries are refused; at most [`MAX_TAR_ENTRIES`] entries and
//!   [`MAX_UNPACKED_BYTES`] of files; modes masked by [`installed_mode`]: no set-id or sticky
//!   bit, no group or world write);
//! - `previous/`: a copy of every file the release replaces, taken once, *before* the first
//!   file is replaced (so a re-run never copies a new file as "previous"), plus `.existed`
//!   listing which files existed at all (the others are removed on restore);
//! - then each file goes to `<prefix>/<path>` through a temporary file in the same folder,
//!   fsynced and renamed over the old one (a running `rke2` keeps its old inode), with
//!   [`rke2ops_common::atomic_file`]: never through a planted link, owned by root.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use rke2ops_common::atomic_file::{self, Attrs, Policy};

/// Entries (files and folders) a release tarball may hold. RKE2's holds about fifteen; ten
/// thousand is far beyond any release and bounds the inodes and the time a hostile or broken
/// tarball can cost before it is refused.
pub const MAX_TAR_ENTRIES: u64 = 10_000;
/// Bytes the regular files of a release tarball may unpack to. RKE2's linux-amd64 release
/// unpacks to about 120 MB (nearly all of it the `rke2` binary); 1 GiB leaves room for growth
/// and still bounds what staging (and the `previous/` copy) can take from `/var`, which etcd
/// shares.
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;
/// Bytes the decompressed stream may hold beyond the files: headers, padding (under 1 KiB an
/// entry) and long-name records. Bounds a gzip bomb hidden where no file size counts it.
const MAX_TAR_OVERHEAD_BYTES: u64 = 64 << 20;
/// Bytes one metadata record (a GNU long name or link, a pax header) may have. The tar
/// reader holds each in memory whole; a path is at most 4 KiB on Linux, so 64 KiB is plenty
/// and keeps a hostile record from taking the memory the stream limit would allow.
pub const MAX_TAR_RECORD_BYTES: u64 = 64 << 10;

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
    /// The tarball is over one of the limits for a release.
    #[error(
        "{}: refused: {what} over the limit of {limit} for a release tarball (reached {value})",
        tarball.display()
    )]
    OverLimit {
        /// The tarball.
        tarball: PathBuf,
        /// What is counted (`entries`, `unpacked bytes`, `decompressed bytes`).
        what: &'static str,
        /// The limit.
        limit: u64,
        /// How far it got when refused.
        value: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const COMPLETE: &str = ".complete";
const EXISTED: &str = ".existed";
const RELOCATED: &str = ".relocated";

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

/// The mode a release file is staged and installed with: the tarball's permission bits
/// without set-user-id, set-group-id or sticky bits and without group or world write. The
/// execute bits are kept (the binary and scripts must run). A release never needs more, and
/// a tampered or mirrored tarball must not plant a setuid binary or a file anyone can change.
#[must_use]
pub const fn installed_mode(tar_mode: u32) -> u32 {
    tar_mode & 0o755
}

/// What a tarball has used of the limits so far (pure bookkeeping, checked per entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarBudget {
    /// Entries seen.
    pub entries: u64,
    /// Bytes of regular files admitted.
    pub unpacked: u64,
}

impl TarBudget {
    /// Admits one more entry of `size` bytes (0 for a folder), or says which limit it breaks.
    ///
    /// # Errors
    /// `(what, limit, value)` of the limit broken; nothing is counted then.
    pub fn admit(&mut self, size: u64) -> Result<(), (&'static str, u64, u64)> {
        let entries = self.entries + 1;
        if entries > MAX_TAR_ENTRIES {
            return Err(("entries", MAX_TAR_ENTRIES, entries));
        }
        let unpacked = self.unpacked.saturating_add(size);
        if unpacked > MAX_UNPACKED_BYTES {
            return Err(("unpacked bytes", MAX_UNPACKED_BYTES, unpacked));
        }
        *self = Self { entries, unpacked };
        Ok(())
    }
}

/// A reader that fails (rather than ending) once more than `limit` bytes were read, so a
/// truncated read is never mistaken for the end of the archive.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

/// The error a [`Capped`] reader returns.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} bytes")]
struct CapReached(u64);

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                CapReached(self.read),
            ));
        }
        Ok(n)
    }
}

/// Extracts `tarball` into `staged` (once: kept when already complete); returns the regular
/// files' relative paths, sorted.
///
/// # Errors
/// On I/O failure, a refused entry, or a tarball over a limit ([`InstallError::OverLimit`]).
pub fn stage(tarball: &Path, staged: &Path) -> Result<Vec<String>, InstallError> {
    if !staged.join(COMPLETE).is_file() {
        if staged.exists() {
            fs::remove_dir_all(staged).map_err(io(staged))?;
        }
        fs::create_dir_all(staged).map_err(io(staged))?;
        extract(tarball, staged)?;
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

/// The files of RKE2's tarball that name its default prefix (`/usr/local`): the units'
/// `ExecStart` and the uninstall script.
#[must_use]
pub fn names_prefix(file: &str) -> bool {
    (file.starts_with("lib/systemd/system/rke2-") && file.ends_with(".service"))
        || file == "bin/rke2-uninstall.sh"
}

/// Rewrites the default prefix `/usr/local` to `prefix` in `text` (what install.sh does for
/// `INSTALL_RKE2_TAR_PREFIX`). Pure.
#[must_use]
pub fn relocate_text(text: &str, prefix: &Path) -> String {
    text.replace("/usr/local", &prefix.display().to_string())
}

/// Points the staged units and uninstall script at `prefix` when it is not `/usr/local`, once
/// (a marker keeps a re-run from rewriting twice); returns how many files changed.
///
/// # Errors
/// On I/O failure.
pub fn relocate(staged: &Path, files: &[String], prefix: &Path) -> Result<usize, InstallError> {
    if prefix == Path::new("/usr/local") || staged.join(RELOCATED).is_file() {
        return Ok(0);
    }
    let mut changed = 0;
    for file in files.iter().filter(|f| names_prefix(f)) {
        let path = staged.join(file);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let relocated = relocate_text(&text, prefix);
        if relocated != text {
            fs::write(&path, relocated).map_err(io(&path))?;
            changed += 1;
        }
    }
    write_marker(staged, RELOCATED, &prefix.display().to_string())?;
    Ok(changed)
}

fn extract(tarball: &Path, staged: &Path) -> Result<(), InstallError> {
    let over = |(what, limit, value): (&'static str, u64, u64)| InstallError::OverLimit {
        tarball: tarball.to_path_buf(),
        what,
        limit,
        value,
    };
    let stream_limit = MAX_UNPACKED_BYTES + MAX_TAR_OVERHEAD_BYTES;
    // A read error carrying `CapReached` is the stream limit, not a broken file.
    let read_error = |e: std::io::Error| match e.get_ref().and_then(|r| r.downcast_ref()) {
        Some(CapReached(value)) => over(("decompressed bytes", stream_limit, *value)),
        None => io(tarball)(e),
    };
    let open = || -> Result<_, InstallError> {
        let file = File::open(tarball).map_err(io(tarball))?;
        Ok(tar::Archive::new(Capped {
            inner: flate2::read::GzDecoder::new(file),
            read: 0,
            limit: stream_limit,
        }))
    };
    // First pass, raw (nothing written, nothing held): the metadata records' sizes, before
    // the second pass's reader holds each whole, and the limits by the headers' sizes, so a
    // claimed size is refused before its data is skipped or read. The second pass counts
    // again with the sizes pax records may override.
    let mut archive = open()?;
    let mut budget = TarBudget::default();
    for entry in archive.entries().map_err(read_error)?.raw(true) {
        let entry = entry.map_err(read_error)?;
        let kind = entry.header().entry_type();
        let record = matches!(
            kind,
            tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
                | tar::EntryType::XHeader
                | tar::EntryType::XGlobalHeader
        );
        if record {
            if entry.size() > MAX_TAR_RECORD_BYTES {
                return Err(over((
                    "bytes in one long-name or pax record",
                    MAX_TAR_RECORD_BYTES,
                    entry.size(),
                )));
            }
        } else {
            let size = if kind.is_dir() { 0 } else { entry.size() };
            budget.admit(size).map_err(over)?;
        }
    }
    let mut archive = open()?;
    let mut budget = TarBudget::default();
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let raw = entry.path().map_err(io(tarball))?.into_owned();
        let refuse = |why| InstallError::BadEntry {
            entry: raw.display().to_string(),
            why,
        };
        let kind = entry.header().entry_type();
        let size = if kind.is_dir() { 0 } else { entry.size() };
        budget.admit(size).map_err(over)?;
        let rel = clean_entry(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = staged.join(&rel);
        match kind {
            tar::EntryType::Directory => fs::create_dir_all(&target).map_err(io(&target))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mode = installed_mode(entry.header().mode().unwrap_or(0o644));
                // A fresh file, never through whatever is at the name: a second entry of the
                // same path is refused rather than silently replacing the first.
                let mut out = match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                {
                    Ok(out) => out,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(refuse("appears twice"));
                    }
                    Err(e) => return Err(io(&target)(e)),
                };
                std::io::copy(&mut entry, &mut out).map_err(read_error)?;
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io(&target))?;
            }
            _ => return Err(refuse("not a regular file or folder")),
        }
    }
    Ok(())
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

/// The tarball prefix install.sh uses unless `/usr/local` is read-only.
pub const DEFAULT_PREFIX: &str = "/usr/local";
/// Where install.sh moves the units of a tarball installed anywhere else: systemd does not
/// read `<prefix>/lib/systemd/system` for other prefixes (`/opt/rke2` among them).
pub const MOVED_UNIT_DIR: &str = "/etc/systemd/system";

/// Where each file of a release goes on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The tarball prefix (`/usr/local`, `/opt/rke2`, ...).
    pub prefix: PathBuf,
    /// Where the `rke2-*.service` units go.
    pub units: PathBuf,
}

impl Layout {
    /// install.sh's layout for `prefix`: units beside the rest under `/usr/local`, else in
    /// `moved_units` ([`MOVED_UNIT_DIR`] on a node; the `.env` files stay in the prefix,
    /// where the units point).
    #[must_use]
    pub fn for_prefix(prefix: &Path, moved_units: &Path) -> Self {
        Self {
            prefix: prefix.to_path_buf(),
            units: if prefix == Path::new(DEFAULT_PREFIX) {
                prefix.join("lib/systemd/system")
            } else {
                moved_units.to_path_buf()
            },
        }
    }

    /// Where the release's file `rel` goes. Pure.
    #[must_use]
    pub fn target(&self, rel: &str) -> PathBuf {
        match rel.strip_prefix("lib/systemd/system/") {
            Some(name) if is_unit(rel) => self.units.join(name),
            _ => self.prefix.join(rel),
        }
    }
}

/// RKE2's two units, nothing else: the units folder outside the prefix is shared with every
/// other service, so a release may put only these there.
fn is_unit(rel: &str) -> bool {
    matches!(
        rel,
        "lib/systemd/system/rke2-server.service" | "lib/systemd/system/rke2-agent.service"
    )
}

/// The release's files the node's own copy wins over: the units' environment files
/// (`lib/systemd/system/rke2-*.env`, `HOME=/root` in the release), where operators put proxy
/// settings and other variables RKE2 must start with. An upgrade that replaced them would
/// start RKE2 without them. Pure.
#[must_use]
pub fn keeps_node_copy(rel: &str) -> bool {
    rel.starts_with("lib/systemd/system/") && rel.ends_with(".env")
}

/// Copies the files of the node that `files` would replace into `previous` (once); returns how
/// many existed.
///
/// # Errors
/// On I/O failure.
pub fn keep_previous(
    layout: &Layout,
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
        let source = layout.target(rel);
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

/// Writes `source`'s bytes and mode to `target` atomically (see
/// [`rke2ops_common::atomic_file`]). The mode is the staged one (masked when staged) or, on
/// restore, the previous file's; the owner is root: a release's files are root's, whoever
/// owned what they replace.
fn replace_atomically(source: &Path, target: &Path) -> Result<(), InstallError> {
    let parent = atomic_file::parent_of(target);
    fs::create_dir_all(parent).map_err(io(parent))?;
    let mode = fs::metadata(source)
        .map_err(io(source))?
        .permissions()
        .mode();
    atomic_file::replace_with_copy(source, target, Policy::Exactly(Attrs::mode(mode))).map_err(
        |e| InstallError::Io {
            path: e.path,
            source: e.source,
        },
    )
}

/// Installs every staged file where `layout` puts it, except the node's own environment
/// files ([`keeps_node_copy`]), which stay as they are; returns those kept.
///
/// # Errors
/// On I/O failure (files installed so far stay; the caller restores `previous`).
pub fn install(
    staged: &Path,
    layout: &Layout,
    files: &[String],
) -> Result<Vec<String>, InstallError> {
    let mut kept = Vec::new();
    for rel in files {
        let target = layout.target(rel);
        if keeps_node_copy(rel) && target.is_file() {
            kept.push(rel.clone());
            continue;
        }
        replace_atomically(&staged.join(rel), &target)?;
    }
    Ok(kept)
}

/// Puts `previous` back: files that existed are restored, the release's new files removed.
/// Returns how many were restored.
///
/// # Errors
/// On I/O failure.
pub fn restore(previous: &Path, layout: &Layout, files: &[String]) -> Result<usize, InstallError> {
    let existed = existed(previous)?;
    for rel in files {
        let target = layout.target(rel);
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
    fn a_prefix_other_than_usr_local_is_written_into_the_units_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staged = dir.path();
        let unit = "lib/systemd/system/rke2-server.service";
        std::fs::create_dir_all(staged.join("lib/systemd/system")).expect("mkdir");
        std::fs::write(
            staged.join(unit),
            "ExecStart=/usr/local/bin/rke2 server\nEnvironmentFile=-/usr/local/lib/systemd/system/rke2-server.env\n",
        )
        .expect("write");
        std::fs::write(
            staged.join("lib/systemd/system/rke2-server.env"),
            "HOME=/root\n",
        )
        .expect("write");
        let files = vec![
            unit.to_owned(),
            "lib/systemd/system/rke2-server.env".to_owned(),
        ];
        assert_eq!(
            relocate(staged, &files, Path::new("/usr/local")).expect("noop"),
            0
        );
        let prefix = Path::new("/opt/rke2");
        assert_eq!(relocate(staged, &files, prefix).expect("relocate"), 1);
        let text = std::fs::read_to_string(staged.join(unit)).expect("read");
        assert_eq!(
            text,
            "ExecStart=/opt/rke2/bin/rke2 server\nEnvironmentFile=-/opt/rke2/lib/systemd/system/rke2-server.env\n"
        );
        // A re-run (after a crash) changes nothing more.
        assert_eq!(
            relocate(staged, &files, Path::new("/usr/local/rke2")).expect("again"),
            0
        );
        assert!(!names_prefix("lib/systemd/system/rke2-server.env"));
        assert!(names_prefix("bin/rke2-uninstall.sh"));
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
        let layout = Layout::for_prefix(&prefix, &dir.path().join("etc-units"));
        assert_eq!(keep_previous(&layout, &files, &previous).expect("keep"), 1);
        install(&staged, &layout, &files).expect("install");
        assert_eq!(fs::read(prefix.join("bin/rke2")).expect("read"), b"new");
        let mode = fs::metadata(prefix.join("bin/rke2"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // A re-run (after a crash) must not take the new files as "previous".
        assert_eq!(keep_previous(&layout, &files, &previous).expect("keep"), 1);
        assert_eq!(fs::read(previous.join("bin/rke2")).expect("read"), b"old");
        assert_eq!(restore(&previous, &layout, &files).expect("restore"), 1);
        assert_eq!(fs::read(prefix.join("bin/rke2")).expect("read"), b"old");
        assert!(
            !prefix.join("share/rke2/LICENSE.txt").exists(),
            "new file removed"
        );
    }

    #[test]
    fn units_follow_install_sh_and_the_nodes_env_files_are_kept() {
        let local = Layout::for_prefix(Path::new("/usr/local"), Path::new("/etc/systemd/system"));
        assert_eq!(
            local.target("lib/systemd/system/rke2-server.service"),
            PathBuf::from("/usr/local/lib/systemd/system/rke2-server.service")
        );
        let opt = Layout::for_prefix(Path::new("/opt/rke2"), Path::new("/etc/systemd/system"));
        assert_eq!(
            opt.target("lib/systemd/system/rke2-server.service"),
            PathBuf::from("/etc/systemd/system/rke2-server.service")
        );
        assert_eq!(
            opt.target("lib/systemd/system/rke2-server.env"),
            PathBuf::from("/opt/rke2/lib/systemd/system/rke2-server.env")
        );
        assert_eq!(opt.target("bin/rke2"), PathBuf::from("/opt/rke2/bin/rke2"));
        // Only RKE2's own two units leave the prefix.
        for other in [
            "lib/systemd/system/rke2-node-agent.service",
            "lib/systemd/system/rke2-server.service.d/x.conf",
        ] {
            assert!(opt.target(other).starts_with("/opt/rke2"), "{other}");
        }

        // An /opt/rke2-like install: units elsewhere, an operator's env file in the prefix.
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("opt-rke2");
        let units = dir.path().join("etc-systemd-system");
        let layout = Layout::for_prefix(&prefix, &units);
        fs::create_dir_all(prefix.join("bin")).expect("mkdir");
        fs::create_dir_all(prefix.join("lib/systemd/system")).expect("mkdir");
        fs::create_dir_all(&units).expect("mkdir");
        fs::write(prefix.join("bin/rke2"), b"old").expect("write");
        fs::write(
            prefix.join("lib/systemd/system/rke2-server.env"),
            b"HTTPS_PROXY=http://proxy:3128\n",
        )
        .expect("write");
        fs::write(units.join("rke2-server.service"), b"old unit").expect("write");
        let tar = tarball(
            dir.path(),
            &[
                ("bin/rke2", b"new"),
                ("lib/systemd/system/rke2-server.service", b"new unit"),
                ("lib/systemd/system/rke2-server.env", b"HOME=/root\n"),
                ("lib/systemd/system/rke2-agent.env", b"HOME=/root\n"),
            ],
        );
        let staged = dir.path().join("op/staged");
        let previous = dir.path().join("op/previous");
        let files = stage(&tar, &staged).expect("stage");
        assert_eq!(keep_previous(&layout, &files, &previous).expect("keep"), 3);
        let kept = install(&staged, &layout, &files).expect("install");
        assert_eq!(kept, vec!["lib/systemd/system/rke2-server.env"]);
        assert_eq!(fs::read(prefix.join("bin/rke2")).expect("read"), b"new");
        assert_eq!(
            fs::read(units.join("rke2-server.service")).expect("read"),
            b"new unit"
        );
        assert!(
            !prefix
                .join("lib/systemd/system/rke2-server.service")
                .exists(),
            "no unit where systemd does not look"
        );
        assert_eq!(
            fs::read(prefix.join("lib/systemd/system/rke2-server.env")).expect("read"),
            b"HTTPS_PROXY=http://proxy:3128\n",
            "the operator's variables survive"
        );
        assert_eq!(
            fs::read(prefix.join("lib/systemd/system/rke2-agent.env")).expect("read"),
            b"HOME=/root\n",
            "a missing env file comes from the release"
        );
        assert_eq!(restore(&previous, &layout, &files).expect("restore"), 3);
        assert_eq!(
            fs::read(units.join("rke2-server.service")).expect("read"),
            b"old unit"
        );
        assert!(!prefix.join("lib/systemd/system/rke2-agent.env").exists());
        assert_eq!(
            fs::read(prefix.join("lib/systemd/system/rke2-server.env")).expect("read"),
            b"HTTPS_PROXY=http://proxy:3128\n"
        );
    }

    /// A tarball with entries of any kind and mode: `(name, kind, mode, bytes)`.
    fn raw_tarball(dir: &Path, entries: &[(&str, tar::EntryType, u32, &[u8])]) -> PathBuf {
        let path = dir.join("rke2.linux-amd64.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).expect("create"),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, kind, mode, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(*mode);
            header.set_entry_type(*kind);
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name("/etc/shadow").expect("link name");
            }
            tar.append_data(&mut header, name, *bytes).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gz");
        path
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    #[test]
    fn modes_lose_set_id_sticky_and_group_or_world_write_and_keep_exec() {
        assert_eq!(installed_mode(0o4755), 0o755, "setuid");
        assert_eq!(installed_mode(0o2755), 0o755, "setgid");
        assert_eq!(installed_mode(0o1777), 0o755, "sticky, world-writable");
        assert_eq!(installed_mode(0o666), 0o644);
        assert_eq!(installed_mode(0o100_755), 0o755, "file-type bits");
        assert_eq!(installed_mode(0o600), 0o600);
        assert_eq!(installed_mode(0o750), 0o750);
    }

    #[test]
    fn a_setuid_or_world_writable_file_is_staged_and_installed_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = raw_tarball(
            dir.path(),
            &[
                ("bin/rke2", tar::EntryType::Regular, 0o4777, b"new"),
                ("share/rke2/conf", tar::EntryType::Regular, 0o666, b"c"),
            ],
        );
        let staged = dir.path().join("staged");
        let prefix = dir.path().join("prefix");
        let files = stage(&tar, &staged).expect("stage");
        assert_eq!(mode_of(&staged.join("bin/rke2")), 0o755);
        install(
            &staged,
            &Layout::for_prefix(&prefix, &dir.path().join("units")),
            &files,
        )
        .expect("install");
        assert_eq!(mode_of(&prefix.join("bin/rke2")), 0o755);
        assert_eq!(mode_of(&prefix.join("share/rke2/conf")), 0o644);
    }

    #[test]
    fn links_devices_and_duplicate_entries_are_refused() {
        for (name, kind) in [
            ("bin/rke2", tar::EntryType::Symlink),
            ("bin/rke2", tar::EntryType::Link),
            ("bin/rke2", tar::EntryType::Char),
            ("bin/rke2", tar::EntryType::Block),
            ("bin/rke2", tar::EntryType::Fifo),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let tar = raw_tarball(dir.path(), &[(name, kind, 0o755, b"")]);
            let err = stage(&tar, &dir.path().join("staged")).expect_err("refused");
            assert!(
                matches!(&err, InstallError::BadEntry { why, .. } if why.contains("not a regular")),
                "{kind:?}: {err}"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = raw_tarball(
            dir.path(),
            &[
                ("bin/rke2", tar::EntryType::Regular, 0o755, b"first"),
                ("./bin/rke2", tar::EntryType::Regular, 0o755, b"second"),
            ],
        );
        let err = stage(&tar, &dir.path().join("staged")).expect_err("refused");
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn the_budget_counts_entries_and_unpacked_bytes_up_to_the_limits() {
        let mut budget = TarBudget {
            entries: MAX_TAR_ENTRIES - 1,
            unpacked: 0,
        };
        assert_eq!(budget.admit(0), Ok(()));
        assert_eq!(
            budget.admit(0),
            Err(("entries", MAX_TAR_ENTRIES, MAX_TAR_ENTRIES + 1))
        );
        let mut budget = TarBudget::default();
        assert_eq!(budget.admit(MAX_UNPACKED_BYTES), Ok(()));
        assert_eq!(
            budget.admit(1),
            Err(("unpacked bytes", MAX_UNPACKED_BYTES, MAX_UNPACKED_BYTES + 1))
        );
        assert_eq!(
            budget,
            TarBudget {
                entries: 1,
                unpacked: MAX_UNPACKED_BYTES
            },
            "a refused entry is not counted"
        );
    }

    #[test]
    fn a_tarball_with_too_many_entries_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = (0..=MAX_TAR_ENTRIES)
            .map(|i| format!("share/f{i}"))
            .collect();
        let mut entries: Vec<(&str, tar::EntryType, u32, &[u8])> =
            vec![("bin/rke2", tar::EntryType::Regular, 0o755, b"x")];
        entries.extend(
            names
                .iter()
                .map(|n| (n.as_str(), tar::EntryType::Regular, 0o644, &b""[..])),
        );
        let tar = raw_tarball(dir.path(), &entries);
        let err = stage(&tar, &dir.path().join("staged"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("rke2.linux-amd64.tar.gz")
                && err.contains("entries over the limit of 10000")
                && err.contains("reached 10001"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_claiming_more_than_the_unpacked_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rke2.linux-amd64.tar.gz");
        // One header claiming 2 GiB, and no content: refused from the header alone.
        let mut header = tar::Header::new_gnu();
        header.set_path("bin/rke2").expect("path");
        header.set_size(2 << 30);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).expect("create"),
            flate2::Compression::fast(),
        );
        gz.write_all(header.as_bytes()).expect("write");
        gz.finish().expect("gz");
        let err = stage(&path, &dir.path().join("staged"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("unpacked bytes over the limit of 1073741824"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_long_name_record_is_refused_before_it_is_read_into_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = raw_tarball(
            dir.path(),
            &[
                ("bin/rke2", tar::EntryType::Regular, 0o755, b"x"),
                (
                    "././@LongLink",
                    tar::EntryType::GNULongName,
                    0o644,
                    &vec![b'a'; 1 << 20],
                ),
                ("share/x", tar::EntryType::Regular, 0o644, b"x"),
            ],
        );
        let err = stage(&tar, &dir.path().join("staged"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("long-name or pax record over the limit of 65536")
                && err.contains("reached 1048576"),
            "{err}"
        );
        // An ordinary long name (over tar's 100 bytes) still works.
        let long = format!("share/rke2/{}", "n".repeat(150));
        let tar = tarball(dir.path(), &[("bin/rke2", b"x"), (long.as_str(), b"y")]);
        let files = stage(&tar, &dir.path().join("staged-long")).expect("stage");
        assert!(files.contains(&long), "{files:?}");
    }

    #[test]
    fn a_decompressed_stream_over_the_cap_fails_rather_than_ending() {
        let mut capped = Capped {
            inner: &[0u8; 100][..],
            read: 0,
            limit: 10,
        };
        let err = std::io::copy(&mut capped, &mut std::io::sink()).expect_err("capped");
        assert!(err.get_ref().is_some_and(|e| e.is::<CapReached>()), "{err}");
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
