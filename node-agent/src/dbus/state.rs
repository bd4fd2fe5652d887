//! Turning what systemd said about a unit into a [`UnitState`] (pure; no D-Bus).

use std::collections::HashMap;

use time::OffsetDateTime;
use zbus::OwnedVariant;

use crate::service::UnitState;

/// A `GetAll` answer: property name → value.
pub(super) type Properties = HashMap<String, OwnedVariant>;

/// The four `Service` properties a [`UnitState`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceFields {
    /// `Result`.
    pub(super) result: String,
    /// `NRestarts`.
    pub(super) n_restarts: u32,
    /// `ExecMainStatus`.
    pub(super) exec_main_status: i32,
    /// `MainPID`.
    pub(super) main_pid: u32,
}

/// Builds a [`UnitState`] from the `Unit` interface's properties (one `GetAll`) and, for
/// service units, the `Service` fields. Units of other types read `result` empty and the
/// numbers 0.
///
/// # Errors
/// A missing `Unit` property or one of an unexpected type, named.
pub(super) fn unit_state(
    unit: &Properties,
    service: Option<ServiceFields>,
) -> Result<UnitState, String> {
    let active_enter_us: u64 = read(unit, "ActiveEnterTimestamp")?;
    let service = service.unwrap_or(ServiceFields {
        result: String::new(),
        n_restarts: 0,
        exec_main_status: 0,
        main_pid: 0,
    });
    Ok(UnitState {
        load_state: read::<&str>(unit, "LoadState")?.to_owned(),
        active_state: read::<&str>(unit, "ActiveState")?.to_owned(),
        sub_state: read::<&str>(unit, "SubState")?.to_owned(),
        result: service.result,
        active_enter: timestamp(active_enter_us),
        n_restarts: service.n_restarts,
        exec_main_status: service.exec_main_status,
        main_pid: service.main_pid,
    })
}

/// systemd's µs-since-the-epoch timestamps; 0 means "never".
fn timestamp(micros: u64) -> Option<OffsetDateTime> {
    if micros == 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

fn read<'a, T>(properties: &'a Properties, name: &str) -> Result<T, String>
where
    T: TryFrom<&'a OwnedVariant, Error = zbus::Error>,
{
    let value = properties
        .get(name)
        .ok_or_else(|| format!("systemd did not report property {name}"))?;
    T::try_from(value).map_err(|e| format!("property {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Variant;

    fn props(entries: &[(&str, Variant<'static>)]) -> Properties {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    OwnedVariant::try_from(v.try_clone().expect("plain values clone"))
                        .expect("plain values own"),
                )
            })
            .collect()
    }

    fn unit_props(active_enter: u64) -> Properties {
        props(&[
            ("Id", Variant::from("rke2-server.service")),
            ("LoadState", Variant::from("loaded")),
            ("ActiveState", Variant::from("active")),
            ("SubState", Variant::from("running")),
            ("ActiveEnterTimestamp", Variant::from(active_enter)),
        ])
    }

    #[test]
    fn running_service_reads_all_fields() {
        let service = ServiceFields {
            result: "success".into(),
            n_restarts: 2,
            exec_main_status: 0,
            main_pid: 4242,
        };
        let state = unit_state(&unit_props(1_700_000_000_123_456), Some(service))
            .expect("complete properties");
        assert!(state.is_loaded() && state.is_active());
        assert_eq!(state.sub_state, "running");
        assert_eq!(state.result, "success");
        assert_eq!(
            (state.n_restarts, state.exec_main_status, state.main_pid),
            (2, 0, 4242)
        );
        let at = state.active_enter.expect("entered active");
        assert_eq!(at.unix_timestamp(), 1_700_000_000);
        assert_eq!(at.microsecond(), 123_456);
    }

    #[test]
    fn zero_timestamp_means_never_active() {
        let state = unit_state(&unit_props(0), None).expect("complete properties");
        assert_eq!(state.active_enter, None);
        assert_eq!(state.result, "");
        assert_eq!(state.main_pid, 0);
    }

    #[test]
    fn missing_or_mistyped_properties_are_named() {
        let mut unit = unit_props(0);
        unit.remove("SubState");
        let err = unit_state(&unit, None).expect_err("SubState missing");
        assert!(err.contains("SubState"), "{err}");

        let mut unit = unit_props(0);
        unit.insert(
            "ActiveEnterTimestamp".into(),
            OwnedVariant::try_from(Variant::from("yesterday")).expect("owned"),
        );
        let err = unit_state(&unit, None).expect_err("timestamp mistyped");
        assert!(err.contains("ActiveEnterTimestamp"), "{err}");
    }
}
