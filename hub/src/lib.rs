//! `rke2-hub`: the fleet hub. One per fleet; node agents dial it over gRPC with mutual TLS, and
//! operators drive it with the `rke2-hub` CLI.
//!
//! - [`store`]: the hub's durable state (nodes, latest certificate snapshot per node, join
//!   tokens, audit log) in an embedded SQLite database.

pub mod pki;
pub mod store;
