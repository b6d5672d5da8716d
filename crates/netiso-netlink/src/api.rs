//! The test seam: every rtnetlink operation as a trait, implemented by the real
//! [`NetlinkHandle`](crate::NetlinkHandle) and by the recording fake (feature `test-support`),
//! so logic built on top is unit-tested without root.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Address, Link, MacAddress, NamespaceTarget, Result, Route, RouteSpec, VethSpec};

/// rtnetlink operations on one network namespace.
pub trait Rtnetlink: Send + Sync {
    /// Every link in the namespace.
    fn links(&self) -> Result<Vec<Link>>;
    /// The link called `name`, or [`NetlinkError::NotFound`](crate::NetlinkError::NotFound).
    fn link_by_name(&self, name: &str) -> Result<Link>;
    /// The link with index `index`, or `NotFound`.
    fn link_by_index(&self, index: u32) -> Result<Link>;
    /// The link whose hardware address is `mac` whatever its name, or `NotFound`.
    fn link_by_mac(&self, mac: MacAddress) -> Result<Link> {
        self.links()?
            .into_iter()
            .find(|link| link.mac == Some(mac))
            .ok_or_else(|| crate::NetlinkError::NotFound {
                operation: format!("find link with MAC {mac}"),
                message: None,
            })
    }
    /// Sets a link administratively up or down.
    fn set_link_up(&self, index: u32, up: bool) -> Result<()>;
    /// Renames a link (the kernel wants it down).
    fn rename_link(&self, index: u32, name: &str) -> Result<()>;
    /// Sets a link's MTU.
    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()>;
    /// Sets (or, with "", clears) a link's alias: where we remember a NIC's original name.
    fn set_alias(&self, index: u32, alias: &str) -> Result<()>;
    /// Deletes a (virtual) link.
    fn delete_link(&self, index: u32) -> Result<()>;
    /// Creates a veth pair.
    fn create_veth(&self, spec: VethSpec<'_>) -> Result<()>;
    /// Moves a link to another namespace, renaming it in the same message when `new_name` is set.
    ///
    /// The kernel moves first and renames second: if `new_name` is taken in the target, the
    /// answer is `AlreadyExists` but the link has already moved, under its old name (or
    /// `dev%d` if that clashed too). Callers look it up by MAC there.
    fn move_link(
        &self,
        index: u32,
        target: NamespaceTarget<'_>,
        new_name: Option<&str>,
    ) -> Result<()>;

    /// Addresses of every link, or of one link.
    fn addresses(&self, link_index: Option<u32>) -> Result<Vec<Address>>;
    /// Adds an address (with its prefix length) to a link.
    fn add_address(&self, link_index: u32, address: IpNet) -> Result<()>;
    /// Deletes one address.
    fn delete_address(&self, address: &Address) -> Result<()>;
    /// Deletes every address of a link and says how many went.
    fn flush_addresses(&self, link_index: u32) -> Result<usize> {
        let addresses = self.addresses(Some(link_index))?;
        let mut removed = 0;
        for address in &addresses {
            match self.delete_address(address) {
                Ok(()) => removed += 1,
                // Deleting a primary IPv4 address also drops its secondaries.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Every route of every table, IPv4 and IPv6.
    fn routes(&self) -> Result<Vec<Route>>;
    /// Adds a route; `AlreadyExists` if an identical one is there.
    fn add_route(&self, route: &RouteSpec) -> Result<()>;
    /// Adds or replaces a route.
    fn replace_route(&self, route: &RouteSpec) -> Result<()>;
    /// Deletes exactly this route.
    fn delete_route(&self, route: &Route) -> Result<()>;
    /// Which route (and interface) the kernel would use to reach `destination`.
    fn route_to(&self, destination: IpAddr) -> Result<Route>;

    /// `net.ipv6.conf.<ifname>.accept_ra`; `None` when the link has no IPv6 configuration.
    fn accept_ra(&self, ifname: &str) -> Result<Option<u32>>;
    /// Sets `net.ipv6.conf.<ifname>.accept_ra`.
    fn set_accept_ra(&self, ifname: &str, value: u32) -> Result<()>;
}
