//! kubelet's `/healthz` on its plain-HTTP health port.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::HealthError;

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
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, url_host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
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
