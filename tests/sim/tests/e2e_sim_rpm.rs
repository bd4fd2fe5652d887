//! RKE2's RPM packages on proving-ground nodes: install with `dnf` or `zypper` from the
//! simulated repositories (served by the mirror under `/rpm/`) or from the air-gap folder,
//! pinned upgrades and downgrades, the `%postun` try-restart, and a mixed cluster (tarball
//! server, RPM agent).
//!
//! Needs root, the proving ground's tools plus `rpm createrepo-c dnf zypper`
//! (`scripts/install-test-deps.sh`) and `cargo build -p rke2ops-sim` first. The repository is
//! built once per simulator build ([`rpm::shared_rpm_repo`]).

use std::path::Path;
use std::time::Duration;

use rke2ops_ground::{Node, require_root_and_tools};
use rke2ops_sim::cluster::{BootOptions, RKE2_BIN, SimCluster, https_get};
use rke2ops_sim::mirror::{Mirror, MirrorHandle};
use rke2ops_sim::release::{NEW_VERSION, OLD_VERSION};
use rke2ops_sim::rpm::{self, PackageTool, RpmRepo};
use rke2ops_sim::tree::{ClusterCas, Role};
use time::OffsetDateTime;

const SERVER: &str = "rke2-server.service";

fn repo_and_mirror() -> (&'static RpmRepo, MirrorHandle) {
    require_root_and_tools();
    let repo = rpm::shared_rpm_repo().expect("rpm repository");
    let mirror = Mirror::serve_in_ground(&repo.releases_dir, Vec::new()).expect("mirror");
    (repo, mirror)
}

fn cas() -> ClusterCas {
    ClusterCas::generate(OffsetDateTime::now_utc() - time::Duration::days(30)).expect("CAs")
}

fn rpm_q(node: &Node, package: &str) -> String {
    node.exec_ok(&["rpm", "-q", package])
        .expect("rpm -q")
        .trim()
        .to_owned()
}

fn package_version(version: &str) -> String {
    rpm::rpm_version(version).expect("rke2 version").0
}

/// The RPM node's invariants: the package's binary and unit, nothing under `/usr/local`,
/// nothing on the host.
fn assert_rpm_install(node: &Node, role: Role, version: &str) {
    let common = rpm_q(node, "rke2-common");
    assert_eq!(
        common,
        format!("rke2-common-{}-0.x86_64", package_version(version))
    );
    let out = node
        .exec_ok(&["/usr/bin/rke2", "--version"])
        .expect("rke2 --version");
    assert!(out.contains(version), "{out}");
    assert!(
        !node
            .exec(&["test", "-e", RKE2_BIN])
            .expect("test")
            .success(),
        "an RPM node has no {RKE2_BIN}"
    );
    let unit = format!(
        "rke2-{}.service",
        if role == Role::Server {
            "server"
        } else {
            "agent"
        }
    );
    // Debian's merged /usr: systemd may name it through the /lib symlink.
    let fragment = node
        .unit_property(&unit, "FragmentPath")
        .expect("FragmentPath");
    assert!(
        [
            format!("/usr/lib/systemd/system/{unit}"),
            format!("/lib/systemd/system/{unit}")
        ]
        .contains(&fragment),
        "{fragment}"
    );
    let owner = node
        .exec_ok(&["rpm", "-qf", &format!("/usr/lib/systemd/system/{unit}")])
        .expect("rpm -qf");
    assert!(owner.starts_with(&unit.replace(".service", "-")), "{owner}");
    assert!(node.host_path("/usr/bin/rke2").expect("path").is_file());
    assert!(
        !Path::new("/usr/bin/rke2").exists(),
        "the host's /usr/bin has no rke2"
    );
    assert!(
        !Path::new("/usr/share/rke2").exists(),
        "nor /usr/share/rke2"
    );
    assert!(
        !Path::new("/etc/sysconfig/rke2-server").exists(),
        "nor /etc/sysconfig"
    );
}

/// Upgrades the running server of `cluster` from OLD_VERSION to NEW_VERSION with `tool`:
/// the old package's `%postun` try-restarts the unit, which then runs the new binary.
fn upgrade_running_server(cluster: &SimCluster, url: &str, tool: PackageTool) {
    let node = &cluster.servers[0].node;
    assert_rpm_install(node, Role::Server, OLD_VERSION);
    let (_, body) =
        https_get(node, 6443, "/version", Some("server/tls/client-admin")).expect("/version");
    assert!(body.contains(OLD_VERSION), "{body}");
    let pid_before = node.unit_property(SERVER, "MainPID").expect("MainPID");

    rpm::install_rke2_rpm(node, url, NEW_VERSION, Role::Server, tool).expect("upgrade");
    assert_rpm_install(node, Role::Server, NEW_VERSION);
    assert_eq!(
        rpm_q(node, "rke2-server"),
        format!("rke2-server-{}-0.x86_64", package_version(NEW_VERSION))
    );
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(30))
        .expect("active after the restart");
    let pid_after = node.unit_property(SERVER, "MainPID").expect("MainPID");
    assert_ne!(pid_before, pid_after, "%postun try-restarted the unit");
    let (_, body) =
        https_get(node, 6443, "/version", Some("server/tls/client-admin")).expect("/version");
    assert!(
        body.contains(NEW_VERSION),
        "the restarted server runs the new binary: {body}"
    );
}

#[test]
fn dnf_installs_a_pinned_server_upgrades_it_with_a_restart_and_downgrades() {
    let (_repo, mirror) = repo_and_mirror();
    let url = RpmRepo::url(&mirror.base_url());
    let options = BootOptions::default()
        .rpm_node("server-1", PackageTool::Dnf)
        .rpm_repo(&url)
        .rpm_version(OLD_VERSION);
    let cluster = SimCluster::boot_with_options(cas(), 1, 0, &options, |_, s| s).expect("boot");
    let node = &cluster.servers[0].node;
    let repo_file = String::from_utf8(node.read_file("/etc/yum.repos.d/rke2.repo").expect("repo"))
        .expect("utf-8");
    assert!(repo_file.contains("[rke2-1.33]"), "{repo_file}");
    assert_eq!(rpm_q(node, "rke2-selinux"), "rke2-selinux-0.20-1.noarch");
    upgrade_running_server(&cluster, &url, PackageTool::Dnf);
    rpm::install_rke2_rpm(node, &url, OLD_VERSION, Role::Server, PackageTool::Dnf)
        .expect("downgrade");
    assert_rpm_install(node, Role::Server, OLD_VERSION);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.starts_with("/rpm/stable/1.34/centos/9/x86_64/")),
        "{:?}",
        mirror.requests()
    );
}

#[test]
fn zypper_installs_a_pinned_server_upgrades_it_and_downgrades_with_oldpackage() {
    let (_repo, mirror) = repo_and_mirror();
    let url = RpmRepo::url(&mirror.base_url());
    let options = BootOptions::default()
        .rpm_node("server-1", PackageTool::Zypper)
        .rpm_repo(&url)
        .rpm_version(OLD_VERSION);
    let cluster = SimCluster::boot_with_options(cas(), 1, 0, &options, |_, s| s).expect("boot");
    upgrade_running_server(&cluster, &url, PackageTool::Zypper);
    let node = &cluster.servers[0].node;
    rpm::install_rke2_rpm(node, &url, OLD_VERSION, Role::Server, PackageTool::Zypper)
        .expect("downgrade");
    assert_rpm_install(node, Role::Server, OLD_VERSION);
}

#[test]
fn mixed_cluster_runs_a_tarball_server_and_an_air_gap_rpm_agent() {
    let (repo, _mirror) = repo_and_mirror();
    let options = BootOptions::default()
        .rpm_node("agent-1", PackageTool::Dnf)
        .rpm_airgap(repo.airgap_dir(NEW_VERSION))
        .rpm_version(NEW_VERSION);
    let cluster = SimCluster::boot_with_options(cas(), 1, 1, &options, |_, s| s).expect("boot");
    let server = &cluster.servers[0];
    let agent = &cluster.agents[0];
    assert_eq!(server.package_tool, None);
    assert_eq!(agent.package_tool, Some(PackageTool::Dnf));
    // The tarball server is unchanged.
    assert!(
        server
            .node
            .exec(&["test", "-x", RKE2_BIN])
            .expect("test")
            .success()
    );
    assert!(
        !server
            .node
            .exec(&["rpm", "-q", "rke2-common"])
            .expect("rpm")
            .success()
    );
    assert_rpm_install(&agent.node, Role::Agent, NEW_VERSION);
    assert_eq!(
        rpm_q(&agent.node, "rke2-agent"),
        format!("rke2-agent-{}-0.x86_64", package_version(NEW_VERSION))
    );
    assert!(
        !agent
            .node
            .exec(&["rpm", "-q", "rke2-server"])
            .expect("rpm")
            .success()
    );
    assert_eq!(
        agent
            .node
            .unit_property("rke2-agent.service", "ActiveState")
            .expect("state"),
        "active"
    );
}
