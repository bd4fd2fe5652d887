//! A minimal OpenAPI v3 (`/openapi/v3`, `/openapi/v3/<api|apis/group>/<version>`), just
//! enough for kubectl's `--validate=strict` (its default): kubectl looks for a PATCH
//! operation tagged with the object's group/version/kind that takes a `fieldValidation`
//! query parameter, and when it finds one it leaves validation to the server instead of
//! downloading schemas. Without these documents `kubectl create -f`/`apply -f` refuse with
//! "failed to download openapi".
//!
//! `/openapi/v2` is an empty document: kubectl before 1.29 reads it (as protobuf, whatever
//! the response type) in `kubectl apply` and, finding no schema for a kind, computes its
//! strategic merge patches from its compiled-in types, as it does when a schema is missing.
//!
//! Differs from kube-apiserver: the documents carry no schemas (`components` empty), so
//! `kubectl explain` finds nothing, and the server does not enforce `fieldValidation`
//! (unknown fields are kept, as with `fieldValidation=Ignore`).

use serde_json::{Value, json};

/// The protobuf media type kube-apiserver answers `/openapi/v2` with (client-go asks for
/// `...v2@v1.0+protobuf`, but an `@` does not parse as a response media type).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` for an `Accept` header: `Content-Type` and body. An empty protobuf message
/// is zero bytes; JSON clients get a skeleton with no paths.
#[must_use]
pub fn v2(accept: &str) -> (&'static str, Vec<u8>) {
    if accept.contains("protobuf") {
        (V2_PROTOBUF, Vec::new())
    } else {
        let doc = json!({"swagger": "2.0",
            "info": {"title": "Kubernetes (rke2-ops simulator)", "version": "unversioned"},
            "paths": {}, "definitions": {}});
        (
            "application/json",
            serde_json::to_vec(&doc).unwrap_or_default(),
        )
    }
}

/// The `/openapi/v3` index: one entry per served group version (`api/v1`,
/// `apis/policy/v1`...).
#[must_use]
pub fn index(group_versions: &[String]) -> Value {
    let paths: serde_json::Map<String, Value> = group_versions
        .iter()
        .map(|gv| {
            let path = api_path(gv);
            let url = format!("/openapi/v3/{path}?hash=sim");
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `api/v1` for `v1`, `apis/<group>/<version>` otherwise.
#[must_use]
pub fn api_path(group_version: &str) -> String {
    if group_version.contains('/') {
        format!("apis/{group_version}")
    } else {
        format!("api/{group_version}")
    }
}

/// The document of one group version, from its discovery `APIResourceList`: a PATCH
/// operation with `fieldValidation` for each resource that can be patched.
#[must_use]
pub fn group_version_doc(resource_list: &Value) -> Value {
    let gv = resource_list["groupVersion"].as_str().unwrap_or("v1");
    let (group, version) = gv.split_once('/').unwrap_or(("", gv));
    let prefix = format!("/{}", api_path(gv));
    let mut paths = serde_json::Map::new();
    for r in resource_list["resources"].as_array().into_iter().flatten() {
        let (Some(name), Some(kind)) = (r["name"].as_str(), r["kind"].as_str()) else {
            continue;
        };
        let patchable = r["verbs"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v == "patch"));
        if name.contains('/') || !patchable {
            continue;
        }
        let path = if r["namespaced"] == true {
            format!("{prefix}/namespaces/{{namespace}}/{name}/{{name}}")
        } else {
            format!("{prefix}/{name}/{{name}}")
        };
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                "parameters": [
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (rke2-ops simulator)", "version": "unversioned"},
        "paths": paths,
        "components": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_is_empty() {
        assert_eq!(
            v2("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
            (V2_PROTOBUF, Vec::new())
        );
        let (t, body) = v2("application/json");
        assert_eq!(t, "application/json");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc["swagger"], "2.0");
    }

    #[test]
    fn documents_name_patch_operations_with_field_validation() {
        let idx = index(&["v1".into(), "upgrade.cattle.io/v1".into()]);
        assert_eq!(
            idx["paths"]["api/v1"]["serverRelativeURL"],
            "/openapi/v3/api/v1?hash=sim"
        );
        assert!(idx["paths"]["apis/upgrade.cattle.io/v1"].is_object());
        let list = json!({"groupVersion": "upgrade.cattle.io/v1", "resources": [
            {"name": "plans", "namespaced": true, "kind": "Plan", "verbs": ["get", "patch"]},
            {"name": "plans/status", "namespaced": true, "kind": "Plan", "verbs": ["patch"]}]});
        let doc = group_version_doc(&list);
        let op = &doc["paths"]["/apis/upgrade.cattle.io/v1/namespaces/{namespace}/plans/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Plan");
        assert_eq!(op["parameters"][2]["name"], "fieldValidation");
        assert_eq!(doc["paths"].as_object().map(serde_json::Map::len), Some(1));
    }
}
