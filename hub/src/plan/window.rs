//! Maintenance windows: days of the week and a daily start/end time at a fixed UTC offset;
//! a window may run over midnight (e.g. Sat 22:00 – 04:00). Pure.

use time::{OffsetDateTime, Time, UtcOffset, Weekday};

/// When maintenance may start a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Days on which the window opens (empty = every day).
    pub days: Vec<Weekday>,
    /// Daily opening time (local to `offset`).
    pub start: Time,
    /// Daily closing time; before `start` means the window ends the next day.
    pub end: Time,
    /// The window's UTC offset.
    pub offset: UtcOffset,
}

impl MaintenanceWindow {
    /// Whether `now` is inside the window. The day of an overnight window is the day it
    /// opened: Sat 22:00–04:00 covers Sunday 03:00.
    #[must_use]
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        let opens_on = |day: Weekday| self.days.is_empty() || self.days.contains(&day);
        let t = local.time();
        if self.start <= self.end {
            opens_on(local.weekday()) && t >= self.start && t < self.end
        } else {
            (opens_on(local.weekday()) && t >= self.start)
                || (opens_on(local.weekday().previous()) && t < self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, time};

    fn window(days: Vec<Weekday>, start: Time, end: Time) -> MaintenanceWindow {
        MaintenanceWindow {
            days,
            start,
            end,
            offset: UtcOffset::UTC,
        }
    }

    #[test]
    fn daytime_window_on_chosen_days() {
        let w = window(vec![Weekday::Tuesday], time!(09:00), time!(17:00));
        assert!(w.contains(datetime!(2026-11-24 10:00 UTC))); // a Tuesday
        assert!(
            !w.contains(datetime!(2026-11-24 17:00 UTC)),
            "end is exclusive"
        );
        assert!(!w.contains(datetime!(2026-11-25 10:00 UTC)), "Wednesday");
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_opens() {
        let w = window(vec![Weekday::Saturday], time!(22:00), time!(04:00));
        assert!(w.contains(datetime!(2026-11-28 23:00 UTC))); // Saturday night
        assert!(w.contains(datetime!(2026-11-29 03:00 UTC))); // early Sunday
        assert!(
            !w.contains(datetime!(2026-11-29 23:00 UTC)),
            "Sunday night is not a Saturday window"
        );
        assert!(
            !w.contains(datetime!(2026-11-28 03:00 UTC)),
            "early Saturday belongs to Friday"
        );
    }

    #[test]
    fn offset_shifts_the_window() {
        let mut w = window(vec![], time!(02:00), time!(03:00));
        w.offset = UtcOffset::from_hms(1, 0, 0).expect("offset");
        assert!(
            w.contains(datetime!(2026-11-24 01:30 UTC)),
            "02:30 at +01:00"
        );
        assert!(!w.contains(datetime!(2026-11-24 02:30 UTC)));
    }
}
