//! The plan commands' client side (`rotate`, `restart`, `upgrade`, `plans`, `plan show|watch`,
//! `pause`, `resume`, `skip`, `abort`): build the request, call the hub over the connection
//! [`super::client`] opens, print the plan (a table, or JSON), and follow it live. The
//! arguments are [`super::plans`]'; the decisions stay in the hub.
//!
//! Exit codes of `plan watch` (and `--watch`): 0 completed, 1 halted (the reason is printed)
//! or the hub refused or could not be reached, 2 aborted, 3 the watch was lost before the
//! plan ended (the hub restarted or the connection dropped; the plan goes on in the hub).

use std::collections::HashSet;
use std::io::IsTerminal as _;

use rke2ops_common::report::tabwriter;
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

use super::client::{connect, refused};
use crate::cli::plans::PlansListArgs;
use crate::cli::plans::{ActionArgs, PlanArgs, PlanIdArgs, RotateArgs, SkipArgs, UpgradeArgs};
use crate::cli::{ClientArgs, Output};
use crate::grpc::convert;

fn base_request(kind: pb::PlanKind, args: &PlanArgs) -> pb::CreatePlanRequest {
    pb::CreatePlanRequest {
        kind: kind.into(),
        nodes: args.nodes.clone(),
        concurrency: args.concurrency,
        settle_seconds: args.settle.as_secs(),
        no_drain: args.no_drain,
        drain_timeout_seconds: args.drain_timeout.as_secs(),
        grace_period_seconds: args
            .grace_period
            .map_or(-1, |g| i64::try_from(g.as_secs()).unwrap_or(i64::MAX)),
        window: args.window.clone().unwrap_or_default(),
        ready_timeout_seconds: args.ready_timeout.as_secs(),
        dry_run: args.dry_run,
        accept: args.accept.clone(),
        probes: args
            .probes
            .iter()
            .cloned()
            .chain(args.probe_workloads.iter().map(|w| format!("workload:{w}")))
            .collect(),
        probe_halt_seconds: args.probe_halt_after.map_or(0, |d| d.as_secs().max(1)),
        cluster: args.cluster.clone().unwrap_or_default(),
        ..pb::CreatePlanRequest::default()
    }
}

/// `rke2-hub rotate`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn rotate(args: &RotateArgs) -> anyhow::Result<u8> {
    let mut req = base_request(pb::PlanKind::Rotate, &args.plan);
    req.services.clone_from(&args.services);
    req.etcd_snapshot = args.etcd_snapshot;
    create(&args.plan, req).await
}

/// `rke2-hub restart`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn restart(args: &PlanArgs) -> anyhow::Result<u8> {
    create(args, base_request(pb::PlanKind::Restart, args)).await
}

/// `rke2-hub upgrade`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn upgrade(args: &UpgradeArgs) -> anyhow::Result<u8> {
    let mut req = base_request(pb::PlanKind::Upgrade, &args.plan);
    req.version = args.version.clone().unwrap_or_default();
    req.channel = args.channel.clone().unwrap_or_default();
    req.allow_minor_skip = args.allow_minor_skip;
    req.no_rollback = args.no_rollback;
    req.artifact_source = args.artifact_source.clone().unwrap_or_default();
    req.stage_images = args.stage_images;
    create(&args.plan, req).await
}

async fn create(args: &PlanArgs, req: pb::CreatePlanRequest) -> anyhow::Result<u8> {
    if !args.waves.is_empty() {
        return super::rollouts::create(args, req).await;
    }
    if args.soak.is_some() {
        anyhow::bail!("--soak is the pause between rollout waves: it needs --wave");
    }
    let mut client = connect(&args.client).await?;
    let view = client.create_plan(req).await.map_err(refused)?.into_inner();
    print_view(&view, args.client.output);
    if args.watch && !args.dry_run {
        return follow(&args.client, &view.id, args.client.output).await;
    }
    Ok(0)
}

/// `rke2-hub plans`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn plans(args: &PlansListArgs) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let wanted = if args.all {
        usize::MAX
    } else {
        usize::try_from(args.limit).unwrap_or(usize::MAX)
    };
    let mut plans = Vec::new();
    let mut before_id = 0;
    loop {
        let left = wanted.saturating_sub(plans.len());
        let page = client
            .list_plans(pb::ListPlansRequest {
                limit: u32::try_from(left.min(500)).unwrap_or(500),
                before_id,
                cluster: args.cluster.clone().unwrap_or_default(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        plans.extend(page.plans);
        before_id = page.next_before_id;
        if before_id == 0 || plans.len() >= wanted {
            break;
        }
    }
    match args.client.output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(plans.iter().map(json).collect())
        ),
        Output::Table => {
            // Plans of several clusters get a CLUSTER column (before the free-text REASON).
            let several = plans.iter().any(|p| p.cluster != plans[0].cluster);
            let mut header = ["ID", "KIND", "TARGET", "STATE", "NODES", "CREATED", "BY"]
                .map(str::to_owned)
                .to_vec();
            if several {
                header.push("CLUSTER".to_owned());
            }
            header.push("REASON".to_owned());
            let mut lines = vec![header];
            for p in &plans {
                let done = p
                    .nodes
                    .iter()
                    .filter(|n| n.phase == "done" || n.phase == "skipped")
                    .count();
                lines.push(vec![
                    p.id.clone(),
                    kind_word(p.kind).to_owned(),
                    if p.target_version.is_empty() {
                        "-".to_owned()
                    } else {
                        p.target_version.clone()
                    },
                    state_word(p.state).to_owned(),
                    format!("{done}/{}", p.nodes.len()),
                    time_word(p.created_at.as_ref()),
                    p.created_by.clone(),
                ]);
                if let Some(line) = lines.last_mut() {
                    if several {
                        line.push(p.cluster.clone());
                    }
                    line.push(p.reason.clone());
                }
            }
            print!("{}", tabwriter::layout(&lines, 3));
        }
    }
    Ok(0)
}

/// `rke2-hub plan show`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn show(args: &PlanIdArgs) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let view = client
        .get_plan(pb::GetPlanRequest {
            id: args.id.clone(),
            events: 0,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_view(&view, args.client.output);
    Ok(0)
}

/// `rke2-hub plan report`: the plan with every event, as Markdown or JSON.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn report(args: &crate::cli::plans::PlanReportArgs) -> anyhow::Result<u8> {
    let client_args = ClientArgs {
        socket: args.socket.clone(),
        hub: args.hub.clone(),
        admin_dir: args.admin_dir.clone(),
        output: Output::Json,
    };
    let mut client = connect(&client_args).await?;
    let view = client
        .get_plan(pb::GetPlanRequest {
            id: args.id.clone(),
            events: 10_000,
        })
        .await
        .map_err(refused)?
        .into_inner();
    match args.output {
        crate::cli::plans::ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&crate::cli::report::json(&view))?
        ),
        crate::cli::plans::ReportFormat::Markdown => {
            print!("{}", crate::cli::report::markdown(&view));
        }
    }
    Ok(0)
}

/// `rke2-hub plan watch`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn watch(args: &PlanIdArgs) -> anyhow::Result<u8> {
    follow(&args.client, &args.id, args.client.output).await
}

async fn follow(client_args: &ClientArgs, id: &str, output: Output) -> anyhow::Result<u8> {
    let mut client = connect(client_args).await?;
    let mut stream = client
        .watch_plan(pb::WatchPlanRequest {
            id: id.to_owned(),
            until_halted: true,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let tty = output == Output::Table && std::io::stdout().is_terminal();
    let mut seen: HashSet<(i64, String, String)> = HashSet::new();
    let mut last_state = None;
    let mut last = None;
    loop {
        let view = match stream.message().await {
            Ok(Some(view)) => view,
            Ok(None) => break,
            Err(status) => {
                return Ok(lost(id, last.as_ref(), &refused(status).to_string()));
            }
        };
        match output {
            Output::Json => println!("{}", json(&view)),
            Output::Table if tty => {
                print!("\x1b[H\x1b[2J");
                print_view(&view, Output::Table);
            }
            Output::Table => {
                // Not a terminal (a log, CI): one line per new event or state change.
                let view = printable(&view);
                for e in &view.events {
                    let key = (
                        e.at.as_ref().map_or(0, |t| t.seconds),
                        e.node.clone(),
                        e.message.clone(),
                    );
                    if seen.insert(key) {
                        println!(
                            "{}  plan {}  {:<12} {}",
                            time_word(e.at.as_ref()),
                            view.id,
                            if e.node.is_empty() { "-" } else { &e.node },
                            e.message
                        );
                    }
                }
                let state = (view.state, view.reason.clone());
                if last_state.as_ref() != Some(&state) {
                    println!(
                        "{}  plan {}  {:<12} {}{}",
                        time_word(Some(&convert::timestamp(OffsetDateTime::now_utc()))),
                        view.id,
                        state_word(view.state),
                        if view.reason.is_empty() { "" } else { "why: " },
                        view.reason
                    );
                    last_state = Some(state);
                }
            }
        }
        last = Some(view);
    }
    let Some(view) = last else {
        anyhow::bail!("the hub ended the watch without sending the plan");
    };
    Ok(
        match pb::PlanState::try_from(view.state).unwrap_or_default() {
            pb::PlanState::Completed => 0,
            pb::PlanState::Halted => {
                eprintln!(
                    "plan {} halted: {}",
                    view.id,
                    rke2ops_common::text::escape_control(&view.reason)
                );
                1
            }
            pb::PlanState::Aborted => 2,
            _ => lost(id, Some(&view), "the hub ended the watch"),
        },
    )
}

/// Says the watch of plan `id` was lost before the plan ended, and returns exit code 3.
fn lost(id: &str, last: Option<&pb::PlanView>, why: &str) -> u8 {
    let state = last.map_or("unknown", |v| state_word(v.state));
    eprintln!(
        "rke2-hub: lost the watch of plan {id} while it was {state} ({why}); \
         the plan goes on in the hub: rke2-hub plan watch {id}"
    );
    3
}

async fn act(args: &ActionArgs, action: pb::PlanAction, node: &str) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let view = client
        .plan_action(pb::PlanActionRequest {
            id: args.id.clone(),
            action: action.into(),
            node: node.to_owned(),
            dry_run: args.dry_run,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_view(&view, args.client.output);
    Ok(0)
}

/// `rke2-hub pause`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn pause(args: &ActionArgs) -> anyhow::Result<u8> {
    act(args, pb::PlanAction::Pause, "").await
}

/// `rke2-hub resume`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn resume(args: &ActionArgs) -> anyhow::Result<u8> {
    act(args, pb::PlanAction::Resume, "").await
}

/// `rke2-hub abort`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn abort(args: &ActionArgs) -> anyhow::Result<u8> {
    act(args, pb::PlanAction::Abort, "").await
}

/// `rke2-hub skip`.
///
/// # Errors
/// Unreachable or refusing hub.
pub async fn skip(args: &SkipArgs) -> anyhow::Result<u8> {
    act(&args.action, pb::PlanAction::Skip, &args.node).await
}

pub(crate) fn kind_word(kind: i32) -> &'static str {
    match pb::PlanKind::try_from(kind) {
        Ok(pb::PlanKind::Rotate) => "rotate",
        Ok(pb::PlanKind::Restart) => "restart",
        Ok(pb::PlanKind::Upgrade) => "upgrade",
        _ => "unknown",
    }
}

pub(crate) fn state_word(state: i32) -> &'static str {
    match pb::PlanState::try_from(state) {
        Ok(pb::PlanState::Running) => "running",
        Ok(pb::PlanState::Paused) => "paused",
        Ok(pb::PlanState::Halted) => "halted",
        Ok(pb::PlanState::Completed) => "completed",
        Ok(pb::PlanState::Aborted) => "aborted",
        Ok(pb::PlanState::Preview) => "dry-run",
        _ => "unknown",
    }
}

pub(crate) fn time_word(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| convert::time_of(t, "at").ok())
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".to_owned())
}

fn elapsed(n: &pb::PlanNodeView) -> String {
    let Some(start) = n
        .started_at
        .as_ref()
        .and_then(|t| convert::time_of(t, "s").ok())
    else {
        return "-".to_owned();
    };
    let end = n
        .finished_at
        .as_ref()
        .and_then(|t| convert::time_of(t, "f").ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let secs = (end - start).whole_seconds().max(0);
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

pub(crate) fn role_word(role: i32) -> &'static str {
    convert::role_word(role)
}

/// Prints a plan as a table or JSON.
/// `view` with control characters escaped in every string a node or an operator chose
/// (node names, versions, reasons, events, details), for printing outside a table (tables
/// escape their cells themselves). JSON needs none of this: its encoder escapes them.
fn printable(view: &pb::PlanView) -> pb::PlanView {
    let esc = |s: &mut String| {
        if let std::borrow::Cow::Owned(e) = rke2ops_common::text::escape_control(s) {
            *s = e;
        }
    };
    let mut view = view.clone();
    for s in [
        &mut view.reason,
        &mut view.policy,
        &mut view.created_by,
        &mut view.origin,
        &mut view.target_version,
        &mut view.channel,
    ] {
        esc(s);
    }
    view.gates.iter_mut().for_each(esc);
    for p in &mut view.probes {
        esc(&mut p.name);
        esc(&mut p.target);
        esc(&mut p.last_error);
    }
    for n in &mut view.nodes {
        esc(&mut n.etcd_snapshot);
        if let Some(p) = &mut n.preview {
            esc(&mut p.install_method);
            esc(&mut p.fetch);
        }
        esc(&mut n.images_detail);
    }
    for e in &mut view.events {
        esc(&mut e.node);
        esc(&mut e.message);
    }
    view
}

fn print_view(view: &pb::PlanView, output: Output) {
    if output == Output::Json {
        println!("{}", json(view));
        return;
    }
    let view = &printable(view);
    let title = if state_word(view.state) == "dry-run" {
        "PLAN (dry run: nothing created)".to_owned()
    } else {
        format!("PLAN {}", view.id)
    };
    let target = match (view.target_version.is_empty(), view.channel.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(" {}", view.target_version),
        (false, false) => format!(" {} (channel {})", view.target_version, view.channel),
    };
    println!(
        "{title}: {}{target}, {}, created {} by {} ({})",
        kind_word(view.kind),
        state_word(view.state),
        time_word(view.created_at.as_ref()),
        view.created_by,
        view.origin
    );
    if !view.cluster.is_empty() && view.cluster != rke2ops_common::ids::DEFAULT_CLUSTER {
        println!("cluster: {}", view.cluster);
    }
    if !view.rollout.is_empty() {
        println!(
            "rollout: {} (rke2-hub rollout show {})",
            view.rollout, view.rollout
        );
    }
    println!("policy: {}", view.policy);
    if !view.reason.is_empty() {
        println!("why: {}", view.reason);
    }
    if !view.images.is_empty() {
        println!("images: {}", view.images);
    }
    println!();
    let mut lines = vec![
        [
            "#", "NODE", "ROLE", "FROM", "PHASE", "STEP", "ELAPSED", "CORDONED", "DETAIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for (i, n) in view.nodes.iter().enumerate() {
        lines.push(vec![
            (i + 1).to_string(),
            n.name.clone(),
            role_word(n.role).to_owned(),
            n.from_version.clone(),
            n.phase.clone(),
            if n.step.is_empty() {
                "-".to_owned()
            } else {
                n.step.clone()
            },
            elapsed(n),
            if n.cordoned_by_plan { "yes" } else { "-" }.to_owned(),
            n.detail.clone(),
        ]);
    }
    print!("{}", tabwriter::layout(&lines, 3));
    print_previews(view);
    print_images(view);
    print_probes(view);
    let snapshots: Vec<&pb::PlanNodeView> = view
        .nodes
        .iter()
        .filter(|n| !n.etcd_snapshot.is_empty())
        .collect();
    if !snapshots.is_empty() {
        println!(
            "\netcd snapshots taken before each server changed (restore on that server, with \
             every server's rke2-server stopped first):"
        );
        for n in snapshots {
            println!("  {}: {}", n.name, n.etcd_snapshot);
            println!(
                "    restore: {}",
                rke2ops_common::layout::etcd_restore_command(&n.etcd_snapshot)
            );
        }
    }
    if !view.gates.is_empty() {
        println!("\ngates:");
        for g in &view.gates {
            println!("  - {g}");
        }
    }
    if !view.events.is_empty() {
        println!("\nevents:");
        for e in &view.events {
            println!(
                "  {}  {:<12} {}",
                time_word(e.at.as_ref()),
                if e.node.is_empty() { "-" } else { &e.node },
                e.message
            );
        }
    }
}

/// An upgrade dry run's per-node table: method, version, what would be fetched from where,
/// images, snapshot.
fn print_previews(view: &pb::PlanView) {
    if view.nodes.iter().all(|n| n.preview.is_none()) {
        return;
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut lines = vec![
        ["NODE", "METHOD", "CURRENT", "IMAGES", "SNAPSHOT", "FETCH"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for n in &view.nodes {
        if let Some(p) = &n.preview {
            lines.push(vec![
                n.name.clone(),
                p.install_method.clone(),
                p.current_version.clone(),
                yes_no(p.stage_images),
                yes_no(p.etcd_snapshot),
                p.fetch.clone(),
            ]);
        }
    }
    println!("\nper node:");
    print!("{}", tabwriter::layout(&lines, 3));
}

/// The application probes' report: availability and the longest outage, with the nodes in
/// maintenance during it.
fn print_probes(view: &pb::PlanView) {
    if view.probes.is_empty() {
        return;
    }
    println!("\nprobes (checked for the whole plan):");
    let mut lines = vec![
        [
            "PROBE",
            "TARGET",
            "STATE",
            "SAMPLES",
            "FAILURES",
            "AVAILABILITY",
            "LONGEST OUTAGE",
            "LAST ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in &view.probes {
        let longest = crate::cli::report::longest_outage(p).unwrap_or_else(|| "-".to_owned());
        lines.push(vec![
            p.name.clone(),
            p.target.clone(),
            if p.samples == 0 {
                "no result yet"
            } else if p.down {
                "down"
            } else {
                "up"
            }
            .to_owned(),
            p.samples.to_string(),
            p.failures.to_string(),
            format!("{:.2} %", p.availability_percent),
            longest,
            if p.last_error.is_empty() {
                "-".to_owned()
            } else {
                p.last_error.clone()
            },
        ]);
    }
    print!("{}", tabwriter::layout(&lines, 3));
}

/// Each node's image staging, when the plan stages images.
fn print_images(view: &pb::PlanView) {
    if view.images.is_empty() {
        return;
    }
    println!(
        "\nimages staged before any node is upgraded ({}):",
        view.images
    );
    let mut lines = vec![
        ["NODE", "IMAGES", "STARTED", "FINISHED", "DETAIL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for n in view.nodes.iter().filter(|n| !n.images.is_empty()) {
        lines.push(vec![
            n.name.clone(),
            n.images.clone(),
            time_word(n.images_started_at.as_ref()),
            time_word(n.images_finished_at.as_ref()),
            n.images_detail.clone(),
        ]);
    }
    print!("{}", tabwriter::layout(&lines, 3));
}

/// A wire timestamp as RFC 3339 (`None`: absent or out of range).
pub(crate) fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| convert::time_of(t, "t").ok()).and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
}

pub(crate) fn ts_json(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    rfc3339(t).map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// A plan as JSON (stable keys, snake_case).
fn json(view: &pb::PlanView) -> serde_json::Value {
    serde_json::json!({
        "id": view.id,
        "kind": kind_word(view.kind),
        "target_version": view.target_version,
        "channel": view.channel,
        "state": state_word(view.state),
        "reason": view.reason,
        "origin": view.origin,
        "cluster": view.cluster,
        "rollout": (!view.rollout.is_empty()).then_some(&view.rollout),
        "created_by": view.created_by,
        "created_at": ts_json(view.created_at.as_ref()),
        "finished_at": ts_json(view.finished_at.as_ref()),
        "policy": view.policy,
        "images": (!view.images.is_empty()).then_some(&view.images),
        "gates": view.gates,
        "probes": view.probes.iter().map(|p| serde_json::json!({
            "name": p.name,
            "target": p.target,
            "samples": p.samples,
            "failures": p.failures,
            "availability_percent": p.availability_percent,
            "down": p.down,
            "last_error": p.last_error,
            "longest_outage": p.longest_outage_start.as_ref().map(|_| serde_json::json!({
                "start": ts_json(p.longest_outage_start.as_ref()),
                "end": ts_json(p.longest_outage_end.as_ref()),
                "seconds": p.longest_outage_seconds,
                "nodes_in_maintenance": p.longest_outage_nodes,
            })),
        })).collect::<Vec<_>>(),
        "nodes": view.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "role": role_word(n.role),
            "phase": n.phase,
            "step": n.step,
            "detail": n.detail,
            "from_version": n.from_version,
            "cordoned_by_plan": n.cordoned_by_plan,
            "attempt": n.attempt,
            "operation_id": n.operation_id,
            "started_at": ts_json(n.started_at.as_ref()),
            "finished_at": ts_json(n.finished_at.as_ref()),
            "etcd_snapshot": n.etcd_snapshot,
            "restore": (!n.etcd_snapshot.is_empty())
                .then(|| rke2ops_common::layout::etcd_restore_command(&n.etcd_snapshot)),
            "preview": n.preview.as_ref().map(|p| serde_json::json!({
                "install_method": p.install_method,
                "current_version": p.current_version,
                "fetch": p.fetch,
                "stage_images": p.stage_images,
                "etcd_snapshot": p.etcd_snapshot,
            })),
            "images": (!n.images.is_empty()).then(|| serde_json::json!({
                "state": n.images,
                "detail": n.images_detail,
                "started_at": ts_json(n.images_started_at.as_ref()),
                "finished_at": ts_json(n.images_finished_at.as_ref()),
            })),
        })).collect::<Vec<_>>(),
        "events": view.events.iter().map(|e| serde_json::json!({
            "at": ts_json(e.at.as_ref()),
            "node": e.node,
            "message": e.message,
        })).collect::<Vec<_>>(),
    })
}
