//! Maintenance windows: days of the week and a daily start/end time in an IANA time zone
//! (`Sat,Sun 22:00-04:00 Europe/Berlin`); a window may run over midnight. Time zones come
//! from jiff with its bundled tz database, so daylight-saving changes are honoured and a
//! hub on a minimal host (no /usr/share/zoneinfo) still knows them. Pure.

use std::fmt;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use time::OffsetDateTime;

/// When maintenance may start a node.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// Days on which the window opens (empty = every day).
    pub days: Vec<Weekday>,
    /// Daily opening time (local to `tz`).
    pub start: Time,
    /// Daily closing time; at or before `start` means the window ends the next day.
    pub end: Time,
    /// The window's time zone.
    pub tz: TimeZone,
    /// The zone's name as given (for display).
    pub tz_name: String,
}

/// A window that cannot be parsed; the message says which part and how it should look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "maintenance window {input:?}: {reason} (expected e.g. \"Sat,Sun 22:00-04:00 Europe/Berlin\" or \"Mon-Fri 01:00-05:00 UTC\")"
)]
pub struct WindowError {
    /// What was given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn day(word: &str) -> Option<Weekday> {
    let w = word.trim().to_ascii_lowercase();
    // `get`, not `[..3]`: the word is operator text, and its third byte may fall inside a
    // multi-byte character (`ééé`), which no day name starts with anyway.
    let prefix = w.get(..3)?;
    DAYS.iter()
        .find(|(name, _)| name.starts_with(prefix))
        .map(|(_, d)| *d)
}

fn parse_days(spec: &str) -> Result<Vec<Weekday>, String> {
    if spec.eq_ignore_ascii_case("daily") || spec == "*" {
        return Ok(Vec::new());
    }
    let mut days = Vec::new();
    for part in spec.split(',') {
        if let Some((from, to)) = part.split_once('-') {
            let (a, b) = (
                day(from).ok_or_else(|| format!("unknown day {from:?}"))?,
                day(to).ok_or_else(|| format!("unknown day {to:?}"))?,
            );
            let mut d = a;
            loop {
                if !days.contains(&d) {
                    days.push(d);
                }
                if d == b {
                    break;
                }
                d = d.next();
            }
        } else {
            let d = day(part).ok_or_else(|| format!("unknown day {part:?}"))?;
            if !days.contains(&d) {
                days.push(d);
            }
        }
    }
    Ok(days)
}

fn parse_time(s: &str) -> Result<Time, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("time {s:?} is not HH:MM"))?;
    let h: i8 = h.parse().map_err(|_| format!("hour in {s:?}"))?;
    let m: i8 = m.parse().map_err(|_| format!("minute in {s:?}"))?;
    Time::new(h, m, 0, 0).map_err(|e| format!("time {s:?}: {e}"))
}

impl MaintenanceWindow {
    /// Parses `[DAYS] HH:MM-HH:MM [ZONE]`: days as `Sat,Sun`, `Mon-Fri` or `daily` (default),
    /// the zone an IANA name or `UTC` (default).
    ///
    /// # Errors
    /// [`WindowError`] naming the part that is wrong.
    pub fn parse(input: &str) -> Result<Self, WindowError> {
        let err = |reason: String| WindowError {
            input: input.to_owned(),
            reason,
        };
        let words: Vec<&str> = input.split_whitespace().collect();
        let (days, range, zone) = match words.as_slice() {
            [range] => ("daily", *range, "UTC"),
            [a, b] if a.contains(':') => ("daily", *a, *b),
            [a, b] => (*a, *b, "UTC"),
            [a, b, c] => (*a, *b, *c),
            _ => return Err(err("expected [days] HH:MM-HH:MM [time zone]".to_owned())),
        };
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| err(format!("{range:?} is not HH:MM-HH:MM")))?;
        let tz = TimeZone::get(zone).map_err(|e| err(format!("time zone {zone:?}: {e}")))?;
        Ok(Self {
            days: parse_days(days).map_err(err)?,
            start: parse_time(start).map_err(err)?,
            end: parse_time(end).map_err(err)?,
            tz,
            tz_name: zone.to_owned(),
        })
    }

    /// Whether `now` is inside the window. The day of an overnight window is the day it
    /// opened: Sat 22:00–04:00 covers Sunday 03:00.
    #[must_use]
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        let Ok(ts) = jiff::Timestamp::from_second(now.unix_timestamp()) else {
            return false;
        };
        let local = ts.to_zoned(self.tz.clone());
        let opens_on = |day: Weekday| self.days.is_empty() || self.days.contains(&day);
        let t = local.time();
        let weekday = local.weekday();
        if self.start < self.end {
            opens_on(weekday) && t >= self.start && t < self.end
        } else {
            (opens_on(weekday) && t >= self.start) || (opens_on(weekday.previous()) && t < self.end)
        }
    }
}

impl MaintenanceWindow {
    /// The first instant at or after `from` inside the window: `from` itself when it is
    /// inside, else the next opening (looking a week ahead, which covers every day pattern).
    /// An opening that falls in a daylight-saving gap moves forward as the clock does.
    #[must_use]
    pub fn next_open(&self, from: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.contains(from) {
            return Some(from);
        }
        let local = jiff::Timestamp::from_second(from.unix_timestamp())
            .ok()?
            .to_zoned(self.tz.clone());
        (0..=7).find_map(|d| {
            let date = local.date().checked_add(jiff::Span::new().days(d)).ok()?;
            if !(self.days.is_empty() || self.days.contains(&date.weekday())) {
                return None;
            }
            let opens = date
                .to_datetime(self.start)
                .to_zoned(self.tz.clone())
                .ok()?;
            let at = OffsetDateTime::from_unix_timestamp(opens.timestamp().as_second()).ok()?;
            (at >= from).then_some(at)
        })
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = if self.days.is_empty() {
            "daily".to_owned()
        } else {
            self.days
                .iter()
                .map(|d| {
                    DAYS.iter()
                        .find(|(_, x)| x == d)
                        .map_or("?", |(n, _)| n)
                        .to_owned()
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{days} {}-{} {}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M"),
            self.tz_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn w(s: &str) -> MaintenanceWindow {
        MaintenanceWindow::parse(s).expect("valid window")
    }

    #[test]
    fn next_open_finds_the_coming_opening() {
        let win = w("Sat 22:00-04:00 UTC");
        let inside = datetime!(2026-11-29 03:00 UTC);
        assert_eq!(win.next_open(inside), Some(inside));
        // From a Tuesday, the next opening is Saturday 22:00.
        assert_eq!(
            win.next_open(datetime!(2026-11-24 10:00 UTC)),
            Some(datetime!(2026-11-28 22:00 UTC))
        );
        // From Sunday 05:00 (just closed), the one after is a week later.
        assert_eq!(
            win.next_open(datetime!(2026-11-29 05:00 UTC)),
            Some(datetime!(2026-12-05 22:00 UTC))
        );
        // A zone with daylight saving: 01:00 Berlin is 00:00 UTC in winter.
        let berlin = w("daily 01:00-02:00 Europe/Berlin");
        assert_eq!(
            berlin.next_open(datetime!(2026-12-01 12:00 UTC)),
            Some(datetime!(2026-12-02 00:00 UTC))
        );
    }

    #[test]
    fn daytime_window_on_chosen_days() {
        let win = w("Tue 09:00-17:00 UTC");
        assert!(win.contains(datetime!(2026-11-24 10:00 UTC))); // a Tuesday
        assert!(
            !win.contains(datetime!(2026-11-24 17:00 UTC)),
            "end is exclusive"
        );
        assert!(!win.contains(datetime!(2026-11-25 10:00 UTC)), "Wednesday");
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_opens() {
        let win = w("Sat 22:00-04:00");
        assert!(win.contains(datetime!(2026-11-28 23:00 UTC))); // Saturday night
        assert!(win.contains(datetime!(2026-11-29 03:00 UTC))); // early Sunday
        assert!(
            !win.contains(datetime!(2026-11-29 23:00 UTC)),
            "Sunday night is not a Saturday window"
        );
        assert!(
            !win.contains(datetime!(2026-11-28 03:00 UTC)),
            "early Saturday belongs to Friday"
        );
    }

    #[test]
    fn iana_zones_follow_daylight_saving() {
        // 02:00-03:00 in Berlin is 01:00 UTC in winter (CET) and 00:00 UTC in summer (CEST).
        let win = w("daily 02:00-03:00 Europe/Berlin");
        assert!(win.contains(datetime!(2026-11-24 01:30 UTC)));
        assert!(!win.contains(datetime!(2026-11-24 00:30 UTC)));
        assert!(win.contains(datetime!(2026-07-14 00:30 UTC)));
        assert!(!win.contains(datetime!(2026-07-14 01:30 UTC)));
    }

    #[test]
    fn day_ranges_and_defaults() {
        let win = w("Mon-Fri 01:00-05:00 UTC");
        assert_eq!(win.days.len(), 5);
        assert_eq!(win.to_string(), "mon,tue,wed,thu,fri 01:00-05:00 UTC");
        let any = w("22:00-02:00");
        assert!(any.days.is_empty());
        assert_eq!(any.tz_name, "UTC");
        let wrap = w("Fri-Mon 00:00-23:59 UTC");
        assert_eq!(wrap.days.len(), 4);
    }

    #[test]
    fn day_names_with_multibyte_characters_are_refused_not_a_panic() {
        // Found by the fuzz harness: slicing the first three bytes panicked mid-character.
        for input in [
            "ééé 22:00-04:00 UTC",
            "éé 01:00-02:00",
            "Mé-Fri 01:00-02:00",
            "\u{fffd} 01:00-02:00",
        ] {
            let e = MaintenanceWindow::parse(input)
                .expect_err(input)
                .to_string();
            assert!(e.contains("unknown day"), "{input}: {e}");
        }
    }

    #[test]
    fn bad_windows_name_the_part() {
        for (input, part) in [
            ("Sat 22:00 UTC", "HH:MM-HH:MM"),
            ("Caturday 22:00-04:00 UTC", "Caturday"),
            ("Sat 25:00-04:00 UTC", "25:00"),
            ("Sat 22:00-04:00 Mars/Olympus", "Mars/Olympus"),
            ("", "expected"),
        ] {
            let e = MaintenanceWindow::parse(input)
                .expect_err(input)
                .to_string();
            assert!(e.contains(part), "{input}: {e}");
        }
    }
}
