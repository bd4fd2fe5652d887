//! The simulated kubelet's API client: one HTTP/1.1 request per connection over mutual TLS
//! (`agent/client-kubelet.crt`, trusting `agent/server-ca.crt`), tried against each known
//! apiserver in turn, starting with the last one that answered — what RKE2's agent load
//! balancer (`127.0.0.1:6444`) does for a real kubelet.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::server::APISERVER_PORT;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Apiservers and credentials.
#[derive(Debug, Clone)]
pub struct ApiClient {
    tls: Arc<ClientConfig>,
    /// Known apiserver addresses; the first is tried first (the last that answered).
    servers: Arc<Mutex<Vec<IpAddr>>>,
    /// Whether the list may grow from the control-plane Nodes (agents' load balancer).
    balance: bool,
}

impl ApiClient {
    /// A client for `servers` with `tls`; `balance` lets [`ApiClient::learn`] add servers.
    #[must_use]
    pub fn new(tls: Arc<ClientConfig>, servers: Vec<IpAddr>, balance: bool) -> Self {
        Self {
            tls,
            servers: Arc::new(Mutex::new(servers)),
            balance,
        }
    }

    fn servers(&self) -> Vec<IpAddr> {
        self.servers.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Adds apiservers learnt from the cluster (agents only; servers talk to their own).
    pub fn learn(&self, found: impl IntoIterator<Item = IpAddr>) {
        if !self.balance {
            return;
        }
        if let Ok(mut list) = self.servers.lock() {
            for ip in found {
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
    }

    fn prefer(&self, ip: IpAddr) {
        if let Ok(mut list) = self.servers.lock()
            && let Some(pos) = list.iter().position(|s| *s == ip)
        {
            list[..=pos].rotate_right(1);
        }
    }

    /// Sends one request to the first apiserver that answers below 500; the status and the
    /// JSON body (`Null` when empty or not JSON).
    ///
    /// # Errors
    /// Every apiserver failed; the last reason.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut last = "no apiserver known".to_owned();
        for ip in self.servers() {
            let addr = SocketAddr::new(ip, APISERVER_PORT);
            let attempt = tokio::time::timeout(
                TIMEOUT,
                self.once(addr, method.clone(), path, content_type, body.clone()),
            )
            .await
            .unwrap_or_else(|_| Err(format!("{addr}: timeout")));
            match attempt {
                Ok((status, value)) if status < 500 => {
                    self.prefer(ip);
                    return Ok((status, value));
                }
                Ok((status, value)) => last = format!("{addr}: {status} {value}"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn once(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| format!("{addr}: tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "kubelet/rke2-sim")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}
