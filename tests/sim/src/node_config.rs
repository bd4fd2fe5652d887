//! What a simulated `rke2 server` / `rke2 agent` reads at start: `/etc/rancher/rke2/config.yaml`
//! (the keys the simulator needs) and the `--config` / `--data-dir` flags.
//!
//! RKE2 takes every CLI flag from the config file too (`node-ip: 1.2.3.4` equals
//! `--node-ip 1.2.3.4`); flags win over the file. Keys the simulator does not know are ignored,
//! as RKE2 ignores keys of other subcommands. `config.yaml.d/` drop-ins are not read.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// RKE2's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/rancher/rke2/config.yaml";
/// RKE2's default data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/rke2";
/// Where servers write the admin kubeconfig unless `write-kubeconfig` says otherwise.
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";

/// A config value RKE2 accepts as one string or a list (`tls-san: a` or `tls-san: [a, b]`);
/// a single string may also be comma-separated, like urfave/cli string slices.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        let items = match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        items
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The keys of `config.yaml` the simulator reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawConfig {
    node_ip: Option<OneOrMany>,
    node_name: Option<String>,
    server: Option<String>,
    token: Option<String>,
    tls_san: Option<OneOrMany>,
    data_dir: Option<PathBuf>,
    write_kubeconfig: Option<PathBuf>,
    supervisor_metrics: Option<bool>,
}

/// A node's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `node-ip` (first entry): every simulated listener binds it.
    pub node_ip: IpAddr,
    /// `node-name`, else the hostname (RKE2's default).
    pub node_name: String,
    /// `server`: the supervisor URL of an existing server (agents always; joining servers).
    pub server: Option<String>,
    /// `token`: the cluster join token.
    pub token: Option<String>,
    /// `tls-san`: extra SANs for the server certificates.
    pub tls_sans: Vec<String>,
    /// `data-dir` (flag, else file, else [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `write-kubeconfig`, else [`DEFAULT_KUBECONFIG`].
    pub kubeconfig: PathBuf,
    /// `supervisor-metrics` (default false): serve RKE2's own metrics (e.g. the certificate
    /// monitor's gauge) at `/metrics` on the supervisor port, as k3s does.
    pub supervisor_metrics: bool,
}

/// Why the configuration is unusable (RKE2 exits 1 on these).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named config file could not be read.
    #[error("failed to read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not the YAML map RKE2 expects.
    #[error("failed to parse config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// `node-ip` is missing or not an address.
    #[error(
        "node-ip {0:?}: the simulator needs an explicit node-ip (nodes share one network \
         namespace, so each binds its own loopback address)"
    )]
    NodeIp(String),
    /// No node name and no hostname.
    #[error("node-name is empty and the hostname could not be read")]
    NodeName,
}

impl NodeConfig {
    /// Reads `config` (default [`DEFAULT_CONFIG`]; a missing default file is no error, as in
    /// RKE2) and applies the `--data-dir` flag.
    pub fn load(config: Option<&Path>, data_dir_flag: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match config {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text, &path, data_dir_flag, hostname)
    }

    /// Parses config text (`path` only names it in errors); `hostname` supplies the default
    /// node name.
    pub fn parse(
        text: &str,
        path: &Path,
        data_dir_flag: Option<&Path>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?
        };
        let ips = raw.node_ip.map(OneOrMany::into_vec).unwrap_or_default();
        let first = ips.first().cloned().unwrap_or_default();
        let node_ip = first
            .parse::<IpAddr>()
            .map_err(|_| ConfigError::NodeIp(first.clone()))?;
        let node_name = match raw.node_name.filter(|n| !n.trim().is_empty()) {
            Some(n) => n.trim().to_owned(),
            None => hostname()
                .filter(|h| !h.is_empty())
                .ok_or(ConfigError::NodeName)?,
        };
        Ok(NodeConfig {
            node_ip,
            node_name,
            server: raw.server.filter(|s| !s.is_empty()),
            token: raw.token.filter(|s| !s.is_empty()),
            tls_sans: raw.tls_san.map(OneOrMany::into_vec).unwrap_or_default(),
            data_dir: data_dir_flag
                .map(Path::to_path_buf)
                .or(raw.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            kubeconfig: raw
                .write_kubeconfig
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG)),
            supervisor_metrics: raw.supervisor_metrics.unwrap_or(false),
        })
    }

    /// The host of the `server:` URL (`https://10.0.0.1:9345` → `10.0.0.1`).
    #[must_use]
    pub fn server_host(&self) -> Option<String> {
        let url = self.server.as_deref()?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        (!host.is_empty()).then(|| host.to_owned())
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("config.yaml"), None, || {
            Some("host-1".into())
        })
    }

    #[test]
    fn reads_the_keys_the_tree_generator_writes() {
        let c = parse(
            "node-name: server-2\nnode-ip: 127.0.10.2\ntls-san:\n  - api.example\n  - 10.1.1.1\n\
             server: https://127.0.10.1:9345\ntoken: K10abc::server:def\nunknown-key: 3\n",
        )
        .expect("test input is valid");
        assert_eq!(c.node_name, "server-2");
        assert_eq!(
            c.node_ip,
            "127.0.10.2".parse::<IpAddr>().expect("test input is valid")
        );
        assert_eq!(c.tls_sans, ["api.example", "10.1.1.1"]);
        assert_eq!(c.server_host().as_deref(), Some("127.0.10.1"));
        assert_eq!(c.token.as_deref(), Some("K10abc::server:def"));
        assert_eq!(c.data_dir, Path::new(DEFAULT_DATA_DIR));
        assert_eq!(c.kubeconfig, Path::new(DEFAULT_KUBECONFIG));
        assert!(!c.supervisor_metrics, "off unless asked for");
        let c = parse("node-ip: 127.0.10.2\nsupervisor-metrics: true\n").expect("valid");
        assert!(c.supervisor_metrics);
    }

    #[test]
    fn flag_beats_file_and_strings_may_be_comma_lists() {
        let c = NodeConfig::parse(
            "node-ip: 127.0.10.5,::1\ndata-dir: /srv/rke2\ntls-san: a,b\n",
            Path::new("c"),
            Some(Path::new("/flag")),
            || Some("h".into()),
        )
        .expect("test input is valid");
        assert_eq!(c.node_ip.to_string(), "127.0.10.5");
        assert_eq!(c.tls_sans, ["a", "b"]);
        assert_eq!(c.data_dir, Path::new("/flag"));
        assert_eq!(c.node_name, "h", "hostname is the default node name");
    }

    #[test]
    fn node_ip_is_required_and_bad_yaml_is_an_error() {
        assert!(matches!(
            parse("node-name: x\n"),
            Err(ConfigError::NodeIp(_))
        ));
        assert!(matches!(
            parse("node-ip: [\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn server_host_handles_ipv6_and_plain_hosts() {
        let mut c = parse("node-ip: 127.0.0.1\n").expect("test input is valid");
        c.server = Some("https://[fd00::1]:9345".into());
        assert_eq!(c.server_host().as_deref(), Some("fd00::1"));
        c.server = Some("https://server-1:9345/".into());
        assert_eq!(c.server_host().as_deref(), Some("server-1"));
    }
}
