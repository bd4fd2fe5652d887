//! Generated gRPC types and services of `rke2ops.v1`.
//!
//! Only the edges touch these prost structs: the agent's `link/convert.rs` (which also wraps
//! the generated client), the hub's gRPC services under `grpc/` with their conversions in
//! `grpc/convert.rs`, and the hub CLI's gRPC clients (`cli/client.rs`, `cli/plans_client.rs`).
//! Everything else (the agent's runner and link, the hub's engine, registry and store) works
//! with domain types.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// `rke2ops.v1`: the agent <-> hub contract.
pub mod v1 {
    tonic::include_proto!("rke2ops.v1");
}
