//! Real-kernel tests: every operation, in throwaway namespaces (run as root; they fail, never
//! skip, otherwise). Nothing is created in the host namespace; every namespace is removed by
//! `TestNamespace`'s drop, also when a test fails.

// Helpers here are test code too: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::StreamExt;
use ipnet::IpNet;
use netiso_netlink::{
    LinkEvent, MacAddress, Namespace, NamespaceTarget, NetlinkError, NetlinkHandle, RouteSpec,
    Rtnetlink, TABLE_MAIN, netns,
    test_support::{TestNamespace, require_root, unique_link_name},
};

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A namespace with one veth pair, both ends up, `a` addressed 10.77.0.2/24 and fd77::2/64.
fn addressed_pair() -> (TestNamespace, u32, u32) {
    let ns = TestNamespace::new();
    let h = ns.handle();
    let (a, b) = ns.veth("ta", None);
    let a = h.link_by_name(&a).unwrap().index;
    let b = h.link_by_name(&b).unwrap().index;
    h.set_link_up(a, true).unwrap();
    h.set_link_up(b, true).unwrap();
    h.add_address(a, net("10.77.0.2/24")).unwrap();
    h.add_address(a, net("fd77::2/64")).unwrap();
    (ns, a, b)
}

#[test]
fn namespaces_are_created_opened_listed_and_deleted() {
    require_root();
    let name;
    {
        let ns = TestNamespace::new();
        name = ns.name().to_owned();
        assert!(Namespace::list_named().unwrap().contains(&name));
        let by_name = Namespace::open(&name).unwrap();
        let by_path = Namespace::open_path(PathBuf::from("/run/netns").join(&name)).unwrap();
        assert_eq!(by_name.id().unwrap(), ns.namespace().id().unwrap());
        assert_eq!(by_path.id().unwrap(), by_name.id().unwrap());
        assert!(
            !by_name.is_current_thread_in().unwrap(),
            "the test thread must stay in its namespace"
        );
        assert!(
            by_name
                .run(|| by_name.is_current_thread_in().unwrap())
                .unwrap()
        );
        // The calling process's own namespace, by pid, is not the test namespace.
        let own = Namespace::open_pid(std::process::id()).unwrap();
        assert_ne!(own.id().unwrap(), by_name.id().unwrap());
        // A second create with the same name is refused.
        assert!(Namespace::create(&name).unwrap_err().is_already_exists());
    }
    assert!(
        !Namespace::list_named().unwrap().contains(&name),
        "drop must delete {name}"
    );
    assert!(Namespace::open(&name).unwrap_err().is_not_found());
    assert!(Namespace::delete(&name).unwrap_err().is_not_found());
}

#[test]
fn handles_open_by_name_and_from_inside_a_namespace() {
    require_root();
    let ns = TestNamespace::new();
    let (a, _) = ns.veth("th", None);
    let by_name = NetlinkHandle::in_named(ns.name()).unwrap();
    assert!(by_name.link_by_name(&a).is_ok());
    let from_inside = ns
        .namespace()
        .run(|| {
            NetlinkHandle::current()
                .unwrap()
                .link_by_name(&a)
                .map(|l| l.name)
        })
        .unwrap()
        .unwrap();
    assert_eq!(from_inside, a);
    // The test thread's own namespace does not have the link.
    assert!(
        NetlinkHandle::current()
            .unwrap()
            .link_by_name(&a)
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        NetlinkHandle::in_named("nti-absent-namespace")
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn links_are_listed_found_changed_and_deleted() {
    require_root();
    let ns = TestNamespace::new();
    let h = ns.handle();
    let (a, b) = ns.veth("tl", None);
    let links = h.links().unwrap();
    assert!(links.iter().any(|l| l.loopback && l.name == "lo"));
    let link = h.link_by_name(&a).unwrap();
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(!link.up);
    assert_eq!(h.link_by_index(link.index).unwrap().name, a);
    let mac = link.mac.expect("veth has a MAC");
    assert_eq!(h.link_by_mac(mac).unwrap().index, link.index);

    h.set_link_up(link.index, true).unwrap();
    assert!(h.link_by_index(link.index).unwrap().up);
    h.set_link_up(link.index, false).unwrap();
    assert!(!h.link_by_index(link.index).unwrap().up);

    let renamed = unique_link_name("tr");
    h.rename_link(link.index, &renamed).unwrap();
    assert_eq!(h.link_by_index(link.index).unwrap().name, renamed);
    assert!(h.link_by_name(&a).unwrap_err().is_not_found());
    // Renaming onto an existing name: EEXIST.
    assert!(
        h.rename_link(link.index, &b)
            .unwrap_err()
            .is_already_exists()
    );

    h.set_mtu(link.index, 1400).unwrap();
    assert_eq!(h.link_by_index(link.index).unwrap().mtu, 1400);
    let err = h.set_mtu(link.index, 10).unwrap_err();
    assert!(
        matches!(
            err,
            NetlinkError::Kernel {
                errno: libc::EINVAL,
                ..
            }
        ),
        "{err}"
    );

    h.set_alias(link.index, "eth1").unwrap();
    assert_eq!(
        h.link_by_index(link.index).unwrap().alias.as_deref(),
        Some("eth1")
    );
    h.set_alias(link.index, "").unwrap();
    assert_eq!(h.link_by_index(link.index).unwrap().alias, None);

    // A duplicate veth is EEXIST.
    let dup = h
        .create_veth(netiso_netlink::VethSpec {
            name: &b,
            peer_name: &unique_link_name("td"),
            peer_namespace: None,
        })
        .unwrap_err();
    assert!(dup.is_already_exists(), "{dup}");

    h.delete_link(link.index).unwrap();
    assert!(h.link_by_index(link.index).unwrap_err().is_not_found());
    assert!(
        h.link_by_name(&b).unwrap_err().is_not_found(),
        "deleting one end removes the peer"
    );
    assert!(h.link_by_mac(mac).unwrap_err().is_not_found());
    assert!(h.delete_link(link.index).unwrap_err().is_not_found());
    assert!(matches!(
        h.link_by_name("bad/name"),
        Err(NetlinkError::InvalidArgument(_))
    ));
}

#[test]
fn links_move_between_namespaces_by_fd_path_and_pid() {
    require_root();
    let vm = TestNamespace::new();
    let container = TestNamespace::new();
    let (a, b) = vm.veth("tm", None);
    let a_link = vm.handle().link_by_name(&a).unwrap();
    vm.handle().set_link_up(a_link.index, true).unwrap();

    // By fd, renamed in the same message.
    let new_name = unique_link_name("tn");
    vm.handle()
        .move_link(
            a_link.index,
            NamespaceTarget::Namespace(container.namespace()),
            Some(&new_name),
        )
        .unwrap();
    assert!(vm.handle().link_by_name(&a).unwrap_err().is_not_found());
    let moved = container.handle().link_by_name(&new_name).unwrap();
    assert_eq!(moved.mac, a_link.mac, "the MAC survives the move");
    assert!(!moved.up, "a moved link arrives down");

    // Back by path.
    let by_path = Namespace::open_path(vm.namespace().path()).unwrap();
    container
        .handle()
        .move_link(moved.index, NamespaceTarget::Namespace(&by_path), None)
        .unwrap();
    assert_eq!(
        vm.handle().link_by_mac(a_link.mac.unwrap()).unwrap().name,
        new_name
    );

    // By pid: a thread parked inside the container namespace (IFLA_NET_NS_PID takes a task id).
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let target = container.namespace().try_clone().unwrap();
    let parked = std::thread::spawn(move || {
        target
            .run(move || {
                tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
                let _ = done_rx.recv_timeout(Duration::from_secs(10));
            })
            .unwrap();
    });
    let tid = tid_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let b_link = vm.handle().link_by_name(&b).unwrap();
    let result = vm.handle().move_link(
        b_link.index,
        NamespaceTarget::Pid(u32::try_from(tid).unwrap()),
        None,
    );
    done_tx.send(()).unwrap();
    parked.join().unwrap();
    result.unwrap();
    assert!(container.handle().link_by_name(&b).is_ok());

    // A clash on the new name is EEXIST; the kernel has already moved the link, under its
    // old name, where it is found by MAC.
    let c = vm.handle().link_by_name(&new_name).unwrap();
    let clash = vm
        .handle()
        .move_link(
            c.index,
            NamespaceTarget::Namespace(container.namespace()),
            Some(&b),
        )
        .unwrap_err();
    assert!(clash.is_already_exists(), "{clash}");
    assert!(
        vm.handle()
            .link_by_index(c.index)
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        container.handle().link_by_mac(c.mac.unwrap()).unwrap().name,
        new_name
    );
}

#[test]
fn addresses_are_added_listed_deleted_and_flushed() {
    require_root();
    let (ns, a, b) = addressed_pair();
    let h = ns.handle();
    let on_a = h.addresses(Some(a)).unwrap();
    let own: Vec<IpNet> = on_a.iter().map(|x| x.address).collect();
    assert!(own.contains(&net("10.77.0.2/24")), "{own:?}");
    assert!(own.contains(&net("fd77::2/64")), "{own:?}");
    assert!(
        h.addresses(None)
            .unwrap()
            .iter()
            .any(|x| x.address == net("127.0.0.1/8"))
    );
    assert!(
        h.add_address(a, net("10.77.0.2/24"))
            .unwrap_err()
            .is_already_exists()
    );

    let v4 = on_a
        .iter()
        .find(|x| x.address == net("10.77.0.2/24"))
        .unwrap();
    h.delete_address(v4).unwrap();
    assert!(
        !h.addresses(Some(a))
            .unwrap()
            .iter()
            .any(|x| x.address == v4.address)
    );
    assert!(h.delete_address(v4).unwrap_err().is_not_found());

    // Down, so that the kernel's own IPv6 link-local address cannot appear after the flush.
    h.set_link_up(b, false).unwrap();
    h.add_address(b, net("10.78.0.1/24")).unwrap();
    h.add_address(b, net("10.78.0.9/24")).unwrap();
    h.add_address(b, net("fd78::1/64")).unwrap();
    assert!(h.flush_addresses(b).unwrap() >= 1);
    assert!(h.addresses(Some(b)).unwrap().is_empty());
    assert!(
        h.addresses(Some(a))
            .unwrap()
            .iter()
            .any(|x| x.address == net("fd77::2/64")),
        "flush is per link"
    );
}

#[test]
fn routes_are_added_replaced_looked_up_and_deleted() {
    require_root();
    let (ns, a, _) = addressed_pair();
    let h = ns.handle();
    let routes_on_a = || -> Vec<netiso_netlink::Route> {
        h.routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(a) && r.table == TABLE_MAIN)
            .collect()
    };
    // Connected route from the address (protocol kernel, link scope).
    assert!(
        routes_on_a()
            .iter()
            .any(|r| r.destination == net("10.77.0.0/24") && r.gateway.is_none())
    );

    h.add_route(&RouteSpec::default_via(ip("10.77.0.1")).metric(50))
        .unwrap();
    h.add_route(&RouteSpec::default_via(ip("fd77::1")).dev(a))
        .unwrap();
    h.add_route(&RouteSpec::via(net("10.90.0.0/16"), ip("10.77.0.1")))
        .unwrap();
    h.add_route(&RouteSpec::on_link(net("10.91.0.0/24"), a))
        .unwrap();
    h.add_route(&RouteSpec::on_link(net("fd91::/64"), a))
        .unwrap();

    let now = routes_on_a();
    let default4 = now
        .iter()
        .find(|r| r.is_default() && r.destination.addr().is_ipv4())
        .unwrap();
    assert_eq!(default4.gateway, Some(ip("10.77.0.1")));
    assert_eq!(default4.metric, Some(50));
    assert!(
        now.iter()
            .any(|r| r.is_default() && r.gateway == Some(ip("fd77::1")))
    );
    let link_scope = now
        .iter()
        .find(|r| r.destination == net("10.91.0.0/24"))
        .unwrap();
    assert_eq!(link_scope.scope, netiso_netlink::Scope::Link);
    assert!(
        now.iter()
            .any(|r| r.destination == net("fd91::/64") && r.gateway.is_none())
    );

    // Duplicate add is EEXIST; replace succeeds.
    let dup = h
        .add_route(&RouteSpec::via(net("10.90.0.0/16"), ip("10.77.0.1")))
        .unwrap_err();
    assert!(dup.is_already_exists(), "{dup}");
    h.replace_route(&RouteSpec::via(net("10.90.0.0/16"), ip("10.77.0.3")))
        .unwrap();
    let replaced: Vec<_> = routes_on_a()
        .into_iter()
        .filter(|r| r.destination == net("10.90.0.0/16"))
        .collect();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].gateway, Some(ip("10.77.0.3")));

    // Lookup: which interface reaches an address.
    let found = h.route_to(ip("10.90.1.1")).unwrap();
    assert_eq!(found.oif, Some(a));
    assert_eq!(found.gateway, Some(ip("10.77.0.3")));
    assert_eq!(h.route_to(ip("fd91::5")).unwrap().oif, Some(a));

    // A gateway no interface reaches: a kernel error with errno and the extended-ack text.
    let err = h
        .add_route(&RouteSpec::via(net("10.92.0.0/16"), ip("192.0.2.1")))
        .unwrap_err();
    match &err {
        NetlinkError::Kernel { errno, message, .. } => {
            assert_eq!(*errno, libc::ENETUNREACH, "{err}");
            assert!(
                message.as_deref().is_some_and(|m| !m.is_empty()),
                "extended ack expected: {err}"
            );
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }

    for route in routes_on_a()
        .iter()
        .filter(|r| r.protocol != netiso_netlink::PROTOCOL_KERNEL)
    {
        h.delete_route(route).unwrap();
        assert!(
            h.delete_route(route).unwrap_err().is_not_found(),
            "second delete of {route}"
        );
    }
    assert!(
        routes_on_a()
            .iter()
            .all(|r| r.protocol == netiso_netlink::PROTOCOL_KERNEL)
    );
    let unreachable = h.route_to(ip("203.0.113.1")).unwrap_err();
    assert!(
        matches!(
            unreachable,
            NetlinkError::Kernel {
                errno: libc::ENETUNREACH,
                ..
            }
        ),
        "{unreachable}"
    );
}

#[test]
fn accept_ra_is_read_and_written_in_the_handles_namespace() {
    require_root();
    let ns = TestNamespace::new();
    let (a, _) = ns.veth("tr", None);
    let h = ns.handle();
    // The test thread is in the host namespace, where `a` does not exist.
    assert!(!std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{a}")).exists());
    assert!(h.accept_ra(&a).unwrap().is_some());
    h.set_accept_ra(&a, 0).unwrap();
    assert_eq!(h.accept_ra(&a).unwrap(), Some(0));
    h.set_accept_ra(&a, 2).unwrap();
    assert_eq!(h.accept_ra(&a).unwrap(), Some(2));
    // A handle made from inside the namespace (`current`) sees the same value.
    let inside = ns
        .namespace()
        .run(|| NetlinkHandle::current().unwrap().accept_ra(&a).unwrap())
        .unwrap();
    assert_eq!(inside, Some(2));
    assert_eq!(h.accept_ra("nosuchlink").unwrap(), None);
    assert!(h.set_accept_ra("nosuchlink", 0).unwrap_err().is_not_found());
}

fn next_event(
    events: &mut netiso_netlink::LinkEvents,
    rt: &tokio::runtime::Runtime,
    want: impl Fn(&LinkEvent) -> bool,
) -> LinkEvent {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let event = events
                    .next()
                    .await
                    .expect("event stream ended")
                    .expect("event error");
                if want(&event) {
                    return event;
                }
            }
        })
        .await
        .expect("no matching link event within 5 s")
    })
}

#[test]
fn link_events_report_changes_and_removals() {
    require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = TestNamespace::new();
    let h = ns.handle();
    let mut events = rt.block_on(async { h.link_events() }).unwrap();
    let (a, b) = ns.veth("te", None);
    let created = next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::Changed(l) if l.name == a),
    );
    let LinkEvent::Changed(link) = created else {
        unreachable!()
    };
    h.set_link_up(link.index, true).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::Changed(l) if l.index == link.index && l.up),
    );
    let renamed = unique_link_name("tf");
    h.set_link_up(link.index, false).unwrap();
    h.rename_link(link.index, &renamed).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::Changed(l) if l.name == renamed),
    );
    h.delete_link(link.index).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::Removed(l) if l.index == link.index),
    );
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::Removed(l) if l.name == b),
    );
    // Changes in another namespace are not seen.
    let other = TestNamespace::new();
    other.veth("to", None);
    let quiet = rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(200), events.next()).await });
    assert!(
        quiet.is_err(),
        "unexpected event from another namespace: {quiet:?}"
    );
}

#[test]
fn a_burst_that_overruns_the_event_socket_is_reported() {
    require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = TestNamespace::new();
    let h = ns.handle();
    let (a, _) = ns.veth("tb", None);
    let index = h.link_by_name(&a).unwrap().index;
    let mut events = rt.block_on(async { h.link_events() }).unwrap();
    // Nobody reads while thousands of notifications arrive: the socket buffer overflows.
    for n in 0..4000 {
        h.set_link_up(index, n % 2 == 0).unwrap();
    }
    next_event(&mut events, &rt, |e| matches!(e, LinkEvent::Overrun));
}

#[test]
fn link_events_need_a_runtime() {
    require_root();
    let ns = TestNamespace::new();
    assert!(matches!(
        ns.handle().link_events(),
        Err(NetlinkError::InvalidArgument(_))
    ));
}

/// Bind-mounts a test namespace into a fake sandbox directory and unmounts it on drop.
struct SandboxMount(PathBuf);

impl SandboxMount {
    fn new(ns: &TestNamespace, path: PathBuf) -> Self {
        std::fs::write(&path, b"").unwrap();
        nix::mount::mount(
            Some(ns.namespace().path()),
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        Self(path)
    }
}

impl Drop for SandboxMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn docker_and_containerd_sandboxes_are_listed() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let docker_netns = root.path().join("netns");
    std::fs::create_dir_all(&docker_netns).unwrap();
    let ns = TestNamespace::new();
    let _sandbox = SandboxMount::new(&ns, docker_netns.join("0123456789ab"));
    let _default = SandboxMount::new(&ns, docker_netns.join("default"));
    std::fs::write(docker_netns.join("stale0123456"), b"").unwrap();
    nix::unistd::mkfifo(
        &docker_netns.join("fifo01234567"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();

    let docker = netns::list_docker_sandboxes(root.path()).unwrap();
    assert_eq!(docker.len(), 1, "{docker:?}");
    assert_eq!(docker[0].id, "0123456789ab");
    assert_eq!(
        Namespace::open_path(&docker[0].path).unwrap().id().unwrap(),
        ns.namespace().id().unwrap()
    );

    let containerd = netns::list_containerd_sandboxes(&docker_netns).unwrap();
    assert_eq!(
        containerd.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["0123456789ab", "default"]
    );
    assert!(
        netns::list_docker_sandboxes(root.path().join("absent"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_namespace_is_taken_from_an_already_open_file() {
    require_root();
    let ns = TestNamespace::new();
    let file = std::fs::File::open(ns.namespace().path()).unwrap();
    let taken = Namespace::from_file(file, ns.namespace().path()).unwrap();
    assert_eq!(taken.id().unwrap(), ns.namespace().id().unwrap());
    assert_eq!(taken.path(), ns.namespace().path());
    let handle = NetlinkHandle::in_namespace(&taken).unwrap();
    assert_eq!(
        handle.link_by_name("lo").unwrap().index,
        ns.handle().link_by_name("lo").unwrap().index
    );
}

#[test]
fn fixture_cleans_up_even_when_a_test_panics() {
    require_root();
    let name = std::panic::catch_unwind(|| {
        let ns = TestNamespace::new();
        let name = ns.name().to_owned();
        ns.veth("tp", None);
        std::panic::panic_any(name);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Namespace::list_named().unwrap().contains(&name) {
        assert!(Instant::now() < deadline, "{name} left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn mac_of_a_real_link_round_trips_through_text() {
    require_root();
    let ns = TestNamespace::new();
    let (a, _) = ns.veth("tx", None);
    let mac = ns.handle().link_by_name(&a).unwrap().mac.unwrap();
    let text = mac.to_string();
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<MacAddress>().unwrap(), mac);
}

#[test]
fn address_events_are_reported_when_subscribed() {
    require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = TestNamespace::new();
    let h = ns.handle();
    let (a, _) = ns.veth("tv", None);
    let index = h.link_by_name(&a).unwrap().index;
    let mut events = rt.block_on(async { h.link_and_address_events() }).unwrap();
    // An address on a link that is down: no link event, but an address event.
    h.add_address(index, net("10.79.0.2/24")).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::AddressAdded(x) if x.link_index == index && x.address == net("10.79.0.2/24")),
    );
    h.flush_addresses(index).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::AddressRemoved(x) if x.link_index == index),
    );
}

#[test]
fn route_events_are_reported_when_subscribed() {
    require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = TestNamespace::new();
    let h = ns.handle();
    let (a, _) = ns.veth("tr", None);
    let index = h.link_by_name(&a).unwrap().index;
    h.set_link_up(index, true).unwrap();
    h.add_address(index, net("10.78.0.2/24")).unwrap();
    let mut events = rt
        .block_on(async { h.link_address_and_route_events() })
        .unwrap();
    // A route through a link that stays up: neither a link nor an address event.
    let spec = RouteSpec::via(net("172.30.0.0/16"), "10.78.0.1".parse().unwrap());
    h.add_route(&spec).unwrap();
    let added = next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::RouteAdded(r) if r.destination == net("172.30.0.0/16")),
    );
    let LinkEvent::RouteAdded(route) = added else {
        unreachable!()
    };
    assert_eq!(route.oif, Some(index));
    h.delete_route(&route).unwrap();
    next_event(
        &mut events,
        &rt,
        |e| matches!(e, LinkEvent::RouteRemoved(r) if r.destination == net("172.30.0.0/16")),
    );
}

#[test]
fn a_namespace_worker_runs_jobs_inside_and_survives_a_panicking_job() {
    require_root();
    let ns = TestNamespace::new();
    let worker = netns::NamespaceWorker::spawn(ns.namespace()).unwrap();
    let target = ns.namespace().try_clone().unwrap();
    assert!(
        worker
            .run(move || target.is_current_thread_in().unwrap())
            .unwrap()
    );
    assert!(!ns.namespace().is_current_thread_in().unwrap());
    let err = worker.run(|| -> u32 { panic!("job failure") }).unwrap_err();
    assert!(matches!(err, NetlinkError::InvalidArgument(_)), "{err}");
    assert_eq!(
        worker.run(|| 7).unwrap(),
        7,
        "the worker outlives a panicking job"
    );
}

/// Set in the unprivileged child of `unprivileged_changes_are_permission_errors`.
const UNPRIVILEGED_CHILD: &str = "NTI_UNPRIVILEGED_CHILD";

#[test]
fn unprivileged_changes_are_permission_errors() {
    if std::env::var_os(UNPRIVILEGED_CHILD).is_some() {
        // The child, as `nobody`: reading works, any change is refused before the kernel
        // even looks for the (nonexistent) link, so nothing on this machine can change.
        let h = NetlinkHandle::current().expect("an unprivileged handle on our own namespace");
        assert!(!h.links().unwrap().is_empty());
        let err = h.set_link_up(0x7fff_fff0, false).unwrap_err();
        assert!(matches!(err, NetlinkError::Permission { .. }), "{err:?}");
        assert!(err.to_string().contains("permission denied"), "{err}");
        assert!(matches!(
            Namespace::create("nti-unprivileged"),
            Err(NetlinkError::Permission { .. })
        ));
        println!("typed-permission-ok");
        return;
    }
    require_root();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "unprivileged_changes_are_permission_errors",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(UNPRIVILEGED_CHILD, "1")
        .output()
        .expect("run the test binary as nobody with setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("typed-permission-ok"),
        "unprivileged child failed (is {} readable by nobody?):\n{stdout}\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
