//! Where the provisioned simulated guest's pieces are (the values of `cargo xtask env`,
//! overridable by the same `NETISO_*` variables the tests read), and the scenarios' names.

use std::path::PathBuf;

use clap::ValueEnum;

/// The container Trove's guest runs the database in (Trove's name; scenarios run one at a
/// time because they share it).
pub const DATABASE_CONTAINER: &str = "database";
/// Trove's network for the tenant NIC.
pub const DATABASE_NETWORK: &str = "database-network";

/// One scenario of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// Docker, network_isolation = True.
    DockerIsolated,
    /// Docker, network_isolation = False.
    DockerBridged,
    /// Docker, isolated, with agent, dockerd and RabbitMQ restarts and a returned NIC.
    DockerFaults,
    /// Docker, isolated, the tenant NIC's MAC absent: fail closed.
    IsolationImpossible,
    /// containerd, network_isolation = True.
    ContainerdIsolated,
    /// containerd, network_isolation = False.
    ContainerdBridged,
    /// A real guest VM (`--vm-image`): Docker, isolated, with kill -9 and a reboot.
    VmDockerIsolated,
    /// A real guest VM: Docker, network_isolation = False.
    VmDockerBridged,
    /// A real guest VM: containerd, isolated.
    VmContainerdIsolated,
    /// Trove's own guest agent in the reference variant of the image, measured beside ours
    /// (runs only when named, with `--vm-reference-image`).
    VmTroveReference,
}

impl ScenarioName {
    /// The scenarios on a real guest VM, in the order they run.
    pub const VM: [Self; 3] = [
        Self::VmDockerIsolated,
        Self::VmDockerBridged,
        Self::VmContainerdIsolated,
    ];

    /// Every scenario on the simulated guest, in the order they run.
    pub const ALL: [Self; 6] = [
        Self::DockerIsolated,
        Self::DockerBridged,
        Self::DockerFaults,
        Self::IsolationImpossible,
        Self::ContainerdIsolated,
        Self::ContainerdBridged,
    ];

    /// The scenario's name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DockerIsolated => "docker-isolated",
            Self::DockerBridged => "docker-bridged",
            Self::DockerFaults => "docker-faults",
            Self::IsolationImpossible => "isolation-impossible",
            Self::ContainerdIsolated => "containerd-isolated",
            Self::ContainerdBridged => "containerd-bridged",
            Self::VmDockerIsolated => "vm-docker-isolated",
            Self::VmDockerBridged => "vm-docker-bridged",
            Self::VmContainerdIsolated => "vm-containerd-isolated",
            Self::VmTroveReference => "vm-trove-reference",
        }
    }
}

/// Everything the scenarios need to know about the machine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent binary.
    pub agent_bin: PathBuf,
    /// The plugin binary.
    pub plugin_bin: PathBuf,
    /// Per-run directory.
    pub work_dir: PathBuf,
    /// Keep logs after the run.
    pub keep_logs: bool,
    /// Where measurements go, if anywhere.
    pub measurements: Option<PathBuf>,
    /// The guest image of the VM scenarios.
    pub vm_image: Option<PathBuf>,
    /// The image variant with Trove's own agent.
    pub vm_reference_image: Option<PathBuf>,
    /// The RabbitMQ the controller and the guest use.
    pub broker: Broker,
    /// The registry as the guest reaches it.
    pub guest_registry: String,
    /// The registry as this machine reaches it.
    pub host_registry: String,
    /// The guest VM's namespace.
    pub guest_netns: String,
    /// The guest's management NIC.
    pub guest_mgmt_if: String,
    /// The guest's management address.
    pub guest_mgmt_addr: std::net::Ipv4Addr,
    /// dockerd's socket.
    pub docker_socket: PathBuf,
    /// dockerd's exec root.
    pub docker_exec_root: PathBuf,
    /// dockerd's pid file.
    pub dockerd_pid_file: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// Where dockerd looks for the plugin.
    pub plugin_socket: PathBuf,
    /// RabbitMQ's node, for `rabbitmqctl`.
    pub rabbit_node: String,
}

/// The RabbitMQ of a run: the provisioned single node, or the three-node cluster
/// (`cargo xtask provision --rabbit-cluster`) with quorum queues, as a Trove cloud runs it.
#[derive(Debug, Clone)]
pub struct Broker {
    /// `host:port` of each node as the harness (Trove's controller) reaches it: host loopback.
    pub controller_hosts: Vec<String>,
    /// `host:port` of each node as the guest reaches it: through its management NIC.
    pub guest_hosts: Vec<String>,
    /// `rabbit_quorum_queue`, for the guest and the controller alike (the queue arguments
    /// must agree).
    pub quorum_queues: bool,
    /// `heartbeat_timeout_threshold` written for the guest (oslo's default 60 s when `None`).
    pub heartbeat_timeout_threshold: Option<u16>,
}

impl Broker {
    /// The provisioned single node.
    pub fn single() -> Self {
        Self {
            controller_hosts: vec!["127.0.0.1:5672".to_owned()],
            guest_hosts: vec!["10.251.0.1:5672".to_owned()],
            quorum_queues: false,
            heartbeat_timeout_threshold: None,
        }
    }

    /// The three-node cluster, every node in the `transport_url`, quorum queues, and a
    /// heartbeat short enough that a silent node is noticed within seconds (an operator's
    /// choice Trove allows; oslo's default is 60 s).
    pub fn cluster() -> Self {
        let ports = [5681, 5682, 5683];
        Self {
            controller_hosts: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            guest_hosts: ports.iter().map(|p| format!("10.251.0.1:{p}")).collect(),
            quorum_queues: true,
            heartbeat_timeout_threshold: Some(10),
        }
    }

    /// The controller's `transport_url`.
    pub fn controller_url(&self) -> String {
        transport_url(&self.controller_hosts)
    }

    /// The guest's `transport_url`.
    pub fn guest_url(&self) -> String {
        transport_url(&self.guest_hosts)
    }

    /// The guest's `[oslo_messaging_rabbit]` section.
    pub fn guest_rabbit_section(&self) -> String {
        let mut section = format!(
            "[oslo_messaging_rabbit]\nrabbit_quorum_queue = {}\n",
            if self.quorum_queues { "True" } else { "False" }
        );
        if let Some(threshold) = self.heartbeat_timeout_threshold {
            section.push_str(&format!("heartbeat_timeout_threshold = {threshold}\n"));
        }
        section
    }
}

/// `rabbit://guest:guest@h1,guest:guest@h2/`: oslo's form for several hosts.
fn transport_url(hosts: &[String]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("guest:guest@{h}")).collect();
    format!("rabbit://{}/", hosts.join(","))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn beside_this_program(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Settings {
    /// The provisioned layout (`cargo xtask provision`): the binaries beside the running
    /// program, the single broker node, and a folder of this process's own under `work_root`.
    pub fn provisioned(work_root: &std::path::Path) -> Self {
        let docker_host = env_or("NETISO_DOCKER_HOST", "unix:///run/trove-netiso/docker.sock");
        Self {
            agent_bin: beside_this_program("trove-guest-agent"),
            plugin_bin: beside_this_program("docker-hostnic"),
            work_dir: work_root.join(std::process::id().to_string()),
            keep_logs: false,
            measurements: None,
            vm_image: None,
            vm_reference_image: None,
            broker: Broker::single(),
            guest_registry: env_or("NETISO_GUEST_REGISTRY", "10.251.0.1:5000"),
            host_registry: env_or("NETISO_REGISTRY", "127.0.0.1:5000"),
            guest_netns: env_or("NETISO_GUEST_NETNS", "netiso-guest"),
            guest_mgmt_if: "mgmt0".to_owned(),
            guest_mgmt_addr: std::net::Ipv4Addr::new(10, 251, 0, 10),
            docker_socket: PathBuf::from(
                docker_host
                    .strip_prefix("unix://")
                    .unwrap_or(docker_host.as_str()),
            ),
            docker_exec_root: PathBuf::from(env_or(
                "NETISO_DOCKER_EXEC_ROOT",
                "/run/trove-netiso/docker-exec",
            )),
            dockerd_pid_file: PathBuf::from("/run/trove-netiso/dockerd.pid"),
            containerd_socket: PathBuf::from(env_or(
                "NETISO_CONTAINERD_SOCKET",
                "/run/trove-netiso/containerd/containerd.sock",
            )),
            plugin_socket: PathBuf::from("/run/docker/plugins/docker-hostnic.sock"),
            rabbit_node: "rabbit@localhost".to_owned(),
        }
    }
}
