//! The doctor's only I/O: the scanner's inventory, backup copies of broken files,
//! config.yaml, interface addresses, the host name, systemd and statvfs, read into [`Facts`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rke2ops_common::certs::model::ErrorKind;
use rke2ops_common::certs::scan::{KubeconfigPath, read_limited};
use rke2ops_common::certs::{Inventory, ScanConfig, keys, parse};
use time::OffsetDateTime;

use super::etcd::{EtcdFacts, parse_db_metrics};
use super::{BackupCopy, BrokenFile, DiskFacts, Facts, NodeNames, Options, UnitFacts, certs};
use crate::config::Config;
use crate::service::{ServiceManager as _, UnitLog as _, detect_rke2_unit};

/// Why the facts could not be gathered: bad input, named by file and field.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// config.yaml could not be read.
    #[error("{path}: {source}")]
    NodeConfigUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// config.yaml is not valid YAML, or a field has the wrong shape.
    #[error("{path}: {reason}")]
    NodeConfigInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// Root's own kubeconfig, checked when present (`$HOME/.kube/config`).
#[must_use]
pub fn home_kubeconfig() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".kube/config")
}

/// What the doctor scans: `check`'s scan plus `~/.kube/config` when it exists.
#[must_use]
pub fn scan_config(config: &Config) -> ScanConfig {
    let mut scan = config.scan_config();
    let home = home_kubeconfig();
    if home.is_file() && !scan.kubeconfigs.iter().any(|k| k.path == home) {
        scan.kubeconfigs.push(KubeconfigPath {
            path: home,
            optional: true,
        });
    }
    scan
}

/// A config.yaml option RKE2 accepts as a list or a comma-separated string.
fn list_option(doc: &serde_yaml::Value, field: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = match doc.get(field) {
        None | Some(serde_yaml::Value::Null) => return Ok(Vec::new()),
        Some(serde_yaml::Value::String(s)) => vec![s.clone()],
        Some(serde_yaml::Value::Sequence(seq)) => seq
            .iter()
            .map(|v| match v {
                serde_yaml::Value::String(s) => Ok(s.clone()),
                other => Err(format!("{field}: expected strings, found {other:?}")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{field}: expected a string or a list of strings, found {other:?}"
            ));
        }
    };
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// What config.yaml says about the node's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfiguredNames {
    /// `node-ip` (all of them).
    pub node_ips: Vec<IpAddr>,
    /// `node-name`.
    pub node_name: Option<String>,
    /// `tls-san`.
    pub tls_sans: Vec<String>,
}

/// config.yaml's names. Pure.
///
/// # Errors
/// Invalid YAML, or a `node-ip` that is not an address, naming the file and field.
pub fn parse_node_config(text: &str, path: &Path) -> Result<ConfiguredNames, GatherError> {
    let invalid = |reason: String| GatherError::NodeConfigInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let doc: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Null
    } else {
        serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?
    };
    let ips = list_option(&doc, "node-ip")
        .map_err(invalid)?
        .into_iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|e| invalid(format!("node-ip {ip:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node_name = match doc.get("node-name") {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "node-name: expected a string, found {other:?}"
            )));
        }
    };
    Ok(ConfiguredNames {
        node_ips: ips,
        node_name,
        tls_sans: list_option(&doc, "tls-san").map_err(invalid)?,
    })
}

/// Interfaces whose addresses RKE2 never puts in a certificate (CNI, containers, tunnels).
const VIRTUAL_PREFIXES: [&str; 12] = [
    "cni",
    "flannel",
    "cali",
    "vxlan",
    "cilium",
    "docker",
    "veth",
    "tunl",
    "kube-ipvs",
    "nodelocaldns",
    "weave",
    "lxc",
];

/// Whether an address belongs in a serving certificate: not loopback, link-local or
/// unspecified. Pure.
#[must_use]
pub fn is_node_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter(|a| {
            !VIRTUAL_PREFIXES
                .iter()
                .any(|p| a.interface_name.starts_with(p))
        })
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| is_node_address(*ip))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The node's names: config.yaml's `node-ip` (else the interfaces'), `node-name` (else the
/// host name), `tls-san`.
///
/// # Errors
/// When config.yaml exists but cannot be read or parsed.
pub fn node_names(node_config: &Path) -> Result<NodeNames, GatherError> {
    let text = match std::fs::read_to_string(node_config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(GatherError::NodeConfigUnreadable {
                path: node_config.to_path_buf(),
                source,
            });
        }
    };
    let ConfiguredNames {
        node_ips: ips,
        node_name,
        tls_sans,
    } = parse_node_config(&text, node_config)?;
    let ips = if ips.is_empty() {
        interface_addresses()
    } else {
        ips
    };
    let hostname = node_name.or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.to_lowercase())
    });
    Ok(NodeNames {
        ips,
        hostname,
        tls_sans,
    })
}

/// Whether the bytes of a certificate or key file are usable.
fn usable(path: &str, bytes: &[u8]) -> bool {
    if path.ends_with(".key") {
        keys::public_key_bits(bytes).is_ok()
    } else {
        let bundle = parse::parse_bundle(bytes);
        bundle.problem.is_none() && !bundle.certs.is_empty()
    }
}

/// Files of the tree that are empty or not PEM (certificates from the scanner's errors,
/// keys beside them read here), with their copies in every backup.
#[must_use]
pub fn broken_files(data_dir: &Path, inventory: &Inventory, max: u64) -> Vec<BrokenFile> {
    let mut broken: Vec<(String, String)> = Vec::new();
    for error in &inventory.errors {
        // Kubeconfigs (absolute paths) are not PEM files of the tree.
        if error.path.starts_with('/') {
            continue;
        }
        match error.kind {
            ErrorKind::Empty | ErrorKind::NoPemData | ErrorKind::BadDer => {
                broken.push((error.path.clone(), error.reason.clone()));
            }
            ErrorKind::BadKey => {
                let Some(stem) = error.path.strip_suffix(".crt") else {
                    continue;
                };
                let key = format!("{stem}.key");
                let bytes = read_limited(&data_dir.join(&key), max).unwrap_or_default();
                if !bytes.windows(10).any(|w| w == b"-----BEGIN") {
                    broken.push((key, "failed to find any PEM data in key input".to_owned()));
                }
            }
            _ => {}
        }
    }
    broken.sort();
    broken.dedup_by(|a, b| a.0 == b.0);
    broken
        .into_iter()
        .map(|(path, reason)| {
            let copies = inventory
                .backups
                .iter()
                .filter_map(|backup| {
                    let copy = certs::path_in_backup(&path, &backup.path)?;
                    let bytes = read_limited(&data_dir.join(&copy), max).ok()?;
                    let partner = certs::partner_of(&path).and_then(|live| {
                        let copy = certs::path_in_backup(&live, &backup.path)?;
                        data_dir.join(&copy).is_file().then_some((copy, live))
                    });
                    Some(BackupCopy {
                        backup: backup.path.clone(),
                        created: backup.created,
                        valid: usable(&copy, &bytes),
                        path: copy,
                        partner,
                    })
                })
                .collect();
            BrokenFile {
                path,
                reason,
                copies,
            }
        })
        .collect()
}

/// Free bytes for unprivileged writers on `dir`'s file system.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    // u64 here, u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(stat.blocks_available()),
        u64::from(stat.fragment_size()),
    );
    Some(blocks.saturating_mul(size))
}

/// Free space of the upgrade staging folder (the agent's state dir, or its nearest existing
/// parent) and of etcd's data dir (servers only: skipped when absent).
#[must_use]
pub fn disks(config: &Config, options: &Options) -> Vec<DiskFacts> {
    let mut out = Vec::new();
    let staging = config
        .state_dir
        .ancestors()
        .find(|p| p.is_dir())
        .map(Path::to_path_buf);
    if let Some(path) = staging
        && let Some(free) = free_bytes(&path)
    {
        out.push(DiskFacts {
            purpose: "upgrade staging",
            path,
            free,
            min_free: options.staging_min_free,
        });
    }
    let etcd = config.data_dir.join("server/db");
    if etcd.is_dir()
        && let Some(free) = free_bytes(&etcd)
    {
        out.push(DiskFacts {
            purpose: "etcd data",
            path: etcd,
            free,
            min_free: options.etcd_min_free,
        });
    }
    out
}

/// Asks systemd about the RKE2 unit (5 s at most), with the journal's last lines when it
/// is failing.
pub async fn unit_facts() -> UnitFacts {
    let timeout = std::time::Duration::from_secs(5);
    let systemd = match tokio::time::timeout(timeout, crate::dbus::Systemd::connect()).await {
        Ok(Ok(systemd)) => systemd,
        Ok(Err(e)) => {
            return UnitFacts::Unreachable {
                reason: e.to_string(),
            };
        }
        Err(_) => {
            return UnitFacts::Unreachable {
                reason: "no answer from the system bus within 5 s".to_owned(),
            };
        }
    };
    let unit = match detect_rke2_unit(&systemd).await {
        Ok(Some(unit)) => unit,
        Ok(None) => return UnitFacts::NotInstalled,
        Err(e) => {
            return UnitFacts::Unreachable {
                reason: e.to_string(),
            };
        }
    };
    let state = match systemd.state(unit.name()).await {
        Ok(state) => state,
        Err(e) => {
            return UnitFacts::Unreachable {
                reason: e.to_string(),
            };
        }
    };
    let journal = if super::unit::is_failing(&state) {
        crate::journald::Journald
            .tail(unit.name(), super::unit::JOURNAL_LINES)
            .await
    } else {
        Vec::new()
    };
    UnitFacts::Found {
        unit: unit.name().to_owned(),
        state,
        journal,
    }
}

/// Facts from an inventory already scanned with `scan`, plus the file-system reads.
///
/// # Errors
/// When config.yaml is bad.
pub fn facts(
    config: &Config,
    options: &Options,
    scan: &ScanConfig,
    inventory: Inventory,
    unit: UnitFacts,
) -> Result<Facts, GatherError> {
    let names = node_names(&config.node_config)?;
    let admin = config.admin_kubeconfig.display().to_string();
    let kubeconfig_copies = scan
        .kubeconfigs
        .iter()
        .map(|k| k.path.display().to_string())
        .filter(|p| *p != admin)
        .collect();
    // The hub's name for the node when enrolled, else RKE2's (config.yaml `node-name`, else
    // the host name).
    let node = match (&config.hub, &names.hostname) {
        (None, Some(name)) => name.clone(),
        _ => crate::state::node_name(config),
    };
    Ok(Facts {
        node,
        now: OffsetDateTime::now_utc(),
        data_dir: config.data_dir.clone(),
        broken: broken_files(&config.data_dir, &inventory, scan.max_file_size),
        inventory,
        admin_kubeconfig: admin,
        kubeconfig_copies,
        names,
        unit,
        disks: disks(config, options),
        etcd: EtcdFacts::NotHere,
    })
}

/// The most of etcd's metrics page read (it is a few hundred KiB).
const METRICS_LIMIT: usize = 8 * 1024 * 1024;

/// etcd's plain-HTTP metrics (`127.0.0.1:2381/metrics`), body only; `None` on any failure.
async fn etcd_metrics(timeout: std::time::Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect("127.0.0.1:2381")
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        stream
            .take(METRICS_LIMIT as u64)
            .read_to_end(&mut body)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_owned())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// Asks the embedded etcd (servers with `server/db/etcd`) for members, alarms and DB size.
pub async fn etcd_facts(data_dir: &Path) -> EtcdFacts {
    if !data_dir.join("server/db/etcd").is_dir() {
        return EtcdFacts::NotHere;
    }
    let timeout = std::time::Duration::from_secs(5);
    let creds = crate::health::etcd::EtcdCredentials::rke2(data_dir);
    match crate::health::etcd::health("https://127.0.0.1:2379", &creds, timeout).await {
        Ok(health) => {
            let (db_size, quota) = etcd_metrics(timeout)
                .await
                .map_or((None, None), |text| parse_db_metrics(&text));
            EtcdFacts::Found {
                health,
                db_size,
                quota,
            }
        }
        Err(e) => EtcdFacts::Unreachable {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_lists_and_comma_strings_both_work() {
        let names = parse_node_config(
            "node-ip: 10.0.0.5,fd00::5\ntls-san:\n  - api.example.com\n  - 10.0.0.100\nnode-name: cp-1\n",
            Path::new("/etc/rancher/rke2/config.yaml"),
        )
        .expect("parses");
        assert_eq!(names.node_ips.len(), 2);
        assert_eq!(names.node_name.as_deref(), Some("cp-1"));
        assert_eq!(names.tls_sans, vec!["api.example.com", "10.0.0.100"]);
    }

    #[test]
    fn bad_node_ip_names_the_file_and_field() {
        let e = parse_node_config("node-ip: 10.0.0.300\n", Path::new("/etc/c.yaml"))
            .expect_err("invalid");
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/c.yaml: node-ip \"10.0.0.300\""),
            "{msg}"
        );
        let e =
            parse_node_config("tls-san: {a: 1}\n", Path::new("/etc/c.yaml")).expect_err("invalid");
        assert!(e.to_string().contains("tls-san"), "{e}");
    }

    #[test]
    fn loopback_and_link_local_are_not_node_addresses() {
        for ip in ["127.0.0.1", "169.254.1.1", "::1", "fe80::1", "0.0.0.0"] {
            assert!(!is_node_address(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.0.0.5", "fd00::5", "2001:db8::1"] {
            assert!(is_node_address(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn empty_pem_with_a_valid_backup_copy_is_found_through_the_scanner() {
        use super::super::test_support::{ca, write};
        use rke2ops_common::certs::Scanner;
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ca("rke2-client");
        let (cert, key) = client.leaf("system:admin", &[], 0, 365);
        write(dir.path(), "server/tls/client-ca.crt", &client.pem);
        write(dir.path(), "server/tls/client-admin.crt", "");
        write(dir.path(), "server/tls/client-admin.key", &key);
        write(dir.path(), "server/tls-1700000000/client-admin.crt", &cert);
        write(
            dir.path(),
            "server/tls-1800000000/client-admin.crt",
            "garbage",
        );
        let inventory = Scanner::new(ScanConfig::new(dir.path(), None, &[])).scan();
        let broken = broken_files(dir.path(), &inventory, 1 << 20);
        assert_eq!(broken.len(), 1, "{broken:#?}");
        assert_eq!(broken[0].path, "server/tls/client-admin.crt");
        let valid: Vec<&str> = broken[0]
            .copies
            .iter()
            .filter(|c| c.valid)
            .map(|c| c.backup.as_str())
            .collect();
        assert_eq!(valid, vec!["server/tls-1700000000"]);
        assert_eq!(broken[0].copies.len(), 2);
    }
}
