//! The three systemd D-Bus interfaces the agent uses, one `#[proxy]` trait each.
//!
//! Only the members the agent needs are declared; names are spelled out with
//! `#[zbus(name = ...)]` so a grep for systemd's own spelling finds them. See
//! `org.freedesktop.systemd1(5)` for the full interfaces.

use zbus::{ObjectPath, OwnedObjectPath, proxy};

/// Bus name systemd owns on the system bus.
pub const SYSTEMD_SERVICE: &str = "org.freedesktop.systemd1";

/// `org.freedesktop.systemd1.Manager` at `/org/freedesktop/systemd1`.
#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Queues a start job; returns the job's object path at once (not when the job ends).
    #[zbus(name = "StartUnit")]
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Queues a stop job; returns the job's object path.
    #[zbus(name = "StopUnit")]
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Queues a restart job; returns the job's object path.
    #[zbus(name = "RestartUnit")]
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// The object path of a loaded unit; `NoSuchUnit` when it is not loaded.
    #[zbus(name = "GetUnit")]
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// The object path of a unit, loading it first if needed. A unit without a unit file
    /// still gets an object, whose `LoadState` is `not-found`.
    #[zbus(name = "LoadUnit")]
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// daemon-reload. The reply is sent only after systemd has finished reloading.
    /// Clears a unit's failed state and start-rate counter (`systemctl reset-failed`).
    #[zbus(name = "ResetFailedUnit")]
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    #[zbus(name = "Reload")]
    fn reload(&self) -> zbus::Result<()>;

    /// Asks systemd to emit its manager signals (`JobRemoved`...) on the system bus; without
    /// any subscriber it emits none there. A second call from the same connection fails with
    /// `org.freedesktop.systemd1.AlreadySubscribed`.
    #[zbus(name = "Subscribe")]
    fn subscribe(&self) -> zbus::Result<()>;

    /// systemd's version string.
    #[zbus(property, name = "Version")]
    fn version(&self) -> zbus::Result<String>;

    /// A job ended: its numeric id, object path, unit and result word (`done`, `failed`...).
    #[zbus(signal, name = "JobRemoved")]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit`, at the path `GetUnit`/`LoadUnit` return.
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    assume_defaults = false
)]
pub trait Unit {
    /// The unit's primary name (`rke2-server.service`).
    #[zbus(property, name = "Id")]
    fn id(&self) -> zbus::Result<String>;

    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    #[zbus(property, name = "LoadState")]
    fn load_state(&self) -> zbus::Result<String>;

    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    #[zbus(property, name = "ActiveState")]
    fn active_state(&self) -> zbus::Result<String>;

    /// The unit type's own state (`running`, `start`, `dead`, `auto-restart`...).
    #[zbus(property, name = "SubState")]
    fn sub_state(&self) -> zbus::Result<String>;

    /// CLOCK_REALTIME µs since the epoch when the unit last entered `active`; 0 = never.
    #[zbus(property, name = "ActiveEnterTimestamp")]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
}

/// `org.freedesktop.systemd1.Service`, on the same object as [`Unit`] for `.service` units.
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    assume_defaults = false
)]
pub trait Service {
    /// Why the service last stopped or failed: `success`, `exit-code`, `timeout`, `watchdog`...
    #[zbus(property, name = "Result")]
    fn result(&self) -> zbus::Result<String>;

    /// Automatic restarts since the unit was last started by hand.
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;

    /// Exit status (or signal number) of the last main process.
    #[zbus(property, name = "ExecMainStatus")]
    fn exec_main_status(&self) -> zbus::Result<i32>;

    /// PID of the main process; 0 when none runs.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
}
