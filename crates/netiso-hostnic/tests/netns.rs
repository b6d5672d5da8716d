//! The real NIC locator and the server against the kernel: throwaway network namespaces with veth
//! pairs stand in for the VM's host namespace and for container sandboxes. Needs root; nothing is
//! created in the host namespace.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a test failure.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{
    NET_A, NET_B, TestNetns, TestServer, create_network_body, ifname, join_body, post, require_root,
};
use netiso_hostnic::protocol::Endpoint;
use netiso_hostnic::{LocateError, MacAddress, NetnsNicLocator, NicLocator};
use nix::sched::{CloneFlags, setns};
use serde_json::json;

const NIC_MAC: &str = "fa:16:3e:0a:0b:0c";
const HELD_MAC: &str = "fa:16:3e:0d:0e:0f";

fn mac(text: &str) -> MacAddress {
    text.parse().unwrap()
}

/// Runs `f` on a fresh thread inside the namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn eth1(mac: &str) -> String {
    format!(
        r#"{{"mac_address": "{mac}", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1", "ipv4_host_routes": [], "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": [{{"destination": "fd01::/64", "nexthop": "fd00::fe"}}]}}"#
    )
}

#[test]
fn the_locator_finds_links_by_mac_in_the_namespace_it_was_built_in() {
    require_root();
    let plugin_ns = TestNetns::new();
    let nic = ifname("a");
    plugin_ns.add_veth(&nic, &ifname("b"), NIC_MAC);
    let locator = in_netns(&plugin_ns.path(), || NetnsNicLocator::new().unwrap());
    // Asked from this test thread (another namespace), it still answers for its own.
    assert_eq!(locator.find_in_plugin_ns(mac(NIC_MAC)).unwrap(), Some(nic));
    assert_eq!(locator.find_in_plugin_ns(mac(HELD_MAC)).unwrap(), None);
    assert_eq!(
        NetnsNicLocator::new()
            .unwrap()
            .find_in_plugin_ns(mac(NIC_MAC))
            .unwrap(),
        None,
        "a locator built in the test's namespace does not see the test namespace's links"
    );
}

#[test]
fn the_locator_refuses_two_links_with_one_mac() {
    require_root();
    let plugin_ns = TestNetns::new();
    let (first, second) = (ifname("c"), ifname("d"));
    plugin_ns.add_veth(&first, &second, NIC_MAC);
    plugin_ns.ip(&["link", "set", &second, "address", NIC_MAC]);
    let result = in_netns(&plugin_ns.path(), || {
        NetnsNicLocator::new()
            .unwrap()
            .find_in_plugin_ns(mac(NIC_MAC))
    });
    match result {
        Err(LocateError::Ambiguous { names, .. }) => {
            assert_eq!(names.len(), 2);
            assert!(
                names.contains(&first) && names.contains(&second),
                "{names:?}"
            );
        }
        other => panic!("expected an ambiguity error, got {other:?}"),
    }
}

#[test]
fn the_locator_names_the_sandbox_that_holds_a_nic() {
    require_root();
    let sandbox_ns = TestNetns::new();
    sandbox_ns.add_veth(&ifname("e"), &ifname("f"), HELD_MAC);
    let empty_ns = TestNetns::new();
    let sandboxes = tempfile::tempdir().unwrap();
    std::fs::write(sandboxes.path().join("000000000000"), "not a namespace").unwrap();
    std::os::unix::fs::symlink(empty_ns.path(), sandboxes.path().join("111111111111")).unwrap();
    std::os::unix::fs::symlink(sandbox_ns.path(), sandboxes.path().join("222222222222")).unwrap();

    let locator = NetnsNicLocator::new().unwrap();
    let found = locator
        .find_in_sandboxes(sandboxes.path(), mac(HELD_MAC))
        .unwrap();
    assert_eq!(found, Some(sandboxes.path().join("222222222222")));
    assert_eq!(
        locator
            .find_in_sandboxes(sandboxes.path(), mac(NIC_MAC))
            .unwrap(),
        None
    );
    let limited = NetnsNicLocator::with_max_sandboxes(2).unwrap();
    assert_eq!(
        limited
            .find_in_sandboxes(sandboxes.path(), mac(HELD_MAC))
            .unwrap(),
        None,
        "the scan is bounded"
    );
    // The caller's own thread never changed namespace.
    assert_eq!(locator.find_in_plugin_ns(mac(HELD_MAC)).unwrap(), None);
}

#[tokio::test]
async fn join_over_the_socket_finds_the_real_nic_or_its_holder() {
    require_root();
    let plugin_ns = TestNetns::new();
    let nic = ifname("g");
    plugin_ns.add_veth(&nic, &ifname("h"), NIC_MAC);
    let sandbox_ns = TestNetns::new();
    sandbox_ns.add_veth(&ifname("i"), &ifname("j"), HELD_MAC);

    let dir = tempfile::tempdir().unwrap();
    let sandboxes = dir.path().join("exec-root/netns");
    std::fs::create_dir_all(&sandboxes).unwrap();
    std::os::unix::fs::symlink(sandbox_ns.path(), sandboxes.join("fedcba987654")).unwrap();
    let tenant_file = dir.path().join("eth1.json");
    std::fs::write(&tenant_file, eth1(NIC_MAC)).unwrap();

    // The locator's own namespace is the one it was built in, as in the daemon's main thread.
    let locator = in_netns(&plugin_ns.path(), || NetnsNicLocator::new().unwrap());
    let server = TestServer::start(
        &dir.path().join("docker-hostnic.sock"),
        &dir.path().join("hostnic.json"),
        &tenant_file,
        Arc::new(locator),
        Some(plugin_ns.path()),
    );
    let socket = server.socket.clone();
    let joining_sandbox = sandboxes.join("0123456789ab");

    assert_eq!(
        post(
            &socket,
            Endpoint::CreateNetwork.path(),
            &create_network_body(NET_A, NIC_MAC)
        )
        .await
        .status,
        200
    );
    let join = post(
        &socket,
        Endpoint::Join.path(),
        &join_body(NET_A, &joining_sandbox),
    )
    .await;
    assert_eq!(join.status, 200, "{:?}", join.json);
    assert_eq!(
        join.json,
        json!({
            "InterfaceName": {"SrcName": nic, "DstPrefix": "eth"},
            "Gateway": "10.0.0.1",
            "StaticRoutes": [{"Destination": "fd01::/64", "RouteType": 0, "NextHop": "fd00::fe"}],
            "DisableGatewayService": true
        })
    );

    // A second network for a NIC still held by another sandbox: 409 naming that sandbox.
    std::fs::write(&tenant_file, eth1(HELD_MAC)).unwrap();
    assert_eq!(
        post(
            &socket,
            Endpoint::CreateNetwork.path(),
            &create_network_body(NET_B, HELD_MAC)
        )
        .await
        .status,
        200
    );
    let held = post(
        &socket,
        Endpoint::Join.path(),
        &join_body(NET_B, &joining_sandbox),
    )
    .await;
    assert_eq!(held.status, 409, "{:?}", held.json);
    let message = held.json["Err"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "held by sandbox {}",
            sandboxes.join("fedcba987654").display()
        )),
        "{message}"
    );

    // Once the sandbox is gone and the NIC is nowhere: 404 saying where it looked.
    drop(sandbox_ns);
    let gone = post(
        &socket,
        Endpoint::Join.path(),
        &join_body(NET_B, &joining_sandbox),
    )
    .await;
    assert_eq!(gone.status, 404, "{:?}", gone.json);
    assert!(
        gone.json["Err"]
            .as_str()
            .unwrap()
            .contains("no link with MAC fa:16:3e:0d:0e:0f")
    );
}
