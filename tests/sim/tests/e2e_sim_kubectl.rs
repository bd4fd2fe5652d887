//! The real clients against the simulated Kubernetes API (`tests/SIMULATOR.md` §6): the
//! host's `kubectl` (v1.32) and Debian's Python `kubernetes` package, run inside a
//! simulated server node with its admin kubeconfig, as an operator runs them on an RKE2
//! server. Discovery, server-side tables, selectors, cordon/uncordon, drain (with and without
//! a blocking PodDisruptionBudget), watches, health, version, events, the
//! system-upgrade-controller CRD and RKE2's upgrade plans; and every other kubectl version the
//! machine image ships (1.27 ... 1.33) for the basics.
//!
//! Needs root, systemd, etcd, kubectl and python3-kubernetes
//! (`scripts/install-test-deps.sh`) and `cargo build -p rke2ops-tests --bins` first.

use std::time::{Duration, Instant};

use rke2ops_ground::{ExecOutput, Node, require_root_and_tools};
use rke2ops_sim::clients::{
    OTHER_KUBECTLS, RUNBOOK_DIR, install_runbook_files, kubectl, kubectl_argv, kubectl_with,
    other_kubectls, python, require_clients,
};
use rke2ops_sim::cluster::SimCluster;
use rke2ops_sim::kube::fixtures::{pdb, workload_pod};

/// The version the simulated nodes run (their kubelets report it).
const VERSION: &str = "v1.34.1+rke2r1";

fn run(node: &Node, args: &[&str]) -> ExecOutput {
    let start = Instant::now();
    let out = kubectl(node, args).expect("start kubectl");
    eprintln!(
        "$ kubectl {}   [{:.1?}]\n{}{}",
        args.join(" "),
        start.elapsed(),
        out.stdout,
        out.stderr
    );
    out
}

/// `kubectl ARGS` that must succeed; its stdout.
fn ok(node: &Node, args: &[&str]) -> String {
    let out = run(node, args);
    assert!(
        out.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The rows of a kubectl table, split on whitespace, header first.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The row whose `col`th cell is `name`.
fn row<'a>(table: &'a [Vec<String>], col: usize, name: &str) -> &'a [String] {
    table
        .iter()
        .find(|r| r.get(col).map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table:?}"))
}

fn wait_for(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let start = Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn write_json(node: &Node, path: &str, value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).expect("json");
    node.write_file(path, text).expect("write manifest");
}

#[test]
fn kubectl_reads_nodes_pods_budgets_health_and_events() {
    require_root_and_tools();
    require_clients();
    let cluster = SimCluster::boot(1, 1).expect("boot 1 server + 1 agent");
    let server = &cluster.servers[0].node;
    let agent = &cluster.agents[0].node;

    wait_for("two Ready nodes", Duration::from_secs(30), || {
        let out = run(server, &["get", "nodes", "--no-headers"]);
        out.success() && out.stdout.lines().filter(|l| l.contains(" Ready ")).count() == 2
    });
    let wide = rows(&ok(server, &["get", "nodes", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    let s = row(&wide, 0, "server-1");
    assert_eq!(&s[1..3], ["Ready", "control-plane,etcd,master"]);
    assert_eq!(s[4], VERSION);
    assert_eq!(s[5], server.ip().to_string());
    assert_eq!(s[6], "<none>");
    let a = row(&wide, 0, "agent-1");
    assert_eq!(&a[1..3], ["Ready", "<none>"]);
    assert_eq!(a[5], agent.ip().to_string());

    // System pods: 6 static (mirror) pods + canal on the server, kube-proxy + canal on the agent.
    let pods = rows(&ok(server, &["get", "pods", "-A"]));
    assert_eq!(
        pods[0],
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(pods.len() - 1, 9, "{pods:?}");
    assert!(
        pods[1..].iter().all(|p| p[2] == "1/1" && p[3] == "Running"),
        "{pods:?}"
    );
    let on_agent = rows(&ok(
        server,
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "wide",
            "--field-selector",
            "spec.nodeName=agent-1",
        ],
    ));
    assert_eq!(on_agent.len() - 1, 2, "{on_agent:?}");
    assert!(on_agent[1..].iter().all(|p| p[7] == "agent-1"));
    let canal = rows(&ok(
        server,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "k8s-app=canal",
            "--no-headers",
        ],
    ));
    assert_eq!(canal.len(), 2);
    let bad = run(
        server,
        &["get", "pods", "-A", "--field-selector", "reason=x"],
    );
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("field label not supported: reason"),
        "{}",
        bad.stderr
    );

    // `kubectl get -w` (a watch, answered as a long poll): the pod created meanwhile shows up
    // and the watch then ends, as when an apiserver closes it.
    // (A bare pod: no ReplicaSet replacement, no label the budget below selects.)
    let mut bare = workload_pod("web-0", "watch", "agent-1", 0);
    bare.metadata.owner_references = None;
    write_json(server, "/tmp/web-0.json", &bare);
    let k = kubectl_argv().join(" ");
    let script = format!(
        "({k} get pods -n default -w --request-timeout=20s; echo watch-exit=$?) & \
         sleep 0.5; {k} create -n default -f /tmp/web-0.json >/dev/null; wait"
    );
    let watched = server.exec(&["sh", "-c", &script]).expect("sh");
    eprintln!("{}{}", watched.stdout, watched.stderr);
    let lines: Vec<&str> = watched.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}{}", watched.stdout, watched.stderr);
    assert_eq!(
        rows(lines[0])[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(rows(lines[1])[0][..4], ["web-0", "1/1", "Running", "0"]);
    assert_eq!(lines[2], "watch-exit=0");
    ok(
        server,
        &[
            "delete",
            "pod",
            "-n",
            "default",
            "web-0",
            "--grace-period=0",
        ],
    );

    // A workload on the agent and a budget over it.
    write_json(
        server,
        "/tmp/web-1.json",
        &workload_pod("web-1", "web", "agent-1", 1),
    );
    write_json(server, "/tmp/web-pdb.json", &pdb("web-pdb", "web", 1));
    ok(
        server,
        &["create", "-n", "default", "-f", "/tmp/web-1.json"],
    );
    ok(
        server,
        &["create", "-n", "default", "-f", "/tmp/web-pdb.json"],
    );
    let budgets = rows(&ok(server, &["get", "pdb", "-A"]));
    assert_eq!(
        budgets[0],
        [
            "NAMESPACE",
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(&budgets[1][..5], ["default", "web-pdb", "1", "N/A", "0"]);

    // Health and version.
    let readyz = ok(server, &["get", "--raw=/readyz?verbose"]);
    assert!(readyz.contains("[+]ping ok"), "{readyz}");
    assert!(readyz.contains("[+]etcd ok"), "{readyz}");
    assert!(
        readyz.trim_end().ends_with("readyz check passed"),
        "{readyz}"
    );
    let livez = ok(server, &["get", "--raw=/livez?verbose"]);
    assert!(livez.trim_end().ends_with("livez check passed"), "{livez}");
    let version: serde_json::Value =
        serde_json::from_str(&ok(server, &["version", "-o", "json"])).expect("version json");
    assert_eq!(version["serverVersion"]["gitVersion"], VERSION);

    // Events: created as a certificate monitor would, listed with field selectors.
    let event = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "server-1.cert-warning", "namespace": "kube-system"},
        "involvedObject": {"kind": "Node", "name": "server-1", "uid": "server-1"},
        "reason": "CertificateExpirationWarning",
        "message": "serving-kube-apiserver.crt expires in 9 days",
        "type": "Warning", "count": 1,
        "source": {"component": "rke2-ops"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
    });
    write_json(server, "/tmp/event.json", &event);
    ok(server, &["create", "-f", "/tmp/event.json"]);
    let events = ok(
        server,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=CertificateExpirationWarning",
        ],
    );
    let ev = rows(&events);
    assert_eq!(
        ev[0],
        [
            "NAMESPACE",
            "LAST",
            "SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "MESSAGE"
        ]
    );
    assert_eq!(ev.len(), 2, "{events}");
    assert!(events.contains("Warning   CertificateExpirationWarning   node/server-1   serving-kube-apiserver.crt expires in 9 days"), "{events}");
    let none = ok(
        server,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=CertificateExpirationWarning,involvedObject.name=agent-1",
        ],
    );
    assert!(none.is_empty(), "{none}");

    // Cordon and uncordon show in STATUS.
    assert!(ok(server, &["cordon", "agent-1"]).contains("node/agent-1 cordoned"));
    let nodes = rows(&ok(server, &["get", "nodes"]));
    assert_eq!(row(&nodes, 0, "agent-1")[1], "Ready,SchedulingDisabled");
    assert!(ok(server, &["uncordon", "agent-1"]).contains("node/agent-1 uncordoned"));
    let nodes = rows(&ok(server, &["get", "nodes"]));
    assert_eq!(row(&nodes, 0, "agent-1")[1], "Ready");

    // The budget keeps web-1: drain retries its eviction until the timeout.
    let held = run(
        server,
        &[
            "drain",
            "agent-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=5s",
        ],
    );
    assert!(!held.success());
    let text = format!("{}{}", held.stdout, held.stderr);
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{text}"
    );
    assert!(text.contains("web-1"), "{text}");
    // Without the budget the drain completes: only the DaemonSet pod and the mirror pod stay.
    ok(server, &["delete", "pdb", "-n", "default", "web-pdb"]);
    let drained = ok(
        server,
        &[
            "drain",
            "agent-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    assert!(drained.contains("node/agent-1 drained"), "{drained}");
    let left = rows(&ok(
        server,
        &[
            "get",
            "pods",
            "-A",
            "--no-headers",
            "--field-selector",
            "spec.nodeName=agent-1",
        ],
    ));
    let mut names: Vec<&str> = left.iter().map(|r| r[1].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names.len(), 2, "{left:?}");
    assert!(
        names[0].starts_with("kube-proxy-") && names[1].starts_with("rke2-canal-"),
        "{names:?}"
    );
    let nodes = rows(&ok(server, &["get", "nodes"]));
    assert_eq!(row(&nodes, 0, "agent-1")[1], "Ready,SchedulingDisabled");

    // web-1's Deployment (`web`, behind ReplicaSet web-7d4b9c) is one replica short until the
    // replacement runs elsewhere.
    let deploy = |field: &str| {
        ok(
            server,
            &[
                "get",
                "deployment",
                "web",
                "-n",
                "default",
                "-o",
                &format!("jsonpath={{{field}}}"),
            ],
        )
    };
    assert_eq!(deploy(".spec.replicas"), "1");
    let started = std::time::Instant::now();
    while deploy(".status.availableReplicas") != "1" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "web never available again"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let listed = ok(server, &["get", "deploy", "-A", "--no-headers"]);
    assert!(listed.contains("web"), "{listed}");
}

/// A runbook file (`tests/fixtures/runbook/`) where [`install_runbook_files`] put it on a node.
fn runbook(name: &str) -> String {
    format!("{RUNBOOK_DIR}/{name}")
}

#[test]
fn kubectl_applies_the_upgrade_crd_and_rke2_plans() {
    require_root_and_tools();
    require_clients();
    let cluster = SimCluster::boot(1, 0).expect("boot 1 server");
    let server = &cluster.servers[0].node;
    install_runbook_files(server).expect("runbook files on the server");
    let (crd, server_plan, agent_plan) = (
        runbook("system-upgrade-crd.yaml"),
        runbook("server-plan.yaml"),
        runbook("agent-plan.yaml"),
    );

    let missing = run(server, &["get", "plans", "-n", "system-upgrade"]);
    assert!(!missing.success());
    assert!(
        missing
            .stderr
            .contains("the server doesn't have a resource type \"plans\""),
        "{}",
        missing.stderr
    );

    assert!(
        ok(server, &["apply", "-f", &crd]).contains(
            "customresourcedefinition.apiextensions.k8s.io/plans.upgrade.cattle.io created"
        )
    );
    ok(
        server,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/plans.upgrade.cattle.io",
            "--timeout=10s",
        ],
    );
    let crds = rows(&ok(server, &["get", "crd"]));
    assert_eq!(crds[0], ["NAME", "CREATED", "AT"]);
    assert_eq!(crds[1][0], "plans.upgrade.cattle.io");
    let resources = ok(server, &["api-resources", "--api-group=upgrade.cattle.io"]);
    assert!(
        rows(&resources)
            .iter()
            .any(|r| r[..] == ["plans", "upgrade.cattle.io/v1", "true", "Plan"]),
        "{resources}"
    );

    assert!(
        ok(server, &["create", "namespace", "system-upgrade"])
            .contains("namespace/system-upgrade created")
    );
    let namespaces = rows(&ok(server, &["get", "namespaces"]));
    for ns in ["default", "kube-system", "system-upgrade"] {
        assert_eq!(row(&namespaces, 0, ns)[1], "Active");
    }

    let applied = ok(server, &["apply", "-f", &server_plan, "-f", &agent_plan]);
    assert!(
        applied.contains("plan.upgrade.cattle.io/server-plan created"),
        "{applied}"
    );
    assert!(
        applied.contains("plan.upgrade.cattle.io/agent-plan created"),
        "{applied}"
    );
    let again = ok(server, &["apply", "-f", &server_plan, "-f", &agent_plan]);
    assert!(
        again.contains("plan.upgrade.cattle.io/server-plan unchanged"),
        "{again}"
    );
    assert!(
        again.contains("plan.upgrade.cattle.io/agent-plan unchanged"),
        "{again}"
    );

    let plans = rows(&ok(server, &["get", "plans", "-n", "system-upgrade"]));
    assert_eq!(
        plans[0],
        ["NAME", "IMAGE", "CHANNEL", "VERSION", "COMPLETE", "MESSAGE"]
    );
    assert_eq!(
        row(&plans, 0, "server-plan")[1..],
        // Channel, Complete and Message are unset: null cells, printed empty.
        ["rancher/rke2-upgrade", "v1.31.4+rke2r1"]
    );
    assert_eq!(
        ok(
            server,
            &[
                "get",
                "plan",
                "agent-plan",
                "-n",
                "system-upgrade",
                "-o",
                "jsonpath={.spec.prepare.args}"
            ]
        ),
        "[\"prepare\",\"server-plan\"]"
    );

    // A changed plan applies as a patch (client-side apply: last-applied annotation).
    let text =
        String::from_utf8(server.read_file(&server_plan).expect("read plan")).expect("utf-8 plan");
    server
        .write_file(
            "/tmp/server-plan.yaml",
            text.replace("v1.31.4+rke2r1", "v1.31.5+rke2r1"),
        )
        .expect("write plan");
    assert!(
        ok(server, &["apply", "-f", "/tmp/server-plan.yaml"]).contains("server-plan configured")
    );
    let plans = rows(&ok(
        server,
        &["get", "plans", "-n", "system-upgrade", "--no-headers"],
    ));
    assert_eq!(row(&plans, 0, "server-plan")[2], "v1.31.5+rke2r1");
    let generation = ok(
        server,
        &[
            "get",
            "plan",
            "server-plan",
            "-n",
            "system-upgrade",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    );
    assert_eq!(generation, "2");
    // A PUT (`kubectl replace`) of the whole object.
    server
        .write_file(
            "/tmp/server-plan.yaml",
            text.replace("v1.31.4+rke2r1", "v1.31.6+rke2r1"),
        )
        .expect("write plan");
    assert!(
        ok(server, &["replace", "-f", "/tmp/server-plan.yaml"])
            .contains("plan.upgrade.cattle.io/server-plan replaced")
    );
    let plans = rows(&ok(
        server,
        &["get", "plans", "-n", "system-upgrade", "--no-headers"],
    ));
    assert_eq!(row(&plans, 0, "server-plan")[2], "v1.31.6+rke2r1");

    assert!(
        ok(server, &["delete", "-f", &agent_plan])
            .contains("plan.upgrade.cattle.io \"agent-plan\" deleted")
    );
    let plans = rows(&ok(
        server,
        &["get", "plans", "-n", "system-upgrade", "--no-headers"],
    ));
    assert_eq!(plans.len(), 1, "{plans:?}");
    // Server-side apply (approximated: create, then merge) brings it back.
    for _ in 0..2 {
        let applied = ok(server, &["apply", "--server-side", "-f", &agent_plan]);
        assert!(
            applied.contains("plan.upgrade.cattle.io/agent-plan serverside-applied"),
            "{applied}"
        );
    }
    let plans = rows(&ok(
        server,
        &["get", "plans", "-n", "system-upgrade", "--no-headers"],
    ));
    assert_eq!(plans.len(), 2, "{plans:?}");

    // Deleting the CRD takes its objects and its group away.
    ok(server, &["delete", "-f", &crd]);
    let gone = run(server, &["get", "plans", "-n", "system-upgrade"]);
    assert!(!gone.success(), "{}", gone.stdout);
    let groups = ok(server, &["api-versions"]);
    assert!(!groups.contains("upgrade.cattle.io"), "{groups}");
    assert!(groups.contains("policy/v1"), "{groups}");
}

/// The Python client: nodes listed, an eviction created (refused by a budget first).
const PYTHON_EVICTION: &str = r#"
import json, os, time
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
conf = client.Configuration.get_default_copy()
core = client.CoreV1Api(client.ApiClient(conf))
out = {}
nodes = core.list_node()
out["nodes"] = sorted((n.metadata.name, n.status.node_info.kubelet_version) for n in nodes.items)
out["unschedulable"] = [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items]
body = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-1", namespace="default"))
try:
    core.create_namespaced_pod_eviction("web-1", "default", body)
    out["first"] = "evicted"
except ApiException as e:
    out["first"] = e.status
client.PolicyV1Api(client.ApiClient(conf)).delete_namespaced_pod_disruption_budget("web-pdb", "default")
core.create_namespaced_pod_eviction("web-1", "default", body)
out["second"] = "evicted"
deadline = time.time() + 20
while time.time() < deadline:
    try:
        core.read_namespaced_pod("web-1", "default")
    except ApiException as e:
        out["gone"] = e.status
        break
    time.sleep(0.5)
print(json.dumps(out))
"#;

#[test]
fn python_kubernetes_lists_nodes_and_evicts() {
    require_root_and_tools();
    require_clients();
    let cluster = SimCluster::boot(1, 1).expect("boot 1 server + 1 agent");
    let server = &cluster.servers[0].node;
    wait_for("two Ready nodes", Duration::from_secs(30), || {
        let out = run(server, &["get", "nodes", "--no-headers"]);
        out.success() && out.stdout.lines().filter(|l| l.contains(" Ready ")).count() == 2
    });
    write_json(
        server,
        "/tmp/web-1.json",
        &workload_pod("web-1", "web", "agent-1", 1),
    );
    write_json(server, "/tmp/web-pdb.json", &pdb("web-pdb", "web", 1));
    ok(
        server,
        &[
            "create",
            "-n",
            "default",
            "-f",
            "/tmp/web-1.json",
            "-f",
            "/tmp/web-pdb.json",
        ],
    );
    ok(server, &["cordon", "agent-1"]);

    let out = python(server, PYTHON_EVICTION).expect("start python3");
    assert!(out.success(), "python failed: {}{}", out.stdout, out.stderr);
    let result: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(
        result["nodes"],
        serde_json::json!([["agent-1", VERSION], ["server-1", VERSION]])
    );
    assert_eq!(result["unschedulable"], serde_json::json!(["agent-1"]));
    assert_eq!(
        result["first"], 429,
        "the budget refuses the first eviction"
    );
    assert_eq!(result["second"], "evicted");
    assert_eq!(result["gone"], 404, "{result}");
}

#[test]
fn every_shipped_kubectl_version_reads_applies_and_drains() {
    require_root_and_tools();
    require_clients();
    let versions = other_kubectls();
    assert!(
        !versions.is_empty(),
        "no kubectl.1.* under {OTHER_KUBECTLS}: they come with the machine image"
    );
    let cluster = SimCluster::boot(1, 1).expect("boot 1 server + 1 agent");
    let server = &cluster.servers[0].node;
    wait_for("two Ready nodes", Duration::from_secs(30), || {
        let out = run(server, &["get", "nodes", "--no-headers"]);
        out.success() && out.stdout.lines().filter(|l| l.contains(" Ready ")).count() == 2
    });
    for binary in &versions {
        let k = |args: &[&str]| {
            let out = kubectl_with(binary, server, args).expect("start kubectl");
            eprintln!(
                "$ {binary} {}\n{}{}",
                args.join(" "),
                out.stdout,
                out.stderr
            );
            assert!(
                out.success(),
                "{binary} {} failed: {}",
                args.join(" "),
                out.stderr
            );
            out.stdout
        };
        let nodes = rows(&k(&["get", "nodes", "-o", "wide"]));
        assert_eq!(
            row(&nodes, 0, "server-1")[1..3],
            ["Ready", "control-plane,etcd,master"]
        );
        assert_eq!(row(&nodes, 0, "server-1")[4], VERSION);
        let ns = format!("ns-{}", binary.rsplit('.').next().unwrap_or("x"));
        let manifest = format!("/tmp/{ns}.yaml");
        server
            .write_file(
                &manifest,
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
            )
            .expect("write namespace");
        assert!(k(&["apply", "-f", &manifest]).contains("created"));
        assert!(k(&["apply", "-f", &manifest]).contains("unchanged"));
        assert!(k(&["create", "namespace", &format!("x{ns}")]).contains("created"));
        assert!(
            k(&["drain", "agent-1", "--ignore-daemonsets", "--timeout=20s"]).contains("drained")
        );
        assert_eq!(
            row(&rows(&k(&["get", "nodes"])), 0, "agent-1")[1],
            "Ready,SchedulingDisabled"
        );
        assert!(k(&["uncordon", "agent-1"]).contains("uncordoned"));
    }
}
