//! The agent's link to the hub: enrollment, then one long-lived gRPC stream.
//!
//! - First start: no identity under the state dir → enroll with the join token over TLS that
//!   trusts only the pinned hub CA; the agent's key never leaves the node.
//! - Then: mutual TLS with the stored identity; `Connect` carries a Hello, the full status,
//!   a full status again whenever the inventory changes, and a heartbeat every
//!   `heartbeat` otherwise. The hub may ask for a full status.
//! - Several hub replicas may be configured, the preferred first: a replica that cannot serve
//!   the link (unreachable, a follower answering `UNAVAILABLE`) sends it to the leader it
//!   names or to the next address at once ([`failover`]).
//! - A failure on every address (with one address: any failure): reconnect after a jittered
//!   exponential backoff ([`backoff`]).
//! - The client certificate is renewed over the authenticated channel long before it expires.
//! - Operations the hub sends run through [`ops::OpsDriver`] (idempotent by operation id);
//!   statuses carry the node's health ([`probe`]), probed at each heartbeat.
//! - The link speaks domain types ([`messages`]); only [`convert`] touches the wire's prost
//!   structs and the generated client. It reads the daemon's published state through
//!   [`crate::state`] and never imports the daemon.

pub mod backoff;
pub mod convert;
pub mod failover;
pub mod messages;
pub mod ops;
pub mod probe;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rke2ops_common::certs::status::warn_window;
use rke2ops_common::identity;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use convert::HubClient;
use failover::{Next, Outcome, Rotation};
use messages::{Hello, Incoming, Outgoing, StatusReport, Summary};

use crate::config::{Config, HubAddress, HubConfig};
use crate::state::{HubLinkSlot, ServiceSlot, Snapshot, refresh_service};

/// Where and how to reach the hub: a view of the agent's configuration (nothing copied).
#[derive(Debug, Clone, Copy)]
pub struct HubSettings<'a> {
    /// The hub part: addresses, enrollment token and CA pin, node name, heartbeat interval.
    pub hub: &'a HubConfig,
    /// The whole configuration: the identity's folder, the warning window, the rke2 binary,
    /// and what operations and health probes need.
    pub agent: &'a Config,
}

impl<'a> HubSettings<'a> {
    /// The hub settings of `config`; `None` when no hub is configured.
    #[must_use]
    pub fn of(config: &'a Config) -> Option<Self> {
        config.hub.as_ref().map(|hub| Self { hub, agent: config })
    }

    /// Where the enrolled identity lives.
    fn identity_dir(&self) -> PathBuf {
        self.agent.state_dir.join("identity")
    }
}

/// A hub replica's answer to a call, or its end of the stream, kept whole (not flattened into
/// text) so the failover can read its code and leader hint ([`outcome_of`]).
#[derive(Debug, thiserror::Error)]
#[error("{during} failed: {} ({:?})", .status.message(), .status.code())]
struct HubAnswer {
    /// Which call: enrollment, certificate renewal, connect, stream.
    during: &'static str,
    /// The replica's status (or tonic's, for a connection that failed).
    status: tonic::Status,
}

impl HubAnswer {
    fn of(during: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self { during, status }
    }
}

/// What a failed session says about its replica: a [`HubAnswer`] by its code, a stream the
/// transport closed under the agent (a send failed) moves on; anything else failed on the
/// agent's side (identity files, the configuration), where another replica would not help.
fn outcome_of(error: &anyhow::Error) -> Outcome {
    if let Some(answer) = error.downcast_ref::<HubAnswer>() {
        if failover::moves_on(answer.status.code()) {
            return Outcome::MoveOn {
                leader: failover::leader_hint(&answer.status),
            };
        }
        return Outcome::Stay;
    }
    if error
        .downcast_ref::<mpsc::error::SendError<Outgoing>>()
        .is_some()
    {
        return Outcome::MoveOn { leader: None };
    }
    Outcome::Stay
}

/// Publishes which replica the stream is up with (`None`: unlinked) for the metrics.
fn publish_link(slot: &HubLinkSlot, connected: Option<usize>) {
    if let Ok(mut link) = slot.lock() {
        link.connected = connected;
    }
}

/// Runs the link until the task is dropped (at once when `config` has no hub). `bus`
/// (systemd) refreshes the RKE2 unit's state at each heartbeat, so the hub learns of a unit
/// that stopped or restarted. `hub_link` is where the link publishes the replica it is up
/// with.
pub async fn run(
    config: Config,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    service: ServiceSlot,
    hub_link: HubLinkSlot,
    bus: Option<Arc<crate::dbus::Systemd>>,
) {
    let Some(settings) = HubSettings::of(&config) else {
        return;
    };
    let addresses = &settings.hub.addresses;
    if let Ok(mut link) = hub_link.lock() {
        link.addresses = addresses.iter().map(ToString::to_string).collect();
        link.connected = None;
    }
    let (driver, mut events) = ops::OpsDriver::new(config.clone());
    // An operation the hub started and a restart interrupted finishes now; its result waits in
    // the event channel for the first session.
    driver.resume_interrupted();
    let mut rotation = Rotation::new(addresses.len());
    loop {
        let current = rotation.current();
        let address = &addresses[current];
        let started = tokio::time::Instant::now();
        let link = Link {
            settings,
            address,
            linked: (&hub_link, current),
            service: &service,
            bus: bus.as_deref(),
            driver: &driver,
        };
        let ended = session(link, snapshots.clone(), &mut events).await;
        publish_link(&hub_link, None);
        let outcome = match &ended {
            Ok(()) => {
                tracing::info!(hub = %address, "hub stream ended");
                // The replica ended the stream (stopping, or no longer the leader).
                Outcome::MoveOn { leader: None }
            }
            Err(e) => {
                let outcome = outcome_of(e);
                match &outcome {
                    Outcome::MoveOn {
                        leader: Some(leader),
                    } => {
                        tracing::info!(hub = %address, %leader, error = %format!("{e:#}"), "hub replica cannot serve the link");
                    }
                    _ => {
                        tracing::warn!(hub = %address, error = %format!("{e:#}"), "hub link failed");
                    }
                }
                outcome
            }
        };
        match rotation.after(addresses, &outcome, started.elapsed()) {
            Next::Now(next) => log_move(addresses, current, next, &outcome),
            Next::After { attempt, then } => {
                let wait = backoff::delay(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    backoff::random_unit(),
                );
                tracing::info!(retry_in = ?wait, hub = %addresses[then], "reconnecting to the hub");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Says where the link goes after the replica at `from` failed with `outcome`, and why a
/// leader the replica named is not where it goes.
fn log_move(addresses: &[HubAddress], from: usize, next: usize, outcome: &Outcome) {
    let (from, to) = (&addresses[from], &addresses[next]);
    let leader = match outcome {
        Outcome::MoveOn { leader } => leader.as_deref(),
        Outcome::Stay => None,
    };
    match (leader, failover::hinted(addresses, leader)) {
        (_, Some(hinted)) if hinted == next => {
            tracing::info!(%from, hub = %to, "moving to the leader the hub replica named");
            return;
        }
        (Some(leader), Some(_)) => {
            tracing::info!(%from, %leader, "the named leader failed already in this round");
        }
        (Some(leader), None) => {
            tracing::warn!(%from, %leader, "the named leader is not a configured hub address; not dialling it");
        }
        (None, _) => {}
    }
    tracing::info!(%from, hub = %to, "trying the next hub address");
}

/// Loads the identity, enrolling first (at `address`) when there is none.
async fn ensure_identity(
    settings: HubSettings<'_>,
    address: &HubAddress,
) -> anyhow::Result<identity::Identity> {
    if let Some(found) = identity::load_identity(&settings.identity_dir())? {
        return Ok(found);
    }
    let token = settings
        .hub
        .token
        .as_deref()
        .context("not enrolled and no hub_token configured")?;
    let pin = settings
        .hub
        .ca_pin
        .as_deref()
        .context("not enrolled and no hub_ca_pin configured")?;
    let channel = tls::channel(address.host(), address.port(), tls::enrollment_config(pin)?)?;
    let key = identity::NodeKey::generate()?;
    let csr_pem = key.csr_pem(&settings.hub.node_name)?;
    let response = HubClient::new(channel)
        .enroll(
            token,
            &settings.hub.node_name,
            &settings.hub.cluster,
            csr_pem,
        )
        .await
        .map_err(HubAnswer::of("enrollment"))?;
    // The CA the hub returns must be the pinned one (the TLS layer already checked the CA
    // it presented); otherwise a compromised hub could hand over another trust anchor.
    let ca_ders: Vec<Vec<u8>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(response.ca_pem.as_bytes())
            .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| {
                c.map(|c| c.as_ref().to_vec())
            })
            .collect::<Result<_, _>>()
            .context("the hub returned an unreadable CA")?;
    identity::verify_pin(&ca_ders, pin)?;
    let saved = identity::save_identity(
        &settings.identity_dir(),
        &key.to_pem(),
        &response.certificate_pem,
        &response.ca_pem,
    )?;
    tracing::info!(node = %settings.hub.node_name, hub = %address, "enrolled with the hub");
    Ok(saved)
}

fn rke2_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default()
}

/// The unit's state re-read (when systemd is there), then the node probed: what a status
/// the hub acts on must reflect.
async fn fresh_health(
    bus: Option<&crate::dbus::Systemd>,
    service: &ServiceSlot,
    agent: &Config,
    is_server: bool,
) -> probe::Probe {
    if let Some(bus) = bus {
        refresh_service(bus, service).await;
    }
    probe::probe(agent, is_server).await
}

/// The node's doctor findings now: the daemon's file-based ones from `snapshot` and the
/// unit's from the state `service` holds (just refreshed by the caller), with the journal's
/// last lines when the unit is failing.
async fn findings_now(
    node: &str,
    snapshot: &Snapshot,
    service: &ServiceSlot,
    bus: Option<&crate::dbus::Systemd>,
) -> Vec<rke2ops_common::doctor::Finding> {
    use crate::service::UnitLog as _;
    let unit = bus.and_then(|_| service.lock().ok().and_then(|s| s.clone()));
    let unit = match unit {
        Some((name, state)) => {
            let journal = if crate::doctor::unit::is_failing(&state) {
                crate::journald::Journald
                    .tail(&name, crate::doctor::unit::JOURNAL_LINES)
                    .await
            } else {
                Vec::new()
            };
            Some((name, state, journal))
        }
        None => None,
    };
    crate::doctor::link_findings(
        node,
        &snapshot.findings,
        &snapshot.inventory,
        unit,
        OffsetDateTime::now_utc(),
    )
}

/// What one session borrows from the link.
struct Link<'a> {
    settings: HubSettings<'a>,
    /// The replica this session dials.
    address: &'a HubAddress,
    /// Where to publish, once the stream is up, that it is up with address number `.1`.
    linked: (&'a HubLinkSlot, usize),
    service: &'a ServiceSlot,
    bus: Option<&'a crate::dbus::Systemd>,
    driver: &'a Arc<ops::OpsDriver>,
}

async fn session(
    link: Link<'_>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    events: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> anyhow::Result<()> {
    let Link {
        settings,
        address,
        linked,
        service,
        bus,
        driver,
    } = link;
    let mut id = ensure_identity(settings, address).await?;
    let (host, port) = (address.host(), address.port());
    let mut client = HubClient::new(tls::channel(
        host,
        port,
        tls::mutual_config(&id.ca_pem, &id.cert_pem, &id.key_pem)?,
    )?);
    if identity::renewal_due(id.not_before, id.not_after, OffsetDateTime::now_utc()) {
        let key = identity::NodeKey::generate()?;
        let renewed = client
            .renew(key.csr_pem(&settings.hub.node_name)?)
            .await
            .map_err(HubAnswer::of("certificate renewal"))?;
        id = identity::save_identity(
            &settings.identity_dir(),
            &key.to_pem(),
            &renewed.certificate_pem,
            &id.ca_pem,
        )?;
        tracing::info!("client certificate renewed");
        client = HubClient::new(tls::channel(
            host,
            port,
            tls::mutual_config(&id.ca_pem, &id.cert_pem, &id.key_pem)?,
        )?);
    }

    let (tx, rx) = mpsc::channel::<Outgoing>(16);
    // The unit systemd runs says it; without systemd, RKE2's own rule: a node with a
    // `server/` folder in its data dir is a server.
    let unit = service
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|(unit, _)| unit.clone()));
    let is_server = unit.map_or_else(
        || settings.agent.data_dir.join("server").is_dir(),
        |u| u.starts_with("rke2-server"),
    );
    let hello = Hello {
        node_name: settings.hub.node_name.clone(),
        cluster: settings.hub.cluster.clone(),
        is_server,
        rke2_version: rke2_version(&crate::ops::setup::effective_rke2_bin(
            &settings.agent.rke2_bin,
        )),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    tx.send(Outgoing::Hello(hello)).await?;
    let node = settings.hub.node_name.as_str();
    // The findings last sent on this stream: a new stream sends them whole once.
    let mut sent_findings: Option<Vec<rke2ops_common::doctor::Finding>> = None;
    let mut if_changed = |findings: Vec<rke2ops_common::doctor::Finding>| {
        if sent_findings.as_ref() == Some(&findings) {
            None
        } else {
            sent_findings = Some(findings.clone());
            Some(findings)
        }
    };
    let status = |full: bool,
                  snapshot: Arc<Snapshot>,
                  health: &probe::Probe,
                  doctor: Option<Vec<rke2ops_common::doctor::Finding>>| {
        let service_state = service
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(_, st)| st.active_state.clone()))
            .unwrap_or_default();
        StatusReport {
            snapshot,
            now: OffsetDateTime::now_utc(),
            warn: warn_window(settings.agent.warn_days),
            service_state,
            full,
            health: health.clone(),
            doctor,
        }
    };
    let mut health = probe::probe(settings.agent, is_server).await;
    let current = Arc::clone(&snapshots.borrow_and_update());
    let doctor = if_changed(findings_now(node, &current, service, bus).await);
    let first = status(true, current, &health, doctor);
    let mut last_summary: Summary = first.summary();
    tx.send(Outgoing::Status(Box::new(first))).await?;

    let mut inbound = client.connect(rx).await.map_err(HubAnswer::of("connect"))?;
    publish_link(linked.0, Some(linked.1));
    tracing::info!(hub = %address, node = %settings.hub.node_name, "connected to the hub");
    let mut heartbeat = tokio::time::interval(settings.hub.heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                changed.context("inventory channel closed")?;
                let snapshot = Arc::clone(&snapshots.borrow_and_update());
                let doctor = if_changed(findings_now(node, &snapshot, service, bus).await);
                let report = status(true, snapshot, &health, doctor);
                last_summary = report.summary();
                tx.send(Outgoing::Status(Box::new(report))).await?;
            }
            Some(event) = events.recv() => {
                if matches!(event, Outgoing::Result(_)) {
                    // The hub gates its next node on this: fresh health right before the result.
                    health = fresh_health(bus, service, settings.agent, is_server).await;
                    let snapshot = Arc::clone(&snapshots.borrow());
                    let doctor = if_changed(findings_now(node, &snapshot, service, bus).await);
                    let report = status(false, snapshot, &health, doctor);
                    last_summary = report.summary();
                    tx.send(Outgoing::Status(Box::new(report))).await?;
                }
                tx.send(event).await?;
            }
            _ = heartbeat.tick() => {
                // A summary status when the unit's state, the worst status or the doctor's
                // findings moved (cheap for the hub: no certificate list), a bare heartbeat
                // otherwise.
                health = fresh_health(bus, service, settings.agent, is_server).await;
                let snapshot = Arc::clone(&snapshots.borrow());
                let doctor = if_changed(findings_now(node, &snapshot, service, bus).await);
                let report = status(false, snapshot, &health, doctor);
                let now_summary = report.summary();
                if now_summary == last_summary && report.doctor.is_none() {
                    tx.send(Outgoing::Heartbeat).await?;
                } else {
                    last_summary = now_summary;
                    tx.send(Outgoing::Status(Box::new(report))).await?;
                }
            }
            message = inbound.message() => {
                match message.map_err(HubAnswer::of("stream"))? {
                    None => return Ok(()),
                    Some(Incoming::RequestStatus) => {
                        // The hub gates a plan on this answer: probe now, not at the last
                        // heartbeat.
                        health = fresh_health(bus, service, settings.agent, is_server).await;
                        let snapshot = Arc::clone(&snapshots.borrow());
                        let doctor = if_changed(findings_now(node, &snapshot, service, bus).await);
                        let report = status(true, snapshot, &health, doctor);
                        last_summary = report.summary();
                        tx.send(Outgoing::Status(Box::new(report))).await?;
                    }
                    Some(Incoming::Run(run)) => {
                        tracing::info!(op = %rke2ops_common::text::quoted(&run.operation_id), "operation requested by the hub");
                        driver.handle_run(run).await;
                    }
                    Some(Incoming::Cancel(operation_id)) => {
                        driver.handle_cancel(&operation_id);
                    }
                    Some(Incoming::Unknown) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: tonic::Status) -> anyhow::Error {
        anyhow::Error::from(HubAnswer::of("connect")(status))
    }

    #[test]
    fn a_follower_s_answer_moves_on_with_its_hint() {
        let mut status = tonic::Status::unavailable("hub replica hub-b is a follower");
        status.metadata_mut().insert(
            failover::LEADER_METADATA,
            "10.0.0.2:9811".parse().expect("ascii"),
        );
        assert_eq!(
            outcome_of(&answer(status)),
            Outcome::MoveOn {
                leader: Some("10.0.0.2:9811".into())
            }
        );
        // Still read through added context.
        let wrapped = answer(tonic::Status::unavailable("tcp connect error")).context("session");
        assert_eq!(outcome_of(&wrapped), Outcome::MoveOn { leader: None });
    }

    #[test]
    fn a_refusal_or_a_local_failure_stays() {
        assert_eq!(
            outcome_of(&answer(tonic::Status::permission_denied("token spent"))),
            Outcome::Stay
        );
        assert_eq!(
            outcome_of(&anyhow::anyhow!("not enrolled and no hub_token configured")),
            Outcome::Stay
        );
    }

    #[test]
    fn a_stream_closed_under_the_agent_moves_on() {
        let closed = anyhow::Error::from(mpsc::error::SendError(Outgoing::Heartbeat));
        assert_eq!(outcome_of(&closed), Outcome::MoveOn { leader: None });
    }

    #[test]
    fn the_answer_names_the_call_the_message_and_the_code() {
        let text = answer(tonic::Status::unavailable("follower")).to_string();
        assert_eq!(text, "connect failed: follower (Unavailable)");
    }
}
