//! What the guest asks a runtime to create: the database container and its network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use netiso_config::secret::Secret;
use netiso_config::tenant_nic::{Ipv6Gateway, MacAddress, TenantNic};

use crate::image::ImageReference;

/// The container name Trove's guest uses.
pub const DATABASE_CONTAINER_NAME: &str = "database";
/// The network Trove creates for the tenant NIC.
pub const DATABASE_NETWORK_NAME: &str = "database-network";
/// The libnetwork remote driver that hands the tenant NIC to the container.
pub const HOSTNIC_DRIVER: &str = "docker-hostnic";
/// The network option carrying the tenant NIC's MAC to the driver.
pub const HOSTNIC_MAC_OPTION: &str = "hostnic_mac";

/// The database container, runtime-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name: [`DATABASE_CONTAINER_NAME`] on a guest, unique names in tests.
    pub name: String,
    /// Image to run (ensure it first).
    pub image: ImageReference,
    /// Arguments replacing the image's command; `None` keeps the image's.
    pub command: Option<Vec<String>>,
    /// Environment; values are secrets because datastores take passwords here.
    pub env: BTreeMap<String, Secret>,
    /// Host paths mounted into the container.
    pub binds: Vec<Bind>,
    /// `uid:gid` (or a name) to run as; `None` keeps the image's user.
    pub user: Option<String>,
    /// What the daemon does when the container exits or the daemon restarts.
    pub restart_policy: RestartPolicy,
    /// Whether the container runs privileged (some datastores need it).
    pub privileged: bool,
    /// Share the VM's IPC namespace, as Trove does for every datastore.
    pub ipc_host: bool,
    /// Datastore health probe; the guest waits for it after a start.
    pub healthcheck: Option<HealthCheck>,
    /// Labels to find our containers by.
    pub labels: BTreeMap<String, String>,
    /// How the container reaches the tenant network.
    pub network: NetworkAttachment,
}

impl ContainerSpec {
    /// A spec with Trove's defaults: restart `unless-stopped`, host IPC, not privileged,
    /// the image's command and user, no environment, binds, health check or labels.
    pub fn new(name: impl Into<String>, image: ImageReference, network: NetworkAttachment) -> Self {
        Self {
            name: name.into(),
            image,
            command: None,
            env: BTreeMap::new(),
            binds: Vec::new(),
            user: None,
            restart_policy: RestartPolicy::UnlessStopped,
            privileged: false,
            ipc_host: true,
            healthcheck: None,
            labels: BTreeMap::new(),
            network,
        }
    }
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Path on the VM.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Daemon restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart unless stopped on purpose (Trove's choice for the database).
    UnlessStopped,
    /// Always restart.
    Always,
}

/// A container health probe (Docker `HEALTHCHECK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Docker's form: `["CMD", prog, args…]` or `["CMD-SHELL", script]`.
    pub test: Vec<String>,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive failures before `unhealthy`.
    pub retries: u32,
    /// Grace period after start during which failures do not count.
    pub start_period: Duration,
}

/// How the database container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// `network_isolation = True`: the container's only NIC is the tenant NIC, joined through
    /// the hostnic network with the port's fixed addresses; nothing is published.
    Hostnic {
        /// The network ([`DATABASE_NETWORK_NAME`]); ensure it first.
        network: String,
        /// The port's IPv4 fixed IP.
        ipv4: Option<Ipv4Addr>,
        /// The port's IPv6 fixed IP.
        ipv6: Option<Ipv6Addr>,
    },
    /// `network_isolation = False`: Docker's default bridge, these TCP ports published on
    /// the same port numbers of every VM address.
    Bridged {
        /// The datastore's TCP ports.
        published_tcp_ports: Vec<u16>,
    },
}

impl NetworkAttachment {
    /// The hostnic attachment for a tenant NIC, on [`DATABASE_NETWORK_NAME`].
    pub fn hostnic_for(nic: &TenantNic) -> Self {
        Self::Hostnic {
            network: DATABASE_NETWORK_NAME.to_owned(),
            ipv4: nic.ipv4.as_ref().map(|v4| v4.address),
            ipv6: nic.ipv6.as_ref().map(|v6| v6.address),
        }
    }
}

/// One IPAM pool of the hostnic network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamPool {
    /// The tenant subnet.
    pub subnet: IpNet,
    /// The subnet gateway; `None` lets Docker's IPAM pick one, as Trove does.
    pub gateway: Option<IpAddr>,
}

/// The hostnic network for one tenant NIC (Trove's `database-network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnicNetworkSpec {
    /// Network name.
    pub name: String,
    /// Network driver ([`HOSTNIC_DRIVER`]).
    pub driver: String,
    /// The tenant NIC's MAC, passed as the [`HOSTNIC_MAC_OPTION`] option.
    pub mac_address: MacAddress,
    /// IPv4 pool, when the port has an IPv4 address.
    pub ipv4: Option<IpamPool>,
    /// IPv6 pool, when the port has an IPv6 address (this also enables IPv6).
    pub ipv6: Option<IpamPool>,
}

impl HostnicNetworkSpec {
    /// Trove's `database-network` for a tenant NIC: driver `docker-hostnic`, one pool per
    /// address family of the port. An IPv6 gateway is set only for DHCPv6-stateful subnets,
    /// as the router advertises it otherwise.
    pub fn for_tenant_nic(nic: &TenantNic) -> Self {
        Self {
            name: DATABASE_NETWORK_NAME.to_owned(),
            driver: HOSTNIC_DRIVER.to_owned(),
            mac_address: nic.mac_address,
            ipv4: nic.ipv4.as_ref().map(|v4| IpamPool {
                subnet: IpNet::V4(v4.cidr),
                gateway: v4.gateway.map(IpAddr::V4),
            }),
            ipv6: nic.ipv6.as_ref().map(|v6| IpamPool {
                subnet: IpNet::V6(v6.cidr),
                gateway: match v6.gateway {
                    Ipv6Gateway::Dhcpv6Stateful(gateway) => gateway.map(IpAddr::V6),
                    Ipv6Gateway::RouterAdvertisement => None,
                },
            }),
        }
    }

    /// Whether the network carries IPv6.
    pub fn enable_ipv6(&self) -> bool {
        self.ipv6.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netiso_config::tenant_nic::{TenantIpv4, TenantIpv6};

    fn nic(ipv6_gateway: Ipv6Gateway) -> TenantNic {
        TenantNic {
            mac_address: "fa:16:3e:00:00:01".parse().expect("mac"),
            ipv4: Some(TenantIpv4 {
                address: "10.0.0.5".parse().expect("ip"),
                cidr: "10.0.0.0/24".parse().expect("cidr"),
                gateway: Some("10.0.0.1".parse().expect("gw")),
                host_routes: vec![],
            }),
            ipv6: Some(TenantIpv6 {
                address: "fd00::5".parse().expect("ip"),
                cidr: "fd00::/64".parse().expect("cidr"),
                host_routes: vec![],
                gateway: ipv6_gateway,
            }),
        }
    }

    #[test]
    fn network_from_tenant_nic() {
        let spec = HostnicNetworkSpec::for_tenant_nic(&nic(Ipv6Gateway::Dhcpv6Stateful(Some(
            "fd00::1".parse().expect("gw"),
        ))));
        assert_eq!(spec.name, "database-network");
        assert_eq!(spec.driver, "docker-hostnic");
        assert_eq!(spec.mac_address.to_string(), "fa:16:3e:00:00:01");
        let v4 = spec.ipv4.expect("v4 pool");
        assert_eq!(v4.subnet.to_string(), "10.0.0.0/24");
        assert_eq!(v4.gateway, Some("10.0.0.1".parse().expect("gw")));
        assert_eq!(
            spec.ipv6.and_then(|p| p.gateway),
            Some("fd00::1".parse().expect("gw"))
        );
        assert!(spec.enable_ipv6());

        let slaac = HostnicNetworkSpec::for_tenant_nic(&nic(Ipv6Gateway::RouterAdvertisement));
        assert_eq!(slaac.ipv6.map(|p| p.gateway), Some(None));
    }

    #[test]
    fn attachment_from_tenant_nic() {
        let mut tenant = nic(Ipv6Gateway::RouterAdvertisement);
        assert_eq!(
            NetworkAttachment::hostnic_for(&tenant),
            NetworkAttachment::Hostnic {
                network: "database-network".into(),
                ipv4: Some("10.0.0.5".parse().expect("ip")),
                ipv6: Some("fd00::5".parse().expect("ip")),
            }
        );
        tenant.ipv6 = None;
        let spec = HostnicNetworkSpec::for_tenant_nic(&tenant);
        assert!(!spec.enable_ipv6());
    }
}
