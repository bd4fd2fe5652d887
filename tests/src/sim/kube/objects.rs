//! What the stand-in knows about Kubernetes objects, as pure functions: where each resource is
//! stored, selectors (label and field), pod health, the PodDisruptionBudget arithmetic of the
//! disruption controller, and `Status` error bodies. No I/O here; unit-tested below.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// A served resource: its REST name, kind and where its objects live in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// Plural path segment (`pods`).
    pub plural: &'static str,
    /// `kind` of one object.
    pub kind: &'static str,
    /// `apiVersion` (`v1`, `policy/v1`).
    pub api_version: &'static str,
    /// etcd key prefix, kube-apiserver's (nodes are `minions` there too).
    pub registry: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// core/v1 Node.
pub const NODES: Resource = Resource {
    plural: "nodes",
    kind: "Node",
    api_version: "v1",
    registry: "/registry/minions/",
    namespaced: false,
};
/// core/v1 Pod.
pub const PODS: Resource = Resource {
    plural: "pods",
    kind: "Pod",
    api_version: "v1",
    registry: "/registry/pods/",
    namespaced: true,
};
/// policy/v1 PodDisruptionBudget.
pub const PDBS: Resource = Resource {
    plural: "poddisruptionbudgets",
    kind: "PodDisruptionBudget",
    api_version: "policy/v1",
    registry: "/registry/poddisruptionbudgets/",
    namespaced: true,
};
/// core/v1 Event.
pub const EVENTS: Resource = Resource {
    plural: "events",
    kind: "Event",
    api_version: "v1",
    registry: "/registry/events/",
    namespaced: true,
};
/// Simulator only: pods the ReplicaSet controller owes (an evicted or deleted pod's
/// replacement, due at a time), kept in etcd so any server's controller can create it.
pub const REPLACEMENTS: &str = "/registry/rke2-sim/replacements/";

impl Resource {
    /// The key of one object.
    #[must_use]
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.registry),
            _ => format!("{}{name}", self.registry),
        }
    }

    /// The prefix of a list: every namespace, or one.
    #[must_use]
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.registry),
            _ => self.registry.to_owned(),
        }
    }

    /// `NodeList`, `PodList`...
    #[must_use]
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// One requirement of a label or field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key` (labels only).
    Exists(String),
    /// `!key` (labels only).
    NotExists(String),
}

/// Parses a selector query value (`a=b,c!=d,e,!f`); `None` when malformed (set-based
/// selectors such as `env in (a,b)` are not simulated).
#[must_use]
pub fn parse_selector(text: &str) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_owned())
        } else if part.contains([' ', '(']) {
            return None;
        } else {
            Requirement::Exists(part.to_owned())
        };
        out.push(req);
    }
    Some(out)
}

/// Whether `lookup` (a label map or an object's fields) satisfies every requirement.
pub fn selector_matches<'a>(
    reqs: &[Requirement],
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => lookup(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => lookup(k) != Some(v.as_str()),
        Requirement::Exists(k) => lookup(k).is_some(),
        Requirement::NotExists(k) => lookup(k).is_none(),
    })
}

/// The fields a field selector may name (kube-apiserver's pod and node field sets, the
/// common ones).
#[must_use]
pub fn field_of<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    let pointer = match field {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "spec.nodeName" => "/spec/nodeName",
        "status.phase" => "/status/phase",
        "spec.unschedulable" => "/spec/unschedulable",
        "involvedObject.name" => "/involvedObject/name",
        "involvedObject.kind" => "/involvedObject/kind",
        "reason" => "/reason",
        _ => return None,
    };
    object.pointer(pointer).and_then(Value::as_str)
}

/// The label `key` of a JSON object.
#[must_use]
pub fn label_of<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// Whether a `LabelSelector` (policy/v1 semantics: an empty selector matches every pod of
/// the namespace) selects `labels`.
#[must_use]
pub fn label_selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Whether the node's Ready condition is True.
#[must_use]
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether the pod is being deleted (graceful termination under way).
#[must_use]
pub fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// A healthy pod for the disruption controller: Running, Ready, not terminating, and on a
/// node that is Ready (the node lifecycle controller marks pods of a NotReady node not ready;
/// the stand-in applies that when it counts).
#[must_use]
pub fn pod_healthy(pod: &Pod, node_is_ready: impl Fn(&str) -> bool) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let on_ready_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(node_is_ready);
    running && ready && !terminating(pod) && on_ready_node
}

/// The disruption controller's numbers for one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Pods the budget covers (matching, not terminating).
    pub expected: i32,
    /// How many must stay healthy.
    pub desired_healthy: i32,
    /// How many are healthy now.
    pub current_healthy: i32,
    /// `max(0, current - desired)`: how many evictions may happen now.
    pub disruptions_allowed: i32,
}

/// `IntOrString` against `total` (percentages round up, as `GetScaledValueFromIntOrPercent`
/// with `roundUp` does for PDBs); `None` for a malformed percentage.
#[must_use]
pub fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            let total = i64::from(total);
            i32::try_from((total * pct + 99) / 100).ok()
        }
    }
}

/// The budget for `pdb` given how many matching pods exist (`expected`) and how many of them
/// are healthy. Real: `expected` comes from the owning controllers' scale for
/// `maxUnavailable` and percentages; the stand-in counts the matching pods.
#[must_use]
pub fn budget(pdb: &PodDisruptionBudget, expected: i32, current_healthy: i32) -> Budget {
    let spec = pdb.spec.as_ref();
    let desired_healthy = if let Some(min) = spec.and_then(|s| s.min_available.as_ref()) {
        scaled(min, expected).unwrap_or(expected)
    } else if let Some(max) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        expected - scaled(max, expected).unwrap_or(0)
    } else {
        // Neither set: nothing has to stay healthy.
        0
    }
    .max(0);
    Budget {
        expected,
        desired_healthy,
        current_healthy,
        disruptions_allowed: (current_healthy - desired_healthy).max(0),
    }
}

/// Whether an eviction of a pod covered by a budget may proceed: a healthy pod needs a
/// disruption allowed; an unhealthy one may go while the budget is met
/// (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default).
#[must_use]
pub fn eviction_allowed(budget: &Budget, pod_is_healthy: bool) -> bool {
    if pod_is_healthy {
        budget.disruptions_allowed > 0
    } else {
        budget.current_healthy >= budget.desired_healthy
    }
}

/// The name of the ReplicaSet that controls the pod, if any.
#[must_use]
pub fn replicaset_owner(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ReplicaSet" && o.controller.unwrap_or(true))
        .map(|o| o.name.as_str())
}

/// A `Status` error body, as kube-apiserver writes it.
#[must_use]
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut out = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        out["details"] = d;
    }
    out
}

/// The 404 for one object (`pods "web-1" not found`).
#[must_use]
pub fn not_found(res: &Resource, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.plural),
        Some(json!({"name": name, "kind": res.plural})),
    )
}

/// The 429 of an eviction a budget forbids (kube-apiserver's exact words).
#[must_use]
pub fn eviction_refused(pdb_name: &str, budget: &Budget) -> Value {
    status(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        Some(json!({
            "causes": [{
                "reason": "DisruptionBudget",
                "message": format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    budget.desired_healthy, budget.current_healthy
                ),
            }],
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn budget_follows_min_available_and_max_unavailable() {
        let b = budget(&pdb(Some(IntOrString::Int(2)), None), 2, 2);
        assert_eq!(b.disruptions_allowed, 0);
        let b = budget(&pdb(Some(IntOrString::Int(2)), None), 3, 3);
        assert_eq!(b.disruptions_allowed, 1);
        let b = budget(&pdb(None, Some(IntOrString::Int(1))), 3, 2);
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (2, 0));
        let b = budget(&pdb(Some(IntOrString::String("50%".into())), None), 3, 3);
        assert_eq!(b.desired_healthy, 2, "percentages round up");
        assert!(!eviction_allowed(
            &budget(&pdb(Some(IntOrString::Int(2)), None), 2, 2),
            true
        ));
        assert!(eviction_allowed(
            &budget(&pdb(Some(IntOrString::Int(1)), None), 2, 1),
            false
        ));
    }

    #[test]
    fn selectors_parse_and_match() {
        let reqs = parse_selector("app=web,tier!=db,env,!gone").expect("valid");
        let labels: BTreeMap<&str, &str> = [("app", "web"), ("tier", "fe"), ("env", "x")].into();
        assert!(selector_matches(&reqs, |k| labels.get(k).copied()));
        let reqs = parse_selector("spec.nodeName==agent-1").expect("valid");
        assert_eq!(
            reqs,
            vec![Requirement::Equals(
                "spec.nodeName".into(),
                "agent-1".into()
            )]
        );
        assert!(parse_selector("env in (a,b)").is_none());
        let pod = json!({"spec": {"nodeName": "agent-1"}});
        assert!(selector_matches(&reqs, |k| field_of(&pod, k)));
    }

    #[test]
    fn refused_eviction_names_the_budget() {
        let b = budget(&pdb(Some(IntOrString::Int(2)), None), 2, 2);
        let s = eviction_refused("web-pdb", &b);
        assert_eq!(s["code"], 429);
        assert_eq!(s["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert!(
            s["details"]["causes"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("web-pdb"))
        );
    }
}
