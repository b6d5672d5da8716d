//! Real-kernel tests of the isolation step in a fake VM namespace (run as root; they fail,
//! never skip, otherwise). Every namespace is removed on drop, also when a test fails.

// Helpers here are test code too: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use netiso_guest::isolation::{
    Guard, GuardOptions, Invariant, IsolationError, IsolationTarget, WhenAbsent, apply, isolate,
    plan, verify,
};
use netiso_netlink::{
    Link, NamespaceTarget, NetlinkHandle, Route, RouteSpec, Rtnetlink, TABLE_MAIN,
    test_support::{TestNamespace, require_root, unique_link_name},
};

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A fake VM: a management veth (default route metric 100) and a tenant veth (IPv4 and IPv6
/// addresses, default route metric 50, IPv6 default route, two host routes), their peers in a
/// second namespace standing for the networks.
struct FakeVm {
    vm: TestNamespace,
    _networks: TestNamespace,
    mgmt: Link,
    tenant: Link,
}

impl FakeVm {
    fn new() -> Self {
        require_root();
        let vm = TestNamespace::new();
        let networks = TestNamespace::new();
        let h = vm.handle();
        let (mgmt, mgmt_peer) = vm.veth("vm", Some(&networks));
        let (tenant, tenant_peer) = vm.veth("vt", Some(&networks));
        for peer in [mgmt_peer, tenant_peer] {
            let link = networks.handle().link_by_name(&peer).unwrap();
            networks.handle().set_link_up(link.index, true).unwrap();
        }
        let mgmt = h.link_by_name(&mgmt).unwrap();
        let tenant = h.link_by_name(&tenant).unwrap();
        h.set_link_up(mgmt.index, true).unwrap();
        h.set_link_up(tenant.index, true).unwrap();
        h.add_address(mgmt.index, net("192.168.50.2/24")).unwrap();
        h.add_route(&RouteSpec::default_via(ip("192.168.50.1")).metric(100))
            .unwrap();
        Self::address_tenant(h, tenant.index);
        let mgmt = h.link_by_index(mgmt.index).unwrap();
        let tenant = h.link_by_index(tenant.index).unwrap();
        Self {
            vm,
            _networks: networks,
            mgmt,
            tenant,
        }
    }

    /// What the tenant NIC gets from cloud-init or DHCP.
    fn address_tenant(h: &NetlinkHandle, index: u32) {
        h.add_address(index, net("10.60.0.15/24")).unwrap();
        h.add_address(index, net("fd60::15/64")).unwrap();
        h.add_route(&RouteSpec::default_via(ip("10.60.0.1")).metric(50))
            .unwrap();
        h.add_route(&RouteSpec::via(net("172.20.0.0/16"), ip("10.60.0.254")))
            .unwrap();
        h.add_route(&RouteSpec::via(net("172.21.0.0/16"), ip("10.60.0.254")))
            .unwrap();
        h.add_route(&RouteSpec::default_via(ip("fd60::1")).dev(index))
            .unwrap();
    }

    fn target(&self) -> IsolationTarget {
        IsolationTarget::new(self.tenant.mac.unwrap(), "/etc/trove/eth1.json")
    }

    fn h(&self) -> &NetlinkHandle {
        self.vm.handle()
    }

    fn management_routes(&self) -> Vec<Route> {
        self.h()
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(self.mgmt.index))
            .collect()
    }

    fn tenant_is_isolated(&self) -> bool {
        let h = self.h();
        match h.link_by_mac(self.tenant.mac.unwrap()) {
            Err(e) if e.is_not_found() => true,
            Err(e) => panic!("{e}"),
            Ok(link) => {
                !link.up
                    && h.addresses(Some(link.index)).unwrap().is_empty()
                    && !h
                        .routes()
                        .unwrap()
                        .iter()
                        .any(|r| r.leaves_through(link.index) && r.table == TABLE_MAIN)
            }
        }
    }
}

#[test]
fn apply_isolates_the_tenant_nic_and_keeps_management_intact() {
    let vm = FakeVm::new();
    let h = vm.h();
    assert_eq!(
        h.route_to(ip("8.8.8.8")).unwrap().oif,
        Some(vm.tenant.index),
        "tenant default route wins before"
    );
    let mgmt_routes_before = vm.management_routes();

    let planned = plan(h, &vm.target(), WhenAbsent::Error).unwrap();
    let tenant = planned.tenant.as_ref().unwrap();
    assert!(
        tenant
            .routes
            .iter()
            .any(|r| r.is_default() && r.destination.addr().is_ipv4())
    );
    assert!(
        tenant
            .routes
            .iter()
            .any(|r| r.is_default() && r.destination.addr().is_ipv6())
    );
    assert!(
        tenant
            .addresses
            .iter()
            .any(|a| a.address == net("fd60::15/64"))
    );
    let text = planned.to_string();
    assert!(
        text.contains(&format!("set {} down", vm.tenant.name)),
        "{text}"
    );
    assert!(
        text.contains("remove route default via 10.60.0.1"),
        "{text}"
    );
    assert!(text.contains(&vm.mgmt.name), "{text}");

    let report = apply(h, &planned).unwrap();
    assert!(report.verification.is_ok(), "{}", report.verification);
    assert!(vm.tenant_is_isolated());
    assert_eq!(h.accept_ra(&vm.tenant.name).unwrap(), Some(0));
    assert_eq!(
        vm.management_routes(),
        mgmt_routes_before,
        "management routes untouched"
    );
    assert!(h.link_by_index(vm.mgmt.index).unwrap().up);
    let via = h.route_to(ip("8.8.8.8")).unwrap();
    assert_eq!(via.oif, Some(vm.mgmt.index));
    assert_eq!(via.gateway, Some(ip("192.168.50.1")));

    let verified = verify(h, &vm.target(), &planned.baseline).unwrap();
    assert!(verified.is_ok(), "{verified}");

    // A second apply changes nothing.
    let again = isolate(h, &vm.target(), WhenAbsent::Error).unwrap();
    assert!(
        again.changes.is_empty(),
        "second apply changed {:?}",
        again.changes
    );
    assert!(plan(h, &vm.target(), WhenAbsent::Error).unwrap().is_noop());
}

#[test]
fn isolating_a_mac_that_does_not_exist_names_the_mac_and_the_file() {
    let vm = FakeVm::new();
    let target = IsolationTarget::new("fa:16:3e:de:ad:00".parse().unwrap(), "/etc/trove/eth1.json");
    let err = isolate(vm.h(), &target, WhenAbsent::Error).unwrap_err();
    assert!(matches!(err, IsolationError::NicNotFound { .. }));
    let text = err.to_string();
    assert!(
        text.contains("fa:16:3e:de:ad:00") && text.contains("/etc/trove/eth1.json"),
        "{text}"
    );
    assert!(
        vm.h().link_by_index(vm.tenant.index).unwrap().up,
        "nothing touched"
    );
}

#[test]
fn a_nic_handed_to_a_container_verifies_as_isolated() {
    let vm = FakeVm::new();
    let baseline = plan(vm.h(), &vm.target(), WhenAbsent::Error)
        .unwrap()
        .baseline;
    let container = TestNamespace::new();
    vm.h()
        .move_link(
            vm.tenant.index,
            NamespaceTarget::Namespace(container.namespace()),
            Some("eth0"),
        )
        .unwrap();
    let report = verify(vm.h(), &vm.target(), &baseline).unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(
        report
            .check(Invariant::TenantDownOrAbsent)
            .unwrap()
            .detail
            .contains("handed to a container")
    );
    assert!(
        isolate(vm.h(), &vm.target(), WhenAbsent::Isolated)
            .unwrap()
            .changes
            .is_empty()
    );
    assert!(isolate(vm.h(), &vm.target(), WhenAbsent::Error).is_err());
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn guard_reisolates_the_nic_brought_back_up_within_a_second() {
    let vm = FakeVm::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = Arc::new(NetlinkHandle::in_namespace(vm.vm.namespace()).unwrap());
    isolate(&*handle, &vm.target(), WhenAbsent::Error).unwrap();
    let guard = rt
        .block_on(async { Guard::start(Arc::clone(&handle), vm.target(), GuardOptions::default()) })
        .unwrap();

    // The OS brings the NIC back up, as DHCP would.
    vm.h().set_link_up(vm.tenant.index, true).unwrap();
    let took = wait_until(Duration::from_secs(1), || {
        !vm.h().link_by_index(vm.tenant.index).unwrap().up
    });
    assert!(
        took.is_some(),
        "the guard did not set the tenant NIC down within 1 s"
    );
    assert!(vm.tenant_is_isolated());
    drop(guard);
}

#[test]
fn guard_reisolates_a_nic_returned_renamed_by_the_container_runtime() {
    let vm = FakeVm::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = Arc::new(NetlinkHandle::in_namespace(vm.vm.namespace()).unwrap());
    isolate(&*handle, &vm.target(), WhenAbsent::Error).unwrap();
    let guard = rt
        .block_on(async { Guard::start(Arc::clone(&handle), vm.target(), GuardOptions::default()) })
        .unwrap();

    // Docker takes the NIC into a sandbox as eth0...
    let container = TestNamespace::new();
    vm.h()
        .move_link(
            vm.tenant.index,
            NamespaceTarget::Namespace(container.namespace()),
            Some("eth0"),
        )
        .unwrap();
    let inside = container.handle().link_by_name("eth0").unwrap();
    // ...and returns it under another name, where the OS brings it up with an address.
    let returned = unique_link_name("dev");
    container
        .handle()
        .move_link(
            inside.index,
            NamespaceTarget::Namespace(vm.vm.namespace()),
            Some(&returned),
        )
        .unwrap();
    let back = vm.h().link_by_name(&returned).unwrap();
    vm.h().set_link_up(back.index, true).unwrap();
    vm.h()
        .add_address(back.index, net("10.60.0.15/24"))
        .unwrap();

    let took = wait_until(Duration::from_secs(1), || vm.tenant_is_isolated());
    assert!(
        took.is_some(),
        "the guard did not re-isolate the returned NIC within 1 s"
    );
    let ra = wait_until(Duration::from_secs(1), || {
        vm.h().accept_ra(&returned).unwrap() == Some(0)
    });
    assert!(ra.is_some(), "accept_ra not turned off on the returned NIC");
    drop(guard);
}

/// Runs `ip -n <namespace> <args>` (the administrator's or cloud-init's way of changing a NIC)
/// and returns whether it succeeded.
fn ip_in(namespace: &str, args: &[&str]) -> bool {
    let output = std::process::Command::new("ip")
        .arg("-n")
        .arg(namespace)
        .args(args)
        .output()
        .expect("run `ip` (iproute2)");
    output.status.success()
}

#[test]
fn guard_strips_addresses_and_routes_added_without_a_link_event() {
    let vm = FakeVm::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = Arc::new(NetlinkHandle::in_namespace(vm.vm.namespace()).unwrap());
    isolate(&*handle, &vm.target(), WhenAbsent::Error).unwrap();
    // A recheck far beyond the bound below: only events can make the guard react in time.
    let mut options = GuardOptions::default();
    options.recheck_interval = Duration::from_secs(3600);
    let guard = rt
        .block_on(async { Guard::start(Arc::clone(&handle), vm.target(), options) })
        .unwrap();
    let namespace = vm.vm.name().to_owned();
    let tenant = vm.tenant.name.clone();
    let has_address = |address: &str| {
        vm.h()
            .addresses(Some(vm.tenant.index))
            .unwrap()
            .iter()
            .any(|a| a.address == net(address))
    };
    let bound = Duration::from_secs(2);

    // An IPv4 and an IPv6 address on the down NIC: no link event, only address events.
    for (address, family) in [("10.60.0.99/24", "-4"), ("fd60::99/64", "-6")] {
        assert!(ip_in(
            &namespace,
            &[family, "addr", "add", address, "dev", &tenant]
        ));
        let took = wait_until(bound, || !has_address(address));
        println!("guard removed address {address} (NIC down) after {took:?}");
        assert!(
            took.is_some(),
            "the guard did not remove {address} within {bound:?}"
        );
    }

    // Up, with an address and a route, as an administrator would type it: the link event
    // makes the guard set the NIC down; the address and route arrive afterwards or in between,
    // and must not survive either.
    let route_through_tenant = || {
        vm.h()
            .routes()
            .unwrap()
            .iter()
            .any(|r| r.leaves_through(vm.tenant.index) && r.table == TABLE_MAIN)
    };
    for round in 0..5 {
        // One `ip` process for the three changes, so that they come microseconds apart.
        let started = Instant::now();
        let mut batch = std::process::Command::new("ip")
            .args(["-n", &namespace, "-force", "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run `ip -batch` (iproute2)");
        {
            use std::io::Write as _;
            let mut stdin = batch.stdin.take().unwrap();
            write!(
                stdin,
                "link set {tenant} up\naddr add 10.60.0.98/24 dev {tenant}\n\
                 route add 172.22.0.0/16 via 10.60.0.254 dev {tenant}\n"
            )
            .unwrap();
        }
        let output = batch.wait_with_output().unwrap();
        // The route is refused ("Nexthop device is not up") when the guard was quicker.
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let took = wait_until(bound, || vm.tenant_is_isolated() && !route_through_tenant());
        println!(
            "round {round}: route {} by `ip`; isolated again {:?} after the first command",
            if stderr.contains("route") || stderr.contains("Nexthop") {
                "refused (NIC already down)"
            } else {
                "accepted"
            },
            took.map(|_| started.elapsed())
        );
        assert!(
            took.is_some(),
            "round {round}: not isolated within {bound:?}"
        );
    }
    drop(guard);
}

/// An agent configuration with isolation requested and `eth1.json` holding `contents`.
fn agent_config(dir: &std::path::Path, contents: &str) -> netiso_guest::agent::AgentConfig {
    let nic = dir.join("eth1.json");
    std::fs::write(&nic, contents).unwrap();
    let conf = dir.join("guest.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nguest_id = g1\nnetwork_isolation = True\n[netiso]\ntenant_nic_file = {}\n\
             state_dir = {}\n",
            nic.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    netiso_guest::agent::AgentConfig::load(&netiso_config::ConfigSources {
        config_files: vec![conf],
        config_dirs: Vec::new(),
    })
    .unwrap()
}

#[test]
fn an_unusable_tenant_nic_file_refuses_the_database_but_still_isolates_the_nic_it_names() {
    let vm = FakeVm::new();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = Arc::new(NetlinkHandle::in_namespace(vm.vm.namespace()).unwrap());

    // Torn JSON: the NIC cannot be identified; nothing is touched, the mode stays isolated
    // (never bridged) and the error names the file and the line.
    let config = agent_config(dir.path(), "{\"mac_address\": \"fa:16:3e");
    assert!(config.guest.isolation_mode().is_isolated());
    let error = config.tenant().unwrap_err().to_string();
    assert!(
        error.contains("eth1.json") && error.contains("line 1"),
        "{error}"
    );
    let guard = rt.block_on(netiso_guest::agent::isolate_refused_tenant_file(
        Arc::clone(&handle),
        &config,
    ));
    assert!(guard.is_none());
    assert!(vm.h().link_by_index(vm.tenant.index).unwrap().up);

    // A bad CIDR, but the MAC is plain: the database is refused, the NIC is isolated anyway
    // and guarded.
    let mac = vm.tenant.mac.unwrap();
    let config = agent_config(
        dir.path(),
        &format!(
            "{{\"mac_address\": \"{mac}\", \"ipv4_address\": \"10.60.0.15\", \"ipv4_cidr\": \"10.60.0.0/33\"}}"
        ),
    );
    assert!(config.guest.isolation_mode().is_isolated());
    assert!(
        config
            .tenant()
            .unwrap_err()
            .to_string()
            .contains("`ipv4_cidr`"),
        "the error names the key"
    );
    let guard = rt
        .block_on(netiso_guest::agent::isolate_refused_tenant_file(
            Arc::clone(&handle),
            &config,
        ))
        .expect("guarded");
    assert!(vm.tenant_is_isolated());
    vm.h().set_link_up(vm.tenant.index, true).unwrap();
    let took = wait_until(Duration::from_secs(2), || {
        !vm.h().link_by_index(vm.tenant.index).unwrap().up
    });
    assert!(took.is_some(), "the guard keeps it isolated");
    drop(guard);
}
