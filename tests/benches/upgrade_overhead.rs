//! The agent's own time per upgrade (a bench binary, `harness = false`, proving ground): how
//! long an upgrade takes beyond what it waits for (the package manager, the `rke2` CLI,
//! systemd's jobs and RKE2 becoming ready again). Target: < 200 ms per upgrade.
//!
//! Two single-server clusters on the ground, one per install method: a tarball install and an
//! RPM install (dnf), each upgraded from an air-gap folder on the node by the real agent CLI
//! (`rke2-node-agent upgrade`), then put back on the old release (the tarball binary copied
//! back, or the old packages reinstalled with dnf) for the next round. Each round reads the
//! operation's journal record (`last.json`): every step's time and the part of it spent
//! waiting ([`rke2_node_agent::ops::waits`]); the agent's own time is the difference.
//!
//! Needs root, the RPM tools (`scripts/install-test-deps.sh`) and the binaries built first:
//! `cargo build --workspace --bins && cargo bench -p rke2ops-tests --features e2e --bench
//! upgrade_overhead [-- ROUNDS]` (default 5 rounds per method).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::path::Path;
use std::time::Duration;

use rke2ops_tests::ground::{Node, built_binary, require_root_and_tools};
use rke2ops_tests::sim::cluster::{BootOptions, SimCluster};
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION};
use rke2ops_tests::sim::rpm::{self, PackageTool};
use rke2ops_tests::sim::tree::ClusterCas;

const AGENT: &str = "/usr/local/bin/rke2-node-agent";
const FOLDER: &str = "/var/tmp/rke2-bench";

/// Copies `files` into the node's `FOLDER`.
fn copy_in(node: &Node, files: &[&Path]) {
    for file in files {
        let name = file.file_name().expect("name");
        let target = node.host_path(Path::new(FOLDER).join(name)).expect("path");
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(file, &target).expect("copy");
    }
}

/// One upgrade: total and waited milliseconds, and each step with its own time.
type Round = (u64, u64, Vec<(String, u64)>);

/// One round's totals from the journal record.
fn round(node: &Node, args: &[&str]) -> Round {
    let mut argv = vec![AGENT, "upgrade", "--version", NEW_VERSION];
    argv.extend_from_slice(args);
    let out = node.exec(&argv).expect("exec agent");
    assert!(
        out.success(),
        "upgrade failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    let last = node
        .read_file("/var/lib/rke2-ops/node-agent/ops/last.json")
        .expect("last.json");
    let record: serde_json::Value = serde_json::from_slice(&last).expect("record");
    assert_eq!(record["step"], "done", "{record:#}");
    let mut total = 0;
    let mut waited = 0;
    let mut steps = Vec::new();
    for step in record["log"].as_array().expect("log") {
        let millis = step["millis"].as_u64().unwrap_or(0);
        let wait = step["waited_millis"].as_u64().unwrap_or(0);
        total += millis;
        waited += wait;
        steps.push((
            step["step"].as_str().unwrap_or("?").to_owned(),
            millis.saturating_sub(wait),
        ));
    }
    (total, waited, steps)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn report(method: &str, rounds: &[Round]) {
    let own: Vec<u64> = rounds
        .iter()
        .map(|(t, w, _)| t.saturating_sub(*w))
        .collect();
    let totals: Vec<u64> = rounds.iter().map(|(t, _, _)| *t).collect();
    println!(
        "{method}: {} upgrades; total median {} ms; agent's own time median {} ms, max {} ms (target < 200 ms)",
        rounds.len(),
        median(totals),
        median(own.clone()),
        own.iter().max().copied().unwrap_or(0)
    );
    if let Some((_, _, steps)) = rounds.last() {
        let text: Vec<String> = steps.iter().map(|(s, own)| format!("{s} {own}")).collect();
        println!("  own ms per step (last round): {}", text.join(", "));
    }
}

fn main() {
    require_root_and_tools();
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let new = release::build_release(dir.path(), NEW_VERSION).expect("release");
    let repo = rpm::shared_rpm_repo().expect("rpm repository");
    rke2ops_tests::ground::block_on(async move {
        tokio::task::block_in_place(|| {
            let cas =
                ClusterCas::generate(time::OffsetDateTime::now_utc() - time::Duration::days(30))
                    .expect("cas");
            // Two one-server clusters: a tarball install and an RPM (dnf) install.
            let tar = SimCluster::boot(1, 0).expect("tarball cluster");
            let options = BootOptions::default()
                .rpm_node("server-1", PackageTool::Dnf)
                .rpm_airgap(repo.airgap_dir(OLD_VERSION))
                .rpm_version(OLD_VERSION);
            let rpm_cluster =
                SimCluster::boot_with_options(cas, 1, 0, &options, |_, s| s).expect("rpm cluster");

            let t = &tar.servers[0];
            release::install_rke2(&t.node, OLD_VERSION).expect("old");
            t.node.systemctl(&["restart", t.unit()]).expect("restart");
            t.node
                .install_binary(built_binary("rke2-node-agent"), AGENT)
                .expect("agent");
            copy_in(&t.node, &[&new.tarball, &new.sums]);

            let r = &rpm_cluster.servers[0];
            r.node
                .install_binary(built_binary("rke2-node-agent"), AGENT)
                .expect("agent");
            let airgap_new = repo.airgap_dir(NEW_VERSION);
            let airgap_old = repo.airgap_dir(OLD_VERSION);
            for entry in std::fs::read_dir(&airgap_new).expect("airgap") {
                copy_in(&r.node, &[&entry.expect("entry").path()]);
            }
            let old_rpms: Vec<String> = std::fs::read_dir(&airgap_old)
                .expect("airgap old")
                .map(|e| e.expect("entry").path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("rke2-common") || n.starts_with("rke2-server")
                    })
                })
                .map(|p| {
                    let name = p.file_name().expect("name").to_string_lossy().into_owned();
                    let on_node = format!("/var/tmp/rke2-bench-old/{name}");
                    let host = r.node.host_path(&on_node).expect("path");
                    std::fs::create_dir_all(host.parent().expect("parent")).expect("mkdir");
                    std::fs::copy(&p, host).expect("copy");
                    on_node
                })
                .collect();

            let mut tar_rounds = Vec::new();
            let mut rpm_rounds = Vec::new();
            for i in 0..rounds {
                for sim in [t, r] {
                    sim.node
                        .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(60))
                        .expect("active");
                }
                tar_rounds.push(round(
                    &t.node,
                    &["--source", FOLDER, "--ready-timeout-secs", "60"],
                ));
                rpm_rounds.push(round(
                    &r.node,
                    &[
                        "--rpm-repository",
                        FOLDER,
                        "--rpm-os",
                        "centos/9",
                        "--rpm-gpg-key",
                        "",
                        "--ready-timeout-secs",
                        "60",
                    ],
                ));
                eprintln!("round {} of {rounds} done", i + 1);
                // Back to the old release for the next round.
                release::install_rke2(&t.node, OLD_VERSION).expect("old");
                t.node.systemctl(&["restart", t.unit()]).expect("restart");
                let mut argv = vec!["dnf", "-y", "install"];
                argv.extend(old_rpms.iter().map(String::as_str));
                let out = r.node.exec(&argv).expect("dnf downgrade");
                assert!(out.success(), "{}{}", out.stdout, out.stderr);
            }
            report("tarball", &tar_rounds);
            report("rpm (dnf)", &rpm_rounds);
        });
    });
}
