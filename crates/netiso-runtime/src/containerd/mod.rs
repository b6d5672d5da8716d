//! The containerd adapter: [`ContainerRuntime`] over containerd's gRPC API
//! (`containerd-client`, `tonic`) on its unix socket, in a containerd namespace of our own.
//!
//! Written for Debian's containerd 1.6, which has no Transfer service: images are pulled
//! with `oci-client` and written through the content, images, snapshots and diff services
//! ([`pull`]). Containers get the tenant NIC through a named network namespace this adapter
//! prepares ([`tenant`]) and joins in the OCI spec ([`oci`]); everything a restarted agent
//! needs to carry on is kept in containerd (container labels) and in the kernel (the
//! namespace, the NIC's alias), never only in memory.
//!
//! Only isolated mode (`network_isolation = True`) is supported: a bridged container is
//! refused with [`RuntimeError::InvalidSpec`], and [`require_isolation`] lets the guest say
//! so at start-up. Restart policies go to containerd's restart monitor (its
//! `containerd.io/restart.*` labels: `running` after a start, removed before a stop so the
//! monitor neither restarts nor SIGKILLs a task inside its grace period;
//! containerd 1.6 checks every 10 s and restarts whatever should run). Health checks, which
//! containerd does not have, run as exec probes when `inspect` finds one due ([`health`]).

pub mod client;
pub mod health;
pub mod oci;
pub mod pull;
pub mod tenant;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, StartRequest, UpdateContainerRequest,
    WaitRequest,
};
use containerd_client::types::v1::{Process, Status as TaskStatus};
use netiso_config::isolation::IsolationMode;
use netiso_config::tenant_nic::{Ipv6Gateway, TenantIpv4, TenantIpv6, TenantNic};
use netiso_netlink::Namespace;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tracing::{debug, info, warn};

use self::client::{Connection, backend, is_already_exists, is_not_found};
use self::oci::{ImageDefaults, Placement, SPEC_TYPE_URL};
use self::pull::{Pull, chain_ids, diff_ids, local_image, parse_manifest, read_content};
use crate::error::RuntimeError;
use crate::image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerStatus, ContainerSummary, EndpointInfo, HealthStatus,
    NetworkNamespace, NetworkStatus,
};
use crate::spec::{
    ContainerSpec, HealthCheck, HostnicNetworkSpec, NetworkAttachment, RestartPolicy,
};

/// Where Debian's containerd listens by default.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The containerd namespace the guest uses.
pub const DEFAULT_NAMESPACE: &str = "trove";
/// The snapshotter images are unpacked into.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// runc through containerd's v2 shim.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// The agent's own namespace: where the tenant NIC lives while no container has it.
pub const DEFAULT_VM_NETNS: &str = "/proc/self/ns/net";
/// Container logs (`<dir>/<containerd namespace>/<container>.log`).
pub const DEFAULT_LOG_DIR: &str = "/var/log/trove-netiso/containers";
/// Parent of the containers' cgroups.
pub const DEFAULT_CGROUP_PARENT: &str = "trove-netiso";

/// Label prefix of everything this adapter records on a container.
const LABEL_PREFIX: &str = "org.openstack.trove.netiso";
const LABEL_NETWORK: &str = "org.openstack.trove.netiso/network";
const LABEL_NETNS: &str = "org.openstack.trove.netiso/netns";
const LABEL_TENANT_NIC: &str = "org.openstack.trove.netiso/tenant-nic";
const LABEL_NIC_NAME: &str = "org.openstack.trove.netiso/nic-name";
const LABEL_EXIT_CODE: &str = "org.openstack.trove.netiso/exit-code";
const LABEL_LOG: &str = "org.openstack.trove.netiso/log";
/// containerd's restart monitor keeps a container's task in this state (`running`/`stopped`).
const RESTART_STATUS_LABEL: &str = "containerd.io/restart.status";
/// Where the restart monitor sends a restarted task's output.
const RESTART_LOG_URI_LABEL: &str = "containerd.io/restart.loguri";
/// The restart policy (honoured by containerd 1.7+; 1.6 restarts whatever is `running`).
const RESTART_POLICY_LABEL: &str = "containerd.io/restart.policy";
/// Set when a stop was asked for, so `unless-stopped` does not restart it.
const RESTART_EXPLICITLY_STOPPED_LABEL: &str = "containerd.io/restart.explicitly-stopped";
/// How often the restart monitor restarted the task (containerd 1.7+).
const RESTART_COUNT_LABEL: &str = "containerd.io/restart.count";
/// How long the lease guarding a container's creation outlives a crashed agent.
const CREATE_LEASE_TTL: Duration = Duration::from_secs(600);
/// How long a killed task may take to go.
const KILL_GRACE: Duration = Duration::from_secs(30);
/// The type URL containerd expects on an exec process spec.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// How to reach containerd and where containers and their networks live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace for our images and containers.
    pub namespace: String,
    /// Snapshotter for image layers and container root filesystems.
    pub snapshotter: String,
    /// containerd runtime name.
    pub runtime: String,
    /// The VM namespace (a netns path): the tenant NIC comes from and returns to it. The
    /// agent's own in the product; tests pass a throwaway one.
    pub vm_netns: PathBuf,
    /// `eth1.json`: when set, addresses, gateways and host routes come from it (as the
    /// Docker plugin reads them), checked against the network's MAC.
    pub tenant_nic_file: Option<PathBuf>,
    /// Where task stdout/stderr go.
    pub log_dir: PathBuf,
    /// Parent cgroup (relative) of every container.
    pub cgroup_parent: String,
    /// Registries spoken to over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
}

impl ContainerdConfig {
    /// Defaults for everything but the socket and namespace.
    pub fn new(socket: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.into(),
            snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
            runtime: DEFAULT_RUNTIME.to_owned(),
            vm_netns: PathBuf::from(DEFAULT_VM_NETNS),
            tenant_nic_file: None,
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            cgroup_parent: DEFAULT_CGROUP_PARENT.to_owned(),
            insecure_registries: Vec::new(),
        }
    }
}

/// Refuses, at start-up, a guest configured for bridged networking on containerd, with the
/// same error `create` gives for `container`, so the guest can say so before any request.
pub fn require_isolation(mode: &IsolationMode, container: &str) -> Result<(), RuntimeError> {
    match mode {
        IsolationMode::Isolated { .. } => Ok(()),
        _ => Err(bridged_unsupported(container)),
    }
}

fn bridged_unsupported(container: &str) -> RuntimeError {
    RuntimeError::InvalidSpec {
        container: container.to_owned(),
        problem: "bridged networking (network_isolation = False) is unsupported with \
                  containerd; enable network isolation or use the Docker runtime"
            .to_owned(),
    }
}

/// A connection to containerd plus the VM namespace and registry client.
pub struct ContainerdRuntime {
    connection: Connection,
    config: ContainerdConfig,
    vm: Arc<Namespace>,
    registry: oci_client::Client,
    networks: Mutex<BTreeMap<String, HostnicNetworkSpec>>,
    health: health::HealthTracker,
    version: String,
}

impl std::fmt::Debug for ContainerdRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdRuntime")
            .field("config", &self.config)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// An image resolved from the local store.
struct LocalImage {
    config_digest: String,
    defaults: ImageDefaults,
    top_chain: Option<String>,
}

impl ContainerdRuntime {
    /// Connects and checks that containerd answers and the VM namespace opens, so a wrong
    /// socket or path shows at start-up.
    pub async fn connect(config: ContainerdConfig) -> Result<Self, RuntimeError> {
        let socket = config.socket.display().to_string();
        let (connection, version) = Connection::connect(&socket, &config.namespace).await?;
        let vm = Namespace::open_path(&config.vm_netns).map_err(|e| RuntimeError::Backend {
            operation: "open VM network namespace",
            target: config.vm_netns.display().to_string(),
            source: Box::new(e),
        })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure_registries.clone()),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        });
        info!(socket, version, namespace = %config.namespace, "connected to containerd");
        let runtime = Self {
            connection,
            config,
            vm: Arc::new(vm),
            registry,
            networks: Mutex::new(BTreeMap::new()),
            health: health::HealthTracker::default(),
            version,
        };
        runtime.drop_stale_leases().await?;
        Ok(runtime)
    }

    /// containerd's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The configuration in use.
    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// The named network namespace this adapter uses for container `name`.
    pub fn netns_name(&self, name: &str) -> String {
        format!("netiso-{}-{name}", self.config.namespace)
    }

    /// The cgroup (relative path) of container `name`.
    pub fn cgroups_path(&self, name: &str) -> String {
        format!(
            "/{}/{}/{name}",
            self.config.cgroup_parent, self.config.namespace
        )
    }

    /// The task output of container `name`, as a containerd log URI.
    pub fn log_uri(&self, name: &str) -> String {
        format!("file://{}", self.log_path(name).display())
    }

    /// The log file of container `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.config
            .log_dir
            .join(&self.config.namespace)
            .join(format!("{name}.log"))
    }

    /// Prepares the network namespace of container `name` with `nic` inside, as
    /// `create_container` does first; public so a crash right after it can be tested.
    pub async fn prepare_network(
        &self,
        name: &str,
        nic: &TenantNic,
    ) -> Result<tenant::PreparedNamespace, RuntimeError> {
        let vm = Arc::clone(&self.vm);
        let netns = self.netns_name(name);
        let nic = nic.clone();
        let target = netns.clone();
        blocking("prepare container network", &target, move || {
            tenant::prepare(&vm, &netns, &nic)
        })
        .await
    }

    async fn release_network(
        &self,
        name: &str,
        nic: Option<TenantNic>,
        fallback_name: Option<String>,
    ) -> Result<(), RuntimeError> {
        let vm = Arc::clone(&self.vm);
        let netns = self.netns_name(name);
        let target = netns.clone();
        let released = blocking("return the tenant NIC", &target, move || {
            tenant::release(
                &vm,
                &netns,
                nic.as_ref().map(|n| n.mac_address),
                fallback_name.as_deref(),
            )
        })
        .await?;
        debug!(container = name, ?released, "container network released");
        Ok(())
    }

    /// Deletes leases this adapter made in processes that are gone (an agent crash mid-pull
    /// or mid-create), so nothing they protected lingers until their expiry.
    async fn drop_stale_leases(&self) -> Result<(), RuntimeError> {
        use containerd_client::services::v1::ListRequest;
        let filter = format!("labels.\"{}\"", client::LEASE_OWNER_LABEL);
        let leases = self
            .connection
            .leases()
            .list(self.connection.request(ListRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|e| backend("list leases", self.connection.namespace(), e))?
            .into_inner()
            .leases;
        for lease in leases {
            let pid = lease
                .id
                .split('-')
                .nth(2)
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                info!(lease = %lease.id, "removing a lease left by a crashed agent");
                self.connection
                    .drop_lease(client::Lease { id: lease.id })
                    .await?;
            }
        }
        Ok(())
    }

    async fn container(&self, name: &str) -> Result<Option<Container>, RuntimeError> {
        let request = self.connection.request(GetContainerRequest {
            id: name.to_owned(),
        });
        match self.connection.containers().get(request).await {
            Ok(response) => Ok(response.into_inner().container),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend("get container", name, e)),
        }
    }

    async fn task(&self, name: &str) -> Result<Option<Process>, RuntimeError> {
        let request = self.connection.request(GetRequest {
            container_id: name.to_owned(),
            exec_id: String::new(),
        });
        match self.connection.tasks().get(request).await {
            Ok(response) => Ok(response.into_inner().process),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend("get task", name, e)),
        }
    }

    /// Reads the image's manifest and config from the content store.
    async fn local_image(
        &self,
        image: &ImageReference,
    ) -> Result<Option<LocalImage>, RuntimeError> {
        let Some(target) = local_image(&self.connection, image).await? else {
            return Ok(None);
        };
        let broken = |problem: pull::ImageMetadataError| RuntimeError::PullFailed {
            image: image.to_string(),
            registry: image.registry().to_owned(),
            message: format!("local image is unusable ({problem}); pull it again"),
        };
        let mut manifest_digest = target.digest.clone();
        if target.media_type == pull::OCI_INDEX || target.media_type == pull::DOCKER_MANIFEST_LIST {
            let index = read_content(&self.connection, &target.digest).await?;
            manifest_digest = pull::select_platform(&index).map_err(broken)?.digest;
        }
        let manifest_bytes = read_content(&self.connection, &manifest_digest).await?;
        let manifest = parse_manifest(&manifest_bytes).map_err(broken)?;
        let config = read_content(&self.connection, &manifest.config.digest).await?;
        let defaults = ImageDefaults::from_config(&config).map_err(broken)?;
        let top_chain = chain_ids(&diff_ids(&config).map_err(broken)?).pop();
        Ok(Some(LocalImage {
            config_digest: manifest.config.digest,
            defaults,
            top_chain,
        }))
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let request = self.connection.request(StatSnapshotRequest {
            snapshotter: self.config.snapshotter.clone(),
            key: key.to_owned(),
        });
        match self.connection.snapshots().stat(request).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(backend("stat snapshot", key, e)),
        }
    }

    async fn remove_snapshot(&self, key: &str) -> Result<(), RuntimeError> {
        let request = self.connection.request(RemoveSnapshotRequest {
            snapshotter: self.config.snapshotter.clone(),
            key: key.to_owned(),
        });
        match self.connection.snapshots().remove(request).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend("remove snapshot", key, e)),
        }
    }

    /// The tenant NIC a hostnic attachment stands for: `eth1.json` when configured (its MAC
    /// must be the network's), else the network's pools with the attachment's addresses.
    fn tenant_nic_for(&self, spec: &ContainerSpec) -> Result<(String, TenantNic), RuntimeError> {
        let NetworkAttachment::Hostnic {
            network,
            ipv4,
            ipv6,
        } = &spec.network
        else {
            return Err(bridged_unsupported(&spec.name));
        };
        let invalid = |problem: String| RuntimeError::InvalidSpec {
            container: spec.name.clone(),
            problem,
        };
        let definition = self
            .networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(network)
            .cloned()
            .ok_or_else(|| {
                invalid(format!(
                    "network `{network}` is unknown: call ensure_hostnic_network first"
                ))
            })?;
        if let Some(file) = &self.config.tenant_nic_file {
            let nic = TenantNic::read(file).map_err(|e| invalid(e.to_string()))?;
            if nic.mac_address != definition.mac_address {
                return Err(invalid(format!(
                    "{} has MAC {}, network `{network}` has {}",
                    file.display(),
                    nic.mac_address,
                    definition.mac_address
                )));
            }
            let v4 = nic.ipv4.as_ref().map(|v| v.address);
            let v6 = nic.ipv6.as_ref().map(|v| v.address);
            if (ipv4.is_some() && *ipv4 != v4) || (ipv6.is_some() && *ipv6 != v6) {
                return Err(invalid(format!(
                    "the attachment's addresses differ from {}",
                    file.display()
                )));
            }
            return Ok((network.clone(), nic));
        }
        let tenant_ipv4 = match (definition.ipv4, ipv4) {
            (Some(pool), Some(address)) => match pool.subnet {
                ipnet::IpNet::V4(cidr) if cidr.contains(address) => Some(TenantIpv4 {
                    address: *address,
                    cidr,
                    gateway: pool.gateway.and_then(|g| match g {
                        std::net::IpAddr::V4(g) => Some(g),
                        std::net::IpAddr::V6(_) => None,
                    }),
                    host_routes: Vec::new(),
                }),
                _ => {
                    return Err(invalid(format!(
                        "{address} is not in the network's IPv4 subnet"
                    )));
                }
            },
            (None, Some(address)) => {
                return Err(invalid(format!(
                    "{address}: network `{network}` has no IPv4 pool"
                )));
            }
            _ => None,
        };
        let tenant_ipv6 = match (definition.ipv6, ipv6) {
            (Some(pool), Some(address)) => match pool.subnet {
                ipnet::IpNet::V6(cidr) if cidr.contains(address) => Some(TenantIpv6 {
                    address: *address,
                    cidr,
                    host_routes: Vec::new(),
                    gateway: match pool.gateway {
                        Some(std::net::IpAddr::V6(g)) => Ipv6Gateway::Dhcpv6Stateful(Some(g)),
                        _ => Ipv6Gateway::RouterAdvertisement,
                    },
                }),
                _ => {
                    return Err(invalid(format!(
                        "{address} is not in the network's IPv6 subnet"
                    )));
                }
            },
            (None, Some(address)) => {
                return Err(invalid(format!(
                    "{address}: network `{network}` has no IPv6 pool"
                )));
            }
            _ => None,
        };
        Ok((
            network.clone(),
            TenantNic {
                mac_address: definition.mac_address,
                ipv4: tenant_ipv4,
                ipv6: tenant_ipv6,
            },
        ))
    }

    async fn set_label(
        &self,
        container: &Container,
        key: &str,
        value: String,
    ) -> Result<(), RuntimeError> {
        self.set_labels(container, &[(key, Some(value))]).await
    }

    /// Sets (`Some`) or deletes (`None`) some labels of a container, leaving the others
    /// alone (one field mask per key).
    async fn set_labels(
        &self,
        container: &Container,
        labels: &[(&str, Option<String>)],
    ) -> Result<(), RuntimeError> {
        let mut updated = container.clone();
        for (key, value) in labels {
            match value {
                Some(value) => updated.labels.insert((*key).to_owned(), value.clone()),
                None => updated.labels.remove(*key),
            };
        }
        let request = self.connection.request(UpdateContainerRequest {
            container: Some(updated),
            update_mask: Some(prost_types::FieldMask {
                paths: labels
                    .iter()
                    .map(|(key, _)| format!("labels.{key}"))
                    .collect(),
            }),
        });
        self.connection
            .containers()
            .update(request)
            .await
            .map(|_| ())
            .map_err(|e| backend("update container labels", &container.id, e))
    }

    /// The health verdict of a running container with a health check, probing when one is due.
    async fn health_of(&self, container: &Container, pid: u32) -> Option<HealthStatus> {
        let check = health::decode(container.labels.get(health::LABEL_HEALTHCHECK)?)?;
        if let Some(cached) = self
            .health
            .cached(&container.id, pid, check.interval, Instant::now())
        {
            return Some(cached);
        }
        let passed = self.probe(container, &check).await;
        Some(
            self.health
                .record(&container.id, pid, &check, passed, Instant::now()),
        )
    }

    /// Runs one probe as an exec process with the container's environment and user; any
    /// failure to run it counts as a failed probe.
    async fn probe(&self, container: &Container, check: &HealthCheck) -> bool {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let Some(args) = health::probe_args(check) else {
            return true;
        };
        let name = &container.id;
        let exec_id = format!(
            "health-{}-{}",
            std::process::id(),
            PROBES.fetch_add(1, Ordering::Relaxed)
        );
        let mut process = container
            .spec
            .as_ref()
            .and_then(|any| serde_json::from_slice::<serde_json::Value>(&any.value).ok())
            .and_then(|spec| spec.get("process").cloned())
            .unwrap_or_else(|| serde_json::json!({ "cwd": "/", "user": { "uid": 0, "gid": 0 } }));
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(false);
        let Ok(value) = serde_json::to_vec(&process) else {
            return false;
        };
        let tasks = self.connection.tasks();
        let exec = ExecProcessRequest {
            container_id: name.clone(),
            exec_id: exec_id.clone(),
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_owned(),
                value,
            }),
            ..ExecProcessRequest::default()
        };
        if let Err(e) = tasks.clone().exec(self.connection.request(exec)).await {
            debug!(container = %name, error = %e, "health probe could not be created");
            return false;
        }
        let started = tasks
            .clone()
            .start(self.connection.request(StartRequest {
                container_id: name.clone(),
                exec_id: exec_id.clone(),
            }))
            .await;
        let passed = match started {
            Ok(_) => {
                let wait = self.connection.unbounded(WaitRequest {
                    container_id: name.clone(),
                    exec_id: exec_id.clone(),
                });
                match tokio::time::timeout(check.timeout, tasks.clone().wait(wait)).await {
                    Ok(Ok(exit)) => exit.into_inner().exit_status == 0,
                    Ok(Err(e)) => {
                        debug!(container = %name, error = %e, "waiting for the health probe failed");
                        false
                    }
                    Err(_) => {
                        debug!(container = %name, timeout = ?check.timeout, "health probe timed out");
                        let kill = self.connection.request(KillRequest {
                            container_id: name.clone(),
                            exec_id: exec_id.clone(),
                            signal: SIGKILL,
                            all: false,
                        });
                        let _ = tasks.clone().kill(kill).await;
                        self.wait_exec(name, &exec_id).await;
                        false
                    }
                }
            }
            Err(e) => {
                debug!(container = %name, error = %e, "health probe did not start");
                false
            }
        };
        let delete = self.connection.request(DeleteProcessRequest {
            container_id: name.clone(),
            exec_id: exec_id.clone(),
        });
        if let Err(e) = tasks.clone().delete_process(delete).await
            && !is_not_found(&e)
        {
            debug!(container = %name, exec_id, error = %e, "deleting the health probe failed");
        }
        passed
    }

    /// Waits (bounded) for a killed exec process, so it can be deleted.
    async fn wait_exec(&self, name: &str, exec_id: &str) {
        let wait = self.connection.unbounded(WaitRequest {
            container_id: name.to_owned(),
            exec_id: exec_id.to_owned(),
        });
        if tokio::time::timeout(KILL_GRACE, self.connection.tasks().wait(wait))
            .await
            .is_err()
        {
            warn!(
                container = name,
                exec_id, "a killed health probe did not exit"
            );
        }
    }

    /// Tells containerd's restart monitor to keep the task running, for containers with a
    /// restart policy.
    async fn mark_started(&self, container: &Container) -> Result<(), RuntimeError> {
        if !container.labels.contains_key(RESTART_POLICY_LABEL) {
            return Ok(());
        }
        self.set_labels(
            container,
            &[
                (RESTART_STATUS_LABEL, Some("running".to_owned())),
                (RESTART_EXPLICITLY_STOPPED_LABEL, Some("false".to_owned())),
            ],
        )
        .await
    }

    /// Deletes the task (it must have exited), records its exit code and removes its cgroups.
    async fn delete_task(&self, container: &Container) -> Result<(), RuntimeError> {
        let request = self.connection.request(DeleteTaskRequest {
            container_id: container.id.clone(),
        });
        match self.connection.tasks().delete(request).await {
            Ok(response) => {
                let exit = response.into_inner().exit_status;
                self.set_label(container, LABEL_EXIT_CODE, exit.to_string())
                    .await?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend("delete task", &container.id, e)),
        }
        remove_cgroups(&self.cgroups_path(&container.id));
        Ok(())
    }

    async fn kill(&self, name: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let request = self.connection.request(KillRequest {
            container_id: name.to_owned(),
            exec_id: String::new(),
            signal,
            all,
        });
        match self.connection.tasks().kill(request).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend("kill task", name, e)),
        }
    }

    /// Waits up to `limit` for the task to exit; `true` when it did.
    async fn wait_exit(&self, name: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let request = self.connection.unbounded(WaitRequest {
            container_id: name.to_owned(),
            exec_id: String::new(),
        });
        let mut tasks = self.connection.tasks();
        match tokio::time::timeout(limit, tasks.wait(request)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_not_found(&e) => Ok(true),
            Ok(Err(e)) => Err(backend("wait for task", name, e)),
            Err(_) => Ok(false),
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; the task is deleted afterwards.
    async fn stop_task(
        &self,
        container: &Container,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let name = &container.id;
        if container.labels.contains_key(RESTART_POLICY_LABEL) {
            // First, so containerd's restart monitor leaves the task alone: neither restarts
            // it nor (as a `stopped` status would make it) SIGKILLs it inside our grace period.
            self.set_labels(
                container,
                &[
                    (RESTART_STATUS_LABEL, None),
                    (RESTART_EXPLICITLY_STOPPED_LABEL, Some("true".to_owned())),
                ],
            )
            .await?;
        }
        if let Some(task) = self.task(name).await?
            && matches!(
                task.status(),
                TaskStatus::Running
                    | TaskStatus::Paused
                    | TaskStatus::Pausing
                    | TaskStatus::Created
            )
        {
            self.kill(name, SIGTERM, false).await?;
            if !self.wait_exit(name, timeout).await? {
                warn!(container = %name, ?timeout, "no exit after SIGTERM, sending SIGKILL");
                self.kill(name, SIGKILL, true).await?;
                if !self.wait_exit(name, KILL_GRACE).await? {
                    return Err(RuntimeError::Backend {
                        operation: "stop container",
                        target: name.clone(),
                        source: format!("still running {KILL_GRACE:?} after SIGKILL").into(),
                    });
                }
            }
        }
        self.delete_task(container).await
    }

    fn labels_nic(container: &Container) -> Option<TenantNic> {
        container
            .labels
            .get(LABEL_TENANT_NIC)
            .and_then(|json| TenantNic::parse(Path::new("<container label>"), json).ok())
    }
}

/// Runs blocking netlink work off the async threads.
async fn blocking<T, F>(operation: &'static str, target: &str, work: F) -> Result<T, RuntimeError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, tenant::TenantNetworkError> + Send + 'static,
{
    let backend_error = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Backend {
        operation,
        target: target.to_owned(),
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| backend_error(Box::new(e)))?
        .map_err(|e| backend_error(Box::new(e)))
}

/// Removes a container's cgroup directories (runc leaves them on cgroup v1) and their
/// parents while empty, up to the hierarchy root.
fn remove_cgroups(cgroups_path: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let relative = cgroups_path.trim_start_matches('/');
    for hierarchy in hierarchies.flatten() {
        let mut dir = hierarchy.path().join(relative);
        for _ in 0..relative.split('/').count() {
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                break;
            }
            if !dir.pop() {
                break;
            }
        }
    }
}

fn status_of(
    task: Option<&Process>,
    labels: &HashMap<String, String>,
) -> (ContainerStatus, Option<i64>) {
    match task {
        Some(task) => match task.status() {
            TaskStatus::Created => (ContainerStatus::Created, None),
            TaskStatus::Running => (ContainerStatus::Running, None),
            TaskStatus::Paused | TaskStatus::Pausing => (ContainerStatus::Paused, None),
            TaskStatus::Stopped => (ContainerStatus::Exited, Some(i64::from(task.exit_status))),
            TaskStatus::Unknown => (ContainerStatus::Unknown, None),
        },
        None => match labels.get(LABEL_EXIT_CODE).and_then(|c| c.parse().ok()) {
            Some(code) => (ContainerStatus::Exited, Some(code)),
            None => (ContainerStatus::Created, None),
        },
    }
}

/// The named namespace this adapter prepared for `container` (recorded in its labels),
/// while it exists: a VM reboot removes it until the next `start` prepares it again.
fn prepared_netns(container: &Container) -> Option<PathBuf> {
    container
        .labels
        .get(LABEL_NETNS)
        .map(|name| tenant::netns_path(name))
        .filter(|path| path.exists())
}

/// The prepared namespace first: the task joins it, so it is the task's namespace too, and
/// it outlives the task. A running task's own namespace only when the prepared one is gone
/// (its mount removed under a running task).
fn network_namespace_of(
    prepared: Option<PathBuf>,
    running_pid: Option<u32>,
) -> Option<NetworkNamespace> {
    prepared
        .map(NetworkNamespace::Mounted)
        .or(running_pid.map(NetworkNamespace::Process))
}

/// The restart monitor's policy for ours; `None` leaves the container alone.
fn restart_policy_label(policy: RestartPolicy) -> Option<&'static str> {
    match policy {
        RestartPolicy::No => None,
        RestartPolicy::UnlessStopped => Some("unless-stopped"),
        RestartPolicy::Always => Some("always"),
    }
}

/// Whether a name is a valid containerd identifier (and so a valid container name here).
fn is_valid_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn ensure_image(
        &self,
        image: &ImageReference,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageStatus, RuntimeError> {
        if policy == PullPolicy::IfMissing
            && let Some(local) = self.local_image(image).await?
        {
            let unpacked = match &local.top_chain {
                Some(chain) => self.snapshot_exists(chain).await?,
                None => true,
            };
            if unpacked {
                debug!(image = %image, "image present, not pulling");
                return Ok(ImageStatus::Present {
                    id: local.config_digest,
                });
            }
        }
        let auth = match credentials.filter(|c| c.applies_to(image)) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.expose().to_owned()),
            None => RegistryAuth::Anonymous,
        };
        info!(image = %image, registry = image.registry(), "pulling image into containerd");
        Pull {
            connection: &self.connection,
            registry: &self.registry,
            auth,
            snapshotter: &self.config.snapshotter,
        }
        .run(image, progress)
        .await?;
        let local = self
            .local_image(image)
            .await?
            .ok_or_else(|| RuntimeError::PullFailed {
                image: image.to_string(),
                registry: image.registry().to_owned(),
                message: "containerd has no image record after the pull".to_owned(),
            })?;
        Ok(ImageStatus::Pulled {
            id: local.config_digest,
        })
    }

    async fn ensure_hostnic_network(
        &self,
        network: &HostnicNetworkSpec,
    ) -> Result<NetworkStatus, RuntimeError> {
        let existing = self
            .networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&network.name)
            .cloned();
        let id = network.name.clone();
        let status = match existing {
            None => NetworkStatus::Created { id },
            Some(known) if known == *network => return Ok(NetworkStatus::Reused { id }),
            Some(known) => {
                let users: Vec<String> = self
                    .list()
                    .await?
                    .into_iter()
                    .filter(|c| c.labels.get(LABEL_NETWORK) == Some(&network.name))
                    .map(|c| c.id)
                    .collect();
                let mut differences = Vec::new();
                if known.mac_address != network.mac_address {
                    differences.push(format!(
                        "hostnic_mac: existing {}, wanted {}",
                        known.mac_address, network.mac_address
                    ));
                }
                if known.ipv4 != network.ipv4 || known.ipv6 != network.ipv6 {
                    differences.push("subnets or gateways differ".to_owned());
                }
                if !users.is_empty() {
                    return Err(RuntimeError::NetworkMismatchInUse {
                        network: network.name.clone(),
                        differences,
                        containers: users,
                    });
                }
                NetworkStatus::Recreated { id, differences }
            }
        };
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(network.name.clone(), network.clone());
        Ok(status)
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        Ok(self
            .networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let invalid = |problem: String| RuntimeError::InvalidSpec {
            container: spec.name.clone(),
            problem,
        };
        if !is_valid_id(&spec.name) {
            return Err(invalid(
                "the name must be letters and digits separated by single `.`, `_` or `-` \
                 (at most 76 characters)"
                    .to_owned(),
            ));
        }
        if spec.privileged {
            return Err(invalid(
                "privileged containers are not supported with containerd".to_owned(),
            ));
        }
        if spec
            .healthcheck
            .as_ref()
            .is_some_and(|c| !health::is_valid(c))
        {
            return Err(invalid(
                "the health check must be [\"CMD\", …], [\"CMD-SHELL\", script] or [\"NONE\"]"
                    .to_owned(),
            ));
        }
        let (network, nic) = self.tenant_nic_for(spec)?;
        if self.container(&spec.name).await?.is_some() {
            return Err(RuntimeError::ContainerExists(spec.name.clone()));
        }
        let image = self.local_image(&spec.image).await?.ok_or_else(|| {
            invalid(format!(
                "image {} is not in containerd: ensure_image first",
                spec.image
            ))
        })?;
        let cgroups_path = self.cgroups_path(&spec.name);
        let netns_path = tenant::netns_path(&self.netns_name(&spec.name));
        let oci_spec = oci::runtime_spec(
            spec,
            &image.defaults,
            &Placement {
                netns_path: &netns_path,
                cgroups_path: &cgroups_path,
            },
        )?;
        let spec_json = serde_json::to_vec(&oci_spec).map_err(|e| invalid(e.to_string()))?;

        let prepared = self.prepare_network(&spec.name, &nic).await?;
        let created = self
            .create_record(spec, &image, &network, &nic, &prepared, spec_json)
            .await;
        match created {
            Ok(()) => {
                info!(container = %spec.name, netns = %prepared.name, image = %spec.image, "container created");
                Ok(spec.name.clone())
            }
            Err(e) => {
                warn!(container = %spec.name, error = %e, "create failed, returning the tenant NIC");
                if let Err(undo) = self
                    .release_network(&spec.name, Some(nic), Some(prepared.original_name))
                    .await
                {
                    warn!(container = %spec.name, error = %undo, "returning the tenant NIC failed");
                }
                Err(e)
            }
        }
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        let container = self
            .container(name)
            .await?
            .ok_or_else(|| RuntimeError::ContainerNotFound(name.to_owned()))?;
        if let Some(task) = self.task(name).await? {
            match task.status() {
                TaskStatus::Running | TaskStatus::Pausing | TaskStatus::Paused => {
                    return self.mark_started(&container).await;
                }
                _ => self.delete_task(&container).await?,
            }
        }
        // After a VM reboot the namespace is gone and the NIC is home: prepare it again.
        if let Some(nic) = Self::labels_nic(&container) {
            self.prepare_network(name, &nic).await?;
        }
        let mounts = self
            .connection
            .snapshots()
            .mounts(self.connection.request(MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .map_err(|e| backend("get rootfs mounts", name, e))?
            .into_inner()
            .mounts;
        let log = self.log_path(name);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Backend {
                operation: "create log directory",
                target: dir.display().to_string(),
                source: Box::new(e),
            })?;
        }
        let log_uri = self.log_uri(name);
        let created = self
            .connection
            .tasks()
            .create(self.connection.request(CreateTaskRequest {
                container_id: name.to_owned(),
                rootfs: mounts,
                stdout: log_uri.clone(),
                stderr: log_uri,
                ..CreateTaskRequest::default()
            }))
            .await;
        match created {
            Ok(_) => {}
            // containerd's restart monitor started it in the meantime.
            Err(e) if is_already_exists(&e) => {
                debug!(
                    container = name,
                    "task created concurrently by the restart monitor"
                );
                return self.mark_started(&container).await;
            }
            Err(e) => return Err(backend("create task", name, e)),
        }
        // Arm the wait before the start, so even an instant exit is seen and logged.
        let wait_request = self.connection.unbounded(WaitRequest {
            container_id: name.to_owned(),
            exec_id: String::new(),
        });
        let mut waiter = self.connection.tasks();
        let id = name.to_owned();
        tokio::spawn(async move {
            match waiter.wait(wait_request).await {
                Ok(exit) => {
                    info!(container = %id, status = exit.into_inner().exit_status, "task exited")
                }
                Err(e) => debug!(container = %id, error = %e, "wait for task ended"),
            }
        });
        tokio::task::yield_now().await;
        if let Err(e) = self
            .connection
            .tasks()
            .start(self.connection.request(StartRequest {
                container_id: name.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            let failure = backend("start task", name, e);
            if let Err(undo) = self.delete_task(&container).await {
                warn!(container = name, error = %undo, "deleting the failed task failed");
            }
            return Err(failure);
        }
        info!(container = name, "container started");
        self.mark_started(&container).await
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let container = self
            .container(name)
            .await?
            .ok_or_else(|| RuntimeError::ContainerNotFound(name.to_owned()))?;
        self.stop_task(&container, timeout).await
    }

    async fn restart(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.stop(name, timeout).await?;
        self.start(name).await
    }

    async fn remove(&self, name: &str, force: bool) -> Result<bool, RuntimeError> {
        let Some(container) = self.container(name).await? else {
            // A crash between preparing the namespace and creating the record leaves a
            // namespace with the NIC inside: give it back.
            // A crash in the middle of an earlier remove leaves the rootfs snapshot too.
            if tenant::netns_path(&self.netns_name(name)).exists() {
                self.release_network(name, None, None).await?;
            }
            self.remove_snapshot(name).await?;
            return Ok(false);
        };
        if let Some(task) = self.task(name).await?
            && task.status() != TaskStatus::Stopped
        {
            if !force {
                return Err(RuntimeError::Backend {
                    operation: "remove container",
                    target: name.to_owned(),
                    source: "the container is running; stop it first or force".into(),
                });
            }
            if container.labels.contains_key(RESTART_POLICY_LABEL) {
                self.set_labels(&container, &[(RESTART_STATUS_LABEL, None)])
                    .await?;
            }
            self.kill(name, SIGKILL, true).await?;
            self.wait_exit(name, KILL_GRACE).await?;
        }
        // The record goes last: until then it says what is left to undo, so a remove cut
        // short by a crash is finished by the next one.
        self.delete_task(&container).await?;
        self.release_network(
            name,
            Self::labels_nic(&container),
            container.labels.get(LABEL_NIC_NAME).cloned(),
        )
        .await?;
        if !container.snapshot_key.is_empty() {
            self.remove_snapshot(&container.snapshot_key).await?;
        }
        match self
            .connection
            .containers()
            .delete(self.connection.request(DeleteContainerRequest {
                id: name.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend("delete container", name, e)),
        }
        if let Err(e) = std::fs::remove_file(self.log_path(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(container = name, error = %e, "removing the log file failed");
        }
        self.health.forget(name);
        info!(container = name, "container removed, tenant NIC returned");
        Ok(true)
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let Some(container) = self.container(name).await? else {
            return Ok(None);
        };
        let task = self.task(name).await?;
        let (status, exit_code) = status_of(task.as_ref(), &container.labels);
        let running_pid = task
            .as_ref()
            .filter(|t| t.status() == TaskStatus::Running)
            .map(|t| t.pid);
        let mut networks = BTreeMap::new();
        if let (Some(network), Some(nic)) = (
            container.labels.get(LABEL_NETWORK),
            Self::labels_nic(&container),
        ) {
            networks.insert(
                network.clone(),
                EndpointInfo {
                    ipv4: nic.ipv4.as_ref().map(|v| v.address),
                    ipv6: nic.ipv6.as_ref().map(|v| v.address),
                    mac_address: Some(nic.mac_address.to_string()),
                },
            );
        }
        Ok(Some(ContainerInfo {
            id: container.id.clone(),
            name: container.id.clone(),
            image: container.image.clone(),
            status,
            exit_code,
            health: match (status, running_pid) {
                (ContainerStatus::Running, Some(pid)) => self.health_of(&container, pid).await,
                _ => None,
            },
            pid: running_pid,
            sandbox_key: prepared_netns(&container),
            restart_count: container
                .labels
                .get(RESTART_COUNT_LABEL)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            error: None,
            networks,
        }))
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let containers = self
            .connection
            .containers()
            .list(self.connection.request(ListContainersRequest {
                filters: Vec::new(),
            }))
            .await
            .map_err(|e| backend("list containers", self.connection.namespace(), e))?
            .into_inner()
            .containers;
        let tasks: HashMap<String, Process> = self
            .connection
            .tasks()
            .list(self.connection.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|e| backend("list tasks", self.connection.namespace(), e))?
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        Ok(containers
            .into_iter()
            .map(|c| {
                let (status, _) = status_of(tasks.get(&c.id), &c.labels);
                ContainerSummary {
                    id: c.id.clone(),
                    names: vec![c.id.clone()],
                    image: c.image.clone(),
                    status,
                    labels: c.labels.into_iter().collect(),
                }
            })
            .collect())
    }

    /// The named namespace prepared for the container, which holds the tenant NIC from
    /// `create_container` to `remove` whether the task runs or not; else a running task's
    /// own. Reads the record and the task only: no health probe, unlike `inspect`.
    async fn network_namespace(
        &self,
        name: &str,
    ) -> Result<Option<NetworkNamespace>, RuntimeError> {
        let Some(container) = self.container(name).await? else {
            return Ok(None);
        };
        let prepared = prepared_netns(&container);
        let running_pid = match prepared {
            Some(_) => None,
            None => self
                .task(name)
                .await?
                .filter(|t| t.status() == TaskStatus::Running)
                .map(|t| t.pid),
        };
        Ok(network_namespace_of(prepared, running_pid))
    }
}

impl ContainerdRuntime {
    /// Prepares the root filesystem snapshot and creates the container record, under a lease
    /// so a crash in between leaves nothing the GC keeps.
    async fn create_record(
        &self,
        spec: &ContainerSpec,
        image: &LocalImage,
        network: &str,
        nic: &TenantNic,
        prepared: &tenant::PreparedNamespace,
        spec_json: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        let lease = self.connection.lease("create", CREATE_LEASE_TTL).await?;
        let result = async {
            // A snapshot of this name without a container is what a crash mid-create leaves.
            self.remove_snapshot(&spec.name).await?;
            self.connection
                .snapshots()
                .prepare(self.connection.leased(
                    PrepareSnapshotRequest {
                        snapshotter: self.config.snapshotter.clone(),
                        key: spec.name.clone(),
                        parent: image.top_chain.clone().unwrap_or_default(),
                        labels: HashMap::new(),
                    },
                    &lease,
                ))
                .await
                .map_err(|e| backend("prepare rootfs snapshot", &spec.name, e))?;
            let mut labels: HashMap<String, String> = spec
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.insert(LABEL_NETWORK.to_owned(), network.to_owned());
            labels.insert(LABEL_NETNS.to_owned(), prepared.name.clone());
            labels.insert(LABEL_TENANT_NIC.to_owned(), nic.to_json());
            labels.insert(LABEL_NIC_NAME.to_owned(), prepared.original_name.clone());
            if let Some(check) = &spec.healthcheck {
                labels.insert(health::LABEL_HEALTHCHECK.to_owned(), health::encode(check));
            }
            if let Some(policy) = restart_policy_label(spec.restart_policy) {
                labels.insert(RESTART_POLICY_LABEL.to_owned(), policy.to_owned());
                labels.insert(RESTART_LOG_URI_LABEL.to_owned(), self.log_uri(&spec.name));
            }
            labels.insert(
                LABEL_LOG.to_owned(),
                self.log_path(&spec.name).display().to_string(),
            );
            let container = Container {
                id: spec.name.clone(),
                labels,
                image: spec.image.to_string(),
                runtime: Some(Runtime {
                    name: self.config.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_owned(),
                    value: spec_json,
                }),
                snapshotter: self.config.snapshotter.clone(),
                snapshot_key: spec.name.clone(),
                ..Container::default()
            };
            match self
                .connection
                .containers()
                .create(self.connection.leased(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    &lease,
                ))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_already_exists(&e) => {
                    Err(RuntimeError::ContainerExists(spec.name.clone()))
                }
                Err(e) => Err(backend("create container", &spec.name, e)),
            }
        }
        .await;
        if result.is_err()
            && let Err(e) = self.remove_snapshot(&spec.name).await
        {
            warn!(container = %spec.name, error = %e, "removing the rootfs snapshot failed");
        }
        self.connection.drop_lease(lease).await?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_follow_containerd() {
        for good in ["database", "db-1", "netiso.test_3", "a"] {
            assert!(is_valid_id(good), "{good}");
        }
        for bad in ["", "-db", "db-", "a..b", "a b", "a/b", &"x".repeat(77)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn status_without_task_comes_from_labels() {
        let mut labels = HashMap::new();
        assert_eq!(status_of(None, &labels), (ContainerStatus::Created, None));
        labels.insert(LABEL_EXIT_CODE.to_owned(), "137".to_owned());
        assert_eq!(
            status_of(None, &labels),
            (ContainerStatus::Exited, Some(137))
        );
        let running = Process {
            status: TaskStatus::Running as i32,
            pid: 42,
            ..Process::default()
        };
        assert_eq!(
            status_of(Some(&running), &labels),
            (ContainerStatus::Running, None)
        );
    }

    #[test]
    fn network_namespace_prefers_the_prepared_one() {
        let prepared = PathBuf::from("/run/netns/netiso-trove-database");
        assert_eq!(
            network_namespace_of(Some(prepared.clone()), Some(42)),
            Some(NetworkNamespace::Mounted(prepared.clone()))
        );
        // A stopped container keeps the tenant NIC in its prepared namespace.
        assert_eq!(
            network_namespace_of(Some(prepared.clone()), None),
            Some(NetworkNamespace::Mounted(prepared))
        );
        assert_eq!(
            network_namespace_of(None, Some(42)),
            Some(NetworkNamespace::Process(42))
        );
        assert_eq!(network_namespace_of(None, None), None);
    }

    #[test]
    fn prepared_netns_needs_the_label_and_the_namespace() {
        let mut container = Container {
            id: "database".to_owned(),
            ..Container::default()
        };
        assert_eq!(prepared_netns(&container), None);
        container.labels.insert(
            LABEL_NETNS.to_owned(),
            format!("netiso-absent-{}", std::process::id()),
        );
        assert_eq!(prepared_netns(&container), None, "a namespace that is gone");
    }

    #[test]
    fn bridged_mode_is_refused_with_a_clear_error() {
        let err = bridged_unsupported("database");
        assert!(
            err.to_string().contains("unsupported with containerd"),
            "{err}"
        );
        require_isolation(
            &IsolationMode::Isolated {
                tenant_nic_file: PathBuf::from("/etc/trove/eth1.json"),
            },
            "database",
        )
        .expect("isolated");
        let bridged =
            IsolationMode::decide(false, Path::new("/etc/trove/eth1.json"), true, &[3306]);
        let err = require_isolation(&bridged, "database").expect_err("bridged");
        assert_eq!(
            err.to_string(),
            "invalid container spec for `database`: bridged networking \
             (network_isolation = False) is unsupported with containerd; enable network \
             isolation or use the Docker runtime"
        );
    }
}
