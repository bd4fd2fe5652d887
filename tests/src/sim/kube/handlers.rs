//! The REST routes of the stand-in: nodes (+ `/status`), pods (+ `/eviction`),
//! PodDisruptionBudgets and events, with kube-apiserver's status codes and `Status` bodies.
//! Storage is [`Store`] (etcd); the pure rules are in [`super::objects`].

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use hyper::StatusCode;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde_json::{Value, json};

use super::Settings;
use super::objects::{
    self, EVENTS, NODES, PDBS, PODS, REPLACEMENTS, Requirement, Resource, budget,
};
use super::store::{Store, StoreError, Stored, encode};
use crate::sim::server::listen::{Reply, RequestInfo, reply};

/// Annotation (simulator only) holding when a terminating pod's kubelet removes it.
pub const REMOVE_AT: &str = "sim.rke2-ops.io/remove-at";

/// A response: status code and JSON body.
pub type Answer = (u16, Value);

/// The API: storage and timings.
#[derive(Debug)]
pub struct KubeApi {
    /// The local etcd member.
    pub store: Store,
    /// Control-loop timings.
    pub settings: Settings,
}

/// The RFC 3339 text Kubernetes uses for a time.
#[must_use]
pub fn time_value(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

/// A random v4-style UID.
#[must_use]
pub fn new_uid() -> String {
    let mut rng = rand::thread_rng();
    let a: u32 = rng.r#gen();
    let b: u16 = rng.r#gen();
    let c: u16 = rng.gen_range(0..0x1000);
    let d: u16 = rng.gen_range(0x8000..0xc000);
    let e: u64 = rng.gen_range(0..1 << 48);
    format!("{a:08x}-{b:04x}-4{c:03x}-{d:04x}-{e:012x}")
}

/// Five characters from the alphabet kube-apiserver uses for `generateName`.
#[must_use]
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn store_error(e: &StoreError) -> Answer {
    match e {
        StoreError::AlreadyExists => (
            409,
            objects::status(409, "AlreadyExists", "already exists", None),
        ),
        StoreError::Conflict => (
            409,
            objects::status(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
                None,
            ),
        ),
        other => (
            500,
            objects::status(500, "InternalError", &other.to_string(), None),
        ),
    }
}

fn bad_request(message: &str) -> Answer {
    (400, objects::status(400, "BadRequest", message, None))
}

fn query_param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Sets `resourceVersion` after a write.
fn with_revision(mut object: Value, revision: i64) -> Value {
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    object
}

impl KubeApi {
    /// Answers a request under `/api` or `/apis`; `None` for paths it does not serve.
    pub async fn handle(&self, req: &RequestInfo) -> Option<Reply> {
        let path = req.path.trim_matches('/');
        let seg: Vec<&str> = path.split('/').collect();
        let m = req.method.as_str();
        let answer = match (m, seg.as_slice()) {
            ("GET", ["api"]) => (
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": []}),
            ),
            ("GET", ["api", "v1", "nodes"]) => self.list(&NODES, None, &req.query).await,
            ("POST", ["api", "v1", "nodes"]) => self.create(&NODES, None, &req.body).await,
            ("GET", ["api", "v1", "nodes", name] | ["api", "v1", "nodes", name, "status"]) => {
                self.get(&NODES, None, name).await
            }
            ("PATCH", ["api", "v1", "nodes", name]) => {
                self.patch(&NODES, None, name, false, req).await
            }
            ("PATCH", ["api", "v1", "nodes", name, "status"]) => {
                self.patch(&NODES, None, name, true, req).await
            }
            ("DELETE", ["api", "v1", "nodes", name]) => self.remove(&NODES, None, name).await,
            ("GET", ["api", "v1", "pods"]) => self.list(&PODS, None, &req.query).await,
            ("GET", ["api", "v1", "events"]) => self.list(&EVENTS, None, &req.query).await,
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
                self.list(&PODS, Some(ns), &req.query).await
            }
            ("POST", ["api", "v1", "namespaces", ns, "pods"]) => {
                self.create(&PODS, Some(ns), &req.body).await
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
                self.get(&PODS, Some(ns), name).await
            }
            ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                self.delete_pod(ns, name, req, false).await
            }
            ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                self.delete_pod(ns, name, req, true).await
            }
            ("GET", ["api", "v1", "namespaces", ns, "events"]) => {
                self.list(&EVENTS, Some(ns), &req.query).await
            }
            ("POST", ["api", "v1", "namespaces", ns, "events"]) => {
                self.create(&EVENTS, Some(ns), &req.body).await
            }
            ("GET", ["api", "v1", "namespaces", ns, "events", name]) => {
                self.get(&EVENTS, Some(ns), name).await
            }
            ("GET", ["apis", "policy", "v1", "poddisruptionbudgets"]) => {
                self.list(&PDBS, None, &req.query).await
            }
            (
                "GET",
                [
                    "apis",
                    "policy",
                    "v1",
                    "namespaces",
                    ns,
                    "poddisruptionbudgets",
                ],
            ) => self.list(&PDBS, Some(ns), &req.query).await,
            (
                "POST",
                [
                    "apis",
                    "policy",
                    "v1",
                    "namespaces",
                    ns,
                    "poddisruptionbudgets",
                ],
            ) => self.create(&PDBS, Some(ns), &req.body).await,
            (
                "GET",
                [
                    "apis",
                    "policy",
                    "v1",
                    "namespaces",
                    ns,
                    "poddisruptionbudgets",
                    name,
                ],
            ) => self.get(&PDBS, Some(ns), name).await,
            (
                "DELETE",
                [
                    "apis",
                    "policy",
                    "v1",
                    "namespaces",
                    ns,
                    "poddisruptionbudgets",
                    name,
                ],
            ) => self.remove(&PDBS, Some(ns), name).await,
            (_, ["api" | "apis", ..]) if known_collection(&seg) => (
                405,
                objects::status(
                    405,
                    "MethodNotAllowed",
                    &format!(
                        "the server does not allow this method on the requested resource ({m} {})",
                        req.path
                    ),
                    None,
                ),
            ),
            _ => return None,
        };
        let (code, body) = answer;
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Some(reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "application/json",
            body,
        ))
    }

    /// Whether each Node is Ready, by name.
    pub async fn node_readiness(&self) -> Result<HashMap<String, bool>, StoreError> {
        let (nodes, _) = self.store.list(NODES.registry).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|s| serde_json::from_value::<Node>(s.object).ok())
            .filter_map(|n| {
                let ready = objects::node_ready(&n);
                n.metadata.name.map(|name| (name, ready))
            })
            .collect())
    }

    async fn list(&self, res: &Resource, ns: Option<&str>, query: &str) -> Answer {
        let labels = query_param(query, "labelSelector").unwrap_or_default();
        let fields = query_param(query, "fieldSelector").unwrap_or_default();
        let (Some(labels), Some(fields)) = (
            objects::parse_selector(&labels),
            objects::parse_selector(&fields),
        ) else {
            return bad_request(
                "unable to parse requirement: selector not supported by the simulator",
            );
        };
        let (items, revision) = match self.store.list(&res.prefix(ns)).await {
            Ok(x) => x,
            Err(e) => return store_error(&e),
        };
        let mut out = Vec::new();
        for Stored { object, .. } in items {
            if selector_ok(&labels, &fields, &object) {
                out.push(object);
            }
        }
        if *res == PDBS {
            for pdb in &mut out {
                if let Err(e) = self.fill_pdb_status(pdb).await {
                    return store_error(&e);
                }
            }
        }
        (
            200,
            json!({
                "kind": res.list_kind(),
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": revision.to_string()},
                "items": out,
            }),
        )
    }

    async fn get(&self, res: &Resource, ns: Option<&str>, name: &str) -> Answer {
        match self.store.get(&res.key(ns, name)).await {
            Ok(Some(Stored { mut object, .. })) => {
                if *res == PDBS
                    && let Err(e) = self.fill_pdb_status(&mut object).await
                {
                    return store_error(&e);
                }
                (200, object)
            }
            Ok(None) => (404, objects::not_found(res, name)),
            Err(e) => store_error(&e),
        }
    }

    async fn create(&self, res: &Resource, ns: Option<&str>, body: &[u8]) -> Answer {
        let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body of the request was not valid JSON");
        };
        // The body must be a valid object of its kind (k8s-openapi's schema).
        let valid = match res.kind {
            "Node" => serde_json::from_value::<Node>(object.clone()).map(drop),
            "Pod" => serde_json::from_value::<Pod>(object.clone()).map(drop),
            "PodDisruptionBudget" => {
                serde_json::from_value::<PodDisruptionBudget>(object.clone()).map(drop)
            }
            _ => serde_json::from_value::<Event>(object.clone()).map(drop),
        };
        if let Err(e) = valid {
            return bad_request(&format!("invalid {}: {e}", res.kind));
        }
        let now = super::now();
        let meta = &mut object["metadata"];
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(prefix)) => format!("{prefix}{}", name_suffix()),
            _ => return bad_request("name or generateName is required"),
        };
        meta["name"] = json!(name);
        if let Some(ns) = ns {
            if meta["namespace"].as_str().is_some_and(|n| n != ns) {
                return bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                );
            }
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = time_value(now);
        if *res == PDBS {
            meta["generation"] = json!(1);
            object["status"] = Value::Null;
        }
        object["apiVersion"] = json!(res.api_version);
        object["kind"] = json!(res.kind);
        if *res == PODS
            && let Err(answer) = self.schedule_and_start(&mut object, now).await
        {
            return answer;
        }
        match self.store.create(&res.key(ns, &name), &object).await {
            Ok(rev) => {
                let mut object = with_revision(object, rev);
                if *res == PDBS
                    && let Err(e) = self.fill_pdb_status(&mut object).await
                {
                    return store_error(&e);
                }
                (201, object)
            }
            Err(StoreError::AlreadyExists) => (
                409,
                objects::status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", res.plural),
                    Some(json!({"name": name, "kind": res.plural})),
                ),
            ),
            Err(e) => store_error(&e),
        }
    }

    /// The simulated scheduler and kubelet for a new pod: a pod without `spec.nodeName` goes to
    /// the Ready schedulable node with the fewest pods; a pod without a status starts at once
    /// (Running, Ready).
    async fn schedule_and_start(&self, pod: &mut Value, now: Timestamp) -> Result<(), Answer> {
        if pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none()
        {
            let node = self
                .pick_node(None, &[])
                .await
                .map_err(|e| store_error(&e))?
                .ok_or_else(|| {
                    (
                        500,
                        objects::status(
                            500,
                            "InternalError",
                            "0/0 nodes are available (simulated scheduler)",
                            None,
                        ),
                    )
                })?;
            pod["spec"]["nodeName"] = json!(node);
        }
        if pod.get("status").is_none_or(|s| s.get("phase").is_none()) {
            start_pod(pod, now);
        }
        Ok(())
    }

    /// A Ready, schedulable node for a pod (fewest pods first), avoiding `avoid` when another
    /// exists.
    pub async fn pick_node(
        &self,
        avoid: Option<&str>,
        same_owner: &[String],
    ) -> Result<Option<String>, StoreError> {
        let (nodes, _) = self.store.list(NODES.registry).await?;
        let (pods, _) = self.store.list(PODS.registry).await?;
        let mut load: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for s in &nodes {
            let Ok(node) = serde_json::from_value::<Node>(s.object.clone()) else {
                continue;
            };
            let schedulable = !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            if objects::node_ready(&node)
                && schedulable
                && let Some(name) = node.metadata.name
            {
                load.insert(name, (0, 0));
            }
        }
        for p in &pods {
            if let Some(node) = p.object.pointer("/spec/nodeName").and_then(Value::as_str)
                && let Some((siblings, all)) = load.get_mut(node)
            {
                *all += 1;
                let owner = p.object.pointer("/metadata/ownerReferences/0/name");
                if owner
                    .and_then(Value::as_str)
                    .is_some_and(|o| same_owner.iter().any(|s| s == o))
                {
                    *siblings += 1;
                }
            }
        }
        let best = load
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != avoid || load.len() == 1)
            .min_by_key(|(name, load)| (**load, (*name).clone()))
            .map(|(name, _)| name.clone());
        Ok(best)
    }

    async fn patch(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        req: &RequestInfo,
    ) -> Answer {
        let Ok(patch) = serde_json::from_slice::<Value>(&req.body) else {
            return bad_request("the body of the request was not valid JSON");
        };
        let flavour = req.content_type.split(';').next().unwrap_or("").trim();
        let key = res.key(ns, name);
        for _ in 0..8 {
            let stored = match self.store.get(&key).await {
                Ok(Some(s)) => s,
                Ok(None) => return (404, objects::not_found(res, name)),
                Err(e) => return store_error(&e),
            };
            if let Some(rv) = patch
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && rv != stored.revision.to_string()
            {
                return store_error(&StoreError::Conflict);
            }
            let mut next = stored.object.clone();
            match flavour {
                "application/merge-patch+json" => json_patch::merge(&mut next, &patch),
                "application/strategic-merge-patch+json" => strategic_merge(&mut next, &patch),
                "application/json-patch+json" => {
                    let Ok(ops) = serde_json::from_value::<json_patch::Patch>(patch.clone()) else {
                        return bad_request("invalid JSON patch");
                    };
                    if let Err(e) = json_patch::patch(&mut next, &ops) {
                        return (422, objects::status(422, "Invalid", &e.to_string(), None));
                    }
                }
                other => {
                    return (
                        415,
                        objects::status(
                            415,
                            "UnsupportedMediaType",
                            &format!(
                                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                            ),
                            None,
                        ),
                    );
                }
            }
            // The main resource ignores status changes; `/status` ignores everything else.
            let mut result = stored.object.clone();
            if status_only {
                result["status"] = next["status"].take();
            } else {
                result["metadata"]["labels"] = next["metadata"]["labels"].take();
                result["metadata"]["annotations"] = next["metadata"]["annotations"].take();
                result["spec"] = next["spec"].take();
            }
            if serde_json::from_value::<Node>(result.clone()).is_err() && *res == NODES {
                return (
                    422,
                    objects::status(422, "Invalid", "the patched Node is not valid", None),
                );
            }
            if result == stored.object {
                return (200, result);
            }
            match self.store.update(&key, &result, stored.revision).await {
                Ok(rev) => return (200, with_revision(result, rev)),
                Err(StoreError::Conflict) => {}
                Err(e) => return store_error(&e),
            }
        }
        store_error(&StoreError::Conflict)
    }

    async fn remove(&self, res: &Resource, ns: Option<&str>, name: &str) -> Answer {
        let key = res.key(ns, name);
        for _ in 0..8 {
            let stored = match self.store.get(&key).await {
                Ok(Some(s)) => s,
                Ok(None) => return (404, objects::not_found(res, name)),
                Err(e) => return store_error(&e),
            };
            match self.store.delete(&key, stored.revision).await {
                Ok(()) => {
                    let group = res.api_version.split_once('/').map_or("", |(g, _)| g);
                    return (
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "details": {"name": name, "group": group,
                            "kind": res.plural, "uid": stored.object["metadata"]["uid"]}}),
                    );
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return store_error(&e),
            }
        }
        store_error(&StoreError::Conflict)
    }

    /// DELETE of a pod, or its eviction (`evict`: PodDisruptionBudgets are checked). A grace
    /// period above zero marks the pod terminating (`deletionTimestamp`); the controller
    /// removes it once its kubelet would have. A ReplicaSet's pod gets a replacement due
    /// after [`Settings::replacement_delay`]. Every change is one etcd transaction guarded by
    /// the pod's and the budget's revisions, so two evictions cannot both spend the last
    /// allowed disruption.
    async fn delete_pod(&self, ns: &str, name: &str, req: &RequestInfo, evict: bool) -> Answer {
        let body: Value = if req.body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return bad_request("the body of the request was not valid JSON"),
            }
        };
        let options = if evict { &body["deleteOptions"] } else { &body };
        let requested_grace = options["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| query_param(&req.query, "gracePeriodSeconds")?.parse().ok());
        let key = PODS.key(Some(ns), name);
        for _ in 0..8 {
            let stored = match self.store.get(&key).await {
                Ok(Some(s)) => s,
                Ok(None) => return (404, objects::not_found(&PODS, name)),
                Err(e) => return store_error(&e),
            };
            let Ok(pod) = serde_json::from_value::<Pod>(stored.object.clone()) else {
                return (
                    500,
                    objects::status(500, "InternalError", "stored pod does not parse", None),
                );
            };
            if objects::terminating(&pod) {
                // Already going: an eviction is a no-op success, a delete returns the pod.
                return if evict {
                    (201, success(201))
                } else {
                    (200, stored.object)
                };
            }
            let mut compares = vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                stored.revision,
            )];
            let mut ops = Vec::new();
            if evict {
                match self.budget_check(ns, &pod).await {
                    Ok(BudgetCheck::Free) => {}
                    Ok(BudgetCheck::Allowed(pdb)) => {
                        // Rewriting the budget moves its revision: a concurrent eviction
                        // that counted the same disruption fails its compare and recounts.
                        let pdb_key = PDBS.key(
                            Some(ns),
                            pdb.object["metadata"]["name"].as_str().unwrap_or_default(),
                        );
                        compares.push(Compare::mod_revision(
                            pdb_key.as_str(),
                            CompareOp::Equal,
                            pdb.revision,
                        ));
                        ops.push(TxnOp::put(pdb_key.as_str(), encode(&pdb.object), None));
                    }
                    Ok(BudgetCheck::Refused(answer)) => return answer,
                    Err(e) => return store_error(&e),
                }
            }
            let now = super::now();
            let grace = requested_grace
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0);
            let mut after = stored.object.clone();
            if grace == 0 {
                ops.push(TxnOp::delete(key.as_str(), None));
            } else {
                let linger = i64::try_from(self.settings.pod_termination.as_millis())
                    .unwrap_or(1000)
                    .min(grace * 1000);
                after["metadata"]["deletionTimestamp"] =
                    time_value(now + SignedDuration::from_secs(grace));
                after["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                after["metadata"]["annotations"][REMOVE_AT] =
                    json!((now + SignedDuration::from_millis(linger)).to_string());
                ops.push(TxnOp::put(key.as_str(), encode(&after), None));
            }
            if objects::replicaset_owner(&pod).is_some() {
                let due = now
                    + SignedDuration::try_from(self.settings.replacement_delay)
                        .unwrap_or(SignedDuration::from_secs(2));
                let record = json!({"pod": stored.object, "due": due.to_string()});
                ops.push(TxnOp::put(
                    format!("{REPLACEMENTS}{ns}/{name}"),
                    encode(&record),
                    None,
                ));
            }
            match self
                .store
                .txn(Txn::new().when(compares).and_then(ops))
                .await
            {
                Ok((true, rev)) => {
                    return if evict {
                        (201, success(201))
                    } else if grace == 0 {
                        (200, stored.object)
                    } else {
                        (200, with_revision(after, rev))
                    };
                }
                Ok((false, _)) => {}
                Err(e) => return store_error(&e),
            }
        }
        store_error(&StoreError::Conflict)
    }

    /// Which budget covers `pod` and whether it allows an eviction now.
    async fn budget_check(&self, ns: &str, pod: &Pod) -> Result<BudgetCheck, StoreError> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let (pdbs, _) = self.store.list(&PDBS.prefix(Some(ns))).await?;
        let mut covering: Vec<(Stored, PodDisruptionBudget)> = pdbs
            .into_iter()
            .filter_map(|s| {
                let pdb = serde_json::from_value::<PodDisruptionBudget>(s.object.clone()).ok()?;
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                objects::label_selector_matches(selector, &labels).then_some((s, pdb))
            })
            .collect();
        if covering.len() > 1 {
            return Ok(BudgetCheck::Refused((
                500,
                objects::status(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    None,
                ),
            )));
        }
        let Some((stored, pdb)) = covering.pop() else {
            return Ok(BudgetCheck::Free);
        };
        let ready = self.node_readiness().await?;
        let (expected, healthy) = self.count_pods(ns, &pdb).await?;
        let b = budget(&pdb, expected, healthy);
        let this_healthy = objects::pod_healthy(pod, |n| ready.get(n).copied().unwrap_or(false));
        if objects::eviction_allowed(&b, this_healthy) {
            Ok(BudgetCheck::Allowed(stored))
        } else {
            let name = pdb.metadata.name.unwrap_or_default();
            Ok(BudgetCheck::Refused((
                429,
                objects::eviction_refused(&name, &b),
            )))
        }
    }

    /// Pods a budget covers (not terminating) and how many of them are healthy.
    async fn count_pods(
        &self,
        ns: &str,
        pdb: &PodDisruptionBudget,
    ) -> Result<(i32, i32), StoreError> {
        let ready = self.node_readiness().await?;
        let (pods, _) = self.store.list(&PODS.prefix(Some(ns))).await?;
        let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
        let mut expected = 0;
        let mut healthy = 0;
        for s in pods {
            let Ok(pod) = serde_json::from_value::<Pod>(s.object) else {
                continue;
            };
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            if objects::terminating(&pod) || !objects::label_selector_matches(selector, &labels) {
                continue;
            }
            expected += 1;
            if objects::pod_healthy(&pod, |n| ready.get(n).copied().unwrap_or(false)) {
                healthy += 1;
            }
        }
        Ok((expected, healthy))
    }

    /// Fills a budget's `status` as the disruption controller keeps it (computed at read).
    async fn fill_pdb_status(&self, object: &mut Value) -> Result<(), StoreError> {
        let Ok(pdb) = serde_json::from_value::<PodDisruptionBudget>(object.clone()) else {
            return Ok(());
        };
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let (expected, healthy) = self.count_pods(&ns, &pdb).await?;
        let b = budget(&pdb, expected, healthy);
        let now = time_value(super::now());
        let (cond, reason) = if b.disruptions_allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        object["status"] = json!({
            "observedGeneration": pdb.metadata.generation.unwrap_or(1),
            "disruptionsAllowed": b.disruptions_allowed,
            "currentHealthy": b.current_healthy,
            "desiredHealthy": b.desired_healthy,
            "expectedPods": b.expected,
            "conditions": [{"type": "DisruptionAllowed", "status": cond, "reason": reason,
                "message": "", "observedGeneration": pdb.metadata.generation.unwrap_or(1),
                "lastTransitionTime": now}],
        });
        Ok(())
    }
}

enum BudgetCheck {
    /// No budget covers the pod.
    Free,
    /// The covering budget (its stored revision guards the eviction) allows it.
    Allowed(Stored),
    /// Refused: the answer to send.
    Refused(Answer),
}

/// A `Status` of success.
fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

fn known_collection(seg: &[&str]) -> bool {
    seg.iter()
        .any(|s| ["nodes", "pods", "events", "poddisruptionbudgets"].contains(s))
}

fn selector_ok(labels: &[Requirement], fields: &[Requirement], object: &Value) -> bool {
    objects::selector_matches(labels, |k| objects::label_of(object, k))
        && objects::selector_matches(fields, |k| objects::field_of(object, k))
}

/// Marks a pod started by its (simulated) kubelet: Running and Ready on its node.
pub fn start_pod(pod: &mut Value, now: Timestamp) {
    let t = time_value(now);
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": t}))
        .collect();
    pod["status"] = json!({"phase": "Running", "conditions": conditions, "startTime": t});
}

/// Strategic merge patch for what the stand-in's objects need: JSON merge semantics, except
/// that lists of conditions, addresses and taints merge by their key (`type` / `key`), and
/// `$`-directives are dropped.
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
    fn uids_and_suffixes_have_kubernetes_shapes() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_eq!(name_suffix().len(), 5);
    }
}
