//! Upgrades of RPM installs beside tarball ones, end to end on the proving ground: RPM nodes
//! have their own RPM database and `/usr/bin` (the simulated releases built as RKE2's
//! packages, signed, served as RKE2's per-minor repositories with the key at
//! `/rpm/public.key`), the real agent under its shipped unit runs dnf, yum (dnf's, as on
//! EL8+) or zypper outside its sandbox (`systemd-run`), checks signatures against the
//! configured key, and a real hub drives one plan over both methods.
//!
//! Needs root, `rpm`, `rpmbuild`, `createrepo_c`, `gpg`, `dnf` and `zypper`
//! (`scripts/install-test-deps.sh`), and `cargo build --workspace --bins` first.

use std::time::Duration;

use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::plans::{hub_address, mirror, start_hub, wait_state, wait_until};
use rke2ops_tests::sim::cluster::{self, BootOptions, SimCluster, SimNode};
use rke2ops_tests::sim::mirror::{Mirror, MirrorHandle};
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION};
use rke2ops_tests::sim::rpm::{self, PackageTool, RpmRepo, UNTRUSTED_VERSION};
use rke2ops_tests::sim::tree::ClusterCas;
use serde_json::Value;

/// The RPM repositories (both releases and the untrusted one), served in the ground: the
/// mirror, the repository URL and the key's URL.
fn rpm_mirror() -> (MirrorHandle, String, String) {
    let repo = rpm::shared_rpm_repo().expect("rpm repository");
    let mirror = Mirror::serve_in_ground(&repo.releases_dir, vec![]).expect("rpm mirror");
    let url = RpmRepo::url(&mirror.base_url());
    let key = RpmRepo::key_url(&mirror.base_url());
    (mirror, url, key)
}

/// A cluster of `servers` + `agents` where `rpm_nodes` are RPM installs of the old release
/// (from `repo_url`) and the others tarball installs of it.
fn boot(
    servers: usize,
    agents: usize,
    rpm_nodes: &[(&str, PackageTool)],
    repo_url: &str,
) -> SimCluster {
    let cas = ClusterCas::generate(time::OffsetDateTime::now_utc() - time::Duration::days(30))
        .expect("cas");
    let mut options = BootOptions::default()
        .rpm_repo(repo_url)
        .rpm_version(OLD_VERSION);
    for (name, tool) in rpm_nodes {
        options = options.rpm_node(name, *tool);
    }
    let cluster =
        SimCluster::boot_with_options(cas, servers, agents, &options, |_, s| s).expect("cluster");
    for sim in cluster.nodes() {
        if sim.package_tool.is_none() {
            release::install_rke2(&sim.node, OLD_VERSION).expect("install old");
            sim.node
                .systemctl(&["restart", sim.unit()])
                .expect("restart");
        }
        sim.node
            .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(90))
            .expect("active");
    }
    cluster
}

/// Enrolls every node: RPM nodes with `repository` (a URL or a folder on the node), the
/// signing key `gpg_key`, and their package manager, except yum nodes, whose agent finds
/// yum by itself (there is no dnf on them).
fn enroll(cluster: &SimCluster, hub: &Hub, repository: &str, gpg_key: &str) {
    for sim in cluster.nodes() {
        let mut extra = "heartbeat_secs = 2\nready_timeout_secs = 30\n".to_owned();
        if let Some(tool) = sim.package_tool {
            extra.push_str(&format!(
                "rpm_repository = \"{repository}\"\nrpm_os = \"centos/9\"\nrpm_gpg_key = \"{gpg_key}\"\n"
            ));
            if tool != PackageTool::Yum {
                extra.push_str(&format!("package_manager = \"{}\"\n", tool.name()));
            }
        }
        rke2ops_tests::hub::enroll_agent(&sim.node, hub, &extra).expect("enroll");
    }
    let count = cluster.nodes().count();
    wait_until(
        "every node online with its method",
        Duration::from_secs(90),
        || {
            hub.json(&["nodes"])["nodes"].as_array().is_some_and(|n| {
                n.len() == count
                    && n.iter()
                        .all(|n| n["online"] == true && n["install_method"] != "")
            })
        },
    );
}

/// The air-gap folder on an air-gapped RPM node (`/var/lib` is private to each node).
const AIRGAP: &str = "/var/lib/rke2-airgap";

/// `rpm -q rke2-common` on the node (`rke2-common-<version>-<release>.<arch>`).
fn rpm_q(sim: &SimNode) -> String {
    sim.node
        .exec(&["rpm", "-q", "rke2-common"])
        .expect("rpm -q")
        .stdout
        .trim()
        .to_owned()
}

fn node<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {view:#}"))
}

fn method_of(hub: &Hub, name: &str) -> String {
    let nodes = hub.json(&["nodes"]);
    node(&nodes, name)["install_method"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Aborts a halted plan (it uncordons what it cordoned).
fn abort(hub: &Hub, id: &str) {
    let out = tokio::task::block_in_place(|| hub.run(&["abort", id]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates an upgrade plan to NEW_VERSION, as an operator would once the cluster is healthy
/// again: the preflight refuses it while a server just rolled back is still rejoining etcd.
fn upgrade(hub: &Hub, extra: &[&str]) -> String {
    upgrade_to(hub, NEW_VERSION, extra)
}

/// [`upgrade`] to `version`.
fn upgrade_to(hub: &Hub, version: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "upgrade",
        "--version",
        version,
        "--ready-timeout",
        "40s",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let started = std::time::Instant::now();
    tokio::task::block_in_place(|| {
        loop {
            let out = hub.run(&args);
            if out.status.success() {
                let view: Value = serde_json::from_slice(&out.stdout).expect("plan json");
                return view["id"].as_str().expect("plan id").to_owned();
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                err.contains("preflight") && started.elapsed() < Duration::from_secs(90),
                "upgrade refused: {err}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    })
}

#[test]
fn signed_rpm_servers_and_tarball_workers_upgrade_in_one_plan_foreign_signatures_are_refused_and_a_failed_start_rolls_back_with_yum()
 {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let (_rpm_mirror, repo_url, key_url) = rpm_mirror();
        let tarballs = mirror();
        // server-1 has yum (dnf's, as on EL8+) and no dnf; it takes the refused upgrade and
        // the rollback.
        let cluster = tokio::task::block_in_place(|| {
            boot(
                3,
                1,
                &[
                    ("server-1", PackageTool::Yum),
                    ("server-2", PackageTool::Dnf),
                    ("server-3", PackageTool::Zypper),
                ],
                &repo_url,
            )
        });
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(
                state.path(),
                &hub_addr.ip().to_string(),
                &cluster,
                Some(&tarballs),
            )
        });
        tokio::task::block_in_place(|| enroll(&cluster, &hub, &repo_url, &key_url));
        let s1 = &cluster.servers[0];
        assert!(
            !s1.node
                .exec(&["test", "-e", "/usr/bin/dnf"])
                .expect("test")
                .success(),
            "a yum node has no dnf"
        );
        assert_eq!(method_of(&hub, "server-1"), "rpm");
        assert_eq!(method_of(&hub, "agent-1"), "tarball");
        assert!(
            rpm_q(s1).starts_with("rke2-common-1.33.5~rke2r1-"),
            "{}",
            rpm_q(s1)
        );
        let table = hub.run(&["nodes"]);
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        assert!(
            table.lines().next().is_some_and(|h| h.ends_with("METHOD")),
            "{table}"
        );

        // The dry run says, per node, how it would be upgraded.
        let preview = tokio::task::block_in_place(|| {
            hub.json(&["upgrade", "--version", NEW_VERSION, "--dry-run"])
        });
        let p = &node(&preview, "server-1")["preview"];
        assert_eq!(p["install_method"], "rpm", "{preview:#}");
        assert_eq!(p["current_version"], OLD_VERSION);
        assert_eq!(p["etcd_snapshot"], true);
        let fetch = p["fetch"].as_str().expect("fetch");
        assert!(
            fetch.contains("rke2-server-1.34.1~rke2r1")
                && fetch.contains("with yum")
                && fetch.contains(&repo_url),
            "the agent picked yum by itself: {fetch}"
        );
        let fetch = node(&preview, "server-2")["preview"]["fetch"].to_string();
        assert!(fetch.contains("with dnf"), "{fetch}");
        let p = &node(&preview, "agent-1")["preview"];
        assert_eq!(p["install_method"], "tarball");
        assert_eq!(p["etcd_snapshot"], false);
        assert!(
            p["fetch"].as_str().is_some_and(
                |f| f.contains("rke2.linux-amd64.tar.gz") && f.contains("into /usr/local")
            ),
            "{p}"
        );
        let text = hub.run(&["upgrade", "--version", NEW_VERSION, "--dry-run"]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.contains("NODE") && text.contains("SNAPSHOT"), "{text}");

        // A release whose rke2-common is signed by another key: refused before anything is
        // installed, naming the file.
        let id = upgrade_to(&hub, UNTRUSTED_VERSION, &[]);
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(300))
        });
        let reason = halted["reason"].as_str().expect("reason");
        // yum (dnf) checks signatures as it downloads from a gpgcheck=1 repository; the
        // agent's own check (rpm -K) would refuse it next.
        assert!(
            reason.contains("server-1")
                && reason.contains("fetch-artifacts")
                && reason.contains(
                    "Public key for rke2-common-1.34.2~rke2r1-0.x86_64.rpm is not installed"
                ),
            "{reason}"
        );
        assert!(
            !reason.contains("rke2-server-1.34.2"),
            "the server package is signed by the key: {reason}"
        );
        assert!(
            rpm_q(s1).starts_with("rke2-common-1.33.5~rke2r1-"),
            "nothing installed: {}",
            rpm_q(s1)
        );
        assert_eq!(node(&halted, "server-2")["phase"], "pending", "{halted:#}");
        abort(&hub, &id);

        // The new release never starts on server-1: yum downgrades the packages back.
        cluster::set_fault(&s1.node, "fail-start-version", NEW_VERSION).expect("fault");
        let id = upgrade(&hub, &[]);
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(300))
        });
        let n = node(&halted, "server-1");
        assert_eq!(n["phase"], "failed", "{halted:#}");
        assert!(
            rpm_q(s1).starts_with("rke2-common-1.33.5~rke2r1-"),
            "rolled back to the previous packages: {}",
            rpm_q(s1)
        );
        let events = halted["events"].to_string();
        assert!(
            events.contains("yum reinstalled rke2-common-1.33.5~rke2r1"),
            "{events}"
        );
        let version = s1
            .node
            .exec(&["/usr/bin/rke2", "--version"])
            .expect("version");
        assert!(version.stdout.contains(OLD_VERSION), "{}", version.stdout);
        tokio::task::block_in_place(|| {
            s1.node
                .wait_for_unit_state(s1.unit(), "active", Duration::from_secs(60))
                .expect("the previous release runs again");
        });
        cluster::clear_fault(&s1.node, "fail-start-version").expect("clear");
        abort(&hub, &id);

        // One plan upgrades both methods, servers first.
        let id = upgrade(&hub, &[]);
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(400))
        });
        for sim in &cluster.servers {
            assert!(
                rpm_q(sim).starts_with("rke2-common-1.34.1~rke2r1-"),
                "{}: {}",
                sim.node.name(),
                rpm_q(sim)
            );
            // The package's own %postun restarted the unit.
            let n = node(&done, sim.node.name());
            assert!(
                n["etcd_snapshot"].as_str().is_some_and(|s| !s.is_empty()),
                "{n}"
            );
        }
        let events = done["events"].to_string();
        assert!(
            events.contains("restarted by the package's %postun"),
            "{events}"
        );
        // Each RPM server checked its packages against the mirror's key (the step details
        // of its finished operations, in the agent's history; the plan shows recent events
        // only).
        for sim in &cluster.servers {
            let history = sim
                .node
                .read_file("/var/lib/rke2-ops/node-agent/ops/history.jsonl")
                .expect("history");
            let history = String::from_utf8_lossy(&history);
            assert!(
                history.contains(&format!(
                    "packages' digests and signatures OK (signed by {key_url})"
                )),
                "{}: {history}",
                sim.node.name()
            );
            let keys = sim
                .node
                .exec(&["rpm", "-q", "gpg-pubkey"])
                .expect("rpm -q gpg-pubkey");
            assert!(keys.success(), "{}: the key was imported", sim.node.name());
        }
        // The tarball worker got the tarball, and no package.
        let worker = &cluster.agents[0];
        let v = worker
            .node
            .exec(&["/usr/local/bin/rke2", "--version"])
            .expect("version");
        assert!(v.stdout.contains(NEW_VERSION), "{}", v.stdout);
        assert!(
            !worker
                .node
                .exec(&["rpm", "-q", "rke2-common"])
                .expect("rpm")
                .success()
        );
        let listed = hub.json(&["nodes"]);
        for n in listed["nodes"].as_array().expect("nodes") {
            assert_eq!(n["rke2_version"], NEW_VERSION, "{n}");
        }
    });
}

#[test]
fn tarball_servers_and_air_gapped_zypper_workers_upgrade_with_signatures_checked_and_a_node_with_both_methods_is_refused()
 {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let (_rpm_mirror, repo_url, _) = rpm_mirror();
        let tarballs = mirror();
        let cluster = tokio::task::block_in_place(|| {
            boot(1, 1, &[("agent-1", PackageTool::Zypper)], &repo_url)
        });
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(
                state.path(),
                &hub_addr.ip().to_string(),
                &cluster,
                Some(&tarballs),
            )
        });
        // The worker's packages come from an air-gap folder on the node, checked against the
        // key file beside them.
        let worker = &cluster.agents[0];
        let repo = rpm::shared_rpm_repo().expect("rpm repository");
        for version in [NEW_VERSION, UNTRUSTED_VERSION] {
            for entry in std::fs::read_dir(repo.airgap_dir(version)).expect("air-gap folder") {
                let path = entry.expect("entry").path();
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                worker
                    .node
                    .write_file(
                        format!("{AIRGAP}/{version}/{name}"),
                        std::fs::read(&path).expect("read"),
                    )
                    .expect("copy in");
            }
        }
        worker
            .node
            .write_file(
                format!("{AIRGAP}/public.key"),
                std::fs::read(&repo.public_key).expect("key"),
            )
            .expect("key in");
        let key = format!("{AIRGAP}/public.key");
        tokio::task::block_in_place(|| enroll(&cluster, &hub, AIRGAP, &key));
        assert_eq!(method_of(&hub, "server-1"), "tarball");
        assert_eq!(method_of(&hub, "agent-1"), "rpm");

        // A tarball binary beside the packages: the worker is refused, nothing changed.
        release::install_rke2(&worker.node, OLD_VERSION).expect("second install");
        let id = upgrade(&hub, &[]);
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(300))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("agent-1") && reason.contains("both installs found"),
            "{reason}"
        );
        assert!(reason.contains("/usr/local/bin/rke2 (tarball)"), "{reason}");
        assert!(
            rpm_q(worker).starts_with("rke2-common-1.33.5~rke2r1-"),
            "{}",
            rpm_q(worker)
        );
        abort(&hub, &id);
        worker
            .node
            .exec(&["rm", "-f", "/usr/local/bin/rke2"])
            .expect("remove the tarball binary");

        // The folder's release with a foreign-signed rke2-common and an unsigned rke2-agent:
        // the worker's verification refuses both by name, and nothing is installed.
        let id = upgrade_to(&hub, UNTRUSTED_VERSION, &["--node", "agent-1"]);
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(300))
        });
        let reason = halted["reason"].as_str().expect("reason");
        for words in [
            "verify-checksum",
            "rke2-common-1.34.2~rke2r1-0.x86_64.rpm: Header V4 RSA/SHA512 Signature",
            "NOKEY",
            "rke2-agent-1.34.2~rke2r1-0.x86_64.rpm: not signed",
        ] {
            assert!(reason.contains(words), "{words:?} in {reason}");
        }
        assert!(
            rpm_q(worker).starts_with("rke2-common-1.33.5~rke2r1-"),
            "nothing installed: {}",
            rpm_q(worker)
        );
        abort(&hub, &id);

        let id = upgrade(&hub, &[]);
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(300))
        });
        assert!(
            rpm_q(worker).starts_with("rke2-common-1.34.1~rke2r1-"),
            "{}",
            rpm_q(worker)
        );
        assert!(
            !worker
                .node
                .exec(&["test", "-e", "/usr/local/bin/rke2"])
                .expect("test")
                .success(),
            "no tarball install appeared"
        );
        let events = done["events"].to_string();
        assert!(events.contains("zypper installed"), "{events}");
        assert!(
            events.contains(&format!("from the folder {AIRGAP}"))
                && events.contains(&format!("digests and signatures OK (signed by {key})")),
            "{events}"
        );
        let listed = hub.json(&["nodes"]);
        for n in listed["nodes"].as_array().expect("nodes") {
            assert_eq!(n["rke2_version"], NEW_VERSION, "{n}");
        }
    });
}
