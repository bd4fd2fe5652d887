//! The RKE2 simulator: realistic data dirs, a faithful `rke2 certificate check` and
//! `rotate`, and `rke2 server` / `rke2 agent` as real `Type=notify` services.
//!
//! - [`tree`] writes RKE2 server/agent data dirs (certificates, keys, kubeconfigs, config)
//!   from cluster CAs that several simulated nodes share, with per-file validity overrides and
//!   breakages for failure tests.
//! - [`check`] is the simulated `rke2 certificate check` (used by the `rke2` binary), an
//!   implementation independent of `rke2ops-common` so end-to-end tests can compare the two.
//! - [`rotate`] is `rke2 certificate rotate`: backup, trigger files, deletion.
//! - [`renew`] is what a start does to certificates (120-day window, triggers).
//! - [`certmon`] is RKE2's certificate monitor: expiry Events on the Node and the
//!   `rke2_certificate_expiration_seconds` gauge, every period while a node runs.
//! - [`server`] runs `rke2 server` / `rke2 agent`: listeners, a real etcd member, sd-notify;
//!   [`faults`] are the switches that make a start fail, hang or corrupt a file;
//!   [`node_config`] reads `config.yaml`.
//! - [`kube`] is a small Kubernetes API stand-in (nodes, pods, evictions with
//!   PodDisruptionBudgets, events) kept in the servers' etcd, with simulated kubelets and
//!   controllers.
//! - [`cluster`] sets simulated servers and agents up on proving-ground nodes.
//! - [`version`] resolves what `rke2 --version` prints (also from a trailer in the binary).
//! - [`release`] builds simulated RKE2 releases (tarball, image archives, sha256sum), [`rpm`] the
//!   same releases as RPM packages and repositories, and [`mirror`] serves
//!   them with a channel server, for upgrades.
//!
//! `tests/SIMULATOR.md` records the RKE2 facts these follow and where they differ.

pub mod certmon;
pub mod check;
pub mod clients;
pub mod cluster;
pub mod faults;
pub mod images;
pub mod kube;
pub mod logrus;
pub mod mirror;
pub mod node_config;
pub mod release;
pub mod renew;
pub mod rotate;
pub mod rpm;
pub mod server;
pub mod snapshot;
pub mod tree;
pub mod version;
