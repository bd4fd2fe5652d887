//! Request bodies, as pure functions: decoding by `Content-Type`, validating a new object of
//! a kind, and the object a PATCH or PUT stores given the stored one.

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::handlers::{Answer, bad_request};
use super::objects::{self, Resource};
use super::{crd, protobuf};

/// A request body by its `Content-Type`: JSON (also when unset), YAML, or protobuf for what
/// [`protobuf`] decodes; others (CBOR...) get kube-apiserver's 415.
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, Answer> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| bad_request(&format!("the body of the request was not valid JSON: {e}"))),
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| bad_request(&format!("the body of the request was not valid YAML: {e}"))),
        "application/vnd.kubernetes.protobuf" => protobuf::decode(body).map_err(|e| {
            let code = if matches!(e, protobuf::ProtobufError::Unsupported(_)) {
                415
            } else {
                400
            };
            let reason = if code == 415 {
                "UnsupportedMediaType"
            } else {
                "BadRequest"
            };
            (code, objects::status(code, reason, &e.to_string(), None))
        }),
        other => Err((
            415,
            objects::status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (the simulator does not take {other})"
                ),
                None,
            ),
        )),
    }
}

/// The body of a create must be a valid object of its kind (k8s-openapi's schema for
/// built-in kinds, apiextensions' rules for CRDs, an object with metadata for custom
/// resources).
pub fn validate_body(res: &Resource, object: &Value) -> Result<(), String> {
    let check = |r: Result<(), serde_json::Error>| r.map_err(|e| e.to_string());
    match res.kind.as_ref() {
        "Node" => check(serde_json::from_value::<Node>(object.clone()).map(drop)),
        "Pod" => check(serde_json::from_value::<Pod>(object.clone()).map(drop)),
        "PodDisruptionBudget" => {
            check(serde_json::from_value::<PodDisruptionBudget>(object.clone()).map(drop))
        }
        "Event" => check(serde_json::from_value::<Event>(object.clone()).map(drop)),
        "Namespace" => check(serde_json::from_value::<Namespace>(object.clone()).map(drop)),
        "CustomResourceDefinition" => {
            check(serde_json::from_value::<CustomResourceDefinition>(object.clone()).map(drop))?;
            crd::validate(object)
        }
        _ if object.get("metadata").is_some_and(Value::is_object) => Ok(()),
        _ => Err("metadata is required".into()),
    }
}

/// The object a PATCH stores: on `/status` only the status changes; on the main resource
/// everything but the status (when it is a subresource) and the fields the server owns
/// (name, namespace, uid, creation time, generation), the generation moving when the spec
/// does.
pub fn patched(
    stored: &Value,
    next: &mut Value,
    status_only: bool,
    status_subresource: bool,
) -> Value {
    if status_only {
        let mut result = stored.clone();
        result["status"] = next["status"].take();
        return result;
    }
    let mut result = next.take();
    if status_subresource {
        match stored.get("status") {
            Some(s) => result["status"] = s.clone(),
            None => {
                if let Some(o) = result.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "resourceVersion",
    ] {
        match stored["metadata"].get(field) {
            Some(v) => result["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = result["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    result["apiVersion"] = stored["apiVersion"].clone();
    result["kind"] = stored["kind"].clone();
    if result.get("spec") != stored.get("spec")
        && let Some(g) = stored["metadata"]["generation"].as_i64()
    {
        result["metadata"]["generation"] = json!(g + 1);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_keeps_server_owned_fields_and_bumps_generation() {
        let stored = json!({"apiVersion": "upgrade.cattle.io/v1", "kind": "Plan",
            "metadata": {"name": "p", "uid": "u", "generation": 1, "resourceVersion": "5"},
            "spec": {"version": "a"}, "status": {"applying": []}});
        let mut next = json!({"apiVersion": "x", "kind": "Plan",
            "metadata": {"name": "other", "uid": "v", "annotations": {"k": "v"}},
            "spec": {"version": "b"}, "status": {"applying": ["n"]}});
        let r = patched(&stored, &mut next, false, true);
        assert_eq!(r["metadata"]["name"], "p");
        assert_eq!(r["metadata"]["uid"], "u");
        assert_eq!(r["metadata"]["annotations"]["k"], "v");
        assert_eq!(r["metadata"]["generation"], 2);
        assert_eq!(r["apiVersion"], "upgrade.cattle.io/v1");
        assert_eq!(r["status"]["applying"], json!([]));
        let mut next = json!({"status": {"applying": ["n"]}, "spec": {"version": "c"}});
        let r = patched(&stored, &mut next, true, true);
        assert_eq!(
            (
                r["status"]["applying"][0].as_str(),
                r["spec"]["version"].as_str()
            ),
            (Some("n"), Some("a"))
        );
    }
}
