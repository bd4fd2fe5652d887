//! Application probes on a plan (`--probe`, `probes` in hub.toml): the hub checks the users'
//! applications for the whole plan, from before the first node (a baseline) to after the
//! last, and no node starts while one is failing. What is probed ([`spec`]), one check
//! ([`check`]), a probe's record ([`tally`]) and the gate ([`gate`], pure) live here;
//! [`crate::engine`] runs the checks and stores the records.

pub mod check;
pub mod spec;
pub mod tally;

use time::OffsetDateTime;

pub use spec::{ProbeSpec, Target};
pub use tally::Tally;

/// What the probes say about starting another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeGate {
    /// Every probe passes.
    Open,
    /// Wait: no baseline yet, or a probe failing; why.
    Wait(String),
    /// A probe has been down longer than the plan allows; why (name, target, error).
    Halt(String),
}

/// The gate over a plan's probes and their records (by probe name). A probe without a
/// sample holds the plan (the baseline comes first); a failing one holds it; one down for
/// `halt_after_secs` or more halts it, counted from the later of the outage's start and the
/// plan's last resume (`resumed_at`): an operator's `resume` gives a probe the whole time
/// again rather than halting at once on an outage that may be ending. Pure.
#[must_use]
pub fn gate(
    specs: &[ProbeSpec],
    tallies: &[(String, Tally)],
    halt_after_secs: u64,
    resumed_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> ProbeGate {
    let mut waits = Vec::new();
    for spec in specs {
        let tally = tallies
            .iter()
            .find(|(n, _)| *n == spec.name)
            .map(|(_, t)| t);
        let Some(tally) = tally.filter(|t| t.samples > 0) else {
            waits.push(format!(
                "waiting for probe {}'s first result (the baseline)",
                spec.name
            ));
            continue;
        };
        if tally.consecutive_failures == 0 {
            continue;
        }
        let target = spec.target.describe();
        if let Some(since) = tally.down_since.filter(|_| tally.down) {
            let down_for = (now - since).whole_seconds().max(0);
            let clock = resumed_at.filter(|r| *r > since);
            let counted = clock.map_or(down_for, |r| (now - r).whole_seconds().max(0));
            if u64::try_from(counted).unwrap_or(0) >= halt_after_secs {
                return ProbeGate::Halt(format!(
                    "probe {} ({target}) down for {down_for} s: {}",
                    spec.name, tally.last_error
                ));
            }
            let until = if clock.is_some() {
                format!("the plan halts {halt_after_secs} s after the resume")
            } else {
                format!("the plan halts after {halt_after_secs} s")
            };
            waits.push(format!(
                "probe {} ({target}) down for {down_for} s: {} ({until})",
                spec.name, tally.last_error
            ));
        } else {
            waits.push(format!(
                "probe {} ({target}) failing ({} of {} failures): {}",
                spec.name, tally.consecutive_failures, spec.threshold, tally.last_error
            ));
        }
    }
    if waits.is_empty() {
        ProbeGate::Open
    } else {
        ProbeGate::Wait(waits.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000 + s).expect("time")
    }

    #[test]
    fn baseline_first_then_failing_holds_and_down_too_long_halts() {
        let specs = vec![spec::parse("tcp://app:80,name=app,threshold=2").expect("spec")];
        assert!(
            matches!(gate(&specs, &[], 60, None, t(0)), ProbeGate::Wait(w) if w.contains("baseline"))
        );
        let mut tally = Tally::default();
        tally.record(Ok(()), t(0), &[], 2);
        let at = |tally: &Tally, now| gate(&specs, &[("app".into(), tally.clone())], 60, None, now);
        assert_eq!(at(&tally, t(1)), ProbeGate::Open);
        tally.record(Err("connect: refused".into()), t(2), &[], 2);
        assert!(matches!(at(&tally, t(2)), ProbeGate::Wait(w) if w.contains("1 of 2 failures")));
        tally.record(Err("connect: refused".into()), t(4), &[], 2);
        assert!(matches!(at(&tally, t(30)), ProbeGate::Wait(w) if w.contains("down for 26 s")));
        match at(&tally, t(64)) {
            ProbeGate::Halt(why) => {
                assert!(
                    why.contains("probe app (tcp://app:80) down for 60 s: connect: refused"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        tally.record(Ok(()), t(66), &[], 2);
        assert_eq!(at(&tally, t(66)), ProbeGate::Open);
    }

    #[test]
    fn a_resume_restarts_the_halt_clock_of_a_probe_still_down() {
        let specs = vec![spec::parse("tcp://app:80,name=app,threshold=1").expect("spec")];
        let mut tally = Tally::default();
        tally.record(Ok(()), t(0), &[], 1);
        tally.record(Err("connect: refused".into()), t(10), &[], 1);
        let at = |resumed, now| gate(&specs, &[("app".into(), tally.clone())], 30, resumed, now);
        assert!(matches!(at(None, t(45)), ProbeGate::Halt(_)));
        // Resumed at 50: held, not halted, until 30 s after the resume; the outage's own
        // length is still what the message says.
        match at(Some(t(50)), t(60)) {
            ProbeGate::Wait(why) => {
                assert!(why.contains("down for 50 s"), "{why}");
                assert!(why.contains("30 s after the resume"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(at(Some(t(50)), t(80)), ProbeGate::Halt(w) if w.contains("down for 70 s"))
        );
        // A resume before the outage began changes nothing.
        assert!(matches!(at(Some(t(5)), t(45)), ProbeGate::Halt(_)));
    }
}
