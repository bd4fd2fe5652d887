//! A bounded HTTP/1 server for endpoints anyone on the network may reach (both binaries'
//! `/metrics`): a client has [`HEADER_READ_TIMEOUT`] to send a request's headers (also
//! between requests on a kept-alive connection), at most [`MAX_CONNECTIONS`] connections are
//! served at once (one more is closed as soon as it is accepted), and a connection is closed
//! gracefully after [`MAX_CONNECTION_AGE`] (one that sends requests but never reads the
//! answers cannot keep its slot). Prometheus opens one connection per target and reconnects
//! when one is closed.
//!
//! Behind the `http-server` feature: the one piece of `common` that does network I/O, shared
//! so the agent and the hub cannot drift apart in how they bound their servers.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument as _;

/// Connections served at once. A node is scraped by one Prometheus (two in an HA pair) and
/// the odd `curl`; 32 leaves room for those and bounds what others can hold.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a request's headers. A scrape sends them at once; 10 s is far
/// beyond any real network and drops a client that trickles them (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Age at which a connection is closed gracefully (the request in flight is answered).
/// Longer than any scrape timeout, so a scrape is never cut; reconnecting costs nothing.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// Time a connection has to finish its request once asked to close (age or shutdown).
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Bounds of an HTTP server that anyone on the network may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
    /// Age at which a connection is closed gracefully.
    pub max_connection_age: Duration,
}

impl ServerLimits {
    /// The metrics server's limits.
    pub const METRICS: Self = Self {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_connection_age: MAX_CONNECTION_AGE,
    };
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then lets the
/// requests in flight finish (for at most [`CLOSE_GRACE`]).
///
/// # Errors
/// Never at present (accept errors are logged and retried); kept for the caller's `?`.
pub async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    // Logged once per burst of refusals, not once per connection.
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if !refusing {
                tracing::warn!(%peer, max = limits.max_connections, "metrics server: connection closed at once, the connection cap is reached");
                refusing = true;
            }
            drop(stream);
            continue;
        };
        refusing = false;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(
            serve_connection(stream, service, limits, stop_rx.clone(), slot)
                .instrument(tracing::debug_span!("metrics connection", %peer)),
        );
    }
    let _ = stop_tx.send(true);
    // Every slot back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(all)).await;
    Ok(())
}

/// Serves one connection; its `_slot` is given back when it ends.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = stop.wait_for(|stop| *stop) => {}
        () = tokio::time::sleep(limits.max_connection_age) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Long enough for any test machine to do what happens before it; the assertions are
    /// about what happens, not how fast.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn start(
        limits: ServerLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_bounded(listener, app, limits, async {
            let _ = stop_rx.await;
        }));
        (addr, stop_tx)
    }

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
                Err(_) => panic!(
                    "not closed by the server: {}",
                    String::from_utf8_lossy(&seen)
                ),
                Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn healthz(addr: std::net::SocketAddr) -> Option<String> {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let answer = read_to_close(&mut stream).await;
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    }

    #[tokio::test]
    async fn slow_clients_are_dropped_and_the_cap_refuses_extra_connections() {
        let limits = ServerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(1),
            max_connection_age: Duration::from_secs(3600),
        };
        let (addr, _stop) = start(limits).await;
        // Two slowloris clients: headers begun, never finished.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            slow.push(stream);
        }
        // A third is closed at once, without an answer, while both slots are held.
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        assert!(
            !read_to_close(&mut extra).await.contains("200"),
            "over the cap"
        );
        // Each slow client is dropped by the header timeout (hyper may say 408 first).
        for stream in &mut slow {
            let said = read_to_close(stream).await;
            assert!(!said.contains("200 OK"), "{said}");
        }
        // Their slots are free again: a normal scrape works (the server may take a moment
        // to notice that the closed connections' tasks have ended).
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(answer) = healthz(addr).await {
                assert!(answer.ends_with("ok\n"), "{answer}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "scrape refused after the slow clients left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_too() {
        let limits = ServerLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(1),
            max_connection_age: Duration::from_secs(3600),
        };
        let (addr, _stop) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Answered, then closed while waiting for a next request that never comes.
        let said = read_to_close(&mut stream).await;
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    }

    #[tokio::test]
    async fn an_old_connection_is_closed_after_its_request_is_answered() {
        let limits = ServerLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(3600),
            max_connection_age: Duration::from_millis(200),
        };
        let (addr, _stop) = start(limits).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Sends nothing: past its age, it is closed although the header timeout is far.
        let said = read_to_close(&mut stream).await;
        assert!(said.is_empty(), "{said}");
    }
}
