//! `rke2-node-agent run`: the daemon.
//!
//! One task owns the [`Scanner`] and the [`watch::FileWatcher`]; it publishes each new
//! inventory as an immutable [`Snapshot`] on a `tokio::sync::watch` channel that the metrics
//! collector reads at scrape time. The same loop feeds the systemd watchdog, so a stuck loop
//! stops the pings and systemd restarts the agent.

pub mod http;
pub mod metrics;
pub mod systemd;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rke2ops_common::certs::{Inventory, Scanner};
use rke2ops_common::shutdown::{Drained, Listener, Shutdown};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch as channel;
use tracing::Instrument as _;

use crate::config::Config;
pub use crate::state::Snapshot;
use crate::state::refresh_service;
use metrics::Metrics;

/// Runs the daemon on a small tokio runtime until SIGTERM or SIGINT: the first signal drains
/// (the loop stops, the metrics server gets up to 5 s to finish), a second one forces.
///
/// # Errors
/// When the signal handlers cannot be installed, the metrics address cannot be bound or
/// inotify cannot start.
pub fn main(config: Config) -> anyhow::Result<()> {
    init_tracing();
    // One worker: the agent's work is a few milliseconds per file event, and fewer threads
    // keep the idle footprint small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown
            .escalate_on_signals("rke2-node-agent")
            .context("cannot install the SIGTERM/SIGINT handlers")?;
        run(config, shutdown.listener()).await
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RKE2OPS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // journald adds its own timestamps; keep lines short under systemd.
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    // Colours only for a person at a terminal, never in journald or files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if under_systemd {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

async fn scan(
    scanner: Scanner,
    metrics: &Metrics,
    node: &str,
    doctor: &Arc<crate::doctor::DaemonChecks>,
) -> anyhow::Result<(Scanner, Snapshot)> {
    let started = Instant::now();
    let span = tracing::info_span!("scan", node = %node);
    let checks = Arc::clone(doctor);
    let (scanner, inventory, findings) = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let mut scanner = scanner;
            let inventory = scanner.scan();
            // The doctor's file-based checks ride on the same rescan (the metric counts
            // them, the hub link sends them).
            let findings = checks.findings(&inventory);
            (scanner, inventory, findings)
        })
    })
    .await
    .context("scan task failed")?;
    let findings = match findings {
        Ok(findings) => {
            if let Ok(mut slot) = metrics.doctor.lock() {
                *slot = rke2ops_common::doctor::counts(&findings);
            }
            findings
        }
        Err(e) => {
            tracing::warn!(error = %e, "doctor checks skipped");
            Vec::new()
        }
    };
    metrics
        .scan_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.scans.inc();
    Ok((
        scanner,
        Snapshot {
            inventory,
            scanned_at: OffsetDateTime::now_utc(),
            findings,
        },
    ))
}

/// Runs the daemon until `shutdown` drains. Binds the metrics address, scans once, tells
/// systemd it is ready, then follows file events. Once draining it stops the hub link and
/// waits up to 5 s for the metrics server, less when the stop is forced.
///
/// # Errors
/// When the metrics address cannot be bound or inotify cannot start.
pub async fn run(config: Config, mut shutdown: Listener) -> anyhow::Result<()> {
    let node = crate::state::node_name(&config);
    let listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics_addr {}", config.metrics_addr))?;
    let mut watcher =
        watch::FileWatcher::new(watch::targets(&config)).context("cannot start inotify")?;

    let (tx, rx) = channel::channel(Arc::new(Snapshot {
        inventory: Inventory::default(),
        scanned_at: OffsetDateTime::now_utc(),
        findings: Vec::new(),
    }));
    let rx_for_link = rx.clone();
    let metrics = Arc::new(Metrics::new(rx, config.warn_days));
    let doctor = Arc::new(crate::doctor::DaemonChecks::new(&config));
    let (scanner, snapshot) =
        scan(Scanner::new(config.scan_config()), &metrics, &node, &doctor).await?;
    let mut scanner = Some(scanner);
    // The system bus is optional: outside systemd (or without D-Bus) the agent still
    // watches certificates; operations and service metrics need it.
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::dbus::Systemd::connect(),
    );
    let bus = match connect.await.unwrap_or_else(|_| {
        Err(crate::service::ServiceError::Connect(
            "no answer within 5 s".to_owned(),
        ))
    }) {
        Ok(systemd) => Some(Arc::new(systemd.with_job_timeout(config.ready_timeout))),
        Err(e) => {
            tracing::info!(error = %e, "no systemd on the system bus: service metrics and operations are off");
            None
        }
    };
    let state = http::AppState {
        metrics: Arc::clone(&metrics),
        systemd: bus.clone(),
    };
    let server = tokio::spawn(
        http::serve(listener, state, shutdown.clone().draining_owned())
            .instrument(tracing::info_span!("http", node = %node)),
    );

    let service = match &bus {
        Some(s) => refresh_service(s, &metrics.service).await,
        None => None,
    };
    let status = systemd::status_line(
        &snapshot.inventory,
        snapshot.scanned_at,
        config.warn_days,
        service.as_ref(),
    );
    tracing::info!(data_dir = %config.data_dir.display(), metrics_addr = %config.metrics_addr, %status, "agent ready");
    let mut next_change =
        systemd::next_status_change(&snapshot.inventory, snapshot.scanned_at, config.warn_days);
    tx.send_replace(Arc::new(snapshot));
    systemd::ready(&status);
    // With a hub, the link resumes an interrupted operation itself, so its result reaches the
    // hub under the same id.
    if bus.is_some() && config.hub.is_none() {
        tokio::spawn(
            resume_interrupted(config.clone())
                .instrument(tracing::info_span!("resume", node = %node)),
        );
    }
    let link = config.hub.is_some().then(|| {
        tokio::spawn(
            crate::link::run(
                config.clone(),
                rx_for_link.clone(),
                Arc::clone(&metrics.service),
                Arc::clone(&metrics.hub_link),
                bus.clone(),
            )
            .instrument(tracing::info_span!("hub_link", node = %node)),
        )
    });

    let watchdog_every = systemd::watchdog_interval();
    let mut watchdog =
        tokio::time::interval(watchdog_every.unwrap_or(std::time::Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until_change = next_change.map(|t| {
            let secs = (t - OffsetDateTime::now_utc()).as_seconds_f64().max(0.0);
            // Far-away changes are re-evaluated daily (long sleeps drift across suspends).
            std::time::Duration::from_secs_f64(secs.min(86_400.0))
        });
        tokio::select! {
            () = shutdown.draining() => break,
            _ = watchdog.tick(), if watchdog_every.is_some() => systemd::watchdog(),
            batch = watcher.next_batch() => {
                if batch.is_none() {
                    anyhow::bail!("the file watcher stopped");
                }
                metrics.watch_batches.inc();
                watcher.reconcile();
                let current = scanner.take().context("scanner missing")?;
                let (s, snapshot) = scan(current, &metrics, &node, &doctor).await?;
                scanner = Some(s);
                let service = match &bus {
                    Some(s) => refresh_service(s, &metrics.service).await,
                    None => None,
                };
                let status = systemd::status_line(&snapshot.inventory, snapshot.scanned_at, config.warn_days, service.as_ref());
                tracing::info!(%status, "certificates rescanned");
                systemd::status(&status);
                next_change = systemd::next_status_change(&snapshot.inventory, snapshot.scanned_at, config.warn_days);
                tx.send_replace(Arc::new(snapshot));
            }
            () = tokio::time::sleep(until_change.unwrap_or_default()), if until_change.is_some() => {
                let snapshot = Arc::clone(&tx.borrow());
                let now = OffsetDateTime::now_utc();
                let service = match &bus {
                    Some(s) => refresh_service(s, &metrics.service).await,
                    None => None,
                };
                systemd::status(&systemd::status_line(&snapshot.inventory, now, config.warn_days, service.as_ref()));
                next_change = systemd::next_status_change(&snapshot.inventory, now, config.warn_days);
            }
        }
    }
    systemd::stopping();
    if let Some(link) = link {
        link.abort();
    }
    match shutdown
        .drain_within(std::time::Duration::from_secs(5), server)
        .await
    {
        Drained::Done(Ok(Ok(()))) => {}
        Drained::Done(Ok(Err(e))) => {
            tracing::warn!(error = %e, "metrics server ended with an error");
        }
        Drained::Done(Err(e)) => tracing::warn!(error = %e, "metrics server task failed"),
        Drained::TimedOut => tracing::warn!("metrics server did not stop within 5 s"),
        Drained::Forced => tracing::warn!("stop forced: not waiting for the metrics server"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Finishes an operation a previous agent process left unfinished (killed mid-step): the
/// journal says where it was; the runner re-runs that step (steps are idempotent).
async fn resume_interrupted(config: Config) {
    let runner = async {
        let journal = crate::ops::journal::Journal::open(config.state_dir.join("ops"))?;
        if journal.current()?.is_none() {
            return Ok::<_, anyhow::Error>(None);
        }
        let runner = crate::ops::Runner::from_config(&config).await?;
        Ok(runner
            .resume(|p| match p.outcome {
                None => tracing::info!(op = %p.record.id, step = p.step.name(), "resuming step"),
                Some(Ok(detail)) => {
                    tracing::info!(op = %p.record.id, step = p.step.name(), detail, "step done")
                }
                Some(Err(reason)) => {
                    tracing::warn!(op = %p.record.id, step = p.step.name(), reason, "step failed")
                }
            })
            .await?)
    };
    match runner.await {
        Ok(Some(record)) => {
            tracing::info!(op = %record.id, outcome = record.step.name(), failure = ?record.failure, "interrupted operation finished")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot finish the interrupted operation")
        }
    }
}
