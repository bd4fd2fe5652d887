//! Rolling maintenance plans. The pure parts: the decision which node goes next
//! ([`decide`]), which nodes a plan holds ([`create`]), RKE2 versions and the upgrade guards
//! ([`version`]), maintenance windows ([`window`]) and health gates ([`health`]); the
//! durable shape ([`model`]). [`crate::engine`] drives them against agents and Kubernetes.

pub mod action;
pub mod alerts;
pub mod auto;
pub mod channel;
pub mod create;
pub mod decide;
pub mod health;
pub mod model;
pub mod version;
pub mod window;
