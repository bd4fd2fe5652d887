//! Reconnect delays: exponential with full jitter (AWS' "full jitter"), so a hub restart does
//! not see every agent of a fleet reconnect in the same second.

use std::time::Duration;

/// The delay before reconnect attempt `attempt` (0 = first retry), for a random `unit` in
/// [0, 1): uniformly in [0, min(cap, base · 2^attempt)). Pure, so it can be tested.
#[must_use]
pub fn delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// A random number in [0, 1) from the system's CSPRNG (ring), good enough for jitter.
#[must_use]
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits → an f64 in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    let value = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn grows_exponentially_then_caps() {
        assert_eq!(
            delay(0, BASE, CAP, 0.999_999),
            Duration::from_secs(1).mul_f64(0.999_999)
        );
        assert_eq!(delay(3, BASE, CAP, 0.5), Duration::from_secs(4));
        assert_eq!(delay(10, BASE, CAP, 0.5), Duration::from_secs(30));
        assert_eq!(delay(u32::MAX, BASE, CAP, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spans_zero_to_the_ceiling() {
        assert_eq!(delay(5, BASE, CAP, 0.0), Duration::ZERO);
        assert!(delay(5, BASE, CAP, 0.99) < Duration::from_secs(32));
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
