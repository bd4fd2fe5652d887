//! Operations on this node: certificate rotation and renew-by-restart, as step machines
//! ([`steps`]) with a crash-safe journal ([`journal`]), run by [`runner::Runner`] through the
//! [`crate::service::ServiceManager`] and the [`crate::health`] probes. The CLI and (later)
//! the hub's commands use the same code.

pub mod files;
pub mod journal;
pub mod runner;
pub mod steps;
