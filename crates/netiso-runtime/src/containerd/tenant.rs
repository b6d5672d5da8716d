//! The tenant NIC's trip into a container's network namespace and back, for the containerd
//! adapter (Docker does this through the `docker-hostnic` plugin).
//!
//! Into the container: a named namespace is created (`ip netns` compatible), the NIC found
//! by MAC in the VM namespace gets its original name recorded in `IFLA_IFALIAS`, then moves
//! and is renamed `eth0` in one `RTM_NEWLINK` (no window with a temporary name), and is
//! configured from `eth1.json`: `lo` up, IPv6 router advertisements off when a gateway is
//! given (before the link comes up, so no RA-learnt default races ours), the addresses, the
//! link up, host routes, then default routes (`NLM_F_REPLACE`, so a retry is harmless).
//!
//! Back to the VM: down, addresses flushed, moved and renamed to the alias in one message,
//! alias cleared, namespace deleted. Both directions are idempotent: a restarted agent that
//! finds the namespace with the NIC inside carries on, and one that finds the NIC already
//! home only deletes what is left.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netiso_config::tenant_nic::{Ipv6Gateway, MacAddress, TenantNic};
use netiso_netlink::netns::NAMED_NETNS_DIR;
use netiso_netlink::{
    Namespace, NamespaceTarget, NetlinkError, NetlinkHandle, RouteSpec, Rtnetlink,
};
use tracing::{info, warn};

/// The tenant NIC's name inside the container.
pub const CONTAINER_IFNAME: &str = "eth0";

/// Why the tenant NIC could not be handed over or taken back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantNetworkError {
    /// No link with the tenant MAC in the VM namespace nor in the container's.
    #[error(
        "tenant NIC {mac} is neither in the VM namespace {vm} nor in namespace {netns} \
         (is eth1.json's mac_address right, or is another container using the NIC?)"
    )]
    NicNotFound {
        /// The tenant MAC.
        mac: String,
        /// The VM namespace path.
        vm: String,
        /// The container namespace name.
        netns: String,
    },
    /// A netlink or namespace operation failed.
    #[error("{step}: {source}")]
    Netlink {
        /// What we were doing.
        step: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(NetlinkError) -> TenantNetworkError {
    let step = step.into();
    move |source| TenantNetworkError::Netlink { step, source }
}

/// The named namespace prepared for a container, with the tenant NIC inside as `eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedNamespace {
    /// The namespace's name under `/run/netns`.
    pub name: String,
    /// Its path, for the OCI spec.
    pub path: PathBuf,
    /// The NIC's name in the VM before it moved (kept in its alias too).
    pub original_name: String,
    /// Whether this call moved the NIC (false: a previous run had, and we carried on).
    pub moved_now: bool,
}

/// What [`release`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Whether this call moved a NIC back (false: it was already home).
    pub moved_back: bool,
    /// The names the NICs have in the VM namespace now.
    pub names: Vec<String>,
}

/// The path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NAMED_NETNS_DIR).join(name)
}

fn mac_of(nic: &TenantNic) -> MacAddress {
    nic.mac_address
}

/// Opens the named namespace, or creates it; the flag says whether it was created.
fn open_or_create(name: &str) -> Result<(Namespace, bool), TenantNetworkError> {
    let path = netns_path(name);
    if path.exists() {
        match Namespace::open(name) {
            Ok(namespace) => return Ok((namespace, false)),
            Err(e) => {
                // A file left without its mount (e.g. /run/netns remounted): start over.
                warn!(netns = name, error = %e, "stale namespace file, recreating it");
                Namespace::delete(name).map_err(step(format!("delete stale namespace {name}")))?;
            }
        }
    }
    let namespace = Namespace::create(name).map_err(step(format!("create namespace {name}")))?;
    Ok((namespace, true))
}

/// Creates (or finds, after a crash) the namespace `netns`, moves the tenant NIC into it as
/// `eth0` and configures it from `nic`. On failure nothing is left half-done: the NIC goes
/// back to `vm` and the namespace is deleted.
pub fn prepare(
    vm: &Namespace,
    netns: &str,
    nic: &TenantNic,
) -> Result<PreparedNamespace, TenantNetworkError> {
    let (namespace, created) = open_or_create(netns)?;
    let result = move_in_and_configure(vm, &namespace, netns, nic);
    match result {
        Ok(prepared) => Ok(prepared),
        Err(e) => {
            warn!(netns, error = %e, "preparing the container network failed, rolling back");
            if let Err(undo) = release(vm, netns, Some(nic.mac_address), None) {
                warn!(netns, created, error = %undo, "rollback of the tenant NIC failed");
            }
            Err(e)
        }
    }
}

fn move_in_and_configure(
    vm: &Namespace,
    namespace: &Namespace,
    netns: &str,
    nic: &TenantNic,
) -> Result<PreparedNamespace, TenantNetworkError> {
    let mac = mac_of(nic);
    let inside = NetlinkHandle::in_namespace(namespace)
        .map_err(step(format!("open netlink in namespace {netns}")))?;
    let (original_name, moved_now) = match inside.link_by_mac(mac) {
        Ok(link) => {
            info!(netns, %mac, "tenant NIC already in the container namespace, carrying on");
            let original = link.alias.clone().unwrap_or_else(|| link.name.clone());
            if link.name != CONTAINER_IFNAME {
                inside
                    .set_link_up(link.index, false)
                    .map_err(step("set the tenant NIC down"))?;
                inside
                    .rename_link(link.index, CONTAINER_IFNAME)
                    .map_err(step(format!("rename the tenant NIC to {CONTAINER_IFNAME}")))?;
            }
            (original, false)
        }
        Err(e) if e.is_not_found() => {
            let home = NetlinkHandle::in_namespace(vm)
                .map_err(step("open netlink in the VM namespace"))?;
            let link = match home.link_by_mac(mac) {
                Ok(link) => link,
                Err(e) if e.is_not_found() => {
                    return Err(TenantNetworkError::NicNotFound {
                        mac: mac.to_string(),
                        vm: vm.path().display().to_string(),
                        netns: netns.to_owned(),
                    });
                }
                Err(e) => return Err(step("look up the tenant NIC in the VM namespace")(e)),
            };
            home.set_alias(link.index, &link.name)
                .map_err(step(format!("record the original name of {}", link.name)))?;
            home.move_link(
                link.index,
                NamespaceTarget::Namespace(namespace),
                Some(CONTAINER_IFNAME),
            )
            .map_err(step(format!(
                "move {} into namespace {netns} as {CONTAINER_IFNAME}",
                link.name
            )))?;
            info!(netns, %mac, from = %link.name, "tenant NIC moved into the container namespace");
            (link.name, true)
        }
        Err(e) => return Err(step(format!("look up the tenant NIC in {netns}"))(e)),
    };
    configure(&inside, nic)?;
    Ok(PreparedNamespace {
        name: netns.to_owned(),
        path: netns_path(netns),
        original_name,
        moved_now,
    })
}

/// Loopback, addresses, link state and routes inside the container namespace, idempotently.
fn configure(inside: &NetlinkHandle, nic: &TenantNic) -> Result<(), TenantNetworkError> {
    let lo = inside.link_by_name("lo").map_err(step("find lo"))?;
    inside
        .set_link_up(lo.index, true)
        .map_err(step("set lo up"))?;
    let link = inside
        .link_by_mac(mac_of(nic))
        .map_err(step("find the tenant NIC after the move"))?;
    let index = link.index;

    let ipv6_gateway = nic.ipv6.as_ref().and_then(|v6| match v6.gateway {
        Ipv6Gateway::Dhcpv6Stateful(gateway) => gateway,
        Ipv6Gateway::RouterAdvertisement => None,
    });
    if nic.ipv6.is_some() {
        match inside.accept_ra(CONTAINER_IFNAME) {
            Ok(Some(_)) if ipv6_gateway.is_some() => inside
                .set_accept_ra(CONTAINER_IFNAME, 0)
                .map_err(step("turn IPv6 router advertisements off"))?,
            Ok(Some(_)) => {}
            Ok(None) => warn!("IPv6 is disabled in the container namespace; IPv6 settings skipped"),
            Err(e) => return Err(step("read accept_ra")(e)),
        }
    }
    let ipv6_enabled =
        nic.ipv6.is_some() && matches!(inside.accept_ra(CONTAINER_IFNAME), Ok(Some(_)));

    let mut addresses = Vec::new();
    if let Some(v4) = &nic.ipv4 {
        let net = Ipv4Net::new(v4.address, v4.cidr.prefix_len())
            .map_err(|e| step("IPv4 address")(NetlinkError::InvalidArgument(e.to_string())))?;
        addresses.push(IpNet::V4(net));
    }
    if let Some(v6) = nic.ipv6.as_ref().filter(|_| ipv6_enabled) {
        let net = Ipv6Net::new(v6.address, v6.cidr.prefix_len())
            .map_err(|e| step("IPv6 address")(NetlinkError::InvalidArgument(e.to_string())))?;
        addresses.push(IpNet::V6(net));
    }
    for address in addresses {
        match inside.add_address(index, address) {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(step(format!("add address {address}"))(e)),
        }
    }
    inside
        .set_link_up(index, true)
        .map_err(step("set the tenant NIC up"))?;

    let mut routes = Vec::new();
    if let Some(v4) = &nic.ipv4 {
        for route in &v4.host_routes {
            routes.push(RouteSpec::via(
                IpNet::V4(route.destination),
                IpAddr::V4(route.nexthop),
            ));
        }
        if let Some(gateway) = v4.gateway {
            if !v4.cidr.contains(&gateway) {
                let host = IpNet::V4(Ipv4Net::from(gateway));
                routes.push(RouteSpec::on_link(host, index));
            }
            routes.push(RouteSpec::default_via(IpAddr::V4(gateway)));
        }
    }
    if let Some(v6) = nic.ipv6.as_ref().filter(|_| ipv6_enabled) {
        for route in &v6.host_routes {
            routes.push(RouteSpec::via(
                IpNet::V6(route.destination),
                IpAddr::V6(route.nexthop),
            ));
        }
        if let Some(gateway) = ipv6_gateway {
            routes.push(RouteSpec::default_via(IpAddr::V6(gateway)));
        }
    }
    for route in routes {
        let route = route.dev(index);
        inside
            .replace_route(&route)
            .map_err(step(format!("add route {}", describe(&route))))?;
    }
    Ok(())
}

fn describe(route: &RouteSpec) -> String {
    match route.gateway {
        Some(gateway) => format!("{} via {gateway}", route.destination),
        None => format!("{} on link", route.destination),
    }
}

/// Gives the tenant NIC (the link with `mac`; without one, every non-loopback link) back to
/// `vm` (down, no addresses, its original name from the alias, else `fallback_name`) and
/// deletes the namespace `netns`. Succeeds, doing only what is left, when a previous call got
/// part of the way.
pub fn release(
    vm: &Namespace,
    netns: &str,
    mac: Option<MacAddress>,
    fallback_name: Option<&str>,
) -> Result<Released, TenantNetworkError> {
    let home = NetlinkHandle::in_namespace(vm).map_err(step("open netlink in the VM namespace"))?;
    let namespace = if netns_path(netns).exists() {
        match Namespace::open(netns) {
            Ok(namespace) => Some(namespace),
            Err(e) => {
                warn!(netns, error = %e, "stale namespace file");
                None
            }
        }
    } else {
        None
    };
    let mut moved = Vec::new();
    if let Some(namespace) = &namespace {
        let inside = NetlinkHandle::in_namespace(namespace)
            .map_err(step(format!("open netlink in namespace {netns}")))?;
        let links = match mac {
            Some(mac) => match inside.link_by_mac(mac) {
                Ok(link) => vec![link],
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(step(format!("look up the tenant NIC in {netns}"))(e)),
            },
            None => inside
                .links()
                .map_err(step(format!("list links in {netns}")))?
                .into_iter()
                .filter(|l| !l.loopback)
                .collect(),
        };
        for link in links {
            let name = link
                .alias
                .clone()
                .filter(|a| !a.is_empty())
                .or_else(|| fallback_name.map(str::to_owned))
                .unwrap_or_else(|| link.name.clone());
            inside
                .set_link_up(link.index, false)
                .map_err(step("set the tenant NIC down"))?;
            inside
                .flush_addresses(link.index)
                .map_err(step("flush the tenant NIC's addresses"))?;
            match inside.move_link(link.index, NamespaceTarget::Namespace(vm), Some(&name)) {
                Ok(()) => {}
                Err(e) if e.is_already_exists() => {
                    warn!(netns, %name, "name taken in the VM namespace; NIC returned under another name");
                }
                Err(e) => {
                    return Err(step(format!(
                        "move the tenant NIC back to the VM as {name}"
                    ))(e));
                }
            }
            moved.extend(link.mac);
        }
    }
    // Every link we moved is out (or we returned an error above), so the namespace can go
    // even when the NIC is not found below: an empty namespace must not outlive the call.
    drop(namespace);
    if netns_path(netns).exists() {
        Namespace::delete(netns).map_err(step(format!("delete namespace {netns}")))?;
    }
    let wanted: Vec<MacAddress> = match mac {
        Some(mac) => vec![mac],
        None => moved.clone(),
    };
    let mut names = Vec::new();
    for mac in wanted {
        let link = match home.link_by_mac(mac) {
            Ok(link) => link,
            Err(e) if e.is_not_found() => {
                return Err(TenantNetworkError::NicNotFound {
                    mac: mac.to_string(),
                    vm: vm.path().display().to_string(),
                    netns: netns.to_owned(),
                });
            }
            Err(e) => return Err(step("look up the tenant NIC in the VM namespace")(e)),
        };
        if link.up {
            home.set_link_up(link.index, false)
                .map_err(step("set the returned NIC down"))?;
        }
        home.flush_addresses(link.index)
            .map_err(step("flush the returned NIC's addresses"))?;
        if link.alias.as_deref().is_some_and(|a| !a.is_empty()) {
            home.set_alias(link.index, "")
                .map_err(step("clear the returned NIC's alias"))?;
        }
        info!(netns, %mac, name = %link.name, "tenant NIC is in the VM namespace");
        names.push(link.name);
    }
    Ok(Released {
        moved_back: !moved.is_empty(),
        names,
    })
}
