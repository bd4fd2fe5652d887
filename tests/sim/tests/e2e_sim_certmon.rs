//! RKE2's certificate monitor in the simulator (`rke2ops_sim::certmon`,
//! `tests/SIMULATOR.md` §5.8) end to end: Events on the Node through the Kubernetes API
//! stand-in and the expiration gauge on the supervisor port.
//!
//! One server and two agents share CAs that expire in 200 days (inside RKE2's 365-day CA
//! window). After the first start (RKE2's 30-minute period, so one check each) every node is
//! restarted with a half-second period; `agent-2` also issues its leaves with a 60-day
//! lifetime (`CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS`), so they sit inside the 120-day window
//! right after the start that issued them.
//!
//! Needs root, systemd, etcd and curl (`scripts/install-test-deps.sh`) and
//! `cargo build -p rke2ops-tests --bins` first.

use std::time::{Duration, Instant};

use rke2ops_ground::{Node, require_root_and_tools};
use rke2ops_sim::certmon::{CONTROLLER_NAME, INTERVAL_ENV};
use rke2ops_sim::cluster::{self, CONFIG_DIR, SimCluster, https_get};
use rke2ops_sim::renew::LIFETIME_ENV;
use rke2ops_sim::tree::{ClusterCas, Role};
use serde_json::Value;
use time::OffsetDateTime;

const ADMIN: Option<&str> = Some("server/tls/client-admin");
const LEAF_PREFIX: &str = "Node certificates require attention - restart rke2 on this node to \
                           trigger automatic rotation: ";
const CA_PREFIX: &str = "Certificate Authority certificates require attention - check rke2 \
                         documentation and begin planning rotation: ";

/// The monitor's events about `node`, oldest first.
fn monitor_events(server: &Node, node: &str) -> Vec<Value> {
    let (status, body) =
        https_get(server, 6443, "/api/v1/namespaces/default/events", ADMIN).expect("curl events");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("event list is JSON");
    let mut events: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e["source"]["component"] == CONTROLLER_NAME && e["involvedObject"]["name"] == node
        })
        .collect();
    events.sort_by_key(|e| {
        e["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    events
}

fn with_reason<'a>(events: &'a [Value], reason: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["reason"] == reason).collect()
}

fn wait_for(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let start = Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn enable_supervisor_metrics(node: &Node) {
    let path = format!("{CONFIG_DIR}/config.yaml");
    let mut text =
        String::from_utf8(node.read_file(&path).expect("read config.yaml")).expect("utf-8 config");
    text.push_str("\nsupervisor-metrics: true\n");
    node.write_file(&path, text).expect("write config.yaml");
}

fn restart(node: &Node, role: Role) {
    cluster::stop(node, role).expect("stop");
    cluster::start(node, role, cluster::START_TIMEOUT).expect("start");
}

#[test]
fn certificate_monitor_posts_events_and_exports_the_gauge() {
    require_root_and_tools();
    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate_window(
        now - time::Duration::days(30),
        now + time::Duration::days(200),
    )
    .expect("CAs");
    let cluster = SimCluster::boot_with(cas, 1, 2, |_, setup| setup).expect("boot");
    let server = &cluster.servers[0].node;
    let (agent1, agent2) = (&cluster.agents[0].node, &cluster.agents[1].node);

    // First start, RKE2's 30-minute period: one check per node once the apiserver is ready.
    wait_for("the first checks", Duration::from_secs(20), || {
        !monitor_events(server, "server-1").is_empty()
            && !monitor_events(server, "agent-1").is_empty()
            && !monitor_events(server, "agent-2").is_empty()
    });
    let ok_before = with_reason(
        &monitor_events(server, "agent-1"),
        "CertificateExpirationOK",
    )
    .len();
    assert_eq!(ok_before, 1);

    enable_supervisor_metrics(server);
    enable_supervisor_metrics(agent1);
    cluster::set_env(server, Role::Server, &[(INTERVAL_ENV, "0.5")]).expect("env");
    cluster::set_env(agent1, Role::Agent, &[(INTERVAL_ENV, "0.5")]).expect("env");
    cluster::set_env(
        agent2,
        Role::Agent,
        &[(INTERVAL_ENV, "0.5"), (LIFETIME_ENV, "60")],
    )
    .expect("env");
    restart(server, Role::Server);
    restart(agent1, Role::Agent);
    restart(agent2, Role::Agent);

    // agent-2: its fresh 60-day leaves warn, every period.
    wait_for("repeated leaf warnings", Duration::from_secs(20), || {
        with_reason(
            &monitor_events(server, "agent-2"),
            "CertificateExpirationWarning",
        )
        .len()
            >= 3
    });
    let events = monitor_events(server, "agent-2");
    let warning = with_reason(&events, "CertificateExpirationWarning")[0];
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["involvedObject"]["kind"], "Node");
    assert_eq!(warning["metadata"]["namespace"], "default");
    assert_eq!(warning["source"]["component"], "rke2-cert-monitor");
    let message = warning["message"].as_str().expect("message");
    eprintln!("agent-2 {}: {message}", warning["reason"]);
    let details = message.strip_prefix(LEAF_PREFIX).unwrap_or_else(|| {
        panic!("RKE2's wording: {message}");
    });
    // One line per certificate of the agent's leaf files (the CA chain entries are fine).
    let lines: Vec<&str> = details.lines().collect();
    assert_eq!(lines.len(), 4, "{message}");
    for (i, expected) in [
        "kube-proxy/client-kube-proxy.crt: certificate CN=system:kube-proxy will expire within 120 days at ",
        "kubelet/client-kubelet.crt: certificate CN=system:node:agent-2,O=system:nodes will expire within 120 days at ",
        "kubelet/serving-kubelet.crt: certificate CN=agent-2 will expire within 120 days at ",
        "rke2-controller/client-rke2-controller.crt: certificate CN=system:rke2-controller will expire within 120 days at ",
    ]
    .iter()
    .enumerate()
    {
        assert!(lines[i].starts_with(expected), "line {i}: {}", lines[i]);
        let stamp = &lines[i][expected.len()..];
        let at = OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339 NotAfter");
        let days = (at - OffsetDateTime::now_utc()).whole_days();
        assert!((58..=60).contains(&days), "{stamp}: {days} days");
    }
    assert!(with_reason(&events, "CACertificateExpirationWarning").is_empty());

    // server-1: the CAs expire within 365 days; every period, never OK.
    wait_for("repeated CA warnings", Duration::from_secs(10), || {
        with_reason(
            &monitor_events(server, "server-1"),
            "CACertificateExpirationWarning",
        )
        .len()
            >= 3
    });
    let events = monitor_events(server, "server-1");
    let ca = with_reason(&events, "CACertificateExpirationWarning")[0];
    assert_eq!(ca["type"], "Warning");
    let message = ca["message"].as_str().expect("message");
    eprintln!("server-1 {}: {message}", ca["reason"]);
    let details = message
        .strip_prefix(CA_PREFIX)
        .unwrap_or_else(|| panic!("RKE2's wording: {message}"));
    let lines: Vec<&str> = details.lines().collect();
    assert_eq!(lines.len(), 5, "{message}");
    assert!(
        lines[0].starts_with("certificate-authority/server-ca.crt: certificate CN=rke2-server-ca@")
            && lines[0].contains(" will expire within 365 days at "),
        "{}",
        lines[0]
    );
    assert!(with_reason(&events, "CertificateExpirationOK").is_empty());
    assert!(with_reason(&events, "CertificateExpirationWarning").is_empty());

    // agent-1: clean, so exactly one OK per start, not one per period.
    wait_for(
        "agent-1's OK after the restart",
        Duration::from_secs(10),
        || {
            with_reason(
                &monitor_events(server, "agent-1"),
                "CertificateExpirationOK",
            )
            .len()
                > ok_before
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let events = monitor_events(server, "agent-1");
    let ok = with_reason(&events, "CertificateExpirationOK");
    assert_eq!(ok.len(), ok_before + 1, "{events:#?}");
    assert_eq!(ok[0]["type"], "Normal");
    assert_eq!(
        ok[0]["message"],
        "Node and Certificate Authority certificates managed by rke2 are OK"
    );
    assert_eq!(events.len(), ok.len(), "only OK events: {events:#?}");

    // The gauge, on the supervisor port with `supervisor-metrics: true`.
    let (status, _) = https_get(server, 9345, "/metrics", None).expect("curl");
    assert_eq!(status, 401, "metrics need a client certificate");
    let (status, body) = https_get(server, 9345, "/metrics", ADMIN).expect("curl");
    assert_eq!(status, 200, "{body}");
    eprintln!("server-1 :9345/metrics:\n{body}");
    assert!(
        body.contains("# TYPE rke2_certificate_expiration_seconds gauge\n"),
        "{body}"
    );
    let admin_line = body
        .lines()
        .find(|l| {
            l.starts_with(
                "rke2_certificate_expiration_seconds{subject=\"CN=system:admin,O=system:masters\",usages=\"ClientAuth\"} ",
            )
        })
        .unwrap_or_else(|| panic!("admin certificate in {body}"));
    let secs: f64 = admin_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(secs > 300.0 * 86_400.0, "{admin_line}");
    assert!(
        body.contains("{subject=\"CN=rke2-server-ca@") && body.contains("usages=\"CertSign\"}"),
        "{body}"
    );
    assert!(!body.contains("file="), "no file label: {body}");
    // /ping still answers without a client certificate.
    assert_eq!(https_get(server, 9345, "/ping", None).expect("curl").0, 200);
    // An agent with `supervisor-metrics` opens the supervisor port for the route.
    let (status, body) =
        https_get(agent1, 9345, "/metrics", Some("agent/client-kubelet")).expect("curl");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "rke2_certificate_expiration_seconds{subject=\"CN=system:node:agent-1,O=system:nodes\",usages=\"ClientAuth\"} "
        ),
        "{body}"
    );
    // agent-2 did not enable it: nothing listens there.
    assert_eq!(
        https_get(agent2, 9345, "/metrics", Some("agent/client-kubelet"))
            .expect("curl")
            .0,
        0
    );
}
