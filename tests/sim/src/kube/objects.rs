//! What the stand-in knows about Kubernetes objects, as pure functions: where each resource is
//! stored, selectors (label and field), pod health, the PodDisruptionBudget arithmetic of the
//! disruption controller, and `Status` error bodies. No I/O here; unit-tested below.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// A served resource: its REST name, kind and where its objects live in etcd. Built-in ones
/// are constants; a CustomResourceDefinition's are built at request time (hence `Cow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Plural path segment (`pods`).
    pub plural: Cow<'static, str>,
    /// `kind` of one object.
    pub kind: Cow<'static, str>,
    /// `apiVersion` (`v1`, `policy/v1`).
    pub api_version: Cow<'static, str>,
    /// etcd key prefix, kube-apiserver's (nodes are `minions` there too).
    pub registry: Cow<'static, str>,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

const fn builtin(
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
    registry: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        plural: Cow::Borrowed(plural),
        kind: Cow::Borrowed(kind),
        api_version: Cow::Borrowed(api_version),
        registry: Cow::Borrowed(registry),
        namespaced,
    }
}

/// core/v1 Node.
pub const NODES: Resource = builtin("nodes", "Node", "v1", "/registry/minions/", false);
/// core/v1 Pod.
pub const PODS: Resource = builtin("pods", "Pod", "v1", "/registry/pods/", true);
/// policy/v1 PodDisruptionBudget.
pub const PDBS: Resource = builtin(
    "poddisruptionbudgets",
    "PodDisruptionBudget",
    "policy/v1",
    "/registry/poddisruptionbudgets/",
    true,
);
/// core/v1 Event.
pub const EVENTS: Resource = builtin("events", "Event", "v1", "/registry/events/", true);
/// core/v1 Namespace.
pub const NAMESPACES: Resource = builtin(
    "namespaces",
    "Namespace",
    "v1",
    "/registry/namespaces/",
    false,
);
/// apiextensions.k8s.io/v1 CustomResourceDefinition.
pub const CRDS: Resource = builtin(
    "customresourcedefinitions",
    "CustomResourceDefinition",
    "apiextensions.k8s.io/v1",
    "/registry/apiextensions.k8s.io/customresourcedefinitions/",
    false,
);
/// apps/v1 DaemonSet: never stored, derived from the pods that name one as controller (the
/// simulated system pods do), so `kubectl drain` can look the owner up.
pub const DAEMONSETS: Resource = builtin(
    "daemonsets",
    "DaemonSet",
    "apps/v1",
    "/registry/daemonsets/",
    true,
);
/// apps/v1 Deployment: never stored, derived from the pods whose controller is a ReplicaSet
/// named `<deployment>-<hash>` and from the replacements the ReplicaSet still owes, so
/// `kubectl get deploy` and the hub's workload probes see desired and available replicas.
pub const DEPLOYMENTS: Resource = builtin(
    "deployments",
    "Deployment",
    "apps/v1",
    "/registry/deployments/",
    true,
);
/// Every built-in resource the stand-in serves.
pub const BUILTIN: [Resource; 8] = [
    NODES,
    PODS,
    PDBS,
    EVENTS,
    NAMESPACES,
    CRDS,
    DAEMONSETS,
    DEPLOYMENTS,
];

/// Whether `res` is derived from other objects (read-only, not watchable).
#[must_use]
pub fn derived(res: &Resource) -> bool {
    *res == DAEMONSETS || *res == DEPLOYMENTS
}
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
            _ => self.registry.to_string(),
        }
    }

    /// `NodeList`, `PodList`...
    #[must_use]
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The API group (`""` for core).
    #[must_use]
    pub fn group(&self) -> &str {
        self.api_version.split_once('/').map_or("", |(g, _)| g)
    }

    /// The built-in resource served at `group`/`version` as `plural`.
    #[must_use]
    pub fn builtin(group: &str, version: &str, plural: &str) -> Option<Resource> {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        BUILTIN
            .into_iter()
            .find(|r| r.plural == plural && r.api_version == api_version)
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
    /// `key in (a,b)` (labels only).
    In(String, Vec<String>),
    /// `key notin (a,b)` (labels only).
    NotIn(String, Vec<String>),
}

/// Splits a selector at the commas that are not inside a `( )` value set.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `key in (a,b)` / `key notin (a,b)`.
fn parse_set(part: &str) -> Option<Requirement> {
    let open = part.find('(')?;
    let values = part[open + 1..].strip_suffix(')')?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let head: Vec<&str> = part[..open].split_whitespace().collect();
    match head.as_slice() {
        [key, "in"] => Some(Requirement::In((*key).to_owned(), values)),
        [key, "notin"] => Some(Requirement::NotIn((*key).to_owned(), values)),
        _ => None,
    }
}

/// Parses a selector query value (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`); `None` when
/// malformed.
#[must_use]
pub fn parse_selector(text: &str) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for part in split_top_level(text)
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let req = if part.contains('(') {
            parse_set(part)?
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_owned())
        } else if part.contains(' ') {
            return None;
        } else {
            Requirement::Exists(part.to_owned())
        };
        out.push(req);
    }
    Some(out)
}

/// Whether `lookup` (a label map or an object's fields) satisfies every requirement.
pub fn selector_matches<S: AsRef<str>>(
    reqs: &[Requirement],
    lookup: impl Fn(&str) -> Option<S>,
) -> bool {
    reqs.iter().all(|r| {
        let value = |k: &str| lookup(k);
        let is = |k: &str, v: &str| value(k).is_some_and(|x| x.as_ref() == v);
        match r {
            Requirement::Equals(k, v) => is(k, v),
            Requirement::NotEquals(k, v) => !is(k, v),
            Requirement::Exists(k) => value(k).is_some(),
            Requirement::NotExists(k) => value(k).is_none(),
            Requirement::In(k, vs) => vs.iter().any(|v| is(k, v)),
            Requirement::NotIn(k, vs) => !vs.iter().any(|v| is(k, v)),
        }
    })
}

/// A field selector named a field the resource does not index (kube-apiserver: 400 `field
/// label not supported`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field label not supported: {0}")]
pub struct UnsupportedField(pub String);

/// The fields kube-apiserver lets a field selector name for `kind` (its field-label
/// conversion functions), each with where it lives in the object.
fn field_pointer(kind: &str, field: &str) -> Option<&'static str> {
    let common = match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        _ => None,
    };
    common.or(match (kind, field) {
        ("Pod", "spec.nodeName") => Some("/spec/nodeName"),
        ("Pod", "spec.restartPolicy") => Some("/spec/restartPolicy"),
        ("Pod", "spec.schedulerName") => Some("/spec/schedulerName"),
        ("Pod", "spec.serviceAccountName") => Some("/spec/serviceAccountName"),
        ("Pod", "spec.hostNetwork") => Some("/spec/hostNetwork"),
        ("Pod", "status.phase") => Some("/status/phase"),
        ("Pod", "status.podIP") => Some("/status/podIP"),
        ("Pod", "status.nominatedNodeName") => Some("/status/nominatedNodeName"),
        ("Node", "spec.unschedulable") => Some("/spec/unschedulable"),
        ("Event", "involvedObject.kind") => Some("/involvedObject/kind"),
        ("Event", "involvedObject.namespace") => Some("/involvedObject/namespace"),
        ("Event", "involvedObject.name") => Some("/involvedObject/name"),
        ("Event", "involvedObject.uid") => Some("/involvedObject/uid"),
        ("Event", "involvedObject.apiVersion") => Some("/involvedObject/apiVersion"),
        ("Event", "involvedObject.resourceVersion") => Some("/involvedObject/resourceVersion"),
        ("Event", "involvedObject.fieldPath") => Some("/involvedObject/fieldPath"),
        ("Event", "reason") => Some("/reason"),
        ("Event", "reportingComponent") => Some("/reportingComponent"),
        ("Event", "source") => Some("/source/component"),
        ("Event", "type") => Some("/type"),
        ("Namespace", "status.phase") => Some("/status/phase"),
        _ => None,
    })
}

/// The value of `field` of an object of `kind` as a field selector sees it: absent fields
/// are `""` and booleans `"true"`/`"false"`, as kube-apiserver's field sets have them.
///
/// # Errors
/// The field is not one `kind` supports.
pub fn field_of(object: &Value, kind: &str, field: &str) -> Result<String, UnsupportedField> {
    let pointer = field_pointer(kind, field).ok_or_else(|| UnsupportedField(field.to_owned()))?;
    Ok(match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if pointer == "/spec/unschedulable" || pointer == "/spec/hostNetwork" => {
            "false".to_owned()
        }
        _ => String::new(),
    })
}

/// Checks that every requirement of a field selector names a supported field and uses only
/// `=`, `==` or `!=`.
///
/// # Errors
/// The first unsupported field.
pub fn check_fields(kind: &str, reqs: &[Requirement]) -> Result<(), UnsupportedField> {
    for r in reqs {
        match r {
            Requirement::Equals(k, _) | Requirement::NotEquals(k, _) => {
                field_pointer(kind, k).ok_or_else(|| UnsupportedField(k.clone()))?;
            }
            Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => return Err(UnsupportedField(k.clone())),
        }
    }
    Ok(())
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

/// Whether a pod (as JSON) has the condition `Ready=True`.
fn ready_condition(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The DaemonSets the pods (of one namespace or all) name as controller, as apps/v1 objects
/// (the uid is the owner reference's; counts are the pods'). The stand-in does not store
/// DaemonSets; `kubectl drain` only needs to find the owner of a DaemonSet pod.
#[must_use]
pub fn daemonsets_of(pods: &[Value]) -> Vec<Value> {
    let mut sets: BTreeMap<(String, String), (Value, i64, i64)> = BTreeMap::new();
    for pod in pods {
        let Some(owner) = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|o| {
                o.iter()
                    .find(|o| o["kind"] == "DaemonSet" && o["controller"] == true)
            })
        else {
            continue;
        };
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = owner["name"].as_str().unwrap_or_default().to_owned();
        let ready = ready_condition(pod);
        let entry = sets.entry((ns.clone(), name.clone())).or_insert_with(|| {
            (
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": {"name": name, "namespace": ns, "uid": owner["uid"],
                        "creationTimestamp": pod["metadata"]["creationTimestamp"], "generation": 1},
                    "spec": {"selector": {"matchLabels": pod["metadata"]["labels"]},
                        "template": {"metadata": {"labels": pod["metadata"]["labels"]},
                            "spec": pod["spec"]}}}),
                0,
                0,
            )
        });
        entry.1 += 1;
        entry.2 += i64::from(ready);
    }
    sets.into_values()
        .map(|(mut ds, n, ready)| {
            ds["status"] = json!({"currentNumberScheduled": n, "desiredNumberScheduled": n,
                "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": n,
                "numberMisscheduled": 0, "observedGeneration": 1});
            ds
        })
        .collect()
}

/// The Deployment behind ReplicaSet `rs`: its name without the pod-template hash, as the
/// Deployment controller names ReplicaSets `<deployment>-<hash>`.
#[must_use]
pub fn deployment_of_replicaset(rs: &str) -> &str {
    rs.rsplit_once('-').map_or(rs, |(name, _)| name)
}

/// The Deployments behind the ReplicaSet pods (of one namespace or all) and the replacements
/// still owed (`owed`: the pods in the [`REPLACEMENTS`] records), as apps/v1 objects. Desired
/// replicas are the pods not terminating plus the replacements owed (an evicted pod is owed
/// until its replacement exists); available ones are those not terminating and Ready. A
/// replacement that cannot be scheduled (its `nodeSelector` names a cordoned node) keeps the
/// Deployment short, as a real one stays short while its pod is Pending.
#[must_use]
pub fn deployments_of(pods: &[Value], owed: &[Value]) -> Vec<Value> {
    fn owner(pod: &Value) -> Option<(String, String, &Value)> {
        let rs = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|o| o["kind"] == "ReplicaSet" && o["controller"] != false)?;
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = deployment_of_replicaset(rs["name"].as_str()?);
        Some((ns.to_owned(), name.to_owned(), rs))
    }
    let mut sets: BTreeMap<(String, String), (Value, i64, i64)> = BTreeMap::new();
    let mut add = |pod: &Value, counts: bool, ready: bool| {
        let Some((ns, name, rs)) = owner(pod) else {
            return;
        };
        let mut labels = pod["metadata"]["labels"].clone();
        if let Some(l) = labels.as_object_mut() {
            l.remove("pod-template-hash");
        }
        let entry = sets.entry((ns.clone(), name.clone())).or_insert_with(|| {
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": ns, "uid": rs["uid"],
                        "creationTimestamp": pod["metadata"]["creationTimestamp"], "generation": 1},
                    "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": pod["spec"]}}}),
                0,
                0,
            )
        });
        entry.1 += i64::from(counts);
        entry.2 += i64::from(counts && ready);
    };
    for pod in pods {
        let ready = ready_condition(pod);
        let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
        add(pod, !terminating, ready);
    }
    for pod in owed {
        add(pod, true, false);
    }
    sets.into_values()
        .map(|(mut d, want, available)| {
            d["spec"]["replicas"] = json!(want);
            let ok = available >= want;
            d["status"] = json!({"observedGeneration": 1, "replicas": want,
                "updatedReplicas": want, "readyReplicas": available,
                "availableReplicas": available, "unavailableReplicas": want - available,
                "conditions": [{"type": "Available", "status": if ok { "True" } else { "False" },
                    "reason": if ok { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                    "message": if ok { "Deployment has minimum availability." }
                        else { "Deployment does not have minimum availability." }}]});
            d
        })
        .collect()
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
        let set = parse_selector("env in (a,b),tier notin (db),app").expect("set-based");
        assert_eq!(set.len(), 3);
        assert!(selector_matches(&set, |k| match k {
            "env" => Some("b"),
            "app" => Some("x"),
            _ => None,
        }));
        assert!(!selector_matches(&set, |k| (k == "app").then_some("x")));
        assert!(parse_selector("env in a").is_none());
        let pod = json!({"spec": {"nodeName": "agent-1"}, "status": {"phase": "Running"}});
        assert!(selector_matches(&reqs, |k| field_of(&pod, "Pod", k).ok()));
        let drain = parse_selector("status.phase!=Succeeded,status.phase!=Failed").expect("ok");
        assert!(selector_matches(&drain, |k| field_of(&pod, "Pod", k).ok()));
        assert_eq!(
            field_of(&json!({}), "Node", "spec.unschedulable").as_deref(),
            Ok("false")
        );
        assert!(
            check_fields(
                "Event",
                &parse_selector("reason=X,type=Warning").expect("ok")
            )
            .is_ok()
        );
        assert_eq!(
            check_fields("Pod", &parse_selector("reason=X").expect("ok")),
            Err(UnsupportedField("reason".into()))
        );
    }

    #[test]
    fn daemonsets_are_derived_from_their_pods() {
        let pod = |n: &str| {
            json!({"metadata": {"name": n, "namespace": "kube-system",
            "labels": {"k8s-app": "canal"}, "ownerReferences": [{"kind": "DaemonSet",
            "name": "rke2-canal", "uid": "u1", "controller": true, "apiVersion": "apps/v1"}]},
            "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        };
        let sets = daemonsets_of(&[pod("a"), pod("b"), json!({"metadata": {"name": "x"}})]);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0]["metadata"]["uid"], "u1");
        assert_eq!(sets[0]["status"]["numberReady"], 2);
    }

    #[test]
    fn deployments_count_live_pods_and_owed_replacements() {
        let pod = |name: &str, ready: bool, terminating: bool| {
            let mut p = json!({"metadata": {"name": name, "namespace": "default",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9c",
                    "controller": true, "uid": "u"}]},
                "status": {"conditions": [{"type": "Ready",
                    "status": if ready { "True" } else { "False" }}]}});
            if terminating {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            p
        };
        let steady = deployments_of(&[pod("web-a", true, false), pod("web-b", true, false)], &[]);
        assert_eq!(steady.len(), 1);
        let d = &steady[0];
        assert_eq!(d["metadata"]["name"], "web");
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(d["status"]["availableReplicas"], 2);
        assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
        // web-a evicted: terminating, its replacement owed and not yet running.
        let evicted = pod("web-a", true, true);
        let short = deployments_of(&[evicted.clone(), pod("web-b", true, false)], &[evicted]);
        assert_eq!(short[0]["spec"]["replicas"], 2);
        assert_eq!(short[0]["status"]["availableReplicas"], 1);
        assert_eq!(short[0]["status"]["conditions"][0]["status"], "False");
        // Pods of other controllers make no Deployment.
        assert!(deployments_of(&[json!({"metadata": {"name": "x"}})], &[]).is_empty());
        assert_eq!(deployment_of_replicaset("web-7d4b9c"), "web");
        assert_eq!(deployment_of_replicaset("web"), "web");
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
