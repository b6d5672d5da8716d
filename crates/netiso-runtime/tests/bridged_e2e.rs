//! `network_isolation = False` end to end: the database container on Docker's bridge in the
//! guest namespace, its port published through iptables DNAT, reached from a client
//! namespace over a tenant-like veth link. Needs root and `cargo xtask provision`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netiso_runtime::test_support::image::{PublishedImage, echo_health_check};
use netiso_runtime::test_support::net::{TenantLink, in_netns, netns_exec};
use netiso_runtime::test_support::{
    ContainerGuard, connect_docker, guest_netns, next_counter, require_root, unique_name,
};
use netiso_runtime::{ContainerRuntime, ContainerSpec, NetworkAttachment, PullPolicy};

/// How often and how long the client tries to connect (DNAT rules are in place when the
/// start call returns, so one attempt normally suffices).
const CONNECT_ATTEMPTS: u32 = 20;
const CONNECT_PAUSE: Duration = Duration::from_millis(250);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A port unlikely to be published by anyone else on the shared guest dockerd.
fn unique_port() -> u16 {
    let offset = (std::process::id()
        .wrapping_mul(3)
        .wrapping_add(next_counter()))
        % 30_000;
    u16::try_from(20_000 + offset).unwrap_or(20_000)
}

/// Connects (bounded retries), sends one line, returns the line read back.
fn exchange(target: SocketAddr, line: &str) -> Result<String, String> {
    let mut last_error = String::new();
    for _ in 0..CONNECT_ATTEMPTS {
        match TcpStream::connect_timeout(&target, IO_TIMEOUT) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                stream
                    .set_write_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(format!("{line}\n").as_bytes())
                    .map_err(|e| format!("write to {target}: {e}"))?;
                let mut reply = String::new();
                BufReader::new(&stream)
                    .read_line(&mut reply)
                    .map_err(|e| format!("read from {target}: {e}"))?;
                return Ok(reply);
            }
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(CONNECT_PAUSE);
    }
    Err(format!("cannot connect to {target}: {last_error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_database_answers_a_tenant_client_through_the_published_port() {
    require_root();
    let docker = connect_docker().await;
    let port = unique_port();
    let image = PublishedImage::publish(port).await;
    let pulled = Instant::now();
    docker
        .ensure_image(image.reference(), PullPolicy::Always, None, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("pull {:?}", pulled.elapsed());

    let link = TenantLink::create();
    let container = ContainerGuard::new(unique_name("nti-e2e"));
    let mut spec = ContainerSpec::new(
        container.name(),
        image.reference().clone(),
        NetworkAttachment::Bridged {
            published_tcp_ports: vec![port],
        },
    );
    spec.healthcheck = Some(echo_health_check(port));
    let started = Instant::now();
    docker.run(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("create+start {:?}", started.elapsed());
    let info = docker
        .wait_healthy(container.name(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("healthy after {:?}", started.elapsed());

    // Published through DNAT in the guest namespace, to the container's bridge address.
    let container_ip = info.networks["bridge"].ipv4.expect("a bridge address");
    let rules = netns_exec(&guest_netns(), &["iptables", "-t", "nat", "-S", "DOCKER"])
        .unwrap_or_else(|e| panic!("{e}"));
    let dnat = format!("--to-destination {container_ip}:{port}");
    assert!(
        rules.lines().any(|r| r.contains("-j DNAT")
            && r.contains(&format!("--dport {port} "))
            && r.contains(&dnat)),
        "no DNAT rule for port {port} to {container_ip} in:\n{rules}"
    );

    // IpcMode host: the container shares the VM's IPC namespace.
    let pid = info.pid.expect("running");
    let ipc = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/ipc")).expect("ipc ns");
    assert_eq!(ipc(&pid.to_string()), ipc("self"));

    let target = SocketAddr::new(link.guest_address.into(), port);
    let client_ns = link.client_netns().to_owned();
    let line = format!("hello from {client_ns}");
    let sent = line.clone();
    let exchanged = Instant::now();
    let reply =
        tokio::task::spawn_blocking(move || in_netns(&client_ns, move || exchange(target, &sent)))
            .await
            .expect("client thread");
    let reply = reply.and_then(|r| r).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "round trip from the client namespace {:?}",
        exchanged.elapsed()
    );
    assert_eq!(reply, format!("{line}\n"));
}
