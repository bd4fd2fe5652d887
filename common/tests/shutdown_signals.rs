//! The real signals: SIGTERM drains, a second signal forces. Its own process, so the
//! handlers it installs touch no other test.

use std::time::Duration;

use rke2ops_common::shutdown::{Phase, Shutdown};

fn send(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

#[tokio::test]
async fn first_signal_drains_and_second_forces() {
    let shutdown = Shutdown::new();
    shutdown
        .escalate_on_signals("test")
        .expect("install handlers");
    let mut listener = shutdown.listener();

    send("TERM");
    tokio::time::timeout(Duration::from_secs(10), listener.draining())
        .await
        .expect("SIGTERM drains");
    assert_eq!(listener.phase(), Phase::Draining);

    send("INT");
    tokio::time::timeout(Duration::from_secs(10), listener.forced())
        .await
        .expect("a second signal forces");
    assert_eq!(shutdown.phase(), Phase::Forced);
}
