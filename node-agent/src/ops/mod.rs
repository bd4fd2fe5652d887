//! Operations on this node: certificate rotation, renew-by-restart and RKE2 upgrades, as step
//! machines ([`steps`]) with a crash-safe journal ([`journal`]), run by [`runner::Runner`]
//! through the [`crate::service::ServiceManager`] and the [`crate::health`] probes. The
//! runner only drives; each step's side effects live with their operation: [`readiness`]
//! (preflight, wait for ready), [`units`] (unit jobs), [`rotation`], [`restart`]
//! (renew-by-restart) and [`upgrade`], which fetches and verifies release artifacts
//! ([`artifacts`]) and installs them atomically ([`install`]), and [`images`], which stages a
//! release's air-gap image archives before a plan upgrades anything (and prunes old ones). [`setup`] builds the runner
//! from the configuration, in one place for the CLI and the hub's commands (over
//! [`crate::link`]).

pub mod artifacts;
pub mod files;
pub mod images;
pub mod install;
pub mod journal;
pub mod method;
pub mod paths;
pub mod pkg;
pub mod readiness;
pub mod restart;
pub mod rotation;
pub mod rpm;
pub mod runner;
pub mod setup;
pub mod snapshot;
pub mod steps;
pub mod units;
pub mod upgrade;
pub mod waits;

pub use runner::Runner;
pub use setup::{NodeSetup, RunnerSetupError};

#[cfg(test)]
mod tests;
