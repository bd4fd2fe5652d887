//! The reads `rke2-hub doctor` needs ([`crate::doctor::ClusterFacts`]): every
//! PodDisruptionBudget and pod, and what is left of system-upgrade-controller (its CRD, its
//! Plans through the dynamic API, its Deployment). Reads only; failover as for every call.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::{KubeAccess, KubeError, api_error};
use crate::doctor::suc::{DEPLOYMENT, PLAN_CRD};
use crate::doctor::{ClusterFacts, SucFacts};

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
            self.endpoints
                .call(|c| {
                    let resource = resource.clone();
                    async move {
                        Api::<DynamicObject>::all_with(c, &resource)
                            .list(&ListParams::default())
                            .await
                    }
                })
                .await?
                .map_err(|e| api_error(&e))?
                .items
                .iter()
                .map(|p| key(p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
                .collect()
        } else {
            Vec::new()
        };
        let selector = format!("metadata.name={DEPLOYMENT}");
        let deployments = self
            .endpoints
            .call(|c| {
                let lp = ListParams::default().fields(&selector);
                async move { Api::<Deployment>::all(c).list(&lp).await }
            })
            .await?
            .map_err(|e| api_error(&e))?
            .items
            .iter()
            .map(|d| {
                d.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into())
            })
            .collect();
        Ok(ClusterFacts {
            pdbs,
            pods,
            suc: SucFacts {
                crd,
                plans,
                deployments,
            },
        })
    }
}
