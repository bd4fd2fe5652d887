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

/// Serves until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format for
/// the rest (curl, promtool).
async fn metrics_handler(
    State(metrics): State<Arc<Metrics>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match metrics.encode() {
        Ok(body) if exposition::wants_openmetrics(accept) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::OPENMETRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::CLASSIC_CONTENT_TYPE)],
            exposition::to_classic_text(&body),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
