//! State the daemon and the hub link share: the published certificate [`Snapshot`], the
//! RKE2 unit's last read state ([`ServiceSlot`], refreshed by [`refresh_service`]) and the
//! hub replica the link is up with ([`HubLinkSlot`]).
//!
//! It sits below both: `daemon` and `link` import it, it imports neither, so the link never
//! reaches back into the daemon.

use std::sync::{Arc, Mutex};

use rke2ops_common::certs::Inventory;
use time::OffsetDateTime;

use crate::service::UnitState;

/// One published inventory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What the scan found.
    pub inventory: Inventory,
    /// When the scan finished.
    pub scanned_at: OffsetDateTime,
    /// The doctor's file-based findings on this inventory, worst first (empty when
    /// config.yaml is unreadable: the daemon logs why).
    pub findings: Vec<rke2ops_common::doctor::Finding>,
}

/// The RKE2 unit's state as last read (on a scrape, a STATUS rebuild or a hub heartbeat):
/// written by [`refresh_service`], read by the metrics collector and the hub link.
pub type ServiceSlot = Arc<Mutex<Option<(String, UnitState)>>>;

/// The hub link as the metrics show it: written by the link, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubLink {
    /// Every configured hub replica, as configured (empty: no hub link).
    pub addresses: Vec<String>,
    /// Index in `addresses` of the replica the stream is up with; `None` while unlinked.
    pub connected: Option<usize>,
}

/// The [`HubLink`] the link publishes and the metrics read.
pub type HubLinkSlot = Arc<Mutex<HubLink>>;

/// Reads the RKE2 unit's state (bounded: a stuck bus must not stall the agent), stores it for
/// the metrics and returns it. Called on scrapes and when the STATUS line is rebuilt, never
/// on a timer.
pub async fn refresh_service(
    systemd: &crate::dbus::Systemd,
    slot: &ServiceSlot,
) -> Option<(String, UnitState)> {
    use crate::service::{ServiceManager, detect_rke2_unit};
    let read = async {
        let unit = detect_rke2_unit(systemd).await.ok().flatten()?;
        let state = systemd.state(unit.name()).await.ok()?;
        Some((unit.name().to_owned(), state))
    };
    let fresh = tokio::time::timeout(std::time::Duration::from_secs(2), read)
        .await
        .ok()
        .flatten();
    if let Ok(mut slot) = slot.lock() {
        slot.clone_from(&fresh);
    }
    fresh
}

/// This node's name for the tasks' tracing spans: its name at the hub when a hub is
/// configured, else the host name (empty when unreadable: a log field, not an identity).
#[must_use]
pub fn node_name(config: &crate::config::Config) -> String {
    config.hub.as_ref().map_or_else(
        || {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        },
        |hub| hub.node_name.clone(),
    )
}
