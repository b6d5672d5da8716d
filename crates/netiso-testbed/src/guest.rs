//! One scenario's simulated guest: tenant network, injected files, the plugin and the agent
//! inside the guest namespace, and the harness's controller on the broker. Built in order,
//! torn down in reverse by [`Guest::teardown`], with drop guards as the backstop (a failed
//! check, a panic or Ctrl-C still removes everything).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use netiso_netlink::MacAddress;
use netiso_runtime::test_support::block_on_cleanup;
use netiso_runtime::{ContainerRuntime, ContainerdConfig, ContainerdRuntime, DockerRuntime};

use crate::controller::{Controller, prepare_args};
use crate::guest_files::{DATABASE_PORT, GuestFiles, GuestSpec, RuntimeKind};
use crate::net::{GUEST_TENANT_ADDR, TenantNetwork};
use crate::probes::GuestView;
use crate::processes::GuestProcess;
use crate::settings::{DATABASE_CONTAINER, DATABASE_NETWORK, Settings};
use crate::sql::{TenantLogin, mariadb_config};
use crate::trove_guest::{GuestKind, TenantNic, TroveGuest};

/// Bound of each cleanup operation on the runtime.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// The containerd namespace the harness's guests use.
pub const CONTAINERD_NAMESPACE: &str = "netiso-harness";

/// How a scenario's guest is made.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    /// The scenario's name (directory and log names).
    pub scenario: String,
    /// Per-run serial, for the MAC.
    pub serial: u32,
    /// The runtime.
    pub runtime: RuntimeKind,
    /// `network_isolation`.
    pub isolated: bool,
    /// Write `eth1.json` with a MAC no NIC has (isolation impossible).
    pub absent_mac: bool,
    /// The database image: repository without registry, and tag.
    pub image_repository: String,
    /// The database image's tag (the datastore version).
    pub image_tag: String,
    /// The agent's state directory on a tmpfs of this many bytes, so that it can be filled
    /// (the soak's full-disk fault); `None`: a plain folder.
    pub state_dir_bytes: Option<u64>,
    /// The agent's `--heartbeat-interval` in seconds (`None`: the agent's default, Trove's 60).
    pub heartbeat_seconds: Option<u64>,
}

/// Connects to the runtime the way the agent does, for checks and cleanup.
pub async fn connect_runtime(
    settings: &Settings,
    kind: RuntimeKind,
    tenant_nic_file: Option<PathBuf>,
) -> Result<Arc<dyn ContainerRuntime>> {
    Ok(match kind {
        RuntimeKind::Docker => {
            let endpoint = format!("unix://{}", settings.docker_socket.display());
            Arc::new(
                DockerRuntime::connect(&endpoint).await.with_context(|| {
                    format!("dockerd at {endpoint}: run `cargo xtask provision`")
                })?,
            )
        }
        RuntimeKind::Containerd => {
            let mut config =
                ContainerdConfig::new(&settings.containerd_socket, CONTAINERD_NAMESPACE);
            config.vm_netns = PathBuf::from(format!("/run/netns/{}", settings.guest_netns));
            config.tenant_nic_file = tenant_nic_file;
            config.insecure_registries = vec![settings.guest_registry.clone()];
            Arc::new(ContainerdRuntime::connect(config).await.with_context(|| {
                format!(
                    "containerd at {}: run `cargo xtask provision`",
                    settings.containerd_socket.display()
                )
            })?)
        }
    })
}

/// Removes the database container and its network on drop.
struct DatabaseCleanup {
    settings: Settings,
    kind: RuntimeKind,
    tenant_nic_file: PathBuf,
    /// False once an explicit teardown removed them.
    armed: bool,
}

impl DatabaseCleanup {
    async fn remove(settings: &Settings, kind: RuntimeKind, nic_file: PathBuf) -> Result<String> {
        let runtime = connect_runtime(settings, kind, Some(nic_file)).await?;
        let container =
            tokio::time::timeout(CLEANUP_LIMIT, runtime.remove(DATABASE_CONTAINER, true))
                .await
                .map_err(|_| {
                    anyhow!("removing the database container took over {CLEANUP_LIMIT:?}")
                })?
                .context("removing the database container")?;
        let network = tokio::time::timeout(CLEANUP_LIMIT, runtime.remove_network(DATABASE_NETWORK))
            .await
            .map_err(|_| anyhow!("removing database-network took over {CLEANUP_LIMIT:?}"))?
            .context("removing database-network")?;
        Ok(format!(
            "container {}, network {}",
            if container { "removed" } else { "absent" },
            if network { "removed" } else { "absent" }
        ))
    }
}

impl Drop for DatabaseCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let settings = self.settings.clone();
        let kind = self.kind;
        let nic_file = self.tenant_nic_file.clone();
        block_on_cleanup(move || async move {
            if let Err(e) = Self::remove(&settings, kind, nic_file).await {
                eprintln!("cleanup: {e:#}");
            }
        });
    }
}

/// A running simulated guest. Field order is drop order: the agent first, the files last.
pub struct Guest {
    /// The agent process.
    pub agent: Option<GuestProcess>,
    /// Trove's controller and conductor.
    pub controller: Option<Controller>,
    database: Option<DatabaseCleanup>,
    plugin: Option<GuestProcess>,
    /// The tenant network.
    pub tenant: Option<TenantNetwork>,
    /// The tenant's database login, which `prepare` creates.
    pub login: TenantLogin,
    /// The injected files.
    pub files: GuestFiles,
    /// What was injected.
    pub spec: GuestSpec,
    /// The runtime, as the harness reaches it.
    pub runtime: Arc<dyn ContainerRuntime>,
    settings: Settings,
    heartbeat_seconds: Option<u64>,
}

impl Guest {
    /// Builds the guest and starts the plugin (Docker, isolated) and the agent.
    pub async fn start(settings: &Settings, plan: &GuestPlan) -> Result<(Self, String)> {
        let runtime = connect_runtime(settings, plan.runtime, None).await?;
        if runtime.inspect(DATABASE_CONTAINER).await?.is_some() {
            bail!(
                "a container named `{DATABASE_CONTAINER}` already exists in the {} runtime \
                 (left by an interrupted run?): remove it first",
                plan.runtime.as_str()
            );
        }
        let tenant = TenantNetwork::create(&settings.guest_netns, plan.serial)?;
        let id = uuid::Uuid::new_v4();
        let short = &id.simple().to_string()[..8];
        let tenant_mac = match (plan.isolated, plan.absent_mac) {
            (false, _) => None,
            (true, false) => Some(tenant.mac),
            (true, true) => Some(MacAddress::new([
                0xfa,
                0x16,
                0x3e,
                0xde,
                0xad,
                plan.serial as u8,
            ])),
        };
        let spec = GuestSpec {
            guest_id: id.hyphenated().to_string(),
            control_exchange: format!("nth-{short}"),
            conductor_queue: format!("trove-conductor-nth-{short}"),
            key: uuid::Uuid::new_v4().simple().to_string(),
            isolated: plan.isolated,
            runtime: plan.runtime,
            tenant_mac,
            image_repository: plan.image_repository.clone(),
            image_tag: plan.image_tag.clone(),
        };
        let mut files = GuestFiles::write(settings, &plan.scenario, &spec)?;
        if let Some(bytes) = plan.state_dir_bytes {
            files.limit_state_dir(bytes)?;
        }
        let login = TenantLogin::create(&files.root)?;
        let database = DatabaseCleanup {
            settings: settings.clone(),
            kind: plan.runtime,
            tenant_nic_file: files.tenant_nic_file(),
            armed: true,
        };
        let plugin = if plan.runtime == RuntimeKind::Docker && plan.isolated {
            Some(start_plugin(settings, &files)?)
        } else {
            None
        };
        let controller = Controller::start(
            &settings.broker,
            &spec.control_exchange,
            &spec.conductor_queue,
            &spec.guest_id,
            &spec.key,
        )
        .await?;
        let mut guest = Self {
            agent: None,
            controller: Some(controller),
            database: Some(database),
            plugin,
            tenant: Some(tenant),
            login,
            files,
            spec,
            runtime,
            settings: settings.clone(),
            heartbeat_seconds: plan.heartbeat_seconds,
        };
        guest.start_agent()?;
        let detail = format!(
            "guest {} exchange {} tenant {} MAC {} client netns {} config {}",
            guest.spec.guest_id,
            guest.spec.control_exchange,
            guest.tenant().guest_if,
            guest.tenant().mac,
            guest.tenant().client_netns,
            guest.files.config_dir().display()
        );
        Ok((guest, detail))
    }

    /// The tenant network (present until teardown).
    pub fn tenant(&self) -> &TenantNetwork {
        match &self.tenant {
            Some(tenant) => tenant,
            None => unreachable!("the tenant network lives until teardown"),
        }
    }

    /// The controller (present until teardown).
    pub fn controller(&self) -> &Controller {
        match &self.controller {
            Some(controller) => controller,
            None => unreachable!("the controller lives until teardown"),
        }
    }

    /// Starts (or starts again) the agent inside the guest namespace.
    pub fn start_agent(&mut self) -> Result<()> {
        let mut args = vec![
            "run".to_owned(),
            "--config-dir".to_owned(),
            self.files.config_dir().display().to_string(),
            // A failed isolation is retried three times, 0.5 s then 1 s apart, so that the
            // fail-closed scenario sees `failed to spawn` well within its start-up limit.
            "--isolation-attempts".to_owned(),
            "3".to_owned(),
            "--isolation-retry-initial-ms".to_owned(),
            "500".to_owned(),
        ];
        if let Some(seconds) = self.heartbeat_seconds {
            args.extend(["--heartbeat-interval".to_owned(), seconds.to_string()]);
        }
        self.agent = Some(GuestProcess::start(
            "trove-guest-agent",
            &self.settings.guest_netns,
            &self.settings.agent_bin,
            &args,
            &self.files.log("agent"),
        )?);
        Ok(())
    }

    /// Kills the plugin at once (a crash) and reaps it; nothing when it does not run.
    pub fn kill_plugin(&mut self) {
        if let Some(plugin) = self.plugin.as_mut() {
            plugin.kill_hard();
        }
    }

    /// Stops the plugin (SIGTERM, bounded) and reaps it.
    pub fn stop_plugin(&mut self) {
        if let Some(plugin) = self.plugin.as_mut() {
            plugin.stop(Duration::from_secs(10));
        }
    }

    /// Starts the plugin again (as systemd's socket unit would), waiting for its socket.
    pub fn start_plugin(&mut self) -> Result<()> {
        self.plugin = Some(start_plugin(&self.settings, &self.files)?);
        Ok(())
    }

    /// Whether the agent has exited (or was never started).
    pub fn agent_exited(&mut self) -> bool {
        !self.agent.as_mut().is_some_and(GuestProcess::is_running)
    }

    /// The agent's pid.
    pub fn agent_pid(&self) -> Result<u32> {
        self.agent
            .as_ref()
            .and_then(GuestProcess::pid)
            .context("the agent is not running")
    }

    /// The agent's last errors and warnings (else its last lines), for failure details.
    pub fn agent_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.files.log("agent")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let problems: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        let chosen = if problems.is_empty() {
            &lines
        } else {
            &problems
        };
        chosen[chosen.len().saturating_sub(3)..].join("\n")
    }

    /// Stops everything in reverse order and says what was removed.
    pub async fn teardown(mut self) -> Result<String> {
        let mut done = Vec::new();
        if let Some(mut agent) = self.agent.take() {
            done.push(format!("agent {}", agent.stop(Duration::from_secs(20))));
        }
        if let Some(controller) = self.controller.take() {
            controller.stop().await;
        }
        if let Some(mut database) = self.database.take() {
            database.armed = false;
            let file = database.tenant_nic_file.clone();
            done.push(DatabaseCleanup::remove(&database.settings, database.kind, file).await?);
        }
        if let Some(mut plugin) = self.plugin.take() {
            done.push(format!("plugin {}", plugin.stop(Duration::from_secs(10))));
        }
        drop(self.tenant.take());
        if self.settings.keep_logs {
            keep_logs(&self.settings, &self.files);
        }
        Ok(done.join(", "))
    }
}

fn start_plugin(settings: &Settings, files: &GuestFiles) -> Result<GuestProcess> {
    if settings.plugin_socket.exists()
        && std::os::unix::net::UnixStream::connect(&settings.plugin_socket).is_ok()
    {
        bail!(
            "a docker-hostnic plugin already serves {} (another run?): dockerd would use it",
            settings.plugin_socket.display()
        );
    }
    let args = vec![
        "--socket".to_owned(),
        settings.plugin_socket.display().to_string(),
        "--state-file".to_owned(),
        files.hostnic_state_file().display().to_string(),
        "--tenant-nic-file".to_owned(),
        files.tenant_nic_file().display().to_string(),
    ];
    let mut plugin = GuestProcess::start(
        "docker-hostnic",
        &settings.guest_netns,
        &settings.plugin_bin,
        &args,
        &files.log("plugin"),
    )?;
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(&settings.plugin_socket).is_ok() {
            return Ok(plugin);
        }
        if !plugin.is_running() {
            bail!("docker-hostnic exited at start: {}", plugin.log_tail(5));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "docker-hostnic did not create {} within 5 s: {}",
        settings.plugin_socket.display(),
        plugin.log_tail(5)
    )
}

fn keep_logs(settings: &Settings, files: &GuestFiles) {
    let Some(scenario) = files.root.file_name() else {
        return;
    };
    let target = settings
        .work_dir
        .with_file_name(format!("logs-{}", std::process::id()));
    let target = target.join(scenario);
    if std::fs::create_dir_all(&target).is_err() {
        return;
    }
    for name in ["agent", "plugin"] {
        let _ = std::fs::copy(files.log(name), target.join(format!("{name}.log")));
    }
}

/// `server_id` in the config `prepare` sends to a simulated guest.
pub const SERVER_ID: u32 = 1;
/// `max_connections` in the config `prepare` sends (Trove's template for 512 MB).
pub const PREPARED_MAX_CONNECTIONS: u32 = 100;

impl TroveGuest for Guest {
    fn kind(&self) -> GuestKind {
        GuestKind::Simulated
    }

    fn control_plane(&self) -> Result<&Controller> {
        self.controller
            .as_ref()
            .ok_or_else(|| anyhow!("the controller is stopped"))
    }

    fn tenant_login(&self) -> &TenantLogin {
        &self.login
    }

    fn client_netns(&self) -> &str {
        &self.tenant().client_netns
    }

    fn database_address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(GUEST_TENANT_ADDR), DATABASE_PORT)
    }

    /// The tenant's database and user, the rendered config, and the scenario's image tag
    /// as the datastore version; the data directory in the scenario's folder.
    fn prepare_args(&self) -> serde_json::Value {
        let mount_point = self.files.root.join("data").display().to_string();
        prepare_args(
            &self.spec.image_tag,
            &mount_point,
            &self.login,
            &mariadb_config(SERVER_ID, PREPARED_MAX_CONNECTIONS),
        )
    }

    fn agent_log_tail(&self) -> String {
        Guest::agent_log_tail(self)
    }

    /// Read with rtnetlink in the guest namespace.
    fn tenant_nic_in_vm(&self) -> Result<Option<TenantNic>> {
        let view = GuestView::read(&self.settings.guest_netns)?;
        let Some(link) = view.link_with_mac(self.tenant().mac) else {
            return Ok(None);
        };
        let addresses = view
            .addresses
            .iter()
            .filter(|a| a.link_index == link.index)
            .map(|a| a.address.to_string())
            .collect();
        let mut routes = view.tenant_routes(Some(link.index));
        routes.extend(view.tenant_default_routes(Some(link.index)));
        Ok(Some(TenantNic {
            name: link.name.clone(),
            up: link.up,
            addresses,
            routes,
        }))
    }
}
