//! Entry point of `rke2-hub`: parse, configure (exit 78 on a bad configuration), run.

use std::process::ExitCode;

use clap::Parser;
use rke2_hub::cli::plans::PlanCommand;
use rke2_hub::cli::{AdminCertCommand, Cli, Command, ServeArgs, TokenCommand};
use rke2_hub::cli::{client, plans_client};
use rke2_hub::config::{Config, DEFAULT_CONFIG_PATH, FileConfig, Overrides};
use rke2_hub::serve;

const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

fn config(args: &ServeArgs) -> Result<Config, rke2_hub::config::ConfigError> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (DEFAULT_CONFIG_PATH.into(), false),
    };
    let file = FileConfig::load(&path, required)?;
    Config::resolve(
        file,
        Overrides {
            listen_addr: args.listen_addr.clone(),
            advertise_address: args.advertise_address.clone(),
            server_sans: args.server_sans.clone(),
            metrics_addr: args.metrics_addr.clone(),
            state_dir: args.state_dir.clone(),
            admin_socket: args.admin_socket.clone(),
            heartbeat_timeout_secs: args.heartbeat_timeout_secs,
            kubeconfig: args.kubeconfig.clone(),
            apiserver_endpoints: args.apiserver_endpoints.clone(),
            channel_url: args.channel_url.clone(),
            artifact_mirror: args.artifact_mirror.clone(),
            auto_restart_within_days: args.auto_restart_within_days,
            auto_restart_window: args.auto_restart_window.clone(),
            max_unauthenticated_per_peer: args.max_unauthenticated_per_peer,
            tls_handshake_timeout_secs: args.tls_handshake_timeout_secs,
            alert_gate_prometheus_url: args.alert_gate_prometheus_url.clone(),
            alert_gate_ignore: args.alert_gate_ignore.clone(),
            history_retention_days: args.history_retention_days,
        },
    )
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    if let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    } else {
        std::future::pending::<()>().await;
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    // kube-rs logs every non-2xx answer at ERROR (a 500 from the apiserver of a server in
    // maintenance, a 404 for a Node not registered yet); the hub's kube module reports what
    // matters itself (failovers with the endpoint, errors to the plan), so those lines are
    // off unless RKE2_HUB_LOG asks for them.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RKE2_HUB_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rke2-hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = |r: anyhow::Result<()>| r.map(|()| 0u8);
    let result: anyhow::Result<u8> = match cli.command {
        Command::Serve(args) => match config(&args) {
            Ok(config) => code(runtime.block_on(serve::run(config, shutdown_signal()))),
            Err(e) => {
                eprintln!("rke2-hub: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Command::Token {
            command: TokenCommand::Create(args),
        } => code(runtime.block_on(client::token_create(&args))),
        Command::Nodes(args) => code(runtime.block_on(client::nodes(&args))),
        Command::Certs(args) => code(runtime.block_on(client::certs(&args))),
        Command::AdminCert {
            command: AdminCertCommand::Create(args),
        } => code(client::admin_cert_create(&args)),
        Command::AdminCert {
            command: AdminCertCommand::Revoke(args),
        } => code(client::admin_cert_revoke(&args)),
        Command::Rotate(args) => runtime.block_on(plans_client::rotate(&args)),
        Command::Restart(args) => runtime.block_on(plans_client::restart(&args)),
        Command::Upgrade(args) => runtime.block_on(plans_client::upgrade(&args)),
        Command::Plans(args) => runtime.block_on(plans_client::plans(&args)),
        Command::Plan {
            command: PlanCommand::Show(args),
        } => runtime.block_on(plans_client::show(&args)),
        Command::Plan {
            command: PlanCommand::Watch(args),
        } => runtime.block_on(plans_client::watch(&args)),
        Command::Pause(args) => runtime.block_on(plans_client::pause(&args)),
        Command::Resume(args) => runtime.block_on(plans_client::resume(&args)),
        Command::Skip(args) => runtime.block_on(plans_client::skip(&args)),
        Command::Abort(args) => runtime.block_on(plans_client::abort(&args)),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => ExitCode::from(n),
        Err(e) => {
            eprintln!("rke2-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
