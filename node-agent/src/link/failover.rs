//! Which hub replica the link dials next, and whether it waits first.
//!
//! Several hub replicas serve one fleet, one of them the leader. A follower answers the
//! agent's calls with `UNAVAILABLE` and names the leader in [`LEADER_METADATA`]. The link
//! starts at the first configured address; when a replica cannot serve it (no connection, a
//! TLS failure, `UNAVAILABLE`, a stream that broke or ended) it moves on at once: to the
//! leader the replica named when that is a configured address not yet tried in this round,
//! else to the next configured address. Only a round in which every address failed costs the
//! backoff ([`super::backoff`]), so a failover takes seconds, and two replicas pointing at
//! each other cannot make the agent spin. A definite refusal (a revoked certificate, a spent
//! token) is the leader's answer: the link stays on that replica and backs off, as with one
//! address.
//!
//! Pure: no clock, no randomness, no I/O, so every choice is unit-tested. With one address
//! every failure ends a round, which is exactly the link's behaviour before replicas.

use std::time::Duration;

use crate::config::HubAddress;

/// The ASCII metadata key in which a follower names the leader's `host:port` (absent or
/// empty while it knows no leader).
pub const LEADER_METADATA: &str = "x-rke2ops-leader";

/// A session that lasted this long was a working link: the next failure starts a fresh
/// round and the backoff starts over.
pub const STABLE_SESSION: Duration = Duration::from_secs(60);

/// What a session's end says about the replica it dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The replica could not serve the agent (unreachable, TLS failure, `UNAVAILABLE`, the
    /// stream broke or ended): try another one; `leader` is the replica's hint, as sent.
    MoveOn {
        /// The leader's `host:port` the replica named, if any.
        leader: Option<String>,
    },
    /// The replica answered and refused, or the agent failed on its own side: another
    /// replica would not do better, so retry this one after the backoff.
    Stay,
}

/// Whether a gRPC status from a replica means "try another one": `UNAVAILABLE` (a follower,
/// or tonic's code for a refused connection or a failed TLS handshake) and the codes tonic
/// gives a transport that broke or timed out. Every other code is the replica's answer.
#[must_use]
pub fn moves_on(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// The leader hint a status carries (trimmed; `None` when absent, empty or not ASCII).
#[must_use]
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|hint| !hint.is_empty())
        .map(str::to_owned)
}

/// The configured address `hint` names, however it is written; `None` for an unparsable hint
/// or an address that is not configured (the agent never dials an address it was not given).
#[must_use]
pub fn hinted(addresses: &[HubAddress], hint: Option<&str>) -> Option<usize> {
    let hint = HubAddress::parse(hint?).ok()?;
    addresses.iter().position(|a| a.same_place(&hint))
}

/// The address to dial after `current` failed: the leader `hint` when it is a configured
/// address not `tried` in this round, else the first untried address after `current` in
/// configuration order (round robin); `None` when every address was tried.
#[must_use]
pub fn next_address(
    addresses: &[HubAddress],
    current: usize,
    hint: Option<&str>,
    tried: &[bool],
) -> Option<usize> {
    let untried = |i: usize| !tried.get(i).copied().unwrap_or(false);
    if let Some(leader) = hinted(addresses, hint).filter(|&i| untried(i)) {
        return Some(leader);
    }
    let count = addresses.len();
    (1..=count)
        .map(|step| (current + step) % count)
        .find(|&i| untried(i))
}

/// What the link does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Dial this address now.
    Now(usize),
    /// Wait the backoff for reconnect `attempt` (see [`super::backoff::delay`]), then dial
    /// `then`.
    After {
        /// The backoff's attempt number (0: the first retry).
        attempt: u32,
        /// The address to dial after the wait.
        then: usize,
    },
}

/// The link's position among the replicas: the address in use, the addresses that failed in
/// this round, and how many rounds failed in a row (the backoff's attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Index of the address the next session dials.
    current: usize,
    /// Per address: failed since the round began.
    tried: Vec<bool>,
    /// Failed rounds (or refusals) since the last stable session.
    attempt: u32,
}

impl Rotation {
    /// A rotation over `count` addresses (at least one), starting at the first (preferred).
    #[must_use]
    pub fn new(count: usize) -> Self {
        Self {
            current: 0,
            tried: vec![false; count.max(1)],
            attempt: 0,
        }
    }

    /// The address the next session dials.
    #[must_use]
    pub fn current(&self) -> usize {
        self.current
    }

    /// The session on the current address ended with `outcome` after `lasted`: where to go
    /// and whether to wait first.
    pub fn after(&mut self, addresses: &[HubAddress], outcome: &Outcome, lasted: Duration) -> Next {
        if lasted > STABLE_SESSION {
            self.attempt = 0;
            self.tried.fill(false);
        }
        match outcome {
            Outcome::Stay => {
                self.tried.fill(false);
                self.wait_then(self.current)
            }
            Outcome::MoveOn { leader } => {
                if let Some(slot) = self.tried.get_mut(self.current) {
                    *slot = true;
                }
                if let Some(next) =
                    next_address(addresses, self.current, leader.as_deref(), &self.tried)
                {
                    self.current = next;
                    return Next::Now(next);
                }
                // Every address failed in this round: back off, then start the next round at
                // the leader when one was named, else where round robin goes.
                self.tried.fill(false);
                let then = hinted(addresses, leader.as_deref())
                    .unwrap_or((self.current + 1) % addresses.len().max(1));
                self.wait_then(then)
            }
        }
    }

    fn wait_then(&mut self, then: usize) -> Next {
        let attempt = self.attempt;
        self.attempt = attempt.saturating_add(1);
        self.current = then;
        Next::After { attempt, then }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    fn addresses(list: &[&str]) -> Vec<HubAddress> {
        list.iter()
            .map(|a| HubAddress::parse(a).expect("valid"))
            .collect()
    }

    fn move_on(leader: Option<&str>) -> Outcome {
        Outcome::MoveOn {
            leader: leader.map(str::to_owned),
        }
    }

    #[test]
    fn next_address_follows_a_configured_leader_hint() {
        let a = addresses(&["10.0.0.1:9811", "10.0.0.2:9811", "10.0.0.3:9811"]);
        let tried = [true, false, false];
        assert_eq!(next_address(&a, 0, Some("10.0.0.3:9811"), &tried), Some(2));
        // Written otherwise, still the same replica.
        let v6 = addresses(&["[fd00::1]:9811", "[fd00::2]:9811"]);
        assert_eq!(
            next_address(&v6, 0, Some("[fd00:0::2]:9811"), &[true, false]),
            Some(1)
        );
    }

    #[test]
    fn next_address_never_follows_a_hint_outside_the_configuration() {
        let a = addresses(&["10.0.0.1:9811", "10.0.0.2:9811", "10.0.0.3:9811"]);
        let tried = [true, false, false];
        assert_eq!(next_address(&a, 0, Some("10.9.9.9:9811"), &tried), Some(1));
        assert_eq!(next_address(&a, 0, Some("10.0.0.3:1"), &tried), Some(1));
        assert_eq!(next_address(&a, 0, Some("not an address"), &tried), Some(1));
    }

    #[test]
    fn next_address_goes_round_robin_and_skips_what_failed_this_round() {
        let a = addresses(&["a:1", "b:1", "c:1"]);
        assert_eq!(next_address(&a, 1, None, &[false, true, false]), Some(2));
        assert_eq!(next_address(&a, 2, None, &[false, false, true]), Some(0));
        assert_eq!(next_address(&a, 2, None, &[true, false, true]), Some(1));
        // A hint at an address that already failed in this round is not followed again.
        assert_eq!(
            next_address(&a, 1, Some("a:1"), &[true, true, false]),
            Some(2)
        );
        assert_eq!(next_address(&a, 2, Some("a:1"), &[true, true, true]), None);
    }

    #[test]
    fn one_address_backs_off_after_every_failure_as_before() {
        let a = addresses(&["hub:9811"]);
        let mut rotation = Rotation::new(1);
        for attempt in 0..4 {
            let outcome = if attempt % 2 == 0 {
                move_on(Some("hub:9811"))
            } else {
                Outcome::Stay
            };
            assert_eq!(
                rotation.after(&a, &outcome, QUICK),
                Next::After { attempt, then: 0 }
            );
        }
        // A session that lasted resets the backoff.
        assert_eq!(
            rotation.after(&a, &move_on(None), Duration::from_secs(3600)),
            Next::After {
                attempt: 0,
                then: 0
            }
        );
    }

    #[test]
    fn a_dead_first_address_costs_no_backoff() {
        let a = addresses(&["10.0.0.1:9811", "10.0.0.2:9811"]);
        let mut rotation = Rotation::new(2);
        assert_eq!(rotation.current(), 0);
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(1));
        assert_eq!(rotation.current(), 1);
    }

    #[test]
    fn a_follower_s_hint_is_followed_at_once() {
        let a = addresses(&["a:1", "b:1", "c:1"]);
        let mut rotation = Rotation::new(3);
        assert_eq!(
            rotation.after(&a, &move_on(Some("c:1")), QUICK),
            Next::Now(2)
        );
    }

    #[test]
    fn a_whole_failed_round_backs_off_then_starts_at_the_named_leader() {
        let a = addresses(&["a:1", "b:1", "c:1"]);
        let mut rotation = Rotation::new(3);
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(1));
        assert_eq!(
            rotation.after(&a, &move_on(Some("a:1")), QUICK),
            Next::Now(2)
        );
        assert_eq!(
            rotation.after(&a, &move_on(Some("a:1")), QUICK),
            Next::After {
                attempt: 0,
                then: 0
            }
        );
        // The next round fails too, without a hint: round robin, a longer backoff.
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(1));
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(2));
        assert_eq!(
            rotation.after(&a, &move_on(None), QUICK),
            Next::After {
                attempt: 1,
                then: 0
            }
        );
    }

    #[test]
    fn replicas_naming_each_other_cannot_make_the_link_spin() {
        let a = addresses(&["a:1", "b:1"]);
        let mut rotation = Rotation::new(2);
        assert_eq!(
            rotation.after(&a, &move_on(Some("b:1")), QUICK),
            Next::Now(1)
        );
        assert_eq!(
            rotation.after(&a, &move_on(Some("a:1")), QUICK),
            Next::After {
                attempt: 0,
                then: 0
            }
        );
        assert_eq!(
            rotation.after(&a, &move_on(Some("b:1")), QUICK),
            Next::Now(1)
        );
        assert_eq!(
            rotation.after(&a, &move_on(Some("a:1")), QUICK),
            Next::After {
                attempt: 1,
                then: 0
            }
        );
    }

    #[test]
    fn a_refusal_stays_on_the_replica_and_backs_off() {
        let a = addresses(&["a:1", "b:1"]);
        let mut rotation = Rotation::new(2);
        assert_eq!(
            rotation.after(&a, &move_on(Some("b:1")), QUICK),
            Next::Now(1)
        );
        assert_eq!(
            rotation.after(&a, &Outcome::Stay, QUICK),
            Next::After {
                attempt: 0,
                then: 1
            }
        );
        // The refusal started a fresh round: a failure now moves on without waiting.
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(0));
    }

    #[test]
    fn a_stable_session_starts_a_fresh_round() {
        let a = addresses(&["a:1", "b:1"]);
        let mut rotation = Rotation::new(2);
        assert_eq!(rotation.after(&a, &move_on(None), QUICK), Next::Now(1));
        // Linked to b for an hour; b goes away: a was tried long ago, so try it now.
        assert_eq!(
            rotation.after(&a, &move_on(None), Duration::from_secs(3600)),
            Next::Now(0)
        );
        // A link that drops at once counts as a failure of this round.
        assert_eq!(
            rotation.after(&a, &move_on(None), QUICK),
            Next::After {
                attempt: 0,
                then: 1
            }
        );
    }

    #[test]
    fn unavailable_and_broken_transports_move_on_refusals_do_not() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
            Code::DeadlineExceeded,
        ] {
            assert!(moves_on(code), "{code:?}");
        }
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::NotFound,
            Code::AlreadyExists,
            Code::Unimplemented,
        ] {
            assert!(!moves_on(code), "{code:?}");
        }
    }

    #[test]
    fn the_leader_hint_is_read_from_the_metadata() {
        let mut status = tonic::Status::unavailable(
            "hub replica hub-b is a follower; the leader is at 10.0.0.2:9811",
        );
        assert_eq!(leader_hint(&status), None);
        status
            .metadata_mut()
            .insert(LEADER_METADATA, " 10.0.0.2:9811 ".parse().expect("ascii"));
        assert_eq!(leader_hint(&status).as_deref(), Some("10.0.0.2:9811"));
        status
            .metadata_mut()
            .insert(LEADER_METADATA, "".parse().expect("ascii"));
        assert_eq!(leader_hint(&status), None);
    }
}
