//! The residual-time wording of `rke2 certificate check`: go-humanize's
//! `RelTime(now, then, "", "")`, which RKE2 uses for the RESIDUAL TIME column.
//!
//! The sign is dropped (an expired certificate shows how long ago, without "ago"), and because
//! both labels are empty every wording but `now` keeps a trailing space, as RKE2 prints it.

use time::Duration;

const DAY: i64 = 24 * 3600;
const WEEK: i64 = 7 * DAY;
const MONTH: i64 = 30 * DAY;
const YEAR: i64 = 12 * MONTH;
const LONG_TIME: i64 = 37 * YEAR;

/// RKE2's RESIDUAL TIME text for `residual` (NotAfter − now).
#[must_use]
pub fn residual(residual: Duration) -> String {
    let diff = residual.abs();
    let secs = diff.whole_seconds();
    if diff < Duration::SECOND {
        return "now".to_owned();
    }
    // Each row: upper bound (exclusive), then the text; `n` = secs / divisor (truncated).
    let text = match secs {
        s if s < 2 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "1 minute".to_owned(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "1 hour".to_owned(),
        s if s < DAY => format!("{} hours", s / 3600),
        s if s < 2 * DAY => "1 day".to_owned(),
        s if s < WEEK => format!("{} days", s / DAY),
        s if s < 2 * WEEK => "1 week".to_owned(),
        s if s < MONTH => format!("{} weeks", s / WEEK),
        s if s < 2 * MONTH => "1 month".to_owned(),
        s if s < YEAR => format!("{} months", s / MONTH),
        s if s < 18 * MONTH => "1 year".to_owned(),
        s if s < 2 * YEAR => "2 years".to_owned(),
        s if s < LONG_TIME => format!("{} years", s / YEAR),
        _ => "a long while".to_owned(),
    };
    format!("{text} ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(d: Duration) -> String {
        residual(d)
    }

    #[test]
    fn fresh_leaf_is_one_year() {
        assert_eq!(r(Duration::days(365) - Duration::hours(1)), "1 year ");
    }

    #[test]
    fn ten_year_ca_is_ten_years() {
        assert_eq!(r(Duration::days(3650) - Duration::hours(1)), "10 years ");
    }

    #[test]
    fn boundaries() {
        assert_eq!(r(Duration::milliseconds(999)), "now");
        assert_eq!(r(Duration::seconds(1)), "1 second ");
        assert_eq!(r(Duration::seconds(59)), "59 seconds ");
        assert_eq!(r(Duration::seconds(60)), "1 minute ");
        assert_eq!(r(Duration::seconds(119)), "1 minute ");
        assert_eq!(r(Duration::seconds(120)), "2 minutes ");
        assert_eq!(r(Duration::hours(1)), "1 hour ");
        assert_eq!(r(Duration::hours(23)), "23 hours ");
        assert_eq!(r(Duration::days(1)), "1 day ");
        assert_eq!(r(Duration::days(6)), "6 days ");
        assert_eq!(r(Duration::days(7)), "1 week ");
        assert_eq!(r(Duration::days(14)), "2 weeks ");
        assert_eq!(r(Duration::days(29)), "4 weeks ");
        assert_eq!(r(Duration::days(30)), "1 month ");
        assert_eq!(r(Duration::days(59)), "1 month ");
        assert_eq!(r(Duration::days(60)), "2 months ");
        assert_eq!(r(Duration::days(359)), "11 months ");
        assert_eq!(r(Duration::days(360)), "1 year ");
        assert_eq!(r(Duration::days(539)), "1 year ");
        assert_eq!(r(Duration::days(540)), "2 years ");
        assert_eq!(r(Duration::days(719)), "2 years ");
        assert_eq!(r(Duration::days(720)), "2 years ");
        assert_eq!(r(Duration::days(1080)), "3 years ");
        assert_eq!(r(Duration::days(37 * 360)), "a long while ");
    }

    #[test]
    fn expired_drops_the_sign() {
        assert_eq!(r(Duration::days(-2)), "2 days ");
    }
}
