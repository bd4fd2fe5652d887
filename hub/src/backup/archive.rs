//! The archive itself: a gzipped tar whose first member is `manifest.json`, then the members
//! it lists, in its order. Writing takes what to put in; reading checks everything it meets
//! against the manifest (type, path, listing, size, SHA-256), then that every listed member
//! came, then the gzip trailer (CRC and length), and writes members out only under a folder
//! the caller gives (none: check only).
//!
//! Generic over `Read`/`Write` so the unit tests build and break archives in memory.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::manifest::{MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestError, PathRefusal};
use super::manifest::{Member, check_member_path};

/// Mode of every file a backup or restore writes: the CA key is among them.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder a restore creates.
pub const DIR_MODE: u32 = 0o700;

/// Why an archive is refused. Each names the member (or the manifest field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The gzip or tar stream is damaged or cut short.
    #[error("the archive is damaged or truncated ({at})")]
    Read {
        /// Where in the archive: a member's name, or what was being read.
        at: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// No member at all.
    #[error("the archive holds no members (expected {MANIFEST_NAME} first)")]
    Empty,
    /// The first member is not the manifest.
    #[error("the first member is {found:?}, not {MANIFEST_NAME}")]
    ManifestNotFirst {
        /// The first member's name.
        found: String,
    },
    /// The manifest is larger than any real one.
    #[error(
        "{MANIFEST_NAME} is {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
    )]
    ManifestTooLarge {
        /// Its size.
        size: u64,
    },
    /// The manifest is refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A member's name is not UTF-8.
    #[error("member {name:?}: the name is not UTF-8")]
    NonUtf8 {
        /// The name, lossily decoded.
        name: String,
    },
    /// A member's path is unsafe or unknown.
    #[error("member {member:?}: {reason}")]
    Path {
        /// The path as in the archive.
        member: String,
        /// Which rule it breaks.
        reason: PathRefusal,
    },
    /// A member is not a regular file (a link, a folder, a device...).
    #[error("member {member}: is a {kind}, not a regular file")]
    NotAFile {
        /// The member.
        member: String,
        /// Its tar entry type.
        kind: String,
    },
    /// A member is in the archive but not in the manifest.
    #[error("member {member}: in the archive but not listed in {MANIFEST_NAME}")]
    Unlisted {
        /// The member.
        member: String,
    },
    /// A member appears twice in the archive.
    #[error("member {member}: appears twice in the archive")]
    Duplicate {
        /// The member.
        member: String,
    },
    /// A member's size is not the manifest's.
    #[error("member {member}: {actual} bytes, {MANIFEST_NAME} says {listed}")]
    Size {
        /// The member.
        member: String,
        /// The manifest's size.
        listed: u64,
        /// The archive's.
        actual: u64,
    },
    /// A member's content does not match the manifest's SHA-256. Neither checksum is
    /// shown: one member is the CA key, and no error carries a secret's hash.
    #[error("member {member}: its content does not match the SHA-256 {MANIFEST_NAME} lists")]
    Checksum {
        /// The member.
        member: String,
    },
    /// A listed member is not in the archive.
    #[error("member {member}: listed in {MANIFEST_NAME} but not in the archive")]
    Missing {
        /// The member.
        member: String,
    },
    /// Writing a member out failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Where a member's bytes come from when an archive is written.
#[derive(Debug)]
pub enum Content {
    /// Read already (the PKI files: small, and read once so the checksum is of what is
    /// written).
    Bytes(Vec<u8>),
    /// A file nothing else writes (the database snapshot, in a private folder).
    File(PathBuf),
}

/// A member ready to be written: its manifest entry and its bytes.
#[derive(Debug)]
pub struct Staged {
    /// What the manifest lists.
    pub member: Member,
    /// Its bytes.
    pub content: Content,
}

impl Staged {
    /// `bytes` as member `path`.
    #[must_use]
    pub fn bytes(path: &str, bytes: Vec<u8>) -> Self {
        Self {
            member: Member::of(path, &bytes),
            content: Content::Bytes(bytes),
        }
    }

    /// The file `file` as member `path`, hashed now.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn file(path: &str, file: &Path) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let size = io::copy(&mut File::open(file)?, &mut hasher)?;
        Ok(Self {
            member: Member {
                path: path.to_owned(),
                size,
                sha256: hex::encode(hasher.finalize()),
            },
            content: Content::File(file.to_path_buf()),
        })
    }
}

/// Writes the archive to `out`: `manifest` first, then each of `staged` (which the manifest
/// lists, in the same order), every entry mode 0600 owned by 0:0 with `mtime`. Returns `out`
/// with the gzip stream finished, for the caller to sync.
///
/// # Errors
/// When writing fails, or a file member does not have the size it was hashed with.
pub fn write_archive<W: Write>(
    out: W,
    manifest: &Manifest,
    staged: &[Staged],
    mtime: u64,
) -> io::Result<W> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let manifest_json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    append(
        &mut tar,
        MANIFEST_NAME,
        manifest_json.len() as u64,
        mtime,
        &manifest_json[..],
    )?;
    for item in staged {
        let Member { path, size, .. } = &item.member;
        match &item.content {
            Content::Bytes(bytes) => append(&mut tar, path, *size, mtime, &bytes[..])?,
            Content::File(file) => {
                let mut reader = File::open(file)?.take(*size);
                append(&mut tar, path, *size, mtime, &mut reader)?;
                if reader.limit() != 0 {
                    return Err(io::Error::other(format!(
                        "{} shrank while it was archived",
                        file.display()
                    )));
                }
            }
        }
    }
    tar.into_inner()?.finish()
}

/// One regular-file entry.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(FILE_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_cksum();
    tar.append(&header, data)
}

/// Reads and checks the whole archive from `input`; writes each member under `dest` (its
/// archive path below it; folders 0700, files 0600, never over an existing file) when given.
/// `supported_schema` is the newest schema version this build can open.
///
/// Returns the manifest only when everything checked out. On an error, what was written
/// under `dest` is incomplete: the caller discards the folder.
///
/// # Errors
/// The first [`ArchiveError`] met.
pub fn read_archive<R: Read>(
    input: R,
    supported_schema: u32,
    dest: Option<&Path>,
) -> Result<Manifest, ArchiveError> {
    // Our own BufReader, so what follows the gzip stream can be looked at afterwards.
    let mut archive = tar::Archive::new(flate2::bufread::GzDecoder::new(io::BufReader::new(input)));
    let manifest = {
        let mut entries = archive.entries().map_err(|source| ArchiveError::Read {
            at: "the first member".to_owned(),
            source,
        })?;
        let manifest = read_manifest(&mut entries, supported_schema)?;
        let mut seen = BTreeSet::new();
        let mut previous = MANIFEST_NAME.to_owned();
        for entry in entries {
            let entry = entry.map_err(|source| ArchiveError::Read {
                at: format!("the member after {previous}"),
                source,
            })?;
            let member = read_member(entry, &manifest, &mut seen, dest)?;
            previous = member;
        }
        if let Some(missing) = manifest.members.iter().find(|m| !seen.contains(&m.path)) {
            return Err(ArchiveError::Missing {
                member: missing.path.clone(),
            });
        }
        manifest
    };
    // The tar end can come before the gzip stream's: read to its end, so its CRC and length
    // are checked and a cut-off or padded-with-garbage archive is refused.
    let after_end = |source| ArchiveError::Read {
        at: "after the last member".to_owned(),
        source,
    };
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(after_end)?;
    let mut rest = gz.into_inner();
    if !io::BufRead::fill_buf(&mut rest)
        .map_err(after_end)?
        .is_empty()
    {
        return Err(after_end(io::Error::new(
            io::ErrorKind::InvalidData,
            "data after the end of the gzip stream",
        )));
    }
    Ok(manifest)
}

/// The first entry, which must be `manifest.json`, parsed and checked.
fn read_manifest<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    supported_schema: u32,
) -> Result<Manifest, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        at: MANIFEST_NAME.to_owned(),
        source,
    };
    let mut first = entries
        .next()
        .ok_or(ArchiveError::Empty)?
        .map_err(read_err)?;
    let name = String::from_utf8_lossy(&first.path_bytes()).into_owned();
    if name != MANIFEST_NAME {
        return Err(ArchiveError::ManifestNotFirst { found: name });
    }
    if first.header().entry_type() != tar::EntryType::Regular {
        return Err(ArchiveError::NotAFile {
            member: name,
            kind: kind_of(first.header().entry_type()),
        });
    }
    let size = first.size();
    if size > MAX_MANIFEST_BYTES {
        return Err(ArchiveError::ManifestTooLarge { size });
    }
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 != size {
        return Err(read_err(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Manifest::parse(&bytes, supported_schema)?)
}

/// One member after the manifest: checked, streamed through SHA-256 (and into `dest`), and
/// compared with its listing. Returns its path.
fn read_member<R: Read>(
    mut entry: tar::Entry<'_, R>,
    manifest: &Manifest,
    seen: &mut BTreeSet<String>,
    dest: Option<&Path>,
) -> Result<String, ArchiveError> {
    let raw = entry.path_bytes().into_owned();
    let path = String::from_utf8(raw).map_err(|e| ArchiveError::NonUtf8 {
        name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })?;
    check_member_path(&path).map_err(|reason| ArchiveError::Path {
        member: path.clone(),
        reason,
    })?;
    let kind = entry.header().entry_type();
    if kind != tar::EntryType::Regular {
        return Err(ArchiveError::NotAFile {
            member: path,
            kind: kind_of(kind),
        });
    }
    let Some(listed) = manifest.member(&path) else {
        return Err(ArchiveError::Unlisted { member: path });
    };
    if !seen.insert(path.clone()) {
        return Err(ArchiveError::Duplicate { member: path });
    }
    if entry.size() != listed.size {
        return Err(ArchiveError::Size {
            member: path,
            listed: listed.size,
            actual: entry.size(),
        });
    }
    let mut file = match dest {
        Some(dir) => Some((create_member_file(dir, &path)?, dir.join(&path))),
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut copied = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ArchiveError::Read {
                    at: format!("member {path}"),
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        if let Some((out, out_path)) = &mut file {
            out.write_all(&buf[..n])
                .map_err(|source| ArchiveError::Write {
                    path: out_path.clone(),
                    source,
                })?;
        }
        copied += n as u64;
    }
    if copied != listed.size {
        return Err(ArchiveError::Read {
            at: format!("member {path}"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{copied} of {} bytes", listed.size),
            ),
        });
    }
    if hex::encode(hasher.finalize()) != listed.sha256 {
        return Err(ArchiveError::Checksum { member: path });
    }
    if let Some((out, out_path)) = file {
        out.sync_all().map_err(|source| ArchiveError::Write {
            path: out_path,
            source,
        })?;
    }
    Ok(path)
}

/// Creates `dir/path` (mode 0600, failing if it exists) and its folders (0700).
fn create_member_file(dir: &Path, path: &str) -> Result<File, ArchiveError> {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent)
            .map_err(|source| ArchiveError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&file)
        .map_err(|source| ArchiveError::Write { path: file, source })
}

/// A tar entry type in words.
fn kind_of(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "symbolic link".to_owned(),
        tar::EntryType::Link => "hard link".to_owned(),
        tar::EntryType::Directory => "directory".to_owned(),
        tar::EntryType::Char | tar::EntryType::Block => "device".to_owned(),
        tar::EntryType::Fifo => "FIFO".to_owned(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::super::manifest::{
        CA_CERT_MEMBER, CA_KEY_MEMBER, DB_MEMBER, SERVER_CERT_MEMBER, SERVER_KEY_MEMBER,
    };
    use super::*;

    const SCHEMA: u32 = 11;

    fn staged() -> Vec<Staged> {
        vec![
            Staged::bytes(DB_MEMBER, vec![1u8; 5000]),
            Staged::bytes(CA_CERT_MEMBER, b"-----BEGIN CERTIFICATE-----".to_vec()),
            Staged::bytes(CA_KEY_MEMBER, b"-----BEGIN PRIVATE KEY-----".to_vec()),
            Staged::bytes(SERVER_CERT_MEMBER, b"server cert".to_vec()),
            Staged::bytes(SERVER_KEY_MEMBER, b"server key".to_vec()),
        ]
    }

    fn manifest_of(staged: &[Staged]) -> Manifest {
        Manifest::new(
            SCHEMA,
            "2026-12-07T10:00:00Z".to_owned(),
            staged.iter().map(|s| s.member.clone()).collect(),
        )
    }

    fn good_archive() -> Vec<u8> {
        let staged = staged();
        write_archive(Vec::new(), &manifest_of(&staged), &staged, 1_765_000_000).unwrap()
    }

    /// An archive of raw entries `(name, type, data)`, names written into the header as
    /// bytes (the tar crate refuses to set `..` paths itself).
    fn raw_archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_old();
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn manifest_bytes(m: &Manifest) -> Vec<u8> {
        serde_json::to_vec(m).unwrap()
    }

    fn check(bytes: &[u8]) -> Result<Manifest, ArchiveError> {
        read_archive(bytes, SCHEMA, None)
    }

    #[test]
    fn an_archive_reads_back_into_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("staging");
        std::fs::create_dir(&dest).unwrap();
        let manifest = read_archive(&good_archive()[..], SCHEMA, Some(&dest)).unwrap();
        assert_eq!(manifest, manifest_of(&staged()));
        assert_eq!(
            std::fs::read(dest.join(DB_MEMBER)).unwrap(),
            vec![1u8; 5000]
        );
        assert_eq!(
            std::fs::read(dest.join(CA_KEY_MEMBER)).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dest.join(CA_KEY_MEMBER)), 0o600);
        assert_eq!(mode(&dest.join("pki")), 0o700);
    }

    #[test]
    fn the_manifest_comes_first_and_every_entry_is_private() {
        let bytes = good_archive();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                MANIFEST_NAME,
                DB_MEMBER,
                CA_CERT_MEMBER,
                CA_KEY_MEMBER,
                SERVER_CERT_MEMBER,
                SERVER_KEY_MEMBER
            ]
        );
        assert!(entries.iter().all(|(_, mode)| *mode == 0o600));
    }

    #[test]
    fn a_truncated_archive_is_refused_at_every_cut() {
        let bytes = good_archive();
        for cut in [
            0,
            1,
            10,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 9,
            bytes.len() - 1,
        ] {
            let err = check(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ArchiveError::Read { .. } | ArchiveError::Empty | ArchiveError::Missing { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn garbage_and_flipped_bytes_are_refused() {
        assert!(matches!(
            check(b"not a gzip stream at all"),
            Err(ArchiveError::Read { .. })
        ));
        let good = good_archive();
        for at in [20, good.len() / 2, good.len() - 5] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            assert!(check(&bad).is_err(), "flipped byte {at} accepted");
        }
        let mut padded = good;
        padded.extend_from_slice(b"trailing garbage");
        assert!(check(&padded).is_err(), "trailing garbage accepted");
    }

    #[test]
    fn a_member_whose_content_changed_is_named_by_its_checksum() {
        let staged = staged();
        let manifest = manifest_of(&staged);
        let mut tampered = staged;
        // Same size, other content: only the checksum can tell.
        tampered[2] = Staged {
            member: tampered[2].member.clone(),
            content: Content::Bytes(b"-----BEGIN PRIVATE KEY----X".to_vec()),
        };
        let bytes = write_archive(Vec::new(), &manifest, &tampered, 0).unwrap();
        let err = check(&bytes).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Checksum { member, .. } if member == CA_KEY_MEMBER),
            "{err}"
        );
        assert!(err.to_string().contains("pki/ca.key"), "{err}");
    }

    #[test]
    fn a_member_whose_size_differs_from_the_manifest_is_named() {
        let raw = raw_archive(&[
            (
                MANIFEST_NAME,
                tar::EntryType::Regular,
                &manifest_bytes(&manifest_of(&staged())),
            ),
            (DB_MEMBER, tar::EntryType::Regular, b"short"),
        ]);
        let err = check(&raw).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Size { member, listed: 5000, actual: 5 } if member == DB_MEMBER),
            "{err}"
        );
    }

    #[test]
    fn a_listed_member_missing_from_the_archive_is_named() {
        let staged = staged();
        let manifest = manifest_of(&staged);
        let bytes = write_archive(Vec::new(), &manifest, &staged[..3], 0).unwrap();
        let err = check(&bytes).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Missing { member } if member == SERVER_CERT_MEMBER),
            "{err}"
        );
    }

    #[test]
    fn unlisted_duplicated_and_non_file_members_are_refused() {
        let staged = staged();
        let mut manifest = manifest_of(&staged);
        manifest.members.truncate(3);
        let bytes = write_archive(Vec::new(), &manifest, &staged, 0).unwrap();
        assert!(matches!(
            check(&bytes),
            Err(ArchiveError::Unlisted { member }) if member == SERVER_CERT_MEMBER
        ));

        let full = manifest_bytes(&manifest_of(&staged));
        let dup = raw_archive(&[
            (MANIFEST_NAME, tar::EntryType::Regular, &full),
            (DB_MEMBER, tar::EntryType::Regular, &[1u8; 5000]),
            (DB_MEMBER, tar::EntryType::Regular, &[1u8; 5000]),
        ]);
        assert!(matches!(
            check(&dup),
            Err(ArchiveError::Duplicate { member }) if member == DB_MEMBER
        ));
        let link = raw_archive(&[
            (MANIFEST_NAME, tar::EntryType::Regular, &full),
            (CA_KEY_MEMBER, tar::EntryType::Symlink, b""),
        ]);
        let err = check(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn traversing_and_absolute_members_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("staging");
        std::fs::create_dir(&dest).unwrap();
        let full = manifest_bytes(&manifest_of(&staged()));
        for (name, reason) in [
            ("../escaped", PathRefusal::ParentDir),
            ("pki/../../escaped", PathRefusal::ParentDir),
            ("/tmp/escaped", PathRefusal::Absolute),
            ("pki/evil", PathRefusal::Unknown),
        ] {
            let bytes = raw_archive(&[
                (MANIFEST_NAME, tar::EntryType::Regular, &full),
                (name, tar::EntryType::Regular, b"x"),
            ]);
            let err = read_archive(&bytes[..], SCHEMA, Some(&dest)).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::Path { member, reason: r } if member == name && *r == reason),
                "{name}: {err}"
            );
        }
        assert!(!dir.path().join("escaped").exists());
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn the_manifest_must_come_first_and_be_acceptable() {
        let no_manifest = raw_archive(&[(DB_MEMBER, tar::EntryType::Regular, b"x")]);
        assert!(matches!(
            check(&no_manifest),
            Err(ArchiveError::ManifestNotFirst { found }) if found == DB_MEMBER
        ));
        assert!(matches!(check(&raw_archive(&[])), Err(ArchiveError::Empty)));
        let mut newer = manifest_of(&staged());
        newer.schema_version = SCHEMA + 1;
        let bytes = raw_archive(&[(
            MANIFEST_NAME,
            tar::EntryType::Regular,
            &manifest_bytes(&newer),
        )]);
        let err = check(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Manifest(ManifestError::SchemaTooNew { found: 12, .. })
            ),
            "{err}"
        );
        let huge = vec![b' '; usize::try_from(MAX_MANIFEST_BYTES).unwrap() + 1];
        let bytes = raw_archive(&[(MANIFEST_NAME, tar::EntryType::Regular, &huge)]);
        assert!(matches!(
            check(&bytes),
            Err(ArchiveError::ManifestTooLarge { .. })
        ));
    }
}
