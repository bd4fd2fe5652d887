//! The agents' TLS listener: accepts TCP, caps what one peer without a hub certificate may
//! hold, and completes each TLS handshake within a deadline before tonic sees the connection.
//!
//! Why: `Enroll` needs no client certificate, so anyone who can reach the port can open
//! connections. Without a cap and a deadline, one peer that opens connections and never
//! finishes a handshake holds a file descriptor for each, forever; once the hub's descriptors
//! run out, accepting fails at once and tonic's accept loop spins a core, and the admin socket
//! stops answering too.
//!
//! What is capped: connections of one peer (an IPv4 address, or an IPv6 /64) that hold no
//! certificate signed by the hub CA — handshakes in progress and anonymous connections — at
//! [`MAX_UNAUTHENTICATED_PER_PEER`]. A connection over the cap is closed at once; the first
//! refusal of a burst is logged. Connections authenticated by a hub certificate do not count:
//! many agents may share one address (NAT, a load test) and each is accountable by its name.
//! Telling the two apart needs the handshake's outcome, which tonic's built-in TLS keeps to
//! itself, so the handshake happens here, with the configuration tonic would build (client
//! certificate optional, verified against the hub CA; ALPN h2); tonic then serves the finished
//! TLS streams and `Request::peer_certs()` works as before.
//!
//! Not covered: a flood spread over many addresses (the kernel's and the unit's limits apply),
//! and misbehaviour of authenticated peers.
//!
//! - [`PeerSlots`]: the pure decision (admit or refuse a peer, and whether to log).
//! - [`server_config`]: the rustls configuration; [`incoming`]: the accept loop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::Instrument as _;

/// Connections one peer may hold without a hub certificate (handshaking or anonymous). An
/// enrolling agent needs one, briefly; a few dozen leave room for nodes enrolling at once
/// behind one NAT address (the rest retry with backoff).
pub const MAX_UNAUTHENTICATED_PER_PEER: usize = 32;
/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's limits (config keys `max_unauthenticated_per_peer`,
/// `tls_handshake_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections without a hub certificate one peer address may hold.
    pub per_peer: NonZeroUsize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_peer: NonZeroUsize::new(MAX_UNAUTHENTICATED_PER_PEER).unwrap_or(NonZeroUsize::MIN),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A PEM input is unusable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input (server certificate, server key, hub CA).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the CA as a trust anchor for client certificates.
    #[error("hub CA as client trust anchor: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Whether a peer's new connection is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It takes one of the peer's slots.
    Admit,
    /// The peer holds all its slots; `first` for the first refusal since it last held none
    /// (the one to log).
    Refuse {
        /// Log this one.
        first: bool,
    },
}

/// Slots held per peer. Pure: no I/O, no clock.
#[derive(Debug)]
pub struct PeerSlots {
    /// Slots per peer.
    limit: NonZeroUsize,
    /// Peers holding at least one slot; a peer is forgotten when it holds none, so the map
    /// never outgrows the connections open.
    held: HashMap<IpAddr, Held>,
}

/// One peer's slots.
#[derive(Debug, Default)]
struct Held {
    /// Slots in use.
    count: usize,
    /// A refusal was already logged in this burst.
    refused: bool,
}

impl PeerSlots {
    /// `limit` slots per peer.
    #[must_use]
    pub fn new(limit: NonZeroUsize) -> Self {
        Self {
            limit,
            held: HashMap::new(),
        }
    }

    /// Takes a slot of `peer` (see [`peer_of`]) if it has one free.
    pub fn admit(&mut self, peer: IpAddr) -> Admission {
        let held = self.held.entry(peer).or_default();
        if held.count < self.limit.get() {
            held.count += 1;
            Admission::Admit
        } else {
            let first = !held.refused;
            held.refused = true;
            Admission::Refuse { first }
        }
    }

    /// Gives back one of `peer`'s slots.
    pub fn release(&mut self, peer: IpAddr) {
        if let Some(held) = self.held.get_mut(&peer) {
            held.count = held.count.saturating_sub(1);
            if held.count == 0 {
                self.held.remove(&peer);
            }
        }
    }

    /// Slots `peer` holds.
    #[must_use]
    pub fn held_by(&self, peer: IpAddr) -> usize {
        self.held.get(&peer).map_or(0, |h| h.count)
    }

    /// Peers holding a slot.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.held.len()
    }
}

/// The peer a remote address belongs to: the IPv4 address (also when it arrives IPv4-mapped
/// on a dual-stack socket), or the IPv6 /64 (one host usually owns a whole /64).
#[must_use]
pub fn peer_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The listener's TLS configuration: the hub's server chain and key; client certificates
/// optional and, when presented, verified against the hub CA; ALPN h2.
///
/// # Errors
/// [`ListenerError`] naming the unusable input.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, ListenerError> {
    let pem = |what: &'static str| {
        move |e: rustls::pki_types::pem::Error| ListenerError::Pem {
            what,
            reason: e.to_string(),
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem("hub CA"))?)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()?;
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("server certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem("server key"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The TLS connections accepted on `listener`, for `Server::serve_with_incoming_shutdown`.
/// The accept loop ends, closing the listening socket, when tonic drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
) -> ReceiverStream<std::io::Result<TlsStream<PeerStream>>> {
    let (tx, rx) = mpsc::channel(32);
    let slots = Arc::new(Mutex::new(PeerSlots::new(limits.per_peer)));
    tokio::spawn(
        accept_loop(listener, TlsAcceptor::from(tls), slots, tx, limits)
            .instrument(tracing::info_span!("tls_listener")),
    );
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    slots: Arc<Mutex<PeerSlots>>,
    tx: mpsc::Sender<std::io::Result<TlsStream<PeerStream>>>,
    limits: Limits,
) {
    loop {
        let (tcp, addr) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let peer = peer_of(addr.ip());
        let admission = slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(peer);
        if let Admission::Refuse { first } = admission {
            if first {
                tracing::warn!(
                    %peer,
                    limit = limits.per_peer.get(),
                    "refusing connections from a peer that holds its limit of connections \
                     without a hub certificate"
                );
            }
            continue;
        }
        // tonic sets this on the connections it accepts itself (gRPC messages are small).
        let _ = tcp.set_nodelay(true);
        let stream = PeerStream {
            tcp,
            slot: Some(Slot {
                slots: Arc::clone(&slots),
                peer,
            }),
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(
            async move {
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(mut tls)) => {
                        // A certificate the hub CA signed: the peer is known, its connection
                        // no longer counts against the address.
                        if tls.get_ref().1.peer_certificates().is_some() {
                            tls.get_mut().0.slot = None;
                        }
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
            .instrument(tracing::debug_span!("tls_handshake", %addr)),
        );
    }
}

/// A slot of [`PeerSlots`], given back on drop.
#[derive(Debug)]
struct Slot {
    /// Where it was taken.
    slots: Arc<Mutex<PeerSlots>>,
    /// Whose it is.
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.peer);
    }
}

/// An accepted TCP connection and, while it holds no hub certificate, its peer's slot.
#[derive(Debug)]
pub struct PeerStream {
    /// The connection.
    tcp: TcpStream,
    /// Held from accept until the handshake proves a hub certificate, or until the
    /// connection is dropped.
    slot: Option<Slot>,
}

impl Connected for PeerStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    fn slots(limit: usize) -> PeerSlots {
        PeerSlots::new(NonZeroUsize::new(limit).expect("not zero"))
    }

    #[test]
    fn a_peer_gets_its_limit_and_the_first_refusal_is_logged_once() {
        let mut slots = slots(2);
        let attacker = ip("192.0.2.7");
        assert_eq!(slots.admit(attacker), Admission::Admit);
        assert_eq!(slots.admit(attacker), Admission::Admit);
        assert_eq!(slots.admit(attacker), Admission::Refuse { first: true });
        assert_eq!(slots.admit(attacker), Admission::Refuse { first: false });
        assert_eq!(slots.held_by(attacker), 2);
        // Another peer is not affected.
        assert_eq!(slots.admit(ip("192.0.2.8")), Admission::Admit);
    }

    #[test]
    fn a_released_slot_can_be_taken_again_and_an_idle_peer_is_forgotten() {
        let mut slots = slots(1);
        let peer = ip("192.0.2.7");
        assert_eq!(slots.admit(peer), Admission::Admit);
        assert_eq!(slots.admit(peer), Admission::Refuse { first: true });
        slots.release(peer);
        assert_eq!(
            slots.peers(),
            0,
            "no memory kept for a peer without connections"
        );
        assert_eq!(slots.admit(peer), Admission::Admit);
        // A new burst is logged again.
        assert_eq!(slots.admit(peer), Admission::Refuse { first: true });
        // Releasing more than was taken is harmless.
        slots.release(peer);
        slots.release(peer);
        assert_eq!(slots.held_by(peer), 0);
    }

    #[test]
    fn peers_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(peer_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(peer_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            peer_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            peer_of(ip("2001:db8:1:2::1")),
            peer_of(ip("2001:db8:1:3::1"))
        );
    }
}
