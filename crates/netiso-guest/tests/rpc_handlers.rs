//! The guest RPC handlers' logic ([`GuestService`]) against a fake container runtime, a
//! recording conductor and a scripted port probe: no root, no services.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use netiso_config::tenant_nic::{TenantIpv4, TenantNic};
use netiso_config::{IsolationMode, PublishedPort};
use netiso_guest::mysql::{Layout, MysqlSettings};
use netiso_guest::rpc::{
    CONFIG_CONTENTS_FILE, DatabaseSettings, GuestService, PREPARE_END_FILE, PortProbe,
    PrepareRequest, ProbeTarget, StatusSink, status_of,
};
use netiso_messaging::{Context, ServiceStatus};
use netiso_runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, ContainerSummary,
    HealthStatus, HostnicNetworkSpec, ImageReference, ImageStatus, NetworkAttachment,
    NetworkStatus, PullPolicy, PullProgress, RegistryCredentials, RuntimeError,
};
use serde_json::{Value, json};

const GUEST_ID: &str = "8a0c1b2e-5f3d-4c6b-9a71-0d2e3f4a5b6c";
const NAME: &str = "database";
const PORT: u16 = 3306;

/// A runtime that keeps containers in memory and records every call.
#[derive(Default)]
struct FakeRuntime {
    containers: Mutex<BTreeMap<String, ContainerInfo>>,
    calls: Mutex<Vec<String>>,
    pull_error: Mutex<Option<String>>,
    /// State a started container gets (`Running` unless a test says otherwise).
    start_as: Mutex<Option<ContainerStatus>>,
}

impl FakeRuntime {
    fn record(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn set_running(&self, name: &str, image: &str) {
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

fn info(name: &str, image: &str, status: ContainerStatus) -> ContainerInfo {
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
}

/// Records what the conductor is told.
#[derive(Default)]
struct RecordingSink {
    events: Mutex<Vec<String>>,
    notifications: Mutex<Vec<Value>>,
}

impl RecordingSink {
    fn events(&self) -> Vec<String> {
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

/// Answers after `failures` refused attempts, recording each target.
#[derive(Default)]
struct ScriptedProbe {
    failures: Mutex<u32>,
    targets: Mutex<Vec<ProbeTarget>>,
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

struct Fixture {
    runtime: Arc<FakeRuntime>,
    sink: Arc<RecordingSink>,
    probe: Arc<ScriptedProbe>,
    state: tempfile::TempDir,
}

fn tenant_nic() -> TenantNic {
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
    fn new() -> Self {
        Self {
            runtime: Arc::new(FakeRuntime::default()),
            sink: Arc::new(RecordingSink::default()),
            probe: Arc::new(ScriptedProbe::default()),
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn settings(&self, isolated: bool) -> DatabaseSettings {
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

    fn service(&self, isolated: bool, refusal: Option<&str>) -> GuestService {
        GuestService::new(
            self.settings(isolated),
            self.runtime.clone(),
            self.sink.clone(),
            self.probe.clone(),
            refusal.map(str::to_owned),
        )
    }
}

fn context_with_notification() -> Context {
    let mut context = Context::fresh();
    context.0.insert(
        "trove_notification".into(),
        json!({"request_id": "req-1", "server_type": "guest"}),
    );
    context
}

#[tokio::test]
async fn prepare_bridged_pulls_runs_probes_the_published_port_and_reports_healthy() {
    let fx = Fixture::new();
    *fx.probe.failures.lock().expect("lock") = 2;
    let service = fx.service(false, None);
    assert!(!service.is_prepared());
    service
        .prepare(
            &context_with_notification(),
            PrepareRequest::version(Some("8.0.36".into())),
        )
        .await;

    assert_eq!(
        fx.runtime.calls(),
        vec![
            "ensure_image 10.251.0.1:5000/trove/mysql:8.0.36 Always credentials=false".to_owned(),
            format!(
                "create database 10.251.0.1:5000/trove/mysql:8.0.36 {:?}",
                NetworkAttachment::Bridged {
                    published_tcp_ports: vec![PORT]
                }
            ),
            "start database".to_owned(),
        ]
    );
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy", "notify_end"]
    );
    assert_eq!(
        fx.sink.notifications.lock().expect("lock")[0],
        json!({"request_id": "req-1", "server_type": "guest", "instance_id": GUEST_ID})
    );
    let targets = fx.probe.targets.lock().expect("lock").clone();
    assert_eq!(targets.len(), 3, "two refused attempts, then an answer");
    assert_eq!(
        targets[0],
        ProbeTarget::Vm(format!("127.0.0.1:{PORT}").parse().expect("addr"))
    );
    assert!(service.is_prepared());
    assert!(
        fx.state
            .path()
            .join("state")
            .join(PREPARE_END_FILE)
            .exists()
    );
}

#[tokio::test]
async fn prepare_isolated_creates_the_hostnic_network_and_probes_inside_the_container() {
    let fx = Fixture::new();
    let service = fx.service(true, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;

    let calls = fx.runtime.calls();
    assert_eq!(
        calls[1],
        "ensure_hostnic_network database-network docker-hostnic mac=fa:16:3e:12:34:56"
    );
    assert_eq!(
        calls[2],
        format!(
            "create database 10.251.0.1:5000/trove/mysql:8.0.36 {:?}",
            NetworkAttachment::hostnic_for(&tenant_nic())
        )
    );
    assert_eq!(
        fx.probe.targets.lock().expect("lock")[0],
        ProbeTarget::ContainerNamespace {
            netns: PathBuf::from("/var/run/docker/netns/0123456789ab"),
            address: "10.0.0.15:3306".parse().expect("addr"),
        }
    );
    // No notification in the context: nothing to notify_end, as Trove's EndNotification.
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy"]
    );
}

#[tokio::test]
async fn prepare_after_failed_isolation_starts_nothing_and_reports_failed_to_spawn() {
    let fx = Fixture::new();
    let service = fx.service(true, Some("isolation: no network interface has MAC x"));
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;

    assert!(fx.runtime.calls().is_empty(), "no runtime call at all");
    assert_eq!(
        fx.sink.events(),
        vec![
            "heartbeat failed to spawn".to_owned(),
            "notify_exc_info the database is not started on this VM: isolation: no network \
             interface has MAC x"
                .to_owned(),
        ]
    );
    assert!(!service.is_prepared());
    let refused = service.restart().await.expect_err("restart refused");
    assert!(refused.to_string().contains("isolation: no network"));
    let refused = service
        .start_db_with_conf_changes(None, None)
        .await
        .expect_err("start refused");
    assert!(refused.to_string().contains("not started on this VM"));
    // Stopping stays possible.
    service.stop_db().await.expect("stop_db");
}

#[tokio::test]
async fn mysql_prepare_refuses_bad_users_and_databases_before_touching_anything() {
    let fx = Fixture::new();
    let mut settings = fx.settings(false);
    settings.mysql = Some(MysqlSettings {
        manager: "mysql".into(),
        layout: Layout {
            config_dir: fx.state.path().join("etc-mysql"),
            socket_dir: fx.state.path().join("mysqld"),
            mount_point: fx.state.path().join("volume"),
            uid: 1001,
            gid: 1001,
        },
    });
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    let cases = [
        (
            json!({"users": [{"_name": "nopass", "_host": "%"}]}),
            "Cannot create user 'nopass': the user has no password",
        ),
        (
            json!({"databases": [{"_name": "a;b"}]}),
            "Cannot create database: 'a;b' is not a valid schema name",
        ),
        (
            json!({"users": [{"_name": "u", "_password": "pw", "_host": "db.example"}]}),
            "'db.example' is not a valid hostname",
        ),
        (
            json!({"overrides": {"a\n[client]": 1}}),
            "cannot be written to my.cnf",
        ),
    ];
    for (args, expected) in cases {
        let request = PrepareRequest {
            databases: args.get("databases").cloned(),
            users: args.get("users").cloned(),
            overrides: args.get("overrides").cloned(),
            device_path: Some(PathBuf::from("/dev/never-touched")),
            ..PrepareRequest::default()
        };
        service.prepare(&context_with_notification(), request).await;
        let events = fx.sink.events();
        let last = events.last().expect("an event");
        assert!(
            last.starts_with("notify_exc_info invalid request: ") && last.contains(expected),
            "{args}: {events:?}"
        );
        assert_eq!(
            events[events.len() - 2],
            "heartbeat failed to spawn",
            "{events:?}"
        );
    }
    assert!(fx.runtime.calls().is_empty(), "{:?}", fx.runtime.calls());
    assert!(
        !fx.state.path().join("etc-mysql").exists(),
        "no file written"
    );
    assert!(!service.is_prepared());
}

#[tokio::test]
async fn prepare_with_a_failing_pull_reports_failed_to_spawn_with_the_registry() {
    let fx = Fixture::new();
    *fx.runtime.pull_error.lock().expect("lock") = Some("connection refused".into());
    let service = fx.service(false, None);
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;

    let events = fx.sink.events();
    assert_eq!(
        events[..2],
        ["heartbeat building", "heartbeat failed to spawn"]
    );
    assert!(
        events[2].starts_with("notify_exc_info pulling image `10.251.0.1:5000/trove/mysql:8.0.36` from registry 10.251.0.1:5000 failed"),
        "{events:?}"
    );
    assert!(fx.runtime.containers.lock().expect("lock").is_empty());
    assert!(!service.is_prepared());
}

#[tokio::test]
async fn prepare_fails_early_when_the_container_exits() {
    let fx = Fixture::new();
    *fx.runtime.start_as.lock().expect("lock") = Some(ContainerStatus::Exited);
    let service = fx.service(false, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;
    let events = fx.sink.events();
    assert_eq!(
        events,
        vec!["heartbeat building", "heartbeat failed to spawn"]
    );
    assert!(fx.probe.targets.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn prepare_times_out_when_the_port_never_answers() {
    let fx = Fixture::new();
    *fx.probe.failures.lock().expect("lock") = u32::MAX;
    let mut settings = fx.settings(false);
    settings.state_change_wait_time = Duration::from_millis(600);
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;
    let events = fx.sink.events();
    assert_eq!(events[1], "heartbeat failed to spawn");
    assert!(
        events[2].contains("127.0.0.1:3306 (bridged, from the VM) did not answer")
            && events[2].contains("connection refused"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_existing_container_is_just_started() {
    let fx = Fixture::new();
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    fx.runtime
        .containers
        .lock()
        .expect("lock")
        .get_mut(NAME)
        .expect("container")
        .status = ContainerStatus::Exited;
    let service = fx.service(false, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;
    assert_eq!(fx.runtime.calls(), vec!["start database"]);
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy"]
    );
}

#[tokio::test]
async fn stop_restart_and_start_with_conf_changes() {
    let fx = Fixture::new();
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    let service = fx.service(false, None);

    service.stop_db().await.expect("stop_db");
    assert_eq!(service.current_status().await, ServiceStatus::Shutdown);
    service.restart().await.expect("restart");
    assert_eq!(service.current_status().await, ServiceStatus::Healthy);

    service
        .start_db_with_conf_changes(
            Some("[mysqld]\nmax_connections = 10\n".into()),
            Some("8.4".into()),
        )
        .await
        .expect("start with a new version");
    assert_eq!(
        fx.runtime.calls(),
        vec![
            "stop database 3s",
            "restart database 3s",
            "stop database 3s",
            "remove database force=true",
            "ensure_image 10.251.0.1:5000/trove/mysql:8.4 Always credentials=false",
            &format!(
                "create database 10.251.0.1:5000/trove/mysql:8.4 {:?}",
                NetworkAttachment::Bridged {
                    published_tcp_ports: vec![PORT]
                }
            ),
            "start database",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(fx.state.path().join("state").join(CONFIG_CONTENTS_FILE))
            .expect("saved configuration"),
        "[mysqld]\nmax_connections = 10\n"
    );
    assert_eq!(
        fx.sink.events(),
        vec![
            "heartbeat shutdown",
            "heartbeat healthy",
            "heartbeat healthy"
        ]
    );
}

#[tokio::test]
async fn filesystem_stats_report_the_mount_point() {
    let fx = Fixture::new();
    let service = fx.service(false, None);
    let stats = service
        .filesystem_stats(Some("/ignored/like/trove".into()))
        .await
        .expect("stats");
    for key in [
        "block_size",
        "total_blocks",
        "free_blocks",
        "total",
        "free",
        "used",
    ] {
        assert!(stats.get(key).is_some(), "{key} in {stats}");
    }
    let mut settings = fx.settings(false);
    settings.mount_point = Some(fx.state.path().join("absent"));
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    let error = service.filesystem_stats(None).await.expect_err("missing");
    assert!(error.starts_with("Filesystem not found ("), "{error}");
}

#[test]
fn statuses_follow_trove() {
    let mut container = info(NAME, "img", ContainerStatus::Running);
    assert_eq!(status_of(None), ServiceStatus::Shutdown);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Healthy);
    container.health = Some(HealthStatus::Starting);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Running);
    container.health = Some(HealthStatus::Unhealthy);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Crashed);
    container.status = ContainerStatus::Exited;
    assert_eq!(status_of(Some(&container)), ServiceStatus::Shutdown);
    container.status = ContainerStatus::Restarting;
    assert_eq!(status_of(Some(&container)), ServiceStatus::Restarting);
}
