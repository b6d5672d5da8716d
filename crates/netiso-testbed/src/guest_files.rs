//! The files Trove's taskmanager would inject into the guest, rendered by netiso-config
//! (`guest_info.conf`, `eth1.json`, `daemon.json`) plus the controller's
//! `trove-guestagent.conf` copy with our `[netiso]` section, in a per-scenario directory
//! removed on drop.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use netiso_config::render::{FixedIp, GuestInfo, UserPort, render_daemon_json};
use netiso_config::tenant_nic::{HostRoute, MacAddress};
use netiso_config::{ControlPlaneConfig, Secret};

use crate::net::{
    CLIENT_ADDR, GUEST_TENANT_ADDR, GUEST_TENANT_ADDR6, HOST_ROUTE, TENANT_CIDR, TENANT_CIDR6,
};
use crate::settings::Settings;

/// The datastore the harness declares: the provisioned image is MariaDB.
pub const DATASTORE: &str = "mariadb";
/// The datastore's port, published in bridged mode.
pub const DATABASE_PORT: u16 = 3306;

/// Which container runtime the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// dockerd with the docker-hostnic plugin.
    Docker,
    /// containerd with the agent's own namespace preparation.
    Containerd,
}

impl RuntimeKind {
    /// The `[netiso] runtime` value and the scenario prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
        }
    }
}

/// What one scenario's guest looks like.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The instance id (a UUID, as Trove's).
    pub guest_id: String,
    /// `control_exchange`, unique per scenario so nothing else on the broker interferes.
    pub control_exchange: String,
    /// `conductor_queue`, unique per scenario (the harness is this guest's conductor).
    pub conductor_queue: String,
    /// The per-instance RPC key.
    pub key: String,
    /// `network_isolation` as the controller writes it.
    pub isolated: bool,
    /// The runtime.
    pub runtime: RuntimeKind,
    /// The MAC written to `eth1.json` (`None`: no file, as Trove in bridged mode).
    pub tenant_mac: Option<MacAddress>,
    /// The database image's repository (without registry).
    pub image_repository: String,
    /// The database image's tag (the datastore version).
    pub image_tag: String,
}

/// A config directory and the agent's state, removed on drop.
#[derive(Debug)]
pub struct GuestFiles {
    /// The scenario's directory.
    pub root: PathBuf,
    /// Whether a tmpfs is mounted on the state directory (unmounted on drop).
    state_mounted: bool,
}

impl GuestFiles {
    /// `--config-dir` of the agent.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("conf.d")
    }

    /// The tenant NIC file.
    pub fn tenant_nic_file(&self) -> PathBuf {
        self.root.join("eth1.json")
    }

    /// Docker's daemon configuration as Trove injects it (`/etc/docker/daemon.json`); the
    /// agent reads its `insecure-registries` for containerd pulls.
    pub fn daemon_json(&self) -> PathBuf {
        self.root.join("daemon.json")
    }

    /// The agent's state directory (`[netiso] state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Puts the (still empty) state directory on a tmpfs of `bytes`, so that it can be
    /// filled without filling this machine's disk.
    pub fn limit_state_dir(&mut self, bytes: u64) -> Result<()> {
        let dir = self.state_dir();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("netiso-soak-state")
            .arg(&dir)
            .status()
            .context("running mount")?;
        anyhow::ensure!(
            status.success(),
            "mounting a tmpfs on {} failed: {status}",
            dir.display()
        );
        self.state_mounted = true;
        Ok(())
    }

    /// The plugin's state file.
    pub fn hostnic_state_file(&self) -> PathBuf {
        self.root.join("hostnic.json")
    }

    /// Logs of the processes the harness starts for this scenario.
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    /// Writes everything for `spec` under `<work dir>/<scenario>`.
    pub fn write(settings: &Settings, scenario: &str, spec: &GuestSpec) -> Result<Self> {
        let root = settings.work_dir.join(scenario);
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("removing the old {}", root.display()))?;
        }
        let this = Self {
            root,
            state_mounted: false,
        };
        for dir in [this.config_dir(), this.state_dir(), this.root.join("data")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let guest_info = GuestInfo {
            guest_id: spec.guest_id.clone(),
            datastore_manager: DATASTORE.to_owned(),
            datastore_version: spec.image_tag.clone(),
            tenant_id: "netiso-harness".to_owned(),
            manager_class: "trove.guestagent.datastore.mariadb.manager.Manager".to_owned(),
            replication_strategy:
                "trove.guestagent.strategies.replication.mariadb_gtid.MariaDBGTIDReplication"
                    .to_owned(),
            ssl_mode: None,
            instance_rpc_encr_key: Some(Secret::new(spec.key.clone())),
        };
        write(
            &this.config_dir().join("guest_info.conf"),
            &guest_info.render(spec.isolated),
        )?;
        write(
            &this.config_dir().join("trove-guestagent.conf"),
            &this.guest_agent_conf(settings, spec),
        )?;
        if let Some(mac) = spec.tenant_mac {
            write(&this.tenant_nic_file(), &user_port(mac)?.render_eth1_json())?;
        }
        let mut control = ControlPlaneConfig::default();
        control.network_isolation = spec.isolated;
        control.docker_insecure_registries = vec![settings.guest_registry.clone()];
        if let Some(daemon_json) = render_daemon_json(&control, spec.tenant_mac.is_some()) {
            write(&this.daemon_json(), &daemon_json)?;
        }
        Ok(this)
    }

    fn guest_agent_conf(&self, settings: &Settings, spec: &GuestSpec) -> String {
        let root = self.root.display();
        format!(
            "[DEFAULT]\n\
             transport_url = {broker}\n\
             control_exchange = {exchange}\n\
             conductor_queue = {conductor}\n\
             state_change_wait_time = 180\n\
             \n\
             [guest_agent]\n\
             container_registry = {registry}\n\
             \n\
             [{DATASTORE}]\n\
             docker_image = {repository}\n\
             tcp_ports = {DATABASE_PORT}\n\
             mount_point = {root}/data\n\
             \n\
             [netiso]\n\
             runtime = {runtime}\n\
             docker_socket = {docker_socket}\n\
             docker_exec_root = {exec_root}\n\
             containerd_socket = {containerd_socket}\n\
             containerd_namespace = netiso-harness\n\
             plugin_socket = {plugin_socket}\n\
             hostnic_state_file = {root}/hostnic.json\n\
             state_dir = {root}/state\n\
             tenant_nic_file = {root}/eth1.json\n\
             docker_daemon_config = {root}/daemon.json\n\
             database_container = {container}\n\
             mysql_config_dir = {root}/etc-mysql\n\
             mysql_socket_dir = {root}/mysqld\n\
             \n\
             {rabbit}",
            broker = settings.broker.guest_url(),
            rabbit = settings.broker.guest_rabbit_section(),
            exchange = spec.control_exchange,
            conductor = spec.conductor_queue,
            registry = settings.guest_registry,
            repository = spec.image_repository,
            runtime = spec.runtime.as_str(),
            docker_socket = settings.docker_socket.display(),
            exec_root = settings.docker_exec_root.display(),
            containerd_socket = settings.containerd_socket.display(),
            plugin_socket = settings.plugin_socket.display(),
            container = crate::settings::DATABASE_CONTAINER,
        )
    }
}

impl Drop for GuestFiles {
    fn drop(&mut self) {
        if self.state_mounted {
            let dir = self.state_dir();
            match std::process::Command::new("umount").arg(&dir).status() {
                Ok(status) if status.success() => {}
                other => eprintln!("cleanup: unmounting {}: {other:?}", dir.display()),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("cleanup: removing {}: {e}", self.root.display());
        }
    }
}

fn write(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

/// The tenant port as Neutron would describe it: dual stack, a gateway, one host route.
fn user_port(mac: MacAddress) -> Result<UserPort> {
    Ok(UserPort {
        mac_address: mac,
        fixed_ips: vec![
            FixedIp {
                ip_address: IpAddr::V4(GUEST_TENANT_ADDR),
                cidr: TENANT_CIDR.parse()?,
                gateway_ip: Some(IpAddr::V4(CLIENT_ADDR)),
                host_routes: vec![HostRoute {
                    destination: HOST_ROUTE.parse()?,
                    nexthop: IpAddr::V4(CLIENT_ADDR),
                }],
                ipv6_ra_mode: None,
            },
            FixedIp {
                ip_address: IpAddr::V6(GUEST_TENANT_ADDR6),
                cidr: TENANT_CIDR6.parse()?,
                gateway_ip: None,
                host_routes: Vec::new(),
                ipv6_ra_mode: Some("slaac".to_owned()),
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_port_renders_as_trove_writes_it() {
        let port = user_port(MacAddress::new([0xfa, 0x16, 0x3e, 1, 2, 3])).expect("port");
        assert_eq!(
            port.render_eth1_json(),
            "{\"mac_address\": \"fa:16:3e:01:02:03\", \"ipv4_address\": \"10.252.0.10\", \
             \"ipv4_cidr\": \"10.252.0.0/24\", \"ipv4_gateway\": \"10.252.0.1\", \
             \"ipv4_host_routes\": [{\"destination\": \"10.253.0.0/24\", \"nexthop\": \"10.252.0.1\"}], \
             \"ipv6_address\": \"fd00:252::10\", \"ipv6_cidr\": \"fd00:252::/64\", \"ipv6_host_routes\": []}"
        );
    }
}
