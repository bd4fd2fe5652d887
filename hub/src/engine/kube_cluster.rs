//! The engine's [`Cluster`] on the hub's kube-rs client ([`crate::kube::KubeAccess`], which
//! fails over between the servers' API endpoints), built from [`KubeSettings`] (the
//! kubeconfig and the apiserver endpoints; `serve` builds them from the configuration).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::cluster::{BoxFut, Cluster};
use crate::kube::{DrainOptions, KubeAccess, KubeSettings};
use crate::plan::health::KubeNode;
use crate::plan::model::PlanPolicy;

/// The cluster access `settings` describe (none without a kubeconfig: no cordon or drain).
///
/// # Errors
/// When the kubeconfig cannot be used (names the file).
pub fn from_settings(settings: Option<&KubeSettings>) -> anyhow::Result<Option<Arc<dyn Cluster>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let access = KubeAccess::new(settings)
        .with_context(|| format!("kubeconfig {}", settings.kubeconfig.display()))?;
    Ok(Some(Arc::new(Kube(access))))
}

fn kube_node(n: crate::kube::NodeView) -> KubeNode {
    KubeNode {
        name: n.name,
        ready: n.ready,
        kubelet_version: n.kubelet_version,
        unschedulable: n.unschedulable,
    }
}

/// [`KubeAccess`] as the engine's [`Cluster`].
#[derive(Debug, Clone)]
pub struct Kube(pub KubeAccess);

impl Cluster for Kube {
    fn nodes(&self) -> BoxFut<'_, Result<Vec<KubeNode>, String>> {
        Box::pin(async move {
            self.0
                .nodes()
                .await
                .map(|nodes| nodes.into_iter().map(kube_node).collect())
                .map_err(|e| e.to_string())
        })
    }

    fn node<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<Option<KubeNode>, String>> {
        Box::pin(async move {
            self.0
                .node(name)
                .await
                .map(|n| n.map(kube_node))
                .map_err(|e| e.to_string())
        })
    }

    fn cordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<bool, String>> {
        Box::pin(async move { self.0.cordon(node).await.map_err(|e| e.to_string()) })
    }

    fn uncordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move { self.0.uncordon(node).await.map_err(|e| e.to_string()) })
    }

    fn drain<'a>(
        &'a self,
        node: &'a str,
        policy: &'a PlanPolicy,
        progress: &'a mut (dyn FnMut(String) + Send),
    ) -> BoxFut<'a, Result<String, String>> {
        Box::pin(async move {
            let opts = DrainOptions {
                grace_period: policy
                    .grace_period_secs
                    .map(|g| Duration::from_secs(u64::try_from(g).unwrap_or(0))),
                timeout: Duration::from_secs(policy.drain_timeout_secs),
                ..DrainOptions::default()
            };
            let report = self
                .0
                .drain(node, &opts, progress)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{} pods evicted, {} left (DaemonSet/mirror/finished)",
                report.evicted.len(),
                report.skipped.len()
            ))
        })
    }

    fn event<'a>(&'a self, node: &'a str, reason: &'a str, message: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move { self.0.event(node, reason, message).await })
    }

    fn doctor_facts(&self) -> BoxFut<'_, Result<crate::doctor::ClusterFacts, String>> {
        Box::pin(async move { self.0.doctor_facts().await.map_err(|e| e.to_string()) })
    }

    fn workload_replicas<'a>(
        &'a self,
        namespace: &'a str,
        kind: crate::probe::spec::WorkloadKind,
        name: &'a str,
    ) -> BoxFut<'a, Result<(i64, i64), String>> {
        Box::pin(async move {
            self.0
                .workload_replicas(namespace, kind, name)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
