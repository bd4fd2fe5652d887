//! The reads `rke2-hub doctor` needs ([`crate::doctor::ClusterFacts`]): every
//! PodDisruptionBudget and pod, and what is left of system-upgrade-controller (its CRD, its
//! Plans through the dynamic API, its Deployment). Reads only; failover as for every call.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::{KubeAccess, KubeError, api_error, status_code};
use crate::doctor::events::{self, CertEvent};
use crate::doctor::suc::{DEPLOYMENT, PLAN_CRD};
use crate::doctor::{ClusterFacts, SucFacts};

/// A list's items, or none when the API does not serve the resource at all (404: an API
/// without it holds none of it). Only system-upgrade-controller's reads use this, so an
/// API without Deployments (a stand-in) still gets its budgets checked.
fn served<T: Clone>(
    answer: Result<kube::core::ObjectList<T>, kube::Error>,
) -> Result<Vec<T>, KubeError> {
    match answer {
        Ok(list) => Ok(list.items),
        Err(e) if status_code(&e) == Some(404) => Ok(Vec::new()),
        Err(e) => Err(api_error(&e)),
    }
}

fn key(ns: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", ns.unwrap_or("default"), name.unwrap_or_default())
}

impl KubeAccess {
    /// Everything the fleet doctor reads from the cluster.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] or [`KubeError::Api`] (a Plan list refused while the CRD
    /// exists is an error too: the answer would be incomplete).
    pub async fn doctor_facts(&self) -> Result<ClusterFacts, KubeError> {
        let pdbs = self
            .endpoints
            .call(|c| async move {
                Api::<PodDisruptionBudget>::all(c)
                    .list(&ListParams::default())
                    .await
            })
            .await?
            .map_err(|e| api_error(&e))?
            .items;
        let pods = self
            .endpoints
            .call(|c| async move { Api::<Pod>::all(c).list(&ListParams::default()).await })
            .await?
            .map_err(|e| api_error(&e))?
            .items;
        let crd = self
            .endpoints
            .call(|c| async move {
                Api::<CustomResourceDefinition>::all(c)
                    .get_opt(PLAN_CRD)
                    .await
            })
            .await?
            .map_err(|e| api_error(&e))?
            .is_some();
        let plans = if crd {
            let gvk = GroupVersionKind::gvk("upgrade.cattle.io", "v1", "Plan");
            let resource = ApiResource::from_gvk_with_plural(&gvk, "plans");
            let answer = self
                .endpoints
                .call(|c| {
                    let resource = resource.clone();
                    async move {
                        Api::<DynamicObject>::all_with(c, &resource)
                            .list(&ListParams::default())
                            .await
                    }
                })
                .await?;
            served(answer)?
                .iter()
                .map(|p| key(p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
                .collect()
        } else {
            Vec::new()
        };
        let selector = format!("metadata.name={DEPLOYMENT}");
        let answer = self
            .endpoints
            .call(|c| {
                let lp = ListParams::default().fields(&selector);
                async move { Api::<Deployment>::all(c).list(&lp).await }
            })
            .await?;
        let deployments = served(answer)?
            .iter()
            .map(|d| {
                d.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into())
            })
            .collect();
        let answer = self
            .endpoints
            .call(|c| async move {
                let lp = ListParams::default().fields("involvedObject.kind=Node");
                Api::<Event>::namespaced(c, CERT_EVENT_NAMESPACE)
                    .list(&lp)
                    .await
            })
            .await?;
        let cert_events = served(answer)?.iter().filter_map(cert_event).collect();
        Ok(ClusterFacts {
            pdbs,
            pods,
            suc: SucFacts {
                crd,
                plans,
                deployments,
            },
            cert_events,
        })
    }
}

/// Where RKE2's certificate monitor records its events (its recorder's namespace).
const CERT_EVENT_NAMESPACE: &str = "default";

/// A certificate-monitor event on a Node, when `e` is one (by its reason).
fn cert_event(e: &Event) -> Option<CertEvent> {
    let reason = e.reason.as_deref()?;
    if ![events::LEAF_WARNING, events::CA_WARNING, events::OK].contains(&reason) {
        return None;
    }
    let last_seen = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let last_seen = time::OffsetDateTime::from_unix_timestamp(last_seen.as_second()).ok()?;
    Some(CertEvent {
        node: e.involved_object.name.clone()?,
        reason: reason.to_owned(),
        message: e.message.clone().unwrap_or_default(),
        last_seen,
    })
}
