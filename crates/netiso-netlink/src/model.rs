//! Plain values for links, addresses and routes, decoupled from neli's wire types so that
//! code built on top (and the recording fake) never touches netlink messages.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::MacAddress;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Interface index, stable for the life of the link (usually kept across a namespace move).
    pub index: u32,
    /// Current name; may change under us (Docker returns NICs renamed or as `dev%d`).
    pub name: String,
    /// Hardware address, when the link type has a 6-byte one.
    pub mac: Option<MacAddress>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier / operationally running (`IFF_RUNNING`).
    pub running: bool,
    /// Maximum transmission unit.
    pub mtu: u32,
    /// `IFLA_IFALIAS`, used to remember a NIC's original name across moves.
    pub alias: Option<String>,
    /// Link kind from `IFLA_INFO_KIND` (`veth`, `bridge`...); `None` for physical NICs.
    pub kind: Option<String>,
    /// True for the loopback device.
    pub loopback: bool,
}

/// An IP address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// Index of the link that carries the address.
    pub link_index: u32,
    /// The address with its prefix length.
    pub address: IpNet,
    /// `IFA_ADDRESS` when it differs from the local address (point-to-point peers).
    pub peer: Option<IpAddr>,
    /// Scope of the address.
    pub scope: Scope,
}

/// Address and route scope (`rtm_scope`, `ifa_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Global (`RT_SCOPE_UNIVERSE`).
    Universe,
    /// Site-local (`RT_SCOPE_SITE`).
    Site,
    /// Directly attached, no gateway (`RT_SCOPE_LINK`).
    Link,
    /// This host only (`RT_SCOPE_HOST`).
    Host,
    /// Nowhere (`RT_SCOPE_NOWHERE`).
    Nowhere,
    /// A value this crate does not name.
    Other(u8),
}

impl Scope {
    pub(crate) fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Universe,
            200 => Self::Site,
            253 => Self::Link,
            254 => Self::Host,
            255 => Self::Nowhere,
            other => Self::Other(other),
        }
    }
}

/// Route type (`rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RouteType {
    /// A normal route (`RTN_UNICAST`).
    Unicast,
    /// A local address (`RTN_LOCAL`, local table).
    Local,
    /// A broadcast address (`RTN_BROADCAST`, local table).
    Broadcast,
    /// A multicast route.
    Multicast,
    /// Silently drop.
    Blackhole,
    /// Answer "unreachable".
    Unreachable,
    /// Answer "prohibited".
    Prohibit,
    /// Any other type.
    Other(u8),
}

impl RouteType {
    pub(crate) fn from_raw(raw: u8) -> Self {
        match raw {
            1 => Self::Unicast,
            2 => Self::Local,
            3 => Self::Broadcast,
            5 => Self::Multicast,
            6 => Self::Blackhole,
            7 => Self::Unreachable,
            8 => Self::Prohibit,
            other => Self::Other(other),
        }
    }

    pub(crate) fn raw(self) -> u8 {
        match self {
            Self::Unicast => 1,
            Self::Local => 2,
            Self::Broadcast => 3,
            Self::Multicast => 5,
            Self::Blackhole => 6,
            Self::Unreachable => 7,
            Self::Prohibit => 8,
            Self::Other(raw) => raw,
        }
    }
}

/// The main routing table, the only one `add_route` writes to by default.
pub const TABLE_MAIN: u32 = 254;
/// The local table (addresses of this host, broadcast); managed by the kernel.
pub const TABLE_LOCAL: u32 = 255;
/// Protocol `boot`, what `ip route add` uses.
pub const PROTOCOL_BOOT: u8 = 3;
/// Protocol `kernel`: routes the kernel derived from addresses.
pub const PROTOCOL_KERNEL: u8 = 2;
/// Protocol `ra`: routes learnt from IPv6 router advertisements.
pub const PROTOCOL_RA: u8 = 9;

/// A route as dumped from the kernel. It holds everything needed to delete exactly it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` or `::/0` for a default route).
    pub destination: IpNet,
    /// Next hop, when the route has one.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
    /// Route metric (`RTA_PRIORITY`); `None` when the kernel sent none (IPv4 metric 0).
    pub metric: Option<u32>,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Who installed it (`rtm_protocol`: 2 kernel, 3 boot, 4 static, 9 ra...).
    pub protocol: u8,
    /// Scope of the route.
    pub scope: Scope,
    /// Route type.
    pub kind: RouteType,
    /// Outgoing interfaces of a multipath route's next hops (empty for a single-path route).
    pub multipath_oifs: Vec<u32>,
}

impl Route {
    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.destination.prefix_len() == 0
    }

    /// True when the route sends traffic out through `link_index`, directly or as one
    /// next hop of a multipath route.
    pub fn leaves_through(&self, link_index: u32) -> bool {
        self.oif == Some(link_index) || self.multipath_oifs.contains(&link_index)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.destination)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " oif {oif}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if self.table != TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// What to install with `add_route` / `replace_route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix (`/0` for a default route).
    pub destination: IpNet,
    /// Next hop; `None` makes a link-scope (directly connected) route, which needs `oif`.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub oif: Option<u32>,
    /// Metric; `None` lets the kernel choose (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
    /// Routing table; `TABLE_MAIN` unless told otherwise.
    pub table: u32,
    /// Preferred source address.
    pub source: Option<IpAddr>,
}

impl RouteSpec {
    /// A route to `destination` through a gateway.
    pub fn via(destination: IpNet, gateway: IpAddr) -> Self {
        Self {
            destination,
            gateway: Some(gateway),
            oif: None,
            metric: None,
            table: TABLE_MAIN,
            source: None,
        }
    }

    /// A directly connected (link-scope) route to `destination` on link `oif`.
    pub fn on_link(destination: IpNet, oif: u32) -> Self {
        Self {
            destination,
            gateway: None,
            oif: Some(oif),
            metric: None,
            table: TABLE_MAIN,
            source: None,
        }
    }

    /// A default route (IPv4 or IPv6, from the gateway's family) through `gateway`.
    pub fn default_via(gateway: IpAddr) -> Self {
        let destination = match gateway {
            IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
        };
        Self::via(destination, gateway)
    }

    /// Sets the outgoing interface.
    pub fn dev(mut self, oif: u32) -> Self {
        self.oif = Some(oif);
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }
}

/// Which way a link changed, from an `RTM_NEWLINK` / `RTM_DELLINK` notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link appeared or one of its properties (flags, name, MTU...) changed.
    Changed(Link),
    /// The link left the namespace (deleted or moved away).
    Removed(Link),
    /// An address was added to a link (only from [`crate::LinkEvents::subscribe_with_addresses`]).
    AddressAdded(Address),
    /// An address was removed from a link (only with addresses subscribed).
    AddressRemoved(Address),
    /// A route was added or replaced (only from
    /// [`crate::LinkEvents::subscribe_with_addresses_and_routes`]).
    RouteAdded(Route),
    /// A route was removed (only with routes subscribed).
    RouteRemoved(Route),
    /// The kernel dropped notifications (socket buffer overrun, ENOBUFS): state must be re-read.
    Overrun,
}

/// Where to move a link.
#[derive(Debug, Clone, Copy)]
pub enum NamespaceTarget<'a> {
    /// An open namespace (file descriptor, `IFLA_NET_NS_FD`).
    Namespace(&'a crate::Namespace),
    /// The network namespace of a process (`IFLA_NET_NS_PID`).
    Pid(u32),
}

/// Settings for a veth pair created by `create_veth`.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    /// Name of the end created in the handle's namespace.
    pub name: &'a str,
    /// Name of the peer end.
    pub peer_name: &'a str,
    /// Namespace to create the peer in; `None` keeps it beside the first end.
    pub peer_namespace: Option<&'a crate::Namespace>,
}
