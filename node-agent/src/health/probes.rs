//! The probes an operation makes while it runs, behind one small trait ([`HealthProbes`]), so
//! the operation runner can be unit-tested with canned answers and run against the node's
//! real endpoints ([`NodeProbes`]) otherwise.
//!
//! This module only chooses addresses and credentials; the probes themselves live in
//! [`super::apiserver`], [`super::kubelet`] and [`super::etcd`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::HealthError;
use super::apiserver::{self, ApiserverCredentials, Readyz};
use super::etcd::{self, EtcdCredentials, EtcdHealth};
use super::kubelet;
use super::node_config::{APISERVER_PORT, ETCD_CLIENT_PORT};

/// What an operation asks about the node's RKE2 while it runs (preflight, readiness, the
/// served certificate). Each call reads credentials afresh, so after a rotation it
/// authenticates with the new certificates.
#[allow(async_fn_in_trait)] // used with generics only, never as a trait object
pub trait HealthProbes {
    /// The apiserver's `/readyz?verbose` over mutual TLS (servers).
    async fn apiserver_readyz(&self, timeout: Duration) -> Result<Readyz, HealthError>;
    /// Whether the kubelet's `/healthz` answers `ok`.
    async fn kubelet_healthz(&self, timeout: Duration) -> Result<bool, HealthError>;
    /// etcd membership, member health and alarms, as seen from this node's member (servers).
    async fn etcd_health(&self, timeout: Duration) -> Result<EtcdHealth, HealthError>;
}

/// The node's real endpoints, with RKE2's credentials from its data dir.
#[derive(Debug, Clone)]
pub struct NodeProbes {
    /// The apiserver on this node (`node-ip`, RKE2's port).
    apiserver: SocketAddr,
    /// This node's etcd client URL.
    etcd_endpoint: String,
    /// kubelet's health endpoint, `host:port`.
    kubelet_healthz: String,
    /// RKE2's data dir, where each probe reads its client certificate.
    data_dir: PathBuf,
}

impl NodeProbes {
    /// Probes of the node at `node_ip` whose RKE2 keeps its certificates under `data_dir`.
    #[must_use]
    pub fn new(node_ip: IpAddr, kubelet_healthz: String, data_dir: PathBuf) -> Self {
        let host = match node_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        Self {
            apiserver: SocketAddr::new(node_ip, APISERVER_PORT),
            etcd_endpoint: format!("https://{host}:{ETCD_CLIENT_PORT}"),
            kubelet_healthz,
            data_dir,
        }
    }
}

impl HealthProbes for NodeProbes {
    async fn apiserver_readyz(&self, timeout: Duration) -> Result<Readyz, HealthError> {
        apiserver::readyz(
            self.apiserver,
            &ApiserverCredentials::rke2(&self.data_dir),
            timeout,
        )
        .await
    }

    async fn kubelet_healthz(&self, timeout: Duration) -> Result<bool, HealthError> {
        kubelet::healthz(&self.kubelet_healthz, timeout).await
    }

    async fn etcd_health(&self, timeout: Duration) -> Result<EtcdHealth, HealthError> {
        etcd::health(
            &self.etcd_endpoint,
            &EtcdCredentials::rke2(&self.data_dir),
            timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_node_gets_a_bracketed_etcd_url() {
        let probes = NodeProbes::new("fd00::1".parse().expect("ip"), String::new(), "/d".into());
        assert_eq!(probes.etcd_endpoint, "https://[fd00::1]:2379");
        let probes = NodeProbes::new("10.0.0.1".parse().expect("ip"), String::new(), "/d".into());
        assert_eq!(probes.etcd_endpoint, "https://10.0.0.1:2379");
    }
}
