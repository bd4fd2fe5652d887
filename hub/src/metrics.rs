//! The hub's Prometheus metrics. Fleet gauges are computed from the store at scrape time
//! (so they are never stale and cost nothing between scrapes); RPC counters and latencies
//! are updated by the services.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::registry::Registry as Streams;
use crate::store::Store;

use rke2ops_common::exposition::{Labels, const_gauges as gauge};

/// Registry and the handles the services update.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    /// RPCs by method and gRPC code.
    pub rpcs: Family<Labels, Counter>,
    /// RPC handling time by method (unary calls, and each message on a stream).
    pub rpc_seconds: Family<Labels, Histogram>,
}

#[derive(Debug)]
struct FleetCollector {
    store: Store,
    streams: Arc<Streams>,
}

impl Collector for FleetCollector {
    #[allow(clippy::cast_precision_loss)]
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(nodes) = self.store.nodes() else {
            return Ok(());
        };
        let mut by_group: std::collections::BTreeMap<(String, String, String), usize> =
            Default::default();
        for n in &nodes {
            let state = if n.online { "online" } else { "offline" };
            *by_group
                .entry((state.to_owned(), n.role.clone(), n.rke2_version.clone()))
                .or_default() += 1;
        }
        let series: Vec<(Labels, f64)> = by_group
            .into_iter()
            .map(|((state, role, version), count)| {
                (
                    vec![("state", state), ("role", role), ("version", version)],
                    count as f64,
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_hub_nodes",
            "Known nodes by state, role and RKE2 version",
            &series,
        )?;
        gauge(
            &mut encoder,
            "rke2ops_hub_connected_agents",
            "Agents with a live stream",
            &[(vec![], self.streams.connected().len() as f64)],
        )?;
        let deadlines: Vec<(Labels, f64)> = nodes
            .iter()
            .filter_map(|n| {
                Some((
                    vec![("node", n.name.clone())],
                    n.renewal_deadline?.unix_timestamp() as f64,
                ))
            })
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_hub_renewal_deadline_timestamp_seconds",
            "Each node's renewal deadline (earliest leaf NotAfter)",
            &deadlines,
        )?;
        // Plans: every plan by kind and state, and the active plan's nodes by phase (an
        // alert on `state="halted"` pages whoever must resume, skip or abort it).
        if let Ok(counts) = self.store.plan_counts() {
            let series: Vec<(Labels, f64)> = counts
                .into_iter()
                .map(|(kind, state, n)| (vec![("kind", kind), ("state", state)], n as f64))
                .collect();
            gauge(
                &mut encoder,
                "rke2ops_hub_plans",
                "Plans by kind and state",
                &series,
            )?;
            let mut phases = Vec::new();
            for p in self.store.plans(true).unwrap_or_default() {
                let mut by_phase: std::collections::BTreeMap<&str, usize> = Default::default();
                for n in self.store.plan_nodes(p.id).unwrap_or_default() {
                    *by_phase.entry(n.phase.name()).or_default() += 1;
                }
                for (phase, n) in by_phase {
                    phases.push((
                        vec![
                            ("plan", p.id.to_string()),
                            ("kind", p.kind.name().to_owned()),
                            ("state", p.state.name().to_owned()),
                            ("phase", phase.to_owned()),
                        ],
                        n as f64,
                    ));
                }
            }
            gauge(
                &mut encoder,
                "rke2ops_hub_plan_nodes",
                "Nodes of active plans by phase",
                &phases,
            )?;
        }
        if let Ok(Some(earliest)) = self.store.earliest_not_after() {
            gauge(
                &mut encoder,
                "rke2ops_hub_fleet_earliest_cert_expiry_timestamp_seconds",
                "The fleet's earliest certificate NotAfter",
                &[(vec![], earliest.unix_timestamp() as f64)],
            )?;
        }
        Ok(())
    }
}

impl HubMetrics {
    /// Registers everything.
    #[must_use]
    pub fn new(store: Store, streams: Arc<Streams>) -> Self {
        let mut registry = Registry::default();
        let build = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register(
            "rke2ops_build_info",
            "Build of rke2-hub (value 1); the same name as the agent's, per the metrics contract",
            build,
        );
        let rpcs = Family::<Labels, Counter>::default();
        registry.register(
            "rke2ops_hub_rpcs",
            "gRPC calls and stream messages by method and code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0])
        });
        registry.register(
            "rke2ops_hub_rpc_duration_seconds",
            "Time to handle a call or a stream message",
            rpc_seconds.clone(),
        );
        registry.register_collector(Box::new(FleetCollector { store, streams }));
        Self {
            registry,
            rpcs,
            rpc_seconds,
        }
    }

    /// Records one handled call or message.
    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        let code = format!("{code:?}");
        self.rpcs
            .get_or_create(&vec![("method", method.to_owned()), ("code", code)])
            .inc();
        self.rpc_seconds
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }

    /// OpenMetrics text.
    ///
    /// # Errors
    /// Only if formatting fails.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Serves `/metrics` (OpenMetrics when asked, classic text otherwise) and `/healthz`, within
/// [`ServerLimits::METRICS`].
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<HubMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use rke2ops_common::exposition;

    async fn handler(
        State(metrics): State<Arc<HubMetrics>>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let scrape = exposition::scrape(metrics.encode(), accept);
        (
            StatusCode::from_u16(scrape.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, scrape.content_type)],
            scrape.body,
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(metrics);
    serve_bounded(listener, app, ServerLimits::METRICS, shutdown).await
}

/// Connections served at once. The hub is scraped by one Prometheus (two in an HA pair) and
/// the odd `curl`; 32 leaves room for those and bounds what others can hold.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a request's headers (also between requests on a kept-alive
/// connection). A scrape sends them at once; 10 s drops a client that trickles them.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Age at which a connection is closed gracefully (the request in flight is answered), so
/// one that sends requests but never reads the answers cannot keep its slot.
pub const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(120);
/// Time a connection has to finish its request once asked to close (age or shutdown).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds of the metrics server, which anyone who reaches `metrics_addr` may use (the same
/// as the node agent's; see `rke2_node_agent::daemon::http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: std::time::Duration,
    /// Age at which a connection is closed gracefully.
    pub max_connection_age: std::time::Duration,
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
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use std::pin::pin;
    use tokio::sync::{Semaphore, watch};
    use tracing::Instrument as _;

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
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let connection = async move {
            let _slot = slot;
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only();
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let mut conn =
                pin!(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
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
        };
        tokio::spawn(connection.instrument(tracing::debug_span!("metrics connection", %peer)));
    }
    let _ = stop_tx.send(true);
    // Every slot back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(all)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Long enough for any test machine; the assertions are about what happens, not speed.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
                Err(_) => panic!("not closed: {}", String::from_utf8_lossy(&seen)),
                Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn slow_clients_are_dropped_and_the_cap_refuses_extra_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let limits = ServerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(1),
            max_connection_age: Duration::from_secs(3600),
        };
        tokio::spawn(serve_bounded(listener, app, limits, std::future::pending()));
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            slow.push(stream);
        }
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        assert!(
            !read_to_close(&mut extra).await.contains("200"),
            "over the cap"
        );
        for stream in &mut slow {
            let said = read_to_close(stream).await;
            assert!(!said.contains("200 OK"), "{said}");
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let answer = read_to_close(&mut stream).await;
            if answer.starts_with("HTTP/1.1 200") {
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
}
