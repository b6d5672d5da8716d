//! [`NetlinkHandle`]: the real [`Rtnetlink`] implementation, one rtnetlink socket bound to one
//! network namespace.

use std::{
    fs,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use ipnet::IpNet;
use neli::{
    consts::{
        nl::NlmF,
        rtnl::{
            Arphrd, Ifa, IfaF, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmF,
            Rtn, Rtprot,
        },
    },
    rtnl::{
        Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, Rtattr, RtattrBuilder, Rtmsg,
        RtmsgBuilder,
    },
    types::{Buffer, RtBuffer},
};

use crate::{
    Address, Link, MacAddress, Namespace, NamespaceTarget, Route, RouteSpec, RouteType, Rtnetlink,
    Scope, VethSpec,
    error::{NetlinkError, Result},
    events::LinkEvents,
    model::TABLE_MAIN,
    netns::NamespaceWorker,
    wire::RtSocket,
};

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// An rtnetlink handle bound to one network namespace for its whole life.
///
/// The socket is created on a dedicated thread that has entered the namespace, so the caller's
/// thread (a tokio worker, say) never changes namespace. Calls are synchronous and short
/// (microseconds); async code should make them from `spawn_blocking`.
pub struct NetlinkHandle {
    socket: Mutex<RtSocket>,
    namespace: Namespace,
    worker: NamespaceWorker,
}

impl std::fmt::Debug for NetlinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkHandle")
            .field("namespace", &self.namespace.path())
            .finish()
    }
}

fn encode_error(operation: &str, err: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Protocol {
        operation: operation.to_owned(),
        reason: err.to_string(),
    }
}

fn attr<T, P>(operation: &str, kind: T, payload: P) -> Result<Rtattr<T, Buffer>>
where
    T: neli::consts::rtnl::RtaType,
    P: neli::Size + neli::ToBytes,
{
    RtattrBuilder::default()
        .rta_type(kind)
        .rta_payload(payload)
        .build()
        .map_err(|e| encode_error(operation, e))
}

fn ip_octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn family_of(addr: IpAddr) -> RtAddrFamily {
    match addr {
        IpAddr::V4(_) => RtAddrFamily::Inet,
        IpAddr::V6(_) => RtAddrFamily::Inet6,
    }
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn u32_from(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
}

fn string_from(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn check_ifname(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', ':', '\0'])
        && !name.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(NetlinkError::InvalidArgument(format!(
            "{name:?} is not a valid interface name (1 to {MAX_IFNAME_LEN} characters, no '/', ':' or spaces)"
        )))
    }
}

pub(crate) fn parse_link(msg: &Ifinfomsg) -> Link {
    let mut link = Link {
        index: u32::try_from(*msg.ifi_index()).unwrap_or_default(),
        name: String::new(),
        mac: None,
        up: msg.ifi_flags().contains(Iff::UP),
        running: msg.ifi_flags().contains(Iff::RUNNING),
        mtu: 0,
        alias: None,
        kind: None,
        loopback: msg.ifi_flags().contains(Iff::LOOPBACK) || *msg.ifi_type() == Arphrd::Loopback,
    };
    for attribute in msg.rtattrs().iter() {
        let payload = attribute.rta_payload().as_ref();
        match attribute.rta_type() {
            Ifla::Ifname => link.name = string_from(payload),
            Ifla::Address => link.mac = MacAddress::from_slice(payload),
            Ifla::Mtu => link.mtu = u32_from(payload).unwrap_or_default(),
            Ifla::Ifalias => link.alias = Some(string_from(payload)).filter(|a| !a.is_empty()),
            Ifla::Linkinfo => {
                if let Ok(info) = attribute.get_attr_handle::<IflaInfo>() {
                    link.kind = info
                        .get_attribute(IflaInfo::Kind)
                        .map(|kind| string_from(kind.rta_payload().as_ref()));
                }
            }
            _ => {}
        }
    }
    link
}

pub(crate) fn parse_address(msg: &Ifaddrmsg) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for attribute in msg.rtattrs().iter() {
        match attribute.rta_type() {
            Ifa::Local => local = ip_from(attribute.rta_payload().as_ref()),
            Ifa::Address => address = ip_from(attribute.rta_payload().as_ref()),
            _ => {}
        }
    }
    let own = local.or(address)?;
    Some(Address {
        link_index: *msg.ifa_index(),
        address: IpNet::new(own, *msg.ifa_prefixlen()).ok()?,
        peer: address.filter(|peer| Some(*peer) != local && local.is_some()),
        scope: Scope::from_raw(u8::from(*msg.ifa_scope())),
    })
}

fn multipath_oifs(payload: &[u8]) -> Vec<u32> {
    // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } followed by attributes.
    let mut oifs = Vec::new();
    let mut offset = 0;
    while offset + 8 <= payload.len() {
        let len = usize::from(u16::from_ne_bytes([payload[offset], payload[offset + 1]]));
        if let Some(oif) = u32_from(&payload[offset + 4..]) {
            oifs.push(oif);
        }
        if len < 8 {
            break;
        }
        offset += (len + 3) & !3;
    }
    oifs
}

pub(crate) fn parse_route(msg: &Rtmsg) -> Option<Route> {
    let family = *msg.rtm_family();
    let mut destination = None;
    let mut route = Route {
        destination: IpNet::V4(ipnet::Ipv4Net::default()),
        gateway: None,
        oif: None,
        table: u32::from(u8::from(*msg.rtm_table())),
        metric: None,
        source: None,
        protocol: u8::from(*msg.rtm_protocol()),
        scope: Scope::from_raw(u8::from(*msg.rtm_scope())),
        kind: RouteType::from_raw(u8::from(*msg.rtm_type())),
        multipath_oifs: Vec::new(),
    };
    for attribute in msg.rtattrs().iter() {
        let payload = attribute.rta_payload().as_ref();
        match attribute.rta_type() {
            Rta::Dst => destination = ip_from(payload),
            Rta::Gateway => route.gateway = ip_from(payload),
            Rta::Oif => route.oif = u32_from(payload),
            Rta::Priority => route.metric = u32_from(payload),
            Rta::Prefsrc => route.source = ip_from(payload),
            Rta::Table => route.table = u32_from(payload).unwrap_or(route.table),
            Rta::Multipath => route.multipath_oifs = multipath_oifs(payload),
            _ => {}
        }
    }
    let destination = match (destination, family) {
        (Some(dst), _) => dst,
        (None, RtAddrFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, RtAddrFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    route.destination = IpNet::new(destination, *msg.rtm_dst_len()).ok()?;
    Some(route)
}

impl NetlinkHandle {
    /// A handle on the calling thread's namespace.
    pub fn current() -> Result<Self> {
        Self::in_namespace(&Namespace::current()?)
    }

    /// A handle on `namespace`. Its socket is created by a worker thread that entered the
    /// namespace and stays there for `/proc/sys/net` work; the caller's thread never moves.
    pub fn in_namespace(namespace: &Namespace) -> Result<Self> {
        let worker = NamespaceWorker::spawn(namespace)?;
        let socket = worker.run(RtSocket::open)??;
        Ok(Self {
            socket: Mutex::new(socket),
            namespace: namespace.try_clone()?,
            worker,
        })
    }

    /// A handle on the named namespace `/run/netns/NAME`.
    pub fn in_named(name: &str) -> Result<Self> {
        Self::in_namespace(&Namespace::open(name)?)
    }

    /// The namespace this handle works on.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// An async stream of link changes in this handle's namespace. Must be called from inside
    /// a tokio runtime.
    pub fn link_events(&self) -> Result<LinkEvents> {
        LinkEvents::subscribe(&self.namespace)
    }

    /// Link changes and address additions/removals in this handle's namespace (see
    /// [`LinkEvents::subscribe_with_addresses`]). Must be called from inside a tokio runtime.
    pub fn link_and_address_events(&self) -> Result<LinkEvents> {
        LinkEvents::subscribe_with_addresses(&self.namespace)
    }

    /// Link, address and route changes in this handle's namespace (see
    /// [`LinkEvents::subscribe_with_addresses_and_routes`]). Must be called from inside a tokio
    /// runtime.
    pub fn link_address_and_route_events(&self) -> Result<LinkEvents> {
        LinkEvents::subscribe_with_addresses_and_routes(&self.namespace)
    }

    fn socket(&self) -> MutexGuard<'_, RtSocket> {
        // A panic while holding the socket cannot leave it half-written: each request is one send.
        self.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_link(&self, operation: &dyn Fn() -> String, message: Ifinfomsg) -> Result<()> {
        self.socket()
            .execute(operation, Rtm::Newlink, NlmF::empty(), message)
    }

    fn link_message(
        &self,
        operation: &str,
        index: u32,
        attrs: RtBuffer<Ifla, Buffer>,
    ) -> Result<Ifinfomsg> {
        IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(i32::try_from(index).map_err(|e| encode_error(operation, e))?)
            .rtattrs(attrs)
            .build()
            .map_err(|e| encode_error(operation, e))
    }

    fn get_link(&self, operation: &dyn Fn() -> String, message: Ifinfomsg) -> Result<Link> {
        let links: Vec<Ifinfomsg> =
            self.socket()
                .exchange(operation, Rtm::Getlink, NlmF::empty(), message)?;
        links
            .first()
            .map(parse_link)
            .ok_or_else(|| NetlinkError::NotFound {
                operation: operation(),
                message: None,
            })
    }

    fn address_message(
        &self,
        operation: &str,
        link_index: u32,
        address: IpNet,
        peer: Option<IpAddr>,
    ) -> Result<Ifaddrmsg> {
        let ip = address.addr();
        let mut attrs = RtBuffer::new();
        attrs.push(attr(operation, Ifa::Local, ip_octets(ip).as_slice())?);
        attrs.push(attr(
            operation,
            Ifa::Address,
            ip_octets(peer.unwrap_or(ip)).as_slice(),
        )?);
        IfaddrmsgBuilder::default()
            .ifa_family(family_of(ip))
            .ifa_prefixlen(address.prefix_len())
            .ifa_flags(IfaF::empty())
            .ifa_scope(RtScope::Universe)
            .ifa_index(link_index)
            .rtattrs(attrs)
            .build()
            .map_err(|e| encode_error(operation, e))
    }

    fn route_message(
        &self,
        operation: &str,
        spec: &RouteSpec,
        deleting: Option<&Route>,
    ) -> Result<Rtmsg> {
        let destination = spec.destination;
        let mut attrs = RtBuffer::new();
        if destination.prefix_len() > 0 {
            attrs.push(attr(
                operation,
                Rta::Dst,
                ip_octets(destination.addr()).as_slice(),
            )?);
        }
        if let Some(gateway) = spec.gateway {
            attrs.push(attr(
                operation,
                Rta::Gateway,
                ip_octets(gateway).as_slice(),
            )?);
        }
        if let Some(oif) = spec.oif {
            attrs.push(attr(operation, Rta::Oif, oif)?);
        }
        if let Some(metric) = spec.metric {
            attrs.push(attr(operation, Rta::Priority, metric)?);
        }
        if let Some(source) = spec.source {
            attrs.push(attr(operation, Rta::Prefsrc, ip_octets(source).as_slice())?);
        }
        attrs.push(attr(operation, Rta::Table, spec.table)?);
        let ipv4 = destination.addr().is_ipv4();
        let (protocol, scope, kind) = match deleting {
            // Deleting: match any protocol, scope and type, like `ip route del`; the attributes
            // above pin the exact route.
            Some(route) => (
                Rtprot::from(route.protocol),
                RtScope::Nowhere,
                Rtn::from(route.kind.raw()),
            ),
            None => (
                Rtprot::Boot,
                if ipv4 && spec.gateway.is_none() {
                    RtScope::Link
                } else {
                    RtScope::Universe
                },
                Rtn::Unicast,
            ),
        };
        RtmsgBuilder::default()
            .rtm_family(if ipv4 {
                RtAddrFamily::Inet
            } else {
                RtAddrFamily::Inet6
            })
            .rtm_dst_len(destination.prefix_len())
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::from(u8::try_from(spec.table).unwrap_or(0)))
            .rtm_protocol(protocol)
            .rtm_scope(scope)
            .rtm_type(kind)
            .rtattrs(attrs)
            .build()
            .map_err(|e| encode_error(operation, e))
    }

    fn sysctl_path(ifname: &str, key: &str) -> Result<PathBuf> {
        check_ifname(ifname)?;
        Ok(PathBuf::from(format!(
            "/proc/sys/net/ipv6/conf/{ifname}/{key}"
        )))
    }

    /// Runs a /proc/sys/net access in this handle's namespace: /proc/sys/net shows the
    /// namespace of the thread that opens the file, so it goes through the worker thread.
    fn in_own_namespace<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        self.worker.run(work)
    }
}

impl Rtnetlink for NetlinkHandle {
    fn links(&self) -> Result<Vec<Link>> {
        let operation = || "list links".to_owned();
        let message = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .build()
            .map_err(|e| encode_error(&operation(), e))?;
        let links: Vec<Ifinfomsg> =
            self.socket()
                .exchange(&operation, Rtm::Getlink, NlmF::DUMP, message)?;
        Ok(links.iter().map(parse_link).collect())
    }

    fn link_by_name(&self, name: &str) -> Result<Link> {
        check_ifname(name)?;
        let operation = || format!("get link {name}");
        let mut attrs = RtBuffer::new();
        attrs.push(attr(&operation(), Ifla::Ifname, name)?);
        let message = self.link_message(&operation(), 0, attrs)?;
        self.get_link(&operation, message)
    }

    fn link_by_index(&self, index: u32) -> Result<Link> {
        let operation = || format!("get link #{index}");
        let message = self.link_message(&operation(), index, RtBuffer::new())?;
        self.get_link(&operation, message)
    }

    fn set_link_up(&self, index: u32, up: bool) -> Result<()> {
        let operation = || format!("set link #{index} {}", if up { "up" } else { "down" });
        let builder = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(i32::try_from(index).map_err(|e| encode_error(&operation(), e))?);
        let builder = if up { builder.up() } else { builder.down() };
        let message = builder.build().map_err(|e| encode_error(&operation(), e))?;
        self.set_link(&operation, message)
    }

    fn rename_link(&self, index: u32, name: &str) -> Result<()> {
        check_ifname(name)?;
        let operation = || format!("rename link #{index} to {name}");
        let mut attrs = RtBuffer::new();
        attrs.push(attr(&operation(), Ifla::Ifname, name)?);
        let message = self.link_message(&operation(), index, attrs)?;
        self.set_link(&operation, message)
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let operation = || format!("set MTU of link #{index} to {mtu}");
        let mut attrs = RtBuffer::new();
        attrs.push(attr(&operation(), Ifla::Mtu, mtu)?);
        let message = self.link_message(&operation(), index, attrs)?;
        self.set_link(&operation, message)
    }

    fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        if alias.len() >= 256 || alias.contains('\0') {
            return Err(NetlinkError::InvalidArgument(format!(
                "alias {alias:?} is too long or has a NUL"
            )));
        }
        let operation = || format!("set alias of link #{index} to {alias:?}");
        let mut attrs = RtBuffer::new();
        // An empty payload (no NUL) clears the alias, as `ip link set dev X alias ""` does.
        let payload: &[u8] = alias.as_bytes();
        attrs.push(attr(&operation(), Ifla::Ifalias, payload)?);
        let message = self.link_message(&operation(), index, attrs)?;
        self.set_link(&operation, message)
    }

    fn delete_link(&self, index: u32) -> Result<()> {
        let operation = || format!("delete link #{index}");
        let message = self.link_message(&operation(), index, RtBuffer::new())?;
        self.socket()
            .execute(&operation, Rtm::Dellink, NlmF::empty(), message)
    }

    fn create_veth(&self, spec: VethSpec<'_>) -> Result<()> {
        check_ifname(spec.name)?;
        check_ifname(spec.peer_name)?;
        let operation = || format!("create veth pair {} / {}", spec.name, spec.peer_name);
        let op = operation();
        let mut peer_attrs = RtBuffer::new();
        peer_attrs.push(attr(&op, Ifla::Ifname, spec.peer_name)?);
        if let Some(namespace) = spec.peer_namespace {
            let fd =
                u32::try_from(namespace.as_fd().as_raw_fd()).map_err(|e| encode_error(&op, e))?;
            peer_attrs.push(attr(&op, Ifla::NetNsFd, fd)?);
        }
        let peer = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(peer_attrs)
            .build()
            .map_err(|e| encode_error(&op, e))?;
        // VETH_INFO_PEER (1) carries an ifinfomsg for the peer.
        let peer_info = attr(&op, IflaInfo::from(1u16), peer)?;
        let data = attr(&op, IflaInfo::Data, Buffer::new())?
            .nest(&peer_info)
            .map_err(|e| encode_error(&op, e))?;
        let kind = attr(&op, IflaInfo::Kind, "veth")?;
        let link_info = attr(&op, Ifla::Linkinfo, Buffer::new())?
            .nest(&kind)
            .and_then(|a| a.nest(&data))
            .map_err(|e| encode_error(&op, e))?;
        let mut attrs = RtBuffer::new();
        attrs.push(attr(&op, Ifla::Ifname, spec.name)?);
        attrs.push(link_info);
        let message = self.link_message(&op, 0, attrs)?;
        self.socket()
            .execute(&operation, Rtm::Newlink, NlmF::CREATE | NlmF::EXCL, message)
    }

    fn move_link(
        &self,
        index: u32,
        target: NamespaceTarget<'_>,
        new_name: Option<&str>,
    ) -> Result<()> {
        if let Some(name) = new_name {
            check_ifname(name)?;
        }
        let operation = || {
            let to = match target {
                NamespaceTarget::Namespace(ns) => ns.path().display().to_string(),
                NamespaceTarget::Pid(pid) => format!("pid {pid}"),
            };
            match new_name {
                Some(name) => format!("move link #{index} to {to} as {name}"),
                None => format!("move link #{index} to {to}"),
            }
        };
        let op = operation();
        let mut attrs = RtBuffer::new();
        match target {
            NamespaceTarget::Namespace(namespace) => {
                let fd = u32::try_from(namespace.as_fd().as_raw_fd())
                    .map_err(|e| encode_error(&op, e))?;
                attrs.push(attr(&op, Ifla::NetNsFd, fd)?);
            }
            NamespaceTarget::Pid(pid) => attrs.push(attr(&op, Ifla::NetNsPid, pid)?),
        }
        if let Some(name) = new_name {
            attrs.push(attr(&op, Ifla::Ifname, name)?);
        }
        let message = self.link_message(&op, index, attrs)?;
        self.set_link(&operation, message)
    }

    fn addresses(&self, link_index: Option<u32>) -> Result<Vec<Address>> {
        let operation = || "list addresses".to_owned();
        let message = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(|e| encode_error(&operation(), e))?;
        let answers: Vec<Ifaddrmsg> =
            self.socket()
                .exchange(&operation, Rtm::Getaddr, NlmF::DUMP, message)?;
        Ok(answers
            .iter()
            .filter_map(parse_address)
            .filter(|a| link_index.is_none_or(|index| a.link_index == index))
            .collect())
    }

    fn add_address(&self, link_index: u32, address: IpNet) -> Result<()> {
        let operation = || format!("add address {address} to link #{link_index}");
        let message = self.address_message(&operation(), link_index, address, None)?;
        self.socket()
            .execute(&operation, Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, message)
    }

    fn delete_address(&self, address: &Address) -> Result<()> {
        let operation = || {
            format!(
                "delete address {} from link #{}",
                address.address, address.link_index
            )
        };
        let message = self.address_message(
            &operation(),
            address.link_index,
            address.address,
            address.peer,
        )?;
        self.socket()
            .execute(&operation, Rtm::Deladdr, NlmF::empty(), message)
    }

    fn routes(&self) -> Result<Vec<Route>> {
        let operation = || "list routes".to_owned();
        let message = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::Unspecified)
            .rtm_dst_len(0)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Unspec)
            .rtm_protocol(Rtprot::Unspec)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unspec)
            .build()
            .map_err(|e| encode_error(&operation(), e))?;
        let answers: Vec<Rtmsg> =
            self.socket()
                .exchange(&operation, Rtm::Getroute, NlmF::DUMP, message)?;
        Ok(answers.iter().filter_map(parse_route).collect())
    }

    fn add_route(&self, route: &RouteSpec) -> Result<()> {
        let operation = || format!("add route {}", describe_spec(route));
        let message = self.route_message(&operation(), route, None)?;
        self.socket().execute(
            &operation,
            Rtm::Newroute,
            NlmF::CREATE | NlmF::EXCL,
            message,
        )
    }

    fn replace_route(&self, route: &RouteSpec) -> Result<()> {
        let operation = || format!("replace route {}", describe_spec(route));
        let message = self.route_message(&operation(), route, None)?;
        self.socket().execute(
            &operation,
            Rtm::Newroute,
            NlmF::CREATE | NlmF::REPLACE,
            message,
        )
    }

    fn delete_route(&self, route: &Route) -> Result<()> {
        let operation = || format!("delete route {route}");
        let spec = RouteSpec {
            destination: route.destination,
            gateway: route.gateway,
            oif: route.oif,
            metric: route.metric,
            table: route.table,
            source: None,
        };
        let message = self.route_message(&operation(), &spec, Some(route))?;
        self.socket()
            .execute(&operation, Rtm::Delroute, NlmF::empty(), message)
    }

    fn route_to(&self, destination: IpAddr) -> Result<Route> {
        let operation = || format!("look up route to {destination}");
        let op = operation();
        let mut attrs = RtBuffer::new();
        attrs.push(attr(&op, Rta::Dst, ip_octets(destination).as_slice())?);
        let message = RtmsgBuilder::default()
            .rtm_family(family_of(destination))
            .rtm_dst_len(if destination.is_ipv4() { 32 } else { 128 })
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Unspec)
            .rtm_protocol(Rtprot::Unspec)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unspec)
            .rtm_flags(RtmF::from(libc::RTM_F_LOOKUP_TABLE))
            .rtattrs(attrs)
            .build()
            .map_err(|e| encode_error(&op, e))?;
        let answers: Vec<Rtmsg> =
            self.socket()
                .exchange(&operation, Rtm::Getroute, NlmF::empty(), message)?;
        answers
            .first()
            .and_then(parse_route)
            .ok_or(NetlinkError::NotFound {
                operation: op,
                message: None,
            })
    }

    fn accept_ra(&self, ifname: &str) -> Result<Option<u32>> {
        let path = Self::sysctl_path(ifname, "accept_ra")?;
        let file = path.clone();
        let read = self.in_own_namespace(move || fs::read_to_string(file))?;
        match read {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| NetlinkError::Protocol {
                    operation: format!("read {}", path.display()),
                    reason: format!("{text:?}: {e}"),
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NetlinkError::io("read", &path, e)),
        }
    }

    fn set_accept_ra(&self, ifname: &str, value: u32) -> Result<()> {
        let path = Self::sysctl_path(ifname, "accept_ra")?;
        let file = path.clone();
        self.in_own_namespace(move || fs::write(file, value.to_string()))?
            .map_err(|e| NetlinkError::io("write", &path, e))
    }
}

fn describe_spec(route: &RouteSpec) -> String {
    let mut text = if route.destination.prefix_len() == 0 {
        "default".to_owned()
    } else {
        route.destination.to_string()
    };
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(oif) = route.oif {
        text.push_str(&format!(" dev #{oif}"));
    }
    if let Some(metric) = route.metric {
        text.push_str(&format!(" metric {metric}"));
    }
    if route.table != TABLE_MAIN {
        text.push_str(&format!(" table {}", route.table));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        for bad in ["", "sixteen-chars-xx", "a/b", "a:b", "a b", ".."] {
            assert!(
                matches!(check_ifname(bad), Err(NetlinkError::InvalidArgument(_))),
                "{bad}"
            );
        }
        check_ifname("eth1").unwrap();
        check_ifname("fifteen-chars-x").unwrap();
    }

    #[test]
    fn multipath_next_hops_are_decoded() {
        let mut payload = Vec::new();
        for oif in [3u32, 7] {
            payload.extend_from_slice(&8u16.to_ne_bytes());
            payload.extend_from_slice(&[0, 0]);
            payload.extend_from_slice(&oif.to_ne_bytes());
        }
        assert_eq!(multipath_oifs(&payload), vec![3, 7]);
        assert!(multipath_oifs(&[1, 2, 3]).is_empty());
    }
}
