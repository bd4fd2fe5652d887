//! The simulated kubelet of each `rke2 server` / `rke2 agent`: registers its Node (roles,
//! addresses, `nodeInfo.kubeletVersion` = the RKE2 version), creates the node's system pods
//! (mirror pods of RKE2's static pods, kube-proxy, the canal DaemonSet pod), then posts
//! `Ready=True` heartbeats — all through the apiserver's REST API, as a real kubelet does.
//!
//! Servers' kubelets talk to their own apiserver only (real: `127.0.0.1:6443`); agents'
//! kubelets go through a simulated client-side load balancer over every server, learnt from
//! the control-plane Nodes' InternalIPs (real: the agent's `:6444` load balancer, fed from the
//! `kubernetes` endpoints).

use std::collections::BTreeMap;
use std::net::IpAddr;

use hyper::Method;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, NodeAddress,
    NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::Settings;
use super::client::ApiClient;
use crate::logrus;
use crate::tree::Role;

/// Who this kubelet is.
#[derive(Debug, Clone)]
pub struct KubeletIdentity {
    /// Node name.
    pub name: String,
    /// Node IP (InternalIP).
    pub ip: IpAddr,
    /// Server or agent.
    pub role: Role,
    /// The RKE2 version (`v1.34.1+rke2r1`), reported as kubelet and kube-proxy version.
    pub version: String,
}

const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

/// The node's labels (RKE2's: roles on servers).
#[must_use]
pub fn node_labels(id: &KubeletIdentity) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/instance-type", "rke2"),
        ("node.kubernetes.io/instance-type", "rke2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    labels.insert("kubernetes.io/hostname".into(), id.name.clone());
    if id.role == Role::Server {
        for role in ["control-plane", "etcd", "master"] {
            labels.insert(format!("node-role.kubernetes.io/{role}"), "true".into());
        }
    }
    labels
}

fn condition(type_: &str, ready: bool, now: Timestamp, since: Timestamp) -> NodeCondition {
    let (status, reason, message) = match (type_, ready) {
        ("Ready", _) => ("True", "KubeletReady", "kubelet is posting ready status"),
        ("MemoryPressure", _) => (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", _) => (
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        _ => (
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    };
    NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    }
}

/// The node's status as its kubelet posts it: Ready since `since`, heartbeat `now`.
#[must_use]
pub fn node_status(id: &KubeletIdentity, now: Timestamp, since: Timestamp) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", "2"),
        ("memory", "4015084Ki"),
        ("pods", "110"),
        ("ephemeral-storage", "20470152Ki"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
                .into_iter()
                .map(|t| condition(t, true, now, since))
                .collect(),
        ),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: String::new(),
            container_runtime_version: "containerd://2.1.4-k3s1".into(),
            kernel_version: "6.12.0-sim".into(),
            kube_proxy_version: id.version.clone(),
            kubelet_version: id.version.clone(),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "rke2-sim".into(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node object a kubelet registers.
#[must_use]
pub fn node_object(id: &KubeletIdentity, now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(node_labels(id)),
            annotations: Some([("node.alpha.kubernetes.io/ttl".to_owned(), "0".to_owned())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(node_status(id, now, now)),
    }
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..3])[..5].to_owned()
}

fn running_pod(
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner: OwnerReference,
    id: &KubeletIdentity,
    now: Timestamp,
) -> Pod {
    let cond = |t: &str| PodCondition {
        type_: t.to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    };
    let container = name.split('-').next().unwrap_or("main").to_owned();
    let image = "rancher/hardened-sim".to_owned();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("kube-system".into()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(id.name.clone()),
            containers: vec![Container {
                name: container.clone(),
                image: Some(image.clone()),
                ..Default::default()
            }],
            priority_class_name: Some("system-node-critical".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            host_ip: Some(id.ip.to_string()),
            pod_ip: Some(id.ip.to_string()),
            start_time: Some(Time(now)),
            container_statuses: Some(vec![ContainerStatus {
                name: container,
                image,
                image_id: String::new(),
                ready: true,
                started: Some(true),
                restart_count: 0,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(now)),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            conditions: Some(
                ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                    .into_iter()
                    .map(cond)
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

/// The node's system pods: mirror pods of RKE2's static pods (servers: etcd, apiserver,
/// controller-manager, scheduler, cloud-controller-manager; every node: kube-proxy), owned by
/// the Node, and the canal pod of the `rke2-canal` DaemonSet. `node_uid` is the Node's uid.
#[must_use]
pub fn system_pods(id: &KubeletIdentity, node_uid: &str, now: Timestamp) -> Vec<Pod> {
    let mut statics = vec!["kube-proxy"];
    if id.role == Role::Server {
        statics.extend([
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "cloud-controller-manager",
        ]);
    }
    let node_owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: id.name.clone(),
        uid: node_uid.to_owned(),
        controller: Some(true),
        ..Default::default()
    };
    let mut pods: Vec<Pod> = statics
        .into_iter()
        .map(|component| {
            let hash = short_hash(&format!("{component}/{}/{}", id.name, id.version));
            running_pod(
                format!("{component}-{}", id.name),
                [
                    ("component".to_owned(), component.to_owned()),
                    ("tier".to_owned(), "control-plane".to_owned()),
                ]
                .into(),
                [
                    ("kubernetes.io/config.mirror".to_owned(), hash.clone()),
                    ("kubernetes.io/config.hash".to_owned(), hash),
                    ("kubernetes.io/config.source".to_owned(), "file".to_owned()),
                ]
                .into(),
                node_owner.clone(),
                id,
                now,
            )
        })
        .collect();
    pods.push(running_pod(
        format!("rke2-canal-{}", short_hash(&id.name)),
        [("k8s-app".to_owned(), "canal".to_owned())].into(),
        BTreeMap::new(),
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "rke2-canal".into(),
            uid: "5d3c7a0e-0000-4000-8000-00000000ca11".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        id,
        now,
    ));
    pods
}

/// Runs the kubelet until shutdown: register, then heartbeat every `settings.heartbeat`.
pub async fn run(
    id: KubeletIdentity,
    client: ApiClient,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut registered = false;
    let mut last_error = String::new();
    loop {
        let step = if registered {
            heartbeat(&id, &client).await
        } else {
            register(&id, &client).await
        };
        match step {
            Ok(()) => {
                if !registered {
                    logrus::info(&format!("kubelet: node {} registered", id.name));
                }
                registered = true;
                last_error.clear();
            }
            Err(e) if e != last_error => {
                logrus::warn(&format!("kubelet: {e}"));
                last_error = e;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(settings.heartbeat) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn expect_ok(what: &str, status: u16, body: &Value) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "{what}: {status} {}",
            body.get("message").and_then(Value::as_str).unwrap_or("")
        ))
    }
}

async fn register(id: &KubeletIdentity, client: &ApiClient) -> Result<(), String> {
    let now = super::now();
    let node = serde_json::to_value(node_object(id, now)).map_err(|e| e.to_string())?;
    let (status, body) = client
        .send(Method::POST, "/api/v1/nodes", JSON, Some(&node))
        .await?;
    let path = format!("/api/v1/nodes/{}", id.name);
    if status == 409 {
        // Registered before (a restart): reconcile the labels, as the kubelet does.
        let patch = json!({"metadata": {"labels": node_labels(id)}});
        let (status, body) = client
            .send(Method::PATCH, &path, MERGE, Some(&patch))
            .await?;
        expect_ok("update node labels", status, &body)?;
        heartbeat(id, client).await?;
    } else {
        expect_ok("register node", status, &body)?;
    }
    let (status, node) = client.send(Method::GET, &path, JSON, None).await?;
    expect_ok("read node", status, &node)?;
    let uid = node
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for pod in system_pods(id, &uid, now) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let body = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
        let (status, answer) = client
            .send(
                Method::POST,
                &format!("/api/v1/namespaces/{ns}/pods"),
                JSON,
                Some(&body),
            )
            .await?;
        if status != 409 {
            expect_ok("create system pod", status, &answer)?;
        }
    }
    learn_servers(client).await;
    Ok(())
}

/// One heartbeat: reads the Node (to keep Ready's transition time, and to learn servers),
/// then patches its status.
async fn heartbeat(id: &KubeletIdentity, client: &ApiClient) -> Result<(), String> {
    let path = format!("/api/v1/nodes/{}", id.name);
    let (status, node) = client.send(Method::GET, &path, JSON, None).await?;
    if status == 404 {
        return Err(format!("node {} is gone; registering again", id.name));
    }
    expect_ok("read node", status, &node)?;
    let now = super::now();
    let since = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .filter(|c| c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let patch = json!({"status": serde_json::to_value(node_status(id, now, since)).map_err(|e| e.to_string())?});
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("{path}/status"),
            MERGE,
            Some(&patch),
        )
        .await?;
    expect_ok("post node status", status, &body)?;
    learn_servers(client).await;
    Ok(())
}

/// Agents: adds every control-plane Node's InternalIP to the load balancer.
async fn learn_servers(client: &ApiClient) {
    let Ok((200, list)) = client
        .send(
            Method::GET,
            "/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane%3Dtrue",
            JSON,
            None,
        )
        .await
    else {
        return;
    };
    let ips = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n.pointer("/status/addresses").and_then(Value::as_array))
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok());
    client.learn(ips.collect::<Vec<_>>());
}
