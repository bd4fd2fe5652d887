//! The one error type of the proving ground.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a proving-ground operation failed. Messages carry what a person needs to debug the node
/// (stderr of the failing command, the unit's journal tail) because tests print them as-is;
/// `Debug` prints the same text, so `.expect()` in a test shows it readably.
#[derive(thiserror::Error)]
pub enum GroundError {
    /// The machine cannot host nodes (not root, a tool or the cgroup tree missing).
    #[error("the proving ground cannot run here: {0}")]
    Prerequisite(String),

    /// The [`NodeSpec`](super::NodeSpec) cannot be booted as given.
    #[error("invalid node spec: {0}")]
    InvalidSpec(String),

    /// A file operation on the host side of the node's folders failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`"write"`, `"create folder"`, ...).
        action: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A command could not be started at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A command run inside the node exited unsuccessfully.
    #[error("`{command}` on node {node} exited with {status}\nstderr: {stderr}\nstdout: {stdout}")]
    CommandFailed {
        /// The node's name.
        node: String,
        /// The command line.
        command: String,
        /// The exit status as text (`exit status: 3`, `signal: 9`).
        status: String,
        /// What it wrote to stdout.
        stdout: String,
        /// What it wrote to stderr.
        stderr: String,
    },

    /// The node's systemd did not come up, or came up degraded.
    #[error("node {node} did not boot: {detail}")]
    Boot {
        /// The node's name.
        node: String,
        /// What went wrong, with the console and journal tails.
        detail: String,
    },

    /// A wait for a condition on the node ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}\n{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        timeout: Duration,
        /// The last observation and, for units, the journal tail.
        detail: String,
    },

    /// A node path outside the node's private folders: writing it would change the host.
    #[error(
        "{} is not inside one of node {node}'s private folders ({private}); it is the host's own",
        path.display()
    )]
    NotPrivate {
        /// The node's name.
        node: String,
        /// The node path asked for.
        path: PathBuf,
        /// The node's private folders.
        private: String,
    },

    /// The requested address is held by another live node of this ground.
    #[error("address {0} is in use by another proving-ground node")]
    AddressInUse(Ipv4Addr),

    /// Every address of the proving ground's range is held by a live node.
    #[error("no free address left in the ground network (10.250.0.0/16)")]
    NoFreeAddress,

    /// A unit property did not have the expected shape.
    #[error("property {property} of {unit} on node {node} is {value:?}: {why}")]
    BadProperty {
        /// The node's name.
        node: String,
        /// The unit.
        unit: String,
        /// The property name.
        property: String,
        /// The value systemd reported.
        value: String,
        /// What was expected.
        why: &'static str,
    },
}

impl std::fmt::Debug for GroundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Shorthand for results of the proving ground.
pub type Result<T, E = GroundError> = std::result::Result<T, E>;

/// Builds a [`GroundError::Io`] for `path` (used with `map_err`).
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> GroundError {
    let path = path.into();
    move |source| GroundError::Io {
        action,
        path,
        source,
    }
}
