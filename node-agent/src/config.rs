//! The agent's configuration: `/etc/rke2-ops/node-agent.toml`, then command-line flags (each
//! with an environment variable) on top.
//!
//! Unknown keys are errors that name the key and the line, because a typo in a safety tool's
//! configuration must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use rke2ops_common::certs::status::DEFAULT_WARN_DAYS;
use rke2ops_common::layout::{DEFAULT_ADMIN_KUBECONFIG, DEFAULT_DATA_DIR};
use serde::Deserialize;

use crate::ops::artifacts::{Source, check_allowed};

mod hub;
pub use hub::HubAddress;

/// Where the agent looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rke2-ops/node-agent.toml";
/// The metrics listener by default (all addresses: Prometheus scrapes nodes remotely; the
/// endpoint carries no secrets).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9810";

pub use rke2ops_common::config::ConfigError;

/// Declares [`ConfigLayer`] once, and with it [`ConfigLayer::over`], so the file's keys, the
/// flags and the merge cannot drift apart: adding a key is one field here plus its default in
/// [`Config::resolve`].
macro_rules! config_layer {
    (
        $(#[$struct_meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: Option<$ty:ty>,
            )*
        }
    ) => {
        $(#[$struct_meta])*
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// This layer over `lower`: every key set here wins, the others come from `lower`.
            #[must_use]
            pub fn over(self, lower: Self) -> Self {
                Self {
                    $($field: self.$field.or(lower.$field),)*
                }
            }
        }
    };
}

config_layer! {
    /// One layer of the configuration, every key optional: the file
    /// (`/etc/rke2-ops/node-agent.toml`, unknown keys refused) and the command line (each flag
    /// with its `RKE2OPS_*` environment variable) are both this struct. The flags' layer goes
    /// [`over`](Self::over) the file's; [`Config::resolve`] fills the rest with defaults and
    /// checks the values. The doc comments are the flags' `--help`.
    #[derive(Debug, Default, Clone, PartialEq, Eq, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ConfigLayer {
        /// RKE2's data dir [default: /var/lib/rancher/rke2].
        #[arg(long, env = "RKE2OPS_DATA_DIR")]
        pub data_dir: Option<PathBuf>,
        /// RKE2's admin kubeconfig [default: /etc/rancher/rke2/rke2.yaml].
        #[arg(long, env = "RKE2OPS_ADMIN_KUBECONFIG")]
        pub admin_kubeconfig: Option<PathBuf>,
        /// Extra kubeconfig whose embedded certificates are inspected (repeatable).
        #[arg(long = "kubeconfig", env = "RKE2OPS_KUBECONFIGS", value_delimiter = ',')]
        pub kubeconfigs: Option<Vec<PathBuf>>,
        /// host:port for /metrics and /healthz [default: 0.0.0.0:9810]. A flag of `run` only
        /// (`RunArgs`), so not one of the shared flags.
        #[arg(skip)]
        pub metrics_addr: Option<String>,
        /// Days before expiry from which a certificate is WARNING [default: 120].
        #[arg(long, env = "RKE2OPS_WARN_DAYS")]
        pub warn_days: Option<u32>,
        /// Journal and identity folder [default: /var/lib/rke2-ops/node-agent].
        #[arg(long, env = "RKE2OPS_STATE_DIR")]
        pub state_dir: Option<PathBuf>,
        /// The rke2 binary [default: /usr/local/bin/rke2].
        #[arg(long, env = "RKE2OPS_RKE2_BIN")]
        pub rke2_bin: Option<PathBuf>,
        /// RKE2's config.yaml, for node-ip [default: /etc/rancher/rke2/config.yaml].
        #[arg(long, env = "RKE2OPS_NODE_CONFIG")]
        pub node_config: Option<PathBuf>,
        /// kubelet's health endpoint host:port [default: 127.0.0.1:10248].
        #[arg(long, env = "RKE2OPS_KUBELET_HEALTHZ_ADDR")]
        pub kubelet_healthz_addr: Option<String>,
        /// Seconds RKE2 may take to become ready after a start [default: 600].
        #[arg(long, env = "RKE2OPS_READY_TIMEOUT_SECS")]
        pub ready_timeout_secs: Option<u64>,
        /// The hub's host:port, or every hub replica's, comma-separated, the preferred first
        /// (no hub link when unset).
        #[arg(long, env = "RKE2OPS_HUB_ADDRESS")]
        pub hub_address: Option<String>,
        /// Every hub replica's host:port, the preferred first: the file's list form of
        /// `hub_address` (the flag and the environment variable take a comma-separated
        /// `--hub-address`), so not a flag of its own.
        #[arg(skip)]
        pub hub_addresses: Option<Vec<String>>,
        /// Join token for the first enrollment (prefer the config file or the environment: a
        /// flag is visible in the process list).
        #[arg(long, env = "RKE2OPS_HUB_TOKEN", hide_env_values = true)]
        pub hub_token: Option<String>,
        /// sha256:<hex> pin of the hub CA, for the first enrollment.
        #[arg(long, env = "RKE2OPS_HUB_CA_PIN")]
        pub hub_ca_pin: Option<String>,
        /// This node's name at the hub [default: the host name].
        #[arg(long, env = "RKE2OPS_NODE_NAME")]
        pub node_name: Option<String>,
        /// The RKE2 cluster this node belongs to, as the hub names it (a DNS label; fixed at
        /// enrollment) [default: default].
        #[arg(long, env = "RKE2OPS_CLUSTER")]
        pub cluster: Option<String>,
        /// Seconds between heartbeats to the hub [default: 10].
        #[arg(long, env = "RKE2OPS_HEARTBEAT_SECS")]
        pub heartbeat_secs: Option<u64>,
        /// Where upgrades fetch RKE2 releases: http(s) URL prefix or absolute folder.
        #[arg(long, env = "RKE2OPS_ARTIFACT_SOURCE")]
        pub artifact_source: Option<String>,
        /// The only sources upgrades may fetch from (repeatable; URL prefix or folder)
        /// [default: any].
        #[arg(
            long = "allowed-artifact-source",
            env = "RKE2OPS_ALLOWED_ARTIFACT_SOURCES",
            value_delimiter = ','
        )]
        pub allowed_artifact_sources: Option<Vec<String>>,
        /// Where RKE2's tarball is installed [default: /usr/local].
        #[arg(long, env = "RKE2OPS_INSTALL_PREFIX")]
        pub install_prefix: Option<PathBuf>,
        /// RPM installs: RKE2's repository (URL of the channel, laid out per minor) or an
        /// absolute folder of `.rpm` files (air-gapped)
        /// [default: https://rpm.rancher.io/rke2/stable].
        #[arg(long, env = "RKE2OPS_RPM_REPOSITORY")]
        pub rpm_repository: Option<String>,
        /// RPM installs: the repository's OS folder (`centos/9`, `slemicro`)
        /// [default: from /etc/os-release].
        #[arg(long, env = "RKE2OPS_RPM_OS")]
        pub rpm_os: Option<String>,
        /// RPM installs: the key packages are checked with; empty: unchecked (a mirror
        /// without signatures) [default: https://rpm.rancher.io/public.key].
        #[arg(long, env = "RKE2OPS_RPM_GPG_KEY")]
        pub rpm_gpg_key: Option<String>,
        /// RPM installs: dnf, yum or zypper [default: the first installed].
        #[arg(long, env = "RKE2OPS_PACKAGE_MANAGER")]
        pub package_manager: Option<String>,
    }
}

/// The configuration file's layer.
pub type FileConfig = ConfigLayer;
/// The command line's layer (flags and their environment variables); it wins over the file.
pub type Overrides = ConfigLayer;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// RKE2's data dir.
    pub data_dir: PathBuf,
    /// RKE2's admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
    /// Extra kubeconfigs.
    pub kubeconfigs: Vec<PathBuf>,
    /// Metrics listener.
    pub metrics_addr: SocketAddr,
    /// Warning window in days.
    pub warn_days: u32,
    /// Journal and identity folder.
    pub state_dir: PathBuf,
    /// The `rke2` binary.
    pub rke2_bin: PathBuf,
    /// RKE2's config.yaml.
    pub node_config: PathBuf,
    /// kubelet health endpoint.
    pub kubelet_healthz_addr: String,
    /// Readiness deadline after a start.
    pub ready_timeout: std::time::Duration,
    /// The hub link, when configured.
    pub hub: Option<HubConfig>,
    /// Upgrades' artifact source (validated when used: a hub may send its own).
    pub artifact_source: Option<String>,
    /// Where upgrades may fetch from (empty: anywhere).
    pub allowed_artifact_sources: Vec<Source>,
    /// RKE2's install prefix.
    pub install_prefix: PathBuf,
    /// RPM installs' repository, OS folder, key and package manager.
    pub rpm: RpmConfig,
}

/// How RPM installs are upgraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmConfig {
    /// Repository URL (per-minor layout) or absolute folder of `.rpm` files.
    pub repository: String,
    /// The repository's OS folder; `None`: from `/etc/os-release` when needed.
    pub os: Option<String>,
    /// The signing key; `None`: unchecked.
    pub gpg_key: Option<String>,
    /// The package manager; `None`: the first installed.
    pub package_manager: Option<crate::ops::pkg::PackageTool>,
}

/// The hub link's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Every hub replica, never empty, the preferred first: the link starts there and moves
    /// to the leader (or the next address) when a replica cannot serve it.
    pub addresses: Vec<HubAddress>,
    /// Join token (secret; not shown by Debug).
    pub token: Option<String>,
    /// CA pin.
    pub ca_pin: Option<String>,
    /// Node name.
    pub node_name: String,
    /// The cluster the node belongs to (checked).
    pub cluster: String,
    /// Heartbeat interval.
    pub heartbeat: std::time::Duration,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("addresses", &self.addresses)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("ca_pin", &self.ca_pin)
            .field("node_name", &self.node_name)
            .field("cluster", &self.cluster)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// Default journal and identity folder (the unit's `StateDirectory=rke2-ops`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rke2-ops/node-agent";
/// RKE2's binary as the tarball installer puts it.
pub const DEFAULT_RKE2_BIN: &str = "/usr/local/bin/rke2";
/// kubelet's default health endpoint.
pub const DEFAULT_KUBELET_HEALTHZ: &str = "127.0.0.1:10248";
/// install.sh's default tarball prefix.
pub const DEFAULT_INSTALL_PREFIX: &str = "/usr/local";

impl ConfigLayer {
    /// Parses TOML text; `path` only names the source in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the key and line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        rke2ops_common::config::parse_toml(text, path)
    }

    /// Loads `path`. A missing file is an empty configuration only when `required` is false
    /// (the default path may legitimately be absent; an explicit `--config` may not).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        rke2ops_common::config::load_toml(path, required)
    }
}

impl Config {
    /// Merges defaults, the file and the overrides (in rising priority): a key the overrides
    /// set wins whole (a list given on the command line replaces the file's).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad address or window.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        // The two hub keys are one setting: resolved per layer (both in one layer is an
        // error), then the command line's wins whole, like any other key.
        let hub_addresses = match hub::layer_entries(&overrides, "the flags and environment")? {
            Some(set) => Some(set),
            None => hub::layer_entries(&file, "the config file")?,
        }
        .map(|(key, entries)| hub::parse_entries(key, &entries))
        .transpose()?;
        let layer = overrides.over(file);
        let metrics_addr = layer
            .metrics_addr
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned());
        let metrics_addr = metrics_addr.parse().map_err(|e| ConfigError::Invalid {
            key: "metrics_addr",
            message: format!("{metrics_addr:?} is not host:port ({e})"),
        })?;
        let warn_days = layer.warn_days.unwrap_or(DEFAULT_WARN_DAYS);
        if warn_days > 3650 {
            return Err(ConfigError::Invalid {
                key: "warn_days",
                message: format!("{warn_days} days is more than 10 years"),
            });
        }
        let kubeconfigs = layer.kubeconfigs.unwrap_or_default();
        let install_prefix = layer
            .install_prefix
            .unwrap_or_else(|| PathBuf::from(DEFAULT_INSTALL_PREFIX));
        if !install_prefix.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "install_prefix",
                message: format!("{} is not an absolute path", install_prefix.display()),
            });
        }
        let artifact_source = layer.artifact_source.filter(|s| !s.trim().is_empty());
        let allowed = layer.allowed_artifact_sources.unwrap_or_default();
        let allowed_artifact_sources = allowed
            .iter()
            .map(|s| Source::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                key: "allowed_artifact_sources",
                message: e.to_string(),
            })?;
        if let Some(source) = &artifact_source {
            Source::parse(source)
                .and_then(|s| check_allowed(&s, &allowed_artifact_sources))
                .map_err(|e| ConfigError::Invalid {
                    key: "artifact_source",
                    message: e.to_string(),
                })?;
        }
        let rpm = RpmConfig {
            repository: layer
                .rpm_repository
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| rke2ops_common::install::DEFAULT_RPM_REPOSITORY.to_owned()),
            os: layer.rpm_os.filter(|s| !s.trim().is_empty()),
            gpg_key: match layer.rpm_gpg_key {
                None => Some(rke2ops_common::install::DEFAULT_RPM_GPG_KEY.to_owned()),
                Some(key) if key.trim().is_empty() => None,
                Some(key) => Some(key),
            },
            package_manager: match layer.package_manager.as_deref() {
                None | Some("") => None,
                Some(name) => Some(crate::ops::pkg::PackageTool::from_name(name).ok_or_else(
                    || ConfigError::Invalid {
                        key: "package_manager",
                        message: format!("{name:?} is not dnf, yum or zypper"),
                    },
                )?),
            },
        };
        if !(rpm.repository.starts_with('/')
            || rpm.repository.starts_with("http://")
            || rpm.repository.starts_with("https://")
            || rpm.repository.starts_with("file:///"))
        {
            return Err(ConfigError::Invalid {
                key: "rpm_repository",
                message: format!(
                    "{:?} is neither an http(s)/file URL nor an absolute folder",
                    rpm.repository
                ),
            });
        }
        // Both show in step details, which reach the hub and its audit log.
        for (name, value) in [
            ("rpm_repository", Some(rpm.repository.as_str())),
            ("rpm_gpg_key", rpm.gpg_key.as_deref()),
        ] {
            if let Some(url) = value.and_then(|v| reqwest::Url::parse(v).ok())
                && (!url.username().is_empty() || url.password().is_some())
            {
                return Err(ConfigError::Invalid {
                    key: name,
                    message: "a URL with credentials is refused: it would show in step \
                              details and the hub's audit log"
                        .to_owned(),
                });
            }
        }
        if let Some(key) = &rpm.gpg_key
            && !(key.starts_with('/')
                || key.starts_with("http://")
                || key.starts_with("https://")
                || key.starts_with("file:///"))
        {
            return Err(ConfigError::Invalid {
                key: "rpm_gpg_key",
                message: format!(
                    "{key:?} is neither an http(s)/file URL nor an absolute path (\"\" leaves packages unchecked)"
                ),
            });
        }
        Ok(Self {
            artifact_source,
            allowed_artifact_sources,
            install_prefix,
            rpm,
            data_dir: layer
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            admin_kubeconfig: layer
                .admin_kubeconfig
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_KUBECONFIG)),
            kubeconfigs,
            metrics_addr,
            warn_days,
            state_dir: layer
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            rke2_bin: layer
                .rke2_bin
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RKE2_BIN)),
            node_config: layer
                .node_config
                .unwrap_or_else(|| PathBuf::from(rke2ops_common::layout::DEFAULT_NODE_CONFIG)),
            kubelet_healthz_addr: layer
                .kubelet_healthz_addr
                .unwrap_or_else(|| DEFAULT_KUBELET_HEALTHZ.to_owned()),
            ready_timeout: std::time::Duration::from_secs(layer.ready_timeout_secs.unwrap_or(600)),
            hub: match hub_addresses {
                None => None,
                Some(addresses) => Some(HubConfig {
                    addresses,
                    token: layer.hub_token,
                    ca_pin: layer.hub_ca_pin,
                    node_name: match layer.node_name {
                        Some(name) => name,
                        None => nix::unistd::gethostname()
                            .ok()
                            .and_then(|h| h.into_string().ok())
                            .ok_or(ConfigError::Invalid {
                                key: "node_name",
                                message: "not set and the host name is unreadable".to_owned(),
                            })?,
                    },
                    cluster: match layer.cluster {
                        None => rke2ops_common::ids::DEFAULT_CLUSTER.to_owned(),
                        Some(cluster) => {
                            rke2ops_common::ids::check_cluster_name(&cluster).map_err(|e| {
                                ConfigError::Invalid {
                                    key: "cluster",
                                    message: e.to_string(),
                                }
                            })?;
                            cluster
                        }
                    },
                    heartbeat: std::time::Duration::from_secs(
                        layer.heartbeat_secs.unwrap_or(10).max(1),
                    ),
                }),
            },
        })
    }

    /// What the scanner should scan.
    #[must_use]
    pub fn scan_config(&self) -> rke2ops_common::certs::ScanConfig {
        rke2ops_common::certs::ScanConfig::new(
            self.data_dir.clone(),
            Some(self.admin_kubeconfig.clone()),
            &self.kubeconfigs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("/etc/rke2-ops/node-agent.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config =
            Config::resolve(parse("").expect("parses"), Overrides::default()).expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/rancher/rke2"));
        assert_eq!(config.metrics_addr.port(), 9810);
        assert_eq!(config.warn_days, 120);
    }

    #[test]
    fn the_rpm_key_is_a_url_or_an_absolute_path_and_empty_leaves_packages_unchecked() {
        let resolve =
            |text: &str| Config::resolve(parse(text).expect("parses"), Overrides::default());
        let key = |text: &str| resolve(text).expect("valid").rpm.gpg_key;
        assert_eq!(
            key("").as_deref(),
            Some(rke2ops_common::install::DEFAULT_RPM_GPG_KEY)
        );
        assert_eq!(key("rpm_gpg_key = \"\"\n"), None);
        assert_eq!(
            key("rpm_gpg_key = \"/srv/rke2/public.key\"\n").as_deref(),
            Some("/srv/rke2/public.key")
        );
        for line in [
            "rpm_gpg_key = \"https://user:secret@rpm.example/public.key\"\n",
            "rpm_repository = \"https://user@rpm.example/rke2/stable\"\n",
        ] {
            let err = resolve(line).expect_err("credentials").to_string();
            assert!(
                err.contains("credentials") && !err.contains("secret"),
                "{err}"
            );
        }
        let err = resolve("rpm_gpg_key = \"public.key\"\n")
            .expect_err("relative")
            .to_string();
        assert!(err.contains("rpm_gpg_key"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_line_and_file() {
        let err = parse("warn_days = 30\ndata_dri = \"/x\"\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("data_dri"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("/etc/rke2-ops/node-agent.toml"), "{msg}");
    }

    #[test]
    fn cluster_defaults_to_default_and_must_be_a_dns_label() {
        let hub = "hub_address = \"10.0.0.1:9811\"\nnode_name = \"n1\"\n";
        let config =
            Config::resolve(parse(hub).expect("parses"), Overrides::default()).expect("valid");
        assert_eq!(config.hub.expect("hub").cluster, "default");
        let config = Config::resolve(
            parse(&format!("{hub}cluster = \"prod-eu\"\n")).expect("parses"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(config.hub.expect("hub").cluster, "prod-eu");
        let err = Config::resolve(
            parse(&format!("{hub}cluster = \"Prod EU\"\n")).expect("parses"),
            Overrides::default(),
        )
        .expect_err("not a DNS label");
        let msg = err.to_string();
        assert!(
            msg.contains("cluster") && msg.contains("DNS label"),
            "{msg}"
        );
    }

    fn hub_hosts(config: &Config) -> Vec<String> {
        config
            .hub
            .as_ref()
            .expect("hub")
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn hub_address_alone_is_one_replica_as_before() {
        let config = Config::resolve(
            parse("hub_address = \"hub.example:9811\"\nnode_name = \"n1\"\n").expect("parses"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(hub_hosts(&config), ["hub.example:9811"]);
        let config =
            Config::resolve(parse("").expect("parses"), Overrides::default()).expect("valid");
        assert_eq!(config.hub, None);
    }

    #[test]
    fn hub_addresses_list_every_replica_in_order() {
        let config = Config::resolve(
            parse("hub_addresses = [\"10.0.0.1:9811\", \"10.0.0.2:9811\"]\nnode_name = \"n1\"\n")
                .expect("parses"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(hub_hosts(&config), ["10.0.0.1:9811", "10.0.0.2:9811"]);
    }

    #[test]
    fn a_comma_separated_flag_replaces_the_file_s_list() {
        let config = Config::resolve(
            parse("hub_addresses = [\"10.0.0.1:9811\"]\nnode_name = \"n1\"\n").expect("parses"),
            Overrides {
                hub_address: Some("10.0.0.3:9811,10.0.0.4:9811".into()),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(hub_hosts(&config), ["10.0.0.3:9811", "10.0.0.4:9811"]);
    }

    #[test]
    fn hub_address_and_hub_addresses_in_one_file_is_an_error() {
        let err = Config::resolve(
            parse("hub_address = \"a:1\"\nhub_addresses = [\"b:1\"]\nnode_name = \"n1\"\n")
                .expect("parses"),
            Overrides::default(),
        )
        .expect_err("both");
        let msg = err.to_string();
        assert!(
            msg.contains("`hub_address`") && msg.contains("`hub_addresses`"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_hub_entry_is_named_with_its_key() {
        let err = Config::resolve(
            parse("hub_addresses = [\"a:1\", \"a:1\"]\nnode_name = \"n1\"\n").expect("parses"),
            Overrides::default(),
        )
        .expect_err("duplicate");
        let msg = err.to_string();
        assert!(
            msg.contains("hub_addresses") && msg.contains("entry 2"),
            "{msg}"
        );
        let err = Config::resolve(
            FileConfig::default(),
            Overrides {
                hub_address: Some("a:1,b".into()),
                node_name: Some("n1".into()),
                ..Overrides::default()
            },
        )
        .expect_err("no port");
        let msg = err.to_string();
        assert!(
            msg.contains("`hub_address`") && msg.contains("\"b\""),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_key() {
        let msg = parse("warn_days = \"ten\"\n")
            .expect_err("bad type")
            .to_string();
        assert!(msg.contains("warn_days") || msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse("data_dir = \"/a\"\nwarn_days = 30\nmetrics_addr = \"127.0.0.1:1\"\n")
            .expect("parses");
        let overrides = Overrides {
            data_dir: Some("/b".into()),
            metrics_addr: Some("127.0.0.2:2".into()),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides).expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/b"));
        assert_eq!(config.warn_days, 30);
        assert_eq!(config.metrics_addr.to_string(), "127.0.0.2:2");
    }

    #[test]
    fn bad_metrics_addr_names_the_key() {
        let err = Config::resolve(
            parse("metrics_addr = \"nope\"").expect("parses"),
            Overrides::default(),
        )
        .expect_err("bad addr");
        assert!(err.to_string().contains("metrics_addr"), "{err}");
    }

    #[test]
    fn upgrade_keys_have_install_sh_defaults_and_are_checked() {
        let config =
            Config::resolve(parse("").expect("parses"), Overrides::default()).expect("valid");
        assert_eq!(config.install_prefix, PathBuf::from("/usr/local"));
        assert_eq!(config.artifact_source, None);
        let config = Config::resolve(
            parse("artifact_source = \"/srv/rke2\"\ninstall_prefix = \"/opt/rke2\"\n")
                .expect("parses"),
            Overrides {
                artifact_source: Some("https://mirror.example/rke2".into()),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(
            config.artifact_source.as_deref(),
            Some("https://mirror.example/rke2")
        );
        assert_eq!(config.install_prefix, PathBuf::from("/opt/rke2"));
        let err = Config::resolve(
            parse("artifact_source = \"mirror\"").expect("parses"),
            Overrides::default(),
        )
        .expect_err("relative");
        assert!(err.to_string().contains("artifact_source"), "{err}");
    }

    #[test]
    fn allowed_artifact_sources_are_parsed_and_bind_the_configured_source() {
        let config = Config::resolve(
            parse(
                "allowed_artifact_sources = [\"https://mirror.example/rke2\", \"/srv/rke2\"]\n\
                 artifact_source = \"/srv/rke2/stable\"\n",
            )
            .expect("parses"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(config.allowed_artifact_sources.len(), 2);
        let err = Config::resolve(
            parse("allowed_artifact_sources = [\"mirror\"]").expect("parses"),
            Overrides::default(),
        )
        .expect_err("relative");
        assert!(
            err.to_string().contains("allowed_artifact_sources"),
            "{err}"
        );
        let err = Config::resolve(
            parse("artifact_source = \"/tmp/x\"").expect("parses"),
            Overrides {
                allowed_artifact_sources: Some(vec!["/srv/rke2".into()]),
                ..Overrides::default()
            },
        )
        .expect_err("outside the list");
        assert!(
            err.to_string().contains("artifact_source") && err.to_string().contains("/tmp/x"),
            "{err}"
        );
    }

    #[test]
    fn missing_default_file_is_empty_but_missing_explicit_file_is_an_error() {
        let path = Path::new("/nonexistent/rke2-ops/node-agent.toml");
        assert_eq!(
            FileConfig::load(path, false).expect("optional"),
            FileConfig::default()
        );
        assert!(FileConfig::load(path, true).is_err());
    }
}
