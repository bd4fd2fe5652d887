//! `rke2-node-agent check` on generated RKE2 trees: the table agrees row for row with the
//! simulated `rke2 certificate check` (an independent implementation of RKE2's format), every
//! status word and every kind of broken file is reported, exit codes follow the contract, and
//! the JSON document has the contract's fields.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rke2ops_tests::ground::built_binary;
use rke2ops_tests::sim::tree::{
    Breakage, ClusterCas, GeneratedTree, Role, TreeSpec, Validity, generate,
};
use serde_json::Value;
use time::OffsetDateTime;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 10, 1));

fn tree(dir: &Path, role: Role, tweak: impl FnOnce(TreeSpec) -> TreeSpec) -> GeneratedTree {
    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate(now).expect("CAs");
    let mut spec = TreeSpec::new(role, "node-1", IP, dir.join("data"), now);
    spec.config_dir = Some(dir.join("etc"));
    generate(&tweak(spec), &cas).expect("tree")
}

fn agent_check(tree: &GeneratedTree, extra: &[&str]) -> Output {
    let config_dir = tree.config_dir.as_ref().expect("config dir");
    Command::new(built_binary("rke2-node-agent"))
        .arg("check")
        .arg("--data-dir")
        .arg(&tree.data_dir)
        .arg("--admin-kubeconfig")
        .arg(config_dir.join("rke2.yaml"))
        // An absent default config file is fine; never read the host's.
        .env("RKE2OPS_CONFIG", "/dev/null")
        .args(extra)
        .output()
        .expect("agent runs")
}

fn rke2_check(tree: &GeneratedTree) -> String {
    let out = Command::new(built_binary("rke2"))
        .args(["certificate", "check", "--output", "table", "--data-dir"])
        .arg(&tree.data_dir)
        .output()
        .expect("simulated rke2 runs");
    assert!(
        out.status.success(),
        "rke2 check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Table rows (after the empty line, header and dashes) split into trimmed cells.
fn rows(table: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&""),
        "table starts with an empty line:\n{table}"
    );
    assert!(lines[1].starts_with("FILENAME"), "header:\n{table}");
    assert!(lines[2].starts_with("--------"), "dashes:\n{table}");
    lines[3..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn status_of(doc: &Value, path: &str, index: u64) -> String {
    doc["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["path"] == path && c["index"] == index)
        .unwrap_or_else(|| panic!("{path}#{index} not in output"))["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

/// Every row RKE2 prints, the agent prints identically (the agent prints more: CA files and
/// kubeconfigs, which RKE2's check skips). Residual texts can differ by a rounding step when
/// the two runs straddle a boundary; trees use whole-day offsets, far from boundaries.
fn assert_agent_covers_rke2(tree: &GeneratedTree) {
    let rke2_rows = rows(&rke2_check(tree));
    let out = agent_check(tree, &[]);
    let agent_table = String::from_utf8(out.stdout).expect("utf-8");
    let agent_rows = rows(&agent_table);
    assert!(!rke2_rows.is_empty());
    let mut remaining: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for row in &agent_rows {
        *remaining.entry(row.clone()).or_default() += 1;
    }
    for row in &rke2_rows {
        let n = remaining.get_mut(row).unwrap_or_else(|| {
            panic!("rke2 row {row:?} missing from the agent's table:\n{agent_table}")
        });
        assert!(
            *n > 0,
            "rke2 row {row:?} appears more often than in the agent's table"
        );
        *n -= 1;
    }
}

#[test]
fn server_table_agrees_with_rke2_for_every_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = tree(dir.path(), Role::Server, |s| {
        s.with_validity(
            "server/tls/serving-kube-apiserver.crt",
            Validity::ExpiresIn(Duration::from_secs(30 * 86_400)),
        )
        .with_validity(
            "server/tls/client-admin.crt",
            Validity::Expired(Duration::from_secs(2 * 86_400)),
        )
        .with_validity(
            "server/tls/etcd/client.crt",
            Validity::NotYetValid(Duration::from_secs(3 * 86_400)),
        )
    });
    assert_agent_covers_rke2(&tree);
}

#[test]
fn agent_node_table_agrees_with_rke2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = tree(dir.path(), Role::Agent, |s| {
        s.with_validity(
            "agent/client-kubelet.crt",
            Validity::ExpiresIn(Duration::from_secs(100 * 86_400)),
        )
    });
    assert_agent_covers_rke2(&tree);
    let out = agent_check(&tree, &["--output", "json"]);
    let doc = json(&out);
    assert_eq!(status_of(&doc, "agent/client-kubelet.crt", 0), "WARNING");
    assert_eq!(out.status.code(), Some(1), "warning → exit 1");
}

#[test]
fn exit_codes_follow_the_worst_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = tree(&dir.path().join("ok"), Role::Server, |s| s);
    assert_eq!(agent_check(&ok, &[]).status.code(), Some(0));

    let warn = tree(&dir.path().join("warn"), Role::Server, |s| {
        s.with_validity(
            "server/tls/client-scheduler.crt",
            Validity::ExpiresIn(Duration::from_secs(60 * 86_400)),
        )
    });
    assert_eq!(agent_check(&warn, &[]).status.code(), Some(1));
    // A narrower warning window makes the same tree OK.
    assert_eq!(
        agent_check(&warn, &["--warn-days", "30"]).status.code(),
        Some(0)
    );

    let expired = tree(&dir.path().join("expired"), Role::Server, |s| {
        s.with_validity(
            "server/tls/client-scheduler.crt",
            Validity::Expired(Duration::from_secs(86_400)),
        )
    });
    assert_eq!(agent_check(&expired, &[]).status.code(), Some(2));

    let future = tree(&dir.path().join("future"), Role::Agent, |s| {
        s.with_validity(
            "agent/serving-kubelet.crt",
            Validity::NotYetValid(Duration::from_secs(86_400)),
        )
    });
    let out = agent_check(&future, &["-o", "json"]);
    assert_eq!(
        status_of(&json(&out), "agent/serving-kubelet.crt", 0),
        "NOT YET VALID"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_kind_of_broken_file_is_an_error_entry_and_the_scan_goes_on() {
    let expected: [(&str, Breakage, &str); 10] = [
        ("server/tls/client-admin.crt", Breakage::Empty, "empty"),
        (
            "server/tls/client-controller.crt",
            Breakage::NoPemData,
            "no_pem_data",
        ),
        (
            "server/tls/client-scheduler.crt",
            Breakage::BadDer,
            "bad_der",
        ),
        (
            "server/tls/client-supervisor.crt",
            Breakage::Truncated,
            "bad_der",
        ),
        (
            "server/tls/client-kube-proxy.crt",
            Breakage::Unreadable,
            "unreadable",
        ),
        (
            "server/tls/client-auth-proxy.crt",
            Breakage::DanglingSymlink,
            "dangling_symlink",
        ),
        (
            "server/tls/client-rke2-controller.crt",
            Breakage::LoopingSymlink,
            "symlink_loop",
        ),
        (
            "server/tls/etcd/client.crt",
            Breakage::Oversized,
            "too_large",
        ),
        (
            "server/tls/etcd/server-client.crt",
            Breakage::KeyMismatch,
            "key_mismatch",
        ),
        (
            "server/tls/serving-kube-apiserver.crt",
            Breakage::ForeignIssuer,
            "chain_invalid",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = tree(dir.path(), Role::Server, |mut s| {
        for (path, breakage, _) in expected {
            s = s.with_breakage(path, breakage);
        }
        s
    });
    let out = agent_check(&tree, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "broken files → exit 2");
    let doc = json(&out);
    let errors = doc["errors"].as_array().expect("errors");
    for (path, _, kind) in expected {
        assert!(
            errors.iter().any(|e| e["path"] == path
                && e["kind"] == kind
                && !e["reason"].as_str().unwrap_or("").is_empty()),
            "no {kind} error for {path}: {errors:#?}"
        );
    }
    // Untouched files are still inventoried, with verified chains and matching keys.
    let certs = doc["certificates"].as_array().expect("certificates");
    let kubelet = certs
        .iter()
        .find(|c| c["path"] == "agent/client-kubelet.crt" && c["index"] == 0)
        .expect("agent/client-kubelet.crt still scanned");
    assert_eq!(kubelet["chain"]["result"], "verified");
    assert_eq!(kubelet["chain"]["ca_path"], "agent/client-ca.crt");
    assert_eq!(kubelet["key"]["result"], "matches");

    // The table lists the same problems after the rows.
    let table = String::from_utf8(agent_check(&tree, &[]).stdout).expect("utf-8");
    for (path, _, _) in expected {
        assert!(
            table.contains(&format!("error: {path}: ")),
            "table lacks {path}:\n{table}"
        );
    }
}

#[test]
fn json_has_the_contract_fields_and_the_renewal_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = tree(dir.path(), Role::Server, |s| {
        s.with_validity(
            "server/tls/client-supervisor.crt",
            Validity::ExpiresIn(Duration::from_secs(90 * 86_400)),
        )
    });
    // Backups under both names; the newest must be reported first.
    std::fs::create_dir_all(tree.data_dir.join("server/tls-1700000000")).expect("backup");
    std::fs::create_dir_all(tree.data_dir.join("server/tls-2025-01-02T03-04-05")).expect("backup");
    std::fs::create_dir_all(tree.data_dir.join("server/tls-notabackup")).expect("dir");
    let out = agent_check(&tree, &["--output", "json"]);
    let doc = json(&out);
    let cert = &doc["certificates"][0];
    for key in [
        "path",
        "filename",
        "subject",
        "issuer",
        "serial",
        "usages",
        "is_ca",
        "sans",
        "not_before",
        "not_after",
        "residual_seconds",
        "status",
    ] {
        assert!(cert.get(key).is_some(), "certificate lacks {key}: {cert:#}");
    }
    assert!(
        doc["errors"].as_array().expect("errors").is_empty(),
        "{:#}",
        doc["errors"]
    );
    let supervisor = tree
        .cert("server/tls/client-supervisor.crt")
        .expect("generated");
    let deadline = OffsetDateTime::parse(
        doc["renewal_deadline"].as_str().expect("deadline"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(
        deadline, supervisor.not_after,
        "deadline = earliest leaf NotAfter"
    );
    assert_eq!(doc["in_renewal_window"], true);
    assert_eq!(doc["backups"][0]["path"], "server/tls-2025-01-02T03-04-05");
    assert_eq!(doc["backups"][1]["path"], "server/tls-1700000000");
    assert_eq!(doc["backups"].as_array().map(Vec::len), Some(2));
    // Paths are relative to the data dir, times are RFC 3339 UTC.
    let admin = doc["certificates"]
        .as_array()
        .expect("certs")
        .iter()
        .find(|c| c["path"] == "server/tls/client-admin.crt")
        .expect("admin cert");
    assert!(admin["not_after"].as_str().expect("time").ends_with('Z'));
    // Names print in certificate (RDN sequence) order, as openssl does.
    assert_eq!(admin["subject"], "O=system:masters, CN=system:admin");
    assert_eq!(admin["usages"], serde_json::json!(["ClientAuth"]));
    // The admin kubeconfig's embedded client certificate is inventoried and its key matches.
    let kubeconfig = tree.config_dir.as_ref().expect("config").join("rke2.yaml");
    let embedded = doc["certificates"]
        .as_array()
        .expect("certs")
        .iter()
        .find(|c| c["path"] == kubeconfig.display().to_string() && c["is_ca"] == false)
        .expect("rke2.yaml client certificate");
    assert_eq!(embedded["key"]["result"], "matches");
    assert_eq!(embedded["chain"]["result"], "verified");
}

#[test]
fn configured_kubeconfig_that_is_missing_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = tree(dir.path(), Role::Server, |s| s);
    let missing = dir.path().join("copies/admin.yaml");
    let out = agent_check(
        &tree,
        &[
            "--kubeconfig",
            missing.to_str().expect("utf-8"),
            "-o",
            "json",
        ],
    );
    let doc = json(&out);
    let errors = doc["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == missing.display().to_string()),
        "{errors:#?}"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_config_names_the_key_and_line_and_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node-agent.toml");
    std::fs::write(&config, "warn_days = 30\nmetrics_adr = \"1.2.3.4:5\"\n").expect("write");
    let out = Command::new(built_binary("rke2-node-agent"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("metrics_adr") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn unknown_flag_is_a_usage_error_not_a_certificate_verdict() {
    let out = Command::new(built_binary("rke2-node-agent"))
        .args(["check", "--frobnicate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
}
