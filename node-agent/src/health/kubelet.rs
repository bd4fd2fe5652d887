//! kubelet's `/healthz` on its plain-HTTP health port.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::HealthError;

/// One HTTP/1.1 GET over an already connected stream (plain TCP or TLS); status and body.
///
/// # Errors
/// The hyper error's text.
pub async fn get_over<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection's driver: its errors surface through `send_request`.
    tokio::spawn(tracing::Instrument::instrument(
        conn,
        tracing::debug_span!("health_probe_conn", host),
    ));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One plain-HTTP GET; returns status and body.
///
/// # Errors
/// [`HealthError::Unreachable`] when nothing answers within `timeout`.
pub async fn http_get(
    url_host: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HealthError> {
    let endpoint = format!("http://{url_host}{path}");
    let unreachable = |reason: String| HealthError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(url_host)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        get_over(stream, url_host, path).await.map_err(unreachable)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

/// Whether the kubelet at `host:port` reports healthy (`200 ok`).
///
/// # Errors
/// [`HealthError::Unreachable`] when it does not answer.
pub async fn healthz(host_port: &str, timeout: Duration) -> Result<bool, HealthError> {
    let (status, body) = http_get(host_port, "/healthz", timeout).await?;
    Ok(status == 200 && body.trim() == "ok")
}
