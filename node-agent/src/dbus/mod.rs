//! [`ServiceManager`] over systemd's D-Bus API: [`Systemd`].
//!
//! This module owns the agent's system-bus connection and everything it says to
//! `org.freedesktop.systemd1`: starting, stopping and restarting units and waiting for their
//! jobs, reading a unit's state, and daemon-reload. It decides nothing about *when* to do so;
//! the step machines above [`ServiceManager`] do.
//!
//! # How a job is waited for
//!
//! `StartUnit`/`StopUnit`/`RestartUnit` only queue a job and reply with its object path at
//! once. The job's outcome comes later as the manager's `JobRemoved(id, job, unit, result)`
//! signal. The agent therefore
//!
//! 1. calls `Subscribe` once per connection, before its first job: systemd emits its manager
//!    signals on the system bus only while some client is subscribed. Not at connect: a
//!    subscribed client makes systemd broadcast every unit change (on a Kubernetes node, every
//!    container scope), which a client that only reads state has no use for;
//! 2. adds its `JobRemoved` match rule *before* issuing the call, so a job that ends before the
//!    call's reply has been read is still seen;
//! 3. takes the first `JobRemoved` whose job path is the one the call returned, and maps its
//!    result word with [`JobResult::from_word`].
//!
//! All of this runs under one deadline ([`Systemd::with_job_timeout`], 10 minutes by default:
//! an RKE2 server start that pulls images and waits for etcd can take minutes). When it
//! passes, the caller gets [`ServiceError::JobTimeout`]; systemd keeps the job, and whether to
//! cancel it is the caller's decision.
//!
//! # Reading state
//!
//! [`ServiceManager::state`] resolves the unit with `LoadUnit` (which, unlike `GetUnit`, also
//! answers for units that have no unit file: their object reads `LoadState=not-found`) and
//! reads the `Unit` interface with one `Properties.GetAll`, so `LoadState`, `ActiveState` and
//! `SubState` come from the same instant; the four `Service` properties are read beside it.
//!
//! # Errors
//!
//! Every failed call becomes [`ServiceError::Call`] naming the unit, the action and the D-Bus
//! error as `name: message` (e.g. `org.freedesktop.systemd1.NoSuchUnit: Unit foo.service not
//! found.`).

mod proxies;
mod state;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::OnceCell;
use tracing::{debug, warn};
use zbus::connection::Builder;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

pub use proxies::{
    JobRemoved, JobRemovedArgs, JobRemovedStream, ManagerProxy, SYSTEMD_SERVICE, ServiceProxy,
    UnitProxy,
};

use crate::service::{JobResult, ServiceError, ServiceManager, UnitState};

/// How long start/stop/restart wait for their job by default.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long a read (`state`) may wait for systemd by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The name [`ServiceError`]s use for calls that are about systemd itself (daemon-reload).
const MANAGER_SUBJECT: &str = "systemd";

const UNIT_INTERFACE: InterfaceName<'static> =
    InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");

/// systemd's error when `Subscribe` is called twice from one connection.
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// The job-starting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Start,
    Stop,
    Restart,
}

impl JobKind {
    fn action(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

/// systemd, reached over a D-Bus connection (the system bus in production).
///
/// Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Systemd {
    /// The bus connection every proxy of this client uses.
    connection: Connection,
    /// The manager object, `/org/freedesktop/systemd1`.
    manager: ManagerProxy<'static>,
    /// Set once `Subscribe` succeeded on `connection` (it lasts as long as the connection).
    subscribed: Arc<OnceCell<()>>,
    /// Deadline for a whole start/stop/restart (call and job) and for daemon-reload.
    job_timeout: Duration,
    /// Deadline for reads.
    call_timeout: Duration,
}

impl Systemd {
    /// Connects to systemd on the system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/var/run/dbus/system_bus_socket`) and checks that systemd answers there.
    ///
    /// # Errors
    /// [`ServiceError::Connect`] when the bus cannot be reached or systemd is not on it
    /// (within [`DEFAULT_CALL_TIMEOUT`]).
    pub async fn connect() -> Result<Self, ServiceError> {
        Self::connect_with(Builder::system(), "the system bus").await
    }

    /// Connects to the bus at a D-Bus `address` (`unix:path=/run/dbus/system_bus_socket`);
    /// for tests and tools that reach another machine's bus.
    ///
    /// # Errors
    /// [`ServiceError::Connect`] when the bus cannot be reached or systemd is not on it.
    pub async fn connect_to(address: &str) -> Result<Self, ServiceError> {
        Self::connect_with(Builder::address(address), address).await
    }

    async fn connect_with(builder: Builder<'_>, bus: &str) -> Result<Self, ServiceError> {
        // A socket that accepts but never answers must not hang the caller.
        tokio::time::timeout(DEFAULT_CALL_TIMEOUT, Self::handshake(builder, bus))
            .await
            .unwrap_or_else(|_elapsed| {
                Err(ServiceError::Connect(format!(
                    "{bus}: no answer within {} s",
                    whole_seconds(DEFAULT_CALL_TIMEOUT)
                )))
            })
    }

    async fn handshake(builder: Builder<'_>, bus: &str) -> Result<Self, ServiceError> {
        let connection = builder
            .build()
            .await
            .map_err(|e| ServiceError::Connect(format!("{bus}: {e}")))?;
        let manager = ManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| ServiceError::Connect(format!("{bus}: manager proxy: {e}")))?;
        // A call that systemd itself answers (not the bus daemon): proves it is on the bus.
        let version = manager.version().await.map_err(|e| {
            ServiceError::Connect(format!(
                "{bus}: systemd does not answer: {}",
                dbus_error_text(&e)
            ))
        })?;
        debug!(bus, version, "connected to systemd");
        Ok(Self {
            connection,
            manager,
            subscribed: Arc::new(OnceCell::new()),
            job_timeout: DEFAULT_JOB_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// The same client with another deadline for start/stop/restart jobs and daemon-reload.
    #[must_use]
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The same client with another deadline for reads.
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline for start/stop/restart jobs and daemon-reload.
    #[must_use]
    pub fn job_timeout(&self) -> Duration {
        self.job_timeout
    }

    /// The bus connection (for proxies of other interfaces).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The manager proxy.
    #[must_use]
    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// The object path of `unit`, loading it if needed (`LoadUnit`).
    ///
    /// # Errors
    /// [`ServiceError::Call`] with the D-Bus error (e.g. an invalid unit name).
    pub async fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, ServiceError> {
        self.manager
            .load_unit(unit)
            .await
            .map_err(call_error(unit, "load unit"))
    }

    /// A proxy for the `Unit` interface of `unit` (properties are read on each access).
    ///
    /// # Errors
    /// [`ServiceError::Call`] when the unit cannot be resolved.
    pub async fn unit_proxy(&self, unit: &str) -> Result<UnitProxy<'static>, ServiceError> {
        let path = self.unit_path(unit).await?;
        UnitProxy::builder(&self.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error(unit, "load unit"))
    }

    /// A proxy for the `Service` interface of the service `unit` (properties are read on each
    /// access).
    ///
    /// # Errors
    /// [`ServiceError::Call`] when the unit cannot be resolved.
    pub async fn service_proxy(&self, unit: &str) -> Result<ServiceProxy<'static>, ServiceError> {
        let path = self.unit_path(unit).await?;
        ServiceProxy::builder(&self.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error(unit, "load unit"))
    }

    /// systemd's version (`Version`, e.g. `252.38-1~deb12u1`).
    ///
    /// # Errors
    /// [`ServiceError::Call`] with the D-Bus error.
    pub async fn version(&self) -> Result<String, ServiceError> {
        self.manager
            .version()
            .await
            .map_err(call_error(MANAGER_SUBJECT, "read version"))
    }

    /// `Subscribe`s this connection once; later calls return at once.
    async fn ensure_subscribed(&self) -> Result<(), zbus::Error> {
        self.subscribed
            .get_or_try_init(|| async {
                match self.manager.subscribe().await {
                    Err(zbus::Error::MethodError(name, _, _))
                        if name.as_str() == ALREADY_SUBSCRIBED =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            })
            .await
            .map(drop)
    }

    /// Queues the job `kind` for `unit` and waits for its `JobRemoved`, all within
    /// `job_timeout`.
    async fn run_job(&self, unit: &str, kind: JobKind) -> Result<JobResult, ServiceError> {
        let action = kind.action();
        let job = async {
            self.ensure_subscribed()
                .await
                .map_err(call_error(unit, action))?;
            // Listen first: the job may end before the call's reply is read.
            let mut removed = self
                .manager
                .receive_job_removed()
                .await
                .map_err(call_error(unit, action))?;
            let call = match kind {
                JobKind::Start => self.manager.start_unit(unit, "replace").await,
                JobKind::Stop => self.manager.stop_unit(unit, "replace").await,
                JobKind::Restart => self.manager.restart_unit(unit, "replace").await,
            };
            let job = call.map_err(call_error(unit, action))?;
            debug!(unit, job = job.as_str(), "{action} job queued");
            while let Some(signal) = removed.next().await {
                let args = match signal.args() {
                    Ok(args) => args,
                    Err(e) => {
                        warn!(unit, error = %e, "ignoring a malformed JobRemoved signal");
                        continue;
                    }
                };
                if args.job().as_str() == job.as_str() {
                    debug!(
                        unit,
                        job = job.as_str(),
                        result = args.result(),
                        "{action} job ended"
                    );
                    return Ok(JobResult::from_word(args.result()));
                }
            }
            Err(ServiceError::Call {
                unit: unit.to_owned(),
                action,
                error: format!(
                    "the bus connection closed before job {} ended",
                    job.as_str()
                ),
            })
        };
        tokio::time::timeout(self.job_timeout, job)
            .await
            .unwrap_or_else(|_elapsed| {
                Err(ServiceError::JobTimeout {
                    unit: unit.to_owned(),
                    action,
                    seconds: whole_seconds(self.job_timeout),
                })
            })
    }

    async fn read_state(&self, unit: &str) -> Result<UnitState, ServiceError> {
        const ACTION: &str = "read state";
        let path = self.unit_path(unit).await.map_err(|e| match e {
            ServiceError::Call { unit, error, .. } => ServiceError::Call {
                unit,
                action: ACTION,
                error,
            },
            other => other,
        })?;
        let properties = PropertiesProxy::builder(&self.connection)
            .destination(SYSTEMD_SERVICE)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error(unit, ACTION))?;
        let service = ServiceProxy::builder(&self.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error(unit, ACTION))?;
        // Only service units have the Service interface (asking another unit type is an
        // `UnknownInterface` error). Its four properties are read one by one: a GetAll of
        // `Service` returns ~250 properties (exec, cgroup and kill settings) and took twice as
        // long as all of these calls together.
        let is_service = unit.ends_with(".service");
        let (unit_props, service_fields) =
            tokio::join!(properties.get_all(UNIT_INTERFACE), async {
                if !is_service {
                    return Ok(None);
                }
                let (result, n_restarts, exec_main_status, main_pid) = tokio::try_join!(
                    service.result(),
                    service.n_restarts(),
                    service.exec_main_status(),
                    service.main_pid(),
                )?;
                Ok(Some(state::ServiceFields {
                    result,
                    n_restarts,
                    exec_main_status,
                    main_pid,
                }))
            });
        let unit_props = unit_props
            .map_err(zbus::Error::from)
            .map_err(call_error(unit, ACTION))?;
        let service_fields = service_fields.map_err(call_error(unit, ACTION))?;
        state::unit_state(&unit_props, service_fields).map_err(|why| ServiceError::Call {
            unit: unit.to_owned(),
            action: ACTION,
            error: why,
        })
    }
}

impl ServiceManager for Systemd {
    async fn start(&self, unit: &str) -> Result<JobResult, ServiceError> {
        self.run_job(unit, JobKind::Start).await
    }

    async fn stop(&self, unit: &str) -> Result<JobResult, ServiceError> {
        self.run_job(unit, JobKind::Stop).await
    }

    async fn restart(&self, unit: &str) -> Result<JobResult, ServiceError> {
        self.run_job(unit, JobKind::Restart).await
    }

    async fn state(&self, unit: &str) -> Result<UnitState, ServiceError> {
        tokio::time::timeout(self.call_timeout, self.read_state(unit))
            .await
            .unwrap_or_else(|_elapsed| {
                Err(ServiceError::Call {
                    unit: unit.to_owned(),
                    action: "read state",
                    error: format!(
                        "systemd did not answer within {} s",
                        whole_seconds(self.call_timeout)
                    ),
                })
            })
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), ServiceError> {
        tokio::time::timeout(self.call_timeout, self.manager.reset_failed_unit(unit))
            .await
            .map_err(|_elapsed| ServiceError::JobTimeout {
                unit: unit.to_owned(),
                action: "reset-failed",
                seconds: whole_seconds(self.call_timeout),
            })?
            .map_err(call_error(unit, "reset-failed"))
    }

    async fn daemon_reload(&self) -> Result<(), ServiceError> {
        const ACTION: &str = "daemon-reload";
        tokio::time::timeout(self.job_timeout, self.manager.reload())
            .await
            .map_err(|_elapsed| ServiceError::JobTimeout {
                unit: MANAGER_SUBJECT.to_owned(),
                action: ACTION,
                seconds: whole_seconds(self.job_timeout),
            })?
            .map_err(call_error(MANAGER_SUBJECT, ACTION))
    }
}

/// Maps a zbus error about `unit` to [`ServiceError::Call`].
fn call_error(unit: &str, action: &'static str) -> impl FnOnce(zbus::Error) -> ServiceError {
    let unit = unit.to_owned();
    move |e| ServiceError::Call {
        unit,
        action,
        error: dbus_error_text(&e),
    }
}

/// A D-Bus error reply as `name: message`; other zbus errors as zbus words them.
fn dbus_error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            format!(
                "{}: {}",
                name.as_str(),
                message.as_deref().unwrap_or("(no message)")
            )
        }
        zbus::Error::FDO(fdo) => {
            use zbus::DBusError as _;
            match fdo.description() {
                Some(message) => format!("{}: {message}", fdo.name()),
                None => fdo.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// `timeout` in whole seconds, rounded up so a sub-second deadline does not read "0 s".
fn whole_seconds(timeout: Duration) -> u64 {
    timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(DEFAULT_JOB_TIMEOUT), 600);
    }

    #[test]
    fn call_errors_name_the_unit_action_and_dbus_error() {
        let error = call_error("rke2-server.service", "start")(zbus::Error::Failure("boom".into()));
        assert_eq!(error.to_string(), "rke2-server.service: start failed: boom");
    }
}
