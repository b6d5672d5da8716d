//! The per-run part of the simulated guest: a client namespace on the tenant network and the
//! tenant veth (guest end in the guest namespace with a Neutron-like MAC, addresses, a
//! default route, a host route and an IPv6 address), plus the probes the checks use: TCP
//! connects and listeners inside a namespace, interface counters and TCP tables.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netiso_netlink::{
    Address, Link, MacAddress, Namespace, NetlinkHandle, RouteSpec, Rtnetlink, VethSpec,
};

/// The tenant subnet: the guest (later the container) is `.10`, the client `.1` (the
/// subnet's gateway, like a Neutron router port).
pub const TENANT_CIDR: &str = "10.252.0.0/24";
/// The guest's tenant address.
pub const GUEST_TENANT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 10);
/// The client's address (and the tenant gateway).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
/// The tenant IPv6 subnet.
pub const TENANT_CIDR6: &str = "fd00:252::/64";
/// The guest's tenant IPv6 address.
pub const GUEST_TENANT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x252, 0, 0, 0, 0, 0, 0x10);
/// The client's IPv6 address.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x252, 0, 0, 0, 0, 0, 1);
/// A Neutron subnet host route given to the tenant NIC (and written to `eth1.json`).
pub const HOST_ROUTE: &str = "10.253.0.0/24";

/// The tenant network of one scenario; removed on drop (the client namespace, and with it
/// the veth pair wherever its guest end is).
#[derive(Debug)]
pub struct TenantNetwork {
    /// The client namespace's name.
    pub client_netns: String,
    /// The guest end's name when created.
    pub guest_if: String,
    /// The guest end's MAC (what `eth1.json` names).
    pub mac: MacAddress,
    guest_netns: String,
}

impl TenantNetwork {
    /// Creates the client namespace `nth-client-<pid>` and the tenant veth, configured as
    /// a Neutron port would be on a guest before isolation.
    pub fn create(guest_netns: &str, serial: u32) -> Result<Self> {
        let pid = std::process::id();
        let client_netns = format!("nth-client-{pid}");
        if Path::new("/run/netns").join(&client_netns).exists() {
            // Our own pid: a leftover of this very process (a previous scenario's guard
            // failed); remove it so the run can go on.
            let _ = Namespace::delete(&client_netns);
        }
        let client = Namespace::create(&client_netns)
            .with_context(|| format!("creating the client namespace {client_netns}"))?;
        let mac = MacAddress::new([0xfa, 0x16, 0x3e, (pid >> 8) as u8, pid as u8, serial as u8]);
        let this = Self {
            client_netns,
            guest_if: format!("ntht{}", pid % 100_000),
            mac,
            guest_netns: guest_netns.to_owned(),
        };
        this.plug(&client, true)?;
        Ok(this)
    }

    /// Puts the tenant NIC back when the pair was destroyed, and says whether it did. A
    /// virtio NIC whose container namespace goes away returns to the VM (down, without
    /// addresses); a veth is destroyed with that namespace instead, taking its client end
    /// along. The soak's daemon kills can do that, so it puts an identical NIC (same MAC,
    /// same client side) back in the guest namespace, as the VM's kernel would.
    pub fn replug_if_destroyed(&self) -> Result<bool> {
        let client = self.client()?;
        let client_handle = NetlinkHandle::in_namespace(&client)?;
        if client_handle.link_by_name(&self.client_if()).is_ok() {
            return Ok(false);
        }
        self.plug(&client, false)?;
        Ok(true)
    }

    fn client_if(&self) -> String {
        format!("nthc{}", std::process::id() % 100_000)
    }

    /// Creates the veth pair: the guest end with the tenant MAC (configured as a Neutron port
    /// before isolation when `configured`, else down and bare, as a returned NIC), the client
    /// end with the router's addresses.
    fn plug(&self, client: &Namespace, configured: bool) -> Result<()> {
        let client_if = self.client_if();
        let guest_netns = self.guest_netns.as_str();
        let mac = self.mac;
        let guest = NetlinkHandle::in_named(guest_netns).with_context(|| {
            format!("guest namespace {guest_netns}: run `cargo xtask provision`")
        })?;
        guest
            .create_veth(VethSpec {
                name: &self.guest_if,
                peer_name: &client_if,
                peer_namespace: Some(client),
            })
            .context("creating the tenant veth pair")?;
        // netiso-netlink has no "set MAC" call (the product never changes a MAC): iproute2.
        run_ip(&[
            "-n",
            guest_netns,
            "link",
            "set",
            "dev",
            &self.guest_if,
            "address",
            &mac.to_string(),
        ])?;
        let guest_link = guest.link_by_name(&self.guest_if)?;
        let v4 = |a: Ipv4Addr| IpNet::V4(Ipv4Net::new(a, 24).unwrap_or_default());
        let v6 = |a: Ipv6Addr| IpNet::V6(Ipv6Net::new(a, 64).unwrap_or_default());
        if configured {
            guest.set_link_up(guest_link.index, true)?;
            guest.add_address(guest_link.index, v4(GUEST_TENANT_ADDR))?;
            guest.add_address(guest_link.index, v6(GUEST_TENANT_ADDR6))?;
            guest
                .add_route(&RouteSpec::default_via(IpAddr::V4(CLIENT_ADDR)).dev(guest_link.index))
                .context("tenant default route")?;
            guest
                .add_route(&RouteSpec::via(
                    HOST_ROUTE.parse()?,
                    IpAddr::V4(CLIENT_ADDR),
                ))
                .context("tenant host route")?;
        }

        let client_handle = NetlinkHandle::in_namespace(client)?;
        let lo = client_handle.link_by_name("lo")?;
        client_handle.set_link_up(lo.index, true)?;
        let client_link = client_handle.link_by_name(&client_if)?;
        client_handle.set_link_up(client_link.index, true)?;
        client_handle.add_address(client_link.index, v4(CLIENT_ADDR))?;
        client_handle.add_address(client_link.index, v6(CLIENT_ADDR6))?;
        // The tenant network's router knows the way to the management network through the
        // guest's tenant address: if the guest forwarded, the client would get through.
        client_handle
            .add_route(&RouteSpec::via(
                "10.251.0.0/24".parse()?,
                IpAddr::V4(GUEST_TENANT_ADDR),
            ))
            .context("client route to the management network")?;
        Ok(())
    }

    /// The client namespace, opened.
    pub fn client(&self) -> Result<Namespace> {
        Ok(Namespace::open(&self.client_netns)?)
    }
}

impl Drop for TenantNetwork {
    fn drop(&mut self) {
        // The guest end, wherever the container runtime left it in the guest namespace
        // (found by MAC: Docker may return it renamed).
        if let Ok(guest) = NetlinkHandle::in_named(&self.guest_netns)
            && let Ok(link) = guest.link_by_mac(self.mac)
            && let Err(e) = guest.delete_link(link.index)
        {
            eprintln!("cleanup: deleting the tenant NIC {}: {e}", link.name);
        }
        // Deleting the client namespace destroys its veth end, and with it the pair.
        if let Err(e) = Namespace::delete(&self.client_netns) {
            eprintln!("cleanup: deleting namespace {}: {e}", self.client_netns);
        }
    }
}

/// Runs `ip` (iproute2) for the one thing netiso-netlink does not do.
pub fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Opens a TCP connection from inside `namespace`.
pub fn connect_in(
    namespace: &Namespace,
    to: SocketAddr,
    timeout: Duration,
) -> Result<io::Result<TcpStream>> {
    Ok(namespace.run(|| TcpStream::connect_timeout(&to, timeout))?)
}

/// A listening socket inside `namespace` (the kernel completes handshakes without `accept`,
/// so a connect succeeds exactly when the address is reachable).
pub fn listen_in(namespace: &Namespace, at: SocketAddr) -> Result<TcpListener> {
    namespace
        .run(|| TcpListener::bind(at))?
        .with_context(|| format!("listening on {at} in {}", namespace.path().display()))
}

/// Reads the greeting a MariaDB server sends first on every connection (a protocol 10
/// handshake packet) and returns the server version it announces: proof that the database
/// itself answered, without logging in.
pub fn mariadb_greeting(stream: &mut TcpStream) -> Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let length = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    if !(2..=1024).contains(&length) {
        bail!("a {length}-byte first packet is no MariaDB greeting");
    }
    let mut packet = vec![0u8; length];
    stream.read_exact(&mut packet)?;
    parse_greeting(&packet)
}

/// The server version of a handshake packet's payload.
fn parse_greeting(packet: &[u8]) -> Result<String> {
    match packet.split_first() {
        Some((10, rest)) => {
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| anyhow!("the greeting's server version is not terminated"))?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        }
        Some((0xff, rest)) => bail!(
            "the server refused the connection: {}",
            String::from_utf8_lossy(rest.get(2..).unwrap_or_default())
        ),
        _ => bail!("not a protocol 10 greeting: {packet:02x?}"),
    }
}

/// Expects a connect to fail with a network error (no route, unreachable, timeout); a
/// connection or a refusal (the address answered) is a failure.
pub fn expect_unreachable(
    namespace: &Namespace,
    to: SocketAddr,
    timeout: Duration,
) -> Result<String> {
    match connect_in(namespace, to, timeout)? {
        Ok(_) => bail!("connected to {to}: it is reachable"),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => Ok(format!("{to}: {e}")),
            _ if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
                Ok(format!("{to}: no answer within {timeout:?} (dropped)"))
            }
            Some(libc::ECONNREFUSED) => bail!("{to} refused the connection: it is reachable"),
            _ => bail!("{to}: unexpected error {e}"),
        },
    }
}

/// Byte counters of one interface, from `/proc/net/dev` of the namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// Reads `ifname`'s counters as seen inside `namespace` (`/proc/thread-self/net/dev` shows
/// the namespace of the reading thread).
pub fn counters(namespace: &Namespace, ifname: &str) -> Result<Counters> {
    let text = namespace
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?
        .context("reading /proc/net/dev")?;
    parse_net_dev(&text, ifname)
        .ok_or_else(|| anyhow!("no interface {ifname} in {}", namespace.path().display()))
}

fn parse_net_dev(text: &str, ifname: &str) -> Option<Counters> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        Some(Counters {
            rx_bytes: *fields.first()?,
            tx_bytes: *fields.get(8)?,
        })
    })
}

/// One established IPv4 TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnection {
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
}

/// Established TCP connections of the namespace of process `pid` (`/proc/<pid>/net/tcp`
/// and `tcp6`).
pub fn established_of_pid(pid: u32) -> Result<Vec<TcpConnection>> {
    let mut connections = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        connections.extend(parse_proc_tcp(&text));
    }
    Ok(connections)
}

/// Established TCP connections as seen inside `namespace` (a dual-stack listener, such as
/// busybox's `nc`, shows IPv4 peers in `tcp6` as mapped addresses).
pub fn established_in(namespace: &Namespace) -> Result<Vec<TcpConnection>> {
    let tables = namespace.run(|| -> io::Result<String> {
        Ok(std::fs::read_to_string("/proc/thread-self/net/tcp")?
            + &std::fs::read_to_string("/proc/thread-self/net/tcp6")?)
    })?;
    Ok(parse_proc_tcp(
        &tables.context("reading /proc/net/tcp and tcp6")?,
    ))
}

/// Parses `/proc/net/tcp` or `tcp6` lines (headers are skipped as unparsable); IPv4-mapped
/// IPv6 addresses are given as IPv4.
fn parse_proc_tcp(text: &str) -> Vec<TcpConnection> {
    // The kernel prints each 32-bit word of the network-order address as a native integer.
    let address = |hex: &str| -> Option<IpAddr> {
        let words: Option<Vec<u32>> = (0..hex.len() / 8)
            .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
            .collect();
        let bytes: Vec<u8> = words?
            .iter()
            .flat_map(|w| w.to_be().to_be_bytes())
            .collect();
        match bytes.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            16 => {
                let octets: [u8; 16] = bytes.try_into().ok()?;
                let v6 = Ipv6Addr::from(octets);
                Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
            }
            _ => None,
        }
    };
    let endpoint = |field: &str| -> Option<SocketAddr> {
        let (addr, port) = field.split_once(':')?;
        Some(SocketAddr::new(
            address(addr)?,
            u16::from_str_radix(port, 16).ok()?,
        ))
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 01 is ESTABLISHED.
            if fields.get(3) != Some(&"01") {
                return None;
            }
            Some(TcpConnection {
                local: endpoint(fields.get(1)?)?,
                remote: endpoint(fields.get(2)?)?,
            })
        })
        .collect()
}

/// The links of a namespace and the addresses on them.
pub fn links_and_addresses(namespace: &Namespace) -> Result<(Vec<Link>, Vec<Address>)> {
    let handle = NetlinkHandle::in_namespace(namespace)?;
    Ok((handle.links()?, handle.addresses(None)?))
}

/// The name of the link carrying `address`, if any.
pub fn link_of_address(links: &[Link], addresses: &[Address], address: IpAddr) -> Option<String> {
    let index = addresses
        .iter()
        .find(|a| a.address.addr() == address)?
        .link_index;
    links
        .iter()
        .find(|l| l.index == index)
        .map(|l| l.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_names_the_server_and_an_error_packet_says_why() {
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"10.11.19-MariaDB-0+deb12u1\0");
        greeting.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(
            parse_greeting(&greeting).expect("greeting"),
            "10.11.19-MariaDB-0+deb12u1"
        );
        let refusal = [&[0xff, 0x69, 0x04][..], b"Host is blocked"].concat();
        let error = parse_greeting(&refusal).expect_err("refusal");
        assert!(error.to_string().contains("Host is blocked"), "{error}");
        assert!(parse_greeting(b"netiso").is_err());
        assert!(parse_greeting(&[10, b'x']).is_err());
    }

    #[test]
    fn net_dev_counters_are_parsed() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n mgmt0: 1234 5 0 0 0 0 0 0 5678 6 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(text, "mgmt0"),
            Some(Counters {
                rx_bytes: 1234,
                tx_bytes: 5678
            })
        );
        assert_eq!(parse_net_dev(text, "eth9"), None);
    }

    #[test]
    fn proc_tcp6_gives_mapped_ipv4_peers_as_ipv4() {
        let text = "   0: 0000000000000000FFFF00000A00FC0A:0CEA 0000000000000000FFFF00000100FC0A:8A12 01 0\n";
        assert_eq!(
            parse_proc_tcp(text),
            vec![TcpConnection {
                local: "10.252.0.10:3306".parse().unwrap(),
                remote: "10.252.0.1:35346".parse().unwrap(),
            }]
        );
    }

    #[test]
    fn proc_tcp_keeps_established_connections_only() {
        let text = "  sl  local_address rem_address   st\n   0: 0A00FB0A:D2F0 0100FB0A:1628 01 0\n   1: 00000000:0CEA 00000000:0000 0A 0\n";
        let connections = parse_proc_tcp(text);
        assert_eq!(
            connections,
            vec![TcpConnection {
                local: "10.251.0.10:54000".parse().unwrap(),
                remote: "10.251.0.1:5672".parse().unwrap(),
            }]
        );
    }
}
