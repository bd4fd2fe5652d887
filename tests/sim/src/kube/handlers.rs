//! The verbs of the stand-in's resources (list, get, create, patch, replace, delete, pod
//! deletion and eviction against PodDisruptionBudgets), with kube-apiserver's status codes,
//! `Status` bodies and server-side `Table`s; [`super::dispatch`] routes requests here.
//! Storage is [`Store`] (etcd); the pure rules are in [`super::objects`], [`super::table`],
//! [`super::patch`], [`super::body`] and [`super::crd`].

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde_json::{Value, json};

use super::Settings;
use super::body::{decode_body, patched, validate_body};
use super::crd;
use super::dispatch::Served;
use super::objects::{
    self, CRDS, NAMESPACES, NODES, PDBS, PODS, REPLACEMENTS, Requirement, Resource, budget,
};
use super::patch;
use super::store::{Store, StoreError, Stored, encode};
use super::table;
use crate::server::listen::RequestInfo;

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

pub(super) fn store_error(e: &StoreError) -> Answer {
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

pub(super) fn bad_request(message: &str) -> Answer {
    (400, objects::status(400, "BadRequest", message, None))
}

pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
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
    /// Whether each Node is Ready, by name.
    pub async fn node_readiness(&self) -> Result<HashMap<String, bool>, StoreError> {
        let (nodes, _) = self.store.list(&NODES.registry).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|s| serde_json::from_value::<Node>(s.object).ok())
            .filter_map(|n| {
                let ready = objects::node_ready(&n);
                n.metadata.name.map(|name| (name, ready))
            })
            .collect())
    }

    pub(super) async fn list(
        &self,
        served: &Served,
        ns: Option<&str>,
        req: &RequestInfo,
        table: bool,
    ) -> Answer {
        let res = &served.resource;
        let (labels, fields) = match selectors(res, req) {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        let (items, revision) = match self.store.list(&res.prefix(ns)).await {
            Ok(x) => x,
            Err(e) => return store_error(&e),
        };
        let mut out = Vec::new();
        for Stored { object, .. } in items {
            if selector_ok(&res.kind, &labels, &fields, &object) {
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
        let revision = revision.to_string();
        if table {
            let include =
                table::IncludeObject::parse(query_param(&req.query, "includeObject").as_deref());
            return (
                200,
                table::table(
                    &served.printer,
                    &out,
                    Some(&revision),
                    include,
                    super::now(),
                ),
            );
        }
        (
            200,
            json!({
                "kind": res.list_kind(),
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": revision},
                "items": out,
            }),
        )
    }

    pub(super) async fn get(
        &self,
        served: &Served,
        ns: Option<&str>,
        name: &str,
        req: &RequestInfo,
        table: bool,
    ) -> Answer {
        let res = &served.resource;
        match self.store.get(&res.key(ns, name)).await {
            Ok(Some(Stored { mut object, .. })) => {
                if *res == PDBS
                    && let Err(e) = self.fill_pdb_status(&mut object).await
                {
                    return store_error(&e);
                }
                if table {
                    let include = table::IncludeObject::parse(
                        query_param(&req.query, "includeObject").as_deref(),
                    );
                    let rv = object["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned);
                    return (
                        200,
                        table::table(
                            &served.printer,
                            &[object],
                            rv.as_deref(),
                            include,
                            super::now(),
                        ),
                    );
                }
                (200, object)
            }
            Ok(None) => (404, objects::not_found(res, name)),
            Err(e) => store_error(&e),
        }
    }

    pub(super) async fn create(
        &self,
        res: &Resource,
        ns: Option<&str>,
        req: &RequestInfo,
    ) -> Answer {
        let mut object = match decode_body(&req.content_type, &req.body) {
            Ok(o) => o,
            Err(answer) => return answer,
        };
        if let Err(e) = validate_body(res, &object) {
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
        if *res == PDBS || *res == CRDS || !objects::BUILTIN.contains(res) {
            meta["generation"] = json!(1);
        }
        if *res == PDBS {
            object["status"] = Value::Null;
        }
        if *res == NAMESPACES {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if *res == CRDS {
            object["status"] = crd::established_status(&object, &time_value(now));
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
                .pick_node(None, &[], &pod["spec"]["nodeSelector"])
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

    /// A Ready, schedulable node for a pod (fewest pods first) whose labels match the pod's
    /// `node_selector` (its `spec.nodeSelector`; null for none), avoiding `avoid` when
    /// another exists. `None` when no node fits: the pod stays Pending.
    pub async fn pick_node(
        &self,
        avoid: Option<&str>,
        same_owner: &[String],
        node_selector: &Value,
    ) -> Result<Option<String>, StoreError> {
        let (nodes, _) = self.store.list(&NODES.registry).await?;
        let (pods, _) = self.store.list(&PODS.registry).await?;
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
            let fits = node_selector.as_object().is_none_or(|wanted| {
                wanted.iter().all(|(k, v)| {
                    node.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(k))
                        .is_some_and(|have| v.as_str() == Some(have.as_str()))
                })
            });
            if objects::node_ready(&node)
                && schedulable
                && fits
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

    pub(super) async fn patch(
        &self,
        served: &Served,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        req: &RequestInfo,
    ) -> Answer {
        let res = &served.resource;
        let key = res.key(ns, name);
        for _ in 0..8 {
            let stored = match self.store.get(&key).await {
                Ok(Some(s)) => s,
                Ok(None) if !status_only && req.content_type.starts_with(patch::APPLY_PATCH) => {
                    // Server-side apply of a new object creates it.
                    let mut create = req.clone();
                    create.content_type = "application/yaml".to_owned();
                    return self.create(res, ns, &create).await;
                }
                Ok(None) => return (404, objects::not_found(res, name)),
                Err(e) => return store_error(&e),
            };
            let mut next = match patch::apply(&req.content_type, &stored.object, &req.body) {
                Ok(next) => next,
                Err(e) => {
                    let (code, reason) = e.code_and_reason();
                    return (code, objects::status(code, reason, &e.to_string(), None));
                }
            };
            if let Some(rv) = next
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && rv != stored.revision.to_string()
            {
                return store_error(&StoreError::Conflict);
            }
            let result = patched(
                &stored.object,
                &mut next,
                status_only,
                served.status_subresource,
            );
            if *res == NODES && serde_json::from_value::<Node>(result.clone()).is_err() {
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

    /// PUT: the whole object replaced (`kubectl replace`, clients' `replace_*`), with the
    /// same rules as a patch for status and server-owned fields; its `resourceVersion`, when
    /// set, must be current (409 otherwise).
    pub(super) async fn replace(
        &self,
        served: &Served,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        req: &RequestInfo,
    ) -> Answer {
        let res = &served.resource;
        let mut body = match decode_body(&req.content_type, &req.body) {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        if let Err(e) = validate_body(res, &body) {
            return bad_request(&format!("invalid {}: {e}", res.kind));
        }
        if body["metadata"]["name"].as_str() != Some(name) {
            return bad_request("the name of the object does not match the name on the URL");
        }
        let key = res.key(ns, name);
        let stored = match self.store.get(&key).await {
            Ok(Some(s)) => s,
            Ok(None) => return (404, objects::not_found(res, name)),
            Err(e) => return store_error(&e),
        };
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && rv != stored.revision.to_string()
        {
            return store_error(&StoreError::Conflict);
        }
        let result = patched(
            &stored.object,
            &mut body,
            status_only,
            served.status_subresource,
        );
        match self.store.update(&key, &result, stored.revision).await {
            Ok(rev) => (200, with_revision(result, rev)),
            Err(e) => store_error(&e),
        }
    }

    pub(super) async fn remove(&self, res: &Resource, ns: Option<&str>, name: &str) -> Answer {
        let key = res.key(ns, name);
        for _ in 0..8 {
            let stored = match self.store.get(&key).await {
                Ok(Some(s)) => s,
                Ok(None) => return (404, objects::not_found(res, name)),
                Err(e) => return store_error(&e),
            };
            let mut ops = vec![TxnOp::delete(key.as_str(), None)];
            if *res == CRDS {
                // The CRD's objects go with it (real: the CRD finalizer deletes them first).
                for v in crd::served_versions(&stored.object) {
                    ops.push(TxnOp::delete(
                        v.resource().registry.as_bytes(),
                        Some(DeleteOptions::new().with_prefix()),
                    ));
                }
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    stored.revision,
                )])
                .and_then(ops);
            match self.store.txn(txn).await {
                Ok((true, _)) => {
                    return (
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "details": {"name": name, "group": res.group(),
                            "kind": res.plural, "uid": stored.object["metadata"]["uid"]}}),
                    );
                }
                Ok((false, _)) => {}
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
    pub(super) async fn delete_pod(
        &self,
        ns: &str,
        name: &str,
        req: &RequestInfo,
        evict: bool,
    ) -> Answer {
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
    pub(super) async fn fill_pdb_status(&self, object: &mut Value) -> Result<(), StoreError> {
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

/// A list request's `labelSelector` and `fieldSelector`, parsed; a 400 naming the bad one
/// (or the field `res` does not index), as kube-apiserver answers.
pub(super) fn selectors(
    res: &Resource,
    req: &RequestInfo,
) -> Result<(Vec<Requirement>, Vec<Requirement>), Answer> {
    let labels = query_param(&req.query, "labelSelector").unwrap_or_default();
    let fields = query_param(&req.query, "fieldSelector").unwrap_or_default();
    let Some(labels) = objects::parse_selector(&labels) else {
        return Err(bad_request(&format!(
            "unable to parse requirement: invalid label selector {labels:?}"
        )));
    };
    let Some(fields) = objects::parse_selector(&fields) else {
        return Err(bad_request(&format!("invalid field selector {fields:?}")));
    };
    objects::check_fields(&res.kind, &fields).map_err(|e| bad_request(&e.to_string()))?;
    Ok((labels, fields))
}

pub(super) fn selector_ok(
    kind: &str,
    labels: &[Requirement],
    fields: &[Requirement],
    object: &Value,
) -> bool {
    objects::selector_matches(labels, |k| objects::label_of(object, k))
        && objects::selector_matches(fields, |k| objects::field_of(object, kind, k).ok())
}

/// Marks a pod started by its (simulated) kubelet: Running and Ready on its node, every
/// container running and ready (kubectl's READY column counts them).
pub fn start_pod(pod: &mut Value, now: Timestamp) {
    let t = time_value(now);
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": t}))
        .collect();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"].as_str().unwrap_or_default(),
                "imageID": "", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": t}}})
        })
        .collect();
    pod["status"] = json!({"phase": "Running", "conditions": conditions, "startTime": t,
        "containerStatuses": containers});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_suffixes_have_kubernetes_shapes() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_eq!(name_suffix().len(), 5);
    }
}
