//! The parts of kube-controller-manager (and of each node's kubelet) the stand-in needs, run
//! once a second by every simulated server. There is no leader election: every change is an
//! etcd compare-and-swap, so when two servers race exactly one write lands and the loser
//! retries on its next pass. Without quorum nothing changes, as in a real cluster.
//!
//! - node lifecycle: a Node whose `Ready` heartbeat is older than
//!   [`super::Settings::node_grace`] gets every condition `Unknown` (reason
//!   `NodeStatusUnknown`, "Kubelet stopped posting node status.");
//! - pod termination: a terminating pod is removed once its time is up, if its node is Ready
//!   (a real pod on a dead node stays `Terminating` until force-deleted);
//! - ReplicaSet: an evicted or deleted ReplicaSet pod's replacement is created when due, on
//!   another Ready schedulable node.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::handlers::{KubeApi, REMOVE_AT, name_suffix, new_uid, start_pod, time_value};
use super::objects::{NODES, PODS, REPLACEMENTS};
use super::store::{StoreError, encode};
use crate::logrus;

/// Runs the loops until shutdown.
pub async fn run(api: Arc<KubeApi>, mut shutdown: watch::Receiver<bool>) {
    let mut last_error = String::new();
    loop {
        match reconcile(&api).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    logrus::warn(&format!("kube-controller-manager: {text}"));
                    last_error = text;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn reconcile(api: &KubeApi) -> Result<(), StoreError> {
    let now = super::now();
    mark_silent_nodes(api, now).await?;
    remove_terminated_pods(api, now).await?;
    create_replacements(api, now).await
}

/// Whether a Node's last Ready heartbeat is older than `grace` (and it still says Ready).
#[must_use]
pub fn heartbeat_expired(node: &Value, now: Timestamp, grace: Duration) -> bool {
    let Some(ready) = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
    else {
        return false;
    };
    if ready["status"] == "Unknown" {
        return false;
    }
    let Some(beat) = ready["lastHeartbeatTime"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return true;
    };
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::from_secs(10));
    now.duration_since(beat) > grace
}

async fn mark_silent_nodes(api: &KubeApi, now: Timestamp) -> Result<(), StoreError> {
    let (nodes, _) = api.store.list(&NODES.registry).await?;
    for stored in nodes {
        if !heartbeat_expired(&stored.object, now, api.settings.node_grace) {
            continue;
        }
        let mut node = stored.object.clone();
        let t = time_value(now);
        if let Some(conditions) = node
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for c in conditions {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = t.clone();
            }
        }
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match api
            .store
            .update(&NODES.key(None, &name), &node, stored.revision)
            .await
        {
            Ok(_) => logrus::info(&format!("node {name}: Ready=Unknown (no heartbeat)")),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn remove_terminated_pods(api: &KubeApi, now: Timestamp) -> Result<(), StoreError> {
    let (pods, _) = api.store.list(&PODS.registry).await?;
    let mut ready = None;
    for stored in pods {
        let Some(at) = stored
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REMOVE_AT))
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if at > now {
            continue;
        }
        if ready.is_none() {
            ready = Some(api.node_readiness().await?);
        }
        let node = stored
            .object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str);
        let node_ready = node.is_none_or(|n| {
            ready
                .as_ref()
                .and_then(|r| r.get(n).copied())
                .unwrap_or(true)
        });
        if !node_ready {
            continue;
        }
        let ns = stored.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = stored.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        match api
            .store
            .delete(&PODS.key(Some(ns), name), stored.revision)
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The replacement of `old` (a ReplicaSet pod) on `node`: a new name from the ReplicaSet's,
/// a new uid, started.
#[must_use]
pub fn replacement_pod(old: &Value, owner: &str, node: &str, now: Timestamp) -> Value {
    let mut pod = old.clone();
    let meta = &mut pod["metadata"];
    if let Some(m) = meta.as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(REMOVE_AT);
        }
    }
    meta["name"] = json!(format!("{owner}-{}", name_suffix()));
    meta["generateName"] = json!(format!("{owner}-"));
    meta["uid"] = json!(new_uid());
    meta["creationTimestamp"] = time_value(now);
    pod["spec"]["nodeName"] = json!(node);
    start_pod(&mut pod, now);
    pod
}

async fn create_replacements(api: &KubeApi, now: Timestamp) -> Result<(), StoreError> {
    let (records, _) = api.store.list(REPLACEMENTS).await?;
    for stored in records {
        let due = stored.object["due"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);
        if due > now {
            continue;
        }
        let old = &stored.object["pod"];
        let Ok(typed) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(old.clone())
        else {
            continue;
        };
        let Some(owner) = super::objects::replicaset_owner(&typed).map(str::to_owned) else {
            continue;
        };
        let from = old.pointer("/spec/nodeName").and_then(Value::as_str);
        let Some(node) = api
            .pick_node(
                from,
                std::slice::from_ref(&owner),
                &old["spec"]["nodeSelector"],
            )
            .await?
        else {
            continue; // nowhere to run yet (Pending); retried next pass
        };
        let pod = replacement_pod(old, &owner, &node, now);
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let record_key = format!(
            "{REPLACEMENTS}{ns}/{}",
            old["metadata"]["name"].as_str().unwrap_or_default()
        );
        let pod_key = PODS.key(Some(&ns), &name);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(record_key.as_str(), CompareOp::Equal, stored.revision),
                Compare::version(pod_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::delete(record_key.as_str(), None),
                TxnOp::put(pod_key.as_str(), encode(&pod), None),
            ]);
        if let (true, _) = api.store.txn(txn).await? {
            logrus::info(&format!(
                "replicaset {ns}/{owner}: created pod {name} on {node}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_expires_after_grace_only_while_ready() {
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("valid");
        let node = |status: &str, beat: &str| {
            json!({"status": {"conditions": [{"type": "Ready", "status": status,
                "lastHeartbeatTime": beat}]}})
        };
        let grace = Duration::from_secs(10);
        assert!(!heartbeat_expired(
            &node("True", "2026-01-01T00:00:25Z"),
            now,
            grace
        ));
        assert!(heartbeat_expired(
            &node("True", "2026-01-01T00:00:10Z"),
            now,
            grace
        ));
        assert!(!heartbeat_expired(
            &node("Unknown", "2026-01-01T00:00:10Z"),
            now,
            grace
        ));
    }

    #[test]
    fn replacement_keeps_labels_and_owner_but_is_a_new_pod() {
        let old = json!({"metadata": {"name": "web-abcde", "namespace": "default", "uid": "u1",
            "labels": {"app": "web"}, "deletionTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web", "apiVersion": "apps/v1", "uid": "r"}]},
            "spec": {"nodeName": "agent-1", "containers": [{"name": "c"}]}});
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("valid");
        let pod = replacement_pod(&old, "web", "agent-2", now);
        assert_ne!(pod["metadata"]["name"], "web-abcde");
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("web-"))
        );
        assert_ne!(pod["metadata"]["uid"], "u1");
        assert!(pod["metadata"].get("deletionTimestamp").is_none());
        assert_eq!(pod["spec"]["nodeName"], "agent-2");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["status"]["phase"], "Running");
    }
}
