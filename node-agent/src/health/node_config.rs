//! The parts of RKE2's `/etc/rancher/rke2/config.yaml` the agent needs: where this node's
//! services listen. Unknown keys are RKE2's business and are ignored.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::HealthError;

/// RKE2's supervisor port.
pub const SUPERVISOR_PORT: u16 = 9345;
/// kube-apiserver.
pub const APISERVER_PORT: u16 = 6443;
/// etcd client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// kubelet's plain-HTTP health port.
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;

/// What the agent reads from config.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The first `node-ip` (RKE2 accepts a list or a comma-separated string); 127.0.0.1
    /// when unset.
    pub node_ip: IpAddr,
    /// `node-name`, when set.
    pub node_name: Option<String>,
    /// `data-dir`, when set.
    pub data_dir: Option<PathBuf>,
    /// `cni` (a string, comma-separated, or a list), each name trimmed; empty when unset
    /// (RKE2's default, canal). Picks the CNI image archive an air-gapped node needs.
    pub cni: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(rename = "node-ip")]
    node_ip: Option<OneOrMany>,
    #[serde(rename = "node-name")]
    node_name: Option<String>,
    #[serde(rename = "data-dir")]
    data_dir: Option<PathBuf>,
    cni: Option<OneOrMany>,
}

impl NodeConfig {
    /// Parses config.yaml text; `path` names the file in errors.
    ///
    /// # Errors
    /// [`HealthError::Config`] for invalid YAML or an invalid `node-ip`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HealthError> {
        let err = |reason: String| HealthError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Raw = if text.trim().is_empty() {
            Raw::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?
        };
        let first = match raw.node_ip {
            None => None,
            Some(OneOrMany::One(s)) => s.split(',').next().map(|s| s.trim().to_owned()),
            Some(OneOrMany::Many(v)) => v.into_iter().next(),
        };
        let node_ip = match first {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(ip) => ip
                .parse()
                .map_err(|e| err(format!("node-ip {ip:?}: {e}")))?,
        };
        let cni = match raw.cni {
            None => vec![],
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        };
        let cni = cni
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Self {
            node_ip,
            node_name: raw.node_name,
            data_dir: raw.data_dir,
            cni,
        })
    }

    /// Reads `path`; a missing file means RKE2's defaults.
    ///
    /// # Errors
    /// [`HealthError::Config`] when the file is unreadable or invalid.
    pub fn load(path: &Path) -> Result<Self, HealthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse("", path),
            Err(e) => Err(HealthError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, HealthError> {
        NodeConfig::parse(text, Path::new("/etc/rancher/rke2/config.yaml"))
    }

    #[test]
    fn defaults_to_loopback() {
        assert_eq!(parse("").expect("ok").node_ip.to_string(), "127.0.0.1");
        assert_eq!(
            parse("token: x\n").expect("ok").node_ip.to_string(),
            "127.0.0.1"
        );
    }

    #[test]
    fn node_ip_string_list_and_comma_forms() {
        assert_eq!(
            parse("node-ip: 127.0.10.2\n")
                .expect("ok")
                .node_ip
                .to_string(),
            "127.0.10.2"
        );
        assert_eq!(
            parse("node-ip: 10.0.0.1,fd00::1\n")
                .expect("ok")
                .node_ip
                .to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            parse("node-ip:\n- 10.0.0.3\n- fd00::3\n")
                .expect("ok")
                .node_ip
                .to_string(),
            "10.0.0.3"
        );
    }

    #[test]
    fn cni_string_comma_and_list_forms() {
        assert!(parse("").expect("ok").cni.is_empty());
        assert_eq!(parse("cni: cilium\n").expect("ok").cni, ["cilium"]);
        assert_eq!(
            parse("cni: multus, canal\n").expect("ok").cni,
            ["multus", "canal"]
        );
        assert_eq!(
            parse("cni:\n- multus\n- calico\n").expect("ok").cni,
            ["multus", "calico"]
        );
    }

    #[test]
    fn bad_node_ip_names_file_and_key() {
        let msg = parse("node-ip: nope\n").expect_err("bad").to_string();
        assert!(
            msg.contains("config.yaml") && msg.contains("node-ip"),
            "{msg}"
        );
    }
}
