//! OUR plugin binary against the REAL guest dockerd (Debian docker.io 20.10 in the provisioned
//! `netiso-guest` namespace): a veth stands for the tenant NIC, the line-echo test database
//! is pulled from the local registry, and a client namespace on the tenant side connects to the
//! database port. Needs root and `cargo xtask provision`; fails (never skips) otherwise.
//!
//! Each test runs its own plugin process under its own name (`nthn-<pid>-<n>`), so it never
//! meets the real `docker-hostnic` of the harness or the benchmarks.
#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    DB_PORT, HostnicBed, PluginProcess, TenantPort, assert_container_has_the_nic, database_spec,
    docker_cli, echo_from_client, ip_in_container, is_up, network_spec, run,
};
use netiso_runtime::test_support::{ContainerGuard, NetworkGuard, unique_name};
use netiso_runtime::{ContainerRuntime, IpamPool, NetworkAttachment, NetworkStatus, RestartPolicy};
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How long a returned NIC may take to reappear in the guest namespace.
const NIC_RETURN_WITHIN: Duration = Duration::from_secs(20);

fn state_of(plugin: &PluginProcess) -> Value {
    let text = std::fs::read_to_string(plugin.state_file()).unwrap_or_else(|e| {
        panic!("{}: {e}", plugin.state_file().display());
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("state file: {e}: {text}"))
}

/// Removes the container and checks the NIC is back in the VM namespace, under its own name,
/// down, without addresses.
async fn remove_and_expect_the_nic_back(
    docker: &netiso_runtime::DockerRuntime,
    container: &ContainerGuard,
    port: &TenantPort,
) {
    assert!(
        docker.remove(container.name(), true).await.unwrap(),
        "{} existed",
        container.name()
    );
    let (name, flags) = port.wait_back_in_guest(NIC_RETURN_WITHIN);
    assert_eq!(name, port.vm_if, "the NIC is back under its own name");
    assert!(!is_up(&flags), "the NIC is back down: <{flags}>");
    let guest = netiso_runtime::test_support::guest_netns();
    let addresses = run(
        "ip",
        &["-n", &guest, "-o", "addr", "show", "dev", &port.vm_if],
    )
    .unwrap();
    assert!(
        addresses.trim().is_empty(),
        "the NIC is back without addresses: {addresses}"
    );
}

/// Runs a database container on the bed's network, checks it holds the NIC and answers the
/// client, then removes it and checks the NIC came back.
async fn run_serve_and_remove(bed: &HostnicBed) {
    let container = ContainerGuard::new(unique_name("nthn-db"));
    let info = bed
        .run_healthy(&bed.database_spec(container.name(), RestartPolicy::No))
        .await;
    assert_container_has_the_nic(&info, &bed.port);
    bed.echo_over_ipv4();
    remove_and_expect_the_nic_back(&bed.docker, &container, &bed.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_container_gets_the_tenant_nic_and_gives_it_back() {
    let bed = HostnicBed::start().await;
    let (docker, port, plugin) = (&bed.docker, &bed.port, &bed.plugin);
    let status = bed.create_network().await;
    assert!(
        matches!(status, NetworkStatus::Created { .. }),
        "{status:?}"
    );
    assert_eq!(
        state_of(plugin)[status.id()]["mac_address"],
        port.mac.to_string(),
        "the plugin recorded the network"
    );
    assert!(
        port.in_guest().is_some(),
        "the NIC starts in the VM namespace"
    );

    // The first container gets the NIC; after its removal the next one gets it again.
    for round in 0..2 {
        let container = ContainerGuard::new(unique_name("nthn-db"));
        let info = bed
            .run_healthy(&bed.database_spec(container.name(), RestartPolicy::No))
            .await;
        assert_eq!(
            port.in_guest(),
            None,
            "round {round}: the NIC is no longer in the VM namespace"
        );
        assert_container_has_the_nic(&info, port);
        let endpoint = &info.networks[&bed.network];
        assert_eq!(endpoint.ipv4, Some(port.ipv4()), "{endpoint:?}");
        bed.echo_over_ipv4();
        remove_and_expect_the_nic_back(docker, &container, port).await;
    }
    let logs = plugin.logs();
    assert_eq!(
        logs.matches("handing the tenant NIC to the sandbox")
            .count(),
        2,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_cli_creates_and_removes_a_network_on_our_plugin() {
    let bed = HostnicBed::start().await;
    let (port, plugin, network_name) = (&bed.port, &bed.plugin, bed.network.as_str());
    let mac_option = format!("hostnic_mac={}", port.mac);
    let gateway = port.ipv4_gateway().to_string();
    let id = docker_cli(&[
        "network",
        "create",
        "-d",
        plugin.driver(),
        "--subnet",
        &port.ipv4_cidr(),
        "--gateway",
        &gateway,
        "-o",
        &mac_option,
        network_name,
    ])
    .unwrap_or_else(|e| panic!("{e}\nplugin log:\n{}", plugin.logs()));
    let id = id.trim();
    assert_eq!(id.len(), 64, "a network id: {id}");
    let described = docker_cli(&[
        "network",
        "inspect",
        "--format",
        "{{.Driver}} {{index .Options \"hostnic_mac\"}}",
        network_name,
    ])
    .unwrap();
    assert_eq!(
        described.trim(),
        format!("{} {}", plugin.driver(), port.mac)
    );
    let entry = &state_of(plugin)[id];
    assert_eq!(entry["mac_address"], port.mac.to_string(), "{entry}");
    assert_eq!(entry["gateway"], gateway.as_str(), "{entry}");

    let container = ContainerGuard::new(unique_name("nthn-db"));
    let address = port.ipv4().to_string();
    docker_cli(&[
        "run",
        "-d",
        "--name",
        container.name(),
        "--network",
        network_name,
        "--ip",
        &address,
        "--health-cmd",
        &format!("echo ping | timeout 2 nc 127.0.0.1 {DB_PORT} | grep -q ping"),
        "--health-interval",
        "500ms",
        &bed.image.reference().to_string(),
    ])
    .unwrap_or_else(|e| panic!("{e}\nplugin log:\n{}", plugin.logs()));
    let info = bed
        .docker
        .wait_healthy(container.name(), common::HEALTHY_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\nplugin log:\n{}", plugin.logs()));
    assert_eq!(port.in_guest(), None, "the NIC left the VM namespace");
    assert_container_has_the_nic(&info, port);
    bed.echo_over_ipv4();
    docker_cli(&["rm", "-f", container.name()]).unwrap();
    let (name, flags) = port.wait_back_in_guest(NIC_RETURN_WITHIN);
    assert_eq!((name.as_str(), is_up(&flags)), (port.vm_if.as_str(), false));

    docker_cli(&["network", "rm", network_name]).unwrap();
    assert_eq!(
        state_of(plugin).get(id),
        None,
        "DeleteNetwork removed the entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_plugin_keeps_its_networks_and_serves_a_trove_written_state_file() {
    let mut bed = HostnicBed::start().await;
    let id = bed.create_network().await.id().to_owned();

    // A restart on its own state file.
    bed.plugin.restart();
    run_serve_and_remove(&bed).await;

    // The file exactly as Trove's plugin writes it (`json.dumps(data)`, truncated in place),
    // e.g. left by Trove's plugin before the guest was upgraded to ours.
    assert!(bed.plugin.stop(), "clean stop:\n{}", bed.plugin.logs());
    let trove_written = format!(
        "{{\"{id}\": {{\"mac_address\": \"{}\", \"gateway\": \"{}\"}}}}",
        bed.port.mac,
        bed.port.ipv4_gateway()
    );
    std::fs::write(bed.plugin.state_file(), &trove_written).unwrap();
    bed.plugin.spawn();
    let logs = bed.plugin.logs();
    assert!(
        logs.contains("networks=1"),
        "the Trove-written file is read:\n{logs}"
    );
    run_serve_and_remove(&bed).await;
    let logs = bed.plugin.logs();
    assert!(!logs.contains("corrupt"), "nothing set aside:\n{logs}");
}

/// Sends IPv6 Router Advertisements (router lifetime 1800 s, "managed" flag as on a
/// DHCPv6-stateful subnet) every 50 ms from the client end of the tenant link, as Neutron's
/// router would, until dropped. They reach the container's `eth0` as soon as Docker sets it
/// up, racing Docker's own route set-up: the race the plugin avoids by never answering
/// `GatewayIPv6`.
struct RouterAdvertiser {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl RouterAdvertiser {
    fn start(netns: &str, interface: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU32::new(0));
        let path = format!("/run/netns/{netns}");
        let interface = interface.to_owned();
        let (stop_flag, counter) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            let index = nix::net::if_::if_nametoindex(interface.as_str())
                .map_err(|e| format!("{interface}: {e}"))?;
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
                .map_err(|e| format!("raw ICMPv6 socket: {e}"))?;
            socket
                .set_multicast_hops_v6(255)
                .and_then(|()| socket.set_multicast_if_v6(index))
                .map_err(|e| format!("socket options: {e}"))?;
            let all_nodes = SockAddr::from(SocketAddrV6::new(
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                0,
                0,
                index,
            ));
            // Type 134, code 0, checksum (the kernel fills it), hop limit 64, flags M,
            // router lifetime 1800 s, reachable time 0, retransmit timer 0.
            let advertisement: [u8; 16] =
                [134, 0, 0, 0, 64, 0x80, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
            let started = Instant::now();
            while !stop_flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300)
            {
                // Fails while the link has no carrier (the VM end is down until Docker sets the
                // NIC up in the container): keep trying, as a router would.
                if socket.send_to(&advertisement, &all_nodes).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops it; panics with its error if sending failed.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .unwrap_or_else(|_| Err("the advertiser panicked".into()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for RouterAdvertiser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_tenant_network_comes_up_with_its_address_and_routes_while_routers_advertise() {
    let bed = HostnicBed::start_with_ipv6().await;
    let port = &bed.port;
    let network = bed.network_spec();
    assert!(network.enable_ipv6(), "{network:?}");
    bed.create_network().await;

    let advertiser = RouterAdvertiser::start(port.client_netns(), &port.client_if);
    let container = ContainerGuard::new(unique_name("nthn-db6"));
    let info = bed
        .run_healthy(&bed.database_spec(container.name(), RestartPolicy::No))
        .await;
    assert_container_has_the_nic(&info, port);
    let pid = info.pid.unwrap();
    let addresses = ip_in_container(pid, &["-o", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        addresses.contains(&format!("inet6 {}/64", port.ipv6())),
        "{addresses}"
    );
    assert_eq!(info.networks[&bed.network].ipv6, Some(port.ipv6()));

    // The default route is the one the router advertised; Docker added none of its own.
    let started = Instant::now();
    let routes = loop {
        let routes = ip_in_container(pid, &["-6", "route", "show"]);
        if routes
            .lines()
            .any(|l| l.starts_with("default") && l.contains("proto ra"))
        {
            break routes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no RA-learnt default route in the container ({} advertisements sent, sender \
             stopped: {}):\n{routes}\n{}",
            advertiser.sent.load(Ordering::Relaxed),
            advertiser
                .thread
                .as_ref()
                .is_none_or(JoinHandle::is_finished),
            run(
                "nsenter",
                &[
                    &format!("--net=/proc/{pid}/ns/net"),
                    "sysctl",
                    "net.ipv6.conf.eth0.accept_ra",
                    "net.ipv6.conf.eth0.forwarding",
                    "net.ipv6.conf.all.forwarding",
                    "net.ipv6.conf.eth0.accept_ra_defrtr",
                    "net.ipv6.conf.eth0.disable_ipv6",
                ],
            )
            .unwrap_or_else(|e| e)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let sent = advertiser.finish();
    assert!(sent > 0);
    let defaults: Vec<&str> = routes
        .lines()
        .filter(|l| l.starts_with("default"))
        .collect();
    assert_eq!(defaults.len(), 1, "one IPv6 default route:\n{routes}");
    assert!(defaults[0].contains("via fe80::"), "{routes}");
    for expected in [
        format!("{} dev eth0", port.ipv6_cidr()),
        format!(
            "fd6f:{:x}::/64 via {} dev eth0",
            port.k,
            port.ipv6_host(0xfe)
        ),
        format!("fd70:{:x}::/64 dev eth0", port.k),
    ] {
        assert!(routes.contains(&expected), "`{expected}` in:\n{routes}");
    }

    echo_from_client(
        port.client_netns(),
        SocketAddr::new(IpAddr::V6(port.ipv6()), DB_PORT),
    );
    remove_and_expect_the_nic_back(&bed.docker, &container, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_container_is_refused_naming_the_sandbox_that_holds_the_nic() {
    let bed = HostnicBed::start().await;
    let (docker, port, plugin) = (&bed.docker, &bed.port, &bed.plugin);
    bed.create_network().await;
    let holder = ContainerGuard::new(unique_name("nthn-db"));
    let held = bed
        .run_healthy(&bed.database_spec(holder.name(), RestartPolicy::No))
        .await;
    let sandbox = held.sandbox_key.clone().unwrap();

    // A second network for the same NIC (another subnet: Docker's IPAM refuses overlaps), as a
    // leftover network of an earlier port would be.
    let second_network = unique_name("nthn-net");
    let _second_network_guard = NetworkGuard::new(&second_network);
    let mut other = network_spec(&bed.nic, plugin, &second_network);
    other.ipv4 = Some(IpamPool {
        subnet: format!("10.249.{}.0/24", port.k).parse().unwrap(),
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 249, port.k, 1))),
    });
    docker
        .ensure_hostnic_network(&other)
        .await
        .unwrap_or_else(|e| panic!("second network: {e}\nplugin log:\n{}", plugin.logs()));
    let second = ContainerGuard::new(unique_name("nthn-db"));
    let mut spec = database_spec(
        second.name(),
        &bed.image,
        &bed.nic,
        &second_network,
        RestartPolicy::No,
    );
    spec.network = NetworkAttachment::Hostnic {
        network: second_network.clone(),
        ipv4: None,
        ipv6: None,
    };
    let refused = docker
        .run(&spec)
        .await
        .expect_err("a second container cannot get the NIC another one holds");
    let message = refused.to_string();
    assert!(
        message.contains("NetworkDriver.Join") && message.contains(&sandbox.display().to_string()),
        "the error names the sandbox holding the NIC ({}): {message}",
        sandbox.display()
    );

    // The holder is unaffected.
    let info = docker.inspect(holder.name()).await.unwrap().unwrap();
    assert_eq!(info.pid, held.pid);
    assert_container_has_the_nic(&info, port);
    bed.echo_over_ipv4();
    remove_and_expect_the_nic_back(docker, &holder, port).await;
}
