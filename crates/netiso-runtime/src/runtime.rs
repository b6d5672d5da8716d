//! The runtime-neutral trait the guest drives, and what it reports back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use netiso_netlink::{Link, Namespace, NetlinkHandle, Rtnetlink};

use crate::error::{BackendError, RuntimeError};
use crate::image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
use crate::spec::{ContainerSpec, HostnicNetworkSpec};

/// How often [`ContainerRuntime::wait_healthy`] looks at the container.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The container operations the guest needs, the same for Docker and containerd, so that
/// orchestration code and its tests never see a client library.
///
/// The guest asks three things of a runtime: make the datastore image available
/// ([`ensure_image`](Self::ensure_image)), run the database with a network attachment
/// ([`ensure_hostnic_network`](Self::ensure_hostnic_network) then [`run`](Self::run)), and
/// say where the database's network namespace is
/// ([`network_namespace`](Self::network_namespace), and from it which NICs the database
/// holds, [`network_interfaces`](Self::network_interfaces)); the rest manages the
/// container's life. Each runtime answers in its own way, so that no caller derives one answer from
/// another runtime's records.
///
/// Containers are addressed by name (or id). Every method is one bounded daemon call
/// except the provided ones, which build on the others: `run` creates and starts,
/// `wait_healthy` polls with a deadline, and `network_interfaces` reads the namespace that
/// `network_namespace` names.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Makes `image` available locally, pulling per `policy` (with `credentials` when they
    /// belong to the image's registry) and reporting each progress event.
    async fn ensure_image(
        &self,
        image: &ImageReference,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageStatus, RuntimeError>;

    /// Creates the hostnic network, or checks an existing one of that name: reused when
    /// driver, MAC, subnets and gateways match; otherwise recreated when no container uses
    /// it, else [`RuntimeError::NetworkMismatchInUse`]. Never silently reuses a stale one.
    async fn ensure_hostnic_network(
        &self,
        network: &HostnicNetworkSpec,
    ) -> Result<NetworkStatus, RuntimeError>;

    /// Removes a network; `Ok(false)` when it did not exist.
    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError>;

    /// Creates (does not start) the container; returns its id.
    /// [`RuntimeError::ContainerExists`] when the name is taken.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts a container; starting a running one is not an error.
    async fn start(&self, name: &str) -> Result<(), RuntimeError>;

    /// Stops a container: the stop signal, then a kill after `timeout`. Stopping a stopped
    /// one is not an error.
    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Stops (with `timeout`) and starts a container again.
    async fn restart(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Removes a container (`force` kills a running one first); `Ok(false)` when it did not
    /// exist.
    async fn remove(&self, name: &str, force: bool) -> Result<bool, RuntimeError>;

    /// Everything the guest needs to know about one container, `None` when it does not exist.
    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError>;

    /// All containers, running or not.
    async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError>;

    /// Where container `name`'s network namespace is, so that the guest can look inside
    /// (the tenant NIC, the database's port) without knowing how the runtime keeps it;
    /// `None` when the container does not exist or has no namespace now.
    async fn network_namespace(&self, name: &str)
    -> Result<Option<NetworkNamespace>, RuntimeError>;

    /// The network interfaces in container `name`'s namespace, so that the guest can tell
    /// whether the database holds the tenant NIC; `None` when it has no namespace now.
    /// Read through rtnetlink on a blocking thread, the agent's own threads never entering
    /// the namespace.
    async fn network_interfaces(&self, name: &str) -> Result<Option<Vec<Link>>, RuntimeError> {
        let Some(namespace) = self.network_namespace(name).await? else {
            return Ok(None);
        };
        let path = namespace.path();
        let unreadable = |source: BackendError| RuntimeError::Backend {
            operation: "read the network interfaces of container",
            target: name.to_owned(),
            source,
        };
        tokio::task::spawn_blocking(move || {
            Namespace::open_path(&path)
                .and_then(|ns| NetlinkHandle::in_namespace(&ns))
                .and_then(|handle| handle.links())
        })
        .await
        .map_err(|e| unreadable(Box::new(e)))?
        .map(Some)
        .map_err(|e| unreadable(Box::new(e)))
    }

    /// Creates and starts the container.
    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = self.create_container(spec).await?;
        self.start(&spec.name).await?;
        Ok(id)
    }

    /// Waits until the container's health check reports healthy (Trove waits
    /// `state_change_wait_time`). A container without a health check counts as healthy once
    /// it runs. Fails early when the container stops.
    async fn wait_healthy(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ContainerInfo, RuntimeError> {
        let started = Instant::now();
        loop {
            let info = self
                .inspect(name)
                .await?
                .ok_or_else(|| RuntimeError::ContainerNotFound(name.to_owned()))?;
            let ready = info.status == ContainerStatus::Running
                && matches!(info.health, None | Some(HealthStatus::Healthy));
            let gone = matches!(info.status, ContainerStatus::Exited | ContainerStatus::Dead);
            if ready {
                return Ok(info);
            }
            if gone || started.elapsed() >= timeout {
                return Err(RuntimeError::HealthTimeout {
                    container: name.to_owned(),
                    waited: started.elapsed(),
                    last_state: info.describe_state(),
                });
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }
}

/// What `ensure_hostnic_network` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkStatus {
    /// No network of that name existed; it was created.
    Created {
        /// Network id.
        id: String,
    },
    /// A matching network existed and is used as it is.
    Reused {
        /// Network id.
        id: String,
    },
    /// A stale, unused network was removed and created again.
    Recreated {
        /// New network id.
        id: String,
        /// What differed, as `what: existing X, wanted Y`.
        differences: Vec<String>,
    },
}

impl NetworkStatus {
    /// The network id either way.
    pub fn id(&self) -> &str {
        match self {
            Self::Created { id } | Self::Reused { id } | Self::Recreated { id, .. } => id,
        }
    }
}

/// Where a container's network namespace is, and what keeps it alive, so that a caller
/// knows whether the path outlives the container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkNamespace {
    /// A namespace file the runtime mounted for the container: Docker's sandbox key under
    /// its exec root, or the named namespace the containerd adapter prepares with the tenant
    /// NIC inside. It lasts as long as the runtime keeps the container's sandbox.
    Mounted(PathBuf),
    /// The namespace of the container's main process (`/proc/<pid>/ns/net`), for a
    /// container whose runtime keeps no file of its own for it; valid only while that
    /// process runs.
    Process(u32),
}

impl NetworkNamespace {
    /// The file to open (`setns`, rtnetlink) to enter the namespace.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Mounted(path) => path.clone(),
            Self::Process(pid) => Path::new("/proc")
                .join(pid.to_string())
                .join("ns")
                .join("net"),
        }
    }
}

/// Container lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by the daemon's restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed half-way).
    Dead,
    /// A state this adapter does not know.
    Unknown,
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        })
    }
}

/// Health-check verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Within the start period or before the first probe.
    Starting,
    /// Last probes passed.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// One network endpoint of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC address of the container's interface.
    pub mac_address: Option<String>,
}

/// One container, as the guest needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// The image as configured.
    pub image: String,
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Exit code of the last run, when it exited.
    pub exit_code: Option<i64>,
    /// Health verdict, `None` without a health check.
    pub health: Option<HealthStatus>,
    /// The main process's pid on the VM, while it runs.
    pub pid: Option<u32>,
    /// The namespace file the runtime keeps for the container, as it reports it (Docker's
    /// `SandboxKey` while the container runs, the containerd adapter's named namespace
    /// while it exists). To enter the container's namespace, ask
    /// [`ContainerRuntime::network_namespace`], which also covers containers without one.
    pub sandbox_key: Option<PathBuf>,
    /// How often the daemon restarted it.
    pub restart_count: u64,
    /// The daemon's last error for it (e.g. a failed network join).
    pub error: Option<String>,
    /// Endpoints by network name.
    pub networks: BTreeMap<String, EndpointInfo>,
}

impl ContainerInfo {
    /// `running (healthy)`, `exited (code 137)`…, for logs and errors.
    pub fn describe_state(&self) -> String {
        let mut text = self.status.to_string();
        if let Some(health) = self.health {
            text.push_str(&format!(" ({health})"));
        }
        if self.status == ContainerStatus::Exited
            && let Some(code) = self.exit_code
        {
            text.push_str(&format!(" (code {code})"));
        }
        if let Some(error) = self.error.as_deref().filter(|e| !e.is_empty()) {
            text.push_str(&format!(": {error}"));
        }
        text
    }
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Container id.
    pub id: String,
    /// Names, without Docker's leading `/`.
    pub names: Vec<String>,
    /// The image as configured.
    pub image: String,
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}
