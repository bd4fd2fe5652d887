//! Staging and pruning against temporary folders: an air-gap folder or a local mirror as
//! the source, a data dir as the node's.

use super::*;

const V: &str = "v1.34.1+rke2r1";

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An air-gap folder with `files` (name, content) and a sum file listing each (a
/// `(name, None)` entry is listed with a wrong hash).
fn release(files: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sums = String::new();
    for (name, content) in files {
        let (content, listed) = match content {
            Some(c) => (c.as_bytes(), hash(c.as_bytes())),
            None => (&b"published"[..], hash(b"something else")),
        };
        std::fs::write(dir.path().join(name), content).expect("write");
        sums.push_str(&format!("{listed}  {name}\n"));
    }
    sums.push_str(&format!("{}  rke2.linux-amd64.tar.gz\n", hash(b"tarball")));
    std::fs::write(dir.path().join("sha256sum-amd64.txt"), sums).expect("write");
    dir
}

fn limits() -> ImagesLimits {
    ImagesLimits {
        archive_bytes: 1 << 20,
        deadline: Duration::from_secs(30),
        unknown_size_floor: 0,
        reserve: 0,
    }
}

async fn stage(
    source: &Path,
    data: &Path,
    cni: &[String],
    limits: ImagesLimits,
) -> Result<String, ImagesError> {
    let source = Source::Dir(source.to_path_buf());
    fetch_within(&source, &[], V, "amd64", cni, data, limits).await?;
    verify(data, "amd64", cni)?;
    place(data, V, "amd64", cni)
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn the_whole_archive_is_staged_under_a_versioned_name_and_a_rerun_changes_nothing() {
    let src = release(&[
        ("rke2-images.linux-amd64.tar.zst", Some("all images")),
        ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
        ("rke2-images-canal.linux-amd64.tar.zst", Some("canal")),
    ]);
    let data = tempfile::tempdir().expect("tempdir");
    let detail = stage(src.path(), data.path(), &[], limits())
        .await
        .expect("staged");
    let images = data.path().join(IMAGES_DIR);
    assert_eq!(
        names(&images),
        ["rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"]
    );
    assert!(
        detail.contains("placed rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"),
        "{detail}"
    );
    // Again (a crash re-runs any step): the same file, nothing new.
    let again = stage(src.path(), data.path(), &[], limits())
        .await
        .expect("staged");
    assert!(
        again.contains("placed nothing new") && again.contains("already there"),
        "{again}"
    );
    assert_eq!(
        std::fs::read(images.join("rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst")).expect("read"),
        b"all images"
    );
    // Each step alone re-runs too: place after place, verify after a re-fetch.
    let source = Source::Dir(src.path().to_path_buf());
    fetch_within(&source, &[], V, "amd64", &[], data.path(), limits())
        .await
        .expect("fetch");
    fetch_within(&source, &[], V, "amd64", &[], data.path(), limits())
        .await
        .expect("fetch again");
    verify(data.path(), "amd64", &[]).expect("verify");
    verify(data.path(), "amd64", &[]).expect("verify again");
    place(data.path(), V, "amd64", &[]).expect("place");
    assert_eq!(
        names(&images),
        ["rke2-images.linux-amd64.v1.34.1+rke2r1.tar.zst"]
    );
}

#[tokio::test]
async fn without_the_whole_archive_core_and_the_configured_cni_are_staged() {
    let src = release(&[
        ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
        ("rke2-images-canal.linux-amd64.tar.zst", Some("canal")),
        ("rke2-images-cilium.linux-amd64.tar.zst", Some("cilium")),
    ]);
    let data = tempfile::tempdir().expect("tempdir");
    stage(src.path(), data.path(), &[], limits())
        .await
        .expect("staged");
    assert_eq!(
        names(&data.path().join(IMAGES_DIR)),
        [
            "rke2-images-canal.linux-amd64.v1.34.1+rke2r1.tar.zst",
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
        ]
    );
    let cilium = tempfile::tempdir().expect("tempdir");
    stage(src.path(), cilium.path(), &["cilium".to_owned()], limits())
        .await
        .expect("staged");
    assert_eq!(
        names(&cilium.path().join(IMAGES_DIR)),
        [
            "rke2-images-cilium.linux-amd64.v1.34.1+rke2r1.tar.zst",
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
        ]
    );
}

#[tokio::test]
async fn a_checksum_mismatch_names_the_file_and_both_hashes_and_places_nothing() {
    let src = release(&[
        ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
        ("rke2-images-canal.linux-amd64.tar.zst", None),
    ]);
    let data = tempfile::tempdir().expect("tempdir");
    let err = stage(src.path(), data.path(), &[], limits())
        .await
        .expect_err("mismatch")
        .to_string();
    assert!(
        err.contains("checksum mismatch for rke2-images-canal.linux-amd64.tar.zst")
            && err.contains(&hash(b"something else"))
            && err.contains(&hash(b"published")),
        "{err}"
    );
    assert!(
        names(&data.path().join(IMAGES_DIR)).is_empty(),
        "nothing placed"
    );
    // A place run anyway (a resumed journal) re-checks each hash while copying.
    std::fs::write(
        data.path()
            .join(STAGING_DIR)
            .join("rke2-images-canal.linux-amd64.tar.zst"),
        b"published",
    )
    .expect("write");
    let err = place(data.path(), V, "amd64", &[])
        .expect_err("mismatch")
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        !names(&data.path().join(IMAGES_DIR))
            .iter()
            .any(|n| n.contains("canal")),
        "the bad archive is never placed"
    );
}

#[tokio::test]
async fn too_little_free_space_refuses_naming_the_folder_and_both_numbers() {
    let src = release(&[("rke2-images.linux-amd64.tar.zst", Some("all images"))]);
    let data = tempfile::tempdir().expect("tempdir");
    let tight = ImagesLimits {
        reserve: u64::MAX / 2,
        ..limits()
    };
    let err = stage(src.path(), data.path(), &[], tight)
        .await
        .expect_err("no space")
        .to_string();
    let staging = data.path().join(STAGING_DIR);
    assert!(
        err.contains(&staging.display().to_string())
            && err.contains("refused to stage images")
            && err.contains("bytes free")
            && err.contains(&(u64::MAX / 2 + 20).to_string()),
        "{err}"
    );
    assert_eq!(
        names(&staging),
        ["sha256sum-amd64.txt"],
        "no archive fetched"
    );
    assert!(names(&data.path().join(IMAGES_DIR)).is_empty());
}

#[test]
fn prune_removes_other_releases_archives_only() {
    let data = tempfile::tempdir().expect("tempdir");
    let images = data.path().join(IMAGES_DIR);
    std::fs::create_dir_all(&images).expect("mkdir");
    for name in [
        "rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst",
        "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst",
        "rke2-images.linux-amd64.tar.zst",
        "my-app.tar.zst",
        "registries-notes.txt",
    ] {
        std::fs::write(images.join(name), b"x").expect("write");
    }
    let detail = prune(data.path(), V).expect("pruned");
    assert_eq!(
        names(&images),
        [
            "my-app.tar.zst",
            "registries-notes.txt",
            "rke2-images-core.linux-amd64.v1.34.1+rke2r1.tar.zst"
        ]
    );
    assert!(
        detail.contains("rke2-images.linux-amd64.v1.33.5+rke2r1.tar.zst"),
        "{detail}"
    );
    // Again: nothing left to remove.
    assert!(
        prune(data.path(), V)
            .expect("pruned")
            .starts_with("removed no other")
    );
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(
        prune(empty.path(), V)
            .expect("ok")
            .contains("nothing to prune")
    );
}

/// A mirror serving `dir`'s files at `/<version, + as %2B>/<file>` (GET and HEAD, with
/// Content-Length), one connection per request.
async fn mirror(dir: PathBuf) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&request[..n]).into_owned();
                let mut words = text.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let file = path.rsplit('/').next().unwrap_or("");
                let reply = match std::fs::read(dir.join(file)) {
                    Ok(body) if path == format!("/v1.34.1%2Brke2r1/{file}") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        if method == "GET" {
                            r.extend(body);
                        }
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = socket.write_all(&reply).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_mirror_s_announced_sizes_decide_the_space_needed() {
    let src = release(&[
        ("rke2-images-core.linux-amd64.tar.zst", Some("core")),
        ("rke2-images-canal.linux-amd64.tar.zst", Some("canal!")),
    ]);
    let url = mirror(src.path().to_path_buf()).await;
    let source = Source::parse(&url).expect("url");
    let files = [
        "rke2-images-core.linux-amd64.tar.zst".to_owned(),
        "rke2-images-canal.linux-amd64.tar.zst".to_owned(),
    ];
    assert_eq!(
        artifacts::announced_size(&url, &[], V, &files).await,
        Some(10)
    );
    assert_eq!(
        artifacts::announced_size(&url, &[], V, &["absent.tar.zst".to_owned()]).await,
        None
    );
    // The floor is not asked for when the mirror says how large the archives are.
    let data = tempfile::tempdir().expect("tempdir");
    let known = ImagesLimits {
        unknown_size_floor: u64::MAX,
        ..limits()
    };
    let detail = fetch_within(&source, &[], V, "amd64", &[], data.path(), known)
        .await
        .expect("fetched");
    assert!(detail.contains("(10 bytes;"), "{detail}");
    verify(data.path(), "amd64", &[]).expect("verified");
    place(data.path(), V, "amd64", &[]).expect("placed");
    assert_eq!(names(&data.path().join(IMAGES_DIR)).len(), 2);
}
