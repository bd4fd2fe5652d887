//! End-to-end tests and the RKE2 simulator.

pub mod fleet;
pub mod ground;
pub mod http;
pub mod hub;
pub mod plans;
pub mod prometheus;
pub mod runbook;
pub mod sim;
