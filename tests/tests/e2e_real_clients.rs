//! The manual runbook (`docs/runbook.md`), run verbatim with the real clients inside a
//! simulated server, before and after the hub rotates and upgrades the cluster: the machine's
//! `kubectl` (through RKE2's `/var/lib/rancher/rke2/bin/kubectl` and the node's own
//! `rke2.yaml`, `https://127.0.0.1:6443`), Debian's `etcdctl` against
//! `https://127.0.0.1:2379`, and `rke2 certificate check`. Output is checked, not just exit
//! codes: versions, Ready, counts, members. (The Python `kubernetes` client, listing nodes and
//! evicting a pod, is in `sim_kubectl`.)
//!
//! Needs root, `kubectl`, `etcdctl` (scripts/install-test-deps.sh) and
//! `cargo build --workspace --bins` first.

use std::path::Path;
use std::time::Duration;

use rke2ops_tests::ground::{Node, require_root_and_tools};
use rke2ops_tests::hub::{AGENT_BIN, HubProcess as Hub, doctor_fix};
use rke2ops_tests::plans::{
    enroll_all, hub_address, mirror, start_hub, wait_nodes_ready, wait_state, wait_until,
    web_workload,
};
use rke2ops_tests::runbook::{self, ok, run};
use rke2ops_tests::sim::clients::{install_runbook_files, require_clients};
use rke2ops_tests::sim::cluster::{self, NodeSetup, SimCluster};
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION};
use rke2ops_tests::sim::tree::{Role, Validity};
use tokio::task::block_in_place;

/// The rows of a kubectl/tabwriter table, split on whitespace, header dropped.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// Section 1 of the runbook on `server`: every check a person makes before and after
/// maintenance, with `version` the release every node must run.
fn look_at_the_cluster(cluster: &SimCluster, version: &str) {
    let server = &cluster.servers[0].node;
    let commands = runbook::section(1);
    let command = |prefix: &str| {
        *commands
            .iter()
            .find(|c| c.starts_with(prefix) || c.ends_with(prefix))
            .unwrap_or_else(|| panic!("the runbook has `{prefix}`"))
    };

    // kubectl get nodes -o wide: every node, Ready, the version, its own address. (Kubelets
    // report a restart's version with their next status update: wait for it, as a person
    // would run the command again.)
    let mut nodes = String::new();
    wait_until(
        &format!("every node Ready at {version}"),
        Duration::from_secs(60),
        || {
            nodes = ok(server, command("kubectl get nodes -o wide"));
            let table = rows(&nodes);
            table.len() == cluster.nodes().count()
                && table.iter().all(|r| r[1] == "Ready" && r[4] == version)
        },
    );
    let header = nodes.lines().next().unwrap_or_default();
    for column in ["STATUS", "ROLES", "VERSION", "INTERNAL-IP", "OS-IMAGE"] {
        assert!(header.contains(column), "{column} in {header:?}");
    }
    let table = rows(&nodes);
    assert_eq!(table.len(), cluster.nodes().count(), "{nodes}");
    for sim in cluster.nodes() {
        let row = table
            .iter()
            .find(|r| r[0] == sim.node.name())
            .unwrap_or_else(|| panic!("{} listed:\n{nodes}", sim.node.name()));
        assert_eq!(row[1], "Ready", "{nodes}");
        let roles = if sim.role == Role::Server {
            "control-plane,etcd,master"
        } else {
            "<none>"
        };
        assert_eq!(row[2], roles, "{nodes}");
        assert_eq!(row[4], version, "{nodes}");
        assert_eq!(row[5], sim.node.ip().to_string(), "{nodes}");
    }

    // kubectl get pods -n kube-system: the system pods of every node, all running.
    let pods = ok(server, command("kubectl get pods -n kube-system"));
    let table = rows(&pods);
    assert!(table.len() >= cluster.nodes().count(), "{pods}");
    for row in &table {
        assert_eq!((row[1], row[2]), ("1/1", "Running"), "{pods}");
    }
    for sim in cluster.nodes() {
        assert!(
            table
                .iter()
                .any(|r| r[0] == format!("kube-proxy-{}", sim.node.name())),
            "kube-proxy of {}:\n{pods}",
            sim.node.name()
        );
    }

    let readyz = ok(server, command("kubectl get --raw='/readyz?verbose'"));
    assert!(readyz.contains("[+]etcd ok"), "{readyz}");
    assert!(
        readyz.trim_end().ends_with("readyz check passed"),
        "{readyz}"
    );

    let pdbs = ok(server, command("kubectl get pdb -A"));
    let table = rows(&pdbs);
    assert!(
        table.iter().any(|r| r[0] == "default" && r[1] == "web-pdb"),
        "{pdbs}"
    );

    // etcdctl: three members, all started; every endpoint healthy.
    let members = ok(server, command("member list"));
    let started: Vec<&str> = members
        .lines()
        .filter(|l| l.contains(", started,"))
        .collect();
    assert_eq!(started.len(), 3, "{members}");
    for sim in &cluster.servers {
        assert!(
            members.contains(&format!("https://{}:2380", sim.node.ip())),
            "{} in\n{members}",
            sim.node.name()
        );
    }
    let health = run(server, command("endpoint health"));
    assert!(health.success(), "{}{}", health.stdout, health.stderr);
    assert!(
        format!("{}{}", health.stdout, health.stderr).contains("https://127.0.0.1:2379 is healthy"),
        "{}{}",
        health.stdout,
        health.stderr
    );
}

/// `rke2 certificate check --output table` on `node`: the rows whose status is not OK.
fn certificates_needing_attention(node: &Node) -> Vec<String> {
    let table = ok(node, "rke2 certificate check --output table");
    assert!(table.lines().count() > 10, "{table}");
    // Below the header and its underline (`FILENAME ...`, `-------- ...`).
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("FILENAME") && !l.starts_with("--------"))
        .filter(|l| !l.trim_end().ends_with("OK"))
        .map(str::to_owned)
        .collect()
}

/// `rke2-hub doctor --output json` (exit 1 and 2 are reports too).
fn hub_doctor(hub: &Hub) -> serde_json::Value {
    let out = hub.run(&["doctor", "--output", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rke2-hub doctor ({}): {e}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `rke2-node-agent doctor --output json` on `node` (the agent's own config): its exit code
/// and its findings' `(code, severity, object)`, all of it printed for a failing assertion.
fn doctor(node: &Node, extra: &[&str]) -> (i32, Vec<(String, String, String)>, String) {
    let mut argv = vec![AGENT_BIN, "doctor", "--output", "json"];
    argv.extend_from_slice(extra);
    let out = node.exec(&argv).expect("doctor runs");
    let code = out.status.code().unwrap_or(-1);
    let report = format!("{}: exit {code}\n{}{}", node.name(), out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor's JSON ({e}):\n{report}"));
    let findings = json["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("findings:\n{report}"))
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (field("code"), field("severity"), field("object"))
        })
        .collect();
    (code, findings, report)
}

#[test]
fn the_runbook_runs_verbatim_with_real_clients_before_and_after_a_rotation_and_an_upgrade() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        require_clients();
        assert!(
            Path::new("/usr/bin/etcdctl").exists(),
            "etcdctl is missing: run scripts/install-test-deps.sh"
        );
        let cluster = block_in_place(|| {
            let cluster = SimCluster::boot(3, 2).expect("3+2 cluster");
            // The older release everywhere, and RKE2's certificate monitor every 2 s.
            for sim in cluster.nodes() {
                release::install_rke2(&sim.node, OLD_VERSION).expect("install old");
                cluster::set_env(
                    &sim.node,
                    sim.role,
                    &[("RKE2_SIM_CERT_MONITOR_INTERVAL", "2")],
                )
                .expect("monitor interval");
                sim.node
                    .systemctl(&["restart", sim.unit()])
                    .expect("restart");
                sim.node
                    .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(60))
                    .expect("active");
            }
            // server-1 has run for ~9 months: its apiserver leaf is inside the renewal window.
            let aged = NodeSetup::new(Role::Server, None).with_validity(
                "server/tls/serving-kube-apiserver.crt",
                Validity::ExpiresIn(Duration::from_secs(40 * 86_400)),
            );
            cluster::write_node(&cluster.servers[0].node, &aged, &cluster.cas)
                .expect("age server-1");
            cluster
        });
        let server = &cluster.servers[0].node;
        let client = rke2ops_tests::plans::kube_client(&cluster).await;
        wait_nodes_ready(&client, 5, Duration::from_secs(60)).await;
        // A workload on the workers with a budget, as the drains below must respect.
        web_workload(&client).await;

        block_in_place(|| {
            look_at_the_cluster(&cluster, OLD_VERSION);
            // RKE2's certificate monitor warned about server-1, and the check shows why.
            let warnings = runbook::section(1)
                .into_iter()
                .find(|c| c.contains("reason=CertificateExpirationWarning"))
                .expect("the runbook lists the warnings");
            wait_until(
                "a CertificateExpirationWarning on server-1",
                Duration::from_secs(30),
                || {
                    let out = run(server, warnings).stdout;
                    out.lines().any(|l| {
                        l.contains("Warning")
                            && l.contains("CertificateExpirationWarning")
                            && l.contains("node/server-1")
                    })
                },
            );
            let attention = certificates_needing_attention(server);
            assert!(
                attention
                    .iter()
                    .any(|l| l.contains("serving-kube-apiserver.crt") && l.contains("WARNING")),
                "{attention:#?}"
            );

            // Section 2 on a worker, verbatim: drained (its pod evicted within the budget),
            // then back.
            let worker = "agent-1";
            let [drain, uncordon] =
                <[&str; 2]>::try_from(runbook::section(2)).expect("drain and uncordon");
            let out = ok(server, &drain.replace("<worker>", worker));
            assert!(out.contains("evicting pod default/web-a"), "{out}");
            assert!(out.contains(&format!("node/{worker} drained")), "{out}");
            let out = ok(server, &uncordon.replace("<worker>", worker));
            assert!(out.contains(&format!("node/{worker} uncordoned")), "{out}");
        });

        // The hub does it all: a rotation, then an upgrade.
        let good = mirror();
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub: Hub = block_in_place(|| {
            start_hub(
                state.path(),
                &hub_addr.ip().to_string(),
                &cluster,
                Some(&good),
            )
        });
        block_in_place(|| {
            enroll_all(&cluster, &hub);
            // The doctor sees what the runbook's check showed on server-1: the aged leaf,
            // inside its renewal window, and nothing else there.
            let (code, findings, report) = doctor(server, &[]);
            assert!(
                (1..=2).contains(&code)
                    && !findings.is_empty()
                    && findings
                        .iter()
                        .all(|(_, _, object)| object.ends_with("serving-kube-apiserver.crt")),
                "{report}"
            );
            // The fleet view: server-1's agent reported the aged leaf, and RKE2's own
            // CertificateExpirationWarning (read by the hub from the API) confirms it.
            let mut last = serde_json::Value::Null;
            wait_until(
                "the hub's doctor shows server-1's finding with RKE2's event",
                Duration::from_secs(60),
                || {
                    last = hub_doctor(&hub);
                    last["findings"].as_array().is_some_and(|f| {
                        f.iter().any(|f| {
                            f["node"] == "server-1"
                                && f["object"]
                                    .as_str()
                                    .is_some_and(|o| o.ends_with("serving-kube-apiserver.crt"))
                                && f["evidence"].as_array().is_some_and(|e| {
                                    e.iter().any(|e| {
                                        e["field"] == "rke2_event"
                                            && e["value"].as_str().is_some_and(|v| {
                                                v.starts_with("CertificateExpirationWarning at ")
                                            })
                                    })
                                })
                        })
                    })
                },
            );
            assert!(
                last["findings"]
                    .as_array()
                    .is_some_and(|f| f.iter().all(|f| f["code"] != "rke2-cert-warning")),
                "every event is explained by an agent's finding: {last:#}"
            );
            let view = hub.json(&["rotate", "--settle", "1s"]);
            let id = view["id"].as_str().expect("id").to_owned();
            wait_state(&hub, &id, "completed", Duration::from_secs(300));
            look_at_the_cluster(&cluster, OLD_VERSION);
            // A healthy 3 + 2 cluster: the fleet doctor has nothing to say either (the old
            // warning predates the renewal and is history).
            wait_until("a clean fleet doctor", Duration::from_secs(60), || {
                last = hub_doctor(&hub);
                last["exit_code"] == 0 && last["findings"].as_array().is_some_and(Vec::is_empty)
            });
            for sim in cluster.nodes() {
                let attention = certificates_needing_attention(&sim.node);
                assert!(
                    attention.is_empty(),
                    "{}: every certificate fresh after the rotation: {attention:#?}",
                    sim.node.name()
                );
                // A healthy node: the doctor raises no false alarm (certificates, SANs against
                // the node's addresses, kubeconfigs, the unit, disk, etcd on servers).
                let (code, findings, report) = doctor(&sim.node, &[]);
                assert!(code == 0 && findings.is_empty(), "{report}");
            }

            let view = hub.json(&["upgrade", "--version", NEW_VERSION, "--settle", "1s"]);
            let id = view["id"].as_str().expect("id").to_owned();
            wait_state(&hub, &id, "completed", Duration::from_secs(300));
            look_at_the_cluster(&cluster, NEW_VERSION);
            let version = ok(server, "kubectl version -o json");
            assert!(
                version.contains(&format!(
                    "\"gitVersion\": \"v{}\"",
                    NEW_VERSION.trim_start_matches('v')
                )),
                "{version}"
            );

            // Section 3, system-upgrade-controller's way, from the runbook's folder.
            let files = install_runbook_files(server).expect("runbook files on server-1");
            for command in runbook::section(3) {
                let out = ok(server, &format!("cd {files} && {command}"));
                if command == "kubectl get plans -n system-upgrade" {
                    let table = rows(&out);
                    let names: Vec<&str> = table.iter().map(|r| r[0]).collect();
                    assert_eq!(names, ["agent-plan", "server-plan"], "{out}");
                }
            }
            let gone = run(server, "kubectl get plans -n system-upgrade");
            assert!(
                gone.stdout.trim().is_empty() && gone.stderr.contains("No resources found"),
                "{}{}",
                gone.stdout,
                gone.stderr
            );

            // `failed to find any PEM data`: an emptied leaf is a blocker naming the rotation's
            // backup; `doctor --fix` restores it with the unit stopped and the node is clean.
            let emptied = "/var/lib/rancher/rke2/server/tls/client-kube-proxy.crt";
            ok(server, &format!(": > {emptied}"));
            let (code, findings, report) = doctor(server, &[]);
            assert!(
                code == 2
                    && findings
                        .iter()
                        .any(|(code, severity, object)| code == "pem-empty-or-corrupt"
                            && severity == "blocker"
                            && object.ends_with("client-kube-proxy.crt")),
                "{report}"
            );
            assert!(
                report.contains("server/tls-"),
                "the backup is named: {report}"
            );
            doctor_fix(server, "pem-empty-or-corrupt");
            assert!(
                !ok(server, &format!("cat {emptied}")).trim().is_empty(),
                "restored"
            );
            let (code, findings, report) = doctor(server, &[]);
            assert!(code == 0 && findings.is_empty(), "after the fix: {report}");
        });
    });
}
