//! The guest agent's `run`, as phases (`phases`): configuration (the tenant NIC file) →
//! isolation, fail closed, and its guard → readiness (`READY=1`) → preflight → RPC on
//! `guestagent.<guest_id>` → heartbeats, until a shutdown signal → shutdown.
//!
//! Fail closed: when isolation (or, in isolated mode, the preflight's management-route
//! requirement) fails, no database is started; a failed isolation is retried with capped
//! exponential backoff (`isolation_retry`, the database gate pending meanwhile), and when it
//! gives up, or another start-up check failed, the conductor is told `failed to spawn` (at
//! start-up and on `prepare`, with the reason in `notify_exc_info`). RPC stays up throughout
//! so that operators can diagnose.

mod fail_closed;
mod isolation_retry;
mod notify;
mod phases;

pub use fail_closed::{FailClosed, isolate_without_configuration};
pub use isolation_retry::RetryPolicy;
pub use notify::{notify_socket, sd_notify, watchdog_ping_interval};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netiso_config::{
    ConfigError, ConfigSources, ContainerRuntime as RuntimeKind, GuestConfig, TenantNic,
};
use netiso_messaging::{RabbitOptions, RpcServer, ServerConfig, ServiceStatus, Transport};
use netiso_netlink::{MacAddress, NetlinkHandle, Rtnetlink};
use netiso_runtime::{
    ConnectOnDemand, ContainerRuntime, ContainerdConfig, ContainerdRuntime, DockerRuntime,
    RegistryCredentials, RuntimeError,
};
use tracing::{error, info, warn};

use crate::gate::DatabaseGate;
use crate::isolation::{
    self, ApplyReport, Guard, GuardOptions, GuardReport, IsolationError, IsolationTarget,
    WhenAbsent,
};
use crate::mysql::{Layout, MysqlSettings};
use crate::preflight::{self, PreflightReport};
use crate::rpc::{DatabaseSettings, GuestService};

/// Trove's status task period: a heartbeat every 60 s once prepared.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Handlers running at once (oslo's `executor_thread_pool_size`).
const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Pause between attempts to start the RPC server while the broker is unreachable.
const RPC_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tenant NIC file is unusable.
    #[error(transparent)]
    TenantNic(#[from] netiso_config::TenantNicError),
    /// The container runtime cannot be reached.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Netlink in the agent's own namespace failed.
    #[error("netlink in the agent's namespace: {0}")]
    Netlink(#[from] netiso_netlink::NetlinkError),
    /// Messaging could not be set up (the transport URL or the broker options).
    #[error("messaging: {0}")]
    Messaging(#[from] netiso_messaging::TransportError),
    /// The instance key (`instance_rpc_encr_key`) is not one Trove generates.
    #[error("messaging: instance_rpc_encr_key: {0}")]
    InstanceKey(#[source] netiso_messaging::CryptoError),
}

/// The guest configuration the agent runs with (Trove's options and `[netiso]`, where the
/// agent's own options live).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Trove's guest options and `[netiso]`.
    pub guest: GuestConfig,
}

impl AgentConfig {
    /// Loads files and environment as oslo does ([`GuestConfig::load`]).
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        Ok(Self {
            guest: GuestConfig::load(sources)?,
        })
    }

    /// The tenant NIC and its isolation target, when `eth1.json` exists.
    pub fn tenant(&self) -> Result<Option<(TenantNic, IsolationTarget)>, AgentError> {
        let Some(nic) = self.guest.tenant_nic()? else {
            return Ok(None);
        };
        let target =
            IsolationTarget::new(nic.mac_address, self.guest.netiso.tenant_nic_file.clone());
        Ok(Some((nic, target)))
    }
}

/// How `run` behaves beyond the configuration. Start from `AgentOptions::default()` and set
/// the fields that differ (more may come).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentOptions {
    /// Per-endpoint preflight timeout.
    pub preflight_timeout: Duration,
    /// How long a shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Period of the status heartbeat once prepared.
    pub heartbeat_interval: Duration,
    /// How a failed start-up isolation is retried.
    pub isolation_retry: RetryPolicy,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            preflight_timeout: preflight::DEFAULT_TIMEOUT,
            shutdown_timeout: Duration::from_secs(60),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            isolation_retry: RetryPolicy::default(),
        }
    }
}

/// What a publish may still need once a silently dead connection was given up: the next
/// connection, its channels, the publish and its confirm.
const PUBLISH_AFTER_RECONNECT: Duration = Duration::from_secs(15);

/// The `[oslo_messaging_rabbit]` options as the transport wants them.
pub fn rabbit_options(config: &GuestConfig) -> RabbitOptions {
    let r = &config.rabbit;
    let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let mut options = RabbitOptions::default();
    options.amqp_durable_queues = r.amqp_durable_queues;
    options.amqp_auto_delete = r.amqp_auto_delete;
    options.rabbit_quorum_queue = r.rabbit_quorum_queue;
    options.rabbit_transient_quorum_queue = r.rabbit_transient_quorum_queue;
    options.rabbit_quorum_delivery_limit = small(r.rabbit_quorum_delivery_limit);
    options.rabbit_quorum_max_memory_length = small(r.rabbit_quorum_max_memory_length);
    options.rabbit_quorum_max_memory_bytes = small(r.rabbit_quorum_max_memory_bytes);
    options.rabbit_ha_queues = r.rabbit_ha_queues;
    options.rabbit_transient_queues_ttl = small(r.rabbit_transient_queues_ttl);
    options.enable_cancel_on_failover = r.enable_cancel_on_failover;
    options.direct_mandatory_flag = r.direct_mandatory_flag;
    options.kombu_missing_consumer_retry_timeout =
        Duration::from_secs(r.kombu_missing_consumer_retry_timeout);
    options.rabbit_qos_prefetch_count =
        u16::try_from(r.rabbit_qos_prefetch_count).unwrap_or(u16::MAX);
    options.heartbeat_timeout_threshold =
        u16::try_from(r.heartbeat_timeout_threshold).unwrap_or(u16::MAX);
    // A report published into a connection that died silently is only retried on the next
    // connection, which comes once two heartbeats went missing: a publish must be allowed
    // to wait that long, or the report (a heartbeat, `notify_end`) is lost for good.
    let dead_connection_noticed =
        Duration::from_secs(2 * r.heartbeat_timeout_threshold) + PUBLISH_AFTER_RECONNECT;
    options.publish_timeout = options.publish_timeout.max(dead_connection_noticed);
    options.tls = config.rabbit_tls.clone();
    options
}

/// The configured runtime (`[netiso] runtime`), connected on first use: the agent starts and
/// serves RPC while its daemon is down, and says why over RPC, instead of exiting in a
/// restart loop. An unusable runtime setting is still an error at once.
pub fn runtime_on_demand(config: &AgentConfig) -> Result<Arc<ConnectOnDemand>, AgentError> {
    let netiso = &config.guest.netiso;
    Ok(Arc::new(match netiso.runtime {
        RuntimeKind::Docker => {
            let endpoint = runtime_endpoint(config);
            ConnectOnDemand::new(move || {
                let endpoint = endpoint.clone();
                Box::pin(async move {
                    let runtime: Arc<dyn ContainerRuntime> =
                        Arc::new(DockerRuntime::connect(&endpoint).await?);
                    Ok(runtime)
                })
            })
        }
        RuntimeKind::Containerd => {
            let mut containerd =
                ContainerdConfig::new(&netiso.containerd_socket, &netiso.containerd_namespace);
            containerd.tenant_nic_file = Some(netiso.tenant_nic_file.clone());
            containerd.insecure_registries = netiso.containerd_insecure_registries()?;
            ConnectOnDemand::new(move || {
                let containerd = containerd.clone();
                Box::pin(async move {
                    let runtime: Arc<dyn ContainerRuntime> =
                        Arc::new(ContainerdRuntime::connect(containerd).await?);
                    Ok(runtime)
                })
            })
        }
    }))
}

/// The socket of the configured runtime, as errors and logs name it.
pub fn runtime_endpoint(config: &AgentConfig) -> String {
    let netiso = &config.guest.netiso;
    match netiso.runtime {
        RuntimeKind::Docker => format!("unix://{}", netiso.docker_socket.display()),
        RuntimeKind::Containerd => format!("unix://{}", netiso.containerd_socket.display()),
    }
}

/// Connects to the configured runtime now: for callers that need an answer at once.
pub async fn connect_runtime(
    config: &AgentConfig,
) -> Result<Arc<dyn ContainerRuntime>, AgentError> {
    let runtime = runtime_on_demand(config)?;
    runtime.connected().await?;
    Ok(runtime)
}

/// Why the configured runtime cannot run the database in the configured mode, decided at
/// start-up so that the conductor hears `failed to spawn` before any `prepare`: bridged
/// networking is unsupported with containerd (the runtime's own error, as `create` would
/// give it).
pub fn unsupported_mode(config: &GuestConfig) -> Option<String> {
    match config.netiso.runtime {
        RuntimeKind::Docker => None,
        RuntimeKind::Containerd => netiso_runtime::containerd::require_isolation(
            &config.isolation_mode(),
            &config.netiso.database_container,
        )
        .err()
        .map(|e| e.to_string()),
    }
}

/// What the start-up isolation step found.
#[derive(Debug)]
pub enum IsolationOutcome {
    /// The tenant NIC was isolated (or already was).
    Applied(ApplyReport),
    /// The tenant NIC is not in the VM because the database container holds it (an agent
    /// restart while the database runs).
    HeldByContainer(String),
    /// Isolation failed: the database must not start.
    Failed(String),
}

/// Whether the database container (asked through a fresh runtime connection) holds `mac`.
async fn held_by_database(config: &AgentConfig, name: &str, mac: MacAddress) -> bool {
    match connect_runtime(config).await {
        Ok(runtime) => container_holds(&*runtime, name, mac).await,
        Err(e) => {
            warn!(error = %e, "cannot ask the container runtime whether it holds the tenant NIC");
            false
        }
    }
}

/// Whether the namespace of container `name` holds a link with `mac`.
async fn container_holds(runtime: &dyn ContainerRuntime, name: &str, mac: MacAddress) -> bool {
    match runtime.network_interfaces(name).await {
        Ok(Some(links)) => links.iter().any(|link| link.mac == Some(mac)),
        Ok(None) | Err(_) => false,
    }
}

/// The start-up isolation step, fail closed: the NIC must be found in the VM and isolated,
/// unless the database container already holds it. It runs before anything else, the
/// container runtime included (which is only asked, when the NIC is absent, whether the
/// database container holds it), so that a missing dockerd never leaves the NIC up.
pub async fn isolate_at_startup(
    rtnl: Arc<NetlinkHandle>,
    target: &IsolationTarget,
    config: &AgentConfig,
) -> IsolationOutcome {
    let container_name = config.guest.netiso.database_container.as_str();
    let for_thread = (Arc::clone(&rtnl), target.clone());
    let applied = tokio::task::spawn_blocking(move || {
        isolation::isolate(&*for_thread.0, &for_thread.1, WhenAbsent::Error)
    })
    .await;
    match applied {
        Ok(Ok(report)) => IsolationOutcome::Applied(report),
        Ok(Err(IsolationError::NicNotFound { .. }))
            if held_by_database(config, container_name, target.mac).await =>
        {
            IsolationOutcome::HeldByContainer(container_name.to_owned())
        }
        Ok(Err(e)) => IsolationOutcome::Failed(e.to_string()),
        Err(e) => IsolationOutcome::Failed(format!("isolation thread failed: {e}")),
    }
}

/// Starts retrying a failed start-up isolation; the returned gate stays pending until the
/// retry succeeds (open) or gives up (refused).
fn start_isolation_retry(
    config: &AgentConfig,
    options: &AgentOptions,
    rtnl: &Arc<NetlinkHandle>,
    target: &IsolationTarget,
    stop: &tokio::sync::watch::Receiver<bool>,
    reason: String,
) -> DatabaseGate {
    let (gate, control) = DatabaseGate::pending(reason.clone());
    let retry = isolation_retry::Retry {
        rtnl: Arc::clone(rtnl),
        target: target.clone(),
        config: config.clone(),
        policy: options.isolation_retry,
        preflight_timeout: options.preflight_timeout,
        control,
        stop: stop.clone(),
    };
    tokio::spawn(isolation_retry::run(retry, reason));
    gate
}

/// Tells systemd `READY=1` once the isolation retry succeeds: readiness means isolated.
fn notify_ready_once_isolated(gate: DatabaseGate) {
    tokio::spawn(async move {
        if gate.decided(Duration::MAX).await.is_none() {
            notify("READY=1\nSTATUS=isolated after retrying");
        }
    });
}

/// Sends `WATCHDOG=1` at half systemd's `WatchdogSec=` for as long as the runtime runs: a
/// hung event loop stops the pings and systemd restarts the agent.
fn start_watchdog_pings() {
    let Some(interval) = watchdog_ping_interval() else {
        return;
    };
    info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog pings"
    );
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            notify("WATCHDOG=1");
        }
    });
}

/// Tells the conductor `failed to spawn` if the isolation retry gives up.
fn report_late_refusal(gate: DatabaseGate, service: Arc<GuestService>) {
    tokio::spawn(async move {
        let reason = gate.refused().await;
        service.heartbeat(ServiceStatus::FailedToSpawn).await;
        notify(&format!("STATUS=serving RPC; database refused: {reason}"));
    });
}

/// Keeps the management side as it was before isolation, for `isolate --verify` later. A
/// failure is logged, not fatal: isolation itself holds.
fn record_baseline(config: &AgentConfig, target: &IsolationTarget, report: &ApplyReport) {
    let state_dir = &config.guest.netiso.state_dir;
    match isolation::baseline::record(state_dir, target, &report.baseline) {
        Ok(path) => info!(file = %path.display(), "isolation baseline recorded"),
        Err(e) => warn!(error = %e, "`isolate --verify` will report the baseline as missing"),
    }
}

/// Fail closed on a tenant NIC file that is there but unusable (the database is refused
/// anyway): if the file still names a MAC plainly, that NIC is isolated and guarded all the
/// same, so that a typo in another key never leaves it on the VM. Returns the guard.
pub async fn isolate_refused_tenant_file(
    rtnl: Arc<NetlinkHandle>,
    config: &AgentConfig,
) -> Option<Guard> {
    let file = config.guest.netiso.tenant_nic_file.clone();
    let Some(mac) = TenantNic::mac_of_refused_file(&file) else {
        error!(file = %file.display(), "the tenant NIC cannot be identified from the file: nothing can be isolated");
        return None;
    };
    let target = IsolationTarget::new(mac, file);
    let for_thread = (Arc::clone(&rtnl), target.clone());
    let applied = tokio::task::spawn_blocking(move || {
        isolation::isolate(&*for_thread.0, &for_thread.1, WhenAbsent::Isolated)
    })
    .await;
    match applied {
        Ok(Ok(report)) => {
            warn!(mac = %target.mac, changes = report.changes.len(), "the NIC the unusable tenant NIC file names is isolated from the VM");
        }
        Ok(Err(e)) => {
            error!(error = %e, "cannot isolate the NIC the unusable tenant NIC file names")
        }
        Err(e) => error!(error = %e, "isolation thread failed"),
    }
    match Guard::start(rtnl, target, GuardOptions::default()) {
        Ok(guard) => {
            log_guard_reports(&guard);
            Some(guard)
        }
        Err(e) => {
            error!(error = %e, "cannot start the isolation guard");
            None
        }
    }
}

/// Runs the preflight from the agent's own namespace.
pub async fn run_preflight(
    config: &AgentConfig,
    rtnl: &dyn Rtnetlink,
    tenant_mac: Option<MacAddress>,
    timeout: Duration,
) -> PreflightReport {
    let endpoints = preflight::endpoints(&config.guest);
    preflight::run(rtnl, &endpoints, tenant_mac, timeout).await
}

fn registry_credentials(config: &GuestConfig) -> Option<RegistryCredentials> {
    match (
        &config.container_registry,
        &config.container_registry_username,
        &config.container_registry_password,
    ) {
        (Some(server), Some(username), Some(password)) => Some(RegistryCredentials {
            server: server.clone(),
            username: username.clone(),
            password: password.clone(),
        }),
        _ => None,
    }
}

fn database_settings(config: &AgentConfig, tenant_nic: Option<TenantNic>) -> DatabaseSettings {
    let guest = &config.guest;
    DatabaseSettings {
        guest_id: guest.guest_id.clone(),
        container_name: guest.netiso.database_container.clone(),
        docker_image: guest.datastore.as_ref().map(|d| d.docker_image.clone()),
        container_registry: guest.container_registry.clone(),
        default_version: guest.datastore_version.clone(),
        credentials: registry_credentials(guest),
        mode: guest.isolation_mode(),
        tenant_nic,
        tcp_ports: guest
            .datastore
            .as_ref()
            .map(|d| d.tcp_ports.clone())
            .unwrap_or_default(),
        mount_point: guest.datastore.as_ref().map(|d| d.mount_point.clone()),
        state_change_wait_time: guest.state_change_wait_time,
        state_dir: guest.netiso.state_dir.clone(),
        volume: guest.volume.clone(),
        fstab: guest.netiso.fstab_file.clone(),
        mysql: guest
            .datastore
            .as_ref()
            .filter(|d| crate::mysql::is_mysql(&d.manager))
            .map(|d| MysqlSettings {
                manager: d.manager.clone(),
                layout: Layout {
                    config_dir: guest.netiso.mysql_config_dir.clone(),
                    socket_dir: guest.netiso.mysql_socket_dir.clone(),
                    mount_point: d.mount_point.clone(),
                    uid: d.database_service_uid,
                    gid: d.database_service_gid,
                },
            }),
    }
}

fn log_guard_reports(guard: &Guard) {
    let mut reports = guard.subscribe();
    tokio::spawn(async move {
        loop {
            match reports.recv().await {
                Ok(GuardReport::Reisolated(report)) => warn!(
                    changes = report.changes.len(),
                    "the tenant NIC came back to the VM and was isolated again"
                ),
                Ok(GuardReport::Failed(e)) => {
                    error!(error = %e, "the tenant NIC came back and could not be isolated again")
                }
                Ok(GuardReport::EventsFailed(e)) => {
                    warn!(error = %e, "link events failed; the guard carries on with periodic checks")
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "guard reports were missed")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

fn notify(state: &str) {
    if let Err(e) = sd_notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Starts the RPC server, retrying while the broker is unreachable, until `shutdown` (which
/// also ends an attempt still waiting for a connection: an unreachable broker, or one whose
/// TLS certificate is refused, must not hold up a SIGTERM).
async fn start_server(
    transport: &Transport,
    config: &ServerConfig,
    make_dispatcher: &dyn Fn() -> netiso_messaging::Dispatcher,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<RpcServer> {
    loop {
        let started = tokio::select! {
            started = RpcServer::start(transport, config.clone(), make_dispatcher()) => started,
            _ = shutdown.wait_for(|stop| *stop) => return None,
        };
        match started {
            Ok(server) => return Some(server),
            Err(e) => {
                error!(error = %e, retry_in_s = RPC_RETRY_INTERVAL.as_secs(), "cannot start the RPC server");
                notify(&format!("STATUS=waiting for the broker: {e}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RPC_RETRY_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}

/// Runs the agent until `shutdown` resolves, then finishes in-flight requests (at most
/// `options.shutdown_timeout`) and returns. Each step is a phase (`agent/phases.rs`); the order
/// is the promise: the tenant NIC is isolated before anything is asked of the network.
pub async fn run(
    config: AgentConfig,
    options: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let mut stop = stop_on(shutdown);
    start_watchdog_pings();
    let guest = &config.guest;
    info!(guest_id = %guest.guest_id, mode = %guest.isolation_mode(), setting = %guest.network_isolation_setting, "starting the guest agent");
    let rtnl = Arc::new(NetlinkHandle::current()?);

    let mut safety = phases::configuration(&config, &rtnl).await;
    phases::isolation(&config, &options, &rtnl, &stop, &mut safety).await;
    phases::readiness(&config, &safety);
    phases::preflight(&config, &options, &rtnl, &mut safety).await;
    let Some(rpc) = phases::rpc(&config, &mut safety, &mut stop).await? else {
        return Ok(());
    };
    phases::heartbeats(&rpc, options.heartbeat_interval, &mut stop).await;
    phases::shutdown(rpc, safety.guard, options.shutdown_timeout).await;
    info!("guest agent stopped");
    Ok(())
}

/// A receiver that turns true once `shutdown` resolves; every phase that waits watches it.
fn stop_on(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    stop_rx
}

/// Parses `--config-dir`/`--config-file` lists into sources (oslo order).
pub fn config_sources(config_files: Vec<PathBuf>, config_dirs: Vec<PathBuf>) -> ConfigSources {
    if config_files.is_empty() && config_dirs.is_empty() {
        return ConfigSources::guest_default();
    }
    ConfigSources {
        config_files,
        config_dirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_config(dir: &std::path::Path, netiso: &str, isolated: bool) -> GuestConfig {
        let conf = dir.join("guest.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nguest_id = g1\nnetwork_isolation = {isolated}\n\
                 [netiso]\ntenant_nic_file = {}\n{netiso}",
                dir.join("eth1.json").display()
            ),
        )
        .expect("write conf");
        GuestConfig::load(&ConfigSources {
            config_files: vec![conf],
            config_dirs: Vec::new(),
        })
        .expect("valid configuration")
    }

    #[test]
    fn containerd_refuses_bridged_mode_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("eth1.json"), "{}").expect("write eth1.json");
        let bridged = guest_config(dir.path(), "runtime = containerd\n", false);
        let reason = unsupported_mode(&bridged).expect("bridged containerd is refused");
        assert!(
            reason.contains("`database`") && reason.contains("unsupported with containerd"),
            "{reason}"
        );
        assert_eq!(
            unsupported_mode(&guest_config(dir.path(), "runtime = containerd\n", true)),
            None,
            "isolated containerd"
        );
        assert_eq!(
            unsupported_mode(&guest_config(dir.path(), "", false)),
            None,
            "bridged docker"
        );
        std::fs::remove_file(dir.path().join("eth1.json")).expect("remove eth1.json");
        assert!(
            unsupported_mode(&guest_config(dir.path(), "runtime = containerd\n", true)).is_some(),
            "no eth1.json is bridged mode"
        );
    }

    #[test]
    fn the_rabbit_heartbeat_threshold_reaches_the_transport() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = guest_config(dir.path(), "", false);
        assert_eq!(rabbit_options(&default).heartbeat_timeout_threshold, 60);
        assert_eq!(
            rabbit_options(&default).publish_timeout,
            Duration::from_secs(135),
            "a publish outlives a dead connection's two missed heartbeats"
        );
        let conf = dir.path().join("rabbit.conf");
        std::fs::write(
            &conf,
            "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 10\n",
        )
        .expect("write conf");
        let guest = dir.path().join("guest.conf");
        let configured = GuestConfig::load(&ConfigSources {
            config_files: vec![guest, conf],
            config_dirs: Vec::new(),
        })
        .expect("valid configuration");
        assert_eq!(rabbit_options(&configured).heartbeat_timeout_threshold, 10);
        assert_eq!(
            rabbit_options(&configured).publish_timeout,
            Duration::from_secs(60),
            "never shorter than the transport's own default"
        );
    }
}
