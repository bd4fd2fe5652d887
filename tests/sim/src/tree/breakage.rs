//! File-level breakages (everything but `key-mismatch` and `foreign-issuer`, which are made
//! while the leaf is issued).

use std::path::Path;

use super::{Breakage, FileKind, TreeError, io_err};

/// Size an [`Breakage::Oversized`] file reaches: just above 1 MiB.
pub const OVERSIZED_BYTES: usize = 1024 * 1024 + 1024;

/// The PEM block type a file of this kind holds.
fn block_type(kind: FileKind) -> &'static str {
    match kind {
        FileKind::CaKey(_) | FileKind::LeafKey | FileKind::KeyOnly => "EC PRIVATE KEY",
        FileKind::ServiceKey => "RSA PRIVATE KEY",
        _ => "CERTIFICATE",
    }
}

/// Replace `path` (a file the generator wrote) with its broken form.
pub fn apply(path: &Path, breakage: Breakage, kind: FileKind) -> Result<(), TreeError> {
    let err = io_err(path);
    let replace_with = |contents: &[u8]| std::fs::write(path, contents).map_err(io_err(path));
    match breakage {
        Breakage::Empty => replace_with(b""),
        Breakage::NoPemData => replace_with(b"this file holds no PEM data\n"),
        Breakage::BadDer => {
            let junk: Vec<u8> = (0u8..=255).rev().collect();
            replace_with(super::pem::encode(block_type(kind), &junk).as_bytes())
        }
        Breakage::Truncated => {
            let data = std::fs::read(path).map_err(err)?;
            replace_with(&data[..data.len() / 2])
        }
        Breakage::Unreadable => {
            remove(path)?;
            std::fs::create_dir(path).map_err(err)
        }
        Breakage::DanglingSymlink => {
            let name = path
                .file_name()
                .map(|n| format!("{}.missing", n.to_string_lossy()))
                .unwrap_or_else(|| "missing".to_owned());
            remove(path)?;
            std::os::unix::fs::symlink(name, path).map_err(err)
        }
        Breakage::LoopingSymlink => {
            let name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
            remove(path)?;
            std::os::unix::fs::symlink(name, path).map_err(err)
        }
        Breakage::Oversized => {
            let mut data = std::fs::read(path).map_err(err)?;
            let line = b"# padding: this file is oversized on purpose\n";
            while data.len() <= OVERSIZED_BYTES {
                data.extend_from_slice(line);
            }
            replace_with(&data)
        }
        Breakage::KeyMismatch | Breakage::ForeignIssuer => Ok(()),
    }
}

fn remove(path: &Path) -> Result<(), TreeError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(io_err(path))
    } else {
        std::fs::remove_file(path).map_err(io_err(path))
    }
}
