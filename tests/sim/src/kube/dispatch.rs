//! Request dispatch: which route a request takes (discovery, OpenAPI, watches, or a
//! resource's verbs in [`super::handlers`]), which resource a path names (built-in or from a
//! stored CustomResourceDefinition), and the derived collections (bootstrap namespaces,
//! DaemonSets).

use hyper::StatusCode;
use serde_json::{Value, json};

use super::crd::{self, CrdVersion};
use super::handlers::{
    Answer, KubeApi, bad_request, new_uid, query_param, selector_ok, selectors, store_error,
    time_value,
};
use super::objects::{
    self, CRDS, DEPLOYMENTS, NAMESPACES, NODES, PDBS, PODS, REPLACEMENTS, Resource,
};
use super::route::{self, ResourcePath, Route};
use super::store::StoreError;
use super::table::{self, Printer};
use super::{discovery, openapi, watch};
use crate::server::listen::{Reply, RequestInfo, reply};

/// A resource as a request reaches it: what it is, how its rows print, whether `/status` is
/// a separate subresource.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) resource: Resource,
    pub(super) printer: Printer,
    pub(super) status_subresource: bool,
}

impl KubeApi {
    /// Answers a request under `/api` or `/apis`; `None` for paths it does not serve (the
    /// listener answers those with kube-apiserver's 404).
    pub async fn handle(&self, req: &RequestInfo) -> Option<Reply> {
        if req.method == "GET" && req.path.trim_end_matches('/') == "/openapi/v2" {
            let (content_type, body) = openapi::v2(&req.accept);
            return Some(reply(StatusCode::OK, content_type, body));
        }
        if req.method == "GET" && watch::is_watch(&req.query) {
            match self.watch(req).await {
                Some(Ok(events)) => return Some(reply(StatusCode::OK, "application/json", events)),
                Some(Err((code, body))) => {
                    return Some(reply(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        "application/json",
                        serde_json::to_vec(&body).unwrap_or_default(),
                    ));
                }
                None => {}
            }
        }
        let (code, body) = self.answer(req).await?;
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Some(reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "application/json",
            body,
        ))
    }

    async fn answer(&self, req: &RequestInfo) -> Option<Answer> {
        if let Some(rest) = req.path.strip_prefix("/openapi/v3") {
            return self.openapi_v3(rest.trim_matches('/')).await;
        }
        let path = match route::parse(&req.path)? {
            Route::Api => return Some((200, discovery::api_versions())),
            Route::Apis => {
                return Some(match self.crd_versions().await {
                    Ok(crds) => (200, discovery::api_group_list(&crds)),
                    Err(e) => store_error(&e),
                });
            }
            Route::Group(group) => {
                return match self.crd_versions().await {
                    Ok(crds) => discovery::api_group(&crds, &group).map(|g| (200, g)),
                    Err(e) => Some(store_error(&e)),
                };
            }
            Route::GroupVersion(group, version) => {
                return match self.crd_versions().await {
                    Ok(crds) => discovery::resource_list(&crds, &group, &version).map(|l| (200, l)),
                    Err(e) => Some(store_error(&e)),
                };
            }
            Route::Resource(path) => path,
        };
        let served = match self.resolve(&path).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => return Some(store_error(&e)),
        };
        let res = &served.resource;
        // A namespaced resource's objects are only reachable (and creatable) through their
        // namespace, a cluster-scoped one's never through one; the all-namespaces
        // collection is for reading.
        let all_namespaces = res.namespaced && path.namespace.is_none();
        if all_namespaces && (path.name.is_some() || req.method != "GET")
            || !res.namespaced && path.namespace.is_some()
        {
            return None;
        }
        if *res == NAMESPACES
            && let Err(e) = self.ensure_namespaces().await
        {
            return Some(store_error(&e));
        }
        let ns = path.namespace.as_deref();
        let m = req.method.as_str();
        let table = table::wants_table(&req.accept);
        Some(
            match (m, path.name.as_deref(), path.subresource.as_deref()) {
                // Watches of served collections were answered above; DaemonSets and Deployments
                // are derived.
                ("GET", None, None) if watch::is_watch(&req.query) => (
                    405,
                    objects::status(
                        405,
                        "MethodNotAllowed",
                        "watch is not supported on this resource by the simulated apiserver",
                        None,
                    ),
                ),
                ("GET", name, None) if objects::derived(res) => {
                    self.derived(res, ns, name, req).await
                }
                ("GET", None, None) => self.list(&served, ns, req, table).await,
                ("POST", None, None) if !objects::derived(res) => self.create(res, ns, req).await,
                ("GET", Some(name), None | Some("status")) => {
                    self.get(&served, ns, name, req, table).await
                }
                ("PATCH", Some(name), None) if !objects::derived(res) => {
                    self.patch(&served, ns, name, false, req).await
                }
                ("PATCH", Some(name), Some("status")) if served.status_subresource => {
                    self.patch(&served, ns, name, true, req).await
                }
                ("PUT", Some(name), None) if !objects::derived(res) => {
                    self.replace(&served, ns, name, false, req).await
                }
                ("PUT", Some(name), Some("status")) if served.status_subresource => {
                    self.replace(&served, ns, name, true, req).await
                }
                ("DELETE", Some(name), None) if *res == PODS => {
                    self.delete_pod(ns.unwrap_or_default(), name, req, false)
                        .await
                }
                ("POST", Some(name), Some("eviction")) if *res == PODS => {
                    self.delete_pod(ns.unwrap_or_default(), name, req, true)
                        .await
                }
                ("DELETE", Some(name), None) if !objects::derived(res) => {
                    self.remove(res, ns, name).await
                }
                _ => (
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
            },
        )
    }

    /// `/openapi/v3` (`rest` empty) or one group version's document (see [`openapi`]).
    async fn openapi_v3(&self, rest: &str) -> Option<Answer> {
        let crds = match self.crd_versions().await {
            Ok(c) => c,
            Err(e) => return Some(store_error(&e)),
        };
        let mut gvs = vec!["v1".to_owned()];
        for g in discovery::api_group_list(&crds)["groups"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for v in g["versions"].as_array().into_iter().flatten() {
                if let Some(gv) = v["groupVersion"].as_str() {
                    gvs.push(gv.to_owned());
                }
            }
        }
        if rest.is_empty() {
            return Some((200, openapi::index(&gvs)));
        }
        let gv = gvs.iter().find(|gv| openapi::api_path(gv) == rest)?;
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        let list = discovery::resource_list(&crds, group, version)?;
        Some((200, openapi::group_version_doc(&list)))
    }

    /// A watch of a collection (see [`watch`]): `None` when the path is not a served
    /// collection (then the ordinary routes answer), else the event stream or an error.
    async fn watch(&self, req: &RequestInfo) -> Option<Result<Vec<u8>, Answer>> {
        let Some(Route::Resource(path)) = route::parse(&req.path) else {
            return None;
        };
        if path.name.is_some() {
            return None;
        }
        let served = match self.resolve(&path).await {
            Ok(Some(s)) if !objects::derived(&s.resource) => s,
            Ok(_) => return None,
            Err(e) => return Some(Err(store_error(&e))),
        };
        if !served.resource.namespaced && path.namespace.is_some() {
            return None;
        }
        Some(
            self.watch_events(&served, path.namespace.as_deref(), req)
                .await,
        )
    }

    async fn watch_events(
        &self,
        served: &Served,
        ns: Option<&str>,
        req: &RequestInfo,
    ) -> Result<Vec<u8>, Answer> {
        let res = &served.resource;
        let labels = query_param(&req.query, "labelSelector").unwrap_or_default();
        let fields = query_param(&req.query, "fieldSelector").unwrap_or_default();
        let (Some(labels), Some(fields)) = (
            objects::parse_selector(&labels),
            objects::parse_selector(&fields),
        ) else {
            return Err(bad_request("unable to parse selector"));
        };
        objects::check_fields(&res.kind, &fields).map_err(|e| bad_request(&e.to_string()))?;
        let matches = |o: &Value| selector_ok(&res.kind, &labels, &fields, o);
        let prefix = res.prefix(ns);
        let since = query_param(&req.query, "resourceVersion")
            .and_then(|rv| rv.parse::<i64>().ok())
            .filter(|rv| *rv > 0);
        let mut events: Vec<(&str, Value)> = Vec::new();
        let mut after = since.unwrap_or_default();
        if since.is_none() {
            // No version: the current state first, as ADDED events.
            let (items, revision) = self
                .store
                .list(&prefix)
                .await
                .map_err(|e| store_error(&e))?;
            after = revision;
            events.extend(
                items
                    .into_iter()
                    .filter(|s| matches(&s.object))
                    .map(|s| ("ADDED", s.object)),
            );
        }
        if events.is_empty() {
            let wait = watch::wait_for(query_param(&req.query, "timeoutSeconds").as_deref());
            let changes = self
                .store
                .changes(&prefix, after, wait)
                .await
                .map_err(|e| store_error(&e))?;
            for c in changes {
                let old = c.previous.as_ref().is_some_and(&matches);
                if let Some(t) = watch::event_type(c.deleted, c.created, old, matches(&c.object)) {
                    events.push((t, c.object));
                }
            }
        }
        if *res == PDBS {
            for (_, pdb) in &mut events {
                self.fill_pdb_status(pdb)
                    .await
                    .map_err(|e| store_error(&e))?;
            }
        }
        if table::wants_table(&req.accept) {
            let include =
                table::IncludeObject::parse(query_param(&req.query, "includeObject").as_deref());
            let now = super::now();
            for (_, object) in &mut events {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned);
                *object = table::table(
                    &served.printer,
                    std::slice::from_ref(object),
                    rv.as_deref(),
                    include,
                    now,
                );
            }
        }
        Ok(watch::encode(&events))
    }

    /// Every served version of every stored CustomResourceDefinition.
    async fn crd_versions(&self) -> Result<Vec<CrdVersion>, StoreError> {
        let (crds, _) = self.store.list(&CRDS.registry).await?;
        Ok(crds
            .iter()
            .flat_map(|s| crd::served_versions(&s.object))
            .collect())
    }

    /// The built-in or custom resource a path names (`None`: not served, a 404).
    async fn resolve(&self, path: &ResourcePath) -> Result<Option<Served>, StoreError> {
        if let Some(resource) = Resource::builtin(&path.group, &path.version, &path.plural) {
            let status_subresource = [NODES, PODS, PDBS, NAMESPACES, CRDS].contains(&resource);
            return Ok(Some(Served {
                printer: Printer::Builtin(resource.kind.to_string()),
                resource,
                status_subresource,
            }));
        }
        Ok(self
            .crd_versions()
            .await?
            .into_iter()
            .find(|c| c.group == path.group && c.version == path.version && c.plural == path.plural)
            .map(|c| Served {
                resource: c.resource(),
                printer: Printer::Custom(c.columns.clone()),
                status_subresource: c.status_subresource,
            }))
    }

    /// Creates the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) if missing, as kube-apiserver's bootstrap controller does.
    async fn ensure_namespaces(&self) -> Result<(), StoreError> {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let key = NAMESPACES.key(None, name);
            if self.store.get(&key).await?.is_some() {
                continue;
            }
            let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": new_uid(), "creationTimestamp": time_value(super::now()),
                    "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            match self.store.create(&key, &ns).await {
                Ok(_) | Err(StoreError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// DaemonSets or Deployments as derived from the pods (see [`objects::DAEMONSETS`],
    /// [`objects::DEPLOYMENTS`]): one by name, or the list.
    async fn derived(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: Option<&str>,
        req: &RequestInfo,
    ) -> Answer {
        let (labels, fields) = match selectors(res, req) {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        let (pods, revision) = match self.store.list(&PODS.prefix(ns)).await {
            Ok(x) => x,
            Err(e) => return store_error(&e),
        };
        let pods: Vec<Value> = pods.into_iter().map(|s| s.object).collect();
        let objects = if *res == DEPLOYMENTS {
            let prefix = format!(
                "{REPLACEMENTS}{}",
                ns.map(|n| format!("{n}/")).unwrap_or_default()
            );
            let owed = match self.store.list(&prefix).await {
                Ok((records, _)) => records
                    .into_iter()
                    .map(|s| s.object["pod"].clone())
                    .collect::<Vec<_>>(),
                Err(e) => return store_error(&e),
            };
            objects::deployments_of(&pods, &owed)
        } else {
            objects::daemonsets_of(&pods)
        };
        match name {
            Some(name) => objects
                .into_iter()
                .find(|d| d["metadata"]["name"] == name)
                .map_or_else(|| (404, objects::not_found(res, name)), |d| (200, d)),
            None => (
                200,
                json!({"kind": format!("{}List", res.kind), "apiVersion": "apps/v1",
                    "metadata": {"resourceVersion": revision.to_string()},
                    "items": objects.into_iter()
                        .filter(|o| selector_ok(&res.kind, &labels, &fields, o))
                        .collect::<Vec<_>>()}),
            ),
        }
    }
}
