//! Walks an RKE2 data dir and kubeconfigs into an [`Inventory`].
//!
//! The [`Scanner`] keeps what it parsed last time keyed by file contents, so a rescan after a
//! file event re-parses and re-verifies only what changed. Every problem becomes a
//! [`FileError`]; nothing here panics or stops early on bad input.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::chain::{PoolCa, verify_leaf};
use super::keys::key_matches;
use super::kubeconfig::embedded_certs;
use super::model::{
    Backup, CertEntry, ChainCheck, ErrorKind, FileError, Inventory, KeyCheck, Origin,
};
use super::parse::{Bundle, ParsedCert, parse_bundle};
use crate::layout::{self, BACKUP_PARENTS, CERT_DIRS, CERT_EXTENSIONS};

/// Files above this size are refused: no RKE2 PEM comes close, and reading a huge or
/// endless file would stall the agent.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A kubeconfig to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigPath {
    /// Absolute path.
    pub path: PathBuf,
    /// Missing is fine (RKE2's admin kubeconfig only exists on servers); a configured extra
    /// kubeconfig that is missing is an error.
    pub optional: bool,
}

/// What to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// RKE2's data dir.
    pub data_dir: PathBuf,
    /// Kubeconfigs with embedded certificates.
    pub kubeconfigs: Vec<KubeconfigPath>,
    /// Size limit per file.
    pub max_file_size: u64,
}

impl ScanConfig {
    /// The data dir plus RKE2's admin kubeconfig (optional) and `extra` kubeconfigs.
    #[must_use]
    pub fn new(
        data_dir: impl Into<PathBuf>,
        admin_kubeconfig: Option<PathBuf>,
        extra: &[PathBuf],
    ) -> Self {
        let mut kubeconfigs: Vec<KubeconfigPath> = admin_kubeconfig
            .into_iter()
            .map(|path| KubeconfigPath {
                path,
                optional: true,
            })
            .collect();
        kubeconfigs.extend(extra.iter().map(|p| KubeconfigPath {
            path: p.clone(),
            optional: false,
        }));
        Self {
            data_dir: data_dir.into(),
            kubeconfigs,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

/// Scans repeatedly, reusing work for unchanged files.
#[derive(Debug)]
pub struct Scanner {
    config: ScanConfig,
    /// Parsed bundles keyed by path, valid while the bytes are unchanged.
    bundles: HashMap<PathBuf, (Vec<u8>, Bundle)>,
    /// Chain verdicts keyed by (leaf fingerprint, CA pool identity).
    chains: HashMap<(String, String), ChainCheck>,
    /// Key verdicts keyed by (key file digest, certificate fingerprint).
    keys: HashMap<(String, String), KeyCheck>,
}

/// One certificate file's certificates before chain/key checks.
struct FileCerts {
    path: String,
    filename: String,
    origin: Origin,
    certs: Vec<ParsedCert>,
    /// Where to find the leaf's key: a sibling file, or bytes from a kubeconfig.
    key: KeySource,
    /// Index of the first certificate: 0 for a file; for the payloads of one kubeconfig
    /// the count of certificates before it, so (path, index) stays unique.
    first_index: usize,
}

enum KeySource {
    None,
    Sibling(PathBuf),
    Embedded(Vec<u8>),
}

impl Scanner {
    /// A scanner for `config`.
    #[must_use]
    pub fn new(config: ScanConfig) -> Self {
        Self {
            config,
            bundles: HashMap::new(),
            chains: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// What this scanner scans.
    #[must_use]
    pub fn config(&self) -> &ScanConfig {
        &self.config
    }

    /// Scans everything now.
    pub fn scan(&mut self) -> Inventory {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        let mut seen_paths = HashSet::new();
        for dir in CERT_DIRS {
            self.scan_dir(dir, &mut files, &mut errors, &mut seen_paths);
        }
        let kubeconfigs = self.config.kubeconfigs.clone();
        for kubeconfig in &kubeconfigs {
            self.scan_kubeconfig(kubeconfig, &mut files, &mut errors);
        }
        self.bundles.retain(|path, _| seen_paths.contains(path));

        let pool = ca_pool(&files);
        let pool_id = pool_identity(&pool);

        // Pass 1 (sequential, I/O): what each checked leaf needs, answered from the caches
        // where the same certificate, key and CA pool were checked before.
        let mut used_chains = HashSet::new();
        let mut used_keys = HashSet::new();
        let mut chain_jobs: Vec<((String, String), &ParsedCert, &str)> = Vec::new();
        let mut key_jobs: Vec<((String, String), Vec<u8>, &ParsedCert)> = Vec::new();
        // Per leaf: its key's cache entry, or the verdict when there is no key to compare.
        let mut leaf_keys: HashMap<String, Result<(String, String), KeyCheck>> = HashMap::new();
        for file in &files {
            let Some(cert) = file.certs.first().filter(|c| !c.is_ca) else {
                continue;
            };
            let chain_key = (cert.fingerprint.clone(), pool_id.clone());
            if used_chains.insert(chain_key.clone()) && !self.chains.contains_key(&chain_key) {
                chain_jobs.push((chain_key, cert, &file.path));
            }
            match self.key_bytes(&file.key) {
                Ok(bytes) => {
                    let key = (
                        hex::encode(Sha256::digest(&bytes)),
                        cert.fingerprint.clone(),
                    );
                    leaf_keys.insert(leaf_id(file), Ok(key.clone()));
                    if used_keys.insert(key.clone()) && !self.keys.contains_key(&key) {
                        key_jobs.push((key, bytes, cert));
                    }
                }
                Err(verdict) => {
                    leaf_keys.insert(leaf_id(file), Err(verdict));
                }
            }
        }

        // Pass 2 (parallel, CPU): signature checks and key derivations of what is new.
        let chain_results = parallel_map(&chain_jobs, |(_, cert, path)| {
            verify_leaf(&cert.der, nearest_first(&pool, path))
        });
        let key_results = parallel_map(&key_jobs, |(_, bytes, cert)| {
            match key_matches(bytes, &cert.public_key_bits) {
                Ok(true) => KeyCheck::Matches,
                Ok(false) => KeyCheck::Mismatch,
                Err(e) => KeyCheck::Unusable {
                    reason: e.to_string(),
                },
            }
        });
        for ((key, _, _), verdict) in chain_jobs.into_iter().zip(chain_results) {
            self.chains.insert(key, verdict);
        }
        for ((key, _, _), verdict) in key_jobs.into_iter().zip(key_results) {
            self.keys.insert(key, verdict);
        }

        // Pass 3: entries and problems, in file order.
        let mut certificates = Vec::new();
        for file in &files {
            for (index, cert) in file.certs.iter().enumerate() {
                let (chain, key) = if index == 0 && !cert.is_ca {
                    let chain = self
                        .chains
                        .get(&(cert.fingerprint.clone(), pool_id.clone()))
                        .cloned()
                        .expect("pass 2 left a chain verdict for every checked leaf");
                    let key = match leaf_keys.remove(&leaf_id(file)) {
                        Some(Ok(cache_key)) => self
                            .keys
                            .get(&cache_key)
                            .cloned()
                            .expect("pass 2 left a key verdict for every read key"),
                        Some(Err(verdict)) => verdict,
                        None => KeyCheck::Missing,
                    };
                    (chain, key)
                } else {
                    (ChainCheck::NotApplicable, KeyCheck::NotApplicable)
                };
                report_leaf_problems(&file.path, cert, &chain, &key, &mut errors);
                certificates.push(entry_of(file, file.first_index + index, cert, chain, key));
            }
        }
        self.chains.retain(|k, _| used_chains.contains(k));
        self.keys.retain(|k, _| used_keys.contains(k));

        certificates.sort_by(|a, b| a.path.cmp(&b.path).then(a.index.cmp(&b.index)));
        errors.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
        let backups = self.backups(&mut errors);
        Inventory {
            certificates,
            errors,
            backups,
        }
    }

    fn scan_dir(
        &mut self,
        dir: &str,
        files: &mut Vec<FileCerts>,
        errors: &mut Vec<FileError>,
        seen: &mut HashSet<PathBuf>,
    ) {
        let abs_dir = self.config.data_dir.join(dir);
        let entries = match fs::read_dir(&abs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                errors.push(FileError {
                    path: dir.to_owned(),
                    kind: ErrorKind::Unreadable,
                    reason: format!("cannot list folder: {e}"),
                });
                return;
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                Path::new(name)
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| CERT_EXTENSIONS.contains(&x))
            })
            .collect();
        names.sort();
        for name in names {
            let abs = abs_dir.join(&name);
            let rel = format!("{dir}/{name}");
            let bytes = match read_limited(&abs, self.config.max_file_size) {
                Ok(bytes) => bytes,
                Err((kind, reason)) => {
                    // A folder that merely carries a `.crt` name (like RKE2's own
                    // sub-folders never do) is still reported: it is not a certificate.
                    errors.push(FileError {
                        path: rel,
                        kind,
                        reason,
                    });
                    continue;
                }
            };
            seen.insert(abs.clone());
            let bundle = self.bundle_of(&abs, bytes);
            let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
            files.push(file_certs(
                rel,
                name.clone(),
                Origin::File,
                bundle,
                KeySource::Sibling(abs_dir.join(format!("{stem}.key"))),
                errors,
            ));
        }
    }

    fn scan_kubeconfig(
        &mut self,
        kubeconfig: &KubeconfigPath,
        files: &mut Vec<FileCerts>,
        errors: &mut Vec<FileError>,
    ) {
        let path_str = kubeconfig.path.display().to_string();
        let filename = kubeconfig
            .path
            .file_name()
            .map_or_else(|| path_str.clone(), |n| n.to_string_lossy().into_owned());
        let bytes = match read_limited(&kubeconfig.path, self.config.max_file_size) {
            Ok(bytes) => bytes,
            Err((ErrorKind::Unreadable, _))
                if kubeconfig.optional
                    && !kubeconfig.path.exists()
                    && !is_symlink(&kubeconfig.path) =>
            {
                return;
            }
            Err((kind, reason)) => {
                errors.push(FileError {
                    path: path_str,
                    kind,
                    reason,
                });
                return;
            }
        };
        let embedded = match embedded_certs(&bytes) {
            Ok(found) => found,
            Err(reason) => {
                errors.push(FileError {
                    path: path_str,
                    kind: ErrorKind::BadKubeconfig,
                    reason,
                });
                return;
            }
        };
        let mut emitted = 0;
        for item in embedded {
            let mut bundle = parse_bundle(&item.pem);
            // Name the field and entry: a kubeconfig holds several payloads.
            if let Some((_, reason)) = &mut bundle.problem {
                *reason = format!("{} of {:?}: {reason}", item.field, item.entry);
            }
            let key = item.key_pem.map_or(KeySource::None, KeySource::Embedded);
            let first_index = emitted;
            emitted += bundle.certs.len();
            let origin = Origin::Kubeconfig {
                field: item.field.to_owned(),
                entry: item.entry,
            };
            let mut file = file_certs(
                path_str.clone(),
                filename.clone(),
                origin,
                bundle,
                key,
                errors,
            );
            file.first_index = first_index;
            files.push(file);
        }
    }

    fn bundle_of(&mut self, abs: &Path, bytes: Vec<u8>) -> Bundle {
        if let Some((cached, bundle)) = self.bundles.get(abs)
            && *cached == bytes
        {
            return bundle.clone();
        }
        let bundle = parse_bundle(&bytes);
        self.bundles
            .insert(abs.to_path_buf(), (bytes, bundle.clone()));
        bundle
    }

    /// The bytes of a leaf's key, or the verdict when there is nothing to compare.
    fn key_bytes(&self, source: &KeySource) -> Result<Vec<u8>, KeyCheck> {
        match source {
            KeySource::None => Err(KeyCheck::Missing),
            KeySource::Embedded(bytes) => Ok(bytes.clone()),
            KeySource::Sibling(abs) => match read_limited(abs, self.config.max_file_size) {
                Ok(bytes) => Ok(bytes),
                Err(_) if !abs.exists() && !is_symlink(abs) => Err(KeyCheck::Missing),
                Err((_, reason)) => Err(KeyCheck::Unusable { reason }),
            },
        }
    }

    fn backups(&self, errors: &mut Vec<FileError>) -> Vec<Backup> {
        let mut backups = Vec::new();
        for parent in BACKUP_PARENTS {
            let entries = match fs::read_dir(self.config.data_dir.join(parent)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(FileError {
                        path: parent.to_owned(),
                        kind: ErrorKind::Unreadable,
                        reason: format!("cannot list folder: {e}"),
                    });
                    continue;
                }
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if let (true, Some(created)) = (is_dir, layout::backup_time(&name)) {
                    backups.push(Backup {
                        path: format!("{parent}/{name}"),
                        created,
                    });
                }
            }
        }
        backups.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.path.cmp(&b.path)));
        backups
    }
}

/// Identifies a leaf file within one scan (a kubeconfig holds several payloads).
fn leaf_id(file: &FileCerts) -> String {
    match &file.origin {
        Origin::File => file.path.clone(),
        Origin::Kubeconfig { field, entry } => format!("{}#{field}#{entry}", file.path),
    }
}

/// Below this many jobs, threads cost more than they save.
const PARALLEL_THRESHOLD: usize = 64;

/// `f` over `items`, split across the machine's cores when there are many (a first scan
/// of a large tree); order is kept.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if items.len() < PARALLEL_THRESHOLD || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn file_certs(
    path: String,
    filename: String,
    origin: Origin,
    bundle: Bundle,
    key: KeySource,
    errors: &mut Vec<FileError>,
) -> FileCerts {
    if let Some((kind, reason)) = bundle.problem {
        errors.push(FileError {
            path: path.clone(),
            kind,
            reason,
        });
    }
    FileCerts {
        path,
        filename,
        origin,
        certs: bundle.certs,
        key,
        first_index: 0,
    }
}

/// The tree's CAs: the first certificate of each file when it is a CA. Chain entries inside
/// leaf files are deliberately not trusted: a leaf must verify against the tree's own CA.
fn ca_pool(files: &[FileCerts]) -> Vec<PoolCa> {
    files
        .iter()
        .filter(|f| f.origin == Origin::File)
        .filter_map(|f| {
            let first = f.certs.first()?;
            if first.is_ca {
                PoolCa::new(f.path.clone(), first.der.clone())
            } else {
                None
            }
        })
        .collect()
}

/// The pool ordered so CAs nearest to `path` come first: on a server, `agent/client-ca.crt`
/// and `server/tls/client-ca.crt` hold the same CA, and an agent leaf should name the former.
fn nearest_first<'a>(pool: &'a [PoolCa], path: &str) -> Vec<&'a PoolCa> {
    let shared = |ca: &PoolCa| {
        ca.path
            .split('/')
            .zip(path.split('/'))
            .take_while(|(a, b)| a == b)
            .count()
    };
    let mut ordered: Vec<&PoolCa> = pool.iter().collect();
    ordered.sort_by_key(|ca| std::cmp::Reverse(shared(ca)));
    ordered
}

fn pool_identity(pool: &[PoolCa]) -> String {
    let mut hasher = Sha256::new();
    for ca in pool {
        hasher.update(&ca.der);
    }
    hex::encode(hasher.finalize())
}

fn report_leaf_problems(
    path: &str,
    cert: &ParsedCert,
    chain: &ChainCheck,
    key: &KeyCheck,
    errors: &mut Vec<FileError>,
) {
    match chain {
        ChainCheck::UnknownIssuer => errors.push(FileError {
            path: path.to_owned(),
            kind: ErrorKind::ChainInvalid,
            reason: format!("no CA in the tree matches the issuer {:?}", cert.issuer),
        }),
        ChainCheck::BadSignature { ca_path } => errors.push(FileError {
            path: path.to_owned(),
            kind: ErrorKind::ChainInvalid,
            reason: format!(
                "not signed by the key of {ca_path} (issuer {:?})",
                cert.issuer
            ),
        }),
        ChainCheck::NotApplicable | ChainCheck::Verified { .. } => {}
    }
    match key {
        KeyCheck::Mismatch => errors.push(FileError {
            path: path.to_owned(),
            kind: ErrorKind::KeyMismatch,
            reason: "the private key beside it belongs to another certificate".to_owned(),
        }),
        KeyCheck::Unusable { reason } => errors.push(FileError {
            path: path.to_owned(),
            kind: ErrorKind::BadKey,
            reason: format!("its private key cannot be read: {reason}"),
        }),
        KeyCheck::NotApplicable | KeyCheck::Missing | KeyCheck::Matches => {}
    }
}

fn entry_of(
    file: &FileCerts,
    index: usize,
    cert: &ParsedCert,
    chain: ChainCheck,
    key: KeyCheck,
) -> CertEntry {
    CertEntry {
        path: file.path.clone(),
        filename: file.filename.clone(),
        index,
        origin: file.origin.clone(),
        subject: cert.subject.clone(),
        subject_cn: cert.subject_cn.clone(),
        issuer: cert.issuer.clone(),
        serial: cert.serial.clone(),
        sans: cert.sans.clone(),
        usages: cert.usages.clone(),
        is_ca: cert.is_ca,
        not_before: cert.not_before,
        not_after: cert.not_after,
        chain,
        key,
        fingerprint: cert.fingerprint.clone(),
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Reads a regular file of at most `max` bytes, following symlinks, classifying failures.
///
/// Opens with `O_NONBLOCK` and checks the type first so a FIFO or device placed in the tree
/// cannot block the scan.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, (ErrorKind, String)> {
    let meta = fs::metadata(path).map_err(|e| classify_open_error(path, &e))?;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err((
            ErrorKind::Unreadable,
            format!("not a regular file ({what})"),
        ));
    }
    if meta.len() > max {
        return Err((
            ErrorKind::TooLarge,
            format!("file is {} bytes, over the {max}-byte limit", meta.len()),
        ));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| classify_open_error(path, &e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| (ErrorKind::Unreadable, format!("read failed: {e}")))?;
    if bytes.len() as u64 > max {
        return Err((
            ErrorKind::TooLarge,
            format!("file grew over the {max}-byte limit while reading"),
        ));
    }
    Ok(bytes)
}

fn classify_open_error(path: &Path, e: &io::Error) -> (ErrorKind, String) {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return (
            ErrorKind::SymlinkLoop,
            "symlink loop (too many levels of symbolic links)".to_owned(),
        );
    }
    if e.kind() == io::ErrorKind::NotFound && is_symlink(path) {
        let target =
            fs::read_link(path).map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
        return (
            ErrorKind::DanglingSymlink,
            format!("dangling symlink to {target}"),
        );
    }
    (ErrorKind::Unreadable, format!("cannot open: {e}"))
}
