//! Objects tests put into the stand-in: a ReplicaSet-owned workload pod and a
//! PodDisruptionBudget over its label.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A pod of ReplicaSet `<app>-7d4b9c` labelled `app=<app>` on `node` (empty: unscheduled),
/// with a `grace_secs` termination grace period. Evicting it makes the simulated controller
/// create a replacement on another node.
#[must_use]
pub fn workload_pod(name: &str, app: &str, node: &str, grace_secs: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: format!("{app}-7d4b9c"),
                uid: "0b6f2a52-1c3e-4f0a-9d38-3c1b2a7e5f10".into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_owned()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(grace_secs),
            ..Default::default()
        }),
        status: None,
    }
}

/// [`workload_pod`] pinned to `node` by a `nodeSelector` on its hostname label (as a pod
/// bound to a local volume is): its replacement waits, Pending, until `node` takes pods again.
#[must_use]
pub fn pinned_workload_pod(name: &str, app: &str, node: &str, grace_secs: i64) -> Pod {
    let mut pod = workload_pod(name, app, node, grace_secs);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_owned(),
            node.to_owned(),
        )]));
    }
    pod
}

/// A PodDisruptionBudget `name` keeping `min_available` pods labelled `app=<app>`.
#[must_use]
pub fn pdb(name: &str, app: &str, min_available: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}
