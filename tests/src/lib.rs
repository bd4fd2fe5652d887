//! End-to-end tests of `rke2-node-agent` and `rke2-hub`, and the harness they share.
//!
//! The workspace's test tooling is three crates:
//!
//! - `rke2ops-ground` (`tests/ground/`): the proving ground, simulated nodes that each boot a
//!   real systemd in namespaces; re-exported here as [`ground`].
//! - `rke2ops-sim` (`tests/sim/`): the RKE2 simulator, its `rke2` and `rke2-sim` binaries and
//!   its own tests; re-exported here as [`sim`].
//! - this crate: the hub harness ([`hub`]), the fake fleet ([`fleet`]), the plan harness
//!   ([`plans`]), small HTTP and Prometheus clients, the runbook reader, and the end-to-end
//!   tests in `tests/tests/`.
//!
//! Test targets that boot nodes need root. They are named `e2e_*` and only built with the
//! `e2e` feature (`scripts/test.sh` enables it); without it `e2e_gate` fails once and says how
//! to run them.

pub use rke2ops_ground as ground;
pub use rke2ops_sim as sim;

pub mod etcd;
pub mod fleet;
pub mod http;
pub mod hub;
pub mod plans;
pub mod prometheus;
pub mod runbook;
