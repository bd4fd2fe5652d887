//! API discovery, as kubectl's RESTMapper reads it: `/api` (APIVersions), `/apis`
//! (APIGroupList) and `/api/v1`, `/apis/<group>/<version>` (APIResourceList), for the
//! built-in resources the stand-in serves and every CustomResourceDefinition stored.
//!
//! Only the unaggregated documents: kubectl 1.32 first asks for aggregated discovery
//! (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...`) and
//! falls back to these when the answer's `Content-Type` is plain `application/json`.

use serde_json::{Value, json};

use super::crd::CrdVersion;

/// One built-in resource in discovery: `(group, version, name, singular, kind, namespaced,
/// verbs, short names, categories)`. Subresources are entries named `<plural>/<sub>`.
type Entry = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS: &[&str] = &["get", "patch", "update"];

const BUILTIN: &[Entry] = &[
    ("", "v1", "events", "event", "Event", true, RW, &["ev"], &[]),
    (
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        &["ns"],
        &[],
    ),
    (
        "",
        "v1",
        "namespaces/status",
        "",
        "Namespace",
        false,
        STATUS,
        &[],
        &[],
    ),
    ("", "v1", "nodes", "node", "Node", false, RW, &["no"], &[]),
    (
        "",
        "v1",
        "nodes/status",
        "",
        "Node",
        false,
        STATUS,
        &[],
        &[],
    ),
    ("", "v1", "pods", "pod", "Pod", true, RW, &["po"], &["all"]),
    (
        "",
        "v1",
        "pods/eviction",
        "",
        "Eviction",
        true,
        &["create"],
        &[],
        &[],
    ),
    ("", "v1", "pods/status", "", "Pod", true, STATUS, &[], &[]),
    (
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["get", "list"],
        &["ds"],
        &["all"],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["get", "list"],
        &["deploy"],
        &["all"],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        RW,
        &["pdb"],
        &[],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets/status",
        "",
        "PodDisruptionBudget",
        true,
        STATUS,
        &[],
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        RW,
        &["crd", "crds"],
        &["api-extensions"],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions/status",
        "",
        "CustomResourceDefinition",
        false,
        STATUS,
        &[],
        &[],
    ),
];

/// `/api` (real: `serverAddressByClientCIDRs` names the apiserver's address; clients do not
/// use it).
#[must_use]
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// Group → versions, built-in groups first, then the CRDs' in name order.
fn groups(crds: &[CrdVersion]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let builtin = BUILTIN
        .iter()
        .filter(|e| !e.0.is_empty())
        .map(|e| (e.0.to_owned(), e.1.to_owned()));
    let mut custom: Vec<(String, String)> = crds
        .iter()
        .map(|c| (c.group.clone(), c.version.clone()))
        .collect();
    custom.sort();
    for (g, v) in builtin.chain(custom) {
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) if !versions.contains(&v) => versions.push(v),
            Some(_) => {}
            None => out.push((g, vec![v])),
        }
    }
    out
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`.
#[must_use]
pub fn api_group_list(crds: &[CrdVersion]) -> Value {
    let groups: Vec<Value> = groups(crds)
        .iter()
        .map(|(name, versions)| group_json(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (APIGroup), when the group is served.
#[must_use]
pub fn api_group(crds: &[CrdVersion], group: &str) -> Option<Value> {
    groups(crds)
        .into_iter()
        .find(|(name, _)| name == group)
        .map(|(name, versions)| {
            let mut g = group_json(&name, &versions);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
}

/// `/api/v1` or `/apis/<group>/<version>` (APIResourceList), when served.
#[must_use]
pub fn resource_list(crds: &[CrdVersion], group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = BUILTIN
        .iter()
        .filter(|e| e.0 == group && e.1 == version)
        .map(
            |&(g, v, name, singular, kind, namespaced, verbs, short, categories)| {
                let mut r = json!({"name": name, "singularName": singular, "namespaced": namespaced,
                "kind": kind, "verbs": verbs});
                if !short.is_empty() {
                    r["shortNames"] = json!(short);
                }
                if !categories.is_empty() {
                    r["categories"] = json!(categories);
                }
                if name == "pods/eviction" {
                    // The eviction subresource is policy/v1 Eviction (kubectl drain checks).
                    r["group"] = json!("policy");
                    r["version"] = json!("v1");
                }
                let _ = (g, v);
                r
            },
        )
        .collect();
    for c in crds
        .iter()
        .filter(|c| c.group == group && c.version == version)
    {
        let mut r = json!({"name": c.plural, "singularName": c.singular,
            "namespaced": c.namespaced, "kind": c.kind, "verbs": RW});
        if !c.short_names.is_empty() {
            r["shortNames"] = json!(c.short_names);
        }
        if !c.categories.is_empty() {
            r["categories"] = json!(c.categories);
        }
        resources.push(r);
        if c.status_subresource {
            resources.push(
                json!({"name": format!("{}/status", c.plural), "singularName": "",
                "namespaced": c.namespaced, "kind": c.kind, "verbs": STATUS}),
            );
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CrdVersion {
        CrdVersion {
            group: "upgrade.cattle.io".into(),
            version: "v1".into(),
            plural: "plans".into(),
            singular: "plan".into(),
            kind: "Plan".into(),
            short_names: vec![],
            categories: vec![],
            namespaced: true,
            status_subresource: true,
            columns: vec![],
        }
    }

    #[test]
    fn groups_include_builtins_and_crds() {
        let list = api_group_list(&[]);
        let names: Vec<&str> = list["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(names, ["apps", "policy", "apiextensions.k8s.io"]);
        let list = api_group_list(&[plan()]);
        assert_eq!(
            list["groups"][3]["preferredVersion"]["groupVersion"],
            "upgrade.cattle.io/v1"
        );
        assert!(api_group(&[], "upgrade.cattle.io").is_none());
        assert_eq!(
            api_group(&[plan()], "upgrade.cattle.io").map(|g| g["kind"].clone()),
            Some(json!("APIGroup"))
        );
    }

    #[test]
    fn core_v1_lists_eviction_as_policy_v1() {
        let core = resource_list(&[], "", "v1").expect("core");
        assert_eq!(core["groupVersion"], "v1");
        let eviction = core["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "pods/eviction"))
            .expect("pods/eviction");
        assert_eq!(
            (eviction["group"].as_str(), eviction["kind"].as_str()),
            (Some("policy"), Some("Eviction"))
        );
        let plans = resource_list(&[plan()], "upgrade.cattle.io", "v1").expect("plans");
        assert_eq!(plans["resources"][0]["name"], "plans");
        assert_eq!(plans["resources"][1]["name"], "plans/status");
        assert!(resource_list(&[], "upgrade.cattle.io", "v1").is_none());
    }
}
