//! End-to-end tests and the RKE2 simulator.

pub mod ground;
pub mod http;
pub mod sim;
