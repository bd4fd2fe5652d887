//! `rke2-node-agent check`: one scan, printed as RKE2's table or as JSON, and an exit code a
//! script or a monitoring probe can act on.

use std::io::Write;

use rke2ops_common::certs::status::warn_window;
use rke2ops_common::certs::{CertStatus, Inventory, Scanner};
use rke2ops_common::report::{json, table};
use time::OffsetDateTime;

use crate::cli::Output;
use crate::config::Config;

/// Exit code when every certificate is OK.
pub const EXIT_OK: u8 = 0;
/// Exit code when the worst is WARNING.
pub const EXIT_WARNING: u8 = 1;
/// Exit code for EXPIRED, NOT YET VALID or an unusable file.
pub const EXIT_CRITICAL: u8 = 2;

/// The exit code for an inventory at `now` (pure).
#[must_use]
pub fn exit_code(inventory: &Inventory, now: OffsetDateTime, warn_days: u32) -> u8 {
    if !inventory.errors.is_empty() {
        return EXIT_CRITICAL;
    }
    match inventory.worst_status(now, warn_window(warn_days)) {
        None | Some(CertStatus::Ok) => EXIT_OK,
        Some(CertStatus::Warning) => EXIT_WARNING,
        Some(CertStatus::Expired | CertStatus::NotYetValid) => EXIT_CRITICAL,
    }
}

/// Scans once and writes the report to `out`; returns the exit code.
///
/// # Errors
/// Only when writing to `out` fails.
pub fn run(config: &Config, output: Output, out: &mut impl Write) -> anyhow::Result<u8> {
    let now = OffsetDateTime::now_utc();
    let inventory = Scanner::new(config.scan_config()).scan();
    let warn = warn_window(config.warn_days);
    match output {
        Output::Table => {
            out.write_all(
                table::render(&inventory.certificates, &inventory.errors, now, warn).as_bytes(),
            )?;
        }
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &json::report(&inventory, now, warn))?;
            out.write_all(b"\n")?;
        }
    }
    Ok(exit_code(&inventory, now, config.warn_days))
}
