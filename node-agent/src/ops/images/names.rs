//! The pure part of staging images: which archives a release offers this node, what they
//! are called once placed, which of the folder's files are release archives to prune, and
//! how much free space staging needs.

use super::ImagesError;
use crate::ops::artifacts;

/// RKE2's default CNI.
pub const DEFAULT_CNI: &str = "canal";

/// `rke2-images.linux-<arch>.tar.zst`: every image of the release in one archive.
#[must_use]
pub fn whole_name(arch: &str) -> String {
    format!("rke2-images.linux-{arch}.tar.zst")
}

/// `rke2-images-<part>.linux-<arch>.tar.zst` (`core`, or a CNI's name).
#[must_use]
pub fn part_name(part: &str, arch: &str) -> String {
    format!("rke2-images-{part}.linux-{arch}.tar.zst")
}

/// Pure: the archives this node needs from a release whose sum file is `listing`: the
/// all-in-one archive when listed, else core plus one per CNI (`cni` empty: canal; `none`
/// needs none), each of which must be listed.
///
/// # Errors
/// [`ImagesError::NotListed`] naming the first archive the sum file lacks.
pub fn choose(listing: &str, arch: &str, cni: &[String]) -> Result<Vec<String>, ImagesError> {
    let whole = whole_name(arch);
    if artifacts::sum_for(listing, &whole).is_some() {
        return Ok(vec![whole]);
    }
    let default = [DEFAULT_CNI.to_owned()];
    let cnis = if cni.is_empty() { &default[..] } else { cni };
    let mut wanted = vec![part_name("core", arch)];
    for c in cnis.iter().filter(|c| c.as_str() != "none") {
        let name = part_name(c, arch);
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    if let Some(missing) = wanted
        .iter()
        .find(|w| artifacts::sum_for(listing, w).is_none())
    {
        return Err(ImagesError::NotListed {
            sums: artifacts::sums_name(arch),
            whole,
            missing: missing.clone(),
        });
    }
    Ok(wanted)
}

/// Pure: the name an archive gets in `agent/images`: the version before `.tar.zst`
/// (`rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst`), so each release's archives can be told
/// apart and the previous ones pruned, and RKE2 still imports it.
#[must_use]
pub fn placed_name(file: &str, version: &str) -> String {
    let stem = file.strip_suffix(".tar.zst").unwrap_or(file);
    format!("{stem}.{version}.tar.zst")
}

/// Pure: whether `name` is an RKE2 release image archive (as published, `rke2-images*.linux-
/// <arch>.tar.zst`, or as [`placed_name`] names it). Anything else in the folder is the
/// operator's and is never pruned.
#[must_use]
pub fn is_release_archive(name: &str) -> bool {
    name.starts_with("rke2-images")
        && name.contains(".linux-")
        && name.ends_with(".tar.zst")
        && !name.contains('/')
}

/// Pure: of the names in `agent/images`, the release archives that do not carry `keep`.
#[must_use]
pub fn to_prune(names: &[String], keep: &str) -> Vec<String> {
    let kept = format!(".{keep}.tar.zst");
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| is_release_archive(n) && !n.ends_with(&kept))
        .cloned()
        .collect();
    out.sort();
    out
}

/// Pure: the free bytes staging needs: twice the archives' size when known (the download,
/// and its copy in `agent/images`), else `floor`; plus `reserve`.
#[must_use]
pub fn space_needed(sizes: Option<u64>, floor: u64, reserve: u64) -> (u64, String) {
    match sizes {
        Some(s) => (
            s.saturating_mul(2).saturating_add(reserve),
            format!("twice the archives' {s} bytes"),
        ),
        None => (
            floor.saturating_add(reserve),
            "the archives' size is unknown until downloaded: the floor for a release's images"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::*;

    const V: &str = "v1.34.1+rke2r1";

    fn hash(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[test]
    fn the_whole_archive_is_preferred_else_core_and_the_nodes_cni() {
        let both = format!(
            "{h}  rke2-images.linux-amd64.tar.zst\n{h}  rke2-images-core.linux-amd64.tar.zst\n{h}  rke2-images-canal.linux-amd64.tar.zst\n{h}  rke2-images-cilium.linux-amd64.tar.zst\n",
            h = hash(b"x")
        );
        assert_eq!(
            choose(&both, "amd64", &[]).expect("listed"),
            ["rke2-images.linux-amd64.tar.zst"]
        );
        let split = both.replace("rke2-images.linux", "other.linux");
        assert_eq!(
            choose(&split, "amd64", &[]).expect("listed"),
            [
                "rke2-images-core.linux-amd64.tar.zst",
                "rke2-images-canal.linux-amd64.tar.zst"
            ]
        );
        assert_eq!(
            choose(&split, "amd64", &["cilium".to_owned()]).expect("listed"),
            [
                "rke2-images-core.linux-amd64.tar.zst",
                "rke2-images-cilium.linux-amd64.tar.zst"
            ]
        );
        assert_eq!(
            choose(&split, "amd64", &["none".to_owned()]).expect("listed"),
            ["rke2-images-core.linux-amd64.tar.zst"]
        );
        let err = choose(&split, "amd64", &["calico".to_owned()])
            .expect_err("unlisted")
            .to_string();
        assert!(
            err.contains("rke2-images-calico.linux-amd64.tar.zst")
                && err.contains("sha256sum-amd64.txt"),
            "{err}"
        );
    }

    #[test]
    fn placed_names_carry_the_version_and_prune_spares_other_files() {
        assert_eq!(
            placed_name("rke2-images-core.linux-amd64.tar.zst", V),
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
        );
        let names: Vec<String> = [
            "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst",
            "rke2-images.linux-amd64.tar.zst",
            "rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst",
            "my-app.tar.zst",
            "rke2-images-notes.txt",
            ".rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst.rke2ops-tmp.1",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            to_prune(&names, V),
            [
                "rke2-images.linux-amd64.tar.zst",
                "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst"
            ]
        );
    }

    #[test]
    fn space_needed_is_twice_the_known_size_else_the_floor() {
        assert_eq!(space_needed(Some(10), 99, 1).0, 21);
        assert_eq!(space_needed(None, 99, 1).0, 100);
        assert_eq!(space_needed(Some(u64::MAX), 0, 0).0, u64::MAX);
    }
}
