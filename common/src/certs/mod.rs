//! Certificate inspection.
//!
//! [`scan::Scanner`] walks the data dir and kubeconfigs; [`parse`] turns one PEM bundle into
//! [`model::CertEntry`]s; [`status`] holds RKE2's status words ([`CertStatus`]) and their
//! rules; [`keys`] decides whether a private key belongs to a certificate; [`chain`] verifies
//! leaves against the tree's CAs.
//! A file that cannot be used becomes a [`model::FileError`] entry: a scan never stops early.

pub mod chain;
pub mod keys;
pub mod kubeconfig;
pub mod model;
pub mod parse;
pub mod scan;
pub mod status;

pub use model::{CertEntry, FileError, Inventory, Usage};
pub use scan::{ScanConfig, Scanner};
pub use status::CertStatus;

#[cfg(test)]
pub(crate) mod test_support;
