//! Secret files: written 0600 and atomically (temp file, fsync, rename, fsync folder), and
//! sets of files that must change together (a key and its certificate) written so a crash at
//! any instant leaves either every old file or every new one.
//!
//! A set is written as `<name>.next` files first, one after the other; the last `.next` file
//! appearing is the commit point. Then each is renamed over its final name. After a crash,
//! [`finish_interrupted_write`] completes the renames when the commit point was reached and
//! deletes the `.next` files otherwise. Readers call it before reading the set.
//!
//! The node's identity folder (`/var/lib/rke2-ops/node-agent/identity/`) holds [`KEY_FILE`],
//! [`CERT_FILE`] and [`CA_FILE`], all three written as one set by [`save_identity`].

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::names::{NodeNameError, validate_node_name};

/// The node's private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "node.key";
/// The node's client certificate, as the hub signed it.
pub const CERT_FILE: &str = "node.crt";
/// The hub CA that signed [`CERT_FILE`] and that the hub's server certificate chains to.
pub const CA_FILE: &str = "ca.crt";

/// Suffix of a file staged for [`write_files_together`].
const NEXT_SUFFIX: &str = ".next";

pub use crate::atomic_file::FileError;
use crate::atomic_file::{Attrs, Policy, file_error, parent_of, remove_if_present, sync_dir};

/// Why the node's identity cannot be made, stored or read back.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The node name would not be accepted by the hub.
    #[error(transparent)]
    InvalidNodeName {
        /// Which rule it breaks.
        #[from]
        source: NodeNameError,
    },
    /// ring could not make a key.
    #[error("cannot generate the node key: {source}")]
    KeyGeneration {
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A private key PEM is not a key rcgen can use.
    #[error("{origin} is not a usable private key: {source}")]
    KeyParse {
        /// The file or message the key came from.
        origin: String,
        /// rcgen's error (never contains key material).
        source: rcgen::Error,
    },
    /// rcgen could not build the CSR.
    #[error("cannot build the certificate request for node {node:?}: {source}")]
    Csr {
        /// The node name requested.
        node: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A file could not be read, written or renamed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file (or a PEM given to [`save_identity`]) does not hold what it should.
    #[error("{origin}: {reason}")]
    Content {
        /// The file, or which argument.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Some of the identity files exist and some do not: not enrolled, and not safe to guess.
    #[error(
        "identity folder {} is incomplete: missing {missing}; remove it to enroll again",
        dir.display()
    )]
    Incomplete {
        /// The identity folder.
        dir: PathBuf,
        /// The missing file names, comma-separated.
        missing: String,
    },
    /// The key is not the certificate's key.
    #[error("{key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// Where the key came from.
        key: String,
        /// Where the certificate came from.
        cert: String,
    },
    /// The certificate was not signed by the CA stored beside it.
    #[error("{cert} was not signed by the CA in {ca}")]
    NotIssuedByCa {
        /// Where the certificate came from.
        cert: String,
        /// Where the CA came from.
        ca: String,
    },
}

/// The node's enrolled identity, as stored in its identity folder.
///
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node name: the certificate's CN, which the hub checked at signing.
    pub node_name: String,
    /// The node's private key, PKCS#8 PEM. Secret.
    pub key_pem: String,
    /// The node's client certificate (PEM), presented to the hub on every connection.
    pub cert_pem: String,
    /// The hub CA (PEM): the only trust anchor for the hub's server certificate.
    pub ca_pem: String,
    /// Start of the certificate's validity.
    pub not_before: OffsetDateTime,
    /// End of the certificate's validity; renewal is due well before (see `renewal_due`).
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_name", &self.node_name)
            .field("key_pem", &"<secret, not shown>")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Creates `dir` (and missing parents) and makes it 0700.
///
/// # Errors
/// [`FileError`] naming the folder.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(file_error("create folder", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(file_error("restrict permissions of", dir))
}

/// Writes `bytes` to `path` as a 0600 file, atomically (see [`crate::atomic_file`]): a
/// reader sees the old content or the new, never a part; the temp file is created 0600 and
/// never through a link, so the secret is never readable by others. Always 0600, even over a
/// looser old file.
///
/// # Errors
/// [`FileError`] naming the file that failed.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    crate::atomic_file::replace_file(path, bytes, Policy::Exactly(Attrs::mode(0o600)))
}

/// Writes several files so that after a crash either all keep their old content or all have
/// the new one (once [`finish_interrupted_write`] has run). Every file is 0600.
///
/// # Errors
/// [`FileError`] naming the file that failed; the set is then left old (or, if the failure
/// came after the commit point, completed by the next [`finish_interrupted_write`]).
pub fn write_files_together(files: &[(&Path, &[u8])]) -> Result<(), FileError> {
    let paths: Vec<&Path> = files.iter().map(|(path, _)| *path).collect();
    // Leftovers of an earlier interrupted write must not mix with this one.
    finish_interrupted_write(&paths)?;
    for (path, bytes) in files {
        // Each staged file is itself atomic, so the last one appearing commits the set.
        write_secret_file(&next_of(path), bytes)?;
    }
    rename_staged(&paths)
}

/// Completes or undoes a [`write_files_together`] that a crash interrupted: when the last
/// file's `.next` exists the set was committed and the staged files are renamed into place,
/// otherwise the staged files are deleted. Does nothing when nothing is staged.
///
/// # Errors
/// [`FileError`] naming the file that could not be renamed or removed.
pub fn finish_interrupted_write(paths: &[&Path]) -> Result<(), FileError> {
    let Some(last) = paths.last() else {
        return Ok(());
    };
    if next_of(last).exists() {
        return rename_staged(paths);
    }
    for path in paths {
        remove_if_present(&next_of(path))?;
    }
    Ok(())
}

/// Renames every existing `.next` of `paths` into place, in order, then fsyncs the folders.
fn rename_staged(paths: &[&Path]) -> Result<(), FileError> {
    for path in paths {
        let next = next_of(path);
        match fs::rename(&next, path) {
            Ok(()) => {}
            // Already renamed before the crash that we are finishing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error("rename into place", path)(e)),
        }
    }
    for path in paths {
        sync_dir(parent_of(path))?;
    }
    Ok(())
}

/// Stores the node's identity in `dir` (created 0700): key, certificate and CA as one set of
/// 0600 files. Everything is checked first (the certificate names a valid node, the key is
/// the certificate's, the CA signed the certificate), so nothing is written for a bad set.
///
/// # Errors
/// [`IdentityError`] naming the bad argument, or the file that could not be written.
pub fn save_identity(
    dir: &Path,
    key_pem: &str,
    cert_pem: &str,
    ca_pem: &str,
) -> Result<Identity, IdentityError> {
    let identity = check_identity(
        (key_pem, "the node key"),
        (cert_pem, "the node certificate"),
        (ca_pem, "the hub CA"),
    )?;
    create_private_dir(dir)?;
    write_files_together(&[
        (&dir.join(KEY_FILE), key_pem.as_bytes()),
        (&dir.join(CA_FILE), ca_pem.as_bytes()),
        (&dir.join(CERT_FILE), cert_pem.as_bytes()),
    ])?;
    Ok(identity)
}

/// Reads the identity stored by [`save_identity`], first finishing a save that a crash
/// interrupted. `Ok(None)` when the node has not enrolled (none of the files exists).
///
/// # Errors
/// [`IdentityError::Incomplete`] when only some files exist; otherwise an error naming the
/// unreadable or inconsistent file.
pub fn load_identity(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let key_path = dir.join(KEY_FILE);
    let cert_path = dir.join(CERT_FILE);
    let ca_path = dir.join(CA_FILE);
    if dir.exists() {
        finish_interrupted_write(&[&key_path, &ca_path, &cert_path])?;
    }
    let files = [&key_path, &cert_path, &ca_path];
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !path.exists())
        .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if missing.len() == files.len() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(IdentityError::Incomplete {
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    let read = |path: &Path| fs::read_to_string(path).map_err(file_error("read", path));
    let (key_pem, cert_pem, ca_pem) = (read(&key_path)?, read(&cert_path)?, read(&ca_path)?);
    let identity = check_identity(
        (&key_pem, &key_path.display().to_string()),
        (&cert_pem, &cert_path.display().to_string()),
        (&ca_pem, &ca_path.display().to_string()),
    )?;
    Ok(Some(identity))
}

/// Parses and cross-checks an identity; each part comes with the name used in errors.
fn check_identity(
    (key_pem, key_origin): (&str, &str),
    (cert_pem, cert_origin): (&str, &str),
    (ca_pem, ca_origin): (&str, &str),
) -> Result<Identity, IdentityError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|source| IdentityError::KeyParse {
        origin: key_origin.to_owned(),
        source,
    })?;
    let cert_der = first_certificate(cert_pem, cert_origin)?;
    let cert = parse_certificate(&cert_der, cert_origin)?;
    let ca_der = first_certificate(ca_pem, ca_origin)?;
    let ca = parse_certificate(&ca_der, ca_origin)?;

    // Compare the key bits, not the whole SubjectPublicKeyInfo: algorithm parameters may be
    // encoded differently by whoever made an operator-provided certificate.
    if rcgen::PublicKeyData::der_bytes(&key) != &*cert.public_key().subject_public_key.data {
        return Err(IdentityError::KeyMismatch {
            key: key_origin.to_owned(),
            cert: cert_origin.to_owned(),
        });
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(IdentityError::NotIssuedByCa {
            cert: cert_origin.to_owned(),
            ca: ca_origin.to_owned(),
        });
    }
    let node_name = single_common_name(&cert).ok_or_else(|| IdentityError::Content {
        origin: cert_origin.to_owned(),
        reason: "the certificate's subject does not have exactly one UTF-8 CN".to_owned(),
    })?;
    validate_node_name(&node_name)?;
    Ok(Identity {
        node_name,
        key_pem: key_pem.to_owned(),
        cert_pem: cert_pem.to_owned(),
        ca_pem: ca_pem.to_owned(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn first_certificate(pem: &str, origin: &str) -> Result<Vec<u8>, IdentityError> {
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| IdentityError::Content {
            origin: origin.to_owned(),
            reason: format!("malformed PEM: {e}"),
        })?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(IdentityError::Content {
        origin: origin.to_owned(),
        reason: "no CERTIFICATE block".to_owned(),
    })
}

fn parse_certificate<'a>(
    der: &'a [u8],
    origin: &str,
) -> Result<X509Certificate<'a>, IdentityError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| IdentityError::Content {
            origin: origin.to_owned(),
            reason: format!("not an X.509 certificate: {e}"),
        })
}

/// The subject's CN when there is exactly one and it is a string.
fn single_common_name(cert: &X509Certificate<'_>) -> Option<String> {
    let mut names = cert.subject().iter_common_name();
    let first = names.next()?.as_str().ok()?.to_owned();
    names.next().is_none().then_some(first)
}

fn next_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(NEXT_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Enrolled {
        key_pem: String,
        cert_pem: String,
        ca_pem: String,
    }

    fn enrolled(node: &str) -> Enrolled {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hub ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Enrolled {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            ca_pem: ca_cert.pem(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn identity_is_saved_0600_and_loaded_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        let e = enrolled("node-a");
        let saved = save_identity(&dir, &e.key_pem, &e.cert_pem, &e.ca_pem).unwrap();
        assert_eq!(saved.node_name, "node-a");
        assert_eq!(mode(&dir), 0o700);
        for file in [KEY_FILE, CERT_FILE, CA_FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        let loaded = load_identity(&dir).unwrap().unwrap();
        assert_eq!(loaded, saved);
        assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp") || n.ends_with(NEXT_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn no_identity_folder_means_not_enrolled() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            load_identity(&tmp.path().join("identity"))
                .unwrap()
                .is_none()
        );
        assert!(load_identity(tmp.path()).unwrap().is_none());
    }

    #[test]
    fn a_mismatched_set_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        let a = enrolled("node-a");
        let b = enrolled("node-b");
        let err = save_identity(&dir, &b.key_pem, &a.cert_pem, &a.ca_pem).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
        let err = save_identity(&dir, &a.key_pem, &a.cert_pem, &b.ca_pem).unwrap_err();
        assert!(matches!(err, IdentityError::NotIssuedByCa { .. }), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn a_missing_file_is_reported_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let e = enrolled("node-a");
        save_identity(tmp.path(), &e.key_pem, &e.cert_pem, &e.ca_pem).unwrap();
        fs::remove_file(tmp.path().join(CERT_FILE)).unwrap();
        let err = load_identity(tmp.path()).unwrap_err();
        assert!(err.to_string().contains(CERT_FILE), "{err}");
    }

    #[test]
    fn a_crash_after_the_commit_point_is_completed_on_load() {
        let tmp = tempfile::tempdir().unwrap();
        let old = enrolled("node-a");
        save_identity(tmp.path(), &old.key_pem, &old.cert_pem, &old.ca_pem).unwrap();
        let new = enrolled("node-a");
        // Everything staged and the key already renamed: the crash hit between renames.
        write_secret_file(&tmp.path().join(KEY_FILE), new.key_pem.as_bytes()).unwrap();
        write_secret_file(&next_of(&tmp.path().join(CA_FILE)), new.ca_pem.as_bytes()).unwrap();
        write_secret_file(
            &next_of(&tmp.path().join(CERT_FILE)),
            new.cert_pem.as_bytes(),
        )
        .unwrap();
        let loaded = load_identity(tmp.path()).unwrap().unwrap();
        assert_eq!(loaded.cert_pem, new.cert_pem);
        assert_eq!(loaded.key_pem, new.key_pem);
    }

    #[test]
    fn a_crash_before_the_commit_point_keeps_the_old_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let old = enrolled("node-a");
        save_identity(tmp.path(), &old.key_pem, &old.cert_pem, &old.ca_pem).unwrap();
        let new = enrolled("node-a");
        write_secret_file(&next_of(&tmp.path().join(KEY_FILE)), new.key_pem.as_bytes()).unwrap();
        let loaded = load_identity(tmp.path()).unwrap().unwrap();
        assert_eq!(loaded.key_pem, old.key_pem);
        assert!(!next_of(&tmp.path().join(KEY_FILE)).exists());
    }

    #[test]
    fn secret_file_replaces_content_and_tightens_a_loose_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
    }
}
