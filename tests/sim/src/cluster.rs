//! Simulated RKE2 clusters on proving-ground nodes ([`rke2ops_ground`]): data dirs from shared
//! cluster CAs, `config.yaml`, the simulated `rke2` binary and RKE2's unit files installed as
//! RKE2's tarball installs them, and the services started through systemd.
//!
//! Two levels:
//! - per node, for tests that drive each step: [`install`], [`write_node`], [`start`],
//!   [`stop`], [`set_fault`], [`set_env`], [`set_version`];
//! - [`SimCluster::boot`]: boots 1 or 3 (or any number of) servers and optional agents and
//!   starts them in RKE2's order (first server, then each joining server once the previous is
//!   active, then agents).
//!
//! Layout on a node: `/usr/local/bin/rke2` (built `rke2`), units in
//! `/usr/local/lib/systemd/system/` (tarball method), enabled for `multi-user.target`;
//! data dir `/var/lib/rancher/rke2`; config `/etc/rancher/rke2/config.yaml` with `node-name`,
//! `node-ip`, and on joining servers and agents `server: https://<first server>:9345` and
//! `token:`; agents also get the CAs in `/var/lib/rancher/rke2/agent/.sim-ca/` (simulator
//! only, see [`crate::server`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::faults::FAULTS_DIR;
use super::rpm::{self, PackageTool, RpmError};
use super::server::AGENT_SIM_CA_DIR;
use super::tree::{self, Breakage, ClusterCas, GeneratedTree, Role, TreeError, TreeSpec, Validity};
use super::version::VERSION_FILE;
use rke2ops_ground::{GroundError, Node, NodeSpec, built_binary};

/// Where the binary goes on a node.
pub const RKE2_BIN: &str = "/usr/local/bin/rke2";
/// Where RKE2's tarball puts its units.
pub const UNIT_DIR: &str = "/usr/local/lib/systemd/system";
/// The data dir on a node.
pub const DATA_DIR: &str = "/var/lib/rancher/rke2";
/// The config dir on a node.
pub const CONFIG_DIR: &str = "/etc/rancher/rke2";
/// Default time [`start`] waits for `active`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures of the helper.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The proving ground failed (boot, exec, file, timeout).
    #[error(transparent)]
    Ground(#[from] GroundError),
    /// Writing a data dir failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Installing RKE2's packages failed.
    #[error(transparent)]
    Rpm(#[from] Box<RpmError>),
}

impl From<RpmError> for ClusterError {
    fn from(e: RpmError) -> Self {
        Self::Rpm(Box::new(e))
    }
}

/// The unit name for a role.
#[must_use]
pub fn unit_name(role: Role) -> &'static str {
    match role {
        Role::Server => "rke2-server.service",
        Role::Agent => "rke2-agent.service",
    }
}

/// The unit file in this repository (`tests/sim/units/`).
#[must_use]
pub fn unit_file(role: Role) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("units")
        .join(unit_name(role))
}

/// Installs the built `rke2` as `/usr/local/bin/rke2` and both unit files into
/// `/usr/local/lib/systemd/system/`, reloads systemd and enables the role's unit (not
/// started). Needs `cargo build -p rke2ops-sim` first.
pub fn install(node: &Node, role: Role) -> Result<(), ClusterError> {
    node.install_binary(built_binary("rke2"), RKE2_BIN)?;
    for r in [Role::Server, Role::Agent] {
        let file = unit_file(r);
        let text = std::fs::read_to_string(&file).map_err(|source| TreeError::Io {
            path: file.clone(),
            source,
        })?;
        node.write_file(Path::new(UNIT_DIR).join(unit_name(r)), text)?;
    }
    // The tarball's `share/rke2/` (install.sh untars the whole bundle into the prefix).
    for (name, text) in super::release::SHARE_FILES {
        node.write_file(Path::new("/usr/local/share/rke2").join(name), text)?;
    }
    // RKE2 unpacks kubectl (with crictl and ctr) into `<data-dir>/bin`; the runbook calls it
    // from there. The simulator has no kubectl of its own: it links the machine's real one.
    node.sh(&format!(
        "mkdir -p {DATA_DIR}/bin && ln -sfn {HOST_KUBECTL} {DATA_DIR}/bin/kubectl"
    ))?;
    node.systemctl(&["daemon-reload"])?;
    node.systemctl(&["enable", unit_name(role)])?;
    Ok(())
}

/// Where an RPM node gets its packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpmSource {
    /// The repositories under this URL (`<mirror base_url>/rpm/stable`, [`rpm::RpmRepo::url`]).
    Repo(String),
    /// An air-gap folder of `.rpm` files ([`rpm::RpmRepo::airgap_dir`], for the version
    /// installed).
    AirGap(PathBuf),
}

/// Installs RKE2 of `version` on `node` (booted with [`rpm::rpm_node_spec`]) from packages
/// with `tool`, like [`install`] does from the tarball: the package's unit
/// `/usr/lib/systemd/system/rke2-<role>.service` and `/usr/bin/rke2` (no `/usr/local/bin/rke2`),
/// the kubectl link, daemon-reload, the role's unit enabled (not started).
pub fn install_rpm(
    node: &Node,
    role: Role,
    tool: PackageTool,
    source: &RpmSource,
    version: &str,
) -> Result<(), ClusterError> {
    match source {
        RpmSource::Repo(url) => rpm::install_rke2_rpm(node, url, version, role, tool)?,
        RpmSource::AirGap(dir) => rpm::install_rke2_rpm_airgap(node, dir, version, role, tool)?,
    }
    node.sh(&format!(
        "mkdir -p {DATA_DIR}/bin && ln -sfn {HOST_KUBECTL} {DATA_DIR}/bin/kubectl"
    ))?;
    node.systemctl(&["daemon-reload"])?;
    node.systemctl(&["enable", unit_name(role)])?;
    Ok(())
}

/// How [`SimCluster::boot_with_options`] installs nodes. The default installs every node from
/// the tarball (as [`SimCluster::boot`]); [`BootOptions::rpm_node`] names nodes installed from
/// packages instead.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Node name (`server-1`, `agent-2`...) → the package manager that installs it.
    pub rpm_nodes: BTreeMap<String, PackageTool>,
    /// Where RPM nodes get their packages; required when `rpm_nodes` is not empty.
    pub rpm_source: Option<RpmSource>,
    /// The version RPM nodes install; default [`super::release::NEW_VERSION`] (what a
    /// tarball node's simulator reports).
    pub rpm_version: Option<String>,
    /// Prefix of every node's name (`east-` gives `east-server-1`...), so that two clusters
    /// can share one proving ground and one hub.
    pub name_prefix: String,
}

impl BootOptions {
    /// Installs node `name` with `tool` from packages.
    #[must_use]
    pub fn rpm_node(mut self, name: &str, tool: PackageTool) -> Self {
        self.rpm_nodes.insert(name.to_owned(), tool);
        self
    }

    /// RPM nodes use the repositories under `url` (`<mirror base_url>/rpm/stable`).
    #[must_use]
    pub fn rpm_repo(mut self, url: impl Into<String>) -> Self {
        self.rpm_source = Some(RpmSource::Repo(url.into()));
        self
    }

    /// RPM nodes install the `.rpm` files of the air-gap folder `dir`.
    #[must_use]
    pub fn rpm_airgap(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rpm_source = Some(RpmSource::AirGap(dir.into()));
        self
    }

    /// RPM nodes install `version`.
    #[must_use]
    pub fn rpm_version(mut self, version: &str) -> Self {
        self.rpm_version = Some(version.to_owned());
        self
    }

    /// Names the nodes `<prefix>server-1`... (see [`BootOptions::name_prefix`]).
    #[must_use]
    pub fn name_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.name_prefix);
        self
    }

    /// Boots node `name` as these options say (RPM nodes with [`rpm::rpm_node_spec`]).
    fn boot_node(&self, name: &str) -> Result<(Node, Option<PackageTool>), ClusterError> {
        let tool = self.rpm_nodes.get(name).copied();
        let Some(tool) = tool else {
            let node = Node::boot(NodeSpec::new(name))?;
            return Ok((node, None));
        };
        let node = Node::boot(rpm::rpm_node_spec(NodeSpec::new(name)))?;
        Ok((node, Some(tool)))
    }

    fn install(
        &self,
        node: &Node,
        role: Role,
        tool: Option<PackageTool>,
    ) -> Result<(), ClusterError> {
        let Some(tool) = tool else {
            return install(node, role);
        };
        let source = self.rpm_source.as_ref().ok_or_else(|| {
            ClusterError::Rpm(Box::new(RpmError::Version(format!(
                "no rpm_source for RPM node {}",
                node.name()
            ))))
        })?;
        let version = self
            .rpm_version
            .as_deref()
            .unwrap_or(super::release::NEW_VERSION);
        install_rpm(node, role, tool, source, version)
    }
}

/// The machine's kubectl, which nodes share (the file system outside a node's private
/// folders is the host's).
pub const HOST_KUBECTL: &str = "/usr/bin/kubectl";

/// What to write for one node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Server or agent.
    pub role: Role,
    /// The server to join (joining servers) or to use (agents); `None` for the first server.
    pub server: Option<Ipv4Addr>,
    /// "Now" for the generated certificates.
    pub now: OffsetDateTime,
    /// Validity overrides (paths relative to the data dir).
    pub validity: BTreeMap<String, Validity>,
    /// Breakages (paths relative to the data dir).
    pub breakages: BTreeMap<String, Breakage>,
    /// Extra `tls-san` values.
    pub tls_sans: Vec<String>,
}

impl NodeSetup {
    /// A node of `role` with fresh certificates issued now.
    #[must_use]
    pub fn new(role: Role, server: Option<Ipv4Addr>) -> Self {
        Self {
            role,
            server,
            now: OffsetDateTime::now_utc(),
            validity: BTreeMap::new(),
            breakages: BTreeMap::new(),
            tls_sans: Vec::new(),
        }
    }

    /// Overrides one certificate's validity.
    #[must_use]
    pub fn with_validity(mut self, rel: &str, validity: Validity) -> Self {
        self.validity.insert(rel.to_owned(), validity);
        self
    }
}

/// Writes the node's data dir and `config.yaml` from `cas` (agents: plus `agent/.sim-ca/`).
pub fn write_node(
    node: &Node,
    setup: &NodeSetup,
    cas: &ClusterCas,
) -> Result<GeneratedTree, ClusterError> {
    let mut spec = TreeSpec::new(
        setup.role,
        node.name(),
        IpAddr::V4(node.ip()),
        node.host_path(DATA_DIR)?,
        setup.now,
    )
    .with_config_dir(node.host_path(CONFIG_DIR)?);
    spec.node_data_dir = Some(DATA_DIR.into());
    spec.server_url = setup.server.map(|ip| format!("https://{ip}:9345"));
    spec.validity = setup.validity.clone();
    spec.breakages = setup.breakages.clone();
    spec.tls_sans = setup.tls_sans.clone();
    let generated = tree::generate(&spec, cas)?;
    if setup.role == Role::Agent {
        cas.save(&node.host_path(Path::new(DATA_DIR).join(AGENT_SIM_CA_DIR))?)?;
    }
    Ok(generated)
}

/// Starts the role's unit without blocking (`TimeoutStartSec=0` would let `systemctl start`
/// wait forever) and waits until it is `active`, i.e. the simulated RKE2 sent `READY=1`.
pub fn start(node: &Node, role: Role, timeout: Duration) -> Result<(), ClusterError> {
    node.systemctl(&["start", "--no-block", unit_name(role)])?;
    node.wait_for_unit_state(unit_name(role), "active", timeout)?;
    Ok(())
}

/// Stops the role's unit and waits until it is `inactive`.
pub fn stop(node: &Node, role: Role) -> Result<(), ClusterError> {
    node.systemctl(&["stop", unit_name(role)])?;
    node.wait_for_unit_state(unit_name(role), "inactive", Duration::from_secs(20))?;
    Ok(())
}

/// Sets fault switch `name` (`fail-start`, `slow-start`, `never-ready`, `empty-pem`) with
/// `content`; see [`crate::faults`].
pub fn set_fault(node: &Node, name: &str, content: &str) -> Result<(), ClusterError> {
    node.write_file(Path::new(DATA_DIR).join(FAULTS_DIR).join(name), content)?;
    Ok(())
}

/// Removes fault switch `name` (no error when it is not set).
pub fn clear_fault(node: &Node, name: &str) -> Result<(), ClusterError> {
    let host = node.host_path(Path::new(DATA_DIR).join(FAULTS_DIR).join(name))?;
    match std::fs::remove_file(&host) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TreeError::Io { path: host, source }.into()),
    }
}

/// Writes the unit's environment file (`/usr/local/lib/systemd/system/<unit>.env`), e.g.
/// `RKE2_SIM_NOW` or `CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS`; read at the next start.
pub fn set_env(node: &Node, role: Role, vars: &[(&str, &str)]) -> Result<(), ClusterError> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let name = unit_name(role).trim_end_matches(".service");
    node.write_file(Path::new(UNIT_DIR).join(format!("{name}.env")), text)?;
    Ok(())
}

/// Makes the installed `rke2` report `version` (`rke2 --version`, apiserver `/version`) from
/// its next start on: writes `/usr/local/bin/rke2.version`, as a simulated upgrade would.
pub fn set_version(node: &Node, version: &str) -> Result<(), ClusterError> {
    node.write_file(
        Path::new(RKE2_BIN).with_file_name(VERSION_FILE),
        format!("{version}\n"),
    )?;
    Ok(())
}

/// The serial number of the first certificate in `rel` (relative to the data dir), or `None`
/// when the file is missing or holds no certificate.
#[must_use]
pub fn serial_of(node: &Node, rel: &str) -> Option<u64> {
    let path = node.host_path(Path::new(DATA_DIR).join(rel)).ok()?;
    let pem = std::fs::read(path).ok()?;
    let der = super::check::gopem::parse_certs(&pem)
        .ok()?
        .into_iter()
        .next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let raw = cert.tbs_certificate.raw_serial();
    (raw.len() <= 9).then(|| raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// `GET https://<node-ip>:<port><path>` from inside the node with curl, trusting the server
/// CA; with `client` (a data-dir-relative base like `server/tls/client-admin`) the client
/// certificate `<base>.crt`/`<base>.key` is presented. Returns the HTTP status (0 when the
/// connection or handshake failed) and the body.
pub fn https_get(
    node: &Node,
    port: u16,
    path: &str,
    client: Option<&str>,
) -> Result<(u16, String), ClusterError> {
    https_request(node, port, path, client, None)
}

/// [`https_get`] as a `POST` of the JSON document `body` (e.g. a Pod to the Kubernetes API
/// stand-in).
pub fn https_post_json(
    node: &Node,
    port: u16,
    path: &str,
    client: Option<&str>,
    body: &str,
) -> Result<(u16, String), ClusterError> {
    https_request(node, port, path, client, Some(body))
}

fn https_request(
    node: &Node,
    port: u16,
    path: &str,
    client: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), ClusterError> {
    let ca = format!("{DATA_DIR}/agent/server-ca.crt");
    let url = format!("https://{}:{port}{path}", node.ip());
    let mut argv: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
        "--cacert",
        &ca,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(base) = client {
        argv.extend([
            "--cert".to_owned(),
            format!("{DATA_DIR}/{base}.crt"),
            "--key".to_owned(),
            format!("{DATA_DIR}/{base}.key"),
        ]);
    }
    if let Some(body) = body {
        argv.extend([
            "-X".to_owned(),
            "POST".to_owned(),
            "-H".to_owned(),
            "Content-Type: application/json".to_owned(),
            "--data-binary".to_owned(),
            body.to_owned(),
        ]);
    }
    argv.push(url);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = node.exec(&argv)?;
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// `etcdctl ARGS` inside the node against its own member (`https://<node-ip>:2379`, or
/// `--endpoints` given in `args`), authenticated with `etcd/client.crt`.
pub fn etcdctl(node: &Node, args: &[&str]) -> Result<rke2ops_ground::ExecOutput, ClusterError> {
    let tls = format!("{DATA_DIR}/server/tls/etcd");
    let endpoint = format!("--endpoints=https://{}:2379", node.ip());
    let (cacert, cert, key) = (
        format!("--cacert={tls}/server-ca.crt"),
        format!("--cert={tls}/client.crt"),
        format!("--key={tls}/client.key"),
    );
    let mut argv = vec!["env", "ETCDCTL_API=3", super::server::etcd::ETCDCTL];
    if !args.iter().any(|a| a.starts_with("--endpoints")) {
        argv.push(&endpoint);
    }
    argv.extend([
        cacert.as_str(),
        cert.as_str(),
        key.as_str(),
        "--dial-timeout=3s",
    ]);
    argv.extend_from_slice(args);
    Ok(node.exec(&argv)?)
}

/// One simulated RKE2 node.
#[derive(Debug)]
pub struct SimNode {
    /// The proving-ground node.
    pub node: Node,
    /// Server or agent.
    pub role: Role,
    /// What was generated into its data dir.
    pub tree: GeneratedTree,
    /// `Some` for a node installed from RPM packages (by this tool), `None` for a tarball
    /// install.
    pub package_tool: Option<PackageTool>,
}

impl SimNode {
    /// The unit this node runs.
    #[must_use]
    pub fn unit(&self) -> &'static str {
        unit_name(self.role)
    }
}

/// A running simulated cluster. Dropping it tears every node down.
#[derive(Debug)]
pub struct SimCluster {
    /// The cluster CAs every node shares.
    pub cas: ClusterCas,
    /// Servers, the first one bootstrapped etcd.
    pub servers: Vec<SimNode>,
    /// Agents.
    pub agents: Vec<SimNode>,
}

impl SimCluster {
    /// Boots `servers` servers (`server-1`...) and `agents` agents (`agent-1`...), each with
    /// fresh certificates from new cluster CAs, installs everything and starts them in order,
    /// waiting for each to be `active`.
    pub fn boot(servers: usize, agents: usize) -> Result<SimCluster, ClusterError> {
        let cas = ClusterCas::generate(OffsetDateTime::now_utc() - time::Duration::days(30))?;
        Self::boot_with(cas, servers, agents, |_, setup| setup)
    }

    /// Like [`SimCluster::boot`] with the given CAs; `customize(name, setup)` may change each
    /// node's setup (validity overrides...) before its data dir is written.
    pub fn boot_with(
        cas: ClusterCas,
        servers: usize,
        agents: usize,
        customize: impl FnMut(&str, NodeSetup) -> NodeSetup,
    ) -> Result<SimCluster, ClusterError> {
        Self::boot_with_options(cas, servers, agents, &BootOptions::default(), customize)
    }

    /// Like [`SimCluster::boot_with`], installing the nodes `options` names from RPM packages
    /// ([`BootOptions::rpm_node`]) and the others from the tarball. An RPM node has
    /// `/usr/bin/rke2` and the package's `/usr/lib/systemd/system/rke2-<role>.service`, no
    /// `/usr/local/bin/rke2`; its data dir, config and start are as a tarball node's.
    pub fn boot_with_options(
        cas: ClusterCas,
        servers: usize,
        agents: usize,
        options: &BootOptions,
        mut customize: impl FnMut(&str, NodeSetup) -> NodeSetup,
    ) -> Result<SimCluster, ClusterError> {
        let started = Instant::now();
        let mut cluster = SimCluster {
            cas,
            servers: Vec::new(),
            agents: Vec::new(),
        };
        let mut first: Option<Ipv4Addr> = None;
        for i in 1..=servers {
            let name = format!("{}server-{i}", options.name_prefix);
            let (node, package_tool) = options.boot_node(&name)?;
            let setup = customize(&name, NodeSetup::new(Role::Server, first));
            let tree = write_node(&node, &setup, &cluster.cas)?;
            options.install(&node, Role::Server, package_tool)?;
            start(&node, Role::Server, START_TIMEOUT)?;
            first.get_or_insert(node.ip());
            cluster.servers.push(SimNode {
                node,
                role: Role::Server,
                tree,
                package_tool,
            });
        }
        let mut pending = Vec::new();
        for i in 1..=agents {
            let name = format!("{}agent-{i}", options.name_prefix);
            let (node, package_tool) = options.boot_node(&name)?;
            let setup = customize(&name, NodeSetup::new(Role::Agent, first));
            let tree = write_node(&node, &setup, &cluster.cas)?;
            options.install(&node, Role::Agent, package_tool)?;
            node.systemctl(&["start", "--no-block", unit_name(Role::Agent)])?;
            pending.push(SimNode {
                node,
                role: Role::Agent,
                tree,
                package_tool,
            });
        }
        for agent in pending {
            agent
                .node
                .wait_for_unit_state(agent.unit(), "active", START_TIMEOUT)?;
            cluster.agents.push(agent);
        }
        eprintln!(
            "sim cluster: {servers} server(s), {agents} agent(s) active after {:?}",
            started.elapsed()
        );
        Ok(cluster)
    }

    /// Every node, servers first.
    pub fn nodes(&self) -> impl Iterator<Item = &SimNode> {
        self.servers.iter().chain(self.agents.iter())
    }
}
