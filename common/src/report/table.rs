//! `rke2 certificate check --output table`, reproduced: a leading empty line, the header, a
//! row of dashes, then one row per certificate, laid out by Go's tabwriter with padding 3.
//! EXPIRES is NotAfter, except for NOT YET VALID rows where RKE2 prints NotBefore.

use time::{
    Duration, OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description,
};

use super::{humanize, tabwriter};
use crate::certs::{CertEntry, CertStatus, FileError};

const HEADER: [&str; 6] = [
    "FILENAME",
    "SUBJECT",
    "USAGES",
    "EXPIRES",
    "RESIDUAL TIME",
    "STATUS",
];
const DASHES: [&str; 6] = [
    "--------",
    "-------",
    "------",
    "-------",
    "-------------",
    "------",
];

/// Go's `Jan 02, 2006 15:04 MST` for a UTC time.
const EXPIRES: &[BorrowedFormatItem<'static>] =
    format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");

/// The EXPIRES cell.
#[must_use]
pub fn expires_cell(cert: &CertEntry, status: CertStatus) -> String {
    let when = if status == CertStatus::NotYetValid {
        cert.not_before
    } else {
        cert.not_after
    };
    when.to_offset(time::UtcOffset::UTC)
        .format(EXPIRES)
        .unwrap_or_else(|_| when.to_string())
}

/// Renders `certs` as RKE2's table, then (if any) one `error: PATH: REASON` line per file that
/// could not be used, after an empty line.
#[must_use]
pub fn render(
    certs: &[CertEntry],
    errors: &[FileError],
    now: OffsetDateTime,
    warn: Duration,
) -> String {
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(certs.len() + 3);
    lines.push(vec![String::new()]);
    lines.push(HEADER.iter().map(|s| (*s).to_owned()).collect());
    lines.push(DASHES.iter().map(|s| (*s).to_owned()).collect());
    for cert in certs {
        let status = cert.status(now, warn);
        lines.push(vec![
            cert.filename.clone(),
            cert.subject_cn.clone(),
            cert.usages_label(),
            expires_cell(cert, status),
            humanize::residual(cert.not_after - now),
            status.as_str().to_owned(),
        ]);
    }
    let mut out = tabwriter::layout(&lines, 3);
    if !errors.is_empty() {
        out.push('\n');
        for error in errors {
            out.push_str(&format!("error: {}: {}\n", error.path, error.reason));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::model::{ChainCheck, KeyCheck, Origin, Usage};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-05 09:07 UTC);

    fn cert(
        filename: &str,
        cn: &str,
        usages: Vec<Usage>,
        nb: OffsetDateTime,
        na: OffsetDateTime,
    ) -> CertEntry {
        CertEntry {
            path: format!("server/tls/{filename}"),
            filename: filename.to_owned(),
            index: 0,
            origin: Origin::File,
            subject: format!("CN={cn}"),
            subject_cn: cn.to_owned(),
            issuer: String::new(),
            serial: String::new(),
            sans: vec![],
            usages,
            is_ca: false,
            not_before: nb,
            not_after: na,
            chain: ChainCheck::NotApplicable,
            key: KeyCheck::NotApplicable,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn table_matches_rke2_layout() {
        let certs = [
            cert(
                "client-admin.crt",
                "system:admin",
                vec![Usage::ClientAuth],
                NOW - Duration::hours(1),
                NOW + Duration::days(365) - Duration::hours(1),
            ),
            cert(
                "etcd-ca.crt",
                "etcd-server-ca@1",
                vec![Usage::CertSign],
                NOW,
                NOW + Duration::days(30),
            ),
            cert(
                "future.crt",
                "f",
                vec![],
                NOW + Duration::days(1),
                NOW + Duration::days(366),
            ),
        ];
        let out = render(&certs, &[], NOW, Duration::days(120));
        let expected = "\n\
FILENAME           SUBJECT            USAGES       EXPIRES                  RESIDUAL TIME   STATUS\n\
--------           -------            ------       -------                  -------------   ------\n\
client-admin.crt   system:admin       ClientAuth   Mar 05, 2027 08:07 UTC   1 year          OK\n\
etcd-ca.crt        etcd-server-ca@1   CertSign     Apr 04, 2026 09:07 UTC   1 month         WARNING\n\
future.crt         f                  Unknown      Mar 06, 2026 09:07 UTC   1 year          NOT YET VALID\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn errors_follow_the_table() {
        let errors = [FileError {
            path: "server/tls/x.crt".into(),
            kind: crate::certs::model::ErrorKind::Empty,
            reason: "file is empty".into(),
        }];
        let out = render(&[], &errors, NOW, Duration::days(120));
        assert!(
            out.ends_with("\nerror: server/tls/x.crt: file is empty\n"),
            "{out}"
        );
    }
}
