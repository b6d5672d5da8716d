//! The files Trove's taskmanager injects into a guest, rendered byte for byte as Trove does,
//! so other OpenStack tooling (and our tests) can produce them without Trove.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::control_plane::ControlPlaneConfig;
use crate::pyjson;
use crate::secret::Secret;
use crate::tenant_nic::{DEFAULT_TENANT_NIC_FILE, HostRoute, MacAddress, routes_json};

/// Guest path of the dev-mode controller address file.
pub const CONTROLLER_CONF_PATH: &str = "/etc/trove/controller.conf";

/// Guest path of `daemon.json`.
pub const DAEMON_JSON_PATH: &str = "/etc/docker/daemon.json";

/// The per-instance facts written to `guest_info.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInfo {
    /// Instance UUID.
    pub guest_id: String,
    /// Datastore manager (`mysql`, …).
    pub datastore_manager: String,
    /// Datastore version name.
    pub datastore_version: String,
    /// Project id.
    pub tenant_id: String,
    /// Manager class path; written as `<manager>:<class>` in `datastore_registry_ext`.
    pub manager_class: String,
    /// `<replication namespace>.<strategy class>`.
    pub replication_strategy: String,
    /// SSL mode; `None` is written as Python's `None`.
    pub ssl_mode: Option<String>,
    /// Per-instance RPC key (absent when secure RPC is off).
    pub instance_rpc_encr_key: Option<Secret>,
}

fn python_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

impl GuestInfo {
    /// `guest_info.conf` as Trove formats it; `network_isolation` is the controller's
    /// `[network] network_isolation`.
    pub fn render(&self, network_isolation: bool) -> String {
        let mut text = format!(
            "[DEFAULT]\nguest_id={}\ndatastore_manager={}\ndatastore_version={}\ntenant_id={}\n\
             datastore_registry_ext={}:{}\nreplication_strategy={}\nssl_mode={}\nnetwork_isolation={}\n",
            self.guest_id,
            self.datastore_manager,
            self.datastore_version,
            self.tenant_id,
            self.datastore_manager,
            self.manager_class,
            self.replication_strategy,
            self.ssl_mode.as_deref().unwrap_or("None"),
            python_bool(network_isolation),
        );
        if let Some(key) = &self.instance_rpc_encr_key {
            text.push_str(&format!("instance_rpc_encr_key={}\n", key.expose()));
        }
        text
    }
}

/// One fixed IP of the user's Neutron port, with the subnet facts Trove copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIp {
    /// The fixed IP.
    pub ip_address: IpAddr,
    /// Subnet CIDR.
    pub cidr: IpNet,
    /// Subnet `gateway_ip`.
    pub gateway_ip: Option<IpAddr>,
    /// Subnet `host_routes`.
    pub host_routes: Vec<HostRoute<IpNet, IpAddr>>,
    /// Subnet `ipv6_ra_mode` (`dhcpv6-stateful`, `dhcpv6-stateless`, `slaac`).
    pub ipv6_ra_mode: Option<String>,
}

/// The user's Neutron port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPort {
    /// Port MAC.
    pub mac_address: MacAddress,
    /// Fixed IPs in Neutron's order.
    pub fixed_ips: Vec<FixedIp>,
}

impl UserPort {
    /// `eth1.json` exactly as Trove builds it: fixed IPs walked in order, the last IP of
    /// a family wins, keys keep the position of their first assignment.
    pub fn render_eth1_json(&self) -> String {
        // A serde_json `Map` (insertion-ordered) re-inserting a key keeps its place, as a
        // Python dict assignment does.
        let mut members = Map::new();
        members.insert(
            "mac_address".to_owned(),
            Value::String(self.mac_address.to_string()),
        );
        for fixed in &self.fixed_ips {
            let gateway = fixed
                .gateway_ip
                .map_or(Value::Null, |g| Value::String(g.to_string()));
            let routes = routes_json(&fixed.host_routes);
            let address = Value::String(fixed.ip_address.to_string());
            let cidr = Value::String(fixed.cidr.to_string());
            if fixed.ip_address.is_ipv4() {
                members.insert("ipv4_address".to_owned(), address);
                members.insert("ipv4_cidr".to_owned(), cidr);
                members.insert("ipv4_gateway".to_owned(), gateway);
                members.insert("ipv4_host_routes".to_owned(), routes);
            } else {
                members.insert("ipv6_address".to_owned(), address);
                members.insert("ipv6_cidr".to_owned(), cidr);
                members.insert("ipv6_host_routes".to_owned(), routes);
                if fixed.ipv6_ra_mode.as_deref() == Some("dhcpv6-stateful") {
                    members.insert("ipv6_gateway".to_owned(), gateway);
                }
            }
        }
        pyjson::dumps(&Value::Object(members))
    }
}

/// `/etc/docker/daemon.json` by Trove's rules (docs/compatibility.md, "daemon.json"); `None`
/// when Trove writes no file.
pub fn render_daemon_json(
    control: &ControlPlaneConfig,
    tenant_nic_written: bool,
) -> Option<String> {
    let mut members = Map::new();
    if control.network_isolation && tenant_nic_written {
        members.insert("bridge".to_owned(), Value::String("none".to_owned()));
        members.insert("ip-forward".to_owned(), Value::Bool(false));
        members.insert("iptables".to_owned(), Value::Bool(false));
    } else if let Some(bip) = control
        .docker_bridge_network_ip
        .as_deref()
        .filter(|b| !b.is_empty())
    {
        members.insert("bip".to_owned(), Value::String(bip.to_owned()));
    }
    if !control.docker_insecure_registries.is_empty() {
        let registries = control
            .docker_insecure_registries
            .iter()
            .cloned()
            .map(Value::String)
            .collect();
        members.insert("insecure-registries".to_owned(), Value::Array(registries));
    }
    (!members.is_empty()).then(|| pyjson::dumps(&Value::Object(members)))
}

/// Everything the taskmanager knows about one instance when it builds the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// `guest_info.conf` content.
    pub guest_info: GuestInfo,
    /// The user port: present when the instance has a NIC besides the management one.
    pub user_port: Option<UserPort>,
    /// The controller's `guest_config` file content, copied verbatim when it exists.
    pub guest_agent_conf: Option<String>,
}

/// One file for cloud-init's `write_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFile {
    /// Guest path.
    pub path: PathBuf,
    /// Exact content.
    pub content: String,
}

/// The injected files, in Trove's order: `guest_info.conf`, `trove-guestagent.conf`,
/// `controller.conf`, `eth1.json`, `daemon.json` (each only when Trove writes it).
pub fn render_injected_files(
    control: &ControlPlaneConfig,
    instance: &InstanceFacts,
) -> Vec<InjectedFile> {
    let mut files = vec![InjectedFile {
        path: control.guest_info_path(),
        content: instance.guest_info.render(control.network_isolation),
    }];
    if let Some(conf) = &instance.guest_agent_conf {
        files.push(InjectedFile {
            path: control
                .injected_config_location
                .join("trove-guestagent.conf"),
            content: conf.clone(),
        });
    }
    if let Some(address) = &control.controller_address {
        files.push(InjectedFile {
            path: PathBuf::from(CONTROLLER_CONF_PATH),
            content: format!("CONTROLLER={address}"),
        });
    }
    let tenant_nic = instance
        .user_port
        .as_ref()
        .filter(|_| control.network_isolation);
    if let Some(port) = tenant_nic {
        files.push(InjectedFile {
            path: PathBuf::from(DEFAULT_TENANT_NIC_FILE),
            content: port.render_eth1_json(),
        });
    }
    if let Some(content) = render_daemon_json(control, tenant_nic.is_some()) {
        files.push(InjectedFile {
            path: PathBuf::from(DAEMON_JSON_PATH),
            content,
        });
    }
    files
}
