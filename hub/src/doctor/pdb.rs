//! `pdb-blocks-drain`: PodDisruptionBudgets that can never allow a disruption, so a drain of
//! any node hosting one of their pods retries evictions until it times out.
//!
//! Pure: budgets and pods in, findings out. A budget blocks when `maxUnavailable` is 0 (or
//! `0%`), when `minAvailable` (a number, or a percentage of the matching pods rounded up as
//! the disruption controller does) is at least the number of matching pods, or when none of
//! its pods is healthy. A budget that matches no pod blocks nothing and is not reported.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rke2ops_common::doctor::{Code, Finding, Severity};

/// One finding per budget that can never allow a disruption, naming the nodes whose drain
/// it blocks (the finding's `node`: comma-separated).
#[must_use]
pub fn check(pdbs: &[PodDisruptionBudget], pods: &[Pod]) -> Vec<Finding> {
    pdbs.iter().filter_map(|pdb| blocking(pdb, pods)).collect()
}

fn blocking(pdb: &PodDisruptionBudget, pods: &[Pod]) -> Option<Finding> {
    let ns = pdb.metadata.namespace.as_deref().unwrap_or("default");
    let name = pdb.metadata.name.as_deref().unwrap_or_default();
    let spec = pdb.spec.as_ref()?;
    let matching: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|p| !finished(p))
        .filter(|p| {
            spec.selector
                .as_ref()
                .is_some_and(|s| selects(s, p.metadata.labels.as_ref()))
        })
        .collect();
    if matching.is_empty() {
        return None;
    }
    let total = matching.len();
    let healthy = matching.iter().filter(|p| ready(p)).count();
    let reason = if let Some(max) = &spec.max_unavailable {
        (scaled(max, total) == Some(0)).then(|| ("maxUnavailable", show(max)))
    } else if let Some(min) = &spec.min_available {
        scaled(min, total)
            .is_some_and(|need| need >= total)
            .then(|| ("minAvailable", show(min)))
    } else {
        None
    };
    let reason = reason.or_else(|| (healthy == 0).then(|| ("healthy pods", "0".to_owned())))?;
    let nodes: BTreeSet<&str> = matching
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
        .collect();
    let pod_names: Vec<String> = matching
        .iter()
        .map(|p| format!("{ns}/{}", p.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let nodes: Vec<&str> = nodes.into_iter().collect();
    Some(
        Finding::new(
            Code::PdbBlocksDrain,
            Severity::Blocker,
            nodes.join(","),
            format!("pdb {ns}/{name}"),
            format!(
                "kubectl -n {ns} get pdb {name} -o yaml; then raise maxUnavailable \
                 (kubectl -n {ns} patch pdb {name} --type merge -p \
                 '{{\"spec\":{{\"minAvailable\":null,\"maxUnavailable\":1}}}}') or scale the \
                 workload above its budget (kubectl -n {ns} scale <deployment|statefulset>/<name> \
                 --replicas={})",
                total + 1
            ),
        )
        .with(reason.0, reason.1)
        .with(
            "pods",
            format!(
                "{total} matching, {healthy} healthy: {}",
                pod_names.join(",")
            ),
        )
        .with("blocks-drain-of", nodes.join(",")),
    )
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// The absolute value of `v` for `total` pods (percentages rounded up, as the disruption
/// controller does); `None` for a malformed string.
fn scaled(v: &IntOrString, total: usize) -> Option<usize> {
    match v {
        IntOrString::Int(i) => Some(usize::try_from(*i).unwrap_or(0)),
        IntOrString::String(s) => {
            let pct: usize = s.trim().strip_suffix('%')?.trim().parse().ok()?;
            Some(pct.saturating_mul(total).div_ceil(100))
        }
    }
}

/// Pods that have ended are not counted by the disruption controller.
fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether `selector` selects a pod with `labels` (policy/v1: an empty selector selects
/// every pod of the namespace).
fn selects(
    selector: &LabelSelector,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    pub(crate) fn pod(ns: &str, name: &str, app: &str, node: &str, is_ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if is_ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    pub(crate) fn pdb(
        ns: &str,
        name: &str,
        app: &str,
        min: Option<IntOrString>,
        max: Option<IntOrString>,
    ) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_owned(), app.to_owned())].into()),
                    ..LabelSelector::default()
                }),
                min_available: min,
                max_unavailable: max,
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    }

    fn web_pods() -> Vec<Pod> {
        vec![
            pod("shop", "web-1", "web", "w1", true),
            pod("shop", "web-2", "web", "w2", true),
            pod("shop", "db-1", "db", "w3", true),
            pod("other", "web-x", "web", "w4", true),
        ]
    }

    #[test]
    fn max_unavailable_zero_blocks_the_nodes_hosting_its_pods() {
        let found = check(
            &[pdb("shop", "web", "web", None, Some(IntOrString::Int(0)))],
            &web_pods(),
        );
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.code, Code::PdbBlocksDrain);
        assert_eq!(f.severity, Severity::Blocker);
        assert_eq!(f.node, "w1,w2");
        assert_eq!(f.object, "pdb shop/web");
        assert_eq!(f.evidence[0].field, "maxUnavailable");
        assert_eq!(f.evidence[0].value, "0");
        assert!(f.evidence[1].value.contains("shop/web-1,shop/web-2"));
        assert!(f.fix.starts_with("kubectl -n shop get pdb web -o yaml"));
    }

    #[test]
    fn max_unavailable_zero_percent_blocks() {
        let found = check(
            &[pdb(
                "shop",
                "web",
                "web",
                None,
                Some(IntOrString::String("0%".into())),
            )],
            &web_pods(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].evidence[0].value, "0%");
    }

    #[test]
    fn max_unavailable_one_or_a_percentage_allows_a_disruption() {
        let pdbs = [
            pdb("shop", "a", "web", None, Some(IntOrString::Int(1))),
            pdb(
                "shop",
                "b",
                "web",
                None,
                Some(IntOrString::String("10%".into())),
            ),
        ];
        assert!(check(&pdbs, &web_pods()).is_empty());
    }

    #[test]
    fn min_available_equal_to_the_matching_pods_blocks() {
        let found = check(
            &[pdb("shop", "web", "web", Some(IntOrString::Int(2)), None)],
            &web_pods(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].evidence[0].field, "minAvailable");
    }

    #[test]
    fn min_available_hundred_percent_blocks_and_fifty_percent_does_not() {
        let blocks = pdb(
            "shop",
            "a",
            "web",
            Some(IntOrString::String("100%".into())),
            None,
        );
        let allows = pdb(
            "shop",
            "b",
            "web",
            Some(IntOrString::String("50%".into())),
            None,
        );
        let found = check(&[blocks, allows], &web_pods());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].object, "pdb shop/a");
    }

    #[test]
    fn min_available_below_the_matching_pods_allows_a_disruption() {
        let found = check(
            &[pdb("shop", "web", "web", Some(IntOrString::Int(1)), None)],
            &web_pods(),
        );
        assert!(found.is_empty());
    }

    #[test]
    fn no_healthy_pod_blocks_even_a_generous_budget() {
        let pods = vec![
            pod("shop", "web-1", "web", "w1", false),
            pod("shop", "web-2", "web", "w2", false),
        ];
        let found = check(
            &[pdb("shop", "web", "web", None, Some(IntOrString::Int(1)))],
            &pods,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].evidence[0].field, "healthy pods");
    }

    #[test]
    fn a_budget_matching_no_pod_blocks_nothing() {
        let found = check(
            &[pdb(
                "shop",
                "none",
                "nothing",
                None,
                Some(IntOrString::Int(0)),
            )],
            &web_pods(),
        );
        assert!(found.is_empty());
    }

    #[test]
    fn pods_of_other_namespaces_and_finished_pods_do_not_count() {
        let mut done = pod("shop", "web-3", "web", "w9", true);
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let mut pods = web_pods();
        pods.push(done);
        let found = check(
            &[pdb("shop", "web", "web", Some(IntOrString::Int(2)), None)],
            &pods,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].node, "w1,w2");
    }

    #[test]
    fn match_expressions_select_like_kubernetes() {
        let sel = LabelSelector {
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "app".into(),
                    operator: "In".into(),
                    values: Some(vec!["web".into(), "api".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
            ..LabelSelector::default()
        };
        let web: std::collections::BTreeMap<_, _> = [("app".to_owned(), "web".to_owned())].into();
        let canary: std::collections::BTreeMap<_, _> = [
            ("app".to_owned(), "web".to_owned()),
            ("canary".to_owned(), "1".to_owned()),
        ]
        .into();
        assert!(selects(&sel, Some(&web)));
        assert!(!selects(&sel, Some(&canary)));
        assert!(!selects(&sel, None));
        assert!(selects(&LabelSelector::default(), None));
    }
}
