//! The decisions of `kubectl drain`, as pure functions: which pods of a node to evict, which
//! to leave (DaemonSet pods come back at once, mirror pods are the kubelet's static pods,
//! completed pods hold nothing), and which PodDisruptionBudget refused an eviction.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::Status;

/// The annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What a drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Evict it through the eviction API.
    Evict,
    /// Already terminating: do not evict, but wait until it is gone.
    WaitForDeletion,
    /// Leave it: the reason (reported in [`super::DrainReport::skipped`]).
    Skip(String),
}

/// `kubectl drain --ignore-daemonsets` semantics for one pod.
#[must_use]
pub fn classify_pod(pod: &Pod) -> PodAction {
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return PodAction::Skip("mirror pod of a static pod".to_owned());
    }
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller.unwrap_or(false));
    if let Some(owner) = controller
        && owner.kind == "DaemonSet"
    {
        return PodAction::Skip(format!("managed by DaemonSet {}", owner.name));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return PodAction::Skip(format!("completed ({})", phase.unwrap_or_default()));
    }
    if meta.deletion_timestamp.is_some() {
        return PodAction::WaitForDeletion;
    }
    PodAction::Evict
}

/// The budget named in an eviction's 429: kube-apiserver's cause message reads
/// `The disruption budget <name> needs <n> healthy pods and has <m> currently` (or `... is
/// still being processed by the server.`).
#[must_use]
pub fn pdb_from_refusal(status: &Status) -> Option<String> {
    const PREFIX: &str = "The disruption budget ";
    let causes = status.details.as_ref().map(|d| d.causes.as_slice())?;
    causes
        .iter()
        .filter(|c| c.reason == "DisruptionBudget" || c.message.starts_with(PREFIX))
        .find_map(|c| {
            let rest = c.message.strip_prefix(PREFIX)?;
            let name = rest.split_whitespace().next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
}

/// The budget that selects `pod` among `pdbs` (same namespace; `matchLabels` and
/// `matchExpressions`), for a 429 that did not name it.
#[must_use]
pub fn pdb_selecting(pod: &Pod, pdbs: &[PodDisruptionBudget]) -> Option<String> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdbs.iter()
        .filter(|p| p.metadata.namespace == pod.metadata.namespace)
        .find(|p| {
            let Some(selector) = p.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                return false;
            };
            let by_labels = selector
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                match (e.operator.as_str(), labels.get(&e.key)) {
                    ("In", Some(v)) => values.contains(v),
                    ("NotIn", v) => v.is_none_or(|v| !values.contains(v)),
                    ("Exists", v) => v.is_some(),
                    ("DoesNotExist", v) => v.is_none(),
                    _ => false,
                }
            });
            by_labels && by_expressions
        })
        .and_then(|p| p.metadata.name.clone())
}

/// `namespace/name` of a pod.
#[must_use]
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference, Time,
    };
    use kube::core::response::{StatusCause, StatusDetails};

    fn pod(owner: Option<&str>, annotations: &[(&str, &str)], phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owner.map(|kind| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: "owner".into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn drain_skips_daemonset_mirror_and_completed_pods_and_evicts_the_rest() {
        assert_eq!(
            classify_pod(&pod(Some("ReplicaSet"), &[], "Running")),
            PodAction::Evict
        );
        assert_eq!(classify_pod(&pod(None, &[], "Running")), PodAction::Evict);
        assert!(matches!(
            classify_pod(&pod(Some("DaemonSet"), &[], "Running")),
            PodAction::Skip(r) if r.contains("DaemonSet")
        ));
        assert!(matches!(
            classify_pod(&pod(Some("Node"), &[(MIRROR_ANNOTATION, "abc")], "Running")),
            PodAction::Skip(r) if r.contains("mirror")
        ));
        assert!(matches!(
            classify_pod(&pod(Some("Job"), &[], "Succeeded")),
            PodAction::Skip(r) if r.contains("completed")
        ));
        let mut going = pod(Some("ReplicaSet"), &[], "Running");
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(classify_pod(&going), PodAction::WaitForDeletion);
    }

    #[test]
    fn refusal_names_the_budget_from_its_cause() {
        let mut status = Status::failure(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            "TooManyRequests",
        );
        status.code = 429;
        assert_eq!(pdb_from_refusal(&status), None);
        status.details = Some(StatusDetails {
            causes: vec![StatusCause {
                reason: "DisruptionBudget".into(),
                message: "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
                    .into(),
                field: String::new(),
            }],
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        assert_eq!(pdb_from_refusal(&status).as_deref(), Some("web-pdb"));
    }

    #[test]
    fn budget_found_by_selector_when_the_refusal_does_not_name_it() {
        let budget = |name: &str, app: &str| PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_owned(), app.to_owned())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        };
        let p = pod(Some("ReplicaSet"), &[], "Running");
        assert_eq!(
            pdb_selecting(&p, &[budget("db", "db"), budget("web-pdb", "web")]).as_deref(),
            Some("web-pdb")
        );
        assert_eq!(pdb_selecting(&p, &[budget("db", "db")]), None);
        assert_eq!(pod_key(&p), "default/p");
    }
}
