//! RKE2's certificate status words and their rules, as pure functions of the validity window
//! and "now". The model's types use these; this module uses nothing of the model.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// RKE2's status words (`rke2 certificate check`), worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CertStatus {
    /// Valid and outside the warning window.
    #[serde(rename = "OK")]
    Ok,
    /// Valid, but inside the warning window (RKE2 renews it on the next start).
    #[serde(rename = "WARNING")]
    Warning,
    /// `now` is before NotBefore.
    #[serde(rename = "NOT YET VALID")]
    NotYetValid,
    /// `now` is after NotAfter.
    #[serde(rename = "EXPIRED")]
    Expired,
}

impl CertStatus {
    /// The word RKE2 prints.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::NotYetValid => "NOT YET VALID",
            Self::Expired => "EXPIRED",
        }
    }
}

impl fmt::Display for CertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RKE2's `CertificateRenewDays` since the May 2025 releases: a leaf this close to expiry is
/// reissued on the next start, and `rke2 certificate check` calls it WARNING.
pub const DEFAULT_WARN_DAYS: u32 = 120;

/// RKE2's status word for a certificate valid from `not_before` to `not_after`, seen at `now`.
///
/// The order matters and follows k3s' `GetCertStatus`, which RKE2 uses: not yet valid first,
/// then expired (`now > not_after`: the very instant of NotAfter still counts as valid), then
/// the warning window (`not_after < now + warn`), else OK.
#[must_use]
pub fn cert_status(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    warn: Duration,
) -> CertStatus {
    if now < not_before {
        CertStatus::NotYetValid
    } else if now > not_after {
        CertStatus::Expired
    } else if not_after - now < warn {
        CertStatus::Warning
    } else {
        CertStatus::Ok
    }
}

/// The warning window of `days` days.
#[must_use]
pub fn warn_window(days: u32) -> Duration {
    Duration::days(i64::from(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

    fn status(nb_days: i64, na_days: i64) -> CertStatus {
        cert_status(
            NOW + Duration::days(nb_days),
            NOW + Duration::days(na_days),
            NOW,
            warn_window(DEFAULT_WARN_DAYS),
        )
    }

    #[test]
    fn fresh_leaf_is_ok() {
        assert_eq!(status(0, 365), CertStatus::Ok);
    }

    #[test]
    fn leaf_inside_120_days_warns() {
        assert_eq!(status(-300, 65), CertStatus::Warning);
        assert_eq!(status(-300, 119), CertStatus::Warning);
    }

    #[test]
    fn warning_boundary_is_exclusive_at_exactly_120_days() {
        assert_eq!(status(-245, 120), CertStatus::Ok);
        let just_inside = cert_status(
            NOW - Duration::days(245),
            NOW + Duration::days(120) - Duration::seconds(1),
            NOW,
            warn_window(120),
        );
        assert_eq!(just_inside, CertStatus::Warning);
    }

    #[test]
    fn past_not_after_is_expired() {
        assert_eq!(status(-400, -1), CertStatus::Expired);
    }

    #[test]
    fn not_after_instant_itself_is_still_valid_but_warning() {
        let s = cert_status(NOW - Duration::days(365), NOW, NOW, warn_window(120));
        assert_eq!(s, CertStatus::Warning);
    }

    #[test]
    fn not_yet_valid_wins_over_expired_like_rke2() {
        // A nonsense window (not_before in the future, not_after in the past).
        assert_eq!(status(1, -2), CertStatus::NotYetValid);
    }

    #[test]
    fn future_not_before_is_not_yet_valid() {
        assert_eq!(status(1, 366), CertStatus::NotYetValid);
    }

    #[test]
    fn custom_warn_window_applies() {
        let s = cert_status(NOW, NOW + Duration::days(20), NOW, warn_window(30));
        assert_eq!(s, CertStatus::Warning);
        let s = cert_status(NOW, NOW + Duration::days(20), NOW, warn_window(10));
        assert_eq!(s, CertStatus::Ok);
    }
}
