//! PATCH bodies applied to a stored object, by `Content-Type`, as pure functions: JSON merge
//! patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch and server-side apply.
//!
//! Server-side apply is approximated too: the applied configuration (YAML or JSON) is merged
//! in as a JSON merge patch; there are no managed fields, no conflicts and no removal of
//! fields a manager stopped applying.
//!
//! Strategic merge is approximated: JSON merge semantics, except that the lists the
//! stand-in's clients patch element-wise (conditions and addresses by `type`, taints by
//! `key`) merge by that key, and `$`-directives (`$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`) are dropped. That covers `kubectl
//! cordon`/`uncordon` (`{"spec":{"unschedulable":true|null}}`), kubelet status patches and
//! `kubectl apply`'s patches of labels, annotations and scalar spec fields; a real
//! kube-apiserver would also merge containers by `name` and so on.

use serde_json::{Value, json};

/// Server-side apply's media type (`kubectl apply --server-side`).
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Why a patch could not be applied (mapped to a Kubernetes `Status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A `Content-Type` that is not a patch flavour the stand-in knows (415).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {0:?})"
    )]
    UnsupportedMediaType(String),
    /// The body does not parse (400).
    #[error("{0}")]
    BadBody(String),
    /// A JSON patch operation failed (a `test` op, a missing path...) (422).
    #[error("{0}")]
    Invalid(String),
}

impl PatchError {
    /// The HTTP code and `reason` kube-apiserver answers with.
    #[must_use]
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            Self::UnsupportedMediaType(_) => (415, "UnsupportedMediaType"),
            Self::BadBody(_) => (400, "BadRequest"),
            Self::Invalid(_) => (422, "Invalid"),
        }
    }
}

/// `target` with the patch `body` of media type `content_type` applied.
///
/// # Errors
/// See [`PatchError`].
pub fn apply(content_type: &str, target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let flavour = content_type.split(';').next().unwrap_or("").trim();
    let parse = || {
        serde_json::from_slice::<Value>(body).map_err(|e| {
            PatchError::BadBody(format!("the body of the request was not valid JSON: {e}"))
        })
    };
    let mut next = target.clone();
    match flavour {
        "application/merge-patch+json" => json_patch::merge(&mut next, &parse()?),
        "application/strategic-merge-patch+json" => strategic_merge(&mut next, &parse()?),
        // Server-side apply, approximated: the applied configuration merged in.
        APPLY_PATCH => {
            let applied = serde_yaml::from_slice::<Value>(body).map_err(|e| {
                PatchError::BadBody(format!("the body of the request was not valid YAML: {e}"))
            })?;
            json_patch::merge(&mut next, &applied);
        }
        "application/json-patch+json" => {
            let ops = serde_json::from_value::<json_patch::Patch>(parse()?)
                .map_err(|e| PatchError::BadBody(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut next, &ops).map_err(|e| PatchError::Invalid(e.to_string()))?;
        }
        other => return Err(PatchError::UnsupportedMediaType(other.to_owned())),
    }
    Ok(next)
}

/// Strategic merge patch for what the stand-in's objects need (see the module comment).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in patch_map {
        if k.starts_with('$') {
            continue;
        }
        let Some(obj) = target.as_object_mut() else {
            return;
        };
        if v.is_null() {
            obj.remove(k);
            continue;
        }
        let merge_key = match k.as_str() {
            "conditions" | "addresses" => Some("type"),
            "taints" => Some("key"),
            _ => None,
        };
        match (merge_key, obj.get_mut(k), v) {
            (Some(mk), Some(Value::Array(current)), Value::Array(items)) => {
                for item in items {
                    match current.iter_mut().find(|c| c.get(mk) == item.get(mk)) {
                        Some(existing) => strategic_merge(existing, item),
                        None => current.push(item.clone()),
                    }
                }
            }
            (_, Some(existing), Value::Object(_)) if existing.is_object() => {
                strategic_merge(existing, v);
            }
            _ => {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_sets_scalars() {
        let mut node = json!({"spec": {}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
        strategic_merge(
            &mut node,
            &json!({"spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(node["spec"]["unschedulable"], true);
        assert_eq!(node["status"]["conditions"][0]["status"], "Unknown");
        assert_eq!(node["status"]["conditions"][1]["type"], "DiskPressure");
        strategic_merge(&mut node, &json!({"spec": {"unschedulable": null}}));
        assert!(node["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn flavours_by_content_type() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        let merged = apply(
            "application/merge-patch+json; charset=utf-8",
            &obj,
            br#"{"metadata":{"labels":{"a":null,"b":"2"}}}"#,
        )
        .expect("merge");
        assert_eq!(merged["metadata"]["labels"], json!({"b": "2"}));
        let patched = apply(
            "application/json-patch+json",
            &obj,
            br#"[{"op":"replace","path":"/spec/x","value":2}]"#,
        )
        .expect("json patch");
        assert_eq!(patched["spec"]["x"], 2);
        let failed = apply(
            "application/json-patch+json",
            &obj,
            br#"[{"op":"test","path":"/spec/x","value":3}]"#,
        );
        assert_eq!(failed.map_err(|e| e.code_and_reason().0), Err(422));
        assert_eq!(
            apply("application/merge-patch+json", &obj, b"{nope")
                .map_err(|e| e.code_and_reason().0),
            Err(400)
        );
        assert_eq!(
            apply("text/plain", &obj, b"{}").map_err(|e| e.code_and_reason().0),
            Err(415)
        );
        let applied = apply(APPLY_PATCH, &obj, b"spec:\n  y: 2\n").expect("apply");
        assert_eq!(applied["spec"], json!({"x": 1, "y": 2}));
    }
}
