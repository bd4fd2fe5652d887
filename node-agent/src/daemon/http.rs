//! `/metrics` and `/healthz` over plain HTTP (axum). The agent listens on nothing else.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;

use rke2ops_common::exposition;

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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format for
/// the rest (curl, promtool).
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(systemd) = &state.systemd {
        super::refresh_service(systemd, &state.metrics.service).await;
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
