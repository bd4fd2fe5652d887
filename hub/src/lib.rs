//! `rke2-hub`: the fleet hub. One per fleet; node agents dial it over gRPC with mutual TLS, and
//! operators drive it with the `rke2-hub` CLI.
//!
//! - [`serve`]: `rke2-hub serve`: the TLS listener for agents, the admin socket, liveness.
//! - [`listener`]: the agents' TCP/TLS accept loop: a per-peer cap on connections without a
//!   hub certificate and a handshake deadline.
//! - [`grpc`]: the services, their authorization, and every wire ↔ domain conversion
//!   ([`grpc::convert`], which the CLI's gRPC clients use too).
//! - [`registry`]: live agent streams; [`ratelimit`]: per-node limits on what agents send; [`config`]: hub.toml and flags.
//! - [`kube`]: the Kubernetes API for plans (Node readiness, cordon, drain, Events) and the
//!   doctor's reads (budgets, pods, system-upgrade-controller) with failover between the
//!   servers' apiservers.
//! - [`cli`]: the operator commands (arguments, the admin-socket client, rendering).
//! - [`plan`], [`engine`]: rolling plans (pure decisions; the engine driving them);
//!   [`fetch`]: the hub's HTTP reads (channels, Prometheus alerts).
//! - [`doctor`]: `rke2-hub doctor`'s fleet-wide checks (PodDisruptionBudgets, leftover
//!   system-upgrade-controller, version skew), pure over what the hub gathered.
//! - [`clusters`]: `rke2-hub clusters`, each cluster summed up from the inventory.
//! - [`backup`]: `rke2-hub backup` and `restore`: the database and CA as one checked archive.
//! - [`store`]: the hub's durable state (nodes, latest certificate snapshot per node, join
//!   tokens, audit log) in an embedded SQLite database.

pub mod backup;
pub mod cli;
pub mod clusters;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod fetch;
pub mod grpc;
pub mod ha;
pub mod kube;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod ratelimit;
pub mod registry;
pub mod serve;
pub mod store;
