//! The node's own health as the hub wants it in a status: apiserver `/readyz` (servers),
//! kubelet `/healthz`, etcd as this member sees it (servers), and the installed RKE2 version.
//! Probed at each heartbeat and right before an operation's result; every probe is bounded so a
//! hung endpoint never stalls the stream.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Config;
use crate::health::node_config::{APISERVER_PORT, ETCD_CLIENT_PORT, NodeConfig};
use crate::health::{apiserver, etcd, kubelet};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One round of probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// apiserver and kubelet.
    pub readiness: Readiness,
    /// etcd (servers only).
    pub etcd: Option<EtcdHealth>,
    /// `rke2 --version` of the configured binary; empty when unknown.
    pub rke2_version: String,
    /// How RKE2 is installed (re-detected at most every [`INSTALL_TTL`]).
    pub install: InstallInfo,
}

/// How RKE2 is installed on the node, for the hub's METHOD column and dry runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallInfo {
    /// `rpm`, `tarball`, `mixed`; empty when it could not be told.
    pub method: String,
    /// The packages (`rke2-common-1.34.1~rke2r1-0 ...`), the tarball prefix, or what was
    /// found on a mixed node.
    pub detail: String,
    /// RPM installs: the package manager an upgrade would use.
    pub package_manager: String,
    /// RPM installs: where an upgrade would fetch from (`rpm_repository`).
    pub rpm_repository: String,
}

/// How long a detected install method is reused: detecting runs `rpm -q` (in a transient
/// unit), too much for every heartbeat; operations forget it when they end.
pub const INSTALL_TTL: Duration = Duration::from_secs(300);

static INSTALL: std::sync::Mutex<Option<(std::time::Instant, InstallInfo)>> =
    std::sync::Mutex::new(None);

/// Forgets the detected install (an operation may have changed it).
pub fn forget_install() {
    if let Ok(mut cached) = INSTALL.lock() {
        *cached = None;
    }
}

/// The install method, detected again when the last detection is older than
/// [`INSTALL_TTL`].
pub async fn install_info(config: &Config, is_server: bool) -> InstallInfo {
    if let Ok(cached) = INSTALL.lock()
        && let Some((at, info)) = cached.as_ref()
        && at.elapsed() < INSTALL_TTL
    {
        return info.clone();
    }
    let exec = crate::ops::pkg::HostExec;
    let unit = if is_server {
        "rke2-server.service"
    } else {
        "rke2-agent.service"
    };
    let info = match crate::ops::method::detect(&exec, unit, &config.install_prefix).await {
        Ok(detected) => {
            let rpm = detected.method() == rke2ops_common::install::InstallMethod::Rpm;
            InstallInfo {
                method: detected.method().name().to_owned(),
                detail: detected.detail(),
                package_manager: if rpm {
                    crate::ops::pkg::pick_tool(config.rpm.package_manager, &exec)
                        .map(|t| t.name().to_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
                rpm_repository: if rpm {
                    config.rpm.repository.clone()
                } else {
                    String::new()
                },
            }
        }
        Err(why) if why.starts_with("both installs found") => InstallInfo {
            method: rke2ops_common::install::MIXED.to_owned(),
            detail: why,
            ..InstallInfo::default()
        },
        Err(why) => {
            tracing::debug!(error = %why, "install method not detected");
            InstallInfo::default()
        }
    };
    if let Ok(mut cached) = INSTALL.lock() {
        *cached = Some((std::time::Instant::now(), info.clone()));
    }
    info
}

/// Whether the node's apiserver and kubelet answer as healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// apiserver `/readyz` said ready (servers only; false on agents).
    pub apiserver_ready: bool,
    /// kubelet `/healthz` said ok.
    pub kubelet_healthy: bool,
    /// Why a probe failed, `; `-separated; empty when all is well.
    pub detail: String,
    /// When the probes ran.
    pub checked_at: Option<OffsetDateTime>,
}

/// etcd as this member sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdHealth {
    /// Every member, with whether it answered healthy.
    pub members: Vec<EtcdMember>,
    /// Active alarms (e.g. NOSPACE).
    pub alarms: Vec<String>,
    /// When the probe ran.
    pub checked_at: Option<OffsetDateTime>,
    /// Why etcd could not be asked; empty when it answered.
    pub error: String,
}

/// One etcd member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdMember {
    /// The member's name.
    pub name: String,
    /// Whether it answered healthy.
    pub healthy: bool,
}

/// The part of a probe whose change is worth a summary status (timestamps and wording left
/// out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSummary {
    apiserver_ready: bool,
    kubelet_healthy: bool,
    rke2_version: String,
    etcd_members: Vec<(String, bool)>,
    etcd_alarms: Vec<String>,
    etcd_unreachable: bool,
    install: (String, String),
}

impl Probe {
    /// What a change of which is worth a summary status.
    #[must_use]
    pub fn summary(&self) -> HealthSummary {
        let (members, alarms, etcd_error) = self.etcd.as_ref().map_or_else(
            || (Vec::new(), Vec::new(), false),
            |e| {
                (
                    e.members
                        .iter()
                        .map(|m| (m.name.clone(), m.healthy))
                        .collect(),
                    e.alarms.clone(),
                    !e.error.is_empty(),
                )
            },
        );
        HealthSummary {
            apiserver_ready: self.readiness.apiserver_ready,
            kubelet_healthy: self.readiness.kubelet_healthy,
            rke2_version: self.rke2_version.clone(),
            etcd_members: members,
            etcd_alarms: alarms,
            etcd_unreachable: etcd_error,
            install: (self.install.method.clone(), self.install.detail.clone()),
        }
    }
}

/// Probes the node. `is_server` decides the apiserver and etcd probes.
pub async fn probe(config: &Config, is_server: bool) -> Probe {
    let now = OffsetDateTime::now_utc();
    let rke2_version = crate::ops::runner::binary_version(&crate::ops::setup::effective_rke2_bin(
        &config.rke2_bin,
    ))
    .await
    .unwrap_or_default();
    let install = install_info(config, is_server).await;
    let node = match NodeConfig::load(&config.node_config) {
        Ok(n) => n,
        Err(e) => {
            return Probe {
                readiness: Readiness {
                    detail: e.to_string(),
                    checked_at: Some(now),
                    ..Readiness::default()
                },
                etcd: None,
                rke2_version,
                install,
            };
        }
    };
    let mut detail = Vec::new();
    let apiserver_ready = if is_server {
        let addr = std::net::SocketAddr::new(node.node_ip, APISERVER_PORT);
        match apiserver::readyz(
            addr,
            &apiserver::ApiserverCredentials::rke2(&config.data_dir),
            PROBE_TIMEOUT,
        )
        .await
        {
            Ok(r) if r.is_ready() => true,
            Ok(r) => {
                detail.push(format!(
                    "apiserver /readyz {}: {}",
                    r.status,
                    r.failures().join(", ")
                ));
                false
            }
            Err(e) => {
                detail.push(format!("apiserver: {e}"));
                false
            }
        }
    } else {
        false
    };
    let kubelet_healthy = match kubelet::healthz(&config.kubelet_healthz_addr, PROBE_TIMEOUT).await
    {
        Ok(true) => true,
        Ok(false) => {
            detail.push("kubelet /healthz not ok".to_owned());
            false
        }
        Err(e) => {
            detail.push(format!("kubelet: {e}"));
            false
        }
    };
    let etcd = if is_server {
        let endpoint = format!(
            "https://{}",
            std::net::SocketAddr::new(node.node_ip, ETCD_CLIENT_PORT)
        );
        let health = tokio::time::timeout(
            PROBE_TIMEOUT * 3,
            etcd::health(
                &endpoint,
                &etcd::EtcdCredentials::rke2(&config.data_dir),
                PROBE_TIMEOUT,
            ),
        )
        .await;
        Some(match health {
            Ok(Ok(h)) => EtcdHealth {
                members: h
                    .members
                    .iter()
                    .map(|m| EtcdMember {
                        name: m.name.clone(),
                        healthy: m.healthy,
                    })
                    .collect(),
                alarms: h.alarms,
                checked_at: Some(now),
                error: String::new(),
            },
            Ok(Err(e)) => etcd_error(now, e.to_string()),
            Err(_) => etcd_error(
                now,
                format!("no answer within {} s", (PROBE_TIMEOUT * 3).as_secs()),
            ),
        })
    } else {
        None
    };
    Probe {
        readiness: Readiness {
            apiserver_ready,
            kubelet_healthy,
            detail: detail.join("; "),
            checked_at: Some(now),
        },
        etcd,
        rke2_version,
        install,
    }
}

fn etcd_error(now: OffsetDateTime, error: String) -> EtcdHealth {
    EtcdHealth {
        members: vec![],
        alarms: vec![],
        checked_at: Some(now),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_ignores_timestamps_and_wording_but_not_health() {
        let at = |s| Some(OffsetDateTime::from_unix_timestamp(s).expect("time"));
        let a = Probe {
            readiness: Readiness {
                apiserver_ready: true,
                kubelet_healthy: true,
                detail: String::new(),
                checked_at: at(1),
            },
            etcd: Some(EtcdHealth {
                members: vec![EtcdMember {
                    name: "server-1".into(),
                    healthy: true,
                }],
                alarms: vec![],
                checked_at: at(1),
                error: String::new(),
            }),
            rke2_version: "v1.34.1+rke2r1".into(),
            install: InstallInfo::default(),
        };
        let mut b = a.clone();
        b.readiness.checked_at = at(2);
        assert_eq!(a.summary(), b.summary());
        b.etcd.as_mut().expect("etcd").members[0].healthy = false;
        assert_ne!(a.summary(), b.summary());
        let mut c = a.clone();
        c.rke2_version = "v1.33.5+rke2r1".into();
        assert_ne!(a.summary(), c.summary());
    }
}
