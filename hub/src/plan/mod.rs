//! Rolling maintenance plans (issue 5), started with their pure parts: the decision which
//! node goes next ([`decide`]), RKE2 versions and the upgrade guards ([`version`]), and
//! maintenance windows ([`window`]). The engine that persists plans and drives agents and
//! the Kubernetes API builds on these.

pub mod decide;
pub mod version;
pub mod window;
