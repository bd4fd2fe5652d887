//! `rke2-hub serve`: opens the store, loads (or creates) the hub CA and its server
//! certificate, serves the agents' TLS listener (AgentService, AdminService for admin
//! certificates, health; connections admitted and handshaken by [`crate::listener`]) and the
//! admin Unix socket (AdminService, health), marks silent nodes offline, and tells systemd
//! when it is ready. SIGTERM stops it cleanly: the first one drains (see
//! [`rke2ops_common::shutdown`]), a second one forces the stop.
//!
//! One `serve` per state dir: it takes an exclusive lock on `<state_dir>/serve.lock` before it
//! opens the store or the CA, so a second hub on the same state (a stray manual start beside
//! the systemd unit) exits at once instead of sharing the database and racing the first.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rke2ops_common::shutdown::{Drained, Listener};
use time::OffsetDateTime;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tracing::Instrument as _;

use crate::config::Config;
use crate::grpc::admin::AdminApi;
use crate::grpc::agent::AgentApi;
use crate::grpc::{AdminServiceServer, AgentServiceServer, Hub};
use crate::pki::HubCa;
use crate::registry::Registry;
use crate::store::Store;

/// Largest message accepted from an agent (a full status of a large node is ~100 KiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How long the drain may take after the first stop request: the servers finish their calls
/// (metrics at most 5 s, then each gRPC server at most 10 s), inside the unit's
/// `TimeoutStopSec=30s`. A second signal cuts it short.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// Runs the hub until `shutdown` drains (the first SIGTERM/SIGINT), then stops taking work
/// and waits for the servers within [`DRAIN_DEADLINE`] or until the stop is forced (a second
/// signal); the state dir is left clean either way.
///
/// # Errors
/// When the state dir, store, CA or listeners cannot be set up.
pub async fn run(config: Config, mut shutdown: Listener) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state dir {}", config.state_dir.display()))?;
    // Held (open) until `run` returns; the kernel releases it if the process dies.
    let _lock = lock_state_dir(&config.state_dir)?;
    let now = OffsetDateTime::now_utc();
    let (store, role, replicated) = open_store(&config).await?;
    let offline = if replicated.is_none() {
        store.mark_all_offline(now)?
    } else {
        0
    };
    let ca = Arc::new(match &replicated {
        // Every replica must hold the same CA: given as files, never made up by one of them,
        // except for the very first replica of an empty state.
        Some((log, _)) if log.applied() > 0 => HubCa::load_existing(&config.state_dir, now)
            .context(
                "store = \"etcd\": every replica needs the hub CA's files (pki/ca.crt and \
                 pki/ca.key) from the first replica or the migrated hub",
            )?,
        _ => HubCa::load_or_create(&config.state_dir, now)?,
    });
    let server = ca.load_or_issue_server(&config.state_dir, &config.server_sans, now)?;
    let registry = Arc::new(Registry::default());
    let kube_settings = config.kube_settings();
    // Kubernetes access per cluster: the top-level kubeconfig is the default cluster's,
    // `[clusters.NAME]` the others'.
    let mut clusters = std::collections::BTreeMap::new();
    if let Some(access) = crate::engine::kube_cluster::from_settings(kube_settings.as_ref())? {
        clusters.insert(rke2ops_common::ids::DEFAULT_CLUSTER.to_owned(), access);
    }
    for (name, cluster) in &config.clusters {
        if let Some(access) = crate::engine::kube_cluster::from_settings(cluster.kube.as_ref())
            .with_context(|| format!("[clusters.{name}]"))?
        {
            clusters.insert(name.clone(), access);
        }
    }
    // Webhooks: the counter is the metrics'; the notifier is the engine's (none configured:
    // no tasks at all).
    let deliveries = prometheus_client::metrics::family::Family::default();
    let notifier =
        crate::notify::Notifier::start(config.webhooks.clone(), deliveries.clone()).map(Arc::new);
    let engine = crate::engine::Engine::with_clusters(
        store.clone(),
        Arc::clone(&registry),
        clusters,
        crate::engine::EngineSettings {
            artifact_mirror: config.artifact_mirror.clone(),
            cluster_mirrors: config
                .clusters
                .iter()
                .filter_map(|(name, c)| Some((name.clone(), c.artifact_mirror.clone()?)))
                .collect(),
            alert_gate: config.alert_gate.clone(),
            history_retention: config.history_retention,
            clock_skew: config.clock_skew,
            default_probes: config.default_probes.clone(),
            notifier,
            ..crate::engine::EngineSettings::default()
        },
    );
    let metrics = {
        let mut metrics = crate::metrics::HubMetrics::new(
            store.clone(),
            Arc::clone(&registry),
            engine.doctor_latest(),
        );
        metrics.register_webhooks(deliveries);
        metrics.register_role(Arc::clone(&role));
        Arc::new(metrics)
    };
    let hub = Hub {
        shutdown: shutdown.clone(),
        engine: Arc::clone(&engine),
        channel_url: config.channel_url.clone(),
        cluster_channel_urls: config
            .clusters
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.channel_url.clone()?)))
            .collect(),
        metrics: Arc::clone(&metrics),
        store: store.clone(),
        registry,
        ca: Arc::clone(&ca),
        advertise_address: config.advertise_address.clone(),
        heartbeat_timeout: config.heartbeat_timeout,
        full_status_limit: Arc::new(crate::ratelimit::Limiter::new(
            crate::ratelimit::FULL_STATUS,
        )),
        summary_status_limit: Arc::new(crate::ratelimit::Limiter::new(
            crate::ratelimit::SUMMARY_STATUS,
        )),
        renewal_limit: Arc::new(crate::ratelimit::Limiter::new(crate::ratelimit::RENEWAL)),
        role: Arc::clone(&role),
    };

    // The chain carries the CA so an enrolling agent can match it against its pin. Client
    // certificates are optional: Enroll is the one method without one; the services check
    // the rest.
    let tls = Arc::new(
        crate::listener::server_config(&server.cert_chain_pem, &server.key_pem, ca.cert_pem())
            .context("cannot set up TLS for listen_addr")?,
    );
    let tcp = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on listen_addr {}", config.listen_addr))?;
    if let Some(dir) = config.admin_socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    let uds = tokio::net::UnixListener::bind(&config.admin_socket).with_context(|| {
        format!(
            "cannot listen on admin_socket {}",
            config.admin_socket.display()
        )
    })?;
    std::fs::set_permissions(
        &config.admin_socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .with_context(|| format!("cannot restrict {}", config.admin_socket.display()))?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<AgentApi>>()
        .await;
    let agent_api = AgentServiceServer::new(AgentApi::new(hub.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin_api = AdminServiceServer::new(AdminApi::new(hub.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let tcp_server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32)
        .add_service(health.clone())
        .add_service(agent_api)
        .add_service(admin_api.clone())
        .serve_with_incoming_shutdown(
            crate::listener::incoming(tcp, tls, config.listener_limits),
            shutdown.clone().draining_owned(),
        );
    let uds_server = Server::builder()
        .add_service(health)
        .add_service(admin_api)
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(uds),
            shutdown.clone().draining_owned(),
        );
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics_addr {}", config.metrics_addr))?;
    let metrics_task = tokio::spawn(
        crate::metrics::serve(metrics_listener, metrics, shutdown.clone().draining_owned())
            .instrument(tracing::info_span!("metrics", addr = %config.metrics_addr)),
    );
    let tcp_task = tokio::spawn(
        tcp_server.instrument(tracing::info_span!("agents_grpc", listen = %config.listen_addr)),
    );
    let uds_task = tokio::spawn(uds_server.instrument(tracing::info_span!(
        "admin_socket",
        path = %config.admin_socket.display()
    )));
    // Roles from each cluster's Node labels, for that cluster's nodes only.
    let mut role_sources = Vec::new();
    if let Some(kube) = role_source(kube_settings.as_ref())? {
        role_sources.push((rke2ops_common::ids::DEFAULT_CLUSTER.to_owned(), kube));
    }
    for (name, cluster) in &config.clusters {
        if let Some(kube) = role_source(cluster.kube.as_ref())? {
            role_sources.push((name.clone(), kube));
        }
    }
    // What only the leader runs: the offline sweep, the plan engine, the role sync and
    // auto-maintenance (each writes the store).
    let leader_tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let start_leader = {
        let (hub, engine, store, tasks) = (
            hub.clone(),
            Arc::clone(&engine),
            store.clone(),
            Arc::clone(&leader_tasks),
        );
        let auto = config
            .auto_restart_within
            .map(|lead| crate::engine::AutoMaintenance {
                lead,
                window: config.auto_restart_window.clone(),
                every: Duration::from_secs(300),
            });
        move || {
            let mut started = vec![
                tokio::spawn(sweep(hub).instrument(tracing::info_span!("offline_sweep"))),
                // The engine's loops open their own spans (`plan_engine`, `auto_maintenance`).
                tokio::spawn(Arc::clone(&engine).run()),
            ];
            for (cluster, kube) in role_sources {
                let span = tracing::info_span!("role_sync", %cluster);
                started.push(tokio::spawn(
                    sync_roles(store.clone(), kube, cluster).instrument(span),
                ));
            }
            if let Some(auto) = auto {
                started.push(tokio::spawn(Arc::clone(&engine).auto_maintenance(auto)));
            }
            if let Ok(mut tasks) = tasks.lock() {
                tasks.extend(started);
            }
        }
    };
    match &replicated {
        None => start_leader(),
        Some((log, revision)) => {
            let (log, store, advertise) = (
                Arc::clone(log),
                store.clone(),
                config.advertise_address.clone(),
            );
            tokio::spawn(
                Arc::clone(&log)
                    .follow(store.clone(), *revision)
                    .instrument(tracing::info_span!("replica_follow")),
            );
            tokio::spawn(Arc::clone(&log).observe_leader());
            let campaign = async move {
                if let Err(e) = log.lead(&store, &advertise).await {
                    tracing::error!(error = %e, "cannot take the leadership");
                    std::process::exit(crate::ha::EXIT_RESTART);
                }
                // Agents reconnect to the new leader; until they do, they are offline here.
                match store.mark_all_offline(OffsetDateTime::now_utc()) {
                    Ok(n) => {
                        tracing::info!(nodes_marked_offline = n, "leading: agents reconnect here")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot mark nodes offline"),
                }
                tokio::spawn(Arc::clone(&log).snapshots(store));
                start_leader();
            };
            tokio::spawn(campaign.instrument(tracing::info_span!("replica_campaign")));
        }
    }

    tracing::info!(
        listen = %config.listen_addr,
        admin_socket = %config.admin_socket.display(),
        ca_pin = %ca.ca_pin(),
        kubeconfig = %config
            .kubeconfig
            .as_ref()
            .map_or_else(|| "none (no cordon or drain)".to_owned(), |p| p.display().to_string()),
        other_clusters = %config.clusters.keys().cloned().collect::<Vec<_>>().join(","),
        nodes_marked_offline = offline,
        "hub ready"
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    shutdown.draining().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Ending every agent stream lets the graceful shutdown finish at once.
    hub.registry.close_all();
    if let Ok(tasks) = leader_tasks.lock() {
        for task in tasks.iter() {
            task.abort();
        }
    }
    let servers_done = async {
        let _ = tokio::time::timeout(Duration::from_secs(5), metrics_task).await;
        for task in [tcp_task, uds_task] {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
                Err(_) => tracing::warn!("server did not stop within 10 s"),
            }
        }
    };
    match shutdown.drain_within(DRAIN_DEADLINE, servers_done).await {
        Drained::Done(()) => {}
        Drained::Forced => tracing::warn!("shutdown forced: not waiting for the servers"),
        Drained::TimedOut => tracing::warn!(
            deadline_secs = DRAIN_DEADLINE.as_secs(),
            "the servers did not stop in time"
        ),
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    if role.is_leader() {
        let _ = store.mark_all_offline(OffsetDateTime::now_utc());
    }
    tracing::info!("hub stopped");
    Ok(())
}

/// The hub's store: `<state_dir>/hub.db`, or (`store = "etcd"`) the replica's copy loaded
/// from etcd with the log it follows and the etcd revision the copy is current at.
async fn open_store(
    config: &Config,
) -> anyhow::Result<(
    Store,
    Arc<crate::ha::Role>,
    Option<(Arc<crate::ha::EtcdLog>, i64)>,
)> {
    match &config.store {
        crate::config::StoreConfig::Sqlite => Ok((
            Store::open(&config.state_dir.join("hub.db")).context("cannot open the hub store")?,
            crate::ha::Role::single(),
            None,
        )),
        crate::config::StoreConfig::Etcd { settings, replica } => {
            let role = crate::ha::Role::replica(replica);
            let log = crate::ha::EtcdLog::connect(settings.clone(), Arc::clone(&role))
                .await
                .context("store = \"etcd\": cannot reach etcd")?;
            let (store, revision) = log
                .load(&config.state_dir.join(crate::ha::REPLICA_DB))
                .await
                .context("cannot load the hub state from etcd")?;
            tracing::info!(replica = %replica, applied = log.applied(), "replica copy current; following the log");
            Ok((store, role, Some((log, revision))))
        }
    }
}

/// The file in the state dir that a running `serve` holds an exclusive lock on.
pub const LOCK_FILE: &str = "serve.lock";

/// Takes the state dir's lock (`flock`, exclusive, without waiting) and writes this process's
/// id into the file, for the message a second `serve` prints.
///
/// # Errors
/// When another process holds the lock (naming the lock file, the state dir and, when it can
/// be read, the holder's pid), or the file cannot be created.
pub(crate) fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = state_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the state dir lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            anyhow::bail!(
                "state dir {} is in use: another `rke2-hub serve`{by} holds the lock {}; \
                 stop it first (only one hub may use a state dir)",
                state_dir.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let write_pid = |file: &mut std::fs::File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write_pid(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// How often the nodes' roles are read from Kubernetes.
const ROLE_SYNC_EVERY: Duration = Duration::from_secs(60);

/// The Kubernetes API the nodes' roles are read from, when the hub has a kubeconfig.
fn role_source(
    settings: Option<&crate::kube::KubeSettings>,
) -> anyhow::Result<Option<crate::kube::KubeAccess>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    crate::kube::KubeAccess::new(settings)
        .map(Some)
        .with_context(|| format!("kubeconfig {}", settings.kubeconfig.display()))
}

/// Corrects the role of every enrolled node of `cluster` from its Kubernetes Node's labels,
/// now and every [`ROLE_SYNC_EVERY`]: the cluster's record beats an enrollment's, and a hello
/// never counts. A Node whose name is a node of another cluster is left alone.
async fn sync_roles(store: Store, kube: crate::kube::KubeAccess, cluster: String) {
    let mut tick = tokio::time::interval(ROLE_SYNC_EVERY);
    loop {
        tick.tick().await;
        let nodes = match kube.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the Nodes' roles from Kubernetes");
                continue;
            }
        };
        let now = OffsetDateTime::now_utc();
        for node in nodes {
            if store
                .node(&node.name)
                .ok()
                .flatten()
                .is_some_and(|n| n.cluster != cluster)
            {
                continue;
            }
            let role = crate::pki::role_from_node_labels(node.control_plane, node.etcd);
            match store.correct_node_role(&node.name, role, "hub:kubernetes", now) {
                Ok(Some(previous)) => tracing::warn!(
                    node = %node.name,
                    %role,
                    previous = previous.as_deref().unwrap_or("(unset)"),
                    "role corrected from the Kubernetes Node's labels"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(node = %node.name, error = %e, "cannot record the role"),
            }
        }
    }
}

/// Marks nodes whose streams went silent offline; reaping ends their streams, so their
/// agents reconnect.
async fn sweep(hub: Hub) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = OffsetDateTime::now_utc();
        for node in hub.registry.reap_stale(now, hub.heartbeat_timeout) {
            tracing::warn!(%node, "no heartbeat: marking offline and ending its stream");
            hub.engine.on_disconnected(&node);
            let _ = hub.store.set_online(&node, false, now);
        }
    }
}
