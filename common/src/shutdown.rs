//! Graceful shutdown, one type for both daemons.
//!
//! systemd stops a unit with SIGTERM and, after `TimeoutStopSec`, SIGKILL; an operator at a
//! terminal presses Ctrl-C, and presses it again when the first did not seem to work. So:
//! the first SIGTERM or SIGINT asks every loop to *drain* (stop taking new work, finish or
//! hand back what is in hand: an agent's journal entry written, a hub's streams closed); a
//! second one *forces* (stop waiting for the drain and exit now). Each loop holds a
//! [`Listener`] and `select!`s on [`Listener::draining`]; the code that waits for the drain
//! uses [`Listener::drain_within`] so a second signal or a deadline cuts it short.
//!
//! The phase only moves forward (`Running` → `Draining` → `Forced`), so a late listener
//! never misses a signal that came before it subscribed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

/// Where the process is in its shutdown. Ordered: each phase includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving normally.
    Running,
    /// Asked to stop: finish what is in hand, take nothing new.
    Draining,
    /// Asked again (or the owner gave up waiting): stop now.
    Forced,
}

impl Phase {
    /// The phase one more signal leads to.
    #[must_use]
    pub fn escalated(self) -> Self {
        match self {
            Self::Running => Self::Draining,
            Self::Draining | Self::Forced => Self::Forced,
        }
    }
}

/// The owner's side: moves the phase forward. Cheap to clone; every clone drives the same
/// phase.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// The one phase every [`Listener`] watches.
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A shutdown in phase [`Phase::Running`].
    #[must_use]
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(Phase::Running);
        Self {
            phase: Arc::new(tx),
        }
    }

    /// A listener for the loops that must stop.
    #[must_use]
    pub fn listener(&self) -> Listener {
        Listener {
            phase: self.phase.subscribe(),
        }
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Asks for a drain (no effect once draining or forced).
    pub fn drain(&self) {
        self.advance_to(Phase::Draining);
    }

    /// Forces the stop.
    pub fn force(&self) {
        self.advance_to(Phase::Forced);
    }

    /// One more stop request (a signal): running → draining → forced. Returns the new phase.
    pub fn escalate(&self) -> Phase {
        let mut next = Phase::Running;
        self.phase.send_modify(|phase| {
            *phase = phase.escalated();
            next = *phase;
        });
        next
    }

    fn advance_to(&self, target: Phase) {
        self.phase.send_if_modified(|phase| {
            if *phase < target {
                *phase = target;
                true
            } else {
                false
            }
        });
    }

    /// Installs SIGTERM and SIGINT handlers and escalates on each signal, logging which one
    /// came and what it means. `process` names the daemon in those lines.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed (then only a kill stops the process,
    /// which the caller should refuse to run with).
    pub fn escalate_on_signals(&self, process: &'static str) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = self.clone();
        tokio::spawn(
            async move {
                loop {
                    let name = tokio::select! {
                        Some(()) = term.recv() => "SIGTERM",
                        Some(()) = int.recv() => "SIGINT",
                        else => return,
                    };
                    match shutdown.escalate() {
                        Phase::Draining => tracing::info!(
                            signal = name,
                            "{process}: shutting down (a second signal forces it)"
                        ),
                        Phase::Forced | Phase::Running => {
                            tracing::warn!(
                                signal = name,
                                "{process}: second signal, forcing shutdown"
                            );
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("signals", process)),
        );
        Ok(())
    }
}

/// What a drain bounded by [`Listener::drain_within`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained<T> {
    /// The work finished.
    Done(T),
    /// A second signal (or the owner) forced the stop first.
    Forced,
    /// The deadline passed first.
    TimedOut,
}

/// A loop's side: resolves when it should stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The owner's phase; a dropped owner counts as forced.
    phase: watch::Receiver<Phase>,
}

impl Listener {
    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether a stop was asked for.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Resolves once the phase is at least `Draining` (at once if it already is).
    pub async fn draining(&mut self) {
        self.reached(Phase::Draining).await;
    }

    /// Resolves once the phase is `Forced`.
    pub async fn forced(&mut self) {
        self.reached(Phase::Forced).await;
    }

    async fn reached(&mut self, target: Phase) {
        // An error means every owner is gone: nobody can ask any more, so stop.
        let _ = self.phase.wait_for(|phase| *phase >= target).await;
    }

    /// Runs `work` (the drain) until it finishes, the stop is forced, or `deadline` passes.
    pub async fn drain_within<T>(
        &mut self,
        deadline: Duration,
        work: impl Future<Output = T>,
    ) -> Drained<T> {
        let mut forced = self.clone();
        // Biased: work that is already done counts as done, whatever else is ready.
        tokio::select! {
            biased;
            out = work => Drained::Done(out),
            () = forced.forced() => Drained::Forced,
            () = tokio::time::sleep(deadline) => Drained::TimedOut,
        }
    }

    /// The drain as a plain future, for APIs that take one (`serve_with_shutdown`).
    pub fn draining_owned(self) -> impl Future<Output = ()> + Send + 'static {
        let mut listener = self;
        async move { listener.draining().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_moves_the_phase_one_step_and_never_back() {
        let shutdown = Shutdown::new();
        assert_eq!(shutdown.phase(), Phase::Running);
        assert_eq!(shutdown.escalate(), Phase::Draining);
        assert_eq!(shutdown.escalate(), Phase::Forced);
        assert_eq!(shutdown.escalate(), Phase::Forced);
        shutdown.drain();
        assert_eq!(
            shutdown.phase(),
            Phase::Forced,
            "drain after force keeps it forced"
        );
    }

    #[tokio::test]
    async fn a_listener_made_after_the_signal_still_sees_it() {
        let shutdown = Shutdown::new();
        shutdown.drain();
        let mut late = shutdown.listener();
        assert!(late.is_draining());
        tokio::time::timeout(Duration::from_secs(5), late.draining())
            .await
            .expect("an already draining phase resolves at once");
    }

    #[tokio::test]
    async fn every_listener_wakes_on_the_first_signal() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut listener = shutdown.listener();
                tokio::spawn(async move { listener.draining().await })
            })
            .collect();
        shutdown.escalate();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("task ran");
        }
    }

    #[tokio::test]
    async fn a_second_signal_cuts_the_drain_short() {
        let shutdown = Shutdown::new();
        shutdown.escalate();
        let mut listener = shutdown.listener();
        let forcer = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            forcer.escalate();
        });
        let out = listener
            .drain_within(Duration::from_secs(30), std::future::pending::<()>())
            .await;
        assert_eq!(out, Drained::Forced);
    }

    #[tokio::test]
    async fn a_drain_that_finishes_returns_its_value_and_one_that_hangs_times_out() {
        let running = Shutdown::new();
        let mut listener = running.listener();
        let done = listener
            .drain_within(Duration::from_secs(30), async { 7 })
            .await;
        assert_eq!(done, Drained::Done(7));
        let shutdown = Shutdown::new();
        let mut listener = shutdown.listener();
        let hung = listener
            .drain_within(Duration::from_millis(20), std::future::pending::<()>())
            .await;
        assert_eq!(hung, Drained::TimedOut);
    }

    #[tokio::test]
    async fn a_dropped_owner_counts_as_a_forced_stop() {
        let shutdown = Shutdown::new();
        let mut listener = shutdown.listener();
        drop(shutdown);
        tokio::time::timeout(Duration::from_secs(5), listener.forced())
            .await
            .expect("resolves when the owner is gone");
    }
}
