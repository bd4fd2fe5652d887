//! The simulated `rke2 server` and `rke2 agent`: long-running `Type=notify` services that
//! renew certificates at start, serve RKE2's health endpoints with those certificates, run a
//! real etcd member (servers), and tell systemd `READY=1` only once the apiserver would pass
//! `/readyz` — so a node agent stops, rotates, starts and health-checks them through systemd
//! exactly as it would real RKE2. `tests/SIMULATOR.md` §5 lists what is faithful and what
//! is not.
//!
//! Start sequence ([`run`]):
//! 1. fault switches ([`crate::faults`]): `fail-start` and `empty-pem` exit 1 here;
//! 2. agents: wait until the server's supervisor answers `/ping` (`server:` in config.yaml),
//!    as RKE2 agents wait for the server before they start anything;
//! 3. load the cluster CAs (servers: `server/tls`; agents: `agent/.sim-ca/`, a simulator-only
//!    copy the harness provides) and apply the start-time certificate rules
//!    ([`crate::renew`]); servers write `/etc/rancher/rke2/rke2.yaml`;
//! 4. load every leaf as its component would; a broken one (empty PEM, key mismatch) is fatal
//!    with Go's error text;
//! 5. `slow-start` sleeps; then the listeners bind what RKE2's bind (servers: supervisor 9345
//!    and apiserver 6443 on every address; all: kubelet 10250 on every address and its
//!    `/healthz` 10248 on 127.0.0.1) and servers start etcd (clients on 127.0.0.1 and the
//!    node address, peers on the node address, metrics on 127.0.0.1);
//! 6. `READY=1` once `/readyz` would pass (etcd healthy) — never under `never-ready`;
//! 7. SIGTERM or SIGINT: `STOPPING=1`, etcd is stopped, exit 0.

pub mod endpoints;
pub mod etcd;
pub mod listen;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use sd_notify::NotifyState;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use self::endpoints::HealthSource;
use self::etcd::EtcdMember;
use super::certmon;
use super::faults::Faults;
use super::kube::{
    self, client::ApiClient, handlers::KubeApi, kubelet::KubeletIdentity, store::Store,
};
use super::logrus;
use super::node_config::NodeConfig;
use super::renew::{self, RenewInput};
use super::tree::{self, ClusterCas, Role};
use super::version::SimVersion;

/// Supervisor port.
pub const SUPERVISOR_PORT: u16 = 9345;
/// kube-apiserver port.
pub const APISERVER_PORT: u16 = 6443;
/// kubelet healthz port (plain HTTP).
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
/// kubelet API port (HTTPS).
pub const KUBELET_PORT: u16 = 10250;
/// Where agents find the cluster CAs (simulator only; real agents get certificates from the
/// server), relative to the data dir.
pub const AGENT_SIM_CA_DIR: &str = "agent/.sim-ca";

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `rke2 server` or `rke2 agent`.
    pub role: Role,
    /// The node's configuration.
    pub config: NodeConfig,
    /// The version this binary reports.
    pub version: SimVersion,
    /// The simulated current time (`RKE2_SIM_NOW`), else the clock.
    pub now: Option<OffsetDateTime>,
}

impl Launch {
    fn program(&self) -> &'static str {
        match self.role {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// A start-up failure: logged at fatal level, exit status 1.
#[derive(Debug)]
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        logrus::warn(&format!("sd_notify: {e}"));
    }
}

fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// Runs the service until SIGTERM; the process exit code.
#[must_use]
pub fn run(launch: Launch) -> ExitCode {
    logrus::info(&format!(
        "Starting rke2 {} {} ({})",
        launch.program(),
        launch.version.version,
        launch.version.commit
    ));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            logrus::fatal(&format!("tokio runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    // A single-threaded runtime: the thread that spawns etcd lives as long as the process,
    // which PR_SET_PDEATHSIG (set by setpriv) relies on.
    match runtime.block_on(serve(launch)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(msg)) => {
            logrus::fatal(&msg);
            ExitCode::from(1)
        }
    }
}

/// Turns true on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<watch::Receiver<bool>, Fatal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        logrus::info("Shutting down on signal");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

async fn serve(launch: Launch) -> Result<(), Fatal> {
    let mut shutdown = shutdown_signal()?;
    let config = &launch.config;
    let data_dir = config.data_dir.clone();

    let faults = Faults::take(&data_dir)?;
    if faults.fail_start {
        return Err(Fatal(
            "simulated start failure (.sim-faults/fail-start)".to_owned(),
        ));
    }
    if let Some(rel) = &faults.empty_pem {
        let path = data_dir.join(rel);
        std::fs::write(&path, b"").map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
        return Err(Fatal(format!(
            "simulated failure after truncating {} (.sim-faults/empty-pem)",
            path.display()
        )));
    }

    if faults.no_registry {
        // RKE2 preloads its runtime image from agent/images, else pulls it; air-gapped, the
        // pull cannot succeed.
        let image = crate::images::runtime_image(&launch.version.version);
        if !crate::images::preloaded(&data_dir).contains(&image) {
            return Err(Fatal(format!(
                "failed to get runtime image {image}: Get \"https://index.docker.io/v2/\": dial tcp: \
                 lookup index.docker.io: no such host (air-gapped: .sim-faults/no-registry, and \
                 no archive in {} holds it)",
                data_dir.join(crate::images::IMAGES_DIR).display()
            )));
        }
        logrus::info(&format!(
            "Runtime image {image} preloaded from {}",
            crate::images::IMAGES_DIR
        ));
    }

    if launch.role == Role::Agent && wait_for_server(config, &data_dir, &mut shutdown).await? {
        return Ok(());
    }

    let cas_dir = match launch.role {
        Role::Server => data_dir.join("server/tls"),
        Role::Agent => data_dir.join(AGENT_SIM_CA_DIR),
    };
    let cas = ClusterCas::load(&cas_dir)
        .map_err(|e| Fatal(format!("failed to load cluster CAs: {e}")))?;
    let now = launch.now.unwrap_or_else(OffsetDateTime::now_utc);
    let report = renew::renew(RenewInput {
        role: launch.role,
        config,
        cas: &cas,
        now,
        lifetime: renew::leaf_lifetime(),
    })?;
    for (rel, reason) in &report.issued {
        logrus::info(&format!("Certificate {rel} issued: {}", reason.describe()));
    }
    for rel in &report.consumed_triggers {
        logrus::info(&format!("Removed trigger file {rel}"));
    }
    logrus::info(&format!(
        "Certificates: {} issued, {} kept",
        report.issued.len(),
        report.kept.len()
    ));
    if launch.role == Role::Server {
        renew::write_admin_kubeconfig(&data_dir, &cas, &config.kubeconfig)?;
        logrus::info(&format!("Wrote kubeconfig {}", config.kubeconfig.display()));
    }
    check_components(launch.role, config)?;

    if let Some(delay) = faults.slow_start {
        logrus::info(&format!(
            "Simulated slow start: waiting {delay:?} (.sim-faults/slow-start)"
        ));
        status(&format!("slow start: waiting {delay:?}"));
        if sleep_or_shutdown(&mut shutdown, delay).await {
            return Ok(());
        }
    }

    let kube_settings = kube::Settings::from_env();
    let etcd = (launch.role == Role::Server).then(|| {
        EtcdMember::new(
            &config.node_name,
            config.node_ip,
            &data_dir,
            config.server_host(),
        )
    });
    let health = Arc::new(Health {
        etcd: etcd.clone(),
        started: !faults.never_ready,
    });
    let kube_api = match &etcd {
        Some(member) => Some(Arc::new(KubeApi {
            store: Store::new(member.local_client_url(), &member.tls_dir).map_err(Fatal)?,
            settings: kube_settings,
        })),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (addr, tls, handler) in
        listeners(&launch, &data_dir, &cas, health.clone(), kube_api.clone())?
    {
        let listener = listen::bind(addr, "listener").await?;
        tasks.spawn(listen::serve(listener, tls, handler, shutdown.clone()));
    }
    logrus::info(&format!(
        "Listening ({}; node address {})",
        match launch.role {
            Role::Server => {
                "supervisor *:9345, apiserver *:6443, kubelet *:10250, kubelet healthz 127.0.0.1:10248"
            }
            Role::Agent => "kubelet *:10250, kubelet healthz 127.0.0.1:10248",
        },
        config.node_ip,
    ));
    if let Some(member) = etcd {
        tasks.spawn(member.supervise(shutdown.clone()));
    }
    if let Some(api) = kube_api {
        tasks.spawn(kube::controller::run(api, shutdown.clone()));
    }
    tasks.spawn(kube::kubelet::run(
        kubelet_identity(&launch),
        kubelet_client(&launch, &data_dir)?,
        kube_settings,
        shutdown.clone(),
    ));
    // RKE2's certificate monitor (k3s `certmonitor.Setup`), with the kubelet's credentials.
    let monitor = certmon::Monitor::new(config, kubelet_client(&launch, &data_dir)?, launch.now);
    tasks.spawn(certmon::run(monitor, shutdown.clone()));
    if launch.role == Role::Agent && config.supervisor_metrics {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SUPERVISOR_PORT);
        tasks.spawn(certmon::serve_agent_metrics(
            addr,
            data_dir.clone(),
            shutdown.clone(),
        ));
    }

    let program = launch.program();
    let version = &launch.version.version;
    let mut ready = false;
    loop {
        if !ready {
            let etcd_ok = health.etcd_ok().await;
            if etcd_ok && health.started {
                let text = format!("rke2 {program} {version} ready on {}", config.node_ip);
                notify(&[NotifyState::Ready, NotifyState::Status(&text)]);
                logrus::info(&format!("rke2 is up and running ({text})"));
                ready = true;
            } else if !health.started {
                status("waiting for the apiserver to finish starting (never-ready fault)");
            } else {
                status("waiting for etcd to become healthy");
            }
        }
        if sleep_or_shutdown(&mut shutdown, Duration::from_millis(250)).await {
            break;
        }
    }

    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    while tasks.join_next().await.is_some() {}
    logrus::info(&format!("rke2 {program} stopped"));
    Ok(())
}

/// Who the node's kubelet registers as.
fn kubelet_identity(launch: &Launch) -> KubeletIdentity {
    KubeletIdentity {
        name: launch.config.node_name.clone(),
        ip: launch.config.node_ip,
        role: launch.role,
        version: launch.version.version.clone(),
    }
}

/// The kubelet's API client: its own client certificate; servers talk to their own
/// apiserver, agents to the configured server first and then to every server they learn.
fn kubelet_client(launch: &Launch, data_dir: &Path) -> Result<ApiClient, Fatal> {
    let identity = tls::load_identity(
        &data_dir.join("agent/client-kubelet.crt"),
        &data_dir.join("agent/client-kubelet.key"),
    )
    .map_err(|e| Fatal(format!("kubelet: {e}")))?;
    let roots = tls::roots(&data_dir.join("agent/server-ca.crt")).map_err(Fatal)?;
    let config = tls::client_config(roots, Some(identity)).map_err(Fatal)?;
    let (servers, balance) = match launch.role {
        // The kubelet on a server talks to its own apiserver over loopback, as RKE2's does.
        Role::Server => (vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], false),
        Role::Agent => {
            let first = launch
                .config
                .server_host()
                .and_then(|h| h.parse::<std::net::IpAddr>().ok());
            (first.into_iter().collect(), true)
        }
    };
    Ok(ApiClient::new(config, servers, balance))
}

/// The apiserver's view of its health.
struct Health {
    /// The local etcd member (servers).
    etcd: Option<EtcdMember>,
    /// False under `never-ready`.
    started: bool,
}

impl HealthSource for Health {
    fn etcd_ok(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            match &self.etcd {
                Some(member) => member.healthy().await,
                None => true,
            }
        })
    }

    fn started(&self) -> bool {
        self.started
    }
}

/// Agents: polls `https://<server>:9345/ping` every second until it answers `pong`; true
/// when shutdown came first.
async fn wait_for_server(
    config: &NodeConfig,
    data_dir: &Path,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, Fatal> {
    let url = config
        .server
        .clone()
        .ok_or_else(|| Fatal("--server is required for rke2 agent".to_owned()))?;
    let host = config
        .server_host()
        .ok_or_else(|| Fatal(format!("invalid server url {url}")))?;
    let port = url
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(SUPERVISOR_PORT);
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        Fatal(format!(
            "server host {host}: the simulator needs an IP address"
        ))
    })?;
    let ca = data_dir.join(AGENT_SIM_CA_DIR).join("server-ca.crt");
    let roots = tls::roots(&ca).map_err(Fatal)?;
    let client = tls::client_config(roots, None).map_err(Fatal)?;
    let name = ServerName::IpAddress(ip.into());
    loop {
        let answer = listen::get(
            SocketAddr::new(ip, port),
            "/ping",
            Some((client.clone(), name.clone())),
            Duration::from_secs(2),
        )
        .await;
        match answer {
            Ok((200, body)) if body.trim() == "pong" => return Ok(false),
            other => {
                let why = other.map_or_else(|e| e, |(s, _)| format!("status {s}"));
                let msg =
                    format!("Waiting to retrieve agent configuration; server is not ready: {why}");
                logrus::info(&msg);
                status(&msg);
            }
        }
        if sleep_or_shutdown(shutdown, Duration::from_secs(1)).await {
            return Ok(true);
        }
    }
}

/// Loads every leaf of the role as its component would (Go's `tls.LoadX509KeyPair`).
fn check_components(role: Role, config: &NodeConfig) -> Result<(), Fatal> {
    let spec = renew::spec_for(role, config, OffsetDateTime::now_utc());
    for def in tree::leaves(&spec) {
        let cert = config.data_dir.join(&def.cert_rel);
        let key = config.data_dir.join(&def.key_rel);
        if let Err(e) = tls::load_identity(&cert, &key) {
            return Err(Fatal(format!(
                "{}: unable to load {}: {e}",
                component_of(&def.cert_rel),
                cert.display()
            )));
        }
    }
    Ok(())
}

/// Which RKE2 component loads a certificate file (for error messages).
fn component_of(rel: &str) -> &'static str {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    match base {
        _ if rel.contains("/etcd/") => "etcd",
        "serving-kube-apiserver.crt" | "client-kube-apiserver.crt" | "client-auth-proxy.crt" => {
            "kube-apiserver"
        }
        "client-kubelet.crt" | "serving-kubelet.crt" => "kubelet",
        "client-kube-proxy.crt" => "kube-proxy",
        "client-controller.crt" | "kube-controller-manager.crt" => "kube-controller-manager",
        "client-scheduler.crt" | "kube-scheduler.crt" => "kube-scheduler",
        "client-rke2-cloud-controller.crt" => "cloud-controller-manager",
        _ => "rke2",
    }
}

type ListenerSpec = (SocketAddr, Option<TlsAcceptor>, listen::Handler);

fn acceptor(identity: tls::Identity, client_ca: Option<&Path>) -> Result<TlsAcceptor, Fatal> {
    let roots = client_ca.map(tls::roots).transpose().map_err(Fatal)?;
    let config = tls::server_config(identity, roots).map_err(Fatal)?;
    Ok(TlsAcceptor::from(config))
}

fn listeners(
    launch: &Launch,
    data_dir: &Path,
    cas: &ClusterCas,
    health: Arc<Health>,
    kube_api: Option<Arc<KubeApi>>,
) -> Result<Vec<ListenerSpec>, Fatal> {
    // What RKE2 binds: the supervisor, apiserver and kubelet on every address, the kubelet's
    // unauthenticated /healthz on loopback only.
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let path = |rel: &str| -> PathBuf { data_dir.join(rel) };
    let mut out: Vec<ListenerSpec> = Vec::new();
    let client_ca = match launch.role {
        Role::Server => path("server/tls/client-ca.crt"),
        Role::Agent => path("agent/client-ca.crt"),
    };
    if launch.role == Role::Server {
        let (chain, key) = renew::read_dynamic_cert(&path(tree::DYNAMIC_CERT_REL))
            .ok_or_else(|| Fatal("supervisor: cannot read dynamic-cert.json".to_owned()))?;
        let id = tls::identity_from_pem(chain.as_bytes(), key.as_bytes())
            .map_err(|e| Fatal(format!("supervisor: {e}")))?;
        out.push((
            SocketAddr::new(any, SUPERVISOR_PORT),
            // `supervisor-metrics` adds `/metrics`, authenticated by client certificate.
            Some(acceptor(
                id,
                launch.config.supervisor_metrics.then_some(&*client_ca),
            )?),
            certmon::with_metrics(
                endpoints::supervisor(cas.ca(tree::CaKind::Server).cert_pem()),
                launch.config.supervisor_metrics,
            ),
        ));
        let id = tls::load_identity(
            &path("server/tls/serving-kube-apiserver.crt"),
            &path("server/tls/serving-kube-apiserver.key"),
        )
        .map_err(|e| Fatal(format!("kube-apiserver: {e}")))?;
        out.push((
            SocketAddr::new(any, APISERVER_PORT),
            Some(acceptor(id, Some(&client_ca))?),
            endpoints::apiserver(launch.version.clone(), health, kube_api),
        ));
    }
    out.push((
        SocketAddr::new(loopback, KUBELET_HEALTHZ_PORT),
        None,
        endpoints::kubelet(false),
    ));
    let id = tls::load_identity(
        &path("agent/serving-kubelet.crt"),
        &path("agent/serving-kubelet.key"),
    )
    .map_err(|e| Fatal(format!("kubelet: {e}")))?;
    out.push((
        SocketAddr::new(any, KUBELET_PORT),
        Some(acceptor(id, Some(&client_ca))?),
        endpoints::kubelet(true),
    ));
    Ok(out)
}
