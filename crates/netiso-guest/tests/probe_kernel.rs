//! The readiness probe against the real kernel: a "container" namespace whose tenant address
//! the VM cannot reach answers the probe only from inside it. Needs root.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use netiso_guest::rpc::{PortProbe, ProbeTarget, TcpProbe};
use netiso_netlink::Rtnetlink;
use netiso_netlink::test_support::TestNamespace;

#[tokio::test]
async fn the_probe_connects_to_the_container_address_from_inside_its_namespace() {
    let container = TestNamespace::new();
    let lo = container.handle().link_by_name("lo").expect("lo");
    container
        .handle()
        .add_address(lo.index, "10.77.5.9/32".parse().expect("cidr"))
        .expect("tenant address");
    let address: SocketAddr = "10.77.5.9:3306".parse().expect("addr");
    let _database = container
        .namespace()
        .run(|| TcpListener::bind(address))
        .expect("enter")
        .expect("listen");
    let probe = TcpProbe {
        attempt_timeout: Duration::from_millis(500),
    };
    let netns = container.namespace().path().to_owned();

    probe
        .answers(&ProbeTarget::ContainerNamespace {
            netns: netns.clone(),
            address,
        })
        .await
        .expect("answers inside the container namespace");

    // From a "VM" namespace (a throwaway one; never this machine's) the tenant address is
    // not reachable: that is why the probe enters the container's namespace.
    let vm = TestNamespace::new();
    let from_vm = vm
        .namespace()
        .run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(probe.answers(&ProbeTarget::Vm(address)))
        })
        .expect("enter the VM namespace");
    assert!(from_vm.is_err(), "{from_vm:?}");

    let closed: SocketAddr = "10.77.5.9:3307".parse().expect("addr");
    let error = probe
        .answers(&ProbeTarget::ContainerNamespace {
            netns: netns.clone(),
            address: closed,
        })
        .await
        .expect_err("nothing listens on 3307");
    assert!(
        error.contains("10.77.5.9:3307") && error.contains(&netns.display().to_string()),
        "{error}"
    );
}
