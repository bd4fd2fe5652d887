//! Time an operation's step spends waiting on others: package managers, the `rke2` CLI,
//! systemd's jobs and RKE2 becoming ready. The runner subtracts it from each step's time,
//! so the journal (and the `upgrade_overhead` benchmark) can tell the agent's own work from
//! the waits it cannot shorten.
//!
//! The count is task-local: steps run inside the runner's task (awaited, never spawned), so
//! concurrent operations in one process (tests) do not mix their counts.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static WAITED: Cell<Duration>;
}

/// Runs `fut`, counting its time as waiting when inside [`measure`].
pub async fn waited<T>(fut: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    let _ = WAITED.try_with(|w| w.set(w.get() + start.elapsed()));
    out
}

/// Runs `fut` and returns its output with the time it spent in [`waited`] calls.
pub async fn measure<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    WAITED
        .scope(Cell::new(Duration::ZERO), async {
            let out = fut.await;
            (out, WAITED.with(Cell::get))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_waits_inside_a_measure_are_counted() {
        waited(tokio::time::sleep(Duration::from_millis(5))).await;
        let ((), waits) = measure(async {
            waited(tokio::time::sleep(Duration::from_millis(20))).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        })
        .await;
        assert!(waits >= Duration::from_millis(20), "{waits:?}");
        assert!(
            waits < Duration::from_millis(25) + Duration::from_millis(200),
            "{waits:?}"
        );
    }
}
