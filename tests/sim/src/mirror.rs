//! A small artifact mirror and channel server for simulated releases ([`crate::release`]):
//! what an air-gapped site's internal mirror (or GitHub plus update.rke2.io) answers.
//!
//! - `GET /<version>/<file>`: a file of `<dir>/<version>/`, with the version URL-encoded
//!   (`v1.34.1%2Brke2r1`, GitHub's release download layout) or not (`+`);
//! - `GET /v1-release/channels`: the channel collection ([`release::channels_json`]);
//! - `GET /v1-release/channels/<name>`: 302 to `<base>/releases/tag/<version>`, like
//!   update.rke2.io (the last path element of `Location` is the version);
//! - `GET /rpm/<path>`: a file of `<dir>/rpm/` (the RPM repositories of [`crate::rpm`]:
//!   `<base>/rpm/stable` is the repository URL), percent-decoded, every segment a plain name;
//! - anything else: 404. Every request is counted ([`MirrorHandle::requests`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::release::{self, Channel};

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Binding the address failed.
    #[error("mirror: listen tcp {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The runtime thread could not start.
    #[error("mirror: {0}")]
    Runtime(std::io::Error),
    /// The proving ground's network could not give the mirror an address.
    #[error("mirror: {0}")]
    Ground(#[from] rke2ops_ground::GroundError),
}

/// What the mirror serves.
#[derive(Debug, Clone)]
struct Served {
    dir: PathBuf,
    base_url: String,
    channels: Vec<Channel>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// A running mirror; dropping it stops the server.
#[derive(Debug)]
pub struct MirrorHandle {
    /// The bound address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The mirror's address in the proving ground ([`Mirror::serve_in_ground`]); released
    /// after the server stopped (fields drop in order).
    _lease: Option<rke2ops_ground::net::AddrLease>,
}

impl MirrorHandle {
    /// `http://<addr>`: the artifact URL prefix (`artifact_source`) and the channel server's
    /// base (`<base>/v1-release/channels`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Paths requested so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The mirror.
#[derive(Debug)]
pub struct Mirror;

impl Mirror {
    /// Serves `dir` (releases as [`release::build_release`] writes them) and `channels` on
    /// `addr` from a thread of its own, until the handle is dropped.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn serve(
        dir: &Path,
        addr: SocketAddr,
        channels: Vec<Channel>,
    ) -> Result<MirrorHandle, MirrorError> {
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|source| MirrorError::Bind { addr, source })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| MirrorError::Bind { addr, source })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| MirrorError::Bind { addr, source })?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let served = Served {
            dir: dir.to_path_buf(),
            base_url: format!("http://{addr}"),
            channels,
            requests: Arc::clone(&requests),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MirrorError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name("rke2-sim-mirror".into())
            .spawn(move || runtime.block_on(run(std_listener, served, stop_rx)))
            .map_err(MirrorError::Runtime)?;
        Ok(MirrorHandle {
            addr,
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
            _lease: None,
        })
    }

    /// [`Mirror::serve`] on an address of its own in the proving ground's network, where
    /// nodes reach it (see [`rke2ops_ground::net`]), whichever thread calls it.
    ///
    /// # Errors
    /// When the ground gives no address or the address cannot be bound.
    pub fn serve_in_ground(
        dir: &Path,
        channels: Vec<Channel>,
    ) -> Result<MirrorHandle, MirrorError> {
        let lease = rke2ops_ground::ground()?.lease_host()?;
        let addr = SocketAddr::new(lease.ip().into(), 0);
        let mut handle = rke2ops_ground::net::in_ground(|| Self::serve(dir, addr, channels))??;
        handle._lease = Some(lease);
        Ok(handle)
    }
}

async fn run(
    listener: std::net::TcpListener,
    served: Served,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let served = Arc::new(served);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let served = Arc::clone(&served);
                async move { Ok::<_, Infallible>(answer(&served, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a path means to the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The channel collection.
    Channels,
    /// One channel: redirect to its release.
    Channel(String),
    /// A release file: version (decoded) and file name.
    Artifact(String, String),
    /// A file of the RPM repositories: its path below `<dir>/rpm/` (decoded, clean).
    Rpm(String),
    /// Anything else.
    NotFound,
}

/// Routes a request path (pure).
#[must_use]
pub fn route(path: &str) -> Route {
    let path = path.trim_start_matches('/');
    if path == "v1-release/channels" {
        return Route::Channels;
    }
    if let Some(name) = path.strip_prefix("v1-release/channels/") {
        return if name.is_empty() || name.contains('/') {
            Route::NotFound
        } else {
            Route::Channel(name.to_owned())
        };
    }
    if let Some(rest) = path.strip_prefix("rpm/") {
        return rpm_route(rest);
    }
    match path.split_once('/') {
        Some((version, file))
            if !file.is_empty()
                && !file.contains('/')
                && !file.starts_with('.')
                && version.starts_with('v') =>
        {
            let version = version.replace("%2B", "+").replace("%2b", "+");
            if version.contains("..") || version.contains('%') {
                Route::NotFound
            } else {
                Route::Artifact(version, file.to_owned())
            }
        }
        _ => Route::NotFound,
    }
}

/// Decodes `%XX` escapes (dnf and zypper may write `~` as `%7E`); `None` for a bad escape.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `/rpm/<rest>`: every decoded segment non-empty, not hidden (so no `.` or `..`), no NUL.
fn rpm_route(rest: &str) -> Route {
    let Some(decoded) = percent_decode(rest) else {
        return Route::NotFound;
    };
    let clean = !decoded.is_empty()
        && decoded
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\0'));
    if clean {
        Route::Rpm(decoded)
    } else {
        Route::NotFound
    }
}

fn answer(served: &Served, path: &str) -> Response<Full<Bytes>> {
    if let Ok(mut log) = served.requests.lock() {
        log.push(path.to_owned());
    }
    let respond = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    match route(path) {
        Route::Channels => respond(
            StatusCode::OK,
            release::channels_json(&served.base_url, &served.channels).into(),
        ),
        Route::Channel(name) => match served.channels.iter().find(|c| c.name == name) {
            Some(c) => {
                let mut r = respond(StatusCode::FOUND, Bytes::new());
                let location = format!(
                    "{}/releases/tag/{}",
                    served.base_url,
                    release::url_segment(&c.latest)
                );
                if let Ok(v) = location.parse() {
                    r.headers_mut().insert(hyper::header::LOCATION, v);
                }
                r
            }
            None => respond(StatusCode::NOT_FOUND, "channel not found\n".into()),
        },
        Route::Artifact(version, file) => {
            match std::fs::read(served.dir.join(&version).join(&file)) {
                Ok(bytes) => respond(StatusCode::OK, bytes.into()),
                Err(_) => respond(StatusCode::NOT_FOUND, "Not Found\n".into()),
            }
        }
        Route::Rpm(rel) => {
            let path = served.dir.join("rpm").join(rel);
            match std::fs::read(&path) {
                Ok(bytes) if path.is_file() => respond(StatusCode::OK, bytes.into()),
                _ => respond(StatusCode::NOT_FOUND, "Not Found\n".into()),
            }
        }
        Route::NotFound => respond(StatusCode::NOT_FOUND, "Not Found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_accept_encoded_and_plain_plus_and_refuse_escapes() {
        let artifact = Route::Artifact("v1.34.1+rke2r1".into(), "sha256sum-amd64.txt".into());
        assert_eq!(route("/v1.34.1%2Brke2r1/sha256sum-amd64.txt"), artifact);
        assert_eq!(route("/v1.34.1+rke2r1/sha256sum-amd64.txt"), artifact);
        assert_eq!(route("/v1-release/channels"), Route::Channels);
        assert_eq!(
            route("/v1-release/channels/stable"),
            Route::Channel("stable".into())
        );
        for bad in [
            "/../etc/passwd",
            "/v1..2/x",
            "/v1/.hidden",
            "/v1/a/b",
            "/x/y",
            "/",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
    }

    #[test]
    fn rpm_routes_decode_and_refuse_escapes() {
        assert_eq!(
            route("/rpm/stable/1.34/centos/9/x86_64/repodata/repomd.xml"),
            Route::Rpm("stable/1.34/centos/9/x86_64/repodata/repomd.xml".into())
        );
        assert_eq!(
            route("/rpm/stable/1.34/centos/9/x86_64/rke2-common-1.34.1%7Erke2r1-0.x86_64.rpm"),
            Route::Rpm("stable/1.34/centos/9/x86_64/rke2-common-1.34.1~rke2r1-0.x86_64.rpm".into())
        );
        for bad in [
            "/rpm/",
            "/rpm/../etc/passwd",
            "/rpm/stable/%2E%2E/%2E%2E/etc/passwd",
            "/rpm/stable/..%2F..%2Fetc",
            "/rpm/stable//x",
            "/rpm/stable/.hidden",
            "/rpm/stable/%zz",
            "/rpm/stable/a%00b",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
    }
}
