//! What the engine needs from Kubernetes, as a trait: the hub's kube-rs client implements it
//! (with failover between the servers' API endpoints), tests and benchmarks use fakes, and a
//! hub without Kubernetes access has none (no cordon or drain; node readiness then comes from
//! the agents' kubelet probes).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use crate::plan::health::KubeNode;
use crate::plan::model::PlanPolicy;

/// A boxed future, so the trait stays object-safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Cordon, drain, uncordon and Node state.
pub trait Cluster: Send + Sync + Debug {
    /// Every Node's readiness and kubelet version.
    fn nodes(&self) -> BoxFut<'_, Result<Vec<KubeNode>, String>>;
    /// One Node (`None` when the API has no such Node). Verification polls this every
    /// 250 ms, so it must not list the whole cluster.
    fn node<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Option<KubeNode>, String>>;
    /// Cordons `node`; `true` when this call cordoned it (it was schedulable).
    fn cordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<bool, String>>;
    /// Uncordons `node`.
    fn uncordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<(), String>>;
    /// Evicts `node`'s pods (PDB-aware, retried until the policy's drain timeout); returns
    /// a summary.
    fn drain<'a>(
        &'a self,
        node: &'a str,
        policy: &'a PlanPolicy,
        progress: &'a mut (dyn FnMut(String) + Send),
    ) -> BoxFut<'a, Result<String, String>>;
    /// Records a Kubernetes Event about `node` (best effort).
    fn event<'a>(&'a self, node: &'a str, reason: &'a str, message: &'a str) -> BoxFut<'a, ()>;
    /// What the fleet doctor reads: budgets, pods, system-upgrade-controller's leftovers and
    /// RKE2's certificate events.
    fn doctor_facts(&self) -> BoxFut<'_, Result<crate::doctor::ClusterFacts, String>>;
    /// A workload's (desired, available) replicas, for workload probes.
    fn workload_replicas<'a>(
        &'a self,
        namespace: &'a str,
        kind: crate::probe::spec::WorkloadKind,
        name: &'a str,
    ) -> BoxFut<'a, Result<(i64, i64), String>>;
}
