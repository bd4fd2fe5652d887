//! A backup's `manifest.json`: what the archive holds and how to check it, and the rules a
//! member's path must pass. Pure: no file system, no clock (callers pass `created_at`).
//!
//! The manifest is the archive's first member, so a restore knows every size and checksum
//! before it reads a byte of anything else, and refuses an archive it cannot understand
//! (another format, a newer format version, another store kind, a newer schema) before it
//! writes anything.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The manifest's name in the archive (its first member).
pub const MANIFEST_NAME: &str = "manifest.json";
/// What `format` says in every hub backup.
pub const FORMAT: &str = "rke2-hub-backup";
/// The archive layout this build writes and reads. A change to the layout or the manifest's
/// meaning bumps it; a restore refuses a version it does not know.
pub const FORMAT_VERSION: u32 = 1;
/// The store kind of a SQLite hub; an etcd-backed hub will record its own kind and members.
pub const STORE_SQLITE: &str = "sqlite";
/// The largest manifest a restore reads (a real one is well under 1 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// The database member.
pub const DB_MEMBER: &str = "hub.db";
/// The CA certificate member.
pub const CA_CERT_MEMBER: &str = "pki/ca.crt";
/// The CA key member.
pub const CA_KEY_MEMBER: &str = "pki/ca.key";
/// The server certificate member (optional: `serve` issues a new one from the CA).
pub const SERVER_CERT_MEMBER: &str = "pki/server.crt";
/// The server key member (optional, with the certificate).
pub const SERVER_KEY_MEMBER: &str = "pki/server.key";

/// Every member a SQLite backup may hold, in archive order after the manifest. A restore
/// writes only these names: an archive cannot place a file anywhere else in the state dir.
pub const KNOWN_MEMBERS: [&str; 5] = [
    DB_MEMBER,
    CA_CERT_MEMBER,
    CA_KEY_MEMBER,
    SERVER_CERT_MEMBER,
    SERVER_KEY_MEMBER,
];
/// The members without which a hub cannot come back with its agents: the database (their
/// identities) and the CA they pin.
pub const REQUIRED_MEMBERS: [&str; 3] = [DB_MEMBER, CA_CERT_MEMBER, CA_KEY_MEMBER];

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    /// The store kind ([`STORE_SQLITE`]).
    pub store: String,
    /// The database's schema version (`PRAGMA user_version`) when it was copied.
    pub schema_version: u32,
    /// The `rke2-hub` version that wrote it.
    pub hub_version: String,
    /// When it was written, RFC 3339 UTC.
    pub created_at: String,
    /// Every other member of the archive, in archive order.
    pub members: Vec<Member>,
}

/// One member as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its path in the archive, which is its path under the state dir.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
}

impl Member {
    /// The entry for `path` with `content`.
    #[must_use]
    pub fn of(path: &str, content: &[u8]) -> Self {
        Self {
            path: path.to_owned(),
            size: content.len() as u64,
            sha256: hex::encode(Sha256::digest(content)),
        }
    }
}

/// Why a manifest or a member's path is refused. Each names the field or member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the manifest's shape.
    #[error("{MANIFEST_NAME} is not a valid manifest: {reason}")]
    Malformed {
        /// serde's message.
        reason: String,
    },
    /// `format` is not [`FORMAT`]: not a hub backup.
    #[error("{MANIFEST_NAME}: field format is {found:?}, not {FORMAT:?}: not an rke2-hub backup")]
    NotABackup {
        /// What it says.
        found: String,
    },
    /// `format_version` is not one this build reads.
    #[error(
        "{MANIFEST_NAME}: field format_version is {found}; this rke2-hub reads version \
         {FORMAT_VERSION} only{newer}",
        newer = if *found > FORMAT_VERSION { " (the backup is from a newer rke2-hub: restore it with that version)" } else { "" }
    )]
    FormatVersion {
        /// What it says.
        found: u32,
    },
    /// `store` is a kind this build cannot restore.
    #[error(
        "{MANIFEST_NAME}: field store is {found:?}; this rke2-hub restores {STORE_SQLITE:?} backups only"
    )]
    StoreKind {
        /// What it says.
        found: String,
    },
    /// The database is newer than this build's schema.
    #[error(
        "{MANIFEST_NAME}: field schema_version is {found}, newer than this rke2-hub's {supported}; \
         restore it with the rke2-hub that wrote it ({hub_version}) or a newer one"
    )]
    SchemaTooNew {
        /// What it says.
        found: u32,
        /// What this build writes.
        supported: u32,
        /// The hub version that wrote the backup.
        hub_version: String,
    },
    /// `schema_version` 0: no migration was ever applied, so there is nothing to restore.
    #[error("{MANIFEST_NAME}: field schema_version is 0: the backup holds no hub database schema")]
    SchemaZero,
    /// A member's path is unsafe or not one a backup holds.
    #[error("{MANIFEST_NAME}: member {path:?}: {reason}")]
    MemberPath {
        /// The path as written.
        path: String,
        /// Which rule it breaks.
        reason: PathRefusal,
    },
    /// A member is listed twice.
    #[error("{MANIFEST_NAME}: member {path} is listed twice")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// A required member is not listed.
    #[error("{MANIFEST_NAME}: member {path} is missing from the list (every backup holds it)")]
    Required {
        /// The path.
        path: &'static str,
    },
    /// Only one of the server certificate and its key is listed.
    #[error("{MANIFEST_NAME}: member {present} is listed without {missing}")]
    HalfPair {
        /// The one listed.
        present: &'static str,
        /// The one not listed.
        missing: &'static str,
    },
    /// A member's `sha256` is not 64 lowercase hex digits.
    #[error("{MANIFEST_NAME}: member {path}: field sha256 is not 64 lowercase hex digits")]
    Checksum {
        /// The member.
        path: String,
    },
}

/// Which rule a member path breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    /// Empty.
    #[error("the path is empty")]
    Empty,
    /// Starts with `/`.
    #[error("the path is absolute")]
    Absolute,
    /// Has a `..` component.
    #[error("the path climbs out with `..`")]
    ParentDir,
    /// Has an empty or `.` component, a backslash or a NUL: not the one spelling a backup
    /// writes.
    #[error("the path is not in plain form (empty or `.` components, `\\` or NUL)")]
    NotPlain,
    /// Safe, but not a file a hub backup holds.
    #[error(
        "not a file an rke2-hub backup holds (expected one of hub.db, pki/ca.crt, pki/ca.key, pki/server.crt, pki/server.key)"
    )]
    Unknown,
}

/// Checks a member path from an archive or a manifest: relative, plain (`a/b`, no `.`, `..`
/// or empty components), and one of [`KNOWN_MEMBERS`]. The traversal rules come first so
/// the error says what is wrong with a hostile path, not only that it is unknown.
///
/// # Errors
/// The [`PathRefusal`].
pub fn check_member_path(path: &str) -> Result<(), PathRefusal> {
    if path.is_empty() {
        return Err(PathRefusal::Empty);
    }
    if path.starts_with('/') {
        return Err(PathRefusal::Absolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(PathRefusal::ParentDir);
    }
    if path.contains(['\\', '\0']) || path.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(PathRefusal::NotPlain);
    }
    if !KNOWN_MEMBERS.contains(&path) {
        return Err(PathRefusal::Unknown);
    }
    Ok(())
}

/// The part of a manifest read before the rest, so a newer format is refused by its version
/// rather than by whatever field it renamed.
#[derive(Deserialize)]
struct Head {
    format: String,
    format_version: u32,
}

impl Manifest {
    /// The manifest of a SQLite backup written now by this build.
    #[must_use]
    pub fn new(schema_version: u32, created_at: String, members: Vec<Member>) -> Self {
        Self {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            store: STORE_SQLITE.to_owned(),
            schema_version,
            hub_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at,
            members,
        }
    }

    /// Reads `manifest.json` and checks it ([`Manifest::check`]).
    ///
    /// # Errors
    /// The first [`ManifestError`] found.
    pub fn parse(bytes: &[u8], supported_schema: u32) -> Result<Self, ManifestError> {
        let malformed = |e: serde_json::Error| ManifestError::Malformed {
            reason: e.to_string(),
        };
        let head: Head = serde_json::from_slice(bytes).map_err(malformed)?;
        if head.format != FORMAT {
            return Err(ManifestError::NotABackup { found: head.format });
        }
        if head.format_version != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion {
                found: head.format_version,
            });
        }
        let manifest: Self = serde_json::from_slice(bytes).map_err(malformed)?;
        manifest.check(supported_schema)?;
        Ok(manifest)
    }

    /// Checks what this build needs to restore it: format, version, store kind, a schema not
    /// newer than `supported_schema`, and a member list of known, safe, unique paths with the
    /// required ones present and well-formed checksums.
    ///
    /// # Errors
    /// The first [`ManifestError`] found.
    pub fn check(&self, supported_schema: u32) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::NotABackup {
                found: self.format.clone(),
            });
        }
        if self.format_version != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion {
                found: self.format_version,
            });
        }
        if self.store != STORE_SQLITE {
            return Err(ManifestError::StoreKind {
                found: self.store.clone(),
            });
        }
        if self.schema_version > supported_schema {
            return Err(ManifestError::SchemaTooNew {
                found: self.schema_version,
                supported: supported_schema,
                hub_version: self.hub_version.clone(),
            });
        }
        if self.schema_version == 0 {
            return Err(ManifestError::SchemaZero);
        }
        let mut seen = BTreeSet::new();
        for member in &self.members {
            check_member_path(&member.path).map_err(|reason| ManifestError::MemberPath {
                path: member.path.clone(),
                reason,
            })?;
            if !seen.insert(member.path.as_str()) {
                return Err(ManifestError::Duplicate {
                    path: member.path.clone(),
                });
            }
            let hex_ok = member.sha256.len() == 64
                && member
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(ManifestError::Checksum {
                    path: member.path.clone(),
                });
            }
        }
        if let Some(path) = REQUIRED_MEMBERS.into_iter().find(|p| !seen.contains(p)) {
            return Err(ManifestError::Required { path });
        }
        for (present, missing) in [
            (SERVER_CERT_MEMBER, SERVER_KEY_MEMBER),
            (SERVER_KEY_MEMBER, SERVER_CERT_MEMBER),
        ] {
            if seen.contains(present) && !seen.contains(missing) {
                return Err(ManifestError::HalfPair { present, missing });
            }
        }
        Ok(())
    }

    /// The listed member at `path`.
    #[must_use]
    pub fn member(&self, path: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.path == path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;

    const SCHEMA: u32 = 11;

    fn manifest() -> Manifest {
        Manifest::new(
            SCHEMA,
            "2026-12-07T10:00:00Z".to_owned(),
            vec![
                Member::of(DB_MEMBER, b"db"),
                Member::of(CA_CERT_MEMBER, b"cert"),
                Member::of(CA_KEY_MEMBER, b"key"),
            ],
        )
    }

    fn json_with(change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut value = serde_json::to_value(manifest()).unwrap();
        change(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn a_manifest_this_build_writes_reads_back() {
        let bytes = serde_json::to_vec(&manifest()).unwrap();
        let read = Manifest::parse(&bytes, SCHEMA).unwrap();
        assert_eq!(read, manifest());
        assert_eq!(read.member(CA_KEY_MEMBER).unwrap().size, 3);
        // sha256sum of "db".
        assert_eq!(
            read.member(DB_MEMBER).unwrap().sha256,
            "7bdc25d1694ef984782a16f6f1710c1c6bc83ba7a131b515baf532bea021d011"
        );
    }

    #[test]
    fn an_older_schema_is_accepted_and_a_newer_one_refused_naming_both() {
        let older = json_with(|v| v["schema_version"] = 3.into());
        assert_eq!(Manifest::parse(&older, SCHEMA).unwrap().schema_version, 3);
        let newer = json_with(|v| v["schema_version"] = 12.into());
        let err = Manifest::parse(&newer, SCHEMA).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::SchemaTooNew {
                    found: 12,
                    supported: 11,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("schema_version") && text.contains("12"),
            "{text}"
        );
        let zero = json_with(|v| v["schema_version"] = 0.into());
        assert_eq!(
            Manifest::parse(&zero, SCHEMA),
            Err(ManifestError::SchemaZero)
        );
    }

    #[test]
    fn another_format_version_or_store_kind_is_refused_by_its_field() {
        // A newer format may have renamed anything else: its version is what is reported.
        let newer = br#"{"format": "rke2-hub-backup", "format_version": 2, "entries": []}"#;
        let err = Manifest::parse(newer, SCHEMA).unwrap_err();
        assert_eq!(err, ManifestError::FormatVersion { found: 2 });
        assert!(err.to_string().contains("newer rke2-hub"), "{err}");
        let etcd = json_with(|v| v["store"] = "etcd".into());
        let err = Manifest::parse(&etcd, SCHEMA).unwrap_err();
        assert!(err.to_string().contains("field store is \"etcd\""), "{err}");
        let other = json_with(|v| v["format"] = "tarball".into());
        assert!(matches!(
            Manifest::parse(&other, SCHEMA),
            Err(ManifestError::NotABackup { .. })
        ));
    }

    #[test]
    fn malformed_json_is_refused() {
        for bytes in [&b""[..], b"{", b"[]", b"{\"format\": \"rke2-hub-backup\"}"] {
            assert!(
                matches!(
                    Manifest::parse(bytes, SCHEMA),
                    Err(ManifestError::Malformed { .. })
                ),
                "{bytes:?}"
            );
        }
        let no_members = json_with(|v| {
            v.as_object_mut().unwrap().remove("members");
        });
        assert!(matches!(
            Manifest::parse(&no_members, SCHEMA),
            Err(ManifestError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_required_member_is_named() {
        for required in REQUIRED_MEMBERS {
            let mut m = manifest();
            m.members.retain(|member| member.path != required);
            assert_eq!(
                m.check(SCHEMA),
                Err(ManifestError::Required { path: required })
            );
        }
    }

    #[test]
    fn duplicates_half_server_pairs_and_bad_checksums_are_refused() {
        let mut dup = manifest();
        dup.members.push(Member::of(CA_KEY_MEMBER, b"other"));
        assert!(matches!(
            dup.check(SCHEMA),
            Err(ManifestError::Duplicate { path }) if path == CA_KEY_MEMBER
        ));
        let mut half = manifest();
        half.members.push(Member::of(SERVER_CERT_MEMBER, b"c"));
        assert_eq!(
            half.check(SCHEMA),
            Err(ManifestError::HalfPair {
                present: SERVER_CERT_MEMBER,
                missing: SERVER_KEY_MEMBER
            })
        );
        half.members.push(Member::of(SERVER_KEY_MEMBER, b"k"));
        assert_eq!(half.check(SCHEMA), Ok(()));
        let mut upper = manifest();
        upper.members[0].sha256 = upper.members[0].sha256.to_uppercase();
        assert!(matches!(
            upper.check(SCHEMA),
            Err(ManifestError::Checksum { .. })
        ));
    }

    #[test]
    fn member_paths_must_be_plain_known_and_inside_the_state_dir() {
        for known in KNOWN_MEMBERS {
            assert_eq!(check_member_path(known), Ok(()), "{known}");
        }
        let refused = [
            ("", PathRefusal::Empty),
            ("/etc/passwd", PathRefusal::Absolute),
            ("/hub.db", PathRefusal::Absolute),
            ("../hub.db", PathRefusal::ParentDir),
            ("pki/../../etc/cron.d/x", PathRefusal::ParentDir),
            ("pki/..", PathRefusal::ParentDir),
            ("..", PathRefusal::ParentDir),
            ("./hub.db", PathRefusal::NotPlain),
            ("pki//ca.key", PathRefusal::NotPlain),
            ("pki/", PathRefusal::NotPlain),
            ("pki\\ca.key", PathRefusal::NotPlain),
            ("hub.db\0", PathRefusal::NotPlain),
            ("pki", PathRefusal::Unknown),
            ("serve.lock", PathRefusal::Unknown),
            ("pki/ca.key.next", PathRefusal::Unknown),
            (MANIFEST_NAME, PathRefusal::Unknown),
        ];
        for (path, why) in refused {
            assert_eq!(check_member_path(path), Err(why), "{path:?}");
        }
    }

    #[test]
    fn a_traversing_member_in_the_manifest_is_named() {
        let mut m = manifest();
        m.members
            .push(Member::of("../../root/.ssh/authorized_keys", b"x"));
        let err = m.check(SCHEMA).unwrap_err();
        assert_eq!(
            err,
            ManifestError::MemberPath {
                path: "../../root/.ssh/authorized_keys".to_owned(),
                reason: PathRefusal::ParentDir
            }
        );
        assert!(err.to_string().contains("authorized_keys"), "{err}");
    }
}
