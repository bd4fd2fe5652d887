//! The agent's systemd client (`rke2_node_agent::dbus::Systemd`) against a real systemd 252
//! and dbus-daemon.
//!
//! Each test boots a proving-ground node (`rke2ops_tests::ground`) and installs the test tool
//! `rke2-node-agent-dbus-probe` into it. The probe runs inside the node (its mount namespace
//! holds the node's `/run/dbus/system_bus_socket`), connects to the system bus exactly as the
//! agent does, performs one operation (or a few, `steps`) and prints the outcome as JSON, which
//! the tests check against what `systemctl` says.
//!
//! Needs root and `cargo build -p rke2-node-agent` first (for the probe binary).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rke2ops_tests::ground::{Node, NodeSpec, built_binary, require_root_and_tools};
use serde_json::Value;
use time::OffsetDateTime;

const PROBE: &str = "/usr/local/bin/rke2-node-agent-dbus-probe";
const PROBE_BINARY: &str = "rke2-node-agent-dbus-probe";

/// Reports READY=1 after a second, so a start that returns at once would be caught.
const NOTIFY_UNIT: &str = "\
[Unit]
Description=dbus probe: notify unit

[Service]
Type=notify
NotifyAccess=all
TimeoutStartSec=30s
ExecStart=/bin/sh -c 'sleep 1; systemd-notify --ready; exec sleep infinity'
";

/// The main process exits 1 before it is ready.
const FAILING_UNIT: &str = "\
[Unit]
Description=dbus probe: failing unit

[Service]
Type=notify
ExecStart=/bin/sh -c 'echo about to fail; echo exiting with 1 >&2; exit 1'
";

/// Never reports ready; systemd gives up after 2 s.
const NEVER_READY_UNIT: &str = "\
[Unit]
Description=dbus probe: never ready

[Service]
Type=notify
TimeoutStartSec=2s
ExecStart=/bin/sleep infinity
";

/// A node with the probe installed.
fn node_with_probe(name: &str) -> Node {
    require_root_and_tools();
    let probe = built_binary(PROBE_BINARY);
    let started = Instant::now();
    let node = Node::boot(NodeSpec::new(name)).expect("boot node");
    node.install_binary(&probe, PROBE).expect("install probe");
    eprintln!("{name}: booted with probe in {:?}", started.elapsed());
    node
}

/// Runs the probe inside `node` and returns its JSON; the exit status must agree with `ok`.
fn probe(node: &Node, args: &[&str]) -> Value {
    let mut argv = vec![PROBE];
    argv.extend_from_slice(args);
    let out = node.exec(&argv).expect("run probe");
    parse_probe_output(
        &argv.join(" "),
        out.status.success(),
        &out.stdout,
        &out.stderr,
    )
}

fn parse_probe_output(command: &str, success: bool, stdout: &str, stderr: &str) -> Value {
    let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("`{command}` printed no JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}")
    });
    assert_eq!(
        value["ok"].as_bool(),
        Some(success),
        "`{command}`: exit status and \"ok\" disagree: {value}\nstderr: {stderr}"
    );
    eprintln!("{command} -> {value}");
    value
}

/// Runs the probe and expects `"ok": true`.
fn probe_ok(node: &Node, args: &[&str]) -> Value {
    let value = probe(node, args);
    assert_eq!(value["ok"], true, "probe {args:?} failed: {value}");
    value
}

fn state(node: &Node, unit: &str) -> Value {
    probe_ok(node, &["state", unit])["state"].clone()
}

fn millis(value: &Value) -> f64 {
    value["elapsed_us"].as_f64().expect("elapsed_us") / 1000.0
}

#[test]
fn start_of_a_notify_unit_waits_for_ready_and_stop_ends_it() {
    let node = node_with_probe("dbus-notify");
    let unit = "probe-notify.service";
    node.install_unit(unit, NOTIFY_UNIT).expect("install unit");

    let before = state(&node, unit);
    assert_eq!(before["load_state"], "loaded");
    assert_eq!(before["active_state"], "inactive");
    assert_eq!(before["sub_state"], "dead");
    assert_eq!(before["active_enter"], Value::Null, "never active yet");
    assert_eq!(before["main_pid"], 0);

    let start = probe_ok(&node, &["start", unit]);
    assert_eq!(start["result"], "done");
    // The job ends with READY=1, which comes a second after the process started.
    assert!(
        millis(&start) >= 900.0,
        "start returned before the unit was ready: {start}"
    );
    eprintln!("start (until READY=1) took {:.1} ms", millis(&start));

    let running = probe_ok(&node, &["state", unit]);
    let after = &running["state"];
    assert_eq!(after["active_state"], "active", "{running}");
    assert_eq!(after["sub_state"], "running", "{running}");
    assert_eq!(after["result"], "success");
    assert_eq!(after["n_restarts"], 0);
    let entered: i128 = after["active_enter_unix_us"]
        .as_str()
        .expect("ActiveEnterTimestamp set")
        .parse()
        .expect("a number");
    let now_us = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    let age_ms = (now_us - entered) / 1000;
    assert!(
        (0..60_000).contains(&age_ms),
        "ActiveEnterTimestamp is {age_ms} ms old: {after}"
    );
    let main_pid = after["main_pid"].as_u64().expect("MainPID");
    assert!(main_pid > 0, "{after}");
    assert_eq!(
        node.unit_property(unit, "MainPID").expect("MainPID"),
        main_pid.to_string(),
        "systemctl agrees"
    );
    // The typed proxies read the same object.
    let typed = &running["typed"];
    assert_eq!(typed["id"], unit);
    assert_eq!(typed["active_state"], "active");
    assert_eq!(typed["main_pid"], main_pid);

    let stop = probe_ok(&node, &["stop", unit]);
    assert_eq!(stop["result"], "done");
    let stopped = state(&node, unit);
    assert_eq!(stopped["active_state"], "inactive");
    assert_eq!(stopped["sub_state"], "dead");
    assert_eq!(stopped["result"], "success", "SIGTERM on stop is clean");
    assert_eq!(stopped["main_pid"], 0);
    eprintln!(
        "ActiveEnterTimestamp after stop: {}",
        stopped["active_enter"]
    );
    eprintln!(
        "systemctl: {:?}",
        node.unit_properties(unit, &["ActiveEnterTimestamp", "InactiveEnterTimestamp"])
    );

    // Stopping what is already stopped is a job that succeeds at once.
    let again = probe_ok(&node, &["stop", unit]);
    eprintln!("stop of an inactive unit: {}", again["result"]);
    assert_eq!(again["result"], "done");
}

#[test]
fn restart_replaces_the_main_process_and_counts_no_automatic_restart() {
    let node = node_with_probe("dbus-restart");
    let unit = "probe-notify.service";
    node.install_unit(unit, NOTIFY_UNIT).expect("install unit");

    // Restart of an inactive unit starts it.
    let first = probe_ok(&node, &["restart", unit]);
    assert_eq!(first["result"], "done");
    let one = state(&node, unit);
    assert_eq!(one["active_state"], "active");

    let second = probe_ok(&node, &["restart", unit]);
    assert_eq!(second["result"], "done");
    assert!(
        millis(&second) >= 900.0,
        "restart waits for the new READY=1: {second}"
    );
    let two = state(&node, unit);
    assert_eq!(two["active_state"], "active");
    assert_ne!(one["main_pid"], two["main_pid"], "a new main process");
    assert_ne!(two["main_pid"], 0);
    assert_eq!(
        two["n_restarts"], 0,
        "NRestarts counts only systemd's automatic restarts"
    );
    assert_ne!(one["active_enter"], two["active_enter"]);
}

#[test]
fn a_failing_exec_start_fails_the_start_job_with_exit_code_and_its_journal_is_read() {
    let node = node_with_probe("dbus-failing");
    let unit = "probe-failing.service";
    node.install_unit(unit, FAILING_UNIT).expect("install unit");

    let start = probe(&node, &["start", unit]);
    assert_eq!(start["ok"], true, "a failed job is a result, not an error");
    assert_eq!(start["result"], "failed");

    let failed = state(&node, unit);
    assert_eq!(failed["active_state"], "failed");
    assert_eq!(failed["sub_state"], "failed");
    assert_eq!(failed["result"], "exit-code");
    assert_eq!(failed["exec_main_status"], 1);
    assert_eq!(failed["main_pid"], 0);
    assert_eq!(failed["active_enter"], Value::Null);

    // journal_tail: the unit's own output, without prefixes, oldest first.
    let journal = probe_ok(&node, &["journal", unit, "50"]);
    let lines: Vec<&str> = journal["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let said = lines.iter().position(|l| *l == "about to fail");
    let stderr = lines.iter().position(|l| *l == "exiting with 1");
    assert!(
        said.is_some() && stderr.is_some() && said < stderr,
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("exit-code")),
        "systemd's own lines about the unit are included: {lines:#?}"
    );
    let two = probe_ok(&node, &["journal", unit, "2"]);
    assert_eq!(two["lines"].as_array().map(Vec::len), Some(2), "{two}");
    let none = probe_ok(&node, &["journal", "never-ran.service", "10"]);
    assert_eq!(
        none["lines"],
        serde_json::json!([]),
        "no `-- No entries --`"
    );
}

#[test]
fn a_notify_unit_that_never_gets_ready_fails_its_job_with_result_timeout() {
    let node = node_with_probe("dbus-never-ready");
    let unit = "probe-never-ready.service";
    node.install_unit(unit, NEVER_READY_UNIT)
        .expect("install unit");

    // TimeoutStartSec= fails the *unit* (Result=timeout); the job that waited for it ends
    // `failed`. The job result `timeout` belongs to JobTimeoutSec= (next test).
    let start = probe_ok(&node, &["start", unit]);
    assert_eq!(start["result"], "failed");
    assert!(
        (1900.0..10_000.0).contains(&millis(&start)),
        "TimeoutStartSec=2s: {start}"
    );
    let failed = state(&node, unit);
    assert_eq!(failed["active_state"], "failed");
    assert_eq!(failed["result"], "timeout");
}

#[test]
fn a_job_timeout_ends_the_job_with_timeout() {
    let node = node_with_probe("dbus-job-timeout");
    let unit = "probe-job-timeout.service";
    let contents = NEVER_READY_UNIT
        .replace("[Unit]\n", "[Unit]\nJobTimeoutSec=2s\n")
        .replace("TimeoutStartSec=2s", "TimeoutStartSec=60s");
    node.install_unit(unit, &contents).expect("install unit");

    let start = probe_ok(&node, &["start", unit]);
    assert_eq!(start["result"], "timeout");
    assert!(
        (1900.0..10_000.0).contains(&millis(&start)),
        "JobTimeoutSec=2s: {start}"
    );
    // Only the job is gone: the unit goes on starting, under its own TimeoutStartSec=.
    let after = state(&node, unit);
    assert_eq!(after["active_state"], "activating", "{after}");
    assert_ne!(after["main_pid"], 0, "{after}");
}

#[test]
fn the_callers_deadline_ends_the_wait_and_leaves_the_job_to_systemd() {
    let node = node_with_probe("dbus-deadline");
    let unit = "probe-slow.service";
    node.install_unit(
        unit,
        &NEVER_READY_UNIT.replace("TimeoutStartSec=2s", "TimeoutStartSec=60s"),
    )
    .expect("install unit");

    let start = probe(&node, &["--job-timeout", "1", "start", unit]);
    assert_eq!(start["ok"], false, "{start}");
    assert_eq!(start["kind"], "job_timeout");
    assert_eq!(
        start["error"], "probe-slow.service: start job did not finish within 1 s",
        "{start}"
    );
    assert!((900.0..5000.0).contains(&millis(&start)), "{start}");
    let still = state(&node, unit);
    assert_eq!(
        still["active_state"], "activating",
        "the job goes on: {still}"
    );
    assert!(
        node.systemctl(&["list-jobs", "--no-legend", "--plain"])
            .expect("list-jobs")
            .contains(unit),
        "systemd keeps the job after the caller gave up"
    );
}

#[test]
fn a_missing_unit_reads_not_found_and_calls_on_it_name_the_unit_and_the_dbus_error() {
    let node = node_with_probe("dbus-missing");
    let unit = "no-such-unit.service";

    let missing = state(&node, unit);
    assert_eq!(missing["load_state"], "not-found");
    assert_eq!(missing["active_state"], "inactive");
    assert_eq!(missing["sub_state"], "dead");
    assert_eq!(missing["active_enter"], Value::Null);
    assert_eq!(missing["main_pid"], 0);

    for action in ["start", "restart"] {
        let call = probe(&node, &[action, unit]);
        assert_eq!(call["ok"], false, "{call}");
        assert_eq!(call["kind"], "call");
        let error = call["error"].as_str().expect("error text");
        assert!(
            error.starts_with(&format!("{unit}: {action} failed: ")),
            "{error}"
        );
        assert!(
            error.contains(
                "org.freedesktop.systemd1.NoSuchUnit: Unit no-such-unit.service not found."
            ),
            "{error}"
        );
    }
    let stop = probe(&node, &["stop", unit]);
    eprintln!("stop of a missing unit: {stop}");

    let bad = probe(&node, &["state", "not a unit name"]);
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not a unit name: read state failed: org.freedesktop.")),
        "{bad}"
    );

    let detect = probe_ok(&node, &["detect"]);
    assert_eq!(detect["unit"], Value::Null, "no RKE2 unit here");

    let version = probe_ok(&node, &["version"]);
    let systemctl = node
        .exec_ok(&["systemctl", "--version"])
        .expect("systemctl --version");
    let number = version["version"].as_str().expect("a version");
    assert!(
        systemctl.contains(number.split(['.', '-']).next().unwrap_or("?")),
        "{number} vs {systemctl}"
    );
}

#[test]
fn daemon_reload_picks_up_a_changed_unit_file_and_jobs_are_still_seen_after_it() {
    let node = node_with_probe("dbus-reload");
    let unit = "probe-reload.service";
    let version = |status: u8| {
        format!(
            "[Unit]\nDescription=dbus probe: reload\n\n[Service]\nType=oneshot\n\
             ExecStart=/bin/sh -c 'exit {status}'\n"
        )
    };
    node.install_unit(unit, &version(3)).expect("install unit");
    let first = probe_ok(&node, &["start", unit]);
    assert_eq!(first["result"], "failed");
    assert_eq!(state(&node, unit)["exec_main_status"], 3);

    // A new file without a reload: systemd still runs the old definition.
    node.write_file(format!("/etc/systemd/system/{unit}"), version(4))
        .expect("rewrite unit");
    let stale = probe_ok(&node, &["start", unit]);
    assert_eq!(stale["result"], "failed");
    assert_eq!(
        state(&node, unit)["exec_main_status"],
        3,
        "not reloaded yet"
    );

    // Reload and start over one connection: the Subscribe and the JobRemoved match survive it.
    let steps = probe_ok(
        &node,
        &[
            "steps",
            "reload",
            &format!("start:{unit}"),
            &format!("state:{unit}"),
        ],
    );
    let steps = steps["steps"].as_array().expect("steps");
    eprintln!("daemon-reload took {:.1} ms", millis(&steps[0]));
    assert_eq!(steps[1]["result"], "failed");
    assert_eq!(
        steps[2]["state"]["exec_main_status"], 4,
        "the new file runs"
    );
    assert_eq!(
        node.unit_property(unit, "NeedDaemonReload")
            .expect("property"),
        "no"
    );
}

#[test]
fn detect_finds_the_installed_rke2_unit_preferring_an_active_one() {
    let node = node_with_probe("dbus-detect");
    let stub = |what: &str| {
        format!(
            "[Unit]\nDescription=stand-in for {what}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
        )
    };
    assert_eq!(probe_ok(&node, &["detect"])["unit"], Value::Null);

    node.install_unit("rke2-agent.service", &stub("rke2 agent"))
        .expect("install agent unit");
    assert_eq!(
        probe_ok(&node, &["detect"])["unit"],
        "rke2-agent.service",
        "loaded, although inactive"
    );

    // Both installed: the server wins while neither runs, the running one otherwise.
    node.install_unit("rke2-server.service", &stub("rke2 server"))
        .expect("install server unit");
    assert_eq!(probe_ok(&node, &["detect"])["unit"], "rke2-server.service");
    assert_eq!(
        probe_ok(&node, &["start", "rke2-agent.service"])["result"],
        "done"
    );
    assert_eq!(probe_ok(&node, &["detect"])["unit"], "rke2-agent.service");
}

#[test]
fn the_client_reaches_a_node_bus_from_the_host_by_address() {
    // `Systemd::connect_to`: the node's bus socket, seen from the host, with EXTERNAL auth as
    // root.
    let node = node_with_probe("dbus-address");
    let unit = "probe-notify.service";
    node.install_unit(unit, NOTIFY_UNIT).expect("install unit");
    let socket = node
        .host_path("/run/dbus/system_bus_socket")
        .expect("bus socket on the host");
    assert!(Path::new(&socket).exists());
    let address = format!("unix:path={}", socket.display());
    let run = |address: &str, args: &[&str]| {
        let out = Command::new(built_binary(PROBE_BINARY))
            .args(["--address", address])
            .args(args)
            .output()
            .expect("run probe on the host");
        parse_probe_output(
            &format!("(host) probe --address {address} {}", args.join(" ")),
            out.status.success(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(run(&address, &["start", unit])["result"], "done");
    let state = run(&address, &["state", unit]);
    assert_eq!(state["state"]["active_state"], "active");
    assert_eq!(
        node.unit_property(unit, "ActiveState")
            .expect("ActiveState"),
        "active",
        "the start reached the node's systemd"
    );

    let nowhere = run("unix:path=/nonexistent/bus", &["state", unit]);
    assert_eq!(nowhere["kind"], "connect", "{nowhere}");
}

/// Not a pass/fail check: prints how long one `state()` read takes (run with --nocapture).
#[test]
fn state_read_latency_micro_benchmark() {
    let node = node_with_probe("dbus-bench");
    let unit = "probe-notify.service";
    node.install_unit(unit, NOTIFY_UNIT).expect("install unit");
    probe_ok(&node, &["start", unit]);
    for mode in [&[][..], &["--typed"][..]] {
        let mut args = vec!["bench-state", unit, "200"];
        args.extend_from_slice(mode);
        let bench = probe_ok(&node, &args);
        eprintln!(
            "state() read latency [{}]: {} reads, mean {} µs, p50 {} µs, p90 {} µs, p99 {} µs, \
             min {} µs, max {} µs (connect + Version {} µs)",
            bench["mode"].as_str().unwrap_or("?"),
            bench["reads"],
            bench["mean_us"],
            bench["p50_us"],
            bench["p90_us"],
            bench["p99_us"],
            bench["min_us"],
            bench["max_us"],
            bench["connect_us"],
        );
        assert_eq!(bench["reads"], 200);
    }
}
