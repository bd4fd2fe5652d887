//! The listeners: accept loops (plain or TLS) that hand each HTTP/1.1 request to a handler,
//! and a tiny HTTP/1.0 client for probes (etcd `/health`, the agent's supervisor `/ping`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::logrus;

/// What a handler learns about a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `GET`, `POST`...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query (`verbose`, `exclude=etcd`...), empty when absent.
    pub query: String,
    /// Whether the client presented a certificate that verified against the listener's
    /// client CA (always false on listeners without client auth).
    pub client_cert: bool,
    /// The `Content-Type` header (patch flavours differ by it), empty when absent.
    pub content_type: String,
    /// The `Accept` header (kubectl asks for server-side `Table`s through it), empty when
    /// absent.
    pub accept: String,
    /// The request body (at most [`MAX_BODY`] bytes; a larger one is cut off and the
    /// handler sees invalid JSON, as a real apiserver would refuse it).
    pub body: Bytes,
}

/// The largest request body read (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A response body and status.
pub type Reply = Response<Full<Bytes>>;
/// A request handler.
pub type Handler =
    Arc<dyn Fn(RequestInfo) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Builds a reply with a `Content-Type`.
#[must_use]
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "nosniff".parse() {
        r.headers_mut()
            .insert(hyper::header::X_CONTENT_TYPE_OPTIONS, v);
    }
    r
}

/// Binds `addr` (a listener that fails to bind is fatal for RKE2 too).
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: listen tcp {addr}: bind: {e}"))
}

/// Serves `listener` until `shutdown` turns true: TLS when `tls` is set, each connection in
/// its own task.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                logrus::warn(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, false, handler).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    // A failed handshake (no or foreign client cert, plain HTTP) just closes,
                    // like Go's `http: TLS handshake error` (logged at debug level).
                    if let Ok(Ok(tls_stream)) = handshake.await {
                        let has_cert = tls_stream.get_ref().1.peer_certificates().is_some();
                        serve_connection(tls_stream, has_cert, handler).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(io: S, client_cert: bool, handler: Handler)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let limited = http_body_util::Limited::new(body, MAX_BODY);
            let body = limited
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let info = RequestInfo {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                client_cert,
                content_type: parts
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                accept: parts
                    .headers
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body,
            };
            Ok::<_, Infallible>(handler(info).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// `GET path` over HTTP/1.0 to `addr` (TLS when `tls` is given, verifying the server as
/// `server_name`); returns the status code and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let work = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: rke2\r\n\r\n");
        let raw = match tls {
            None => exchange(stream, &request).await?,
            Some((config, name)) => {
                let tls = TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                exchange(tls, &request).await?
            }
        };
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "malformed HTTP response".to_owned())?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed status line {head:?}"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("GET {addr}{path}: timeout after {timeout:?}"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    // A TLS peer may close without close_notify; what was read until then is the answer.
    match stream.read_to_end(&mut out).await {
        Ok(_) => Ok(out),
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(format!("read: {e}")),
    }
}
