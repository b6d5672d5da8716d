//! A network partition of one cluster node as the simulated guest sees it: the node's
//! management-side address and port are cut off inside the guest's network namespace, every
//! TCP packet to or from them dropped silently (no reset, no FIN), as over a cut link. The
//! guest's open connections to the node stay open until a heartbeat timeout notices them,
//! while the node itself stays in the cluster and keeps serving everyone else (this machine's
//! clients reach it over loopback, which the cut does not touch).
//!
//! The cut is an iptables chain of this process's own (`NETISO-CUT-<pid>-<n>`) in the guest
//! namespace's `filter` table, jumped to from `INPUT` and `OUTPUT`: concurrent runs cannot
//! collide, restoring removes only that chain and its two jumps, and nothing outside the
//! namespace (this machine's interfaces, routes and firewall) is touched. iptables is one of
//! the packages `cargo xtask provision` installs.
//!
//! Which node a guest-side client is connected to is read from `/proc` (its sockets and its
//! namespace's TCP table), so that a test can cut exactly that node and time how long the
//! client holds on to the dead connection.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::cluster;

/// The simulated guest's namespace when `NETISO_GUEST_NETNS` is unset.
const DEFAULT_GUEST_NETNS: &str = "netiso-guest";
/// `st` of an established connection in `/proc/net/tcp`.
const TCP_ESTABLISHED: &str = "01";

/// Numbers the cuts of this process, so that each has a chain name of its own.
static CUTS: AtomicU32 = AtomicU32::new(0);

/// The simulated guest's network namespace (`NETISO_GUEST_NETNS`), where the cut is made.
pub fn guest_netns() -> String {
    cluster::env_or("NETISO_GUEST_NETNS", DEFAULT_GUEST_NETNS)
}

/// The cluster nodes that process `pid` holds an established TCP connection to, by their
/// guest-side endpoints ([`cluster::guest_endpoint`]): its sockets from `/proc/<pid>/fd`,
/// matched by inode against `/proc/<pid>/net/tcp`, its namespace's IPv4 TCP table (the
/// guest's management network is IPv4). Tells which node a client in the guest is connected
/// to without asking the broker, and whether that connection is still open.
pub fn nodes_connected_from(pid: u32) -> Result<BTreeSet<String>, String> {
    connected_nodes(&format!("/proc/{pid}/fd"), &format!("/proc/{pid}/net/tcp"))
}

/// Like [`nodes_connected_from`] for this process, as the calling thread's network namespace
/// sees it (`/proc/thread-self/net/tcp`): for a test that opens its guest-side connections
/// on threads it moved into the guest's namespace, and calls this on one of them.
pub fn nodes_connected_from_this_thread() -> Result<BTreeSet<String>, String> {
    connected_nodes("/proc/self/fd", "/proc/thread-self/net/tcp")
}

/// Polls `connections` (e.g. `|| nodes_connected_from(pid)`) every 100 ms until `node` is
/// no longer among them, at most for `bound`: how long a client kept its connection to a node
/// after the node was cut off, that is how long it took to notice the partition (`None`: it
/// still held it at the bound).
pub async fn time_until_disconnected(
    connections: impl Fn() -> Result<BTreeSet<String>, String>,
    node: String,
    bound: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < bound {
        if connections().is_ok_and(|nodes| !nodes.contains(&node)) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The cluster nodes the sockets in `fd_dir` are connected to, by the TCP table `tcp_table`.
fn connected_nodes(fd_dir: &str, tcp_table: &str) -> Result<BTreeSet<String>, String> {
    let inodes: BTreeSet<String> = std::fs::read_dir(fd_dir)
        .map_err(|err| format!("cannot list {fd_dir}: {err}"))?
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(tcp_table)
        .map_err(|err| format!("cannot read {tcp_table}: {err}"))?;
    let endpoints = cluster::nodes()
        .into_iter()
        .map(|node| cluster::guest_endpoint(&node).map(|endpoint| (endpoint, node)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
            if *state != TCP_ESTABLISHED || !inodes.contains(*inode) {
                return None;
            }
            let remote = parse_endpoint(remote)?;
            endpoints
                .iter()
                .find(|(endpoint, _)| *endpoint == remote)
                .map(|(_, node)| node.clone())
        })
        .collect())
}

/// An address and port as `/proc/net/tcp` prints them: the address as a hexadecimal number
/// in the machine's byte order, the port in hexadecimal (`0100FB0A:1631` is 10.251.0.1:5681
/// on a little-endian machine).
fn parse_endpoint(text: &str) -> Option<(Ipv4Addr, u16)> {
    let (address, port) = text.split_once(':')?;
    let address = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((Ipv4Addr::from(address.to_ne_bytes()), port))
}

/// One node cut off from the simulated guest; the link comes back with
/// [`PartitionedNode::restore`] or, at the latest, on drop (also when the test fails), so that
/// no cut outlives its test.
#[derive(Debug)]
pub struct PartitionedNode {
    node: String,
    netns: String,
    chain: String,
    restored: bool,
}

impl PartitionedNode {
    /// Cuts `node`'s guest-side endpoint off in the guest's namespace: from now on every TCP
    /// packet between the guest and that address and port is dropped, in both directions.
    /// Connections already open stay open (nothing tells either end).
    pub fn cut(node: &str) -> Result<Self, String> {
        let (address, port) = cluster::guest_endpoint(node)?;
        let netns = guest_netns();
        if !Path::new("/run/netns").join(&netns).exists() {
            return Err(format!(
                "the simulated guest namespace {netns} is missing: run `cargo xtask provision`"
            ));
        }
        let chain = format!(
            "NETISO-CUT-{}-{}",
            std::process::id(),
            CUTS.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before the first rule: a cut that fails half-way is undone on drop.
        let cut = Self {
            node: node.to_owned(),
            netns,
            chain,
            restored: false,
        };
        let (address, port) = (address.to_string(), port.to_string());
        let chain = cut.chain.as_str();
        cut.iptables(&["-N", chain])?;
        cut.iptables(&[
            "-A", chain, "-p", "tcp", "-d", &address, "--dport", &port, "-j", "DROP",
        ])?;
        cut.iptables(&[
            "-A", chain, "-p", "tcp", "-s", &address, "--sport", &port, "-j", "DROP",
        ])?;
        cut.iptables(&["-I", "OUTPUT", "1", "-j", chain])?;
        cut.iptables(&["-I", "INPUT", "1", "-j", chain])?;
        Ok(cut)
    }

    /// Removes the cut: the two jumps to this cut's chain, then the chain. Every step is tried
    /// (whatever [`PartitionedNode::cut`] got to is undone); it succeeded when the chain is
    /// gone, which iptables allows only once nothing jumps to it.
    pub fn restore(&mut self) -> Result<(), String> {
        self.restored = true;
        let chain = self.chain.as_str();
        let failures: Vec<String> = [
            &["-D", "INPUT", "-j", chain][..],
            &["-D", "OUTPUT", "-j", chain],
            &["-F", chain],
            &["-X", chain],
        ]
        .into_iter()
        .filter_map(|args| self.iptables(args).err())
        .collect();
        match self.iptables(&["-n", "-L", chain]) {
            Err(_) => Ok(()),
            Ok(_) => Err(format!(
                "chain {chain} (cutting {}) is still in namespace {}: {failures:?}",
                self.node, self.netns
            )),
        }
    }

    /// Runs `iptables -w 10 args` in the guest's namespace, at most 30 s; its output, or why
    /// it failed.
    fn iptables(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("timeout")
            .arg("30")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["iptables", "-w", "10"])
            .args(args)
            .output()
            .map_err(|err| format!("cannot run nsenter: {err}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "iptables {args:?} in namespace {} failed ({}): {} (iptables comes with \
                 `cargo xtask provision`)",
                self.netns,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

impl Drop for PartitionedNode {
    fn drop(&mut self) {
        if !self.restored
            && let Err(err) = self.restore()
        {
            eprintln!("could not restore the link to node {}: {err}", self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_endpoints_parse_in_the_machines_byte_order() {
        let address = u32::from_ne_bytes([10, 251, 0, 1]);
        let text = format!("{address:08X}:1631");
        assert_eq!(
            parse_endpoint(&text),
            Some((Ipv4Addr::new(10, 251, 0, 1), 5681))
        );
        assert_eq!(parse_endpoint("zz:1631"), None);
        assert_eq!(parse_endpoint("0100FB0A"), None);
    }
}
