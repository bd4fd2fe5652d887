//! Two clusters on one proving ground and one hub: `east` and `west`, each 3 simulated
//! servers + 1 worker with its own etcd and Kubernetes API, the real agent on every node
//! (`cluster = "east"` / `"west"` in its config) and a real hub with both kubeconfigs
//! (`--cluster-kubeconfig`). A rotation plan in each runs at the same time; within each
//! cluster one node at a time, never two servers of a cluster down, every node operated
//! once, nothing left cordoned.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess;
use rke2ops_tests::plans::{endpoints, enroll_all_with, hub_address, kubeconfig, wait_state};
use rke2ops_tests::sim::cluster::{BootOptions, SimCluster};
use serde_json::Value;
use time::OffsetDateTime;

fn boot(prefix: &str) -> SimCluster {
    let cas = rke2ops_tests::sim::tree::ClusterCas::generate(
        OffsetDateTime::now_utc() - time::Duration::days(30),
    )
    .expect("CAs");
    SimCluster::boot_with_options(
        cas,
        3,
        1,
        &BootOptions::default().name_prefix(&format!("{prefix}-")),
        |_, setup| setup,
    )
    .expect("3+1 cluster")
}

/// `(node, started_at, finished_at)` of every node of a finished plan.
fn windows(view: &Value) -> Vec<(String, OffsetDateTime, OffsetDateTime)> {
    let at = |v: &Value| {
        OffsetDateTime::parse(
            v.as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                at(&n["started_at"]),
                at(&n["finished_at"]),
            )
        })
        .collect()
}

#[test]
fn plans_in_two_clusters_run_at_once_each_one_node_at_a_time() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let (east, west) = tokio::task::block_in_place(|| (boot("east"), boot("west")));
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            let mut args = Vec::new();
            for (name, cluster) in [("east", &east), ("west", &west)] {
                let dir = state.path().join(name);
                std::fs::create_dir_all(&dir).expect("dir");
                args.push("--cluster-kubeconfig".to_owned());
                args.push(format!("{name}={}", kubeconfig(cluster, &dir).display()));
                for url in endpoints(cluster).split(',') {
                    args.push("--cluster-apiserver-endpoint".to_owned());
                    args.push(format!("{name}={url}"));
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            HubProcess::start_in_ground_on(state.path(), &hub_addr.ip().to_string(), &args)
        });
        tokio::task::block_in_place(|| {
            enroll_all_with(&east, &hub, "cluster = \"east\"\n");
            enroll_all_with(&west, &hub, "cluster = \"west\"\n");
        });
        let clusters = tokio::task::block_in_place(|| hub.json(&["clusters"]));
        let listed = clusters["clusters"].as_array().expect("clusters");
        assert_eq!(listed.len(), 2, "{clusters:#}");
        assert!(
            listed
                .iter()
                .all(|c| c["servers"] == 3 && c["agents"] == 1 && c["kubernetes_access"] == true),
            "{clusters:#}"
        );
        // A short quiet spell: each cluster's gates see fresh reports from its own servers.
        tokio::time::sleep(Duration::from_secs(10)).await;

        let (a, b) = tokio::task::block_in_place(|| {
            (
                hub.json(&["rotate", "--cluster", "east", "--settle", "1s"]),
                hub.json(&["rotate", "--cluster", "west", "--settle", "1s"]),
            )
        });
        let (a, b) = (
            a["id"].as_str().expect("id").to_owned(),
            b["id"].as_str().expect("id").to_owned(),
        );
        let started = Instant::now();
        let (a, b) = tokio::task::block_in_place(|| {
            (
                wait_state(&hub, &a, "completed", Duration::from_secs(400)),
                wait_state(&hub, &b, "completed", Duration::from_secs(400)),
            )
        });
        eprintln!("both plans completed after {:?}", started.elapsed());
        for (name, view) in [("east", &a), ("west", &b)] {
            assert_eq!(view["cluster"], name);
            let w = windows(view);
            assert_eq!(w.len(), 4, "{view:#}");
            assert!(w.iter().all(|(n, _, _)| n.starts_with(&format!("{name}-"))));
            // One node at a time within the cluster: each starts after the previous ended.
            let mut sorted = w.clone();
            sorted.sort_by_key(|(_, s, _)| *s);
            for pair in sorted.windows(2) {
                assert!(pair[1].1 >= pair[0].2, "{name}: overlap {pair:?}");
            }
            assert!(
                view["nodes"]
                    .as_array()
                    .expect("nodes")
                    .iter()
                    .all(|n| n["phase"] == "done"
                        && n["attempt"] == 1
                        && n["cordoned_by_plan"] == false),
                "{view:#}"
            );
        }
        // The two clusters' plans overlapped in time.
        let span = |w: &[(String, OffsetDateTime, OffsetDateTime)]| {
            (
                w.iter().map(|(_, s, _)| *s).min().expect("start"),
                w.iter().map(|(_, _, e)| *e).max().expect("end"),
            )
        };
        let (ea, eb) = (span(&windows(&a)), span(&windows(&b)));
        assert!(ea.0 < eb.1 && eb.0 < ea.1, "not at once: {ea:?} {eb:?}");
        // Nothing left cordoned in either cluster.
        for cluster in [&east, &west] {
            let out = cluster.servers[0]
                .node
                .exec(&[
                    "/var/lib/rancher/rke2/bin/kubectl",
                    "--kubeconfig",
                    "/etc/rancher/rke2/rke2.yaml",
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={.items[*].spec.unschedulable}",
                ])
                .expect("kubectl");
            assert!(out.success(), "{}{}", out.stdout, out.stderr);
            assert!(!out.stdout.contains("true"), "cordoned: {}", out.stdout);
        }
    });
}
