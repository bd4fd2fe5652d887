//! Operations on this node: certificate rotation, renew-by-restart and RKE2 upgrades, as step
//! machines ([`steps`]) with a crash-safe journal ([`journal`]), run by [`runner::Runner`]
//! through the [`crate::service::ServiceManager`] and the [`crate::health`] probes. Upgrades
//! fetch and verify release artifacts ([`artifacts`]) and install them atomically
//! ([`install`]). The CLI and the hub's commands (over [`crate::link`]) use the same code.

pub mod artifacts;
pub mod files;
pub mod install;
pub mod journal;
pub mod paths;
pub mod runner;
pub mod steps;
