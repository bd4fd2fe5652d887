//! `/metrics` and `/healthz` over plain HTTP (axum on hyper). The agent listens on nothing else.
//!
//! The endpoint has no authentication and no TLS: it serves what a node's certificates'
//! dates and names are, nothing secret, on `metrics_addr` (`0.0.0.0:9810` in the shipped
//! example; bind it to the node's private address, or firewall it, where the port must not
//! be reachable from outside). Anyone who can reach it is a peer that could hold connections
//! open, so the server is bounded ([`ServerLimits::METRICS`], see
//! [`rke2ops_common::http_server`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;

use rke2ops_common::exposition;
use rke2ops_common::http_server::{ServerLimits, serve_bounded};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// systemd, when the system bus is reachable: the RKE2 unit's state is read on each
    /// scrape (no polling when nobody scrapes).
    pub systemd: Option<Arc<crate::dbus::Systemd>>,
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    serve_bounded(listener, app, ServerLimits::METRICS, shutdown).await
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format for
/// the rest (curl, promtool).
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(systemd) = &state.systemd {
        crate::state::refresh_service(systemd, &state.metrics.service).await;
    }
    let metrics = &state.metrics;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let scrape = exposition::scrape(metrics.encode(), accept);
    (
        StatusCode::from_u16(scrape.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, scrape.content_type)],
        scrape.body,
    )
        .into_response()
}
