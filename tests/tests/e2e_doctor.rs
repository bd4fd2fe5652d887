//! The doctors (`docs/doctor.md`) against problems made the way users make them, on a
//! simulated cluster (one server, one agent) booted under real systemd, with the real agent
//! enrolled in a real hub that has the cluster's kubeconfig:
//!
//! 1. `serving-cert-missing-san`: a load balancer's name added to the server's `tls-san` in
//!    `config.yaml` without a rotation; the finding's own fix (stop, `rke2 certificate rotate
//!    --service api-server`, start) clears it and the new certificate holds the name.
//! 2. `kubeconfig-unknown-authority` and `kubeconfig-ca-differs`: a configured kubeconfig copy
//!    left from the cluster's previous installation (other CAs; `server:` the node's address), which
//!    the real `kubectl` refuses with `x509: certificate signed by unknown authority`;
//!    `doctor --fix` refreshes it from `rke2.yaml` keeping `server:`, and kubectl works.
//! 3. `unit-failed`: an invalid option in the agent's `config.yaml` and a restart: the unit
//!    fails for real (and crash-loops under `Restart=always`); the blocker carries the journal's
//!    fatal line; restoring the file and the finding's `reset-failed && start` clear it.
//! 4. `suc-leftover` through `rke2-hub doctor`: system-upgrade-controller's CRD and a Plan
//!    created with the real `kubectl`; the hub names both, a `rotate --dry-run` lists them as
//!    preflight warnings, and the findings' own `kubectl delete` commands clear them.
//! 5. `clock-skew`: the agent node's clock 10 minutes ahead (libfaketime in the agent's unit),
//!    found by the hub from the agent's statuses, gone when the clock is right again.
//! 6. `cert-expired` (and `renewal-deadline-passed`) on a worker, noted by a plan's preflight
//!    (a plan remedies it), and `disk-low` where upgrades stage; the hub's restart plan clears
//!    the expired leaf.
//!
//! Findings on a node also reach the fleet views: the hub's doctor, `nodes`' FINDING column and
//! `rke2ops_hub_doctor_findings`.
//!
//! Every doctor run is polled until it shows what is expected (with a deadline), and each
//! case starts and ends with the node's doctor clean: no false alarms either side of a fix.
//!
//! Needs root, `kubectl` (scripts/install-test-deps.sh) and `cargo build --workspace --bins`
//! first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rke2ops_common::doctor::{Finding, Report};
use rke2ops_tests::ground::{Node, require_root_and_tools};
use rke2ops_tests::hub::{AGENT_BIN, HubProcess as Hub, doctor_fix, enroll_agent};
use rke2ops_tests::plans::{
    hub_address, kube_client, start_hub, wait_nodes_ready, wait_state, wait_until,
};
use rke2ops_tests::runbook::{ok, run};
use rke2ops_tests::sim::clients::{install_runbook_files, require_clients};
use rke2ops_tests::sim::cluster::{self, CONFIG_DIR, DATA_DIR, NodeSetup, SimCluster};
use rke2ops_tests::sim::tree::{self, ClusterCas, Role, TreeSpec, Validity};
use time::OffsetDateTime;
use tokio::task::block_in_place;

const CONFIG_YAML: &str = "/etc/rancher/rke2/config.yaml";
/// A copy of the admin kubeconfig for tools off the node (`server:` the node's address),
/// listed in the agent's `kubeconfigs`. (Not root's `~/.kube/config`: proving-ground nodes
/// share the host's `/root`.)
const COPY: &str = "/etc/rancher/rke2/rke2-external.yaml";
const AGENT_TOML: &str = "/etc/rke2-ops/node-agent.toml";
/// The name a load balancer in front of the apiserver answers to.
const LB_NAME: &str = "rke2-lb.example.com";
/// How long a doctor may take to show a change (a unit's restart, a crash loop's next round).
const SHOWS_WITHIN: Duration = Duration::from_secs(60);

/// A doctor's answer: its exit code, its JSON report, and everything it printed (for failing
/// assertions).
struct Answer {
    code: i32,
    report: Report,
    text: String,
}

impl Answer {
    fn parse(who: &str, status: Option<i32>, stdout: &str, stderr: &str) -> Answer {
        let code = status.unwrap_or(-1);
        let text = format!("{who}: exit {code}\n{stdout}{stderr}");
        let report: Report = serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("the doctor's JSON ({e}):\n{text}"));
        assert_eq!(
            i32::from(report.exit_code),
            code,
            "the exit code is the report's: {text}"
        );
        Answer { code, report, text }
    }

    /// The findings with `code`.
    fn with(&self, code: &str) -> Vec<&Finding> {
        self.report
            .findings
            .iter()
            .filter(|f| f.code.as_str() == code)
            .collect()
    }

    fn clean(&self) -> bool {
        self.code == 0 && self.report.findings.is_empty()
    }

    /// The hub's clean on this one-server cluster: exit 0 and nothing but the info that one
    /// etcd member cannot lose one (how the cluster was built, not a fault).
    fn clean_fleet(&self) -> bool {
        self.code == 0
            && self
                .report
                .findings
                .iter()
                .all(|f| f.code.as_str() == "etcd-quorum-at-risk" && f.severity.as_str() == "info")
    }
}

/// The values of `field` in `finding`'s evidence.
fn evidence<'a>(finding: &'a Finding, field: &str) -> Vec<&'a str> {
    finding
        .evidence
        .iter()
        .filter(|e| e.field == field)
        .map(|e| e.value.as_str())
        .collect()
}

/// `rke2-node-agent doctor --output json` on `node`, with the agent's own configuration.
fn doctor(node: &Node) -> Answer {
    let out = node
        .exec(&[AGENT_BIN, "doctor", "--output", "json"])
        .expect("doctor runs");
    Answer::parse(node.name(), out.status.code(), &out.stdout, &out.stderr)
}

/// Runs the node's doctor until `done` holds (a restart or a crash loop takes its time);
/// the last answer. Fails with that answer after [`SHOWS_WITHIN`].
fn doctor_until(node: &Node, what: &str, done: impl Fn(&Answer) -> bool) -> Answer {
    let started = Instant::now();
    loop {
        let answer = doctor(node);
        if done(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < SHOWS_WITHIN,
            "{what}: not within {SHOWS_WITHIN:?}; the doctor's last answer:\n{}",
            answer.text
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `rke2-hub doctor --output json` (warnings exit 1, so not `hub.json`).
fn hub_doctor(hub: &Hub) -> Answer {
    let out = hub.run(&["doctor", "--output", "json"]);
    Answer::parse(
        "rke2-hub",
        out.status.code(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

fn hub_doctor_until(hub: &Hub, what: &str, done: impl Fn(&Answer) -> bool) -> Answer {
    let started = Instant::now();
    loop {
        let answer = hub_doctor(hub);
        if done(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < SHOWS_WITHIN,
            "{what}: not within {SHOWS_WITHIN:?}; the hub doctor's last answer:\n{}",
            answer.text
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn read_text(node: &Node, path: &str) -> String {
    String::from_utf8(node.read_file(path).expect("read")).expect("utf-8")
}

/// The DNS and IP SANs of the first certificate of the PEM file `path` on `node`.
fn sans_of(node: &Node, path: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let raw = node.read_file(path).expect("read certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&raw).expect("PEM");
    let cert = pem.parse_x509().expect("certificate");
    let san = cert
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            _ => None,
        })
        .collect()
}

/// One cluster kubeconfig's `(server, certificate-authority-data, client-certificate-data)`.
fn kubeconfig_fields(text: &str) -> (String, String, String) {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("kubeconfig YAML");
    let field = |list: &str, inner: &str, key: &str| {
        doc[list][0][inner][key]
            .as_str()
            .unwrap_or_else(|| panic!("{list}[0].{inner}.{key} in\n{text}"))
            .to_owned()
    };
    (
        field("clusters", "cluster", "server"),
        field("clusters", "cluster", "certificate-authority-data"),
        field("users", "user", "client-certificate-data"),
    )
}

/// The admin kubeconfig of this cluster's previous installation: the same node, other CAs
/// (what a reinstall or a CA rotation leaves in every copy made before it).
fn previous_installation_kubeconfig(server: &Node) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let then = OffsetDateTime::now_utc() - time::Duration::days(20);
    let cas = ClusterCas::generate(then - time::Duration::days(30)).expect("old CAs");
    let spec = TreeSpec::new(
        Role::Server,
        server.name(),
        IpAddr::V4(server.ip()),
        dir.path().join("data"),
        then,
    )
    .with_config_dir(dir.path().join("etc"));
    tree::generate(&spec, &cas).expect("the previous installation's tree");
    std::fs::read_to_string(dir.path().join("etc/rke2.yaml")).expect("its rke2.yaml")
}

/// The fleet view of one node's finding: the hub's doctor (the agent reported it with its
/// status), `nodes`' FINDING column, and `rke2ops_hub_doctor_findings` on the hub's
/// `/metrics`.
fn hub_sees(hub: &Hub, node: &str, code: &str, severity: &str) {
    let answer = hub_doctor_until(hub, &format!("{code} on {node} at the hub"), |a| {
        a.with(code).iter().any(|f| f.node == node)
    });
    let found = answer.with(code);
    assert_eq!(found[0].severity.as_str(), severity, "{}", answer.text);
    let worst = hub.json(&["nodes"])["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == node).cloned())
        .expect("the node is listed");
    assert_eq!(
        worst["worst_finding"],
        format!("{severity} {code}"),
        "nodes: {worst:#}"
    );
    let table = hub.run(&["nodes"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().next().is_some_and(|h| h
            .split_whitespace()
            .rev()
            .take(2)
            .eq(["METHOD", "FINDING"]))
            && table.lines().any(|l| {
                let l = l.trim_end();
                // FINDING, then METHOD (tarball here) last.
                l.starts_with(node)
                    && l.strip_suffix("tarball")
                        .is_some_and(|l| l.trim_end().ends_with(&format!("{severity} {code}")))
            }),
        "{table}"
    );
    // And a plan's preflight shows it (a blocker would refuse the plan).
    let preview = hub.json(&["rotate", "--dry-run"]);
    // Blockers a plan remedies itself (an expired leaf: every plan restarts RKE2) are noted.
    let verdict = if severity == "blocker" && code != "cert-expired" {
        "refuses the plan unless accepted"
    } else {
        "noted"
    };
    let line = format!("preflight {severity} ({verdict}): {code} ");
    assert!(
        preview["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| {
                e["node"] == node && e["message"].as_str().is_some_and(|m| m.starts_with(&line))
            })),
        "{line} in {:#}",
        preview["events"]
    );
    let metrics = rke2ops_tests::http::get(
        std::net::SocketAddr::from((hub.ip(), 9812)),
        "/metrics",
        None,
    )
    .expect("the hub's /metrics");
    assert_eq!(
        rke2ops_tests::http::sample(
            &metrics,
            "rke2ops_hub_doctor_findings",
            &format!("node=\"{node}\",code=\"{code}\",severity=\"{severity}\""),
        ),
        Some(1.0),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("doctor"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Case 1: a `tls-san` added without a rotation.
fn serving_cert_missing_san(server: &Node, hub: &Hub) {
    let apiserver_cert = format!("{DATA_DIR}/server/tls/serving-kube-apiserver.crt");
    let original = read_text(server, CONFIG_YAML);
    assert!(!original.contains("tls-san"), "{original}");
    server
        .write_file(CONFIG_YAML, format!("{original}tls-san:\n  - {LB_NAME}\n"))
        .expect("add the load balancer's name");

    let answer = doctor_until(server, "serving-cert-missing-san", |a| {
        !a.with("serving-cert-missing-san").is_empty()
    });
    let found = answer.with("serving-cert-missing-san");
    assert_eq!(
        (answer.code, answer.report.findings.len(), found.len()),
        (1, 1, 1),
        "one warning, nothing else: {}",
        answer.text
    );
    let finding = found[0];
    assert_eq!(finding.severity.as_str(), "warning", "{}", answer.text);
    assert_eq!(
        finding.object, "server/tls/serving-kube-apiserver.crt",
        "{}",
        answer.text
    );
    assert_eq!(
        evidence(finding, "missing"),
        [LB_NAME],
        "only the new name is missing: {}",
        answer.text
    );
    let sans = evidence(finding, "sans").join(",");
    assert!(
        sans.contains(&server.ip().to_string()) && !sans.contains(LB_NAME),
        "the certificate's SANs as they are: {}",
        answer.text
    );
    assert!(!sans_of(server, &apiserver_cert).contains(&LB_NAME.to_owned()));
    // The node's agent reported it: the hub shows it in every fleet view.
    hub_sees(hub, server.name(), "serving-cert-missing-san", "warning");
    assert_eq!(
        finding.fix,
        "systemctl stop rke2-server.service && rke2 certificate rotate --service api-server \
         && systemctl start rke2-server.service",
        "{}",
        answer.text
    );

    // The fix, as the finding gives it (`systemctl start` of a Type=notify unit returns once
    // RKE2 is ready; bounded in case it never is).
    ok(server, &format!("timeout 180 sh -c '{}'", finding.fix));
    server
        .wait_for_unit_state("rke2-server.service", "active", Duration::from_secs(60))
        .expect("rke2-server active");
    let answer = doctor_until(
        server,
        "no serving-cert-missing-san after the rotation",
        |a| a.with("serving-cert-missing-san").is_empty(),
    );
    assert!(answer.clean(), "{}", answer.text);
    let sans = sans_of(server, &apiserver_cert);
    assert!(
        sans.contains(&LB_NAME.to_owned()) && sans.contains(&server.ip().to_string()),
        "the reissued certificate: {sans:?}"
    );
}

/// Case 2: a kubeconfig copy from the previous installation.
fn stale_kubeconfig(server: &Node) {
    let endpoint = format!("https://{}:6443", server.ip());
    let stale = previous_installation_kubeconfig(server).replace(tree::LOCAL_APISERVER, &endpoint);
    server.write_file(COPY, &stale).expect("the copy");
    ok(server, &format!("chmod 600 {COPY}"));
    let toml = read_text(server, AGENT_TOML);
    assert!(!toml.contains("kubeconfigs"), "{toml}");
    server
        .write_file(AGENT_TOML, format!("{toml}kubeconfigs = [\"{COPY}\"]\n"))
        .expect("list the copy in the agent's configuration");
    let (_, stale_ca, stale_cert) = kubeconfig_fields(&stale);

    // What the user sees, as the runbook's error.
    let refused = run(server, &format!("kubectl --kubeconfig {COPY} get nodes"));
    assert!(
        !refused.success()
            && refused
                .stderr
                .contains("x509: certificate signed by unknown authority"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );

    let answer = doctor_until(server, "the stale kubeconfig", |a| {
        !a.with("kubeconfig-unknown-authority").is_empty()
            && !a.with("kubeconfig-ca-differs").is_empty()
    });
    assert_eq!(answer.code, 1, "warnings only: {}", answer.text);
    let mut codes: Vec<&str> = answer
        .report
        .findings
        .iter()
        .map(|f| f.code.as_str())
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        ["kubeconfig-ca-differs", "kubeconfig-unknown-authority"],
        "{}",
        answer.text
    );
    for f in &answer.report.findings {
        assert_eq!(f.severity.as_str(), "warning", "{}", answer.text);
        assert_eq!(f.object, COPY, "{}", answer.text);
        assert!(
            f.fix
                .starts_with(&format!("rke2-node-agent doctor --fix {}", f.code)),
            "{}",
            answer.text
        );
    }
    let unknown = answer.with("kubeconfig-unknown-authority")[0];
    assert_eq!(
        evidence(unknown, "field"),
        ["client-certificate-data"],
        "{}",
        answer.text
    );
    assert_eq!(
        evidence(unknown, "subject"),
        ["system:admin"],
        "{}",
        answer.text
    );
    let differs = answer.with("kubeconfig-ca-differs")[0];
    assert_eq!(
        evidence(differs, "differs_from"),
        [format!("{CONFIG_DIR}/rke2.yaml")],
        "{}",
        answer.text
    );

    doctor_fix(server, "kubeconfig-unknown-authority");
    let refreshed = read_text(server, COPY);
    let (server_url, ca, cert) = kubeconfig_fields(&refreshed);
    let (_, admin_ca, admin_cert) =
        kubeconfig_fields(&read_text(server, &format!("{CONFIG_DIR}/rke2.yaml")));
    assert_eq!(server_url, endpoint, "`server:` kept:\n{refreshed}");
    assert_eq!(
        (ca.as_str(), cert.as_str()),
        (admin_ca.as_str(), admin_cert.as_str()),
        "rke2.yaml's credentials"
    );
    assert_ne!((ca, cert), (stale_ca, stale_cert));
    let answer = doctor(server);
    assert!(answer.clean(), "after the fix: {}", answer.text);
    let nodes = ok(server, &format!("kubectl --kubeconfig {COPY} get nodes"));
    assert!(
        nodes.contains("server-1") && nodes.contains("agent-1"),
        "{nodes}"
    );
}

/// Case 3: an invalid option in the agent's config.yaml, then a restart.
fn unit_failed(agent: &Node) {
    let unit = "rke2-agent.service";
    let original = read_text(agent, CONFIG_YAML);
    agent
        .write_file(
            CONFIG_YAML,
            format!("{original}supervisor-metrics: maybe\n"),
        )
        .expect("a bad option");
    // As typed; the start fails (the job's result is systemd's business, the doctor's is the
    // unit's state afterwards).
    let restart = agent
        .exec(&["systemctl", "restart", "rke2-agent"])
        .expect("systemctl runs");
    eprintln!(
        "systemctl restart rke2-agent: {}\n{}{}",
        restart.status, restart.stdout, restart.stderr
    );

    // Restart=always: the unit is `failed` or `activating (auto-restart)` between attempts,
    // and `activating (start)` for a moment during each.
    let answer = doctor_until(agent, "unit-failed", |a| !a.with("unit-failed").is_empty());
    let found = answer.with("unit-failed");
    assert_eq!((answer.code, found.len()), (2, 1), "{}", answer.text);
    let finding = found[0];
    assert_eq!(finding.severity.as_str(), "blocker", "{}", answer.text);
    assert_eq!(finding.object, unit, "{}", answer.text);
    let state = (
        evidence(finding, "active_state").join(""),
        evidence(finding, "sub_state").join(""),
    );
    assert!(
        state == ("failed".into(), "failed".into())
            || state == ("activating".into(), "auto-restart".into()),
        "{state:?}: {}",
        answer.text
    );
    assert_eq!(
        evidence(finding, "result"),
        ["exit-code"],
        "{}",
        answer.text
    );
    let journal = evidence(finding, "journal");
    assert!(
        !journal.is_empty() && journal.len() <= 10,
        "the journal's last lines: {}",
        answer.text
    );
    assert!(
        journal.iter().any(|l| l.contains("level=fatal")
            && l.contains("failed to parse config file /etc/rancher/rke2/config.yaml")
            && l.contains("supervisor-metrics")),
        "the journal names the cause: {}",
        answer.text
    );
    assert!(
        finding
            .fix
            .starts_with("journalctl -u rke2-agent.service -n 200 --no-pager")
            && finding.fix.ends_with(
                "systemctl reset-failed rke2-agent.service && systemctl start rke2-agent.service"
            ),
        "{}",
        answer.text
    );
    // The finding's first step shows the same.
    let logs = ok(agent, "journalctl -u rke2-agent.service -n 200 --no-pager");
    assert!(logs.contains("supervisor-metrics"), "{logs}");

    // Its last step, after fixing the cause.
    agent
        .write_file(CONFIG_YAML, &original)
        .expect("restore config.yaml");
    ok(
        agent,
        "timeout 120 sh -c 'systemctl reset-failed rke2-agent.service && systemctl start \
         rke2-agent.service'",
    );
    agent
        .wait_for_unit_state(unit, "active", Duration::from_secs(60))
        .expect("rke2-agent active");
    let answer = doctor_until(agent, "no unit-failed once it runs", |a| {
        a.with("unit-failed").is_empty()
    });
    assert!(answer.clean(), "{}", answer.text);
}

/// Case 4: system-upgrade-controller's CRD and a Plan, found by the hub.
fn suc_leftover(server: &Node, hub: &Hub) {
    let files = install_runbook_files(server).expect("runbook files on server-1");
    ok(
        server,
        &format!("cd {files} && kubectl apply -f system-upgrade-crd.yaml"),
    );
    ok(server, "kubectl create namespace system-upgrade");
    ok(
        server,
        &format!("cd {files} && kubectl apply -f server-plan.yaml"),
    );
    let plans = ok(server, "kubectl get plans -n system-upgrade");
    assert!(plans.contains("server-plan"), "{plans}");

    let answer = hub_doctor_until(hub, "suc-leftover", |a| a.with("suc-leftover").len() == 2);
    assert_eq!(answer.code, 1, "warnings only: {}", answer.text);
    assert_eq!(
        answer
            .report
            .findings
            .iter()
            .filter(|f| f.code.as_str() != "etcd-quorum-at-risk")
            .count(),
        2,
        "nothing else (but the one-server info): {}",
        answer.text
    );
    let found = answer.with("suc-leftover");
    for f in &found {
        assert_eq!(f.severity.as_str(), "warning", "{}", answer.text);
        assert_eq!(f.node, "", "about the cluster: {}", answer.text);
    }
    let plan = found
        .iter()
        .find(|f| f.object == "plans.upgrade.cattle.io")
        .unwrap_or_else(|| panic!("the Plans: {}", answer.text));
    assert_eq!(
        evidence(plan, "plans"),
        ["system-upgrade/server-plan"],
        "{}",
        answer.text
    );
    assert_eq!(
        plan.fix, "kubectl delete plans.upgrade.cattle.io --all -A",
        "{}",
        answer.text
    );
    let crd = found
        .iter()
        .find(|f| f.object == "crd plans.upgrade.cattle.io")
        .unwrap_or_else(|| panic!("the CRD: {}", answer.text));
    assert_eq!(
        evidence(crd, "crd"),
        ["plans.upgrade.cattle.io"],
        "{}",
        answer.text
    );

    // A plan's preflight shows both (warnings do not refuse it).
    let view = hub.json(&["rotate", "--dry-run"]);
    assert_eq!(view["state"], "dry-run", "{view:#}");
    let events: Vec<&str> = view["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    for object in [
        "plans.upgrade.cattle.io (plans=",
        "crd plans.upgrade.cattle.io",
    ] {
        assert!(
            events.iter().any(
                |m| m.starts_with("preflight warning (noted): suc-leftover ") && m.contains(object)
            ),
            "{object} in the preflight: {events:#?}"
        );
    }

    // The findings' own commands, as given.
    for fix in [&plan.fix, &crd.fix] {
        let out = ok(server, fix);
        eprintln!("{fix}:\n{out}");
    }
    let gone = run(server, "kubectl get crd plans.upgrade.cattle.io");
    assert!(
        !gone.success() && gone.stderr.contains("NotFound"),
        "{}{}",
        gone.stdout,
        gone.stderr
    );
    let answer = hub_doctor_until(hub, "no suc-leftover", |a| {
        a.with("suc-leftover").is_empty()
    });
    assert!(answer.clean_fleet(), "{}", answer.text);
}

/// Case 6: a worker whose kubelet client certificate expired (its RKE2 did not restart for a
/// year), and low disk where upgrades stage: both found on the node and at the hub; the
/// expired leaf is what a plan is for (its preflight notes it, never refuses it), and the
/// hub's own restart plan clears it.
fn expired_leaf_and_low_disk(cluster: &SimCluster, hub: &Hub) {
    let agent = &cluster.agents[0].node;
    let expired = NodeSetup::new(Role::Agent, Some(cluster.servers[0].node.ip())).with_validity(
        "agent/client-kubelet.crt",
        Validity::Expired(Duration::from_secs(3 * 86_400)),
    );
    cluster::write_node(agent, &expired, &cluster.cas).expect("age agent-1's kubelet leaf");
    let answer = doctor_until(agent, "the expired leaf", |a| {
        !a.with("cert-expired").is_empty()
    });
    let found = answer.with("cert-expired");
    assert_eq!(
        (found[0].severity.as_str(), found[0].object.as_str()),
        ("blocker", "agent/client-kubelet.crt"),
        "{}",
        answer.text
    );
    assert!(
        !answer.with("renewal-deadline-passed").is_empty(),
        "{}",
        answer.text
    );
    hub_sees(hub, agent.name(), "cert-expired", "blocker");

    // Low disk where upgrades stage (the threshold raised past what the node has: statvfs is
    // real).
    let out = agent
        .exec(&[
            AGENT_BIN,
            "doctor",
            "--output",
            "json",
            "--staging-min-free-mib",
            "100000000",
        ])
        .expect("doctor runs");
    let low = Answer::parse(agent.name(), out.status.code(), &out.stdout, &out.stderr);
    let disk = low.with("disk-low");
    assert!(
        disk.iter()
            .any(|f| f.severity.as_str() == "warning"
                && evidence(f, "purpose") == ["upgrade staging"]),
        "{}",
        low.text
    );

    // The fix is the plan the finding is about: the hub restarts agent-1, RKE2 reissues its
    // leaves, and the node is clean.
    let view = hub.json(&["restart", "--node", agent.name()]);
    let id = view["id"].as_str().expect("id").to_owned();
    wait_state(hub, &id, "completed", Duration::from_secs(180));
    let answer = doctor_until(agent, "agent-1 renewed", Answer::clean);
    assert!(answer.clean(), "{}", answer.text);
    hub_doctor_until(hub, "the fleet clean again", Answer::clean_fleet);
}

/// libfaketime (Debian's `faketime`, scripts/install-test-deps.sh): what makes one node's
/// clock run ahead while the host's and the hub's stay right.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const CLOCK_DROP_IN: &str = "/etc/systemd/system/rke2-node-agent.service.d/clock.conf";

/// Case 5: a node whose clock runs 10 minutes ahead (the agent's own clock, through
/// libfaketime in its unit), found by the hub from the agent's statuses.
fn clock_skew(node: &Node, hub: &Hub) {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run scripts/install-test-deps.sh"
    );
    ok(
        node,
        "mkdir -p /etc/systemd/system/rke2-node-agent.service.d",
    );
    node.write_file(
        CLOCK_DROP_IN,
        format!(
            "[Service]\nEnvironment=LD_PRELOAD={LIBFAKETIME} FAKETIME=+10m \
             FAKETIME_DONT_FAKE_MONOTONIC=1\n"
        ),
    )
    .expect("the drop-in");
    ok(
        node,
        "systemctl daemon-reload && systemctl restart rke2-node-agent.service",
    );
    let answer = hub_doctor_until(hub, "clock-skew on the node", |a| {
        a.with("clock-skew").iter().any(|f| f.node == node.name())
    });
    let found = answer.with("clock-skew");
    assert_eq!(found[0].severity.as_str(), "blocker", "{}", answer.text);
    let offset = evidence(found[0], "offset").join("");
    let secs: f64 = offset
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(
        (590.0..=610.0).contains(&secs) && offset.ends_with("s (ahead of the hub)"),
        "about +600 s (less the time a status takes to arrive): {}",
        answer.text
    );
    hub_sees(hub, node.name(), "clock-skew", "blocker");
    ok(
        node,
        &format!(
            "rm {CLOCK_DROP_IN} && systemctl daemon-reload && systemctl restart rke2-node-agent.service"
        ),
    );
    let answer = hub_doctor_until(hub, "no clock-skew once the clock is right", |a| {
        a.with("clock-skew").is_empty()
    });
    assert!(answer.clean_fleet(), "{}", answer.text);
}

#[test]
fn the_doctors_find_what_users_break_and_their_fixes_clear_it() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        require_clients();
        let started = Instant::now();
        let cluster = block_in_place(|| SimCluster::boot(1, 1).expect("1+1 cluster"));
        let client = kube_client(&cluster).await;
        wait_nodes_ready(&client, 2, Duration::from_secs(60)).await;

        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub: Hub =
            block_in_place(|| start_hub(state.path(), &hub_addr.ip().to_string(), &cluster, None));
        block_in_place(|| {
            for sim in cluster.nodes() {
                enroll_agent(
                    &sim.node,
                    &hub,
                    "heartbeat_secs = 2\nready_timeout_secs = 20\n",
                )
                .expect("enroll");
            }
            wait_until("both nodes online", Duration::from_secs(90), || {
                hub.json(&["nodes"])["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["online"] == true))
            });
            // Nobody runs a doctor the second a cluster is up: leave it be for a moment (not
            // for correctness; every check below polls with a deadline).
            std::thread::sleep(Duration::from_secs(5));

            let server = &cluster.servers[0].node;
            let agent = &cluster.agents[0].node;
            // A healthy cluster first: no false alarm on either node, nor from the hub.
            for node in [server, agent] {
                let answer = doctor_until(node, "a clean node", Answer::clean);
                assert!(answer.clean(), "{}", answer.text);
            }
            let answer = hub_doctor_until(&hub, "a clean fleet", Answer::clean_fleet);
            assert_eq!(
                answer.with("etcd-quorum-at-risk").len(),
                1,
                "one server: noted as info: {}",
                answer.text
            );

            let step = Instant::now();
            serving_cert_missing_san(server, &hub);
            eprintln!("serving-cert-missing-san: {:?}", step.elapsed());
            let step = Instant::now();
            stale_kubeconfig(server);
            eprintln!("kubeconfig-*: {:?}", step.elapsed());
            let step = Instant::now();
            unit_failed(agent);
            eprintln!("unit-failed: {:?}", step.elapsed());
            let step = Instant::now();
            suc_leftover(server, &hub);
            eprintln!("suc-leftover: {:?}", step.elapsed());
            let step = Instant::now();
            clock_skew(agent, &hub);
            eprintln!("clock-skew: {:?}", step.elapsed());
            let step = Instant::now();
            expired_leaf_and_low_disk(&cluster, &hub);
            eprintln!("cert-expired, disk-low: {:?}", step.elapsed());
            // And both nodes are clean at the end.
            for node in [server, agent] {
                let answer = doctor(node);
                assert!(answer.clean(), "{}", answer.text);
            }
        });
        eprintln!("e2e_doctor: {:?}", started.elapsed());
    });
}
