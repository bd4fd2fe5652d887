//! The local operation commands (`rotate`, `restart`, `resume`, `status`): the same
//! [`Runner`] the daemon uses, driven from a terminal with a
//! progress line per step.

use std::io::Write;

use anyhow::Context as _;
use rke2ops_common::certs::Scanner;
use rke2ops_common::renewal;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::Output;
use crate::config::Config;
use crate::dbus::Systemd;
use crate::health::node_config::{APISERVER_PORT, ETCD_CLIENT_PORT};
use crate::health::{apiserver, etcd, kubelet};
use crate::ops::Runner;
use crate::ops::journal::{Journal, OpRecord};
use crate::ops::runner::Progress;
use crate::ops::steps::{OpKind, Role, Step, first_step, on_success};
use crate::service::{Rke2Unit, ServiceManager, detect_rke2_unit};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints one line per step start and end.
fn print_progress(progress: &Progress<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = match progress.outcome {
        None => writeln!(out, "[{}] {} ...", progress.record.id, progress.step.name()),
        Some(Ok(detail)) => writeln!(
            out,
            "[{}] {} ok ({:.1} s): {detail}",
            progress.record.id,
            progress.step.name(),
            progress.elapsed.as_secs_f64()
        ),
        Some(Err(reason)) => writeln!(
            out,
            "[{}] {} FAILED ({:.1} s): {reason}",
            progress.record.id,
            progress.step.name(),
            progress.elapsed.as_secs_f64()
        ),
    };
}

fn report(record: &OpRecord) -> u8 {
    if record.step == Step::Skipped {
        println!(
            "{} {} skipped: {}",
            record.kind.name(),
            record.id,
            record.skipped.as_deref().unwrap_or("nothing to do")
        );
        return 0;
    }
    if record.step == Step::Done {
        println!(
            "{} {} succeeded on {}",
            record.kind.name(),
            record.id,
            record.unit
        );
        0
    } else {
        println!(
            "{} {} FAILED: {}",
            record.kind.name(),
            record.id,
            record.failure.as_deref().unwrap_or("unknown reason")
        );
        if let Some(backup) = &record.backup {
            println!("  backup: {backup}");
        }
        if !record.unit_journal.is_empty() {
            println!("  last lines of {}'s journal:", record.unit);
            for line in &record.unit_journal {
                println!("    {line}");
            }
        }
        1
    }
}

fn run_op(config: &Config, kind: OpKind, dry_run: bool) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        let runner = Runner::from_config(config).await?;
        if dry_run {
            return dry_run_plan(config, &kind).await;
        }
        let record = runner.run(kind, print_progress).await?;
        Ok(report(&record))
    })
}

async fn dry_run_plan(config: &Config, kind: &OpKind) -> anyhow::Result<u8> {
    let systemd = Systemd::connect().await?;
    let unit = detect_rke2_unit(&systemd)
        .await?
        .context("neither rke2-server.service nor rke2-agent.service is installed")?;
    let role = if unit == Rke2Unit::Server {
        Role::Server
    } else {
        Role::Agent
    };
    let mut steps = vec![first_step(kind)];
    while let Some(last) = steps.last().copied().filter(|s| !s.is_terminal()) {
        steps.push(on_success(kind, role, last));
    }
    println!(
        "dry run: {} on {unit} ({role:?}); nothing will be changed",
        kind.name()
    );
    println!(
        "steps: {}",
        steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    if let OpKind::Rotate { services, .. } = kind {
        let inventory = Scanner::new(config.scan_config()).scan();
        let leaves = crate::ops::files::rotated_leaves(&inventory, services);
        println!(
            "certificates to reissue ({}): {}",
            leaves.len(),
            leaves.join(", ")
        );
        println!(
            "backup: {}/server/tls-<unix seconds> (agent-only nodes: agent/tls-<unix seconds>)",
            config.data_dir.display()
        );
    }
    if let OpKind::Upgrade {
        version,
        source,
        allow_rollback,
    } = kind
    {
        let installed =
            crate::ops::upgrade::binary_version(&config.install_prefix.join("bin/rke2")).await;
        let arch = crate::ops::artifacts::arch();
        println!(
            "installed: {} ({}); target {version}{}",
            installed.as_deref().unwrap_or("unknown"),
            config.install_prefix.join("bin/rke2").display(),
            match &installed {
                Some(v) if crate::ops::upgrade::at_or_above(v, version, false) =>
                    " (at or above: would be skipped)",
                _ => "",
            }
        );
        let source = source.clone().or_else(|| config.artifact_source.clone());
        match source.as_deref().map(crate::ops::artifacts::Source::parse) {
            Some(Ok(crate::ops::artifacts::Source::Url(prefix))) => {
                for file in [
                    crate::ops::artifacts::sums_name(arch),
                    crate::ops::artifacts::tarball_name(arch),
                ] {
                    println!(
                        "fetch: {}",
                        crate::ops::artifacts::artifact_url(&prefix, version, &file)
                    );
                }
            }
            Some(Ok(crate::ops::artifacts::Source::Dir(dir))) => println!(
                "copy: {} and {} from {} (or its {version}/ folder)",
                crate::ops::artifacts::tarball_name(arch),
                crate::ops::artifacts::sums_name(arch),
                dir.display()
            ),
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => anyhow::bail!("{}", crate::ops::artifacts::ArtifactError::NoSource),
        }
        println!(
            "install into {}, previous files kept under {}/<operation id>/previous",
            config.install_prefix.display(),
            config.state_dir.join("ops").display()
        );
        println!(
            "on failure after the restart: {}",
            if *allow_rollback {
                "restore the previous files, daemon-reload, start again, report"
            } else {
                "report only (--no-rollback)"
            }
        );
        return Ok(0);
    }
    println!("on failure: restore the backup, start {unit} again, report the unit's journal");
    Ok(0)
}

/// What `rke2-node-agent upgrade` asks for.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// Target version.
    pub version: String,
    /// Artifact source for this run, else the configured one.
    pub source: Option<String>,
    /// Restore the previous files when the new release does not become ready.
    pub allow_rollback: bool,
}

/// `rke2-node-agent upgrade`.
///
/// # Errors
/// As [`rotate`], plus a bad version or source.
pub fn upgrade(config: &Config, request: UpgradeRequest, dry_run: bool) -> anyhow::Result<u8> {
    run_op(
        config,
        OpKind::Upgrade {
            version: request.version,
            source: request.source,
            allow_rollback: request.allow_rollback,
        },
        dry_run,
    )
}

/// `rke2-node-agent rotate`.
///
/// # Errors
/// When the operation cannot start (systemd unreachable, lock held, bad service name).
pub fn rotate(
    config: &Config,
    services: Vec<String>,
    etcd_snapshot: bool,
    dry_run: bool,
) -> anyhow::Result<u8> {
    run_op(
        config,
        OpKind::Rotate {
            services,
            etcd_snapshot,
        },
        dry_run,
    )
}

/// `rke2-node-agent restart` (renew-by-restart).
///
/// # Errors
/// As [`rotate`].
pub fn restart(config: &Config, dry_run: bool) -> anyhow::Result<u8> {
    run_op(config, OpKind::RenewByRestart, dry_run)
}

/// `rke2-node-agent resume`.
///
/// # Errors
/// As [`rotate`].
pub fn resume(config: &Config) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        let runner = Runner::from_config(config).await?;
        match runner.resume(print_progress).await? {
            Some(record) => Ok(report(&record)),
            None => {
                println!("no interrupted operation");
                Ok(0)
            }
        }
    })
}

/// The `status` document.
#[derive(Debug, Serialize)]
struct Status {
    unit: Option<String>,
    active_state: Option<String>,
    sub_state: Option<String>,
    active_since: Option<String>,
    n_restarts: Option<u32>,
    apiserver_ready: Option<bool>,
    apiserver_failures: Vec<String>,
    kubelet_healthy: Option<bool>,
    etcd: Option<etcd::EtcdHealth>,
    problems: Vec<String>,
    renewal: renewal::RenewalState,
    last_operation: Option<OpRecord>,
    interrupted_operation: Option<OpRecord>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `rke2-node-agent status`.
///
/// # Errors
/// When the runtime cannot start or config.yaml is invalid.
pub fn status(config: &Config, output: Output) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        let setup = crate::ops::setup::node_setup(config)?;
        let timeout = std::time::Duration::from_secs(5);
        let mut problems = Vec::new();
        let mut doc = Status {
            unit: None,
            active_state: None,
            sub_state: None,
            active_since: None,
            n_restarts: None,
            apiserver_ready: None,
            apiserver_failures: vec![],
            kubelet_healthy: None,
            etcd: None,
            problems: vec![],
            renewal: renewal::assess(
                [],
                OffsetDateTime::now_utc(),
                renewal::window(renewal::RENEW_WINDOW_DAYS),
                None,
            ),
            last_operation: None,
            interrupted_operation: None,
        };
        let mut started = None;
        match Systemd::connect().await {
            Ok(systemd) => match detect_rke2_unit(&systemd).await {
                Ok(Some(unit)) => {
                    doc.unit = Some(unit.name().to_owned());
                    if let Ok(state) = systemd.state(unit.name()).await {
                        started = state.active_enter.filter(|_| state.is_active());
                        doc.active_since = started.map(rfc3339);
                        doc.active_state = Some(state.active_state);
                        doc.sub_state = Some(state.sub_state);
                        doc.n_restarts = Some(state.n_restarts);
                    }
                    if unit == Rke2Unit::Server {
                        let addr = std::net::SocketAddr::new(setup.node_ip, APISERVER_PORT);
                        match apiserver::readyz(
                            addr,
                            &apiserver::ApiserverCredentials::rke2(&setup.data_dir),
                            timeout,
                        )
                        .await
                        {
                            Ok(r) => {
                                doc.apiserver_ready = Some(r.is_ready());
                                doc.apiserver_failures = r.failures();
                            }
                            Err(e) => problems.push(format!("apiserver: {e}")),
                        }
                        let endpoint = format!(
                            "https://{}",
                            std::net::SocketAddr::new(setup.node_ip, ETCD_CLIENT_PORT)
                        );
                        match etcd::health(
                            &endpoint,
                            &etcd::EtcdCredentials::rke2(&setup.data_dir),
                            timeout,
                        )
                        .await
                        {
                            Ok(h) => doc.etcd = Some(h),
                            Err(e) => problems.push(format!("etcd: {e}")),
                        }
                    }
                    match kubelet::healthz(&setup.kubelet_healthz, timeout).await {
                        Ok(ok) => doc.kubelet_healthy = Some(ok),
                        Err(e) => problems.push(format!("kubelet: {e}")),
                    }
                }
                Ok(None) => {
                    problems.push("neither rke2-server nor rke2-agent is installed".to_owned())
                }
                Err(e) => problems.push(e.to_string()),
            },
            Err(e) => problems.push(e.to_string()),
        }
        let inventory = Scanner::new(config.scan_config()).scan();
        doc.renewal = renewal::assess(
            inventory.leaves().map(|c| c.not_after),
            OffsetDateTime::now_utc(),
            renewal::window(renewal::RENEW_WINDOW_DAYS),
            started,
        );
        if let Ok(journal) = Journal::open(config.state_dir.join("ops")) {
            doc.last_operation = journal.last().ok().flatten();
            doc.interrupted_operation = journal.current().ok().flatten();
        }
        doc.problems = problems;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
            Output::Table => print_status(&doc),
        }
        let healthy = doc.problems.is_empty()
            && doc.active_state.as_deref() == Some("active")
            && doc.apiserver_ready != Some(false)
            && doc.kubelet_healthy != Some(false);
        Ok(if healthy { 0 } else { 1 })
    })
}

fn print_status(doc: &Status) {
    let unit = doc.unit.as_deref().unwrap_or("(none)");
    println!(
        "unit:       {unit} {}/{} since {} (restarts {})",
        doc.active_state.as_deref().unwrap_or("?"),
        doc.sub_state.as_deref().unwrap_or("?"),
        doc.active_since.as_deref().unwrap_or("-"),
        doc.n_restarts
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
    if let Some(ready) = doc.apiserver_ready {
        println!(
            "apiserver:  {}{}",
            if ready { "ready" } else { "NOT ready" },
            if doc.apiserver_failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", doc.apiserver_failures.join(", "))
            }
        );
    }
    if let Some(h) = &doc.etcd {
        let healthy = h.members.iter().filter(|m| m.healthy).count();
        println!(
            "etcd:       {healthy}/{} members healthy, leader {:?}, alarms {:?}",
            h.members.len(),
            h.leader,
            h.alarms
        );
    }
    if let Some(ok) = doc.kubelet_healthy {
        println!("kubelet:    {}", if ok { "healthy" } else { "NOT healthy" });
    }
    match doc.renewal.deadline {
        Some(deadline) => println!(
            "renewal:    deadline {} ({}), restart {}",
            rfc3339(deadline),
            if doc.renewal.in_window {
                "inside the 120-day window"
            } else {
                "outside the window"
            },
            if doc.renewal.restart_due {
                "DUE"
            } else {
                "not due"
            }
        ),
        None => println!("renewal:    no leaf certificates found"),
    }
    if let Some(op) = &doc.interrupted_operation {
        println!(
            "operation:  {} {} interrupted at {} (run `rke2-node-agent resume`)",
            op.kind.name(),
            op.id,
            op.step.name()
        );
    }
    if let Some(op) = &doc.last_operation {
        println!(
            "last op:    {} {} ended {} {}",
            op.kind.name(),
            op.id,
            op.step.name(),
            op.failure.as_deref().unwrap_or("")
        );
    }
    for problem in &doc.problems {
        println!("problem:    {problem}");
    }
}
