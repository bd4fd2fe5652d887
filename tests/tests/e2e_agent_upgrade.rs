//! RKE2 upgrades by the real `rke2-node-agent` on simulated RKE2 nodes (real systemd + D-Bus
//! per node, real etcd): a node runs the simulated v1.33.5+rke2r1 release and is upgraded to
//! v1.34.1+rke2r1 from the simulated artifact mirror (or an air-gap folder). The version lives
//! in the `rke2` binary itself (`sim::version` trailer), so what runs is what was installed.
//!
//! Needs root and `cargo build --workspace --bins` first. The mirrors listen on 127.0.50.1.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rke2ops_tests::ground::{ExecOutput, Node, built_binary, require_root_and_tools};
use rke2ops_tests::sim::cluster::{self, RKE2_BIN, SimCluster, SimNode};
use rke2ops_tests::sim::mirror::{Mirror, MirrorHandle};
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION, Release};

const AGENT: &str = "/usr/local/bin/rke2-node-agent";
const JOURNAL: &str = "/var/lib/rke2-ops/node-agent/ops";

/// Both releases, built once per test binary.
fn releases() -> &'static (PathBuf, Release, Release) {
    static RELEASES: OnceLock<(PathBuf, Release, Release)> = OnceLock::new();
    RELEASES.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rke2ops-releases-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let started = Instant::now();
        let old = release::build_release(&dir, OLD_VERSION).expect("old release");
        let new = release::build_release(&dir, NEW_VERSION).expect("new release");
        eprintln!("two releases built in {:?}", started.elapsed());
        (dir, old, new)
    })
}

/// The shared mirror of the good releases.
fn mirror() -> &'static MirrorHandle {
    static MIRROR: OnceLock<MirrorHandle> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let (dir, _, _) = releases();
        Mirror::serve_in_ground(
            dir,
            vec![
                "stable=v1.33.5+rke2r1".parse().expect("channel"),
                "v1.34=v1.34.1+rke2r1".parse().expect("channel"),
            ],
        )
        .expect("mirror")
    })
}

fn agent(node: &Node, args: &[&str]) -> ExecOutput {
    let mut argv = vec![AGENT];
    argv.extend_from_slice(args);
    let out = node.exec(&argv).expect("exec agent");
    eprintln!(
        "$ rke2-node-agent {}\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out
}

fn running_version(node: &Node) -> String {
    let out = node.exec(&[RKE2_BIN, "--version"]).expect("rke2 --version");
    out.stdout
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned()
}

/// The version the unit's process reports on the apiserver's `/version` (what really runs).
fn served_version(sim: &SimNode) -> String {
    let (status, body) =
        cluster::https_get(&sim.node, 6443, "/version", Some("server/tls/client-admin"))
            .expect("GET /version");
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("version json");
    doc["gitVersion"].as_str().unwrap_or_default().to_owned()
}

/// A one-server cluster running the old release, with the agent installed and pointed at
/// `source`.
fn old_server(source: &str) -> SimCluster {
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let sim = &cluster.servers[0];
    release::install_rke2(&sim.node, OLD_VERSION).expect("install old rke2");
    sim.node
        .systemctl(&["restart", sim.unit()])
        .expect("restart on the old release");
    assert_eq!(running_version(&sim.node), OLD_VERSION);
    assert_eq!(served_version(sim), OLD_VERSION);
    sim.node
        .install_binary(built_binary("rke2-node-agent"), AGENT)
        .expect("install agent");
    let config = format!("ready_timeout_secs = 20\nartifact_source = \"{source}\"\n",);
    sim.node
        .write_file("/etc/rke2-ops/node-agent.toml", config)
        .expect("config");
    cluster
}

fn assert_active(sim: &SimNode) {
    sim.node
        .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(30))
        .expect("RKE2 active");
}

/// The `previous/` folder of the newest operation.
fn previous_binary(node: &Node) -> Option<Vec<u8>> {
    let journal = node.host_path(JOURNAL).expect("path");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&journal)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("previous/bin/rke2").is_file())
        .collect();
    dirs.sort();
    std::fs::read(dirs.last()?.join("previous/bin/rke2")).ok()
}

fn trailer_version(bytes: &[u8]) -> Option<String> {
    let tail = &bytes[bytes.len().saturating_sub(256)..];
    rke2ops_tests::sim::version::parse_trailer(tail).map(|(v, _)| v)
}

#[test]
fn upgrade_installs_the_new_release_keeps_the_previous_binary_and_runs_it() {
    require_root_and_tools();
    let cluster = old_server(&mirror().base_url());
    let sim = &cluster.servers[0];

    let dry = agent(
        &sim.node,
        &["upgrade", "--version", NEW_VERSION, "--dry-run"],
    );
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        dry.stdout
            .contains("v1.34.1%2Brke2r1/rke2.linux-amd64.tar.gz"),
        "dry run names the URL:\n{}",
        dry.stdout
    );
    assert_eq!(
        running_version(&sim.node),
        OLD_VERSION,
        "dry run changed nothing"
    );

    let started = Instant::now();
    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    eprintln!("upgrade took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "upgrade succeeded");
    for step in [
        "check-version ok",
        "preflight ok",
        "fetch-artifacts ok",
        "verify-checksum ok",
        "install-files ok",
        "daemon-reload ok",
        "restart-unit ok",
        "wait-ready ok",
        "verify-version ok",
    ] {
        assert!(out.stdout.contains(step), "{step}:\n{}", out.stdout);
    }
    assert_active(sim);
    assert_eq!(running_version(&sim.node), NEW_VERSION);
    assert_eq!(
        served_version(sim),
        NEW_VERSION,
        "the unit runs the new binary"
    );
    let previous = previous_binary(&sim.node).expect("previous binary kept");
    assert_eq!(trailer_version(&previous).as_deref(), Some(OLD_VERSION));
    let requests = mirror().requests();
    assert!(
        requests
            .iter()
            .any(|r| r == "/v1.34.1%2Brke2r1/sha256sum-amd64.txt"),
        "{requests:?}"
    );

    // Again: already at the target → skipped, nothing fetched.
    let before = mirror().requests().len();
    let again = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    assert_eq!(again.status.code(), Some(0));
    assert!(again.stdout.contains("skipped"), "{}", again.stdout);
    assert_eq!(mirror().requests().len(), before, "nothing fetched");
    // Above the target → skipped too (never a downgrade).
    let lower = agent(&sim.node, &["upgrade", "--version", OLD_VERSION]);
    assert_eq!(lower.status.code(), Some(0));
    assert!(lower.stdout.contains("skipped"), "{}", lower.stdout);
    assert_eq!(running_version(&sim.node), NEW_VERSION);
}

#[test]
fn checksum_mismatch_is_refused_and_nothing_is_installed() {
    require_root_and_tools();
    let (_, _, new) = releases();
    let bad_dir = tempfile::tempdir().expect("tempdir");
    release::with_lying_checksum(bad_dir.path(), NEW_VERSION, new).expect("lying mirror");
    let bad_mirror = Mirror::serve_in_ground(bad_dir.path(), vec![]).expect("mirror");
    let cluster = old_server(&bad_mirror.base_url());
    let sim = &cluster.servers[0];
    let binary_before = sim.node.read_file(RKE2_BIN).expect("read");
    // A source outside the node's allow-list is refused before anything is fetched.
    let allowed = bad_mirror.base_url();
    let out = agent(
        &sim.node,
        &[
            "upgrade",
            "--version",
            NEW_VERSION,
            "--source",
            "/var/tmp/elsewhere",
            "--allowed-artifact-source",
            &allowed,
        ],
    );
    assert!(!out.status.success(), "refused");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains(
            "artifact source /var/tmp/elsewhere is not allowed on this node: \
             `allowed_artifact_sources` lists only"
        ),
        "the list is named:\n{}{}",
        out.stdout,
        out.stderr
    );
    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    assert_eq!(out.status.code(), Some(1), "refused");
    assert!(
        out.stdout.contains("checksum mismatch"),
        "the reason is named:\n{}",
        out.stdout
    );
    assert!(!out.stdout.contains("install-files"), "{}", out.stdout);
    assert_eq!(
        sim.node.read_file(RKE2_BIN).expect("read"),
        binary_before,
        "nothing installed"
    );
    assert_active(sim);
    assert_eq!(served_version(sim), OLD_VERSION);
}

#[test]
fn release_that_never_gets_ready_is_rolled_back_and_reported_failed() {
    require_root_and_tools();
    let cluster = old_server(&mirror().base_url());
    let sim = &cluster.servers[0];
    cluster::set_fault(&sim.node, "never-ready-version", NEW_VERSION).expect("fault");
    let started = Instant::now();
    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    eprintln!("failed upgrade with rollback took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "reported failed");
    assert!(out.stdout.contains("restore-previous ok"), "{}", out.stdout);
    assert!(
        out.stdout.contains("start-after-failure ok"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    assert_active(sim);
    assert_eq!(
        running_version(&sim.node),
        OLD_VERSION,
        "previous binary back"
    );
    assert_eq!(
        served_version(sim),
        OLD_VERSION,
        "the old release runs again"
    );
}

#[test]
fn air_gap_folder_is_an_artifact_source() {
    require_root_and_tools();
    let (_, _, new) = releases();
    let cluster = old_server("/var/tmp/rke2-artifacts");
    let sim = &cluster.servers[0];
    for file in [&new.tarball, &new.sums] {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let target = sim
            .node
            .host_path(Path::new("/var/tmp/rke2-artifacts").join(name))
            .expect("path");
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(file, target).expect("copy");
    }
    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    assert_eq!(out.status.code(), Some(0), "upgrade succeeded");
    assert!(
        out.stdout.contains("/var/tmp/rke2-artifacts"),
        "{}",
        out.stdout
    );
    assert_eq!(served_version(sim), NEW_VERSION);
}

#[test]
fn agent_killed_mid_upgrade_finishes_it_after_restart() {
    require_root_and_tools();
    let cluster = old_server(&mirror().base_url());
    let sim = &cluster.servers[0];
    for point in [
        "fetch-artifacts:after",
        "install-files",
        "install-files:after",
        "restart-unit:after",
        "verify-version",
    ] {
        let out = sim
            .node
            .exec(&[
                "env",
                &format!("RKE2OPS_TEST_CRASH_AT={point}"),
                AGENT,
                "upgrade",
                "--version",
                NEW_VERSION,
            ])
            .expect("exec");
        assert_eq!(
            out.status.code(),
            None,
            "{point}: killed by a signal\n{}{}",
            out.stdout,
            out.stderr
        );
        let resumed = agent(&sim.node, &["resume"]);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{point}: resumed to success\n{}",
            resumed.stdout
        );
        assert_active(sim);
        assert_eq!(running_version(&sim.node), NEW_VERSION, "{point}");
        assert_eq!(served_version(sim), NEW_VERSION, "{point}");
        let previous = previous_binary(&sim.node).expect("previous kept");
        assert_eq!(
            trailer_version(&previous).as_deref(),
            Some(OLD_VERSION),
            "{point}: the previous binary is the old one, never the new"
        );
        // Back to the old release for the next point.
        release::install_rke2(&sim.node, OLD_VERSION).expect("reinstall old");
        sim.node
            .systemctl(&["restart", sim.unit()])
            .expect("restart");
        assert_eq!(served_version(sim), OLD_VERSION, "{point}: reset");
    }
}

/// Rewrites `release`'s tarball into `out/<version>/` entry by entry through `edit` (which
/// may change an entry's mode or add entries), with a sum file that matches: a release a
/// mirror could really publish.
fn repacked_release(
    out: &Path,
    release: &Release,
    edit: impl Fn(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>, &str, &mut tar::Header),
) {
    use sha2::Digest as _;
    use std::io::Read as _;
    let dir = out.join(&release.version);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let tarball = dir.join(release::tarball_name(release::ARCH));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&tarball).expect("create"),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&release.tarball).expect("open"),
    ));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut header = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        edit(&mut builder, &name, &mut header);
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gz");
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&tarball).expect("read")));
    std::fs::write(
        dir.join(release::sums_name(release::ARCH)),
        format!("{sha256}  {}\n", release::tarball_name(release::ARCH)),
    )
    .expect("sums");
}

fn mode_on_node(node: &Node, path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(node.host_path(path).expect("path"))
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_release_over_the_entry_limit_is_refused_and_setuid_bits_are_never_installed() {
    require_root_and_tools();
    let (_, _, new) = releases();
    // A published-looking release (its sum matches) with 10,001 entries: over the limit.
    let crowded = tempfile::tempdir().expect("tempdir");
    repacked_release(crowded.path(), new, |builder, name, _| {
        if name == "bin/rke2" {
            for i in 0..10_000 {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("share/rke2/pad/{i}"), std::io::empty())
                    .expect("pad");
            }
        }
    });
    let crowded_mirror = Mirror::serve_in_ground(crowded.path(), vec![]).expect("mirror");
    let cluster = old_server(&crowded_mirror.base_url());
    let sim = &cluster.servers[0];
    let binary_before = sim.node.read_file(RKE2_BIN).expect("read");
    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    assert_eq!(out.status.code(), Some(1), "refused");
    assert!(
        out.stdout
            .contains("entries over the limit of 10000 for a release tarball"),
        "the limit is named:\n{}",
        out.stdout
    );
    assert_eq!(
        sim.node.read_file(RKE2_BIN).expect("read"),
        binary_before,
        "nothing installed"
    );
    assert!(
        !sim.node
            .host_path("/usr/local/share/rke2/pad")
            .expect("path")
            .exists(),
        "no entry of the refused release installed"
    );
    assert_active(sim);
    assert_eq!(served_version(sim), OLD_VERSION);

    // The same release with a setuid, world-writable binary and a group-writable unit:
    // installed and running, with those bits gone.
    let setuid = tempfile::tempdir().expect("tempdir");
    repacked_release(setuid.path(), new, |_, name, header| match name {
        "bin/rke2" => header.set_mode(0o6777),
        "lib/systemd/system/rke2-server.service" => header.set_mode(0o664),
        _ => {}
    });
    let setuid_mirror = Mirror::serve_in_ground(setuid.path(), vec![]).expect("mirror");
    let out = agent(
        &sim.node,
        &[
            "upgrade",
            "--version",
            NEW_VERSION,
            "--source",
            &setuid_mirror.base_url(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "upgrade succeeded");
    assert_eq!(served_version(sim), NEW_VERSION);
    assert_eq!(mode_on_node(&sim.node, RKE2_BIN), 0o755);
    assert_eq!(
        mode_on_node(
            &sim.node,
            "/usr/local/lib/systemd/system/rke2-server.service"
        ),
        0o644
    );
}

/// install.sh's layout when `/usr/local` is read-only: everything under `/opt/rke2`, the units
/// rewritten to it and moved to `/etc/systemd/system`; plus an operator's variable in the
/// unit's environment file.
const TO_OPT_RKE2: &str = "set -e
mkdir -p /opt/rke2/bin /opt/rke2/lib/systemd/system /opt/rke2/share
mv /usr/local/bin/rke2 /opt/rke2/bin/rke2
mv /usr/local/share/rke2 /opt/rke2/share/rke2
for u in rke2-server rke2-agent; do
  sed 's|/usr/local|/opt/rke2|' /usr/local/lib/systemd/system/$u.service > /etc/systemd/system/$u.service
  rm /usr/local/lib/systemd/system/$u.service
done
if [ -f /usr/local/lib/systemd/system/rke2-server.env ]; then
  mv /usr/local/lib/systemd/system/rke2-server.env /opt/rke2/lib/systemd/system/
fi
echo RKE2OPS_OPERATOR_SETTING=kept >> /opt/rke2/lib/systemd/system/rke2-server.env
systemctl daemon-reload
systemctl restart rke2-server.service
";

#[test]
fn an_opt_rke2_install_is_upgraded_where_it_is_and_keeps_its_env_file() {
    require_root_and_tools();
    let cluster = old_server(&mirror().base_url());
    let sim = &cluster.servers[0];
    sim.node
        .sh(TO_OPT_RKE2)
        .expect("move the install to /opt/rke2");
    assert_active(sim);
    let env_before = sim
        .node
        .read_file("/opt/rke2/lib/systemd/system/rke2-server.env")
        .expect("env file");

    let out = agent(&sim.node, &["upgrade", "--version", NEW_VERSION]);
    assert_eq!(out.status.code(), Some(0), "upgrade succeeded");
    assert!(
        out.stdout.contains("tarball in /opt/rke2"),
        "the running install's prefix is upgraded:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("units into /etc/systemd/system")
            && out
                .stdout
                .contains("the node's own lib/systemd/system/rke2-server.env kept"),
        "{}",
        out.stdout
    );
    assert_active(sim);
    assert_eq!(
        served_version(sim),
        NEW_VERSION,
        "the unit runs the new binary"
    );
    let new = sim
        .node
        .exec(&["/opt/rke2/bin/rke2", "--version"])
        .expect("rke2 --version");
    assert!(new.stdout.contains(NEW_VERSION), "{}", new.stdout);
    // Nothing landed in the read-only prefix; the unit is the release's, pointed at /opt/rke2.
    assert!(
        sim.node
            .exec(&["test", "-e", RKE2_BIN])
            .expect("test")
            .status
            .code()
            == Some(1),
        "no second install under /usr/local"
    );
    let unit = String::from_utf8(
        sim.node
            .read_file("/etc/systemd/system/rke2-server.service")
            .expect("unit"),
    )
    .expect("utf-8");
    assert!(
        unit.contains("ExecStart=/opt/rke2/bin/rke2 server")
            && unit.contains("EnvironmentFile=-/opt/rke2/lib/systemd/system/%N.env"),
        "{unit}"
    );
    assert_eq!(
        sim.node
            .read_file("/opt/rke2/lib/systemd/system/rke2-server.env")
            .expect("env file"),
        env_before,
        "the operator's variables survive the upgrade"
    );
    // The running process has the operator's variable (RKE2 started with the file).
    let environ = sim
        .node
        .sh("pid=$(systemctl show -p MainPID --value rke2-server.service); tr '\\0' '\\n' < /proc/$pid/environ")
        .expect("environ");
    assert!(
        environ.contains("RKE2OPS_OPERATOR_SETTING=kept"),
        "{environ}"
    );
}
