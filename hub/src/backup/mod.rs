//! `rke2-hub backup` and `rke2-hub restore`: the hub's state (its database and its CA) as
//! one archive, taken while `serve` runs, and put back into a state dir so a rebuilt hub
//! comes back with every enrolled agent: they pin the same CA and present certificates
//! whose serials the restored database accepts, so none re-enrolls.
//!
//! - [`manifest`]: `manifest.json` (format version, store kind, schema version, each
//!   member's size and SHA-256) and the member path rules. Pure.
//! - [`archive`]: the gzipped tar, written manifest first, and read back with every check
//!   (type, path, listing, size, checksum, completeness, gzip trailer) before a byte is
//!   trusted. Generic over readers and writers.
//! - [`take`]: `backup`: the database snapshot (see `store::snapshot_database`), the PKI
//!   files, the archive written 0600 through a temp file and a rename.
//! - [`restore`]: `restore`: the archive checked whole, the state dir's lock, the old state
//!   moved aside, the members put in place, the database opened (migrated when older).
//! - [`error`]: what goes wrong, naming the file and the member or field.
//!
//! Nothing here prints: the CLI (`cli::backup`) reports. Nothing here ever puts key
//! material in an error or a `Debug` output.

pub mod archive;
pub mod error;
pub mod manifest;
pub mod restore;
pub mod take;

pub use error::BackupError;
pub use restore::{RestoreReport, restore};
pub use take::{BackupReport, backup};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests;
