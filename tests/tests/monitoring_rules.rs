//! The shipped Prometheus alerting rules (`monitoring/rke2-ops.rules.yml`): valid for
//! Prometheus (`promtool check rules`), behaving as their unit tests say (`promtool test
//! rules` with `monitoring/rke2-ops.rules.test.yml`: which alert fires when, with which labels
//! and words), and built only on metrics the binaries really export, so a renamed metric
//! cannot leave an alert silently watching nothing.
//!
//! Needs `promtool` (Debian's `prometheus`, installed by `scripts/install-test-deps.sh`); it
//! fails, never skips, without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool is installed (scripts/install-test-deps.sh installs Debian's prometheus)")
}

fn rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(monitoring().join("rke2-ops.rules.yml")).expect("rules");
    serde_yaml::from_str(&text).expect("rules are YAML")
}

fn alerts() -> Vec<serde_yaml::Value> {
    rules()["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

/// Every `"rke2ops_..."` string literal in the binaries' sources: the metric names they
/// register.
fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-agent/src"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub/src"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for piece in text.split("\"rke2ops_").skip(1) {
                    if let Some(name) = piece.split('"').next() {
                        names.insert(format!("rke2ops_{name}"));
                    }
                }
            }
        }
    }
    names
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", "rke2-ops.rules.yml"]);
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = promtool(&["test", "rules", "rke2-ops.rules.test.yml"]);
    assert!(
        test.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn every_alert_uses_exported_metrics_and_says_what_to_do() {
    let exported = exported_names();
    assert!(
        exported.contains("rke2ops_renewal_deadline_timestamp_seconds")
            && exported.contains("rke2ops_hub_plans"),
        "the scan finds registered names: {exported:?}"
    );
    let alerts = alerts();
    assert!(alerts.len() >= 9, "{} alerts", alerts.len());
    let tests =
        std::fs::read_to_string(monitoring().join("rke2-ops.rules.test.yml")).expect("tests");
    for alert in &alerts {
        let name = alert["alert"].as_str().expect("alert name");
        let expr = alert["expr"].as_str().expect("expr");
        for metric in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("rke2ops_"))
        {
            assert!(
                exported.contains(metric),
                "{name} uses {metric}, which neither binary exports"
            );
        }
        assert!(
            ["info", "warning", "critical"]
                .contains(&alert["labels"]["severity"].as_str().unwrap_or_default()),
            "{name}: severity"
        );
        for key in ["summary", "description"] {
            assert!(
                !alert["annotations"][key]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{name}: {key}"
            );
        }
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has a case in rke2-ops.rules.test.yml"
        );
    }
}
