//! Fakes shared by the guest's RPC tests: a container runtime kept in memory, a recording
//! conductor, a scripted port probe, and a fixture tying them to a [`GuestService`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use netiso_config::tenant_nic::{TenantIpv4, TenantNic};
use netiso_config::{IsolationMode, PublishedPort};
use netiso_guest::rpc::{DatabaseSettings, GuestService, PortProbe, ProbeTarget, StatusSink};
use netiso_messaging::{Context, ServiceStatus};
use netiso_runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, ContainerSummary,
    HostnicNetworkSpec, ImageReference, ImageStatus, NetworkNamespace, NetworkStatus, PullPolicy,
    PullProgress, RegistryCredentials, RuntimeError,
};
use serde_json::{Value, json};

pub const GUEST_ID: &str = "8a0c1b2e-5f3d-4c6b-9a71-0d2e3f4a5b6c";
pub const NAME: &str = "database";
pub const PORT: u16 = 3306;

/// A runtime that keeps containers in memory and records every call.
#[derive(Default)]
pub struct FakeRuntime {
    pub containers: Mutex<BTreeMap<String, ContainerInfo>>,
    pub calls: Mutex<Vec<String>>,
    pub pull_error: Mutex<Option<String>>,
    /// State a started container gets (`Running` unless a test says otherwise).
    pub start_as: Mutex<Option<ContainerStatus>>,
    /// The runtime is lost in the middle of a restart: the container stopped cleanly (exit
    /// 0) and was never started again, and the call fails as an unreachable daemon's does.
    pub lost_during_restart: Mutex<bool>,
}

impl FakeRuntime {
    fn record(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    pub fn set_running(&self, name: &str, image: &str) {
        self.containers
            .lock()
            .expect("lock")
            .insert(name.to_owned(), info(name, image, ContainerStatus::Running));
    }

    fn started_status(&self) -> ContainerStatus {
        self.start_as
            .lock()
            .expect("lock")
            .unwrap_or(ContainerStatus::Running)
    }
}

pub fn info(name: &str, image: &str, status: ContainerStatus) -> ContainerInfo {
    ContainerInfo {
        id: format!("id-{name}"),
        name: name.to_owned(),
        image: image.to_owned(),
        status,
        exit_code: (status == ContainerStatus::Exited).then_some(1),
        health: None,
        pid: Some(4242),
        sandbox_key: Some(PathBuf::from("/var/run/docker/netns/0123456789ab")),
        restart_count: 0,
        error: None,
        networks: BTreeMap::new(),
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(
        &self,
        image: &ImageReference,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageStatus, RuntimeError> {
        self.record(format!(
            "ensure_image {image} {policy:?} credentials={}",
            credentials.is_some()
        ));
        progress(PullProgress {
            id: None,
            status: "Pull complete".into(),
            current: None,
            total: None,
        });
        if let Some(message) = self.pull_error.lock().expect("lock").clone() {
            return Err(RuntimeError::PullFailed {
                image: image.to_string(),
                registry: image.registry().to_owned(),
                message,
            });
        }
        Ok(ImageStatus::Pulled {
            id: "sha256:1".into(),
        })
    }

    async fn ensure_hostnic_network(
        &self,
        network: &HostnicNetworkSpec,
    ) -> Result<NetworkStatus, RuntimeError> {
        self.record(format!(
            "ensure_hostnic_network {} {} mac={}",
            network.name, network.driver, network.mac_address
        ));
        Ok(NetworkStatus::Created { id: "net1".into() })
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        self.record(format!("remove_network {name}"));
        Ok(true)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.record(format!(
            "create {} {} {:?}",
            spec.name, spec.image, spec.network
        ));
        let mut containers = self.containers.lock().expect("lock");
        if containers.contains_key(&spec.name) {
            return Err(RuntimeError::ContainerExists(spec.name.clone()));
        }
        containers.insert(
            spec.name.clone(),
            info(
                &spec.name,
                &spec.image.to_string(),
                ContainerStatus::Created,
            ),
        );
        Ok(format!("id-{}", spec.name))
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("start {name}"));
        let status = self.started_status();
        let mut containers = self.containers.lock().expect("lock");
        let container = containers
            .get_mut(name)
            .ok_or_else(|| RuntimeError::ContainerNotFound(name.to_owned()))?;
        container.status = status;
        Ok(())
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.record(format!("stop {name} {}s", timeout.as_secs()));
        if let Some(container) = self.containers.lock().expect("lock").get_mut(name) {
            container.status = ContainerStatus::Exited;
        }
        Ok(())
    }

    async fn restart(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.record(format!("restart {name} {}s", timeout.as_secs()));
        let mut containers = self.containers.lock().expect("lock");
        let container = containers
            .get_mut(name)
            .ok_or_else(|| RuntimeError::ContainerNotFound(name.to_owned()))?;
        if *self.lost_during_restart.lock().expect("lock") {
            container.status = ContainerStatus::Exited;
            container.exit_code = Some(0);
            return Err(RuntimeError::Unreachable {
                endpoint: "unix:///run/docker.sock".into(),
                source: "connection reset in the middle of the restart".into(),
            });
        }
        container.status = ContainerStatus::Running;
        Ok(())
    }

    async fn remove(&self, name: &str, force: bool) -> Result<bool, RuntimeError> {
        self.record(format!("remove {name} force={force}"));
        Ok(self.containers.lock().expect("lock").remove(name).is_some())
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self.containers.lock().expect("lock").get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn network_namespace(
        &self,
        name: &str,
    ) -> Result<Option<NetworkNamespace>, RuntimeError> {
        Ok(self
            .containers
            .lock()
            .expect("lock")
            .get(name)
            .and_then(|c| c.sandbox_key.clone())
            .map(NetworkNamespace::Mounted))
    }
}

/// Records what the conductor is told.
#[derive(Default)]
pub struct RecordingSink {
    pub events: Mutex<Vec<String>>,
    pub notifications: Mutex<Vec<Value>>,
}

impl RecordingSink {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().expect("lock").clone()
    }
}

#[async_trait]
impl StatusSink for RecordingSink {
    async fn heartbeat(&self, status: ServiceStatus) -> Result<(), String> {
        self.events
            .lock()
            .expect("lock")
            .push(format!("heartbeat {}", status.as_str()));
        Ok(())
    }

    async fn notify_end(&self, _context: &Context, notification: Value) -> Result<(), String> {
        self.events.lock().expect("lock").push("notify_end".into());
        self.notifications.lock().expect("lock").push(notification);
        Ok(())
    }

    async fn notify_exc_info(
        &self,
        _context: &Context,
        notification: Value,
        message: &str,
    ) -> Result<(), String> {
        self.events
            .lock()
            .expect("lock")
            .push(format!("notify_exc_info {message}"));
        self.notifications.lock().expect("lock").push(notification);
        Ok(())
    }
}

/// For MySQL datastores, whose readiness goes through the socket: the port probe must never
/// be asked.
pub struct NoPortProbe;

#[async_trait]
impl PortProbe for NoPortProbe {
    async fn answers(&self, target: &ProbeTarget) -> Result<(), String> {
        panic!("a MySQL datastore was probed on a port: {target:?}")
    }
}

/// Answers after `failures` refused attempts, recording each target.
#[derive(Default)]
pub struct ScriptedProbe {
    pub failures: Mutex<u32>,
    pub targets: Mutex<Vec<ProbeTarget>>,
}

#[async_trait]
impl PortProbe for ScriptedProbe {
    async fn answers(&self, target: &ProbeTarget) -> Result<(), String> {
        self.targets.lock().expect("lock").push(target.clone());
        let mut failures = self.failures.lock().expect("lock");
        if *failures > 0 {
            *failures -= 1;
            return Err("connection refused".into());
        }
        Ok(())
    }
}

pub struct Fixture {
    pub runtime: Arc<FakeRuntime>,
    pub sink: Arc<RecordingSink>,
    pub probe: Arc<ScriptedProbe>,
    pub state: tempfile::TempDir,
}

pub fn tenant_nic() -> TenantNic {
    TenantNic {
        mac_address: "fa:16:3e:12:34:56".parse().expect("mac"),
        ipv4: Some(TenantIpv4 {
            address: "10.0.0.15".parse().expect("ip"),
            cidr: "10.0.0.0/24".parse().expect("cidr"),
            gateway: Some("10.0.0.1".parse().expect("gw")),
            host_routes: vec![],
        }),
        ipv6: None,
    }
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            runtime: Arc::new(FakeRuntime::default()),
            sink: Arc::new(RecordingSink::default()),
            probe: Arc::new(ScriptedProbe::default()),
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn settings(&self, isolated: bool) -> DatabaseSettings {
        DatabaseSettings {
            guest_id: GUEST_ID.into(),
            container_name: NAME.into(),
            docker_image: Some("trove/mysql".into()),
            container_registry: Some("10.251.0.1:5000".into()),
            default_version: Some("8.0.36".into()),
            credentials: None,
            mode: if isolated {
                IsolationMode::Isolated {
                    tenant_nic_file: PathBuf::from("/etc/trove/eth1.json"),
                }
            } else {
                IsolationMode::Bridged {
                    published_ports: vec![PublishedPort(PORT)],
                    reason: netiso_config::isolation::BridgedReason::IsolationDisabled,
                }
            },
            tenant_nic: isolated.then(tenant_nic),
            tcp_ports: vec![PORT],
            mount_point: Some(self.state.path().to_owned()),
            state_change_wait_time: Duration::from_secs(3),
            state_dir: self.state.path().join("state"),
            volume: Default::default(),
            fstab: self.state.path().join("fstab"),
            // A plain container: readiness is the scripted port probe.
            mysql: None,
        }
    }

    pub fn service(&self, isolated: bool, refusal: Option<&str>) -> GuestService {
        GuestService::new(
            self.settings(isolated),
            self.runtime.clone(),
            self.sink.clone(),
            self.probe.clone(),
            refusal.map(str::to_owned),
        )
    }
}

pub fn context_with_notification() -> Context {
    let mut context = Context::fresh();
    context.0.insert(
        "trove_notification".into(),
        json!({"request_id": "req-1", "server_type": "guest"}),
    );
    context
}
