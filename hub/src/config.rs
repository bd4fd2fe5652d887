//! The hub's configuration: `/etc/rke2-ops/hub.toml`, then flags (each with an environment
//! variable, `RKE2OPS_HUB_*`) on top. Unknown keys are errors naming the key and the line.
//!
//! Every setting is declared once, in [`Options`]: its field name is the file key, its clap
//! attributes make the `serve` flag and variable. `serve` merges the flags over the file
//! ([`Options::or`]) and [`Config::resolve`] applies the defaults and checks the values into
//! the typed [`Config`] the rest of the hub reads.

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

/// Declares [`Options`] once and derives from the same field list what would otherwise be a
/// second copy kept in step by hand: [`Options::or`], the field-by-field precedence.
macro_rules! options {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : Option<$ty:ty>, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
        }

        impl $name {
            /// Each setting from `self` where it is set, from `under` elsewhere: flags (with
            /// their environment variables) `.or(file)`.
            #[must_use]
            pub fn or(self, under: Self) -> Self {
                Self { $( $field: self.$field.or(under.$field), )* }
            }
        }
    };
}

options! {
    /// Every setting of `rke2-hub serve`, once: the keys of hub.toml (the field names; unknown
    /// keys are refused) and the flags of `serve` (each with an `RKE2OPS_HUB_*` environment
    /// variable). Unset is `None`; [`Config::resolve`] applies the defaults. Precedence: flag >
    /// environment > file > default.
    ///
    /// The doc comment of each field is its `--help` text.
    #[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Options {
        /// host:port of the agents' gRPC listener [default: 0.0.0.0:9811].
        #[arg(long, env = "RKE2OPS_HUB_LISTEN_ADDR")]
        pub listen_addr: Option<String>,
        /// host:port agents dial, printed with tokens [default: the listener].
        #[arg(long, env = "RKE2OPS_HUB_ADVERTISE_ADDRESS")]
        pub advertise_address: Option<String>,
        /// Extra SAN for the hub's server certificate (repeatable).
        #[arg(long = "server-san", env = "RKE2OPS_HUB_SERVER_SANS", value_delimiter = ',')]
        pub server_sans: Option<Vec<String>>,
        /// host:port of /metrics [default: 0.0.0.0:9812].
        #[arg(long, env = "RKE2OPS_HUB_METRICS_ADDR")]
        pub metrics_addr: Option<String>,
        /// State dir [default: /var/lib/rke2-ops-hub].
        #[arg(long, env = "RKE2OPS_HUB_STATE_DIR")]
        pub state_dir: Option<PathBuf>,
        /// Admin socket [default: /run/rke2-ops/hub.sock].
        #[arg(long, env = "RKE2OPS_HUB_ADMIN_SOCKET")]
        pub admin_socket: Option<PathBuf>,
        /// Seconds of silence after which a node is offline [default: 35].
        #[arg(long, env = "RKE2OPS_HUB_HEARTBEAT_TIMEOUT_SECS")]
        pub heartbeat_timeout_secs: Option<u64>,
        /// Kubeconfig for cordon/drain (e.g. a copy of a server's rke2.yaml) [default: none,
        /// no cordon/drain].
        #[arg(long, env = "RKE2OPS_HUB_KUBECONFIG")]
        pub kubeconfig: Option<PathBuf>,
        /// apiserver URL tried in order with failover (repeatable) [default: the kubeconfig's].
        #[arg(
            long = "apiserver-endpoint",
            env = "RKE2OPS_HUB_APISERVER_ENDPOINTS",
            value_delimiter = ','
        )]
        pub apiserver_endpoints: Option<Vec<String>>,
        /// RKE2 channels JSON [default: https://update.rke2.io/v1-release/channels].
        #[arg(long, env = "RKE2OPS_HUB_CHANNEL_URL")]
        pub channel_url: Option<String>,
        /// Default artifact source for upgrades [default: RKE2's GitHub releases].
        #[arg(long, env = "RKE2OPS_HUB_ARTIFACT_MIRROR")]
        pub artifact_mirror: Option<String>,
        /// Auto-maintenance: restart plans for nodes whose renewal deadline is this many days
        /// away or closer [default: off].
        #[arg(long, env = "RKE2OPS_HUB_AUTO_RESTART_WITHIN_DAYS")]
        pub auto_restart_within_days: Option<u64>,
        /// Auto-maintenance window, e.g. "Sat,Sun 02:00-05:00 Europe/Berlin".
        #[arg(long, env = "RKE2OPS_HUB_AUTO_RESTART_WINDOW")]
        pub auto_restart_window: Option<String>,
        /// Days ended plans and audit rows are kept [default: 400].
        #[arg(long, env = "RKE2OPS_HUB_HISTORY_RETENTION_DAYS")]
        pub history_retention_days: Option<u64>,
        /// Connections without a hub certificate one address may hold [default: 32].
        #[arg(long, env = "RKE2OPS_HUB_MAX_UNAUTHENTICATED_PER_PEER")]
        pub max_unauthenticated_per_peer: Option<usize>,
        /// Seconds a TLS handshake may take [default: 10].
        #[arg(long, env = "RKE2OPS_HUB_TLS_HANDSHAKE_TIMEOUT_SECS")]
        pub tls_handshake_timeout_secs: Option<u64>,
        /// Alert gate: no node starts while this Prometheus has a firing alert [default: off].
        #[arg(long, env = "RKE2OPS_HUB_ALERT_GATE_PROMETHEUS_URL")]
        pub alert_gate_prometheus_url: Option<String>,
        /// An alert name that never holds maintenance (repeatable; added to the built-in list).
        #[arg(long, env = "RKE2OPS_HUB_ALERT_GATE_IGNORE", value_delimiter = ',')]
        pub alert_gate_ignore: Option<Vec<String>>,
        /// Doctor: a node's clock this many seconds off the hub's is a `clock-skew` warning
        /// (ten times as far, a blocker) [default: 30].
        #[arg(long, env = "RKE2OPS_HUB_DOCTOR_CLOCK_SKEW_SECS")]
        pub doctor_clock_skew_secs: Option<u64>,
        /// Application probes every plan gets when its request names none (repeatable; the
        /// syntax of `rke2-hub rotate --probe`).
        #[arg(long = "default-probe", env = "RKE2OPS_HUB_PROBES", value_delimiter = ';')]
        pub probes: Option<Vec<String>>,
        /// Webhook notified of plan and probe events, `[NAME=][slack:]URL` (repeatable; the
        /// URL is a secret and never shown) [default: none].
        #[arg(long = "webhook", env = "RKE2OPS_HUB_WEBHOOKS", value_delimiter = ',')]
        pub webhooks: Option<Vec<String>>,
        /// Kubernetes access to clusters other than the default one (whose access is the
        /// top-level `kubeconfig`): hub.toml tables `[clusters.NAME]` with `kubeconfig` and
        /// `apiserver_endpoints`. A cluster without one gets no cordon or drain.
        #[arg(skip)]
        pub clusters: Option<std::collections::BTreeMap<String, ClusterOptions>>,
        /// `NAME=PATH`: cluster NAME's kubeconfig (repeatable; overrides `[clusters.NAME]
        /// kubeconfig`).
        #[arg(
            long = "cluster-kubeconfig",
            env = "RKE2OPS_HUB_CLUSTER_KUBECONFIGS",
            value_delimiter = ','
        )]
        pub cluster_kubeconfigs: Option<Vec<String>>,
        /// `NAME=URL`: an apiserver of cluster NAME, tried in order (repeatable; overrides
        /// `[clusters.NAME] apiserver_endpoints`).
        #[arg(
            long = "cluster-apiserver-endpoint",
            env = "RKE2OPS_HUB_CLUSTER_APISERVER_ENDPOINTS",
            value_delimiter = ','
        )]
        pub cluster_apiserver_endpoints: Option<Vec<String>>,
        /// Where the hub's state lives: `sqlite` (one machine, `<state_dir>/hub.db`) or `etcd`
        /// (several hub replicas, one leading; see `etcd_endpoints`) [default: sqlite].
        #[arg(long, env = "RKE2OPS_HUB_STORE")]
        pub store: Option<String>,
        /// etcd client URLs for `store = "etcd"` (repeatable).
        #[arg(long = "etcd-endpoint", env = "RKE2OPS_HUB_ETCD_ENDPOINTS", value_delimiter = ',')]
        pub etcd_endpoints: Option<Vec<String>>,
        /// Key prefix of this hub's state in etcd [default: /rke2ops/hub].
        #[arg(long, env = "RKE2OPS_HUB_ETCD_PREFIX")]
        pub etcd_prefix: Option<String>,
        /// CA bundle of etcd's serving certificate (TLS to etcd when set).
        #[arg(long, env = "RKE2OPS_HUB_ETCD_CA")]
        pub etcd_ca: Option<PathBuf>,
        /// Client certificate for etcd (with `etcd_key`).
        #[arg(long, env = "RKE2OPS_HUB_ETCD_CERT")]
        pub etcd_cert: Option<PathBuf>,
        /// Key of `etcd_cert`.
        #[arg(long, env = "RKE2OPS_HUB_ETCD_KEY")]
        pub etcd_key: Option<PathBuf>,
        /// This replica's name in logs, metrics and refusals [default: the host name].
        #[arg(long, env = "RKE2OPS_HUB_REPLICA_NAME")]
        pub replica_name: Option<String>,
        /// Seconds the leader's lease lives without a keep-alive: about how long a failover
        /// takes [default: 10].
        #[arg(long, env = "RKE2OPS_HUB_LEADER_LEASE_SECS")]
        pub leader_lease_secs: Option<u64>,
    }
}

/// Where the hub's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `<state_dir>/hub.db` on this machine.
    Sqlite,
    /// A log in etcd, with a local copy per replica ([`crate::ha`]).
    Etcd {
        /// How to reach etcd.
        settings: crate::ha::EtcdSettings,
        /// This replica's name.
        replica: String,
    },
}

/// The store settings of `o`, checked.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key.
fn store_config(o: &Options) -> Result<StoreConfig, ConfigError> {
    match o.store.as_deref().unwrap_or("sqlite") {
        "sqlite" => Ok(StoreConfig::Sqlite),
        "etcd" => {
            let endpoints = o.etcd_endpoints.clone().unwrap_or_default();
            if endpoints.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "etcd_endpoints",
                    message: "store = \"etcd\" needs at least one etcd client URL".to_owned(),
                });
            }
            if let Some(bad) = endpoints
                .iter()
                .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
            {
                return Err(ConfigError::Invalid {
                    key: "etcd_endpoints",
                    message: format!("{bad:?} is not an http(s) URL"),
                });
            }
            if o.etcd_cert.is_some() != o.etcd_key.is_some() {
                return Err(ConfigError::Invalid {
                    key: "etcd_cert",
                    message: "etcd_cert and etcd_key go together".to_owned(),
                });
            }
            let prefix = o
                .etcd_prefix
                .clone()
                .unwrap_or_else(|| "/rke2ops/hub".to_owned());
            if !prefix.starts_with('/') || prefix.len() < 2 {
                return Err(ConfigError::Invalid {
                    key: "etcd_prefix",
                    message: format!("{prefix:?} must start with / and name something"),
                });
            }
            let replica = o.replica_name.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "hub".to_owned())
            });
            Ok(StoreConfig::Etcd {
                settings: crate::ha::EtcdSettings {
                    endpoints,
                    prefix,
                    ca: o.etcd_ca.clone(),
                    cert: o.etcd_cert.clone(),
                    key: o.etcd_key.clone(),
                    lease: Duration::from_secs(o.leader_lease_secs.unwrap_or(10).clamp(2, 120)),
                    timeout: Duration::from_secs(5),
                },
                replica,
            })
        }
        other => Err(ConfigError::Invalid {
            key: "store",
            message: format!("{other:?}: sqlite or etcd"),
        }),
    }
}

/// A `[clusters.NAME]` table of hub.toml: one more cluster's Kubernetes access and where its
/// upgrades come from.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterOptions {
    /// Its kubeconfig (a copy of one of its servers' rke2.yaml) [default: none, no cordon or
    /// drain in it].
    pub kubeconfig: Option<PathBuf>,
    /// Its apiservers, tried in order [default: the kubeconfig's].
    pub apiserver_endpoints: Option<Vec<String>>,
    /// Its upgrades' artifact source [default: the hub's `artifact_mirror`].
    pub artifact_mirror: Option<String>,
    /// Its RKE2 channels JSON [default: the hub's `channel_url`].
    pub channel_url: Option<String>,
}

/// One named cluster's settings, checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Its Kubernetes API (none: no cordon or drain there).
    pub kube: Option<crate::kube::KubeSettings>,
    /// Its upgrades' artifact source (none: the hub's).
    pub artifact_mirror: Option<String>,
    /// Its channels JSON (none: the hub's).
    pub channel_url: Option<String>,
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
    /// The doctor's clock-skew threshold.
    pub clock_skew: Duration,
    /// Probes for plans that name none.
    pub default_probes: Vec<crate::probe::ProbeSpec>,
    /// Webhooks notified of plan and probe events ([`crate::notify`]).
    pub webhooks: Vec<crate::notify::Webhook>,
    /// The other clusters' settings, by name.
    pub clusters: std::collections::BTreeMap<String, ClusterConfig>,
    /// Where the hub's state lives.
    pub store: StoreConfig,
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

/// `[clusters.NAME]` tables with the `--cluster-kubeconfig NAME=PATH` and
/// `--cluster-apiserver-endpoint NAME=URL` flags over them: every named cluster's access.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key: a flag without `=`, a bad cluster name, endpoints
/// for a cluster without a kubeconfig, the default cluster (its access is the top-level keys).
fn cluster_access(
    tables: Option<std::collections::BTreeMap<String, ClusterOptions>>,
    kubeconfigs: Option<Vec<String>>,
    endpoints: Option<Vec<String>>,
) -> Result<std::collections::BTreeMap<String, ClusterConfig>, ConfigError> {
    let mut tables = tables.unwrap_or_default();
    let pairs = |key: &'static str, values: Option<Vec<String>>| {
        values
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                v.split_once('=')
                    .map(|(n, x)| (n.trim().to_owned(), x.trim().to_owned()))
                    .ok_or_else(|| ConfigError::Invalid {
                        key,
                        message: format!("{v:?} is not NAME=VALUE"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let flag_kubeconfigs = pairs("cluster_kubeconfigs", kubeconfigs)?;
    let flag_endpoints = pairs("cluster_apiserver_endpoints", endpoints)?;
    let mut flagged: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (name, path) in flag_kubeconfigs {
        tables.entry(name).or_default().kubeconfig = Some(PathBuf::from(path));
    }
    for (name, url) in flag_endpoints {
        let table = tables.entry(name.clone()).or_default();
        if flagged.insert(name) {
            table.apiserver_endpoints = Some(Vec::new());
        }
        table
            .apiserver_endpoints
            .get_or_insert_with(Vec::new)
            .push(url);
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, table) in tables {
        rke2ops_common::ids::check_cluster_name(&name).map_err(|e| ConfigError::Invalid {
            key: "clusters",
            message: format!("[clusters.{name}]: {e}"),
        })?;
        if name == rke2ops_common::ids::DEFAULT_CLUSTER {
            return Err(ConfigError::Invalid {
                key: "clusters",
                message: "[clusters.default]: the default cluster's access is the top-level \
                          `kubeconfig` and `apiserver_endpoints`"
                    .to_owned(),
            });
        }
        let kube = match (table.kubeconfig, table.apiserver_endpoints) {
            (Some(kubeconfig), endpoints) => Some(crate::kube::KubeSettings {
                kubeconfig,
                endpoints: endpoints.unwrap_or_default(),
            }),
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "clusters",
                    message: format!("[clusters.{name}]: apiserver_endpoints without a kubeconfig"),
                });
            }
            (None, None) => None,
        };
        if let Some(url) = &table.channel_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "clusters",
                message: format!("[clusters.{name}] channel_url: {url:?} is not an http(s) URL"),
            });
        }
        out.insert(
            name,
            ClusterConfig {
                kube,
                artifact_mirror: table.artifact_mirror,
                channel_url: table.channel_url,
            },
        );
    }
    Ok(out)
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

impl Options {
    /// Loads the file `path`; a missing file is empty only when not `required`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key and line.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        rke2ops_common::config::load_toml(path, required)
    }
}

impl Config {
    /// The effective configuration: `o` (flags over the file, see [`Options::or`]) over the
    /// defaults, checked.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key of a bad value.
    pub fn resolve(o: Options) -> Result<Self, ConfigError> {
        let store = store_config(&o)?;
        let listen = o
            .listen_addr
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = addr("listen_addr", &listen)?;
        let advertise_address = o.advertise_address.unwrap_or_else(|| listen.clone());
        let mut server_sans = o.server_sans.unwrap_or_default();
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
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned());
        Ok(Self {
            store,
            listen_addr,
            advertise_address,
            server_sans,
            metrics_addr: addr("metrics_addr", &metrics)?,
            state_dir: o.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            admin_socket: o
                .admin_socket
                .unwrap_or_else(|| DEFAULT_ADMIN_SOCKET.into()),
            heartbeat_timeout: Duration::from_secs(o.heartbeat_timeout_secs.unwrap_or(35)),
            kubeconfig: o.kubeconfig.or_else(|| {
                credential(
                    std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(),
                    KUBECONFIG_CREDENTIAL,
                )
            }),
            apiserver_endpoints: o.apiserver_endpoints.unwrap_or_default(),
            clusters: cluster_access(
                o.clusters,
                o.cluster_kubeconfigs,
                o.cluster_apiserver_endpoints,
            )?,
            channel_url: o
                .channel_url
                .unwrap_or_else(|| DEFAULT_CHANNEL_URL.to_owned()),
            artifact_mirror: o
                .artifact_mirror
                .unwrap_or_else(|| DEFAULT_ARTIFACT_MIRROR.to_owned()),
            auto_restart_within: o
                .auto_restart_within_days
                .map(|d| Duration::from_secs(d * 86_400)),
            auto_restart_window: match o.auto_restart_window {
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
            alert_gate: match o.alert_gate_prometheus_url.filter(|u| !u.trim().is_empty()) {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(ConfigError::Invalid {
                        key: "alert_gate_prometheus_url",
                        message: format!("{url:?} is not an http(s) URL"),
                    });
                }
                Some(url) => Some(crate::engine::AlertGate {
                    prometheus_url: url,
                    ignore: o.alert_gate_ignore.unwrap_or_else(|| {
                        crate::plan::alerts::DEFAULT_IGNORED
                            .iter()
                            .map(|s| (*s).to_owned())
                            .collect()
                    }),
                }),
                None => None,
            },
            listener_limits: {
                let defaults = crate::listener::Limits::default();
                let per_peer =
                    o.max_unauthenticated_per_peer
                        .map_or(Ok(defaults.per_peer), |n| {
                            std::num::NonZeroUsize::new(n).ok_or(ConfigError::Invalid {
                                key: "max_unauthenticated_per_peer",
                                message: "must be at least 1".to_owned(),
                            })
                        })?;
                let handshake =
                    o.tls_handshake_timeout_secs
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
            webhooks: crate::notify::spec::parse_all(&o.webhooks.unwrap_or_default()).map_err(
                |e| ConfigError::Invalid {
                    key: "webhooks",
                    message: e.to_string(),
                },
            )?,
            clock_skew: match o
                .doctor_clock_skew_secs
                .unwrap_or(crate::doctor::clock::DEFAULT_THRESHOLD_SECS)
            {
                s @ 1..=86_400 => Duration::from_secs(s),
                s => {
                    return Err(ConfigError::Invalid {
                        key: "doctor_clock_skew_secs",
                        message: format!("{s} is outside 1..=86400"),
                    });
                }
            },
            default_probes: crate::probe::spec::parse_all(&o.probes.unwrap_or_default()).map_err(
                |e| ConfigError::Invalid {
                    key: "probes",
                    message: e.to_string(),
                },
            )?,
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
        let msg = Options::load(&path, true).expect_err("unknown").to_string();
        assert!(
            msg.contains("listen_adr") && msg.contains("line 2") && msg.contains("hub.toml"),
            "{msg}"
        );
    }

    #[test]
    fn the_store_is_sqlite_unless_etcd_is_named_with_its_endpoints() {
        let base = Options::default();
        assert_eq!(
            Config::resolve(base.clone()).expect("default").store,
            StoreConfig::Sqlite
        );
        let etcd = |o: Options| Config::resolve(o).map(|c| c.store);
        let err = etcd(Options {
            store: Some("etcd".into()),
            ..base.clone()
        })
        .expect_err("no endpoints")
        .to_string();
        assert!(err.contains("etcd_endpoints"), "{err}");
        let err = etcd(Options {
            store: Some("etcd".into()),
            etcd_endpoints: Some(vec!["10.0.0.5:2379".into()]),
            ..base.clone()
        })
        .expect_err("no scheme")
        .to_string();
        assert!(
            err.contains("10.0.0.5:2379") && err.contains("http(s)"),
            "{err}"
        );
        let err = etcd(Options {
            store: Some("postgres".into()),
            ..base.clone()
        })
        .expect_err("unknown store")
        .to_string();
        assert!(err.contains("store") && err.contains("postgres"), "{err}");
        let err = etcd(Options {
            store: Some("etcd".into()),
            etcd_endpoints: Some(vec!["https://e:2379".into()]),
            etcd_cert: Some("/c".into()),
            ..base.clone()
        })
        .expect_err("cert without key")
        .to_string();
        assert!(err.contains("etcd_cert and etcd_key"), "{err}");
        let Ok(StoreConfig::Etcd { settings, replica }) = etcd(Options {
            store: Some("etcd".into()),
            etcd_endpoints: Some(vec!["https://e1:2379".into(), "https://e2:2379".into()]),
            replica_name: Some("hub-a".into()),
            leader_lease_secs: Some(1),
            ..base
        }) else {
            panic!("etcd store");
        };
        assert_eq!(replica, "hub-a");
        assert_eq!(settings.prefix, "/rke2ops/hub");
        assert_eq!(
            settings.lease,
            Duration::from_secs(2),
            "clamped to at least 2 s"
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
        let c = Config::resolve(Options::default()).expect("valid");
        assert_eq!(c.alert_gate, None, "off by default");
        let file = Options {
            alert_gate_prometheus_url: Some("http://prom:9090".into()),
            ..Options::default()
        };
        let gate = Config::resolve(Options::default().or(file))
            .expect("valid")
            .alert_gate
            .expect("configured");
        assert!(gate.ignore.iter().any(|a| a == "RKE2RenewalRestartDue"));
        let o = Options {
            alert_gate_prometheus_url: Some("http://prom:9090".into()),
            alert_gate_ignore: Some(vec!["Noisy".into()]),
            ..Options::default()
        };
        let gate = Config::resolve(o)
            .expect("valid")
            .alert_gate
            .expect("configured");
        assert_eq!(
            gate.ignore,
            ["Noisy"],
            "an explicit list replaces the default"
        );
        let o = Options {
            alert_gate_prometheus_url: Some("prom:9090".into()),
            ..Options::default()
        };
        let err = Config::resolve(o).expect_err("not a URL");
        assert!(
            err.to_string().contains("alert_gate_prometheus_url"),
            "{err}"
        );
    }

    #[test]
    fn webhooks_are_checked_naming_the_key_but_not_the_url() {
        let o = Options {
            webhooks: Some(vec![
                "ops=slack:https://hooks.slack.com/services/T/B/s3cret".into(),
                "http://127.0.0.1:9/hook".into(),
            ]),
            ..Options::default()
        };
        let c = Config::resolve(o).expect("valid");
        let names: Vec<_> = c.webhooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["ops", "1"]);
        assert_eq!(c.webhooks[0].format, crate::notify::Format::Slack);
        assert!(!format!("{c:?}").contains("s3cret"));
        let o = Options {
            webhooks: Some(vec!["hooks.example/s3cret".into()]),
            ..Options::default()
        };
        let err = Config::resolve(o).expect_err("no scheme").to_string();
        assert!(err.contains("webhooks") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn advertised_host_becomes_a_san_and_flags_win() {
        let file = Options {
            advertise_address: Some("hub.example:9811".into()),
            metrics_addr: Some("127.0.0.2:2".into()),
            ..Options::default()
        };
        let flags = Options {
            metrics_addr: Some("127.0.0.1:1".into()),
            ..Options::default()
        };
        let c = Config::resolve(flags.or(file)).expect("valid");
        assert_eq!(c.server_sans, vec!["hub.example"]);
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:1");
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:9811");
    }

    #[test]
    fn flags_replace_file_lists_and_the_file_fills_the_rest() {
        let file = Options {
            server_sans: Some(vec!["file.example".into()]),
            apiserver_endpoints: Some(vec!["https://a:6443".into()]),
            heartbeat_timeout_secs: Some(20),
            ..Options::default()
        };
        let flags = Options {
            server_sans: Some(vec!["flag.example".into()]),
            ..Options::default()
        };
        let c = Config::resolve(flags.or(file)).expect("valid");
        assert_eq!(c.server_sans, ["flag.example"]);
        assert_eq!(c.apiserver_endpoints, ["https://a:6443"]);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(20));
    }

    #[test]
    fn default_probes_are_checked_at_start_naming_the_key() {
        let o: Options = rke2ops_common::config::parse_toml(
            "probes = [\"tcp://db:5432,name=db\", \"workload:shop/Deployment/web\"]\n",
            Path::new("hub.toml"),
        )
        .expect("parses");
        let config = Config::resolve(o).expect("valid");
        assert_eq!(config.default_probes.len(), 2);
        assert_eq!(config.default_probes[0].name, "db");
        let bad: Options =
            rke2ops_common::config::parse_toml("probes = [\"ftp://x\"]\n", Path::new("hub.toml"))
                .expect("parses");
        let err = Config::resolve(bad).expect_err("bad probe").to_string();
        assert!(
            err.contains("probes") && err.contains("must start with"),
            "{err}"
        );
    }

    #[test]
    fn every_flag_of_serve_is_a_file_key() {
        // One definition: a flag's value lands in the field named like the hub.toml key.
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "rke2-hub",
            "serve",
            "--server-san",
            "a,b",
            "--apiserver-endpoint",
            "https://x:6443",
            "--history-retention-days",
            "9",
        ])
        .expect("parses");
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        let text = "server_sans = [\"a\", \"b\"]\napiserver_endpoints = [\"https://x:6443\"]\n\
                    history_retention_days = 9\n";
        let file: Options =
            rke2ops_common::config::parse_toml(text, Path::new("hub.toml")).expect("parses");
        assert_eq!(args.options, file);
    }

    #[test]
    fn clusters_get_their_access_from_tables_and_flags() {
        let text = "[clusters.prod]\nkubeconfig = \"/etc/rke2-ops/prod.yaml\"\n\
                    apiserver_endpoints = [\"https://10.0.0.1:6443\"]\n\
                    [clusters.dev]\nkubeconfig = \"/etc/rke2-ops/dev.yaml\"\n";
        let file: Options =
            rke2ops_common::config::parse_toml(text, Path::new("hub.toml")).expect("parses");
        let flags = Options {
            cluster_apiserver_endpoints: Some(vec![
                "dev=https://10.1.0.1:6443".into(),
                "dev=https://10.1.0.2:6443".into(),
            ]),
            cluster_kubeconfigs: Some(vec!["lab=/tmp/lab.yaml".into()]),
            ..Options::default()
        };
        let config = Config::resolve(flags.or(file)).expect("valid");
        let names: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
        assert_eq!(names, ["dev", "lab", "prod"]);
        let endpoints = |name: &str| config.clusters[name].kube.clone().expect("kube").endpoints;
        assert_eq!(
            endpoints("dev"),
            ["https://10.1.0.1:6443", "https://10.1.0.2:6443"]
        );
        assert_eq!(endpoints("prod"), ["https://10.0.0.1:6443"]);
        for (bad, needle) in [
            ("[clusters.default]\nkubeconfig = \"/x\"\n", "top-level"),
            ("[clusters.Prod]\nkubeconfig = \"/x\"\n", "DNS label"),
            (
                "[clusters.prod]\napiserver_endpoints = [\"https://x\"]\n",
                "without a kubeconfig",
            ),
            (
                "[clusters.prod]\nchannel_url = \"ftp://x\"\n",
                "not an http(s) URL",
            ),
        ] {
            let file: Options =
                rke2ops_common::config::parse_toml(bad, Path::new("hub.toml")).expect("parses");
            let err = Config::resolve(file).expect_err(bad).to_string();
            assert!(err.contains("clusters") && err.contains(needle), "{err}");
        }
        let err = rke2ops_common::config::parse_toml::<Options>(
            "[clusters.prod]\nkubeconfg = \"/x\"\n",
            Path::new("hub.toml"),
        )
        .expect_err("unknown key")
        .to_string();
        assert!(err.contains("kubeconfg"), "{err}");
    }

    #[test]
    fn every_serve_setting_is_a_hub_toml_key_and_unknown_keys_are_not() {
        let command = <Options as clap::Args>::augment_args(clap::Command::new("serve"));
        let ids: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        assert_eq!(ids.len(), 31, "{ids:?}");
        for id in ids.iter().map(String::as_str).chain(["no_such_key"]) {
            // A value of the wrong type for most keys: only an unknown key says "unknown".
            let text = format!("{id} = {{}}\n");
            let err = rke2ops_common::config::parse_toml::<Options>(&text, Path::new("hub.toml"))
                .expect_err("a table is no setting's type")
                .to_string();
            assert_eq!(
                err.contains("unknown field"),
                id == "no_such_key",
                "{id}: {err}"
            );
        }
    }
}
