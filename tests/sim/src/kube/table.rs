//! Server-side printing: the `meta.k8s.io/v1` `Table` kube-apiserver returns when a client
//! (kubectl) asks with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns and
//! cells follow kube-apiserver's printers (`pkg/printers/internalversion`) for the kinds the
//! stand-in serves; every column is sent, kubectl hides those of priority 1 unless `-o wide`.
//! Pure functions, unit-tested below.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::crd::PrinterColumn;

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default: kubectl reads namespaces and labels from it).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the query value (`None`, `Metadata`, `Object`); anything else is the default.
    #[must_use]
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a `Table`.
#[must_use]
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// One column definition: name, type, priority.
type Col = (&'static str, &'static str, i64);

fn column(name: &str, type_: &str, priority: i64) -> Value {
    let mut c = json!({"name": name, "type": type_, "format": "", "description": name, "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

/// k8s' `duration.HumanDuration`: `45s`, `3m20s`, `5h10m`, `3d4h`, `2y10d`.
#[must_use]
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_owned();
    }
    if secs < 0 {
        return "0s".to_owned();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 time at `now` (`<unknown>` when absent, as the printers say).
#[must_use]
pub fn age(time: Option<&Value>, now: Timestamp) -> String {
    time.and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or_else(
            || "<unknown>".to_owned(),
            |t| human_duration(now.as_second() - t.as_second()),
        )
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".to_owned() } else { s }
}

const NODE_COLUMNS: &[Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
    ("Internal-IP", "string", 1),
    ("External-IP", "string", 1),
    ("OS-Image", "string", 1),
    ("Kernel-Version", "string", 1),
    ("Container-Runtime", "string", 1),
];

/// printNode: `Ready` / `NotReady` / `Unknown`, `,SchedulingDisabled` when cordoned; roles
/// from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
#[must_use]
pub fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let mut status = vec![match ready {
        Some(c) if c["status"] == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then(|| role.to_owned())
            } else if k == "kubernetes.io/role" {
                v.as_str().filter(|v| !v.is_empty()).map(str::to_owned)
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    let address = |t: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|a| a["type"] == t))
            .and_then(|a| a["address"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    vec![
        json!(text(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        json!(age(node.pointer("/metadata/creationTimestamp"), now)),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(or_none(text(node, "/status/nodeInfo/osImage"))),
        json!(or_none(text(node, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(text(
            node,
            "/status/nodeInfo/containerRuntimeVersion"
        ))),
    ]
}

const POD_COLUMNS: &[Col] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "string", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];

/// printPod (the common paths): READY counts ready running containers, STATUS is the phase,
/// the status reason or a container's waiting/terminated reason, `Terminating` while
/// deleted.
#[must_use]
pub fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut reason = text(pod, "/status/phase");
    let status_reason = text(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.clone();
    }
    let mut ready = 0;
    let mut restarts = 0;
    for cs in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        restarts += cs["restartCount"].as_i64().unwrap_or(0);
        if let Some(r) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_owned();
        } else if let Some(r) = cs
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason = r.to_owned();
        } else if cs["ready"] == true && cs.pointer("/state/running").is_some() {
            ready += 1;
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if status_reason == "NodeLost" {
            "Unknown".to_owned()
        } else {
            "Terminating".to_owned()
        };
    }
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(pod.pointer("/metadata/creationTimestamp"), now)),
        json!(or_none(text(pod, "/status/podIP"))),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(if gates == 0 {
            "<none>".to_owned()
        } else {
            format!("0/{gates}")
        }),
    ]
}

const EVENT_COLUMNS: &[Col] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Subobject", "string", 1),
    ("Source", "string", 1),
    ("Message", "string", 0),
    ("First Seen", "string", 1),
    ("Count", "integer", 1),
    ("Name", "string", 1),
];

/// printEvent: ages of the last and first occurrence, `kind/name` of the object.
#[must_use]
pub fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let first = if event.get("firstTimestamp").is_some_and(|t| !t.is_null()) {
        age(event.get("firstTimestamp"), now)
    } else {
        age(event.get("eventTime"), now)
    };
    let mut last = if event.get("lastTimestamp").is_some_and(|t| !t.is_null()) {
        age(event.get("lastTimestamp"), now)
    } else {
        first.clone()
    };
    let mut count = event["count"].as_i64().unwrap_or(0);
    if let Some(series) = event.get("series").filter(|s| !s.is_null()) {
        last = age(series.get("lastObservedTime"), now);
        count = series["count"].as_i64().unwrap_or(count);
    } else if count == 0 {
        count = 1;
    }
    let kind = text(event, "/involvedObject/kind").to_lowercase();
    let name = text(event, "/involvedObject/name");
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let component = text(event, "/source/component");
    let host = text(event, "/source/host");
    let source = match (component.is_empty(), host.is_empty()) {
        (false, false) => format!("{component}, {host}"),
        (false, true) => component,
        _ => text(event, "/reportingComponent"),
    };
    vec![
        json!(last),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(event, "/message").trim()),
        json!(first),
        json!(count),
        json!(text(event, "/metadata/name")),
    ]
}

const PDB_COLUMNS: &[Col] = &[
    ("Name", "string", 0),
    ("Min Available", "string", 0),
    ("Max Unavailable", "string", 0),
    ("Allowed Disruptions", "integer", 0),
    ("Age", "string", 0),
];

/// printPodDisruptionBudget (`N/A` for the bound not set).
#[must_use]
pub fn pdb_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let bound = |p: &str| match pdb.pointer(p) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_owned(),
    };
    vec![
        json!(text(pdb, "/metadata/name")),
        json!(bound("/spec/minAvailable")),
        json!(bound("/spec/maxUnavailable")),
        json!(
            pdb.pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
        json!(age(pdb.pointer("/metadata/creationTimestamp"), now)),
    ]
}

const NAMESPACE_COLUMNS: &[Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Age", "string", 0),
];

/// printNamespace.
#[must_use]
pub fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(text(ns, "/metadata/name")),
        json!(text(ns, "/status/phase")),
        json!(age(ns.pointer("/metadata/creationTimestamp"), now)),
    ]
}

const DEFAULT_COLUMNS: &[Col] = &[("Name", "string", 0), ("Created At", "date", 0)];

/// The default table convertor (kinds without a printer, e.g. CustomResourceDefinition):
/// name and creation time.
#[must_use]
pub fn default_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(text(object, "/metadata/name")),
        object
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

/// How the rows of one kind are printed.
#[derive(Debug, Clone)]
pub enum Printer {
    /// A built-in printer, by kind.
    Builtin(String),
    /// A custom resource: `Name` then its CRD's `additionalPrinterColumns` (or `Age` when it
    /// declares none).
    Custom(Vec<PrinterColumn>),
}

impl Printer {
    fn columns(&self) -> Vec<Value> {
        let cols = |c: &[Col]| c.iter().map(|(n, t, p)| column(n, t, *p)).collect();
        match self {
            Self::Builtin(kind) => match kind.as_str() {
                "Node" => cols(NODE_COLUMNS),
                "Pod" => cols(POD_COLUMNS),
                "Event" => cols(EVENT_COLUMNS),
                "PodDisruptionBudget" => cols(PDB_COLUMNS),
                "Namespace" => cols(NAMESPACE_COLUMNS),
                _ => cols(DEFAULT_COLUMNS),
            },
            Self::Custom(pcs) => std::iter::once(column("Name", "string", 0))
                .chain(pcs.iter().map(|c| {
                    let mut v = column(&c.name, &c.type_, c.priority);
                    v["description"] = json!(c.description);
                    v
                }))
                .collect(),
        }
    }

    fn cells(&self, object: &Value, now: Timestamp) -> Vec<Value> {
        match self {
            Self::Builtin(kind) => match kind.as_str() {
                "Node" => node_cells(object, now),
                "Pod" => pod_cells(object, now),
                "Event" => event_cells(object, now),
                "PodDisruptionBudget" => pdb_cells(object, now),
                "Namespace" => namespace_cells(object, now),
                _ => default_cells(object),
            },
            Self::Custom(pcs) => std::iter::once(json!(text(object, "/metadata/name")))
                .chain(pcs.iter().map(|c| c.cell(object, now)))
                .collect(),
        }
    }
}

/// The `Table` of `objects` (one for a GET of one object), `resource_version` the list's.
#[must_use]
pub fn table(
    printer: &Printer,
    objects: &[Value],
    resource_version: Option<&str>,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": printer.cells(o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
                }
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": printer.columns(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn human_durations_match_kubernetes() {
        for (secs, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (700, "11m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (30 * 86_400, "30d"),
            (3 * 365 * 86_400 + 86_400 * 10, "3y10d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn node_row_has_status_roles_and_addresses() {
        let node = json!({
            "metadata": {"name": "server-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"node-role.kubernetes.io/master": "true",
                    "node-role.kubernetes.io/control-plane": "true",
                    "node-role.kubernetes.io/etcd": "true"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.31.4+rke2r1", "osImage": "rke2-sim",
                    "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://2"}}});
        let cells = node_cells(&node, at("2026-01-01T00:05:00Z"));
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane,etcd,master");
        assert_eq!(cells[3], "5m");
        assert_eq!(cells[4], "v1.31.4+rke2r1");
        assert_eq!(cells[5], "10.0.0.2");
        assert_eq!(cells[6], "<none>");
        let agent = json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Ready", "status": "Unknown"}]}});
        let cells = node_cells(&agent, at("2026-01-01T00:05:00Z"));
        assert_eq!(
            (cells[1].as_str(), cells[2].as_str()),
            (Some("NotReady"), Some("<none>"))
        );
    }

    #[test]
    fn pod_row_counts_ready_containers_and_shows_terminating() {
        let mut pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "agent-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let now = at("2026-01-01T00:00:30Z");
        let cells = pod_cells(&pod, now);
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[4], "30s");
        assert_eq!(cells[6], "agent-1");
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        assert_eq!(pod_cells(&pod, now)[2], "Terminating");
    }

    #[test]
    fn event_and_pdb_rows() {
        let now = at("2026-01-01T01:00:00Z");
        let ev = json!({"metadata": {"name": "e1"}, "type": "Warning",
            "reason": "CertificateExpirationWarning", "message": " expires soon ",
            "involvedObject": {"kind": "Node", "name": "server-1"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:59:00Z",
            "count": 3, "source": {"component": "rke2"}});
        let cells = event_cells(&ev, now);
        assert_eq!(cells[0], "60s");
        assert_eq!(cells[3], "node/server-1");
        assert_eq!(cells[6], "expires soon");
        assert_eq!(cells[7], "60m");
        assert_eq!(cells[8], 3);
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 2},
            "status": {"disruptionsAllowed": 0}});
        let cells = pdb_cells(&pdb, now);
        assert_eq!(
            (cells[1].clone(), cells[2].clone(), cells[3].clone()),
            (json!("2"), json!("N/A"), json!(0))
        );
    }

    #[test]
    fn table_carries_partial_metadata_and_wide_columns_have_priority() {
        let t = table(
            &Printer::Builtin("Node".into()),
            &[json!({"metadata": {"name": "n1", "labels": {"a": "b"}}})],
            Some("42"),
            IncludeObject::Metadata,
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        assert_eq!(t["columnDefinitions"][5]["name"], "Internal-IP");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
