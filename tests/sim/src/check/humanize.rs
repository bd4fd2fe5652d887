//! go-humanize's `RelTime`, the function RKE2's table uses for RESIDUAL TIME.
//!
//! Port of the behaviour of `github.com/dustin/go-humanize` `times.go` (`CustomRelTime` with
//! `defaultMagnitudes`): pick the first magnitude whose bound is strictly greater than the
//! absolute difference, divide with truncation, and substitute the label. RKE2 passes empty
//! labels, so most results end in a space ("11 months "): that space is part of the table cell.

/// One nanosecond-based bound of the magnitude table, as in go-humanize.
struct Magnitude {
    /// Exclusive upper bound of the difference this entry covers, in nanoseconds.
    bound: i128,
    /// Go format: `%d` is the quantity, `%s` the label.
    format: &'static str,
    /// Divisor applied to the difference to obtain `%d`.
    div_by: i128,
}

const SECOND: i128 = 1_000_000_000;
const MINUTE: i128 = 60 * SECOND;
const HOUR: i128 = 60 * MINUTE;
const DAY: i128 = 24 * HOUR;
const WEEK: i128 = 7 * DAY;
const MONTH: i128 = 30 * DAY;
const YEAR: i128 = 12 * MONTH;
const LONG_TIME: i128 = 37 * YEAR;

const MAGNITUDES: &[Magnitude] = &[
    Magnitude {
        bound: SECOND,
        format: "now",
        div_by: SECOND,
    },
    Magnitude {
        bound: 2 * SECOND,
        format: "1 second %s",
        div_by: 1,
    },
    Magnitude {
        bound: MINUTE,
        format: "%d seconds %s",
        div_by: SECOND,
    },
    Magnitude {
        bound: 2 * MINUTE,
        format: "1 minute %s",
        div_by: 1,
    },
    Magnitude {
        bound: HOUR,
        format: "%d minutes %s",
        div_by: MINUTE,
    },
    Magnitude {
        bound: 2 * HOUR,
        format: "1 hour %s",
        div_by: 1,
    },
    Magnitude {
        bound: DAY,
        format: "%d hours %s",
        div_by: HOUR,
    },
    Magnitude {
        bound: 2 * DAY,
        format: "1 day %s",
        div_by: 1,
    },
    Magnitude {
        bound: WEEK,
        format: "%d days %s",
        div_by: DAY,
    },
    Magnitude {
        bound: 2 * WEEK,
        format: "1 week %s",
        div_by: 1,
    },
    Magnitude {
        bound: MONTH,
        format: "%d weeks %s",
        div_by: WEEK,
    },
    Magnitude {
        bound: 2 * MONTH,
        format: "1 month %s",
        div_by: 1,
    },
    Magnitude {
        bound: YEAR,
        format: "%d months %s",
        div_by: MONTH,
    },
    Magnitude {
        bound: 18 * MONTH,
        format: "1 year %s",
        div_by: 1,
    },
    Magnitude {
        bound: 2 * YEAR,
        format: "2 years %s",
        div_by: 1,
    },
    Magnitude {
        bound: LONG_TIME,
        format: "%d years %s",
        div_by: YEAR,
    },
    Magnitude {
        bound: i64::MAX as i128,
        format: "a long while %s",
        div_by: 1,
    },
];

/// `humanize.RelTime(a, b, a_label, b_label)` where `b - a = diff_nanos`.
///
/// As in Go, the label of the *earlier* time is used: `a_label` when `b` is not before `a`,
/// `b_label` otherwise, and the magnitude is always the absolute difference.
#[must_use]
pub fn rel_time(diff_nanos: i64, a_label: &str, b_label: &str) -> String {
    let (label, diff) = if diff_nanos < 0 {
        (b_label, -(diff_nanos as i128))
    } else {
        (a_label, diff_nanos as i128)
    };
    let magnitude = MAGNITUDES
        .iter()
        .find(|m| m.bound > diff)
        .unwrap_or(&MAGNITUDES[MAGNITUDES.len() - 1]);
    magnitude
        .format
        .replace("%d", &(diff / magnitude.div_by).to_string())
        .replace("%s", label)
}

/// What RKE2's table prints in RESIDUAL TIME for `NotAfter - now`.
#[must_use]
pub fn residual(residual_nanos: i64) -> String {
    rel_time(residual_nanos, "", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(d: i128) -> i64 {
        i64::try_from(d).expect("test durations fit in i64")
    }

    #[test]
    fn below_one_second_is_now_without_trailing_space() {
        assert_eq!(residual(0), "now");
        assert_eq!(residual(ns(SECOND - 1)), "now");
        assert_eq!(residual(-ns(SECOND - 1)), "now");
    }

    #[test]
    fn small_units_keep_the_trailing_space_of_the_empty_label() {
        assert_eq!(residual(ns(SECOND)), "1 second ");
        assert_eq!(residual(ns(2 * SECOND)), "2 seconds ");
        assert_eq!(residual(ns(MINUTE - 1)), "59 seconds ");
        assert_eq!(residual(ns(MINUTE)), "1 minute ");
        assert_eq!(residual(ns(2 * MINUTE)), "2 minutes ");
        assert_eq!(residual(ns(HOUR)), "1 hour ");
        assert_eq!(residual(ns(2 * HOUR)), "2 hours ");
        assert_eq!(residual(ns(DAY - 1)), "23 hours ");
    }

    #[test]
    fn day_week_month_year_boundaries() {
        assert_eq!(residual(ns(DAY)), "1 day ");
        assert_eq!(residual(ns(2 * DAY - 1)), "1 day ");
        assert_eq!(residual(ns(2 * DAY)), "2 days ");
        assert_eq!(residual(ns(3 * DAY)), "3 days ");
        assert_eq!(residual(ns(WEEK - 1)), "6 days ");
        assert_eq!(residual(ns(WEEK)), "1 week ");
        assert_eq!(residual(ns(2 * WEEK)), "2 weeks ");
        assert_eq!(residual(ns(MONTH - 1)), "4 weeks ");
        assert_eq!(residual(ns(MONTH)), "1 month ");
        assert_eq!(residual(ns(2 * MONTH)), "2 months ");
        assert_eq!(residual(ns(YEAR - 1)), "11 months ");
        assert_eq!(residual(ns(YEAR)), "1 year ");
        assert_eq!(residual(ns(18 * MONTH - 1)), "1 year ");
        assert_eq!(residual(ns(18 * MONTH)), "2 years ");
        assert_eq!(residual(ns(2 * YEAR)), "2 years ");
        assert_eq!(residual(ns(3 * YEAR)), "3 years ");
        assert_eq!(residual(ns(LONG_TIME)), "a long while ");
    }

    #[test]
    fn typical_certificates() {
        // Fresh leaf: NotAfter = now + 365d (issued an hour ago, 365 days from issue + 1h).
        assert_eq!(residual(ns(365 * DAY)), "1 year ");
        // Leaf issued 3650 days ago... a CA with 10 x 365 days left.
        assert_eq!(residual(ns(3650 * DAY)), "10 years ");
        // 30 days left: inside RKE2's 120-day window.
        assert_eq!(residual(ns(30 * DAY)), "1 month ");
        assert_eq!(residual(ns(120 * DAY)), "4 months ");
    }

    #[test]
    fn expired_certificates_show_the_magnitude_without_sign_or_label() {
        assert_eq!(residual(-ns(2 * DAY)), "2 days ");
        assert_eq!(residual(-ns(HOUR)), "1 hour ");
        assert_eq!(rel_time(-ns(2 * DAY), "ago", "from now"), "2 days from now");
        assert_eq!(rel_time(ns(2 * DAY), "ago", "from now"), "2 days ago");
    }
}
