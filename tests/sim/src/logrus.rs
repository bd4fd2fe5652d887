//! RKE2's log lines: logrus' text format on stderr (`time="..." level=info msg="..."`), which
//! systemd puts in the unit's journal as RKE2's own lines are.

use time::OffsetDateTime;

use super::check::logrus_line;

fn emit(level: &str, msg: &str) {
    eprint!("{}", logrus_line(OffsetDateTime::now_utc(), level, msg));
}

/// An `info` line.
pub fn info(msg: &str) {
    emit("info", msg);
}

/// A `warning` line.
pub fn warn(msg: &str) {
    emit("warning", msg);
}

/// An `error` line.
pub fn error(msg: &str) {
    emit("error", msg);
}

/// A `fatal` line (the caller exits 1, as logrus' `Fatal` does).
pub fn fatal(msg: &str) {
    emit("fatal", msg);
}
