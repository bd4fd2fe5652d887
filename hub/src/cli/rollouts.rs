//! The rollout commands: `rotate|restart|upgrade --wave A --wave B,C --soak 24h` (create),
//! `rollouts` (list) and `rollout show|watch|pause|resume|abort ID`. A rollout's plans are
//! ordinary plans: `plan show` and `plan watch` follow one cluster's.
//!
//! Exit codes of `rollout watch` (and `--watch`): 0 completed, 1 halted (the reason is
//! printed) or the hub refused or could not be reached, 2 aborted, 3 the watch was lost
//! before the rollout ended.

use std::collections::HashSet;
use std::io::IsTerminal as _;
use std::time::Duration;

use clap::{Args, Subcommand};
use rke2ops_common::report::tabwriter;
use rke2ops_proto::v1 as pb;

use super::client::{connect, refused};
use super::plans::PlanArgs;
use super::plans_client::{kind_word, state_word, time_word, ts_json};
use super::{ClientArgs, Output};

/// `rollouts` options.
#[derive(Debug, Args)]
pub struct RolloutsListArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

/// A rollout id with connection options.
#[derive(Debug, Args)]
pub struct RolloutIdArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The rollout's id.
    pub id: String,
}

/// `rollout pause|resume|abort` options.
#[derive(Debug, Args)]
pub struct RolloutActionArgs {
    /// Rollout and connection.
    #[command(flatten)]
    pub rollout: RolloutIdArgs,
    /// Say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// The rollout, its waves, their plans and recent events.
    Show(RolloutIdArgs),
    /// Follow the rollout live until it completes, halts or is aborted.
    Watch(RolloutIdArgs),
    /// No new wave starts and the current wave's running plans pause.
    Pause(RolloutActionArgs),
    /// Continue: the current wave's paused and halted plans resume, a cluster whose plan was
    /// aborted gets a new one, and a failed soak starts over.
    Resume(RolloutActionArgs),
    /// End the rollout and abort its active plans (what they cordoned is uncordoned).
    Abort(RolloutActionArgs),
}

/// `rotate|restart|upgrade --wave ...`: creates the rollout (or checks it, `--dry-run`).
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn create(args: &PlanArgs, plan: pb::CreatePlanRequest) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let view = client
        .create_rollout(pb::CreateRolloutRequest {
            plan: Some(plan),
            waves: args.waves.clone(),
            soak_seconds: args.soak.unwrap_or(Duration::ZERO).as_secs(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_view(&view, args.client.output);
    if args.watch && !args.dry_run {
        return follow(&args.client, &view.id).await;
    }
    Ok(0)
}

/// `rke2-hub rollouts`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn list(args: &RolloutsListArgs) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let list = client
        .list_rollouts(pb::ListRolloutsRequest { limit: args.limit })
        .await
        .map_err(refused)?
        .into_inner();
    match args.client.output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(list.rollouts.iter().map(json).collect())
        ),
        Output::Table => {
            let mut lines = vec![
                [
                    "ID", "KIND", "TARGET", "STATE", "WAVE", "SOAK", "CREATED", "BY", "REASON",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for r in &list.rollouts {
                lines.push(vec![
                    r.id.clone(),
                    kind_word(r.kind).to_owned(),
                    dash(&r.target_version),
                    state_word(r.state).to_owned(),
                    format!("{}/{}", r.current_wave + 1, r.waves.len()),
                    humantime::format_duration(Duration::from_secs(r.soak_seconds)).to_string(),
                    time_word(r.created_at.as_ref()),
                    r.created_by.clone(),
                    r.reason.clone(),
                ]);
            }
            print!("{}", tabwriter::layout(&lines, 3));
        }
    }
    Ok(0)
}

/// `rke2-hub rollout ...`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn command(command: &RolloutCommand) -> anyhow::Result<u8> {
    match command {
        RolloutCommand::Show(args) => {
            let mut client = connect(&args.client).await?;
            let view = client
                .get_rollout(pb::GetRolloutRequest {
                    id: args.id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            print_view(&view, args.client.output);
            Ok(0)
        }
        RolloutCommand::Watch(args) => follow(&args.client, &args.id).await,
        RolloutCommand::Pause(args) => act(args, pb::PlanAction::Pause).await,
        RolloutCommand::Resume(args) => act(args, pb::PlanAction::Resume).await,
        RolloutCommand::Abort(args) => act(args, pb::PlanAction::Abort).await,
    }
}

async fn act(args: &RolloutActionArgs, action: pb::PlanAction) -> anyhow::Result<u8> {
    let mut client = connect(&args.rollout.client).await?;
    let view = client
        .rollout_action(pb::RolloutActionRequest {
            id: args.rollout.id.clone(),
            action: action.into(),
            dry_run: args.dry_run,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_view(&view, args.rollout.client.output);
    Ok(0)
}

async fn follow(client_args: &ClientArgs, id: &str) -> anyhow::Result<u8> {
    let mut client = connect(client_args).await?;
    let mut stream = client
        .watch_rollout(pb::WatchRolloutRequest {
            id: id.to_owned(),
            until_halted: true,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let output = client_args.output;
    let tty = output == Output::Table && std::io::stdout().is_terminal();
    let mut seen: HashSet<(i64, String)> = HashSet::new();
    let mut last: Option<pb::RolloutView> = None;
    loop {
        let view = match stream.message().await {
            Ok(Some(view)) => view,
            Ok(None) => break,
            Err(status) => return Ok(lost(id, last.as_ref(), &refused(status).to_string())),
        };
        match output {
            Output::Json => println!("{}", json(&view)),
            Output::Table if tty => {
                print!("\x1b[H\x1b[2J");
                print_view(&view, Output::Table);
            }
            Output::Table => {
                // Not a terminal: one line per new event or change of state or reason.
                for e in &view.events {
                    let key = (e.at.as_ref().map_or(0, |t| t.seconds), e.message.clone());
                    if seen.insert(key) {
                        println!(
                            "{}  rollout {}  {}",
                            time_word(e.at.as_ref()),
                            view.id,
                            clean(&e.message)
                        );
                    }
                }
                let changed = last
                    .as_ref()
                    .is_none_or(|l| l.state != view.state || l.reason != view.reason);
                if changed {
                    println!(
                        "{}  rollout {}  {} {}",
                        time_word(view.events.last().and_then(|e| e.at.as_ref())),
                        view.id,
                        state_word(view.state),
                        clean(&view.reason)
                    );
                }
            }
        }
        last = Some(view);
    }
    let Some(view) = last else {
        anyhow::bail!("the hub ended the watch without sending the rollout");
    };
    Ok(
        match pb::RolloutState::try_from(view.state).unwrap_or_default() {
            pb::RolloutState::Completed => 0,
            pb::RolloutState::Halted => {
                eprintln!("rollout {} halted: {}", view.id, clean(&view.reason));
                1
            }
            pb::RolloutState::Aborted => 2,
            _ => lost(id, Some(&view), "the hub ended the watch"),
        },
    )
}

/// Says the watch was lost before the rollout ended; exit code 3.
fn lost(id: &str, last: Option<&pb::RolloutView>, why: &str) -> u8 {
    let state = last.map_or("unknown", |v| state_word(v.state));
    eprintln!(
        "rke2-hub: lost the watch of rollout {id} while it was {state} ({why}); the rollout \
         goes on in the hub: rke2-hub rollout watch {id}"
    );
    3
}

/// Text from the hub, with control characters made visible (a plan's reason can quote an
/// agent's words).
fn clean(text: &str) -> String {
    rke2ops_common::text::escape_control(text).into_owned()
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// Prints a rollout: a summary, one line per wave and per plan, then recent events.
pub fn print_view(view: &pb::RolloutView, output: Output) {
    if output == Output::Json {
        println!("{}", json(view));
        return;
    }
    let id = if view.id.is_empty() {
        "(dry run)".to_owned()
    } else {
        view.id.clone()
    };
    println!(
        "rollout {id}: {} {}{}  {}",
        kind_word(view.kind),
        dash(&view.target_version),
        if view.channel.is_empty() {
            String::new()
        } else {
            format!(" (channel {})", view.channel)
        },
        state_word(view.state)
    );
    if !view.reason.is_empty() {
        println!("  why: {}", clean(&view.reason));
    }
    println!(
        "  soak between waves: {}; each plan: {}",
        humantime::format_duration(Duration::from_secs(view.soak_seconds)),
        view.policy
    );
    let mut lines = vec![
        [
            "WAVE",
            "CLUSTER",
            "STATE",
            "PLAN",
            "PLAN STATE",
            "NODES",
            "SOAK UNTIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for wave in &view.waves {
        for cluster in &wave.clusters {
            let plan = wave.plans.iter().find(|p| &p.cluster == cluster);
            lines.push(vec![
                (wave.index + 1).to_string(),
                cluster.clone(),
                wave.state.clone(),
                plan.map_or("-".to_owned(), |p| p.plan_id.clone()),
                plan.map_or("-".to_owned(), |p| state_word(p.state).to_owned()),
                plan.map_or("-".to_owned(), |p| format!("{}/{}", p.nodes_done, p.nodes)),
                time_word(wave.soak_until.as_ref()),
            ]);
        }
    }
    print!("{}", tabwriter::layout(&lines, 3));
    for e in &view.events {
        println!("  {}  {}", time_word(e.at.as_ref()), clean(&e.message));
    }
}

/// A rollout as JSON (stable field names for scripts).
#[must_use]
pub fn json(view: &pb::RolloutView) -> serde_json::Value {
    let ts = ts_json;
    serde_json::json!({
        "id": view.id,
        "kind": kind_word(view.kind),
        "target_version": view.target_version,
        "channel": view.channel,
        "state": state_word(view.state),
        "reason": view.reason,
        "created_by": view.created_by,
        "created_at": ts(view.created_at.as_ref()),
        "finished_at": ts(view.finished_at.as_ref()),
        "soak_seconds": view.soak_seconds,
        "current_wave": view.current_wave,
        "policy": view.policy,
        "waves": view.waves.iter().map(|w| serde_json::json!({
            "index": w.index,
            "clusters": w.clusters,
            "state": w.state,
            "started_at": ts(w.started_at.as_ref()),
            "completed_at": ts(w.completed_at.as_ref()),
            "soak_until": ts(w.soak_until.as_ref()),
            "plans": w.plans.iter().map(|p| serde_json::json!({
                "cluster": p.cluster,
                "plan": p.plan_id,
                "state": state_word(p.state),
                "reason": p.reason,
                "nodes_done": p.nodes_done,
                "nodes": p.nodes,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "events": view.events.iter().map(|e| serde_json::json!({
            "at": ts(e.at.as_ref()),
            "message": e.message,
        })).collect::<Vec<_>>(),
    })
}
