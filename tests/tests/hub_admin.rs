//! Operator access to the hub: the admin socket is root-only (0600), remote access works over
//! TLS with an admin certificate from `rke2-hub admin-cert create`, and the CLI fails clearly
//! when the hub is unreachable or the options are incomplete.

use std::os::unix::fs::PermissionsExt;

use rke2ops_tests::ground::built_binary;
use rke2ops_tests::hub::HubProcess;

#[test]
fn remote_admin_over_tls_with_an_admin_certificate() {
    let state = tempfile::tempdir().expect("state");
    let hub = HubProcess::start(state.path(), "127.0.30.20");
    let mode = std::fs::metadata(hub.socket())
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "admin socket is root-only");

    let admin = state.path().join("alice");
    let admin_cert = |extra: &[&str]| {
        let out = std::process::Command::new(built_binary("rke2-hub"))
            .args([
                "admin-cert",
                "create",
                "--name",
                "alice",
                "--output",
                "json",
                "--out",
            ])
            .arg(&admin)
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let dry = admin_cert(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(!admin.exists(), "a dry run writes nothing");
    let issued = admin_cert(&[]);
    assert_eq!(issued["cn"], "admin:alice");
    assert!(
        issued["not_after"].as_str().is_some_and(|t| t.len() >= 20),
        "{issued}"
    );
    assert!(
        !issued.to_string().contains("PRIVATE KEY"),
        "the key is never printed"
    );
    for file in ["admin.crt", "admin.key", "ca.crt"] {
        let mode = std::fs::metadata(admin.join(file))
            .expect("file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} is private");
    }
    let remote = |args: &[&str]| {
        std::process::Command::new(built_binary("rke2-hub"))
            .args(args)
            .args(["--hub", &hub.addr, "--admin-dir"])
            .arg(&admin)
            .output()
            .expect("runs")
    };
    let nodes = remote(&["nodes", "--output", "json"]);
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let token = remote(&["token", "create", "--ttl", "1h", "--output", "json"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&token.stdout).expect("json");
    assert!(
        doc["ca_pin"]
            .as_str()
            .is_some_and(|p| p.starts_with("sha256:"))
    );
    let dry = remote(&["token", "create", "--dry-run", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("dry-run json");
    assert_eq!(doc["dry_run"], true);
    assert!(doc.get("token").is_none(), "a dry run creates no token");

    // Incomplete remote options and an unreachable hub are clear errors.
    let out = std::process::Command::new(built_binary("rke2-hub"))
        .args(["nodes", "--hub", &hub.addr])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let out = std::process::Command::new(built_binary("rke2-hub"))
        .args(["nodes", "--socket", "/nonexistent/hub.sock"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/nonexistent/hub.sock"),
        "{stderr}"
    );
    // Hub metrics are promtool-clean and carry the fleet gauges.
    let addr: std::net::SocketAddr = "127.0.30.20:9812".parse().expect("addr");
    let metrics = rke2ops_tests::http::get(addr, "/metrics", None).expect("metrics");
    for name in [
        "rke2ops_hub_connected_agents 0",
        "rke2ops_build_info{version=",
        "rke2ops_hub_rpcs_total{",
    ] {
        assert!(metrics.contains(name), "missing {name}:\n{metrics}");
    }
    let promtool = rke2ops_tests::http::promtool_check(&metrics);
    assert!(
        promtool.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&promtool.stdout)
    );
    hub.stop();
}
