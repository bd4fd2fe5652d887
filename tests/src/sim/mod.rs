//! The RKE2 simulator: realistic data dirs and a faithful `rke2 certificate check`.
//!
//! - [`tree`] writes RKE2 server/agent data dirs (certificates, keys, kubeconfigs, config)
//!   from cluster CAs that several simulated nodes share, with per-file validity overrides and
//!   breakages for failure tests.
//! - [`check`] is the simulated `rke2 certificate check` (used by the `rke2` binary), an
//!   implementation independent of `rke2ops-common` so end-to-end tests can compare the two.
//! - [`version`] resolves what `rke2 --version` prints.
//!
//! `tests/SIMULATOR.md` records the RKE2 facts these follow and where they differ.

pub mod check;
pub mod tree;
pub mod version;
