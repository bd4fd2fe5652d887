//! The agent's domain types → the wire (`rke2ops.v1`). The only module of the agent that
//! touches prost structs.

use prost_types::Timestamp;
use rke2ops_common::certs::{CertStatus, Inventory};
use rke2ops_proto::v1 as pb;
use time::OffsetDateTime;

/// A protobuf timestamp.
#[must_use]
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// RKE2 status word → wire enum.
#[must_use]
pub fn status(s: CertStatus) -> pb::CertStatus {
    match s {
        CertStatus::Ok => pb::CertStatus::Ok,
        CertStatus::Warning => pb::CertStatus::Warning,
        CertStatus::Expired => pb::CertStatus::Expired,
        CertStatus::NotYetValid => pb::CertStatus::NotYetValid,
    }
}

/// The node's status; with `full`, every certificate and file error.
#[must_use]
pub fn status_message(
    inventory: &Inventory,
    now: OffsetDateTime,
    warn: time::Duration,
    service_state: &str,
    full: bool,
) -> pb::Status {
    let deadline = inventory.leaves().map(|c| c.not_after).min();
    let certificates = if full {
        inventory
            .certificates
            .iter()
            .map(|c| pb::Certificate {
                path: c.path.clone(),
                index: u32::try_from(c.index).unwrap_or(u32::MAX),
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.clone(),
                usages: c.usages.iter().map(|u| u.as_str().to_owned()).collect(),
                is_ca: c.is_ca,
                sans: c.sans.clone(),
                not_before: Some(timestamp(c.not_before)),
                not_after: Some(timestamp(c.not_after)),
                status: status(c.status(now, warn)).into(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let errors = if full {
        inventory
            .errors
            .iter()
            .map(|e| pb::FileError {
                path: e.path.clone(),
                reason: e.reason.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    pb::Status {
        full,
        certificates,
        errors,
        renewal_deadline: deadline.map(timestamp),
        service_state: service_state.to_owned(),
        worst_status: inventory
            .worst_status(now, warn)
            .map_or(pb::CertStatus::Unspecified, status)
            .into(),
        error_count: u32::try_from(inventory.errors.len()).unwrap_or(u32::MAX),
        ..pb::Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_seconds_and_nanos() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_500_000_123_456_789).expect("time");
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_795_500_000, 123_456_789));
    }

    #[test]
    fn empty_inventory_has_no_deadline_and_unspecified_worst() {
        let msg = status_message(
            &Inventory::default(),
            OffsetDateTime::now_utc(),
            time::Duration::days(120),
            "active",
            true,
        );
        assert!(msg.renewal_deadline.is_none());
        assert_eq!(msg.worst_status, i32::from(pb::CertStatus::Unspecified));
        assert_eq!(msg.service_state, "active");
    }
}
