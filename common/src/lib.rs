//! What `rke2-node-agent` and `rke2-hub` share.
//!
//! - [`certs`]: reading RKE2's TLS tree (and kubeconfigs) into a certificate inventory,
//!   with RKE2's status words, chain and key checks, and never failing on a bad file.
//! - [`doctor`]: the doctor's findings (stable codes, severities, evidence, fix), exit code
//!   and table.
//! - [`renewal`]: the node's renewal deadline, the pure decision behind "restart due".
//! - [`layout`]: where RKE2 keeps things, and how its backup folders are named.
//! - [`report`]: the `check` renderings (RKE2's table, our JSON).
//! - [`identity`]: the node's enrolled identity (key, CSR, hub CA pin, 0600 files).
//! - [`config`]: loading a TOML configuration file, with errors naming the file, key and line.
//! - [`exposition`]: serving metrics (OpenMetrics or the classic text) and gauge encoding;
//!   `http_server` (feature `http-server`): the bounded HTTP server both binaries' `/metrics` use.
//! - [`ids`]: operation ids, checked by syntax before they name a file.
//! - [`text`]: peer-supplied strings clipped and escaped before they reach a message or terminal.
//! - [`version`]: RKE2 versions (`v1.34.1+rke2r1`), parsed and ordered.
//! - `shutdown` (feature `shutdown`, on with `http-server`): the daemons' graceful stop, first
//!   signal drains, second forces.
//! - [`atomic_file`]: replacing a file as root: no torn write, no followed link, owner kept.
//!
//! Nothing here does network I/O or talks to systemd (but for `http_server`, behind its
//! feature): those live in the binaries' crates.

pub mod atomic_file;
pub mod certs;
pub mod config;
pub mod doctor;
pub mod exposition;
#[cfg(feature = "http-server")]
pub mod http_server;
pub mod identity;
pub mod ids;
pub mod install;
pub mod layout;
pub mod renewal;
pub mod report;
#[cfg(feature = "shutdown")]
pub mod shutdown;
pub mod text;
pub mod version;
