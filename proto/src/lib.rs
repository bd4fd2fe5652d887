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

/// A doctor finding on the wire, the same from either side (the agent reports its own, the
/// hub serves the fleet's). The way back, which must refuse unknown codes, is the hub's.
impl From<&rke2ops_common::doctor::Finding> for v1::DoctorFinding {
    fn from(f: &rke2ops_common::doctor::Finding) -> Self {
        Self {
            code: f.code.as_str().to_owned(),
            severity: f.severity.as_str().to_owned(),
            node: f.node.clone(),
            object: f.object.clone(),
            evidence: f
                .evidence
                .iter()
                .map(|e| v1::DoctorEvidence {
                    field: e.field.clone(),
                    value: e.value.clone(),
                })
                .collect(),
            fix: f.fix.clone(),
        }
    }
}
