//! Rolling maintenance plans. The pure parts: the decision which node goes next
//! ([`decide`]), whether a request is valid and which nodes a plan holds ([`create`]), RKE2
//! versions and the upgrade guards ([`version`]), release channels ([`channel`]),
//! maintenance windows ([`window`]), health gates ([`health`]) and the Prometheus alert gate
//! ([`alerts`]), which operator actions a plan allows ([`action`]), which nodes
//! auto-maintenance restarts ([`auto`]), an upgrade's air-gap image staging phase
//! ([`images`]), what an upgrade would do per node ([`preview`]); the durable shape and a
//! node's phase transitions ([`model`]). [`crate::engine`] drives them against agents,
//! Kubernetes and Prometheus.

pub mod action;
pub mod alerts;
pub mod auto;
pub mod channel;
pub mod create;
pub mod decide;
pub mod health;
pub mod images;
pub mod model;
pub mod preview;
pub mod rollout;
pub mod version;
pub mod window;
