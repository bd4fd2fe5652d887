//! RKE2 data-dir generator: realistic server and agent trees for tests.
//!
//! [`generate`] writes, under [`TreeSpec::data_dir`], every file `reference/rke2.md` lists for
//! the node's role, issued from a [`ClusterCas`] shared by all nodes of a simulated cluster:
//! CA files, leaves (leaf followed by its CA, ECDSA P-256 keys in SEC1 `EC PRIVATE KEY` PEM),
//! `service.key` (RSA), the agent's CA copies and kubeconfigs, `server/cred/*.kubeconfig`,
//! `dynamic-cert.json`, `server/token`; and, when [`TreeSpec::config_dir`] is set, `rke2.yaml`
//! (servers) and `config.yaml`. Per-file [`Validity`] overrides and [`Breakage`]s let tests
//! build expiring, expired, not-yet-valid and corrupt trees. The returned [`GeneratedTree`]
//! lists every file written with the serial and validity of each certificate.
//!
//! It must not decide anything RKE2 would not: it writes files, it does not check them.

mod breakage;
mod cas;
mod catalog;
pub(crate) mod files;
pub mod pem;
mod spec;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

pub use cas::{CA_LIFETIME_DAYS, CaKind, ClusterCa, ClusterCas, NodeKey};
pub use catalog::{Eku, LeafDef, SERVER_ONLY_KEYS, leaves, supervisor_cert};
pub use spec::{Breakage, LEAF_LIFETIME, Validity, parse_assignment, parse_duration};

/// Where the supervisor's dynamiclistener certificate is cached on servers.
pub const DYNAMIC_CERT_REL: &str = "server/tls/dynamic-cert.json";
/// The API server address kubeconfigs use on every node (servers: the apiserver; agents:
/// the local load balancer).
pub const LOCAL_APISERVER: &str = "https://127.0.0.1:6443";

/// Which RKE2 service the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `rke2-server`: control plane + etcd + agent components.
    Server,
    /// `rke2-agent`: agent components only.
    Agent,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "server" => Ok(Role::Server),
            "agent" => Ok(Role::Agent),
            other => Err(format!("unknown role {other:?} (server | agent)")),
        }
    }
}

/// What to generate for one node.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Server or agent.
    pub role: Role,
    /// Node name (kubelet CN and SANs).
    pub node_name: String,
    /// Node IP (SANs, `config.yaml`).
    pub node_ip: IpAddr,
    /// Where to write the data dir (RKE2's `/var/lib/rancher/rke2`).
    pub data_dir: PathBuf,
    /// The data dir as the node sees it, used inside kubeconfigs (e.g.
    /// `/var/lib/rancher/rke2` when `data_dir` is bind-mounted there); defaults to `data_dir`.
    pub node_data_dir: Option<PathBuf>,
    /// Where to write `rke2.yaml` and `config.yaml` (RKE2's `/etc/rancher/rke2`); nothing is
    /// written outside the data dir when `None`.
    pub config_dir: Option<PathBuf>,
    /// The simulated current time.
    pub now: OffsetDateTime,
    /// Extra `--tls-san` values (DNS names or IPs) for the server certificates.
    pub tls_sans: Vec<String>,
    /// For agents: the `server:` URL written to `config.yaml` (with the cluster token).
    pub server_url: Option<String>,
    /// Validity overrides by certificate path relative to the data dir (leaf certificates and
    /// `server/tls/dynamic-cert.json`); every other leaf is [`Validity::Fresh`].
    pub validity: BTreeMap<String, Validity>,
    /// Breakages by path relative to the data dir (any generated file).
    pub breakages: BTreeMap<String, Breakage>,
}

impl TreeSpec {
    /// A spec with fresh certificates, no config dir and no overrides.
    #[must_use]
    pub fn new(
        role: Role,
        node_name: impl Into<String>,
        node_ip: IpAddr,
        data_dir: impl Into<PathBuf>,
        now: OffsetDateTime,
    ) -> TreeSpec {
        TreeSpec {
            role,
            node_name: node_name.into(),
            node_ip,
            data_dir: data_dir.into(),
            node_data_dir: None,
            config_dir: None,
            now,
            tls_sans: Vec::new(),
            server_url: None,
            validity: BTreeMap::new(),
            breakages: BTreeMap::new(),
        }
    }

    /// Override one certificate's validity.
    #[must_use]
    pub fn with_validity(mut self, rel: impl Into<String>, validity: Validity) -> TreeSpec {
        self.validity.insert(rel.into(), validity);
        self
    }

    /// Break one file.
    #[must_use]
    pub fn with_breakage(mut self, rel: impl Into<String>, breakage: Breakage) -> TreeSpec {
        self.breakages.insert(rel.into(), breakage);
        self
    }

    /// Also write `rke2.yaml` / `config.yaml` into `dir`.
    #[must_use]
    pub fn with_config_dir(mut self, dir: impl Into<PathBuf>) -> TreeSpec {
        self.config_dir = Some(dir.into());
        self
    }

    /// Absolute path of `rel` as the node sees it (RKE2 writes absolute paths).
    fn node_path(&self, rel: &str) -> String {
        let base = match &self.node_data_dir {
            Some(dir) => dir.clone(),
            None => std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone()),
        };
        base.join(rel).display().to_string()
    }
}

/// Generator failures.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Writing or reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen refused parameters or failed to sign.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A key could not be generated, converted or parsed.
    #[error("key: {0}")]
    Key(String),
    /// A CA file could not be used by [`ClusterCas::load`].
    #[error("CA {}: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A validity override or breakage names a file this role does not have.
    #[error("{0}: no such generated file for this role")]
    UnknownPath(String),
    /// A validity override names a file that is not a leaf certificate.
    #[error("{0}: validity overrides apply to leaf certificates only")]
    NotALeaf(String),
    /// `key-mismatch` / `foreign-issuer` name a file that is not a leaf (or its key).
    #[error("{path}: breakage {breakage} applies to leaf certificates only")]
    BreakageNeedsLeaf {
        /// The path.
        path: String,
        /// The breakage name.
        breakage: &'static str,
    },
}

/// What a generated file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `server/tls/<ca>.crt`.
    CaCert(CaKind),
    /// `server/tls/<ca>.key`.
    CaKey(CaKind),
    /// `server/tls/{client,server}-ca.nochain.crt`.
    CaNoChain(CaKind),
    /// `agent/{client,server}-ca.crt`.
    AgentCaCopy(CaKind),
    /// A leaf certificate file (leaf + CA).
    LeafCert,
    /// A leaf's key.
    LeafKey,
    /// A key RKE2 keeps without a certificate (`server/tls/client-kubelet.key`, ...).
    KeyOnly,
    /// `service.key` / `service.current.key` (RSA).
    ServiceKey,
    /// A kubeconfig referencing certificates by path.
    Kubeconfig,
    /// `server/tls/dynamic-cert.json` (supervisor certificate in a Secret).
    DynamicCert,
    /// `server/token`.
    Token,
    /// An (empty) directory, e.g. `server/tls/temporary-certs`.
    Directory,
}

/// Facts about one certificate the generator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number (RKE2 uses random serials below 2^63; CAs use 0).
    pub serial: u64,
    /// Subject CN.
    pub subject_cn: String,
    /// Subject O, if any.
    pub subject_o: Option<String>,
    /// Issuer CN.
    pub issuer_cn: String,
    /// NotBefore (second precision).
    pub not_before: OffsetDateTime,
    /// NotAfter (second precision).
    pub not_after: OffsetDateTime,
    /// The key file, relative to the data dir, when there is one.
    pub key_rel: Option<String>,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// What it is.
    pub kind: FileKind,
    /// The (first) certificate it holds, for certificate files.
    pub cert: Option<CertInfo>,
    /// The breakage applied to it, if any.
    pub breakage: Option<Breakage>,
}

/// Everything [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedTree {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The config dir, when one was written.
    pub config_dir: Option<PathBuf>,
    /// Files under the data dir by relative path.
    pub files: BTreeMap<String, GeneratedFile>,
    /// Files written under the config dir (absolute paths).
    pub config_files: Vec<PathBuf>,
}

impl GeneratedTree {
    /// Absolute path of a data-dir-relative file.
    #[must_use]
    pub fn path(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }

    /// The certificate facts of a file.
    #[must_use]
    pub fn cert(&self, rel: &str) -> Option<&CertInfo> {
        self.files.get(rel).and_then(|f| f.cert.as_ref())
    }

    /// Leaf certificate files and their facts.
    pub fn leaves(&self) -> impl Iterator<Item = (&str, &CertInfo)> {
        self.files
            .iter()
            .filter_map(|(rel, f)| match (f.kind, &f.cert) {
                (FileKind::LeafCert, Some(c)) => Some((rel.as_str(), c)),
                _ => None,
            })
    }
}

/// Collects writes and their records.
struct Writer<'a> {
    spec: &'a TreeSpec,
    files: BTreeMap<String, GeneratedFile>,
}

impl Writer<'_> {
    fn write(
        &mut self,
        rel: &str,
        contents: &[u8],
        mode: u32,
        kind: FileKind,
        cert: Option<CertInfo>,
    ) -> Result<(), TreeError> {
        let path = self.spec.data_dir.join(rel);
        write_file(&path, contents, mode)?;
        self.files.insert(
            rel.to_owned(),
            GeneratedFile {
                kind,
                cert,
                breakage: None,
            },
        );
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TreeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(path, contents).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Mode RKE2 gives certificate files.
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode RKE2 gives keys, kubeconfigs, the token and the config.
pub(crate) const SECRET_MODE: u32 = 0o600;

fn ca_info(ca: &ClusterCa) -> CertInfo {
    CertInfo {
        serial: 0,
        subject_cn: ca.cn.clone(),
        subject_o: None,
        issuer_cn: ca.cn.clone(),
        not_before: ca.not_before,
        not_after: ca.not_after,
        key_rel: None,
    }
}

fn random_serial() -> u64 {
    // NewSignedCert: uniform in [0, MaxInt64); avoid 0, which RKE2 reserves for CAs.
    (rand::random::<u64>() >> 1).max(1)
}

/// Sign `def` with `ca` for `key`, valid over `window`; returns the file content (leaf + CA)
/// and the facts.
pub(crate) fn issue(
    def: &LeafDef,
    key: &NodeKey,
    ca: &ClusterCa,
    window: (OffsetDateTime, OffsetDateTime),
) -> Result<(String, CertInfo), TreeError> {
    let serial = random_serial();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // Go's pkix.Name marshals O before CN.
    if let Some(org) = &def.org {
        dn.push(DnType::OrganizationName, org.clone());
    }
    dn.push(DnType::CommonName, def.cn.clone());
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(
        serial.to_be_bytes().as_slice().trim_ascii_start_zeros(),
    ));
    params.not_before = window.0;
    params.not_after = window.1;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = def
        .ekus
        .iter()
        .map(|e| match e {
            Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    params.subject_alt_names = def
        .dns
        .iter()
        .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
        .chain(def.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key.pair, &ca.issuer()?)?;
    let content = pem::cert_pem(cert.der()) + &ca.cert_pem();
    let info = CertInfo {
        serial,
        subject_cn: def.cn.clone(),
        subject_o: def.org.clone(),
        issuer_cn: ca.cn.clone(),
        not_before: cas::truncate(window.0),
        not_after: cas::truncate(window.1),
        key_rel: (!def.key_rel.is_empty()).then(|| def.key_rel.clone()),
    };
    Ok((content, info))
}

/// Strip leading zero bytes of a big-endian integer (keeping at least one byte).
trait TrimZeros {
    fn trim_ascii_start_zeros(&self) -> &[u8];
}

impl TrimZeros for [u8] {
    fn trim_ascii_start_zeros(&self) -> &[u8] {
        let first = self
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(self.len().saturating_sub(1));
        &self[first..]
    }
}

/// Write the tree for `spec` from `cas`. See the module docs for what is written.
pub fn generate(spec: &TreeSpec, cas: &ClusterCas) -> Result<GeneratedTree, TreeError> {
    let leaf_defs = catalog::leaves(spec);
    let supervisor = (spec.role == Role::Server).then(|| catalog::supervisor_cert(spec));
    validate_overrides(spec, &leaf_defs, supervisor.as_ref())?;

    let mut w = Writer {
        spec,
        files: BTreeMap::new(),
    };

    if spec.role == Role::Server {
        write_server_static(&mut w, cas)?;
    }
    for kind in [CaKind::Client, CaKind::Server] {
        let rel = match kind {
            CaKind::Client => "agent/client-ca.crt",
            _ => "agent/server-ca.crt",
        };
        let ca = cas.ca(kind);
        w.write(
            rel,
            ca.cert_pem().as_bytes(),
            CERT_MODE,
            FileKind::AgentCaCopy(kind),
            Some(ca_info(ca)),
        )?;
    }

    let mut admin_material = None;
    for def in &leaf_defs {
        let (cert_pem, key_pem) = write_leaf(&mut w, def, cas)?;
        if def.cert_rel == "server/tls/client-admin.crt" {
            admin_material = Some((cert_pem, key_pem));
        }
    }

    if let Some(def) = &supervisor {
        let key = NodeKey::generate()?;
        let ca = cas.ca(def.ca);
        let validity = spec
            .validity
            .get(&def.cert_rel)
            .copied()
            .unwrap_or(Validity::Fresh);
        let (chain, info) = issue(
            def,
            &key,
            ca,
            validity.window(spec.now, LEAF_LIFETIME, ca.not_before),
        )?;
        let json = files::dynamic_cert_json(&chain, &key.sec1_pem, &def.cn);
        w.write(
            &def.cert_rel,
            json.as_bytes(),
            SECRET_MODE,
            FileKind::DynamicCert,
            Some(info),
        )?;
    }

    write_kubeconfigs(&mut w)?;

    let mut config_files = Vec::new();
    if let Some(dir) = &spec.config_dir {
        let token = cas.token();
        let server_url = spec.server_url.as_deref();
        let config = files::node_config(
            &spec.node_name,
            &spec.node_ip.to_string(),
            &spec.tls_sans,
            server_url,
            server_url.map(|_| token.as_str()),
        );
        let path = dir.join("config.yaml");
        write_file(&path, config.as_bytes(), SECRET_MODE)?;
        config_files.push(path);
        if let Some((cert_pem, key_pem)) = &admin_material {
            let kubeconfig = files::admin_kubeconfig(
                LOCAL_APISERVER,
                &cas.ca(CaKind::Server).cert_pem(),
                cert_pem,
                key_pem,
            );
            let path = dir.join("rke2.yaml");
            write_file(&path, kubeconfig.as_bytes(), SECRET_MODE)?;
            config_files.push(path);
        }
    }

    for (rel, breakage) in &spec.breakages {
        let Some(file) = w.files.get_mut(rel) else {
            return Err(TreeError::UnknownPath(rel.clone()));
        };
        file.breakage = Some(*breakage);
        if matches!(breakage, Breakage::KeyMismatch | Breakage::ForeignIssuer) {
            // Applied while the leaf was issued.
            continue;
        }
        breakage::apply(&spec.data_dir.join(rel), *breakage, file.kind)?;
    }

    Ok(GeneratedTree {
        data_dir: spec.data_dir.clone(),
        config_dir: spec.config_dir.clone(),
        files: w.files,
        config_files,
    })
}

/// Reject overrides that cannot apply before writing anything.
fn validate_overrides(
    spec: &TreeSpec,
    leaf_defs: &[LeafDef],
    supervisor: Option<&LeafDef>,
) -> Result<(), TreeError> {
    let is_leaf_cert = |rel: &str| {
        leaf_defs.iter().any(|d| d.cert_rel == rel) || supervisor.is_some_and(|d| d.cert_rel == rel)
    };
    for rel in spec.validity.keys() {
        if !is_leaf_cert(rel) {
            return Err(TreeError::NotALeaf(rel.clone()));
        }
    }
    for (rel, breakage) in &spec.breakages {
        let ok = match breakage {
            Breakage::KeyMismatch => leaf_defs
                .iter()
                .any(|d| d.cert_rel == *rel || d.key_rel == *rel),
            Breakage::ForeignIssuer => leaf_defs.iter().any(|d| d.cert_rel == *rel),
            _ => true,
        };
        if !ok {
            return Err(TreeError::BreakageNeedsLeaf {
                path: rel.clone(),
                breakage: breakage.name(),
            });
        }
    }
    Ok(())
}

/// Write one leaf's certificate and key; returns the (certificate file, key file) contents as
/// RKE2 would have written them before any file-level breakage.
fn write_leaf(
    w: &mut Writer<'_>,
    def: &LeafDef,
    cas: &ClusterCas,
) -> Result<(String, String), TreeError> {
    let spec = w.spec;
    let key = NodeKey::generate()?;
    let validity = spec
        .validity
        .get(&def.cert_rel)
        .copied()
        .unwrap_or(Validity::Fresh);
    let breakage_of = |rel: &str| spec.breakages.get(rel).copied();
    let foreign;
    let ca = if breakage_of(&def.cert_rel) == Some(Breakage::ForeignIssuer) {
        let real = cas.ca(def.ca);
        foreign = ClusterCa::generate_named(def.ca, "foreign", real.not_before, real.not_after)?;
        &foreign
    } else {
        cas.ca(def.ca)
    };
    let window = validity.window(spec.now, LEAF_LIFETIME, ca.not_before);
    let (chain, info) = issue(def, &key, ca, window)?;
    let key_mismatch = breakage_of(&def.cert_rel) == Some(Breakage::KeyMismatch)
        || breakage_of(&def.key_rel) == Some(Breakage::KeyMismatch);
    let key_pem = if key_mismatch {
        NodeKey::generate()?.sec1_pem
    } else {
        key.sec1_pem
    };
    w.write(
        &def.cert_rel,
        chain.as_bytes(),
        CERT_MODE,
        FileKind::LeafCert,
        Some(info),
    )?;
    w.write(
        &def.key_rel,
        key_pem.as_bytes(),
        SECRET_MODE,
        FileKind::LeafKey,
        None,
    )?;
    Ok((chain, key_pem))
}

/// CA files, `service.key`, token, key-only files and directories of a server.
fn write_server_static(w: &mut Writer<'_>, cas: &ClusterCas) -> Result<(), TreeError> {
    for ca in cas.iter() {
        w.write(
            ca.kind.cert_rel(),
            ca.cert_pem().as_bytes(),
            CERT_MODE,
            FileKind::CaCert(ca.kind),
            Some(ca_info(ca)),
        )?;
        w.write(
            ca.kind.key_rel(),
            ca.key.sec1_pem.as_bytes(),
            SECRET_MODE,
            FileKind::CaKey(ca.kind),
            None,
        )?;
    }
    for (rel, kind) in [
        ("server/tls/client-ca.nochain.crt", CaKind::Client),
        ("server/tls/server-ca.nochain.crt", CaKind::Server),
    ] {
        let ca = cas.ca(kind);
        w.write(
            rel,
            ca.cert_pem().as_bytes(),
            CERT_MODE,
            FileKind::CaNoChain(kind),
            Some(ca_info(ca)),
        )?;
    }
    for rel in ["server/tls/service.key", "server/tls/service.current.key"] {
        w.write(
            rel,
            cas.service_key_pem.as_bytes(),
            SECRET_MODE,
            FileKind::ServiceKey,
            None,
        )?;
    }
    for rel in catalog::SERVER_ONLY_KEYS {
        let key = NodeKey::generate()?;
        w.write(
            rel,
            key.sec1_pem.as_bytes(),
            SECRET_MODE,
            FileKind::KeyOnly,
            None,
        )?;
    }
    w.write(
        "server/token",
        format!("{}\n", cas.token()).as_bytes(),
        SECRET_MODE,
        FileKind::Token,
        None,
    )?;
    let temp = w.spec.data_dir.join("server/tls/temporary-certs");
    std::fs::create_dir_all(&temp).map_err(io_err(&temp))?;
    w.files.insert(
        "server/tls/temporary-certs".to_owned(),
        GeneratedFile {
            kind: FileKind::Directory,
            cert: None,
            breakage: None,
        },
    );
    Ok(())
}

/// `server/cred/*.kubeconfig` (servers) and the agent kubeconfigs, pointing at files by path.
fn write_kubeconfigs(w: &mut Writer<'_>) -> Result<(), TreeError> {
    for (rel, text) in kubeconfig_files(w.spec) {
        w.write(
            rel,
            text.as_bytes(),
            SECRET_MODE,
            FileKind::Kubeconfig,
            None,
        )?;
    }
    Ok(())
}

/// The kubeconfigs of a node (path relative to the data dir, content): `server/cred/*` on
/// servers, the agent's three everywhere.
pub(crate) fn kubeconfig_files(spec: &TreeSpec) -> Vec<(&'static str, String)> {
    let mut configs: Vec<(&str, &str, &str)> = Vec::new();
    if spec.role == Role::Server {
        configs.extend([
            (
                "server/cred/admin.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-admin",
            ),
            (
                "server/cred/supervisor.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-supervisor",
            ),
            (
                "server/cred/controller.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-controller",
            ),
            (
                "server/cred/scheduler.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-scheduler",
            ),
            (
                "server/cred/api-server.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-kube-apiserver",
            ),
            (
                "server/cred/cloud-controller.kubeconfig",
                "server/tls/server-ca.crt",
                "server/tls/client-rke2-cloud-controller",
            ),
        ]);
    }
    configs.extend([
        (
            "agent/kubelet.kubeconfig",
            "agent/server-ca.crt",
            "agent/client-kubelet",
        ),
        (
            "agent/kubeproxy.kubeconfig",
            "agent/server-ca.crt",
            "agent/client-kube-proxy",
        ),
        (
            "agent/rke2controller.kubeconfig",
            "agent/server-ca.crt",
            "agent/client-rke2-controller",
        ),
    ]);
    configs
        .into_iter()
        .map(|(rel, ca, base)| {
            let text = files::path_kubeconfig(
                LOCAL_APISERVER,
                &spec.node_path(ca),
                &spec.node_path(&format!("{base}.crt")),
                &spec.node_path(&format!("{base}.key")),
            );
            (rel, text)
        })
        .collect()
}
