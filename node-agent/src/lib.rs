//! `rke2-node-agent`: the per-node half of rke2-ops.
//!
//! - [`check`]: the one-shot `check` command (RKE2's table or JSON, and an exit code).
//! - [`doctor`]: the `doctor` command: findings with evidence and fix commands (pure checks
//!   over gathered facts).
//! - [`daemon`]: the `run` command: file watching, the inventory, `/metrics` and `/healthz`,
//!   and the systemd notify protocol (READY, STATUS, WATCHDOG).
//! - [`config`]: the TOML file and its flag/env overrides (one [`config::ConfigLayer`] for
//!   both), resolved into the effective [`config::Config`].
//! - [`link`]: the hub link; [`state`]: what the daemon and the link share (below both:
//!   `daemon` → `link` → `state`, never `link` → `daemon`).
//! - [`service`]: what operations need from systemd and its journal (traits); [`dbus`]
//!   implements the first over systemd's D-Bus API, [`journald`] the second.
//! - [`ops`]: the operations (rotate, renew-by-restart, upgrade) and their runner.
//!
//! Certificate parsing and the decisions about them live in `rke2ops-common`; this crate
//! owns the process: I/O, timing and signals.

pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod doctor;
pub mod health;
pub mod journald;
pub mod link;
pub mod ops;
pub mod service;
pub mod state;
