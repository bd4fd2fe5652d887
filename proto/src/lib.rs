//! Generated gRPC types and services of `rke2ops.v1`.
//!
//! Only the conversion modules of the agent and hub touch these prost structs; the rest of
//! the code works with the domain types of `rke2ops-common`.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// `rke2ops.v1`: the agent <-> hub contract.
pub mod v1 {
    tonic::include_proto!("rke2ops.v1");
}
