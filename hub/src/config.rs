//! The hub's configuration: `/etc/rke2-ops/hub.toml`, then flags (each with an environment
//! variable) on top. Unknown keys are errors naming the key and the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rke2-ops/hub.toml";
/// Agents' gRPC listener.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:9811";
/// Prometheus endpoint.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9812";
/// State (database, CA) — the unit's `StateDirectory=rke2-ops-hub`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rke2-ops-hub";
/// Admin socket — the unit's `RuntimeDirectory=rke2-ops`.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/rke2-ops/hub.sock";

pub use rke2ops_common::config::ConfigError;

/// The file's schema.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `host:port` the agents' gRPC listener binds.
    pub listen_addr: Option<String>,
    /// `host:port` agents dial (printed with join tokens); defaults to the listener.
    pub advertise_address: Option<String>,
    /// DNS names and IPs for the hub's server certificate (besides the advertised host).
    pub server_sans: Option<Vec<String>>,
    /// `host:port` of `/metrics`.
    pub metrics_addr: Option<String>,
    /// Database, CA and server certificate.
    pub state_dir: Option<PathBuf>,
    /// The admin Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// A node whose stream is silent this long is offline.
    pub heartbeat_timeout_secs: Option<u64>,
    /// Kubeconfig for cordon/drain (e.g. a copy of a server's `rke2.yaml`); none = no
    /// cordon or drain.
    pub kubeconfig: Option<PathBuf>,
    /// apiserver URLs tried in order with failover (default: the kubeconfig's server).
    pub apiserver_endpoints: Option<Vec<String>>,
    /// RKE2's channels JSON, for `upgrade --channel`.
    pub channel_url: Option<String>,
    /// Default artifact source for upgrades: URL prefix (GitHub release layout) or a folder
    /// on the nodes; empty = each agent's own `artifact_source`.
    pub artifact_mirror: Option<String>,
    /// Auto-maintenance: create `restart` plans for nodes whose renewal deadline is this
    /// many days away or closer (unset = off).
    pub auto_restart_within_days: Option<u64>,
    /// Auto-maintenance: the window those plans run in (e.g. `Sat,Sun 02:00-05:00 UTC`).
    pub auto_restart_window: Option<String>,
    /// Connections without a hub certificate one address may hold (default 32).
    pub max_unauthenticated_per_peer: Option<usize>,
    /// Seconds a TLS handshake may take (default 10).
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Alert gate: Prometheus's base URL; while it has a firing alert (not ignored), no plan
    /// starts a node (unset = no alert gate).
    pub alert_gate_prometheus_url: Option<String>,
    /// Alert names that never hold maintenance (default: Watchdog, InfoInhibitor and the
    /// renewal alerts plans exist to clear; see `plan::alerts::DEFAULT_IGNORED`).
    pub alert_gate_ignore: Option<Vec<String>>,
    /// Days the history is kept: ended plans (with their nodes and events) and audit rows
    /// older than this are removed, hourly (default 400: over a year).
    pub history_retention_days: Option<u64>,
}

/// Flag overrides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Overrides {
    pub listen_addr: Option<String>,
    pub advertise_address: Option<String>,
    pub server_sans: Vec<String>,
    pub metrics_addr: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub admin_socket: Option<PathBuf>,
    pub heartbeat_timeout_secs: Option<u64>,
    pub kubeconfig: Option<PathBuf>,
    pub apiserver_endpoints: Vec<String>,
    pub channel_url: Option<String>,
    pub artifact_mirror: Option<String>,
    pub auto_restart_within_days: Option<u64>,
    pub auto_restart_window: Option<String>,
    pub max_unauthenticated_per_peer: Option<usize>,
    pub tls_handshake_timeout_secs: Option<u64>,
    pub alert_gate_prometheus_url: Option<String>,
    pub alert_gate_ignore: Vec<String>,
    pub history_retention_days: Option<u64>,
}

/// The systemd credential the hub reads its kubeconfig from when `kubeconfig` is not set:
/// the hub runs as a dynamic user that cannot read a root-only `rke2.yaml` copy, so the unit
/// passes it with `LoadCredential=kubeconfig:/etc/rke2-ops/rke2.yaml`.
pub const KUBECONFIG_CREDENTIAL: &str = "kubeconfig";

/// `<credentials dir>/<name>` when systemd passed that credential (pure but for the
/// existence check).
#[must_use]
pub fn credential(dir: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    let path = Path::new(dir?).join(name);
    path.is_file().then_some(path)
}

/// RKE2's release channels.
pub const DEFAULT_CHANNEL_URL: &str = "https://update.rke2.io/v1-release/channels";
/// RKE2's release artifacts (`<prefix>/<version>/rke2.linux-<arch>.tar.gz`).
pub const DEFAULT_ARTIFACT_MIRROR: &str = "https://github.com/rancher/rke2/releases/download";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Agents' gRPC listener.
    pub listen_addr: SocketAddr,
    /// What agents dial.
    pub advertise_address: String,
    /// Server certificate SANs.
    pub server_sans: Vec<String>,
    /// Metrics listener.
    pub metrics_addr: SocketAddr,
    /// State dir.
    pub state_dir: PathBuf,
    /// Admin socket.
    pub admin_socket: PathBuf,
    /// Offline threshold.
    pub heartbeat_timeout: Duration,
    /// Kubeconfig for cordon/drain.
    pub kubeconfig: Option<PathBuf>,
    /// apiserver endpoints with failover.
    pub apiserver_endpoints: Vec<String>,
    /// Channels JSON URL.
    pub channel_url: String,
    /// Default artifact source for upgrades.
    pub artifact_mirror: String,
    /// Auto-maintenance lead time.
    pub auto_restart_within: Option<Duration>,
    /// Auto-maintenance window.
    pub auto_restart_window: Option<String>,
    /// The agents' listener's limits.
    pub listener_limits: crate::listener::Limits,
    /// The alert gate, when configured.
    pub alert_gate: Option<crate::engine::AlertGate>,
    /// How long ended plans and audit rows are kept.
    pub history_retention: Duration,
}

impl Config {
    /// The Kubernetes API access `serve` hands the engine and the role sync: the kubeconfig
    /// and the apiserver endpoints; none without a kubeconfig (no cordon or drain).
    #[must_use]
    pub fn kube_settings(&self) -> Option<crate::kube::KubeSettings> {
        self.kubeconfig
            .as_ref()
            .map(|path| crate::kube::KubeSettings {
                kubeconfig: path.clone(),
                endpoints: self.apiserver_endpoints.clone(),
            })
    }
}

/// Default of `history_retention_days`: more than a year of plans stays answerable.
pub const DEFAULT_HISTORY_RETENTION_DAYS: u64 = 400;
/// Longest `history_retention_days` (about 100 years): beyond it the cut-off time overflows.
const MAX_HISTORY_RETENTION_DAYS: u64 = 36_500;

fn addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| ConfigError::Invalid {
        key,
        message: format!("{value:?} is not host:port ({e})"),
    })
}

impl FileConfig {
    /// Loads `path`; a missing file is empty only when not `required`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key and line.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        rke2ops_common::config::load_toml(path, required)
    }
}

impl Config {
    /// Defaults < file < flags.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for bad addresses.
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<Self, ConfigError> {
        let listen = o
            .listen_addr
            .or(file.listen_addr)
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = addr("listen_addr", &listen)?;
        let advertise_address = o
            .advertise_address
            .or(file.advertise_address)
            .unwrap_or_else(|| listen.clone());
        let mut server_sans = if o.server_sans.is_empty() {
            file.server_sans.unwrap_or_default()
        } else {
            o.server_sans
        };
        if let Some((host, _)) = advertise_address.rsplit_once(':') {
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            if !server_sans.contains(&host) && host != "0.0.0.0" {
                server_sans.push(host);
            }
        }
        let metrics = o
            .metrics_addr
            .or(file.metrics_addr)
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned());
        Ok(Self {
            listen_addr,
            advertise_address,
            server_sans,
            metrics_addr: addr("metrics_addr", &metrics)?,
            state_dir: o
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            admin_socket: o
                .admin_socket
                .or(file.admin_socket)
                .unwrap_or_else(|| DEFAULT_ADMIN_SOCKET.into()),
            heartbeat_timeout: Duration::from_secs(
                o.heartbeat_timeout_secs
                    .or(file.heartbeat_timeout_secs)
                    .unwrap_or(35),
            ),
            kubeconfig: o.kubeconfig.or(file.kubeconfig).or_else(|| {
                credential(
                    std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(),
                    KUBECONFIG_CREDENTIAL,
                )
            }),
            apiserver_endpoints: if o.apiserver_endpoints.is_empty() {
                file.apiserver_endpoints.unwrap_or_default()
            } else {
                o.apiserver_endpoints
            },
            channel_url: o
                .channel_url
                .or(file.channel_url)
                .unwrap_or_else(|| DEFAULT_CHANNEL_URL.to_owned()),
            artifact_mirror: o
                .artifact_mirror
                .or(file.artifact_mirror)
                .unwrap_or_else(|| DEFAULT_ARTIFACT_MIRROR.to_owned()),
            auto_restart_within: o
                .auto_restart_within_days
                .or(file.auto_restart_within_days)
                .map(|d| Duration::from_secs(d * 86_400)),
            auto_restart_window: match o.auto_restart_window.or(file.auto_restart_window) {
                Some(w) => {
                    crate::plan::window::MaintenanceWindow::parse(&w).map_err(|e| {
                        ConfigError::Invalid {
                            key: "auto_restart_window",
                            message: e.to_string(),
                        }
                    })?;
                    Some(w)
                }
                None => None,
            },
            alert_gate: match o
                .alert_gate_prometheus_url
                .or(file.alert_gate_prometheus_url)
                .filter(|u| !u.trim().is_empty())
            {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(ConfigError::Invalid {
                        key: "alert_gate_prometheus_url",
                        message: format!("{url:?} is not an http(s) URL"),
                    });
                }
                Some(url) => Some(crate::engine::AlertGate {
                    prometheus_url: url,
                    ignore: if o.alert_gate_ignore.is_empty() {
                        file.alert_gate_ignore.unwrap_or_else(|| {
                            crate::plan::alerts::DEFAULT_IGNORED
                                .iter()
                                .map(|s| (*s).to_owned())
                                .collect()
                        })
                    } else {
                        o.alert_gate_ignore
                    },
                }),
                None => None,
            },
            listener_limits: {
                let defaults = crate::listener::Limits::default();
                let per_peer = o
                    .max_unauthenticated_per_peer
                    .or(file.max_unauthenticated_per_peer)
                    .map_or(Ok(defaults.per_peer), |n| {
                        std::num::NonZeroUsize::new(n).ok_or(ConfigError::Invalid {
                            key: "max_unauthenticated_per_peer",
                            message: "must be at least 1".to_owned(),
                        })
                    })?;
                let handshake = o
                    .tls_handshake_timeout_secs
                    .or(file.tls_handshake_timeout_secs)
                    .map_or(Ok(defaults.handshake_timeout), |s| {
                        if s == 0 {
                            Err(ConfigError::Invalid {
                                key: "tls_handshake_timeout_secs",
                                message: "must be at least 1".to_owned(),
                            })
                        } else {
                            Ok(Duration::from_secs(s))
                        }
                    })?;
                crate::listener::Limits {
                    per_peer,
                    handshake_timeout: handshake,
                }
            },
            history_retention: match o
                .history_retention_days
                .or(file.history_retention_days)
                .unwrap_or(DEFAULT_HISTORY_RETENTION_DAYS)
            {
                d @ 1..=MAX_HISTORY_RETENTION_DAYS => Duration::from_secs(d * 86_400),
                d => {
                    return Err(ConfigError::Invalid {
                        key: "history_retention_days",
                        message: format!("{d} is outside 1..={MAX_HISTORY_RETENTION_DAYS}"),
                    });
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "listen_addr = \"0.0.0.0:1\"\nlisten_adr = \"x\"\n").expect("write");
        let msg = FileConfig::load(&path, true)
            .expect_err("unknown")
            .to_string();
        assert!(
            msg.contains("listen_adr") && msg.contains("line 2") && msg.contains("hub.toml"),
            "{msg}"
        );
    }

    #[test]
    fn a_kubeconfig_credential_is_found_only_when_passed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(credential(Some(dir.path().as_os_str()), "kubeconfig"), None);
        std::fs::write(dir.path().join("kubeconfig"), "apiVersion: v1\n").expect("write");
        assert_eq!(
            credential(Some(dir.path().as_os_str()), "kubeconfig"),
            Some(dir.path().join("kubeconfig"))
        );
        assert_eq!(credential(None, "kubeconfig"), None);
    }

    #[test]
    fn the_alert_gate_has_default_ignores_and_checks_its_url() {
        let c = Config::resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert_eq!(c.alert_gate, None, "off by default");
        let file = FileConfig {
            alert_gate_prometheus_url: Some("http://prom:9090".into()),
            ..FileConfig::default()
        };
        let gate = Config::resolve(file, Overrides::default())
            .expect("valid")
            .alert_gate
            .expect("configured");
        assert!(gate.ignore.iter().any(|a| a == "RKE2RenewalRestartDue"));
        let o = Overrides {
            alert_gate_prometheus_url: Some("http://prom:9090".into()),
            alert_gate_ignore: vec!["Noisy".into()],
            ..Overrides::default()
        };
        let gate = Config::resolve(FileConfig::default(), o)
            .expect("valid")
            .alert_gate
            .expect("configured");
        assert_eq!(
            gate.ignore,
            ["Noisy"],
            "an explicit list replaces the default"
        );
        let o = Overrides {
            alert_gate_prometheus_url: Some("prom:9090".into()),
            ..Overrides::default()
        };
        let err = Config::resolve(FileConfig::default(), o).expect_err("not a URL");
        assert!(
            err.to_string().contains("alert_gate_prometheus_url"),
            "{err}"
        );
    }

    #[test]
    fn advertised_host_becomes_a_san_and_flags_win() {
        let file = FileConfig {
            advertise_address: Some("hub.example:9811".into()),
            ..FileConfig::default()
        };
        let o = Overrides {
            metrics_addr: Some("127.0.0.1:1".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(file, o).expect("valid");
        assert_eq!(c.server_sans, vec!["hub.example"]);
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:1");
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:9811");
    }
}
