//! The hub's Kubernetes access for plans: Node readiness and versions, cordon/uncordon,
//! `kubectl drain`-style eviction honouring PodDisruptionBudgets, and Events about Nodes —
//! through kube-rs (rustls with ring) using RKE2's admin kubeconfig, with failover between
//! the servers' apiservers ([`endpoints`]).
//!
//! The fleet doctor's reads (every PodDisruptionBudget and pod, system-upgrade-controller's
//! CRD, Plans and Deployment) are in `doctor`; the checks over them are [`crate::doctor`]'s.
//!
//! The plan engine owns *when*; this module owns *how*, and never decides on its own to
//! uncordon: [`KubeAccess::cordon`] tells whether this call cordoned the node so the plan
//! only undoes its own cordons. The drain decisions are pure ([`drain`]).

mod doctor;
pub mod drain;
pub mod endpoints;
mod error;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

pub use self::drain::{PodAction, classify_pod};
use self::endpoints::Endpoints;
pub use self::error::KubeError;

/// Where the hub finds the Kubernetes API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeSettings {
    /// RKE2's admin kubeconfig (`/etc/rancher/rke2/rke2.yaml` copied off a server): embedded
    /// client-admin certificate and key, server CA.
    pub kubeconfig: PathBuf,
    /// `https://host:port` apiserver URLs tried in order with failover; empty = only the
    /// kubeconfig's own server (RKE2 writes `https://127.0.0.1:6443` there).
    pub endpoints: Vec<String>,
}

/// A cheap-to-clone handle on the Kubernetes API of one cluster.
#[derive(Debug, Clone)]
pub struct KubeAccess {
    endpoints: Arc<Endpoints>,
}

/// What a plan needs to know about a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether the Ready condition is True.
    pub ready: bool,
    /// The Ready condition's reason (`KubeletReady`, `NodeStatusUnknown`...), or
    /// `NoReadyCondition`.
    pub ready_reason: String,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.nodeInfo.kubeletVersion`: the RKE2 version the node runs (`v1.34.1+rke2r1`).
    pub kubelet_version: String,
    /// Labelled `node-role.kubernetes.io/control-plane=true` (an RKE2 server).
    pub control_plane: bool,
    /// Labelled `node-role.kubernetes.io/etcd=true` (an RKE2 server, possibly etcd-only).
    pub etcd: bool,
}

impl NodeView {
    /// The view of a Node object.
    #[must_use]
    pub fn from_node(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let labels = node.metadata.labels.as_ref();
        let role = |r: &str| {
            labels
                .and_then(|l| l.get(&format!("node-role.kubernetes.io/{r}")))
                .is_some_and(|v| v == "true")
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready: ready.is_some_and(|c| c.status == "True"),
            ready_reason: ready.map_or_else(
                || "NoReadyCondition".to_owned(),
                |c| c.reason.clone().unwrap_or_else(|| c.status.clone()),
            ),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            kubelet_version: node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default(),
            control_plane: role("control-plane") || role("master"),
            etcd: role("etcd"),
        }
    }
}

/// How to drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOptions {
    /// Grace period for evicted pods (`None`: each pod's own
    /// `terminationGracePeriodSeconds`).
    pub grace_period: Option<Duration>,
    /// The whole drain (evictions retried on 429, then waiting for the pods to go).
    pub timeout: Duration,
    /// Pause between eviction rounds while a PodDisruptionBudget refuses.
    pub retry_interval: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            grace_period: None,
            timeout: Duration::from_secs(300),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// `namespace/name` of each pod evicted (and gone).
    pub evicted: Vec<String>,
    /// `namespace/name` and why each pod was left on the node.
    pub skipped: Vec<(String, String)>,
}

fn api_error(e: &kube::Error) -> KubeError {
    KubeError::Api(e.to_string())
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(
        i64::try_from(since.as_secs()).unwrap_or(0),
        i32::try_from(since.subsec_nanos()).unwrap_or(0),
    )
    .unwrap_or(Timestamp::UNIX_EPOCH)
}

impl KubeAccess {
    /// Reads the kubeconfig and fixes the endpoints; no request is made yet.
    ///
    /// # Errors
    /// [`KubeError::Config`] for an unreadable kubeconfig or a malformed endpoint.
    pub fn new(settings: &KubeSettings) -> Result<Self, KubeError> {
        Ok(Self {
            endpoints: Arc::new(Endpoints::new(&settings.kubeconfig, &settings.endpoints)?),
        })
    }

    /// The Node `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn node(&self, name: &str) -> Result<Option<NodeView>, KubeError> {
        let answer = self
            .endpoints
            .call(|c| async move { Api::<Node>::all(c).get_opt(name).await })
            .await?;
        Ok(answer
            .map_err(|e| api_error(&e))?
            .as_ref()
            .map(NodeView::from_node))
    }

    /// A workload's (desired, available) replicas: `spec.replicas` and
    /// `status.availableReplicas` for Deployments and StatefulSets,
    /// `status.desiredNumberScheduled` and `status.numberAvailable` for DaemonSets. A
    /// workload that does not exist is an error naming it.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn workload_replicas(
        &self,
        namespace: &str,
        kind: crate::probe::spec::WorkloadKind,
        name: &str,
    ) -> Result<(i64, i64), KubeError> {
        use crate::probe::spec::WorkloadKind;
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
        let answer = self
            .endpoints
            .call(|c| async move {
                Ok::<_, kube::Error>(match kind {
                    WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, namespace)
                        .get_opt(name)
                        .await?
                        .map(|d| {
                            (
                                i64::from(d.spec.and_then(|s| s.replicas).unwrap_or(1)),
                                i64::from(d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
                            )
                        }),
                    WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, namespace)
                        .get_opt(name)
                        .await?
                        .map(|d| {
                            (
                                i64::from(d.spec.and_then(|s| s.replicas).unwrap_or(1)),
                                i64::from(d.status.and_then(|s| s.available_replicas).unwrap_or(0)),
                            )
                        }),
                    WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(c, namespace)
                        .get_opt(name)
                        .await?
                        .map(|d| {
                            let s = d.status.unwrap_or_default();
                            (
                                i64::from(s.desired_number_scheduled),
                                i64::from(s.number_available.unwrap_or(0)),
                            )
                        }),
                })
            })
            .await?;
        answer
            .map_err(|e| api_error(&e))?
            .ok_or_else(|| KubeError::Api(format!("{namespace}/{}/{name} not found", kind.name())))
    }

    /// Every Node.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn nodes(&self) -> Result<Vec<NodeView>, KubeError> {
        let answer = self
            .endpoints
            .call(|c| async move { Api::<Node>::all(c).list(&ListParams::default()).await })
            .await?;
        Ok(answer
            .map_err(|e| api_error(&e))?
            .items
            .iter()
            .map(NodeView::from_node)
            .collect())
    }

    /// Marks the node unschedulable. `true`: this call cordoned it; `false`: it already was
    /// (then the plan must not uncordon it later). The patch carries the resourceVersion
    /// that was read, so a concurrent cordon by someone else is noticed, not claimed.
    ///
    /// # Errors
    /// [`KubeError::NodeNotFound`], [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn cordon(&self, name: &str) -> Result<bool, KubeError> {
        for _ in 0..5 {
            let node = self
                .endpoints
                .call(|c| async move { Api::<Node>::all(c).get_opt(name).await })
                .await?
                .map_err(|e| api_error(&e))?
                .ok_or_else(|| KubeError::NodeNotFound(name.to_owned()))?;
            if NodeView::from_node(&node).unschedulable {
                return Ok(false);
            }
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"unschedulable": true},
            });
            let answer = self
                .endpoints
                .call(|c| {
                    let patch = patch.clone();
                    async move {
                        Api::<Node>::all(c)
                            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                    }
                })
                .await?;
            match answer {
                Ok(_) => return Ok(true),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(KubeError::NodeNotFound(name.to_owned()));
                }
                Err(e) => return Err(api_error(&e)),
            }
        }
        Err(KubeError::Api(format!(
            "cordon {name}: the Node kept changing (5 conflicts)"
        )))
    }

    /// Marks the node schedulable again.
    ///
    /// # Errors
    /// [`KubeError::NodeNotFound`], [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn uncordon(&self, name: &str) -> Result<(), KubeError> {
        let answer = self
            .endpoints
            .call(|c| async move {
                Api::<Node>::all(c)
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"unschedulable": false}})),
                    )
                    .await
            })
            .await?;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(KubeError::NodeNotFound(name.to_owned())),
            Err(e) => Err(api_error(&e)),
        }
    }

    /// Drains the node like `kubectl drain --ignore-daemonsets`: mirror, DaemonSet and
    /// completed pods stay; every other pod is evicted through the eviction API with the
    /// grace period; refusals (429, a PodDisruptionBudget) are retried every
    /// `retry_interval` until `timeout`; then it waits for the evicted pods to be gone.
    /// `progress` gets one line per notable step. The node should be cordoned first.
    ///
    /// # Errors
    /// [`KubeError::DrainBlocked`] (naming the budget), [`KubeError::DrainTimeout`],
    /// [`KubeError::NodeNotFound`], [`KubeError::Unreachable`] or [`KubeError::Api`].
    pub async fn drain(
        &self,
        name: &str,
        opts: &DrainOptions,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<DrainReport, KubeError> {
        let deadline = Instant::now() + opts.timeout;
        if self.node(name).await?.is_none() {
            return Err(KubeError::NodeNotFound(name.to_owned()));
        }
        let selector = format!("spec.nodeName={name}");
        let pods = self
            .endpoints
            .call(|c| {
                let lp = ListParams::default().fields(&selector);
                async move { Api::<Pod>::all(c).list(&lp).await }
            })
            .await?
            .map_err(|e| api_error(&e))?
            .items;
        let mut report = DrainReport::default();
        let mut pending: Vec<Pod> = Vec::new();
        let mut waiting: Vec<Pod> = Vec::new();
        for pod in pods {
            match classify_pod(&pod) {
                PodAction::Evict => pending.push(pod),
                PodAction::WaitForDeletion => waiting.push(pod),
                PodAction::Skip(why) => report.skipped.push((drain::pod_key(&pod), why)),
            }
        }
        progress(format!(
            "draining {name}: {} pod(s) to evict, {} terminating, {} left in place",
            pending.len(),
            waiting.len(),
            report.skipped.len()
        ));
        let mut attempts: BTreeMap<String, u32> = BTreeMap::new();
        let mut refused_by: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            let mut still = Vec::new();
            for pod in pending {
                let key = drain::pod_key(&pod);
                *attempts.entry(key.clone()).or_default() += 1;
                match self.evict(&pod, opts).await? {
                    Eviction::Done => {
                        progress(format!("evicted {key}"));
                        report.evicted.push(key);
                        waiting.push(pod);
                    }
                    Eviction::Gone => progress(format!("{key} was already gone")),
                    Eviction::Refused(pdb) => {
                        let pdb = match pdb {
                            Some(p) => Some(p),
                            None => self.budget_for(&pod).await,
                        };
                        progress(format!(
                            "{key}: eviction refused{} (attempt {}); retrying in {:?}",
                            pdb.as_ref()
                                .map(|p| format!(" by PodDisruptionBudget {p}"))
                                .unwrap_or_default(),
                            attempts.get(&key).copied().unwrap_or(0),
                            opts.retry_interval
                        ));
                        refused_by.insert(key, pdb);
                        still.push(pod);
                    }
                }
            }
            pending = still;
            let Some(first) = pending.first() else {
                break;
            };
            if Instant::now() + opts.retry_interval > deadline {
                let key = drain::pod_key(first);
                return Err(KubeError::DrainBlocked {
                    pdb: refused_by.get(&key).cloned().flatten(),
                    attempts: attempts.get(&key).copied().unwrap_or(0),
                    pod: key,
                });
            }
            tokio::time::sleep(opts.retry_interval).await;
        }
        self.wait_gone(waiting, deadline, progress).await?;
        Ok(report)
    }

    async fn evict(&self, pod: &Pod, opts: &DrainOptions) -> Result<Eviction, KubeError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = EvictParams {
            delete_options: Some(DeleteParams {
                grace_period_seconds: opts
                    .grace_period
                    .map(|g| u32::try_from(g.as_secs()).unwrap_or(u32::MAX)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = self
            .endpoints
            .call(|c| {
                let (ns, name, params) = (ns.clone(), name.clone(), params.clone());
                async move { Api::<Pod>::namespaced(c, &ns).evict(&name, &params).await }
            })
            .await?;
        match answer {
            Ok(_) => Ok(Eviction::Done),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
            Err(kube::Error::Api(s)) if s.code == 429 => {
                Ok(Eviction::Refused(drain::pdb_from_refusal(&s)))
            }
            Err(e) => Err(api_error(&e)),
        }
    }

    /// The budget selecting `pod`, looked up when a 429 did not name it (best effort).
    async fn budget_for(&self, pod: &Pod) -> Option<String> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let list = self
            .endpoints
            .call(|c| {
                let ns = ns.clone();
                async move {
                    Api::<PodDisruptionBudget>::namespaced(c, &ns)
                        .list(&ListParams::default())
                        .await
                }
            })
            .await
            .ok()?
            .ok()?;
        drain::pdb_selecting(pod, &list.items)
    }

    /// Waits until every pod in `pods` is gone (404, or the name now holds another uid).
    async fn wait_gone(
        &self,
        mut pods: Vec<Pod>,
        deadline: Instant,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), KubeError> {
        if !pods.is_empty() {
            progress(format!("waiting for {} pod(s) to terminate", pods.len()));
        }
        loop {
            let mut left = Vec::new();
            for pod in pods {
                let ns = pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let name = pod.metadata.name.clone().unwrap_or_default();
                let current = self
                    .endpoints
                    .call(|c| {
                        let (ns, name) = (ns.clone(), name.clone());
                        async move { Api::<Pod>::namespaced(c, &ns).get_opt(&name).await }
                    })
                    .await?
                    .map_err(|e| api_error(&e))?;
                if current.is_some_and(|c| c.metadata.uid == pod.metadata.uid) {
                    left.push(pod);
                }
            }
            pods = left;
            if pods.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KubeError::DrainTimeout {
                    pods: pods.iter().map(drain::pod_key).collect(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Records a core/v1 Event about the Node (`default` namespace, as kubelet and kubectl
    /// do for Node events). Best effort: a failure is logged, never returned.
    pub async fn event(&self, node: &str, reason: &str, message: &str) {
        let t = now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{node}.")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some("Normal".into()),
            count: Some(1),
            first_timestamp: Some(Time(t)),
            last_timestamp: Some(Time(t)),
            event_time: Some(MicroTime(t)),
            source: Some(EventSource {
                component: Some("rke2-ops-hub".into()),
                host: None,
            }),
            reporting_component: Some("rke2-ops-hub".into()),
            reporting_instance: Some("rke2-ops-hub".into()),
            action: Some(reason.to_owned()),
            ..Default::default()
        };
        let answer = self
            .endpoints
            .call(|c| {
                let event = event.clone();
                async move {
                    Api::<Event>::namespaced(c, "default")
                        .create(&PostParams::default(), &event)
                        .await
                }
            })
            .await;
        match answer {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(node, reason, error = %e, "could not record Event"),
            Err(e) => tracing::warn!(node, reason, error = %e, "could not record Event"),
        }
    }
}

/// How one eviction went.
enum Eviction {
    /// Accepted (201).
    Done,
    /// The pod was already gone (404).
    Gone,
    /// Refused (429): the budget, when the answer named it.
    Refused(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};

    #[test]
    fn node_view_reads_readiness_roles_version_and_cordon() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("server-1".into()),
                labels: Some(
                    [(
                        "node-role.kubernetes.io/control-plane".to_owned(),
                        "true".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusUnknown".into()),
                    ..Default::default()
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: "v1.34.1+rke2r1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let view = NodeView::from_node(&node);
        assert_eq!(
            view,
            NodeView {
                name: "server-1".into(),
                ready: false,
                ready_reason: "NodeStatusUnknown".into(),
                unschedulable: true,
                kubelet_version: "v1.34.1+rke2r1".into(),
                control_plane: true,
                etcd: false,
            }
        );
        let bare = NodeView::from_node(&Node::default());
        assert_eq!(bare.ready_reason, "NoReadyCondition");
        assert!(!bare.control_plane);
    }

    #[test]
    fn drain_defaults_match_the_plan_contract() {
        let d = DrainOptions::default();
        assert_eq!(d.timeout, Duration::from_secs(300));
        assert_eq!(d.retry_interval, Duration::from_secs(5));
        assert_eq!(d.grace_period, None);
    }
}
