//! A small Kubernetes API stand-in served by every simulated `rke2 server` on `:6443`, so
//! the hub's cordon/drain/readiness code runs against real HTTP, real TLS and real etcd.
//!
//! - [`store`]: objects in the servers' etcd cluster (`/registry/...`, JSON), revisions as
//!   `resourceVersion`, compare-and-swap writes;
//! - [`objects`]: pure rules (selectors, pod health, PodDisruptionBudget arithmetic, `Status`
//!   bodies);
//! - [`dispatch`] → [`handlers`]: the REST routes (nodes, pods, evictions, PDBs, events,
//!   namespaces, CRDs and their objects), over [`route`] (path parsing), [`body`] (request
//!   bodies), [`discovery`] (`/api`, `/apis`...),
//!   [`table`] (server-side printing for kubectl), [`patch`] (patch flavours), [`crd`]
//!   (what a CustomResourceDefinition serves), [`openapi`] (the little kubectl's
//!   validation needs), [`protobuf`] (the Namespace bodies `kubectl create namespace`
//!   sends) and [`watch`] (watches as long polls);
//! - [`controller`]: what kube-controller-manager would do, run by every server and made safe
//!   by etcd transactions (node lifecycle → `Ready=Unknown`, terminating pods removed,
//!   ReplicaSet replacements);
//! - [`kubelet`] + [`client`]: each node's kubelet registering its Node and system pods and
//!   heartbeating through the API.
//!
//! `tests/SIMULATOR.md` §6 lists the routes and where this differs from kube-apiserver.

pub mod body;
pub mod client;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod dispatch;
pub mod fixtures;
pub mod handlers;
pub mod kubelet;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod route;
pub mod store;
pub mod table;
pub mod watch;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

/// The current time as k8s-openapi's timestamp type (its `jiff` is built without `std`, so
/// without `Timestamp::now`).
#[must_use]
pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    let nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Timings of the simulated control loops (environment of the `rke2` unit, seconds, decimals
/// allowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Kubelet heartbeat period (`RKE2_SIM_NODE_HEARTBEAT`, default 2 s; real: 10 s).
    pub heartbeat: Duration,
    /// Silence after which a Node turns `Ready=Unknown` (`RKE2_SIM_NODE_GRACE`, default 10 s;
    /// real: node-monitor-grace-period 40 s).
    pub node_grace: Duration,
    /// Delay before the ReplicaSet controller's replacement of an evicted/deleted pod runs
    /// (`RKE2_SIM_REPLACEMENT_DELAY`, default 2 s).
    pub replacement_delay: Duration,
    /// Longest a terminating pod lingers before its kubelet removes it
    /// (`RKE2_SIM_POD_TERMINATION`, default 1 s; the grace period applies when shorter).
    pub pod_termination: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(2),
            node_grace: Duration::from_secs(10),
            replacement_delay: Duration::from_secs(2),
            pod_termination: Duration::from_secs(1),
        }
    }
}

impl Settings {
    /// Defaults overridden by the `RKE2_SIM_*` variables above (malformed values ignored).
    #[must_use]
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |name: &str, default: Duration| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                .map_or(default, Duration::from_secs_f64)
        };
        Self {
            heartbeat: var("RKE2_SIM_NODE_HEARTBEAT", d.heartbeat),
            node_grace: var("RKE2_SIM_NODE_GRACE", d.node_grace),
            replacement_delay: var("RKE2_SIM_REPLACEMENT_DELAY", d.replacement_delay),
            pod_termination: var("RKE2_SIM_POD_TERMINATION", d.pod_termination),
        }
    }
}
