//! Where provisioned things live: paths, namespace names, addresses and ports.
//!
//! One table, so that provision, CI and the tests agree. Tests read the same values from the
//! environment variables listed in [`test_environment`] (with these values as defaults).

/// State that outlives a checkout (venv, docker data root, registry storage).
pub const STATE_DIR: &str = "/var/lib/trove-netiso";
/// Sockets and pid files; gone after a reboot, recreated by provision.
pub const RUN_DIR: &str = "/run/trove-netiso";
/// Logs of the services provision starts.
pub const LOG_DIR: &str = "/var/log/trove-netiso";
/// Python virtual environment with oslo.messaging, the foreign peer of the RPC tests.
pub const VENV: &str = "/var/lib/trove-netiso/venv";

/// Namespace standing for the management network (RabbitMQ and the registry are reached here).
pub const MGMT_NETNS: &str = "netiso-mgmt";
/// Namespace standing for the guest VM: dockerd and containerd run inside it.
pub const GUEST_NETNS: &str = "netiso-guest";
/// The management network's side of the management veth (in [`MGMT_NETNS`]).
pub const MGMT_GATEWAY_IF: &str = "nimgmt-gw";
/// The guest VM's management NIC (in [`GUEST_NETNS`]).
pub const GUEST_MGMT_IF: &str = "mgmt0";
/// Address of the management network's services, as the guest sees them.
pub const MGMT_GATEWAY_ADDR: &str = "10.251.0.1";
/// The guest VM's management address.
pub const GUEST_MGMT_ADDR: &str = "10.251.0.10";
/// Prefix length of the management network.
pub const MGMT_PREFIX_LEN: u8 = 24;

/// RabbitMQ's AMQP port (host loopback, and forwarded on the management network).
pub const AMQP_PORT: u16 = 5672;
/// RabbitMQ's TLS (AMQPS) listener (host loopback, and forwarded on the management network).
pub const AMQPS_PORT: u16 = 5671;
/// The test PKI: `ca.pem`, `server.pem`/`server-key.pem` (RabbitMQ's), `client.pem`/
/// `client-key.pem` (a guest's); keys 0600.
pub const TLS_DIR: &str = "/var/lib/trove-netiso/tls";
/// The registry's port (host loopback, and forwarded on the management network).
pub const REGISTRY_PORT: u16 = 5000;
/// Services that the management network forwards to this machine's loopback.
pub const FORWARDED_PORTS: [u16; 3] = [AMQP_PORT, AMQPS_PORT, REGISTRY_PORT];
/// RabbitMQ node name; `localhost` keeps Erlang distribution on loopback.
pub const RABBIT_NODE: &str = "rabbit@localhost";

/// One node of the three-node RabbitMQ cluster (`cargo xtask provision --rabbit-cluster`).
pub struct ClusterNode {
    /// Erlang node name, for `rabbitmqctl -n`.
    pub name: &'static str,
    /// Short name: its data directory and log file.
    pub short: &'static str,
    /// AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// Erlang distribution port (the nodes and `rabbitmqctl` talk over it).
    pub dist_port: u16,
}

/// Where each cluster node keeps its configuration, data and start script (`<short name>/`).
pub const CLUSTER_STATE_DIR: &str = "/var/lib/trove-netiso/rabbit-cluster";

/// The cluster's nodes; the first is the one the others join.
pub const CLUSTER_NODES: [ClusterNode; 3] = [
    ClusterNode {
        name: "netiso-c1@localhost",
        short: "c1",
        amqp_port: 5681,
        dist_port: 25681,
    },
    ClusterNode {
        name: "netiso-c2@localhost",
        short: "c2",
        amqp_port: 5682,
        dist_port: 25682,
    },
    ClusterNode {
        name: "netiso-c3@localhost",
        short: "c3",
        amqp_port: 5683,
        dist_port: 25683,
    },
];

/// dockerd's API socket (the daemon runs in [`GUEST_NETNS`]).
pub const DOCKER_SOCKET: &str = "/run/trove-netiso/docker.sock";
/// dockerd's exec root; deliberately not `/var/run/docker`, so the plugin's
/// "any sandbox path" promise is exercised.
pub const DOCKER_EXEC_ROOT: &str = "/run/trove-netiso/docker-exec";
/// dockerd's data root.
pub const DOCKER_DATA_ROOT: &str = "/var/lib/trove-netiso/docker";
/// Standalone containerd's gRPC socket (the daemon runs in [`GUEST_NETNS`]).
pub const CONTAINERD_SOCKET: &str = "/run/trove-netiso/containerd/containerd.sock";

/// Repository of the MariaDB image provision builds (`docs/mariadb-image.md`), in the
/// registry at [`REGISTRY_PORT`].
pub const MARIADB_REPOSITORY: &str = "trove-netiso/mariadb";
/// Its tag: the Debian 12 MariaDB series.
pub const MARIADB_TAG: &str = "10.11";

/// The cluster's `transport_url` from `address` (this machine's loopback, or the guest's
/// management gateway), every node in it as oslo.messaging lists them.
fn cluster_url(address: &str) -> String {
    let hosts: Vec<String> = CLUSTER_NODES
        .iter()
        .map(|n| format!("guest:guest@{address}:{}", n.amqp_port))
        .collect();
    format!("amqp://{}/%2f", hosts.join(","))
}

/// Environment variables that tell tests and tools where everything is.
pub fn test_environment() -> Vec<(&'static str, String)> {
    vec![
        (
            "NETISO_TEST_AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f"),
        ),
        ("NETISO_TEST_CLUSTER_URL", cluster_url("127.0.0.1")),
        ("NETISO_GUEST_CLUSTER_URL", cluster_url(MGMT_GATEWAY_ADDR)),
        (
            "NETISO_TEST_CLUSTER_NODES",
            CLUSTER_NODES
                .iter()
                .map(|n| n.name)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("NETISO_TEST_CLUSTER_STATE", CLUSTER_STATE_DIR.to_string()),
        ("NETISO_PY_VENV", VENV.to_string()),
        ("NETISO_DOCKER_HOST", format!("unix://{DOCKER_SOCKET}")),
        ("NETISO_DOCKER_EXEC_ROOT", DOCKER_EXEC_ROOT.to_string()),
        ("NETISO_CONTAINERD_SOCKET", CONTAINERD_SOCKET.to_string()),
        ("NETISO_GUEST_NETNS", GUEST_NETNS.to_string()),
        ("NETISO_MGMT_NETNS", MGMT_NETNS.to_string()),
        ("NETISO_REGISTRY", format!("127.0.0.1:{REGISTRY_PORT}")),
        (
            "NETISO_GUEST_REGISTRY",
            format!("{MGMT_GATEWAY_ADDR}:{REGISTRY_PORT}"),
        ),
        (
            "NETISO_GUEST_AMQP_URL",
            format!("amqp://guest:guest@{MGMT_GATEWAY_ADDR}:{AMQP_PORT}/%2f"),
        ),
        // TLS: the query turns `ssl` on and names the CA, as oslo.messaging reads it.
        (
            "NETISO_TEST_AMQPS_URL",
            format!(
                "amqp://guest:guest@127.0.0.1:{AMQPS_PORT}/%2f?ssl=true&ssl_ca_file={TLS_DIR}/ca.pem"
            ),
        ),
        (
            "NETISO_GUEST_AMQPS_URL",
            format!(
                "amqp://guest:guest@{MGMT_GATEWAY_ADDR}:{AMQPS_PORT}/%2f?ssl=true&ssl_ca_file={TLS_DIR}/ca.pem"
            ),
        ),
        ("NETISO_TLS_CA", format!("{TLS_DIR}/ca.pem")),
        ("NETISO_TLS_CLIENT_CERT", format!("{TLS_DIR}/client.pem")),
        ("NETISO_TLS_CLIENT_KEY", format!("{TLS_DIR}/client-key.pem")),
    ]
}
