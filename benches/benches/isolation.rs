//! Isolation benchmarks (custom harness; run as root: `cargo bench -p netiso-benches`).
//!
//! 1. `apply` (plan + apply + verify) on a fake VM whose tenant NIC carries 1, 10, 100, 1 000
//!    and 10 000 routes, beside the iproute2 sequence doing the same work (find the NIC by
//!    MAC, accept_ra off, link down, flush addresses, flush IPv4 and IPv6 routes).
//! 2. "Move the NIC into a container namespace + rename + address + gateway", beside the same
//!    four `ip` commands.
//!
//! Targets: `apply` with 10 routes under 5 ms, at least 10x faster than `ip`, linear in routes.
//! Setup and reset are not timed. All namespaces are throwaway and removed on drop.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::{Duration, Instant},
};

use ipnet::{IpNet, Ipv4Net};
use netiso_guest::isolation::{IsolationTarget, WhenAbsent, isolate};
use netiso_netlink::{
    Link, NamespaceTarget, NetlinkHandle, RouteSpec, Rtnetlink,
    test_support::{TestNamespace, require_root},
};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn ip_command(args: &[&str]) -> BenchResult<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> BenchResult<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A fake VM namespace: management veth with a default route, tenant veth (peers in a
/// second namespace so both have carrier).
struct Vm {
    vm: TestNamespace,
    _networks: TestNamespace,
    tenant: Link,
}

impl Vm {
    fn new() -> BenchResult<Self> {
        let vm = TestNamespace::new();
        let networks = TestNamespace::new();
        let (mgmt, mgmt_peer) = vm.veth("bm", Some(&networks));
        let (tenant, tenant_peer) = vm.veth("bt", Some(&networks));
        for peer in [mgmt_peer, tenant_peer] {
            let link = networks.handle().link_by_name(&peer)?;
            networks.handle().set_link_up(link.index, true)?;
        }
        let h = vm.handle();
        let mgmt = h.link_by_name(&mgmt)?;
        h.set_link_up(mgmt.index, true)?;
        h.add_address(mgmt.index, "192.168.50.2/24".parse()?)?;
        h.add_route(&RouteSpec::default_via("192.168.50.1".parse()?).metric(100))?;
        let tenant = h.link_by_name(&tenant)?;
        Ok(Self {
            vm,
            _networks: networks,
            tenant,
        })
    }

    /// Gives the tenant NIC its boot-time state: up, accept_ra 1, IPv4 + IPv6 addresses, a
    /// default route with a lower metric than management, and `routes` host routes.
    fn configure_tenant(&self, routes: u32) -> BenchResult<()> {
        let h = self.vm.handle();
        let index = self.tenant.index;
        h.set_link_up(index, true)?;
        h.set_accept_ra(&self.tenant.name, 1)?;
        h.add_address(index, "10.60.0.15/16".parse()?)?;
        h.add_address(index, "fd60::15/64".parse()?)?;
        h.add_route(&RouteSpec::default_via("10.60.0.1".parse()?).metric(50))?;
        // The default route counts as one of the tenant's routes.
        for n in 1..routes {
            let destination = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x6400_0000 + n), 32)?);
            h.add_route(&RouteSpec::via(
                destination,
                IpAddr::V4(Ipv4Addr::new(10, 60, 0, 254)),
            ))?;
        }
        Ok(())
    }

    fn target(&self) -> BenchResult<IsolationTarget> {
        let mac = self.tenant.mac.ok_or("tenant veth has no MAC")?;
        Ok(IsolationTarget::new(mac, "/etc/trove/eth1.json"))
    }

    /// The iproute2 way: find the NIC by MAC in `ip -o link`, then five commands.
    fn isolate_with_ip(&self) -> BenchResult<()> {
        let ns = self.vm.name();
        let mac = self.target()?.mac.to_string();
        let listing = ip_output(&["-n", ns, "-o", "link", "show"])?;
        let name = listing
            .lines()
            .find(|line| line.contains(&mac))
            .and_then(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .ok_or("tenant MAC not in ip link output")?;
        ip_command(&[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{name}.accept_ra=0"),
        ])?;
        ip_command(&["-n", ns, "link", "set", "dev", &name, "down"])?;
        ip_command(&["-n", ns, "addr", "flush", "dev", &name])?;
        ip_command(&["-n", ns, "-4", "route", "flush", "dev", &name])?;
        ip_command(&["-n", ns, "-6", "route", "flush", "dev", &name])?;
        Ok(())
    }
}

fn bench_apply(
    out: &mut impl Write,
    routes: u32,
    iterations: usize,
) -> BenchResult<(Duration, Duration)> {
    let vm = Vm::new()?;
    let target = vm.target()?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..iterations {
        vm.configure_tenant(routes)?;
        let start = Instant::now();
        let report = isolate(vm.vm.handle(), &target, WhenAbsent::Error)?;
        ours.push(start.elapsed());
        if !report.verification.is_ok() {
            return Err(format!("apply did not isolate:\n{}", report.verification).into());
        }

        vm.configure_tenant(routes)?;
        let start = Instant::now();
        vm.isolate_with_ip()?;
        theirs.push(start.elapsed());
        // Leave the NIC clean for the next round.
        isolate(vm.vm.handle(), &target, WhenAbsent::Error)?;
    }
    let (ours, theirs) = (median(ours), median(theirs));
    writeln!(
        out,
        "apply, {routes:>5} routes: netiso {:>9.3} ms | ip {:>9.3} ms | ip/netiso {:>6.1}x | netiso {:>6.2} us/route",
        ours.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3,
        theirs.as_secs_f64() / ours.as_secs_f64(),
        ours.as_secs_f64() * 1e6 / f64::from(routes),
    )?;
    Ok((ours, theirs))
}

fn bench_hand_over(out: &mut impl Write, iterations: usize) -> BenchResult<()> {
    let vm = Vm::new()?;
    let h = vm.vm.handle();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ours_move = Vec::new();
    let mut theirs_move = Vec::new();
    let address: IpNet = "10.60.0.15/24".parse()?;
    let gateway: IpAddr = "10.60.0.1".parse()?;
    for _ in 0..iterations {
        // Ours: a handle into the fresh container namespace, one move+rename message, up,
        // address, default route.
        let container = TestNamespace::new();
        let start = Instant::now();
        h.move_link(
            vm.tenant.index,
            NamespaceTarget::Namespace(container.namespace()),
            Some("eth0"),
        )?;
        ours_move.push(start.elapsed());
        let inside = NetlinkHandle::in_namespace(container.namespace())?;
        inside.set_link_up(vm.tenant.index, true)?;
        inside.add_address(vm.tenant.index, address)?;
        inside.add_route(&RouteSpec::default_via(gateway))?;
        ours.push(start.elapsed());
        inside.move_link(
            vm.tenant.index,
            NamespaceTarget::Namespace(vm.vm.namespace()),
            Some(&vm.tenant.name),
        )?;
        drop(container);

        let container = TestNamespace::new();
        let start = Instant::now();
        ip_command(&[
            "-n",
            vm.vm.name(),
            "link",
            "set",
            "dev",
            &vm.tenant.name,
            "netns",
            container.name(),
            "name",
            "eth0",
        ])?;
        theirs_move.push(start.elapsed());
        ip_command(&["-n", container.name(), "link", "set", "dev", "eth0", "up"])?;
        ip_command(&[
            "-n",
            container.name(),
            "addr",
            "add",
            "10.60.0.15/24",
            "dev",
            "eth0",
        ])?;
        ip_command(&[
            "-n",
            container.name(),
            "route",
            "add",
            "default",
            "via",
            "10.60.0.1",
        ])?;
        theirs.push(start.elapsed());
        container.handle().move_link(
            vm.tenant.index,
            NamespaceTarget::Namespace(vm.vm.namespace()),
            Some(&vm.tenant.name),
        )?;
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let (ours_move, theirs_move) = (median(ours_move), median(theirs_move));
    writeln!(
        out,
        "move + rename + address + gateway: netiso {:>9.3} ms | ip {:>9.3} ms | ip/netiso {:>6.1}x",
        ours.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3,
        theirs.as_secs_f64() / ours.as_secs_f64(),
    )?;
    // The kernel's namespace move (RCU grace periods) dominates both; what is left is the
    // cost of the tool itself.
    let (ours_rest, theirs_rest) = (
        ours.saturating_sub(ours_move),
        theirs.saturating_sub(theirs_move),
    );
    writeln!(
        out,
        "  of which the move+rename message: netiso {:>9.3} ms | ip {:>9.3} ms; the rest (up, address, gateway; netiso incl. a new handle): netiso {:>7.3} ms | ip {:>7.3} ms | ip/netiso {:>6.1}x",
        ours_move.as_secs_f64() * 1e3,
        theirs_move.as_secs_f64() * 1e3,
        ours_rest.as_secs_f64() * 1e3,
        theirs_rest.as_secs_f64() * 1e3,
        theirs_rest.as_secs_f64() / ours_rest.as_secs_f64(),
    )?;
    Ok(())
}

fn main() -> BenchResult<()> {
    // `cargo test --benches` runs this binary too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    require_root();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "isolation benchmarks (median of N runs, same machine, same run)"
    )?;
    let mut per_route = Vec::new();
    for (routes, iterations) in [(1, 21), (10, 21), (100, 11), (1_000, 5), (10_000, 3)] {
        let (ours, _) = bench_apply(&mut out, routes, iterations)?;
        per_route.push((routes, ours));
    }
    if let (Some((small_n, small)), Some((big_n, big))) = (per_route.get(2), per_route.last()) {
        writeln!(
            out,
            "linearity: time({big_n}) / time({small_n}) = {:.1} for {:.0}x the routes",
            big.as_secs_f64() / small.as_secs_f64(),
            f64::from(*big_n) / f64::from(*small_n),
        )?;
    }
    bench_hand_over(&mut out, 11)?;
    Ok(())
}
