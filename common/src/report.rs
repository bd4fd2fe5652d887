//! Renderings of an [`Inventory`](crate::certs::Inventory): RKE2's `certificate check`
//! table ([`table`]) and rke2-ops' JSON ([`json`]).

pub mod humanize;
pub mod json;
pub mod table;
pub mod tabwriter;
