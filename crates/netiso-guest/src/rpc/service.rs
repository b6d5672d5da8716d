//! The database container's lifecycle behind the RPC handlers: prepare, start, restart, stop,
//! readiness and status, in the network mode decided at start-up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use netiso_config::{IsolationMode, Secret, TenantNic, VolumeSettings};
use netiso_messaging::{ConductorClient, Context, ServiceStatus};
use netiso_netlink::Namespace;
use netiso_runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, HealthStatus,
    HostnicNetworkSpec, ImageReference, NetworkAttachment, PullPolicy, RegistryCredentials,
    RuntimeError,
};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};

use crate::gate::DatabaseGate;
use crate::mysql::{Layout, MysqlSettings};

mod mysql;

/// File (in the state directory) whose presence says `prepare` completed, like Trove's
/// `/opt/trove-guestagent/.guestagent.prepare.end`: periodic heartbeats start only then.
pub const PREPARE_END_FILE: &str = "guestagent.prepare.end";
/// File (in the state directory) keeping the last `config_contents` received.
pub const CONFIG_CONTENTS_FILE: &str = "database.conf";
/// Pause between readiness attempts.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long `prepare` waits for a failed isolation being retried to be decided: longer than
/// the retry's own budget, so that it is the retry that decides.
const PREPARE_GATE_WAIT: Duration = Duration::from_secs(20 * 60);

/// Where the agent reports statuses and request outcomes: Trove's conductor in the product,
/// a recorder in tests.
#[async_trait]
pub trait StatusSink: Send + Sync {
    /// `heartbeat` with `payload.service_status`.
    async fn heartbeat(&self, status: ServiceStatus) -> Result<(), String>;
    /// `notify_end` with the request's context.
    async fn notify_end(&self, context: &Context, notification: Value) -> Result<(), String>;
    /// `notify_exc_info` with the request's context and the error message.
    async fn notify_exc_info(
        &self,
        context: &Context,
        notification: Value,
        message: &str,
    ) -> Result<(), String>;
}

/// The conductor, through `netiso-messaging`.
pub struct ConductorSink(pub ConductorClient);

#[async_trait]
impl StatusSink for ConductorSink {
    async fn heartbeat(&self, status: ServiceStatus) -> Result<(), String> {
        self.0.heartbeat(status).await.map_err(|e| e.to_string())
    }

    async fn notify_end(&self, context: &Context, notification: Value) -> Result<(), String> {
        self.0
            .notify_end(context, notification)
            .await
            .map_err(|e| e.to_string())
    }

    async fn notify_exc_info(
        &self,
        context: &Context,
        notification: Value,
        message: &str,
    ) -> Result<(), String> {
        self.0
            .notify_exc_info(context, notification, message, vec![message.to_owned()])
            .await
            .map_err(|e| e.to_string())
    }
}

/// Where the database's port must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// Isolated mode: the container's tenant address, from inside the container's own
    /// network namespace (the VM has no route to it: that is the point of isolation).
    ContainerNamespace {
        /// The container's namespace file, as the runtime's
        /// [`network_namespace`](netiso_runtime::ContainerRuntime::network_namespace) gives it.
        netns: PathBuf,
        /// The tenant address and the database port.
        address: SocketAddr,
    },
    /// Bridged mode, from the VM: the container's bridge address, where Docker's DNAT sends
    /// the published port, so the answer comes from the database itself. `127.0.0.1` only
    /// when Docker reports no address: its userland proxy accepts there before the
    /// database listens.
    Vm(SocketAddr),
}

/// One attempt to connect to the database's port.
#[async_trait]
pub trait PortProbe: Send + Sync {
    /// `Ok` when a TCP connect to `target` is answered.
    async fn answers(&self, target: &ProbeTarget) -> Result<(), String>;
}

/// The real probe: a TCP connect, bounded by `attempt_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct TcpProbe {
    /// How long one connect may take.
    pub attempt_timeout: Duration,
}

impl Default for TcpProbe {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

#[async_trait]
impl PortProbe for TcpProbe {
    /// In isolated mode the connect runs on a dedicated std thread that enters the
    /// container's network namespace (`setns`) and connects to the container's own tenant
    /// address there; the agent's threads never change namespace.
    async fn answers(&self, target: &ProbeTarget) -> Result<(), String> {
        let timeout = self.attempt_timeout;
        match target.clone() {
            ProbeTarget::Vm(address) => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("connect to {address} on the VM: {e}")),
                    Err(_) => Err(format!(
                        "connect to {address} on the VM: no answer within {timeout:?}"
                    )),
                }
            }
            ProbeTarget::ContainerNamespace { netns, address } => {
                tokio::task::spawn_blocking(move || {
                    let namespace = Namespace::open_path(&netns).map_err(|e| e.to_string())?;
                    namespace
                        .run(|| std::net::TcpStream::connect_timeout(&address, timeout))
                        .map_err(|e| e.to_string())?
                        .map(drop)
                        .map_err(|e| {
                            format!(
                                "connect to {address} inside namespace {}: {e}",
                                netns.display()
                            )
                        })
                })
                .await
                .map_err(|e| format!("probe thread failed: {e}"))?
            }
        }
    }
}

/// What the service needs from the configuration, fixed at start-up.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The instance id, added to notifications.
    pub guest_id: String,
    /// The container's name (`database` on a guest).
    pub container_name: String,
    /// `[<datastore>] docker_image` (without tag), `None` when no datastore is configured.
    pub docker_image: Option<String>,
    /// `[guest_agent] container_registry`, prefixed to an image without registry.
    pub container_registry: Option<String>,
    /// The image tag when the request names no `ds_version` (`datastore_version`).
    pub default_version: Option<String>,
    /// Registry login, when configured.
    pub credentials: Option<RegistryCredentials>,
    /// The network mode, decided once at start-up.
    pub mode: IsolationMode,
    /// The tenant NIC (isolated mode).
    pub tenant_nic: Option<TenantNic>,
    /// The datastore's TCP ports; the first is the one probed.
    pub tcp_ports: Vec<u16>,
    /// The data volume, reported by `get_filesystem_stats`.
    pub mount_point: Option<PathBuf>,
    /// `state_change_wait_time`: readiness wait and stop grace period.
    pub state_change_wait_time: Duration,
    /// Our state directory (prepare marker, last configuration).
    pub state_dir: PathBuf,
    /// How `prepare` formats and mounts the data volume.
    pub volume: VolumeSettings,
    /// Where the data volume's mount is recorded (`/etc/fstab`).
    pub fstab: PathBuf,
    /// The MySQL/MariaDB layer when `datastore_manager` is `mysql` or `mariadb`: root
    /// password, configuration files, databases and users, and readiness through the
    /// server's socket. `None` runs any other image as a plain container whose readiness
    /// is its first TCP port answering.
    pub mysql: Option<MysqlSettings>,
}

/// The arguments of `prepare` (Trove's guest API) the agent acts on. `Debug` shows
/// counts only: users carry passwords.
#[derive(Clone, Default)]
pub struct PrepareRequest {
    /// The image tag.
    pub ds_version: Option<String>,
    /// Trove's serialized databases.
    pub databases: Option<Value>,
    /// Trove's serialized users (with passwords).
    pub users: Option<Value>,
    /// The rendered `my.cnf`.
    pub config_contents: Option<String>,
    /// A root password to enable root with; `None` generates one and keeps root local.
    pub root_password: Option<Secret>,
    /// Configuration overrides (option → value).
    pub overrides: Option<Value>,
    /// The data volume's device; `None` uses the mount point as a plain directory.
    pub device_path: Option<PathBuf>,
    /// The data volume's mount point; `None` uses the configured one.
    pub mount_point: Option<PathBuf>,
}

impl PrepareRequest {
    /// A request that only names the image tag.
    pub fn version(ds_version: Option<String>) -> Self {
        Self {
            ds_version,
            ..Self::default()
        }
    }

    fn count(value: Option<&Value>) -> usize {
        value.and_then(Value::as_array).map_or(0, Vec::len)
    }
}

impl std::fmt::Debug for PrepareRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareRequest")
            .field("ds_version", &self.ds_version)
            .field("databases", &Self::count(self.databases.as_ref()))
            .field("users", &Self::count(self.users.as_ref()))
            .field("config_contents", &self.config_contents.is_some())
            .field("root_password", &self.root_password)
            .field("device_path", &self.device_path)
            .field("mount_point", &self.mount_point)
            .finish_non_exhaustive()
    }
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// Start-up checks failed (isolation or preflight): fail closed.
    #[error("the database is not started on this VM: {0}")]
    Refused(String),
    /// No datastore or image is configured.
    #[error("configuration: {0}")]
    Config(String),
    /// The container runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The container runs but its port did not answer.
    #[error(
        "container `{container}` started but {target} did not answer within {waited:?}: {last_error}"
    )]
    NotReady {
        /// The container.
        container: String,
        /// Where it was probed.
        target: String,
        /// How long.
        waited: Duration,
        /// The last probe's error.
        last_error: String,
    },
    /// The container stopped while we waited for it.
    #[error("container `{container}` stopped while starting: {state}")]
    Stopped {
        /// The container.
        container: String,
        /// Its state.
        state: String,
    },
    /// The request asks for something invalid (a bad name, a user without a password).
    #[error("invalid request: {0}")]
    Input(#[from] crate::mysql::InvalidInput),
    /// The data volume could not be mounted; it is left as it was.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// A file of the database's layout could not be written or read.
    #[error(transparent)]
    Files(#[from] crate::mysql::FileError),
    /// The database server refused a statement or a login.
    #[error(transparent)]
    Sql(#[from] crate::mysql::SqlError),
    /// A state file could not be written.
    #[error("cannot write {path}: {error}")]
    State {
        /// The file.
        path: PathBuf,
        /// The error.
        error: String,
    },
}

/// The marker of a database stopped on request (`stop_db`), so that the agent tells a
/// database stopped by the control plane (left down) from one that stopped by itself
/// (started again), also across its own restarts.
pub const STOPPED_ON_REQUEST_FILE: &str = "database.stopped";

/// The marker of a stop-and-start of ours that has not finished (`restart` or
/// `start_db_with_conf_changes` lost its runtime, or the agent died, between the stop and the
/// start): the control plane wants the database running, so the next heartbeat starts the
/// container whatever status its clean stop left.
pub const UNFINISHED_START_FILE: &str = "database.starting";

/// A yes-or-no fact about the database that must outlive the agent: held in memory and as an
/// empty file in the state directory, read when the agent starts.
struct Marker {
    path: PathBuf,
    set: AtomicBool,
}

impl Marker {
    fn load(path: PathBuf) -> Self {
        let set = AtomicBool::new(path.exists());
        Self { path, set }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Records the fact; a file that cannot be written or removed is logged and the fact
    /// kept in memory only, until the agent restarts.
    fn record(&self, set: bool) {
        if self.set.swap(set, Ordering::SeqCst) == set && self.path.exists() == set {
            return;
        }
        let outcome = if set {
            write_atomically(&self.path, b"").map_err(|e| e.to_string())
        } else {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        };
        if let Err(error) = outcome {
            warn!(path = %self.path.display(), %error, "cannot record the database's state marker; kept in memory until the agent restarts");
        }
    }
}

/// Whether a database container's exit status says it was killed or failed rather than
/// stopped: a stop (`stop_db`, `docker stop`, anyone's SIGTERM) ends the server cleanly
/// (0, or 143 for SIGTERM itself), and such a container stays down, as Docker's
/// `unless-stopped` leaves a container stopped by hand.
fn stopped_by_a_crash(exit_code: Option<i64>) -> bool {
    !matches!(exit_code, Some(0 | 143))
}

/// The service status Trove's Python guest derives from the container (its
/// status task): healthy (or running without a health check) → `healthy`, starting → `running`,
/// absent → `shutdown`, stopped → `shutdown`, unhealthy → `crashed`, else `unknown`.
pub fn status_of(info: Option<&ContainerInfo>) -> ServiceStatus {
    let Some(info) = info else {
        return ServiceStatus::Shutdown;
    };
    match (info.status, info.health) {
        (ContainerStatus::Running, None | Some(HealthStatus::Healthy)) => ServiceStatus::Healthy,
        (ContainerStatus::Running, Some(HealthStatus::Starting)) => ServiceStatus::Running,
        (ContainerStatus::Running, Some(HealthStatus::Unhealthy)) => ServiceStatus::Crashed,
        (ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Created, _) => {
            ServiceStatus::Shutdown
        }
        (ContainerStatus::Restarting, _) => ServiceStatus::Restarting,
        (ContainerStatus::Paused, _) => ServiceStatus::Paused,
        _ => ServiceStatus::Unknown,
    }
}

/// The guest's database service.
pub struct GuestService {
    settings: DatabaseSettings,
    runtime: Arc<dyn ContainerRuntime>,
    sink: Arc<dyn StatusSink>,
    probe: Arc<dyn PortProbe>,
    gate: DatabaseGate,
    lifecycle: Mutex<()>,
    prepared: AtomicBool,
    stopped_on_request: Marker,
    unfinished_start: Marker,
}

impl GuestService {
    /// A service; `refusal` is set when start-up checks failed, and then no database is ever
    /// started (fail closed) while RPC stays up for diagnosis.
    pub fn new(
        settings: DatabaseSettings,
        runtime: Arc<dyn ContainerRuntime>,
        sink: Arc<dyn StatusSink>,
        probe: Arc<dyn PortProbe>,
        refusal: Option<String>,
    ) -> Self {
        let prepared = settings.state_dir.join(PREPARE_END_FILE).exists();
        let stopped_on_request = Marker::load(settings.state_dir.join(STOPPED_ON_REQUEST_FILE));
        let unfinished_start = Marker::load(settings.state_dir.join(UNFINISHED_START_FILE));
        Self {
            settings,
            runtime,
            sink,
            probe,
            gate: DatabaseGate::fixed(refusal),
            lifecycle: Mutex::new(()),
            prepared: AtomicBool::new(prepared),
            stopped_on_request,
            unfinished_start,
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    /// Decides whether the database may start through `gate` instead (a failed isolation
    /// being retried: `prepare` waits for the decision, other operations are refused until it).
    pub fn with_gate(mut self, gate: DatabaseGate) -> Self {
        self.gate = gate;
        self
    }

    /// Why the database may not start now, if start-up checks failed or are being retried.
    pub fn refusal(&self) -> Option<String> {
        self.gate.refusal_now()
    }

    /// Whether `prepare` completed (now or in an earlier run).
    pub fn is_prepared(&self) -> bool {
        self.prepared.load(Ordering::SeqCst)
    }

    /// The status report for the periodic heartbeat: the container's state.
    pub async fn current_status(&self) -> ServiceStatus {
        if let Some(mysql) = &self.settings.mysql {
            return self.mysql_status(&mysql.layout).await;
        }
        match self.runtime.inspect(&self.settings.container_name).await {
            Ok(info) => status_of(info.as_ref()),
            Err(e) => {
                warn!(error = %e, "cannot inspect the database container for the heartbeat");
                ServiceStatus::Unknown
            }
        }
    }

    /// Sends a heartbeat; a failure is logged (the next one will carry the news).
    pub async fn heartbeat(&self, status: ServiceStatus) {
        match self.sink.heartbeat(status).await {
            Ok(()) => debug!(status = status.as_str(), "heartbeat sent"),
            Err(e) => error!(status = status.as_str(), error = %e, "heartbeat not sent"),
        }
    }

    /// The notification the conductor gets for this request: the context's
    /// `trove_notification` with `instance_id`, `None` when the request has none.
    fn notification(&self, context: &Context) -> Option<Value> {
        match context.get("trove_notification") {
            Some(Value::Object(map)) => {
                let mut map = map.clone();
                map.insert(
                    "instance_id".into(),
                    Value::from(self.settings.guest_id.clone()),
                );
                Some(Value::Object(map))
            }
            _ => None,
        }
    }

    /// Reports a failed cast to the conductor (`notify_exc_info`), when it carries a
    /// notification: casts have no reply, this is the only way the API learns of it.
    pub async fn report_cast_failure(&self, context: &Context, message: &str) {
        if let Some(notification) = self.notification(context)
            && let Err(e) = self
                .sink
                .notify_exc_info(context, notification, message)
                .await
        {
            error!(error = %e, "notify_exc_info not sent");
        }
    }

    /// `prepare`: `building`, set the database up and start it, then `healthy` and
    /// `notify_end`, or `failed to spawn` and `notify_exc_info` with the reason.
    pub async fn prepare(&self, context: &Context, request: PrepareRequest) {
        let _lifecycle = self.lifecycle.lock().await;
        self.stopped_on_request.record(false);
        let started = Instant::now();
        if let Some(reason) = self.gate.decided(PREPARE_GATE_WAIT).await {
            error!(%reason, "prepare refused: the database is not started (fail closed)");
            self.heartbeat(ServiceStatus::FailedToSpawn).await;
            self.report_cast_failure(context, &DatabaseError::Refused(reason).to_string())
                .await;
            return;
        }
        self.heartbeat(ServiceStatus::Building).await;
        let outcome = match &self.settings.mysql {
            Some(mysql) => self.prepare_mysql(mysql, request).await,
            None => {
                let (databases, users) = (
                    PrepareRequest::count(request.databases.as_ref()),
                    PrepareRequest::count(request.users.as_ref()),
                );
                if databases + users > 0 {
                    warn!(
                        databases,
                        users,
                        "prepare asks for databases and users, but this datastore is not MySQL: \
                         the container is started only"
                    );
                }
                self.start_database(request.ds_version, false).await
            }
        };
        match outcome {
            Ok(()) => {
                if let Err(e) = self.mark_prepared() {
                    error!(error = %e, "prepare completed but its marker was not written");
                }
                info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "prepare completed: the database answers"
                );
                self.heartbeat(ServiceStatus::Healthy).await;
                if let Some(notification) = self.notification(context)
                    && let Err(e) = self.sink.notify_end(context, notification).await
                {
                    error!(error = %e, "notify_end not sent");
                }
            }
            Err(e) => {
                error!(error = %e, "prepare failed");
                self.heartbeat(ServiceStatus::FailedToSpawn).await;
                self.report_cast_failure(context, &e.to_string()).await;
            }
        }
    }

    /// `restart`: stop (grace `state_change_wait_time`), start, wait until the port answers.
    pub async fn restart(&self) -> Result<(), DatabaseError> {
        let _lifecycle = self.lifecycle.lock().await;
        self.refuse_if_unsafe()?;
        let name = &self.settings.container_name;
        info!(container = %name, "restarting the database");
        self.stopped_on_request.record(false);
        self.unfinished_start.record(true);
        self.runtime
            .restart(name, self.settings.state_change_wait_time)
            .await?;
        self.unfinished_start.record(false);
        self.wait_ready().await?;
        self.heartbeat(ServiceStatus::Healthy).await;
        Ok(())
    }

    /// `stop_db`: stop the container (grace `state_change_wait_time`), report `shutdown`.
    /// Always allowed, also after failed start-up checks.
    pub async fn stop_db(&self) -> Result<(), DatabaseError> {
        let _lifecycle = self.lifecycle.lock().await;
        let name = &self.settings.container_name;
        info!(container = %name, "stopping the database");
        self.stopped_on_request.record(true);
        self.unfinished_start.record(false);
        self.runtime
            .stop(name, self.settings.state_change_wait_time)
            .await?;
        self.heartbeat(ServiceStatus::Shutdown).await;
        Ok(())
    }

    /// `start_db_with_conf_changes`: MySQL gets `config_contents` as its `my.cnf` and is
    /// stopped so that it reads it; another datastore's contents are kept in the state
    /// directory. Then the container is recreated when `ds_version` names another image,
    /// started, and waited for until it answers.
    pub async fn start_db_with_conf_changes(
        &self,
        config_contents: Option<String>,
        ds_version: Option<String>,
    ) -> Result<(), DatabaseError> {
        let _lifecycle = self.lifecycle.lock().await;
        self.refuse_if_unsafe()?;
        self.stopped_on_request.record(false);
        self.unfinished_start.record(true);
        if let Some(contents) = config_contents {
            match &self.settings.mysql {
                Some(mysql) => {
                    mysql.layout.write_config(Some(&contents))?;
                    info!(config_dir = %mysql.layout.config_dir.display(), "my.cnf rewritten");
                    // The server reads its configuration at start only.
                    self.runtime
                        .stop(
                            &self.settings.container_name,
                            self.settings.state_change_wait_time,
                        )
                        .await?;
                }
                None => {
                    let path = self.settings.state_dir.join(CONFIG_CONTENTS_FILE);
                    write_atomically(&path, contents.as_bytes())?;
                    info!(path = %path.display(), "configuration contents saved");
                }
            }
        }
        self.start_database(ds_version, true).await?;
        self.unfinished_start.record(false);
        self.heartbeat(ServiceStatus::Healthy).await;
        Ok(())
    }

    /// `get_filesystem_stats`: the data volume (`mount_point`; Trove ignores `fs_path` when
    /// a datastore is configured, and so do we).
    pub async fn filesystem_stats(
        &self,
        fs_path: Option<String>,
    ) -> Result<Value, super::FilesystemError> {
        let (path, from_request) = match (&self.settings.mount_point, fs_path) {
            (Some(mount_point), _) => (mount_point.clone(), false),
            (None, Some(path)) => (PathBuf::from(path), true),
            (None, None) => return Err(super::FilesystemError::NoMountPoint),
        };
        let stats = tokio::task::spawn_blocking(move || super::filesystem_stats(&path))
            .await
            .map_err(|e| super::FilesystemError::Thread(e.to_string()))?;
        // A path the caller sent is not echoed back: errors carry no argument values.
        stats.map_err(|error| {
            if from_request {
                super::FilesystemError::RequestedPathNotFound
            } else {
                error
            }
        })
    }

    fn refuse_if_unsafe(&self) -> Result<(), DatabaseError> {
        match self.gate.refusal_now() {
            Some(reason) => Err(DatabaseError::Refused(reason)),
            None => Ok(()),
        }
    }

    /// Starts the database container again when it stopped by itself (the database
    /// crashed, or its runtime was restarted and did not bring it back) or was left stopped
    /// by a `restart` or `start_db_with_conf_changes` that did not finish: prepared, not
    /// stopped on request, not refused, exited with a crash's status or after an unfinished
    /// start, and no request changing it right now. Whether it was started.
    pub async fn revive_database(&self) -> bool {
        if !self.is_prepared()
            || self.stopped_on_request.is_set()
            || self.gate.refusal_now().is_some()
        {
            return false;
        }
        let Ok(_lifecycle) = self.lifecycle.try_lock() else {
            return false;
        };
        let name = &self.settings.container_name;
        let unfinished_start = self.unfinished_start.is_set();
        match self.runtime.inspect(name).await {
            Ok(Some(info))
                if matches!(info.status, ContainerStatus::Exited | ContainerStatus::Dead)
                    && stopped_by_a_crash(info.exit_code) =>
            {
                warn!(container = %name, "the database container stopped without a stop_db request (it crashed, or its runtime restarted without it): starting it again");
            }
            Ok(Some(info))
                if unfinished_start
                    && matches!(
                        info.status,
                        ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Created
                    ) =>
            {
                warn!(container = %name, "a restart or start_db_with_conf_changes stopped the database and did not start it again (its runtime was lost, or the agent stopped): starting it now");
            }
            Ok(Some(info)) if unfinished_start && info.status == ContainerStatus::Running => {
                self.unfinished_start.record(false);
                return false;
            }
            _ => return false,
        }
        let started = Instant::now();
        let outcome = match self.runtime.start(name).await {
            Ok(()) => self.wait_ready().await,
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok(()) => {
                self.unfinished_start.record(false);
                info!(container = %name, took_ms = started.elapsed().as_millis() as u64, "the database is running again");
                true
            }
            Err(e) => {
                error!(container = %name, error = %e, "the database could not be started again; the next heartbeat retries");
                false
            }
        }
    }

    fn mark_prepared(&self) -> Result<(), DatabaseError> {
        let path = self.settings.state_dir.join(PREPARE_END_FILE);
        write_atomically(&path, b"")?;
        self.prepared.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn image(&self, ds_version: Option<String>) -> Result<ImageReference, DatabaseError> {
        let image = self.settings.docker_image.as_deref().ok_or_else(|| {
            DatabaseError::Config(
                "no datastore is configured ([DEFAULT] datastore_manager and its docker_image)"
                    .into(),
            )
        })?;
        let tag = ds_version
            .filter(|v| !v.is_empty())
            .or_else(|| self.settings.default_version.clone())
            .unwrap_or_else(|| "latest".to_owned());
        Ok(ImageReference::with_default_registry(
            &format!("{image}:{tag}"),
            self.settings.container_registry.as_deref(),
        )?)
    }

    /// Starts the database container, creating it (image pull through the management
    /// network, the hostnic network in isolated mode) when it does not exist, then waits
    /// until its port answers. An existing container is just started, as Trove does, unless
    /// `recreate_on_new_image` and it runs another image.
    async fn start_database(
        &self,
        ds_version: Option<String>,
        recreate_on_new_image: bool,
    ) -> Result<(), DatabaseError> {
        let name = &self.settings.container_name;
        let image = self.image(ds_version)?;
        let existing = self.runtime.inspect(name).await?;
        let reuse = match &existing {
            Some(info) if recreate_on_new_image && info.image != image.to_string() => {
                info!(container = %name, from = %info.image, to = %image, "recreating the database container for a new image");
                self.runtime
                    .stop(name, self.settings.state_change_wait_time)
                    .await?;
                self.runtime.remove(name, true).await?;
                false
            }
            Some(_) => true,
            None => false,
        };
        if reuse {
            info!(container = %name, "starting the existing database container");
            self.runtime.start(name).await?;
        } else {
            let mysql = match &self.settings.mysql {
                Some(mysql) => Some((&mysql.layout, self.saved_root_password(&mysql.layout)?)),
                None => None,
            };
            self.pull(&image).await?;
            self.create_database(&image, mysql.as_ref().map(|(l, p)| (*l, p)))
                .await?;
        }
        self.wait_ready().await
    }

    async fn pull(&self, image: &ImageReference) -> Result<(), DatabaseError> {
        let pulled = Instant::now();
        let credentials = self
            .settings
            .credentials
            .as_ref()
            .filter(|c| c.applies_to(image));
        self.runtime
            .ensure_image(image, PullPolicy::Always, credentials, &mut |event| {
                debug!(layer = ?event.id, status = %event.status, "pull");
            })
            .await?;
        info!(%image, took_ms = pulled.elapsed().as_millis() as u64, "image pulled");
        Ok(())
    }

    /// Creates and starts the container from a pulled image: the MySQL container when
    /// `mysql` gives its layout and root password, else the image as it is.
    async fn create_database(
        &self,
        image: &ImageReference,
        mysql: Option<(&Layout, &Secret)>,
    ) -> Result<(), DatabaseError> {
        let name = &self.settings.container_name;
        let network = match (&self.settings.mode, &self.settings.tenant_nic) {
            (IsolationMode::Isolated { .. }, Some(nic)) => {
                let status = self
                    .runtime
                    .ensure_hostnic_network(&HostnicNetworkSpec::for_tenant_nic(nic))
                    .await?;
                info!(network = status.id(), ?status, "hostnic network ready");
                NetworkAttachment::hostnic_for(nic)
            }
            (IsolationMode::Isolated { tenant_nic_file }, None) => {
                return Err(DatabaseError::Config(format!(
                    "isolated mode but the tenant NIC file {} was not read",
                    tenant_nic_file.display()
                )));
            }
            (IsolationMode::Bridged { .. }, _) => NetworkAttachment::Bridged {
                published_tcp_ports: self.settings.tcp_ports.clone(),
            },
        };
        let spec = match mysql {
            Some((layout, root_password)) => {
                crate::mysql::container_spec(name, image.clone(), network, layout, root_password)
            }
            None => ContainerSpec::new(name.clone(), image.clone(), network),
        };
        self.runtime.run(&spec).await?;
        info!(container = %name, %image, mode = %self.settings.mode, "database container started");
        Ok(())
    }

    async fn probe_target(&self, info: &ContainerInfo, port: u16) -> Result<ProbeTarget, String> {
        match (&self.settings.mode, &self.settings.tenant_nic) {
            (IsolationMode::Isolated { .. }, Some(nic)) => {
                let address = nic
                    .primary_address()
                    .ok_or("the tenant NIC file has no address")?;
                let netns = self
                    .runtime
                    .network_namespace(&self.settings.container_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the container has no network namespace yet")?;
                Ok(ProbeTarget::ContainerNamespace {
                    netns: netns.path(),
                    address: SocketAddr::new(address, port),
                })
            }
            _ => {
                let address = info
                    .networks
                    .values()
                    .find_map(|endpoint| endpoint.ipv4)
                    .unwrap_or(Ipv4Addr::LOCALHOST);
                Ok(ProbeTarget::Vm(SocketAddr::new(IpAddr::V4(address), port)))
            }
        }
    }

    /// Waits until the database answers: MySQL through its socket, another datastore on
    /// its port.
    async fn wait_ready(&self) -> Result<(), DatabaseError> {
        match &self.settings.mysql {
            Some(mysql) => {
                let password = self.saved_root_password(&mysql.layout)?;
                self.wait_mysql_ready(&mysql.layout, &password).await
            }
            None => self.wait_port_ready().await,
        }
    }

    /// Waits, at most `state_change_wait_time`, until the database port answers on the
    /// container's own address; fails early when the container stops. Without a port
    /// configured, waits for the runtime's health verdict instead.
    async fn wait_port_ready(&self) -> Result<(), DatabaseError> {
        let name = &self.settings.container_name;
        let wait = self.settings.state_change_wait_time;
        let Some(&port) = self.settings.tcp_ports.first() else {
            self.runtime.wait_healthy(name, wait).await?;
            return Ok(());
        };
        let started = Instant::now();
        let mut last_error: String;
        let mut target_text = format!("port {port}");
        loop {
            let info = self
                .runtime
                .inspect(name)
                .await?
                .ok_or_else(|| RuntimeError::ContainerNotFound(name.clone()))?;
            if matches!(info.status, ContainerStatus::Exited | ContainerStatus::Dead) {
                return Err(DatabaseError::Stopped {
                    container: name.clone(),
                    state: info.describe_state(),
                });
            }
            if info.status == ContainerStatus::Running {
                match self.probe_target(&info, port).await {
                    Ok(target) => {
                        target_text = match &target {
                            ProbeTarget::Vm(a) => format!("{a} (bridged, from the VM)"),
                            ProbeTarget::ContainerNamespace { address, .. } => {
                                format!("{address} (inside the container's namespace)")
                            }
                        };
                        match self.probe.answers(&target).await {
                            Ok(()) => {
                                info!(target = %target_text, took_ms = started.elapsed().as_millis() as u64, "database port answers");
                                return Ok(());
                            }
                            Err(e) => last_error = e,
                        }
                    }
                    Err(e) => last_error = e,
                }
            } else {
                last_error = format!("container is {}", info.describe_state());
            }
            if started.elapsed() >= wait {
                return Err(DatabaseError::NotReady {
                    container: name.clone(),
                    target: target_text,
                    waited: started.elapsed(),
                    last_error,
                });
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }
}

/// Replaces a state file of the agent (a crash leaves the old or the new content).
fn write_atomically(path: &std::path::Path, contents: &[u8]) -> Result<(), DatabaseError> {
    netiso_config::atomic_file::replace(path, contents, 0o600).map_err(|error| {
        DatabaseError::State {
            path: path.to_owned(),
            error: error.to_string(),
        }
    })
}
