//! Simulated RKE2 releases: the artifacts RKE2 publishes for the tarball install method, built
//! from the simulated `rke2` binary, so upgrades can be tested end to end.
//!
//! A release `<out>/<version>/` holds what RKE2's GitHub release holds for one architecture:
//! - `rke2.linux-amd64.tar.gz`: `bin/rke2` (the simulator with the version in its trailer,
//!   [`crate::version::with_trailer`]), `bin/rke2-killall.sh`, `bin/rke2-uninstall.sh`,
//!   `lib/systemd/system/rke2-{server,agent}.service` (this repository's `tests/sim/units/`, RKE2's
//!   units), `share/rke2/LICENSE.txt` and `share/rke2/rke2-cis-sysctl.conf`;
//! - the air-gap image archives `rke2-images.linux-amd64.tar.zst` and its split form
//!   `rke2-images-core.linux-amd64.tar.zst` + `rke2-images-canal.linux-amd64.tar.zst`: real
//!   zstd-framed tars holding a docker-save style `manifest.json` (the release's image names,
//!   no layers) and `rke2-sim-images.txt` ([`image_archive`]);
//! - `sha256sum-amd64.txt`: `<hex>  <file>` lines as `sha256sum` writes them.
//!
//! [`channels_json`] renders update.rke2.io's `/v1-release/channels` document; the mirror that
//! serves both is [`crate::mirror`]. `tests/SIMULATOR.md` §7 records the facts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::cluster::{RKE2_BIN, unit_file};
use super::tree::Role;
use super::version::with_trailer;
use rke2ops_ground::{GroundError, Node, built_binary};

/// The older release the upgrade tests start from.
pub const OLD_VERSION: &str = "v1.33.5+rke2r1";
/// The newer release they upgrade to (also the simulator's default version).
pub const NEW_VERSION: &str = super::version::DEFAULT_VERSION;
/// The only architecture simulated.
pub const ARCH: &str = "amd64";

/// Why a release could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Reading the simulator binary or a unit, or writing an artifact, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Installing on a proving-ground node failed.
    #[error(transparent)]
    Ground(#[from] GroundError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One written release.
#[derive(Debug, Clone)]
pub struct Release {
    /// e.g. `v1.34.1+rke2r1`.
    pub version: String,
    /// `<out>/<version>/`.
    pub dir: PathBuf,
    /// `<dir>/rke2.linux-amd64.tar.gz`.
    pub tarball: PathBuf,
    /// `<dir>/sha256sum-amd64.txt`.
    pub sums: PathBuf,
    /// The tarball's sha256 (hex).
    pub sha256: String,
    /// The air-gap image archives ([`IMAGE_ARCHIVES`]), in that order.
    pub images: Vec<PathBuf>,
}

/// The air-gap image archives of a release (amd64): everything in one, then the split form
/// (core images and the canal CNI images).
pub const IMAGE_ARCHIVES: [&str; 3] = [
    "rke2-images.linux-amd64.tar.zst",
    "rke2-images-core.linux-amd64.tar.zst",
    "rke2-images-canal.linux-amd64.tar.zst",
];

/// The images a release's archive `name` (one of [`IMAGE_ARCHIVES`]) holds, RKE2's names
/// with the release's tags.
#[must_use]
pub fn image_names(name: &str, version: &str) -> Vec<String> {
    let tag = version.replace('+', "-");
    let core = vec![
        format!("docker.io/rancher/rke2-runtime:{tag}"),
        format!("docker.io/rancher/hardened-kubernetes:{tag}-build20250101"),
        "docker.io/rancher/hardened-etcd:v3.5.21-k3s1-build20250101".to_owned(),
        "docker.io/rancher/hardened-coredns:v1.12.2-build20250101".to_owned(),
        "docker.io/rancher/hardened-cluster-autoscaler:v1.10.2-build20250101".to_owned(),
        "docker.io/rancher/hardened-k8s-metrics-server:v0.8.0-build20250101".to_owned(),
        "docker.io/rancher/mirrored-pause:3.6".to_owned(),
        "docker.io/rancher/nginx-ingress-controller:v1.12.4-hardened1".to_owned(),
        "docker.io/rancher/klipper-helm:v0.9.8-build20250101".to_owned(),
    ];
    let canal = vec![
        "docker.io/rancher/hardened-calico:v3.30.2-build20250101".to_owned(),
        "docker.io/rancher/hardened-flannel:v0.27.1-build20250101".to_owned(),
    ];
    match name {
        n if n.starts_with("rke2-images-core.") => core,
        n if n.starts_with("rke2-images-canal.") => canal,
        _ => core.into_iter().chain(canal).collect(),
    }
}

/// A zstd frame holding `data` uncompressed (raw blocks of at most 128 KiB, content size in
/// the header, no checksum): a valid `.zst` that `zstd -d` and containerd read, written
/// without a compressor (the archives are tiny).
#[must_use]
pub fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 128 * 1024;
    let mut out = Vec::with_capacity(data.len() + 16 + 3 * (data.len() / MAX_BLOCK + 1));
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: 8-byte content size, single segment (no window descriptor).
    out.push(0b1110_0000);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_BLOCK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        // Block header (24 bits LE): last flag, type 0 (raw), size.
        let header = u32::from(i == last) | ((chunk.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

/// The air-gap image archive `name` of `version`: a `.tar.zst` with `manifest.json` (docker
/// save's format: one `{"Config","RepoTags","Layers"}` per image, no layers) and
/// `rke2-sim-images.txt` (`version <v>` then one image per line).
///
/// # Errors
/// When the tar cannot be assembled (in memory).
pub fn image_archive(name: &str, version: &str) -> std::io::Result<Vec<u8>> {
    let images = image_names(name, version);
    let manifest: Vec<serde_json::Value> = images
        .iter()
        .map(|i| serde_json::json!({"Config": "", "RepoTags": [i], "Layers": []}))
        .collect();
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    let mut list = format!("version {version}\n");
    for i in &images {
        list.push_str(i);
        list.push('\n');
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (file, bytes) in [
        ("manifest.json", manifest.as_slice()),
        ("rke2-sim-images.txt", list.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, file, bytes)?;
    }
    Ok(zstd_raw_frame(&tar.into_inner()?))
}

/// The tarball's file name for an architecture.
#[must_use]
pub fn tarball_name(arch: &str) -> String {
    format!("rke2.linux-{arch}.tar.gz")
}

/// The checksum file's name for an architecture.
#[must_use]
pub fn sums_name(arch: &str) -> String {
    format!("sha256sum-{arch}.txt")
}

/// A version as a URL path segment: `+` is `%2B` (GitHub's release URLs; install.sh does the
/// same).
#[must_use]
pub fn url_segment(version: &str) -> String {
    version.replace('+', "%2B")
}

/// The simulated git commit of a release: stable per version (40 hex, as RKE2 prints).
#[must_use]
pub fn commit_of(version: &str) -> String {
    let digest = hex::encode(Sha256::digest(version.as_bytes()));
    digest[..40].to_owned()
}

/// The simulated `rke2` binary of `version`: the built simulator with the version trailer.
///
/// # Errors
/// When the built binary cannot be read.
pub fn rke2_binary(simulator: &Path, version: &str) -> Result<Vec<u8>, ReleaseError> {
    let bytes =
        stripped(simulator).map_or_else(|| std::fs::read(simulator).map_err(io(simulator)), Ok)?;
    Ok(with_trailer(&bytes, version, &commit_of(version)))
}

/// The simulator without debug information (`strip`, when installed): a debug build is
/// ~340 MB, stripped ~15 MB, and every test copies it several times.
fn stripped(simulator: &Path) -> Option<Vec<u8>> {
    let out = tempfile::NamedTempFile::new().ok()?;
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(out.path())
        .arg(simulator)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status
        .success()
        .then(|| std::fs::read(out.path()).ok())
        .flatten()
}

const KILLALL: &str = "#!/bin/sh\n# rke2-killall.sh (simulated release): stops what rke2 started.\n\
systemctl stop rke2-server.service rke2-agent.service 2>/dev/null || true\n";
const UNINSTALL: &str = "#!/bin/sh\n# rke2-uninstall.sh (simulated release): not simulated.\necho 'not simulated' >&2\nexit 1\n";
/// `share/rke2/` of every release (and of the initial install).
pub const SHARE_FILES: [(&str, &str); 2] = [
    ("LICENSE.txt", LICENSE),
    ("rke2-cis-sysctl.conf", CIS_SYSCTL),
];

/// `bundle/lib/systemd/system/rke2-{server,agent}.env` of RKE2's tarball.
const UNIT_ENV: &str = "HOME=/root\n";
const LICENSE: &str = "Apache License 2.0 (simulated RKE2 release)\n";
const CIS_SYSCTL: &str =
    "vm.panic_on_oom=0\nvm.overcommit_memory=1\nkernel.panic=10\nkernel.panic_on_oops=1\n";

/// Writes `<out_dir>/<version>/` from the simulator at `simulator` (usually `target/debug/rke2`).
///
/// # Errors
/// When a file cannot be read or written.
pub fn build_release_from(
    out_dir: &Path,
    version: &str,
    simulator: &Path,
) -> Result<Release, ReleaseError> {
    let dir = out_dir.join(version);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let binary = rke2_binary(simulator, version)?;
    let mut entries: Vec<(&str, Vec<u8>, u32)> = vec![
        ("bin/rke2", binary.clone(), 0o755),
        ("bin/rke2-killall.sh", KILLALL.into(), 0o755),
        ("bin/rke2-uninstall.sh", UNINSTALL.into(), 0o755),
    ];
    for (role, name) in [
        (Role::Server, "lib/systemd/system/rke2-server.service"),
        (Role::Agent, "lib/systemd/system/rke2-agent.service"),
    ] {
        let file = unit_file(role);
        entries.push((name, std::fs::read(&file).map_err(io(&file))?, 0o644));
    }
    // RKE2's bundle ships each unit's environment file with `HOME=/root`; the units read it
    // last (`EnvironmentFile=-<prefix>/lib/systemd/system/%N.env`).
    for name in [
        "lib/systemd/system/rke2-server.env",
        "lib/systemd/system/rke2-agent.env",
    ] {
        entries.push((name, UNIT_ENV.into(), 0o644));
    }
    for (name, text) in SHARE_FILES {
        entries.push((
            match name {
                "LICENSE.txt" => "share/rke2/LICENSE.txt",
                _ => "share/rke2/rke2-cis-sysctl.conf",
            },
            text.into(),
            0o644,
        ));
    }

    let tarball = dir.join(tarball_name(ARCH));
    let file = std::fs::File::create(&tarball).map_err(io(&tarball))?;
    // Fast compression: the debug simulator is large and tests build releases often.
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut dirs_done = std::collections::BTreeSet::new();
    for (name, bytes, mode) in &entries {
        let mut parent = Path::new(name).parent();
        let mut missing = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if dirs_done.insert(p.to_path_buf()) {
                missing.push(p.to_path_buf());
            }
            parent = p.parent();
        }
        for d in missing.into_iter().rev() {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(0);
            tar.append_data(&mut header, format!("{}/", d.display()), std::io::empty())
                .map_err(io(&tarball))?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(io(&tarball))?;
    }
    let gz = tar.into_inner().map_err(io(&tarball))?;
    let mut file = gz.finish().map_err(io(&tarball))?;
    file.flush().map_err(io(&tarball))?;

    let tar_bytes = std::fs::read(&tarball).map_err(io(&tarball))?;
    let sha256 = hex::encode(Sha256::digest(&tar_bytes));
    // RKE2's sum file lists every artifact of the release; the bare binary, the tarball and
    // the image archives are enough to prove a reader picks the right line.
    let mut sums_text = format!(
        "{}  rke2.linux-{ARCH}\n{sha256}  {}\n",
        hex::encode(Sha256::digest(&binary)),
        tarball_name(ARCH)
    );
    let mut images = Vec::new();
    for name in IMAGE_ARCHIVES {
        let path = dir.join(name);
        let bytes = image_archive(name, version).map_err(io(&path))?;
        std::fs::write(&path, &bytes).map_err(io(&path))?;
        sums_text.push_str(&format!(
            "{}  {name}\n",
            hex::encode(Sha256::digest(&bytes))
        ));
        images.push(path);
    }
    let sums = dir.join(sums_name(ARCH));
    std::fs::write(&sums, sums_text).map_err(io(&sums))?;
    Ok(Release {
        version: version.to_owned(),
        dir,
        tarball,
        sums,
        sha256,
        images,
    })
}

/// [`build_release_from`] with the built simulator (`cargo build -p rke2ops-sim` first).
///
/// # Errors
/// As [`build_release_from`].
pub fn build_release(out_dir: &Path, version: &str) -> Result<Release, ReleaseError> {
    build_release_from(out_dir, version, &built_binary("rke2"))
}

/// A copy of `release` under `<dir>/<version>/` whose `sha256sum` file lies (zeros for the
/// tarball): what a tampered or corrupted mirror serves.
///
/// # Errors
/// When the files cannot be copied or written.
pub fn with_lying_checksum(
    dir: &Path,
    version: &str,
    release: &Release,
) -> Result<(), ReleaseError> {
    let out = dir.join(version);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let tarball = out.join(tarball_name(ARCH));
    std::fs::copy(&release.tarball, &tarball).map_err(io(&tarball))?;
    let sums = std::fs::read_to_string(&release.sums).map_err(io(&release.sums))?;
    let lying = out.join(sums_name(ARCH));
    std::fs::write(&lying, sums.replace(&release.sha256, &"0".repeat(64))).map_err(io(&lying))?;
    Ok(())
}

/// A copy of `release` under `<dir>/<version>/` whose `sha256sum` file has a wrong line (zeros)
/// for the image archive `rke2-images.linux-amd64.tar.zst` (the tarball's and the split
/// archives' lines stay right): a corrupted air-gap bundle.
///
/// # Errors
/// When the files cannot be copied or written.
pub fn with_bad_image_checksum(
    dir: &Path,
    version: &str,
    release: &Release,
) -> Result<(), ReleaseError> {
    let out = dir.join(version);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    for file in std::iter::once(&release.tarball).chain(&release.images) {
        let target = out.join(file.file_name().unwrap_or_default());
        std::fs::copy(file, &target).map_err(io(&target))?;
    }
    let sums = std::fs::read_to_string(&release.sums).map_err(io(&release.sums))?;
    let bad: String = sums
        .lines()
        .map(|line| match line.split_once("  ") {
            Some((_, name)) if name == IMAGE_ARCHIVES[0] => {
                format!("{}  {name}\n", "0".repeat(64))
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let target = out.join(sums_name(ARCH));
    std::fs::write(&target, bad).map_err(io(&target))?;
    Ok(())
}

/// Puts the simulated `rke2` of `version` at `/usr/local/bin/rke2` on `node` (what a tarball
/// install of that release leaves there); takes effect at the next start.
///
/// # Errors
/// When the binary cannot be read or written.
pub fn install_rke2(node: &Node, version: &str) -> Result<(), ReleaseError> {
    let bytes = rke2_binary(&built_binary("rke2"), version)?;
    let host = node.host_path(RKE2_BIN)?;
    let tmp = host.with_extension("sim-new");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &host).map_err(io(&host))?;
    Ok(())
}

/// One channel of the channel server: `name` (`stable`, `latest`, `v1.34`...) → `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The channel id.
    pub name: String,
    /// The version it resolves to.
    pub latest: String,
}

impl std::str::FromStr for Channel {
    type Err = String;

    /// `name=version`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, latest) = s
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && v.starts_with('v'))
            .ok_or_else(|| format!("expected NAME=VERSION, found {s:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            latest: latest.to_owned(),
        })
    }
}

/// The `latestRegexp` update.rke2.io gives a channel: a minor channel (`v1.34`) matches that
/// minor's releases, the others every release.
#[must_use]
pub fn latest_regexp(name: &str) -> String {
    match name.strip_prefix('v') {
        Some(minor) if minor.split('.').all(|p| p.parse::<u32>().is_ok()) => {
            format!("v{}\\..*", minor.replace('.', "\\."))
        }
        _ => ".*".to_owned(),
    }
}

/// update.rke2.io's `/v1-release/channels` document (a Rancher API collection) for `channels`,
/// with links under `base_url` (e.g. `http://127.0.50.1:8080`).
#[must_use]
pub fn channels_json(base_url: &str, channels: &[Channel]) -> String {
    let data: Vec<serde_json::Value> = channels
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.name,
                "type": "channel",
                "links": { "self": format!("{base_url}/v1-release/channels/{}", c.name) },
                "name": c.name,
                "latest": c.latest,
                "latestRegexp": latest_regexp(&c.name),
                // RKE2's channels leave out pre-releases (`-rc1`...).
                "excludeRegexp": "(^[^+]+-|v1\\.25\\.5\\+rke2r1|v1\\.26\\.0\\+rke2r1)",
            })
        })
        .collect();
    let doc = serde_json::json!({
        "type": "collection",
        "links": { "self": format!("{base_url}/v1-release/channels") },
        "actions": {},
        "resourceType": "channels",
        "data": data,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_url_encoded_like_github_release_links() {
        assert_eq!(url_segment("v1.34.1+rke2r1"), "v1.34.1%2Brke2r1");
    }

    #[test]
    fn channel_document_has_update_rke2_io_fields() {
        let doc: serde_json::Value = serde_json::from_str(&channels_json(
            "http://m",
            &[
                "stable=v1.33.5+rke2r1".parse().expect("valid"),
                "v1.34=v1.34.1+rke2r1".parse().expect("valid"),
            ],
        ))
        .expect("json");
        assert_eq!(doc["type"], "collection");
        let v134 = &doc["data"][1];
        assert_eq!(v134["id"], "v1.34");
        assert_eq!(v134["latest"], "v1.34.1+rke2r1");
        assert_eq!(v134["latestRegexp"], "v1\\.34\\..*");
        assert_eq!(v134["links"]["self"], "http://m/v1-release/channels/v1.34");
        assert_eq!(doc["data"][0]["latestRegexp"], ".*");
        assert!("stable".parse::<Channel>().is_err());
    }

    #[test]
    fn release_has_rke2_tarball_layout_and_a_matching_sum_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = dir.path().join("fake-rke2");
        std::fs::write(&sim, b"\x7fELF simulated").expect("write");
        let release = build_release_from(dir.path(), OLD_VERSION, &sim).expect("release");
        let sums = std::fs::read_to_string(&release.sums).expect("sums");
        assert!(
            sums.contains(&format!("{}  rke2.linux-amd64.tar.gz\n", release.sha256)),
            "{sums}"
        );
        let file = std::fs::File::open(&release.tarball).expect("open");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut names = Vec::new();
        let mut trailer = None;
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            if name == "bin/rke2" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
                trailer = super::super::version::parse_trailer(&bytes);
                assert_eq!(entry.header().mode().expect("mode"), 0o755);
            }
            names.push(name);
        }
        for wanted in [
            "bin/rke2",
            "bin/rke2-killall.sh",
            "bin/rke2-uninstall.sh",
            "lib/systemd/system/rke2-server.service",
            "lib/systemd/system/rke2-agent.service",
            "lib/systemd/system/rke2-server.env",
            "lib/systemd/system/rke2-agent.env",
            "share/rke2/LICENSE.txt",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        assert_eq!(trailer.map(|(v, _)| v).as_deref(), Some(OLD_VERSION));
    }

    /// Decodes a frame written by [`zstd_raw_frame`] (raw blocks only).
    fn unframe(frame: &[u8]) -> Vec<u8> {
        assert_eq!(frame[..4], 0xFD2F_B528u32.to_le_bytes());
        assert_eq!(frame[4], 0b1110_0000);
        let size = u64::from_le_bytes(frame[5..13].try_into().expect("8 bytes"));
        let mut at = 13;
        let mut out = Vec::new();
        loop {
            let h = u32::from(frame[at])
                | (u32::from(frame[at + 1]) << 8)
                | (u32::from(frame[at + 2]) << 16);
            assert_eq!((h >> 1) & 3, 0, "raw block");
            let len = (h >> 3) as usize;
            out.extend_from_slice(&frame[at + 3..at + 3 + len]);
            at += 3 + len;
            if h & 1 == 1 {
                break;
            }
        }
        assert_eq!(at, frame.len());
        assert_eq!(out.len() as u64, size);
        out
    }

    #[test]
    fn zstd_frames_split_into_raw_blocks_and_zstd_reads_them() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for input in [&data[..], &[][..], b"x"] {
            let frame = zstd_raw_frame(input);
            assert_eq!(unframe(&frame), input);
            if Path::new("/usr/bin/zstd").exists() {
                let dir = tempfile::tempdir().expect("tempdir");
                let f = dir.path().join("a.zst");
                std::fs::write(&f, &frame).expect("write");
                let out = std::process::Command::new("/usr/bin/zstd")
                    .args(["-d", "-c", "-q"])
                    .arg(&f)
                    .output()
                    .expect("zstd");
                assert!(out.status.success(), "{out:?}");
                assert_eq!(out.stdout, input);
            }
        }
    }

    #[test]
    fn release_has_image_archives_listed_in_the_sums_and_a_bad_image_sum_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = dir.path().join("fake-rke2");
        std::fs::write(&sim, b"\x7fELF simulated").expect("write");
        let release = build_release_from(dir.path(), NEW_VERSION, &sim).expect("release");
        let sums = std::fs::read_to_string(&release.sums).expect("sums");
        assert_eq!(release.images.len(), 3);
        for (name, path) in IMAGE_ARCHIVES.iter().zip(&release.images) {
            let bytes = std::fs::read(path).expect("archive");
            let line = format!("{}  {name}\n", hex::encode(Sha256::digest(&bytes)));
            assert!(sums.contains(&line), "{line} in {sums}");
            let mut archive = tar::Archive::new(std::io::Cursor::new(unframe(&bytes)));
            let mut list = String::new();
            for entry in archive.entries().expect("entries") {
                let mut entry = entry.expect("entry");
                if entry.path().expect("path").to_str() == Some("rke2-sim-images.txt") {
                    std::io::Read::read_to_string(&mut entry, &mut list).expect("read");
                }
            }
            assert!(list.starts_with("version v1.34.1+rke2r1\n"), "{list}");
            assert_eq!(list.contains("hardened-calico"), !name.contains("-core."));
            assert_eq!(
                list.contains("rke2-runtime:v1.34.1-rke2r1"),
                !name.contains("-canal.")
            );
        }
        let bad = dir.path().join("bad");
        with_bad_image_checksum(&bad, NEW_VERSION, &release).expect("bad copy");
        let bad_sums =
            std::fs::read_to_string(bad.join(NEW_VERSION).join(sums_name(ARCH))).expect("bad sums");
        assert!(bad_sums.contains(&format!("{}  {}\n", "0".repeat(64), IMAGE_ARCHIVES[0])));
        assert!(bad_sums.contains(&format!("{}  {}\n", release.sha256, tarball_name(ARCH))));
        assert_eq!(bad_sums.lines().count(), sums.lines().count());
        assert!(bad.join(NEW_VERSION).join(IMAGE_ARCHIVES[2]).is_file());
    }
}
