//! The images a node has without a registry: what RKE2 imports from `<data-dir>/agent/images/`
//! at start. An air-gapped RKE2 (fault switch `no-registry`) must find its runtime image
//! (`rancher/rke2-runtime:<version tag>`, which carries the kubelet and containerd) there, or
//! it dies trying to pull it: the failure an air-gapped upgrade meets when the new release's
//! images were not staged first (k3s/rke2 `pkg/bootstrap`: preload from the images folder,
//! else pull). See tests/SIMULATOR.md §8.
//!
//! Reads the archives the simulator's releases carry: raw-block zstd frames
//! ([`crate::release::zstd_raw_frame`]) holding a `docker save` tar whose `manifest.json`
//! names the images (`RepoTags`). Archives it cannot read (really compressed, another format)
//! are skipped, as RKE2 would import images the simulator does not model.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;

/// Where RKE2 looks for image archives, relative to the data dir.
pub const IMAGES_DIR: &str = "agent/images";

/// The runtime image RKE2 `version` needs at start (`v1.34.1+rke2r1` →
/// `docker.io/rancher/rke2-runtime:v1.34.1-rke2r1`).
#[must_use]
pub fn runtime_image(version: &str) -> String {
    format!(
        "docker.io/rancher/rke2-runtime:{}",
        version.replace('+', "-")
    )
}

/// The payload of a frame written by [`crate::release::zstd_raw_frame`] (single segment,
/// 8-byte content size, raw blocks); `None` for anything else. Pure.
#[must_use]
pub fn unframe_raw(frame: &[u8]) -> Option<Vec<u8>> {
    let rest = frame.strip_prefix(&0xFD2F_B528u32.to_le_bytes())?;
    let (&descriptor, rest) = rest.split_first()?;
    if descriptor != 0b1110_0000 {
        return None;
    }
    let size = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let mut rest = &rest[8..];
    let mut out = Vec::with_capacity(usize::try_from(size).ok()?.min(1 << 24));
    loop {
        let header = rest.get(..3)?;
        let header = u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
        let (last, kind, len) = (header & 1 == 1, (header >> 1) & 3, (header >> 3) as usize);
        if kind != 0 {
            return None;
        }
        out.extend_from_slice(rest.get(3..3 + len)?);
        rest = &rest[3 + len..];
        if last {
            break;
        }
    }
    (out.len() as u64 == size).then_some(out)
}

/// The `RepoTags` of a `docker save` tar's `manifest.json`; empty when there is none.
#[must_use]
pub fn tags_in_tar(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    let Ok(entries) = archive.entries() else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let mut entry = entry;
        if entry.path().ok().as_deref() != Some(Path::new("manifest.json")) {
            continue;
        }
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        let Ok(manifest) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
            return Vec::new();
        };
        return manifest
            .iter()
            .filter_map(|image| image["RepoTags"].as_array())
            .flatten()
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect();
    }
    Vec::new()
}

/// Every image in the readable `*.tar.zst` archives of `<data_dir>/agent/images/`.
#[must_use]
pub fn preloaded(data_dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(IMAGES_DIR)) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| unframe_raw(&bytes))
        .flat_map(|tar| tags_in_tar(&tar))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{OLD_VERSION, image_archive, zstd_raw_frame};

    #[test]
    fn a_release_archive_reads_back_as_its_images() {
        let archive = image_archive("rke2-images.linux-amd64.tar.zst", OLD_VERSION).expect("a");
        let tar = unframe_raw(&archive).expect("a raw frame");
        let tags = tags_in_tar(&tar);
        assert!(tags.contains(&runtime_image(OLD_VERSION)), "{tags:?}");
        // The CNI archive alone holds no runtime image.
        let canal = image_archive("rke2-images-canal.linux-amd64.tar.zst", OLD_VERSION).expect("c");
        let tags = tags_in_tar(&unframe_raw(&canal).expect("frame"));
        assert!(!tags.contains(&runtime_image(OLD_VERSION)), "{tags:?}");
    }

    #[test]
    fn frames_round_trip_and_anything_else_is_refused() {
        for len in [0, 1, 128 * 1024, 128 * 1024 + 5, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(unframe_raw(&zstd_raw_frame(&data)), Some(data), "{len}");
        }
        let mut truncated = zstd_raw_frame(b"hello world");
        truncated.truncate(truncated.len() - 2);
        assert_eq!(unframe_raw(&truncated), None);
        assert_eq!(unframe_raw(b"not zstd"), None);
        assert!(tags_in_tar(b"not a tar").is_empty());
    }

    #[test]
    fn the_images_folder_is_read_and_unreadable_files_skipped() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join(IMAGES_DIR);
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(preloaded(data.path()).is_empty());
        std::fs::write(
            dir.join("rke2-images.linux-amd64.tar.zst"),
            image_archive("rke2-images.linux-amd64.tar.zst", OLD_VERSION).expect("a"),
        )
        .expect("write");
        std::fs::write(dir.join("my-app.tar.zst"), b"\x28\xb5\x2f\xfd compressed").expect("w");
        std::fs::write(dir.join("notes.txt"), b"x").expect("w");
        let found = preloaded(data.path());
        assert!(found.contains(&runtime_image(OLD_VERSION)), "{found:?}");
        assert!(!found.contains(&runtime_image("v1.34.1+rke2r1")));
    }
}
