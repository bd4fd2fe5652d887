//! The knobs of a generated tree: validity overrides and breakages, with their CLI syntax.

use std::time::Duration;

use time::OffsetDateTime;

/// Lifetime RKE2 gives leaves (`NewSignedCert`, 365 days).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// As RKE2 issues at `now`: NotBefore = max(now − 1h, CA NotBefore)
    /// (`CalculateNotBefore`), NotAfter = now + 365 days.
    Fresh,
    /// NotAfter = now + d, NotBefore = NotAfter − 365 days − 1h.
    ExpiresIn(Duration),
    /// NotAfter = now − d (d ago), NotBefore = NotAfter − 365 days − 1h.
    Expired(Duration),
    /// NotBefore = now + d, NotAfter = NotBefore + 365 days + 1h.
    NotYetValid(Duration),
    /// Exactly this window.
    Window {
        /// NotBefore.
        not_before: OffsetDateTime,
        /// NotAfter.
        not_after: OffsetDateTime,
    },
}

impl Validity {
    /// The (NotBefore, NotAfter) window at `now` for a leaf of `lifetime` issued by a CA valid
    /// from `ca_not_before`.
    #[must_use]
    pub fn window(
        &self,
        now: OffsetDateTime,
        lifetime: Duration,
        ca_not_before: OffsetDateTime,
    ) -> (OffsetDateTime, OffsetDateTime) {
        let hour = Duration::from_secs(3600);
        match *self {
            Validity::Fresh => ((now - hour).max(ca_not_before), now + lifetime),
            Validity::ExpiresIn(d) => {
                let not_after = now + d;
                (not_after - lifetime - hour, not_after)
            }
            Validity::Expired(d) => {
                let not_after = now - d;
                (not_after - lifetime - hour, not_after)
            }
            Validity::NotYetValid(d) => {
                let not_before = now + d;
                (not_before, not_before + lifetime + hour)
            }
            Validity::Window {
                not_before,
                not_after,
            } => (not_before, not_after),
        }
    }
}

impl std::str::FromStr for Validity {
    type Err = String;

    /// `fresh`, `expires-in:30d`, `expired:2d`, `not-yet-valid:1d`,
    /// `window:<RFC3339>..<RFC3339>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "fresh" if arg.is_empty() => Ok(Validity::Fresh),
            "expires-in" => parse_duration(arg).map(Validity::ExpiresIn),
            "expired" => parse_duration(arg).map(Validity::Expired),
            "not-yet-valid" => parse_duration(arg).map(Validity::NotYetValid),
            "window" => {
                let (a, b) = arg
                    .split_once("..")
                    .ok_or_else(|| format!("window needs <from>..<to>, got {arg:?}"))?;
                let parse = |t: &str| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| format!("bad time {t:?}: {e}"))
                };
                Ok(Validity::Window {
                    not_before: parse(a)?,
                    not_after: parse(b)?,
                })
            }
            _ => Err(format!(
                "unknown validity {s:?} (fresh | expires-in:D | expired:D | not-yet-valid:D | \
                 window:T1..T2)"
            )),
        }
    }
}

/// A way to break one generated file, for failure-path tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Breakage {
    /// Zero bytes.
    Empty,
    /// Text without any PEM armour.
    NoPemData,
    /// Valid PEM armour (same block type as the file held) around junk bytes.
    BadDer,
    /// The first half of the file's bytes (cuts inside the first PEM block of cert files).
    Truncated,
    /// The path is a directory, so `open` works and `read` fails with EISDIR. (We run as
    /// root: `chmod 000` would not stop reads.)
    Unreadable,
    /// A symlink to `<name>.missing` in the same directory, which does not exist (ENOENT).
    DanglingSymlink,
    /// A symlink to itself (ELOOP).
    LoopingSymlink,
    /// The original content followed by `#` comment lines up to 1 MiB + 1 KiB. PEM readers
    /// (Go's included) skip text between blocks and YAML treats the lines as comments, so the
    /// file stays readable by RKE2: only the size is abnormal.
    Oversized,
    /// The `.key` next to this leaf holds a different, valid key (either path of the pair).
    KeyMismatch,
    /// The leaf is signed by a CA that is not in the tree (CN `foreign-ca@<unix>`); the file
    /// holds the leaf followed by that foreign CA.
    ForeignIssuer,
}

impl Breakage {
    /// Every breakage kind.
    pub const ALL: [Breakage; 10] = [
        Breakage::Empty,
        Breakage::NoPemData,
        Breakage::BadDer,
        Breakage::Truncated,
        Breakage::Unreadable,
        Breakage::DanglingSymlink,
        Breakage::LoopingSymlink,
        Breakage::Oversized,
        Breakage::KeyMismatch,
        Breakage::ForeignIssuer,
    ];

    /// The CLI name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Breakage::Empty => "empty",
            Breakage::NoPemData => "no-pem-data",
            Breakage::BadDer => "bad-der",
            Breakage::Truncated => "truncated",
            Breakage::Unreadable => "unreadable",
            Breakage::DanglingSymlink => "dangling-symlink",
            Breakage::LoopingSymlink => "looping-symlink",
            Breakage::Oversized => "oversized",
            Breakage::KeyMismatch => "key-mismatch",
            Breakage::ForeignIssuer => "foreign-issuer",
        }
    }
}

impl std::str::FromStr for Breakage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Breakage::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Breakage::ALL.iter().map(|b| b.name()).collect();
                format!("unknown breakage {s:?} ({})", names.join(" | "))
            })
    }
}

/// Parse `30d`, `12h`, `1d12h`, `90m`, `45s`, `2w`, `1y` (= 365d).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("bad duration {s:?}: number expected before {c:?}"))?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(format!("bad duration {s:?}: unknown unit {c:?}")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} overflows"))?;
    }
    if !digits.is_empty() {
        return Err(format!("bad duration {s:?}: missing unit after {digits}"));
    }
    Ok(Duration::from_secs(total))
}

/// Parse a `FILE=VALUE` CLI pair.
pub fn parse_assignment<T: std::str::FromStr<Err = String>>(
    s: &str,
) -> Result<(String, T), String> {
    let (file, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FILE=VALUE, got {s:?}"))?;
    Ok((file.trim_start_matches("./").to_owned(), value.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(365 * 86_400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn validity_specs_and_windows() {
        let now = datetime!(2025-06-01 12:00:00 UTC);
        let ca = now - time::Duration::days(400);
        let (nb, na) = Validity::Fresh.window(now, LEAF_LIFETIME, ca);
        assert_eq!(nb, now - time::Duration::hours(1));
        assert_eq!(na, now + time::Duration::days(365));
        // A CA younger than an hour clamps NotBefore, like CalculateNotBefore.
        let (nb, _) = Validity::Fresh.window(now, LEAF_LIFETIME, now);
        assert_eq!(nb, now);
        let v: Validity = "expires-in:30d".parse().expect("valid spec");
        assert_eq!(
            v.window(now, LEAF_LIFETIME, ca).1,
            now + time::Duration::days(30)
        );
        let v: Validity = "expired:2d".parse().expect("valid spec");
        assert_eq!(
            v.window(now, LEAF_LIFETIME, ca).1,
            now - time::Duration::days(2)
        );
        let v: Validity = "not-yet-valid:1d".parse().expect("valid spec");
        assert_eq!(
            v.window(now, LEAF_LIFETIME, ca).0,
            now + time::Duration::days(1)
        );
        let v: Validity = "window:2025-01-01T00:00:00Z..2025-02-01T00:00:00Z"
            .parse()
            .expect("valid spec");
        assert_eq!(
            v.window(now, LEAF_LIFETIME, ca),
            (
                datetime!(2025-01-01 0:00 UTC),
                datetime!(2025-02-01 0:00 UTC)
            )
        );
        assert!("soon".parse::<Validity>().is_err());
    }

    #[test]
    fn breakage_names_round_trip() {
        for b in Breakage::ALL {
            assert_eq!(b.name().parse::<Breakage>(), Ok(b));
        }
        let (file, b) = parse_assignment::<Breakage>("server/tls/client-admin.crt=empty")
            .expect("valid assignment");
        assert_eq!(file, "server/tls/client-admin.crt");
        assert_eq!(b, Breakage::Empty);
    }
}
