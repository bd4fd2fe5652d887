//! CustomResourceDefinitions: what a stored CRD serves (group, version, names, scope,
//! printer columns), the status apiextensions-apiserver gives it once its names are
//! accepted, and the small JSONPath subset its `additionalPrinterColumns` use. Pure
//! functions; the handlers store CRDs and their objects in etcd
//! (`/registry/apiextensions.k8s.io/customresourcedefinitions/<name>`,
//! `/registry/<group>/<plural>/[<ns>/]<name>`, as kube-apiserver does).

use std::borrow::Cow;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::objects::Resource;
use super::table::age;

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header (`Image`).
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`...).
    pub type_: String,
    /// 0: always shown; above: `-o wide` only.
    pub priority: i64,
    /// Help text.
    pub description: String,
    /// The JSONPath (`.spec.upgrade.image`).
    pub json_path: String,
}

impl PrinterColumn {
    /// The cell for `object`: the first value the path finds (null when none, which kubectl
    /// prints as an empty cell); `date` columns as an age.
    #[must_use]
    pub fn cell(&self, object: &Value, now: Timestamp) -> Value {
        let Some(found) = json_path(object, &self.json_path).into_iter().next() else {
            return Value::Null;
        };
        match (self.type_.as_str(), &found) {
            ("date", _) => json!(age(Some(&found), now)),
            ("string", Value::String(_)) => found,
            ("string", other) => json!(other.to_string()),
            _ => found,
        }
    }
}

/// One served version of a CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdVersion {
    /// Group (`upgrade.cattle.io`).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Plural (`plans`).
    pub plural: String,
    /// Singular (`plan`).
    pub singular: String,
    /// Kind (`Plan`).
    pub kind: String,
    /// Short names (`kubectl get <short>`).
    pub short_names: Vec<String>,
    /// Categories (`all`...).
    pub categories: Vec<String>,
    /// `scope: Namespaced`.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then the main resource ignores status changes).
    pub status_subresource: bool,
    /// Printer columns.
    pub columns: Vec<PrinterColumn>,
}

impl CrdVersion {
    /// The stand-in's resource for this version's objects.
    #[must_use]
    pub fn resource(&self) -> Resource {
        Resource {
            plural: Cow::Owned(self.plural.clone()),
            kind: Cow::Owned(self.kind.clone()),
            api_version: Cow::Owned(format!("{}/{}", self.group, self.version)),
            registry: Cow::Owned(format!("/registry/{}/{}/", self.group, self.plural)),
            namespaced: self.namespaced,
        }
    }

    /// `group/version`.
    #[must_use]
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The served versions of a stored CRD object (empty when malformed).
#[must_use]
pub fn served_versions(crd: &Value) -> Vec<CrdVersion> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] != false)
        .filter_map(|v| {
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some(PrinterColumn {
                        name: c["name"].as_str()?.to_owned(),
                        type_: c["type"].as_str().unwrap_or("string").to_owned(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        description: c["description"].as_str().unwrap_or_default().to_owned(),
                        json_path: c["jsonPath"].as_str()?.to_owned(),
                    })
                })
                .collect::<Vec<_>>();
            let columns = if columns.is_empty() {
                vec![PrinterColumn {
                    name: "Age".into(),
                    type_: "date".into(),
                    priority: 0,
                    description: String::new(),
                    json_path: ".metadata.creationTimestamp".into(),
                }]
            } else {
                columns
            };
            Some(CrdVersion {
                group: group.to_owned(),
                version: v["name"].as_str()?.to_owned(),
                plural: plural.to_owned(),
                singular: names["singular"]
                    .as_str()
                    .map_or_else(|| kind.to_lowercase(), str::to_owned),
                kind: kind.to_owned(),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                namespaced: spec["scope"] != "Cluster",
                status_subresource: v.pointer("/subresources/status").is_some(),
                columns,
            })
        })
        .collect()
}

/// Checks what apiextensions-apiserver insists on before accepting a CRD: a name of
/// `<plural>.<group>`, a scope, at least one version, exactly one storage version.
///
/// # Errors
/// The first problem, worded like the apiserver's validation.
pub fn validate(crd: &Value) -> Result<(), String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() || plural.is_empty() || spec["names"]["kind"].as_str().is_none() {
        return Err("spec.group, spec.names.plural and spec.names.kind are required".into());
    }
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into());
    }
    let versions = spec["versions"].as_array().map_or(&[][..], Vec::as_slice);
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    Ok(())
}

/// The status apiextensions-apiserver sets once a CRD's names are accepted (`kubectl wait
/// --for condition=established` waits for it).
#[must_use]
pub fn established_status(crd: &Value, now: &Value) -> Value {
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    let cond = |t: &str, reason: &str, message: &str| {
        json!({"type": t, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": now})
    };
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*]` and filters
/// `[?(@.k=='v')]` / `[?(@.k!='v')]`; every match, in order.
#[must_use]
pub fn json_path(object: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = vec![object.clone()];
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Vec::new();
            };
            let inner = &after[..end];
            rest = &after[end + 1..];
            current = current.into_iter().flat_map(|v| index(&v, inner)).collect();
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            rest = &after[end..];
            current = current
                .into_iter()
                .filter_map(|v| v.get(key).cloned())
                .collect();
        } else {
            return Vec::new();
        }
    }
    current.into_iter().filter(|v| !v.is_null()).collect()
}

fn index(value: &Value, inner: &str) -> Vec<Value> {
    let Some(items) = value.as_array() else {
        return Vec::new();
    };
    if inner == "*" {
        return items.clone();
    }
    if let Ok(i) = inner.parse::<usize>() {
        return items.get(i).cloned().into_iter().collect();
    }
    let Some(cond) = inner.strip_prefix("?(@.").and_then(|c| c.strip_suffix(')')) else {
        return Vec::new();
    };
    let (key, want, equal) = if let Some((k, v)) = cond.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = cond.split_once("==") {
        (k, v, true)
    } else {
        return Vec::new();
    };
    let want = want.trim().trim_matches(['\'', '"']);
    items
        .iter()
        .filter(|item| {
            let got = item.get(key.trim()).and_then(Value::as_str);
            if equal {
                got == Some(want)
            } else {
                got.is_some_and(|g| g != want)
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_crd() -> Value {
        let text = include_str!("../../../fixtures/runbook/system-upgrade-crd.yaml");
        serde_yaml::from_str(text).expect("CRD fixture parses")
    }

    #[test]
    fn plan_crd_serves_plans_with_its_columns() {
        let crd = plan_crd();
        assert_eq!(validate(&crd), Ok(()));
        let versions = served_versions(&crd);
        assert_eq!(versions.len(), 1);
        let v = &versions[0];
        assert_eq!(
            (
                v.group_version().as_str(),
                v.plural.as_str(),
                v.kind.as_str()
            ),
            ("upgrade.cattle.io/v1", "plans", "Plan")
        );
        assert!(v.namespaced && v.status_subresource);
        assert_eq!(v.columns[0].name, "Image");
        assert_eq!(v.columns.last().map(|c| c.priority), Some(10));
        assert_eq!(
            v.resource().key(Some("system-upgrade"), "server-plan"),
            "/registry/upgrade.cattle.io/plans/system-upgrade/server-plan"
        );
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("plans.example.com");
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn json_path_subset() {
        let plan = json!({"spec": {"upgrade": {"image": "rancher/rke2-upgrade"}},
            "status": {"conditions": [
                {"type": "LatestResolved", "status": "True", "message": ""},
                {"type": "Complete", "status": "False", "message": "waiting"}],
                "applying": ["agent-1"]}});
        assert_eq!(
            json_path(&plan, ".spec.upgrade.image"),
            vec![json!("rancher/rke2-upgrade")]
        );
        assert_eq!(
            json_path(&plan, ".status.conditions[?(@.type=='Complete')].status"),
            vec![json!("False")]
        );
        assert_eq!(
            json_path(&plan, ".status.conditions[?(@.message!='')].message"),
            vec![json!("waiting")]
        );
        assert_eq!(
            json_path(&plan, ".status.conditions[0].type"),
            vec![json!("LatestResolved")]
        );
        assert!(json_path(&plan, ".spec.channel").is_empty());
        let col = PrinterColumn {
            name: "Applying".into(),
            type_: "string".into(),
            priority: 10,
            description: String::new(),
            json_path: ".status.applying".into(),
        };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        assert_eq!(col.cell(&plan, now), json!("[\"agent-1\"]"));
    }
}
