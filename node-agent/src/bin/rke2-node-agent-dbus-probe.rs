//! Test tool, not shipped: drives [`rke2_node_agent::dbus::Systemd`] once and prints the
//! outcome as one JSON object on stdout (exit status 0 when `"ok": true`, 1 otherwise).
//!
//! The proving-ground tests (`tests/tests/e2e_agent_dbus.rs`) install it into a simulated node and
//! run it there, so it reaches that node's system bus exactly as the agent would:
//!
//! ```text
//! rke2-node-agent-dbus-probe [--job-timeout SECS] [--address ADDR] start|stop|restart|state UNIT
//! rke2-node-agent-dbus-probe reload | detect | version
//! rke2-node-agent-dbus-probe steps reload start:UNIT state:UNIT ...
//! rke2-node-agent-dbus-probe journal UNIT LINES
//! rke2-node-agent-dbus-probe bench-state UNIT [READS] [--typed]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rke2_node_agent::dbus::Systemd;
use rke2_node_agent::journald::journal_tail;
use rke2_node_agent::service::{ServiceError, ServiceManager, UnitState, detect_rke2_unit};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// Drives the agent's systemd client once and prints JSON (a test tool).
#[derive(Debug, Parser)]
#[command(name = "rke2-node-agent-dbus-probe")]
struct Args {
    /// D-Bus address to use instead of the system bus.
    #[arg(long, global = true)]
    address: Option<String>,
    /// Deadline for start/stop/restart jobs and daemon-reload, in seconds.
    #[arg(long, global = true)]
    job_timeout: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// StartUnit and wait for the job.
    Start { unit: String },
    /// StopUnit and wait for the job.
    Stop { unit: String },
    /// RestartUnit and wait for the job.
    Restart { unit: String },
    /// The unit's state (and a few properties read through the typed proxies).
    State { unit: String },
    /// daemon-reload.
    Reload,
    /// Which RKE2 unit this node runs.
    Detect,
    /// systemd's version.
    Version,
    /// The unit's last journal lines.
    Journal { unit: String, lines: usize },
    /// Several steps over one connection, in order: `reload`, `start:UNIT`, `stop:UNIT`,
    /// `restart:UNIT`, `state:UNIT`. Stops at the first error.
    Steps { steps: Vec<String> },
    /// Times `reads` state reads over one connection.
    BenchState {
        unit: String,
        #[arg(default_value_t = 200)]
        reads: usize,
        /// Read the eight properties one by one through the typed proxies instead of
        /// `state()`.
        #[arg(long)]
        typed: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let output = match run(args).await {
        Ok(value) => value,
        Err(e) => json!({ "ok": false, "kind": "probe", "error": format!("{e:#}") }),
    };
    println!("{output}");
    if output["ok"] == Value::Bool(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let connect_started = Instant::now();
    let connected = match &args.address {
        Some(address) => Systemd::connect_to(address).await,
        None => Systemd::connect().await,
    };
    let connect_us = micros(connect_started.elapsed());
    let mut systemd = match connected {
        Ok(systemd) => systemd,
        Err(e) => return Ok(failure(&e)),
    };
    if let Some(seconds) = args.job_timeout {
        let timeout = Duration::try_from_secs_f64(seconds).context("--job-timeout")?;
        systemd = systemd.with_job_timeout(timeout);
    }

    let started = Instant::now();
    let mut value = match args.command {
        Command::Start { unit } => job(systemd.start(&unit).await),
        Command::Stop { unit } => job(systemd.stop(&unit).await),
        Command::Restart { unit } => job(systemd.restart(&unit).await),
        Command::State { unit } => match systemd.state(&unit).await {
            Ok(state) => json!({
                "ok": true,
                "state": state_json(&state),
                "typed": typed_reads(&systemd, &unit).await,
            }),
            Err(e) => failure(&e),
        },
        Command::Reload => match systemd.daemon_reload().await {
            Ok(()) => json!({ "ok": true }),
            Err(e) => failure(&e),
        },
        Command::Detect => match detect_rke2_unit(&systemd).await {
            Ok(unit) => json!({ "ok": true, "unit": unit.map(|u| u.name()) }),
            Err(e) => failure(&e),
        },
        Command::Version => match systemd.version().await {
            Ok(version) => json!({ "ok": true, "version": version }),
            Err(e) => failure(&e),
        },
        Command::Journal { unit, lines } => {
            json!({ "ok": true, "lines": journal_tail(&unit, lines).await })
        }
        Command::Steps { steps } => run_steps(&systemd, &steps).await,
        Command::BenchState { unit, reads, typed } => bench(&systemd, &unit, reads, typed).await,
    };
    value["elapsed_us"] = json!(micros(started.elapsed()));
    value["connect_us"] = json!(connect_us);
    Ok(value)
}

async fn run_steps(systemd: &Systemd, steps: &[String]) -> Value {
    let mut done = Vec::new();
    for step in steps {
        let started = Instant::now();
        let mut value = match step.split_once(':') {
            None if step == "reload" => match systemd.daemon_reload().await {
                Ok(()) => json!({ "ok": true }),
                Err(e) => failure(&e),
            },
            Some(("start", unit)) => job(systemd.start(unit).await),
            Some(("stop", unit)) => job(systemd.stop(unit).await),
            Some(("restart", unit)) => job(systemd.restart(unit).await),
            Some(("state", unit)) => match systemd.state(unit).await {
                Ok(state) => json!({ "ok": true, "state": state_json(&state) }),
                Err(e) => failure(&e),
            },
            _ => json!({ "ok": false, "kind": "probe", "error": format!("unknown step {step:?}") }),
        };
        value["step"] = json!(step);
        value["elapsed_us"] = json!(micros(started.elapsed()));
        let ok = value["ok"] == Value::Bool(true);
        done.push(value);
        if !ok {
            return json!({ "ok": false, "steps": done });
        }
    }
    json!({ "ok": true, "steps": done })
}

fn job(outcome: Result<rke2_node_agent::service::JobResult, ServiceError>) -> Value {
    match outcome {
        Ok(result) => json!({ "ok": true, "result": result.to_string() }),
        Err(e) => failure(&e),
    }
}

fn failure(error: &ServiceError) -> Value {
    let kind = match error {
        ServiceError::Connect(_) => "connect",
        ServiceError::Call { .. } => "call",
        ServiceError::JobTimeout { .. } => "job_timeout",
    };
    json!({ "ok": false, "kind": kind, "error": error.to_string() })
}

fn state_json(state: &UnitState) -> Value {
    json!({
        "load_state": state.load_state,
        "active_state": state.active_state,
        "sub_state": state.sub_state,
        "result": state.result,
        "active_enter": state.active_enter.and_then(|t| t.format(&Rfc3339).ok()),
        "active_enter_unix_us": state
            .active_enter
            .map(|t| t.unix_timestamp_nanos() / 1000)
            .map(|us| us.to_string()),
        "n_restarts": state.n_restarts,
        "exec_main_status": state.exec_main_status,
        "main_pid": state.main_pid,
    })
}

/// `Id`, `ActiveState` and `MainPID` read one by one through the typed proxies; errors as
/// strings.
async fn typed_reads(systemd: &Systemd, unit: &str) -> Value {
    let text = |e: &dyn std::fmt::Display| json!({ "error": e.to_string() });
    let unit_proxy = match systemd.unit_proxy(unit).await {
        Ok(proxy) => proxy,
        Err(e) => return text(&e),
    };
    let service_proxy = match systemd.service_proxy(unit).await {
        Ok(proxy) => proxy,
        Err(e) => return text(&e),
    };
    let or_error = |r: zbus::Result<Value>| r.unwrap_or_else(|e| text(&e));
    json!({
        "id": or_error(unit_proxy.id().await.map(Value::from)),
        "active_state": or_error(unit_proxy.active_state().await.map(Value::from)),
        "main_pid": or_error(service_proxy.main_pid().await.map(Value::from)),
    })
}

async fn bench(systemd: &Systemd, unit: &str, reads: usize, typed: bool) -> Value {
    // A few untimed reads first: the first ones pay for loading the unit.
    for _ in 0..5 {
        if let Err(e) = read_once(systemd, unit, typed).await {
            return failure(&e);
        }
    }
    let mut samples = Vec::with_capacity(reads);
    let all = Instant::now();
    for _ in 0..reads {
        let one = Instant::now();
        if let Err(e) = read_once(systemd, unit, typed).await {
            return failure(&e);
        }
        samples.push(micros(one.elapsed()));
    }
    let total = micros(all.elapsed());
    samples.sort_unstable();
    let pick = |q: f64| {
        // Nearest-rank percentile.
        let rank = (q * samples.len() as f64).ceil() as usize;
        samples.get(rank.saturating_sub(1)).copied().unwrap_or(0)
    };
    json!({
        "ok": true,
        "mode": if typed { "typed proxies: 2 LoadUnit + 8 Get, sequential" } else { "state(): LoadUnit, then GetAll(Unit) + 4 Get(Service) concurrently" },
        "reads": reads,
        "total_us": total,
        "mean_us": if reads == 0 { 0 } else { total / reads as u64 },
        "min_us": samples.first(),
        "p50_us": pick(0.50),
        "p90_us": pick(0.90),
        "p99_us": pick(0.99),
        "max_us": samples.last(),
    })
}

async fn read_once(systemd: &Systemd, unit: &str, typed: bool) -> Result<(), ServiceError> {
    if !typed {
        return systemd.state(unit).await.map(drop);
    }
    let call = |e: zbus::Error| ServiceError::Call {
        unit: unit.to_owned(),
        action: "read state",
        error: e.to_string(),
    };
    let unit_proxy = systemd.unit_proxy(unit).await?;
    let service_proxy = systemd.service_proxy(unit).await?;
    unit_proxy.load_state().await.map_err(call)?;
    unit_proxy.active_state().await.map_err(call)?;
    unit_proxy.sub_state().await.map_err(call)?;
    unit_proxy.active_enter_timestamp().await.map_err(call)?;
    service_proxy.result().await.map_err(call)?;
    service_proxy.n_restarts().await.map_err(call)?;
    service_proxy.exec_main_status().await.map_err(call)?;
    service_proxy.main_pid().await.map_err(call)?;
    Ok(())
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
