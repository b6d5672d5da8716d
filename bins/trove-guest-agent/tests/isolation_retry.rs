//! A failed start-up isolation is retried while RPC is served and the database stays down:
//! the tenant NIC named in `eth1.json` appears in the simulated guest only after a delay.
//! Needs root and `cargo xtask provision`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{AgentSetup, RunningAgent, args, wait_for_ping};
use netiso_messaging::Context;
use netiso_netlink::test_support::{TestNamespace, unique_link_name};
use netiso_netlink::{NetlinkHandle, Rtnetlink};
use netiso_runtime::test_support::{guest_netns, next_counter};
use serde_json::json;

/// A veth in the simulated guest (its peer in a throwaway namespace), deleted on drop.
struct LateNic {
    name: String,
    _peer_namespace: TestNamespace,
}

impl LateNic {
    fn create(mac: &str) -> Self {
        let peer_namespace = TestNamespace::new();
        let name = unique_link_name("lt");
        let status = Command::new("ip")
            .args(["-n", &guest_netns(), "link", "add", &name, "address", mac])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                peer_namespace.name(),
            ])
            .status()
            .expect("run ip");
        assert!(status.success(), "cannot create the late tenant NIC");
        let ip = |args: &[&str]| {
            let status = Command::new("ip")
                .args(["-n", &guest_netns()])
                .args(args)
                .status()
                .expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        // As cloud-init would leave it: up, addressed.
        ip(&["addr", "add", "10.98.0.5/24", "dev", &name]);
        ip(&["link", "set", &name, "up"]);
        Self {
            name,
            _peer_namespace: peer_namespace,
        }
    }
}

impl Drop for LateNic {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &guest_netns(), "link", "del", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_is_retried_until_the_tenant_nic_appears() {
    let mac = format!(
        "02:5e:{:02x}:{:02x}:00:01",
        std::process::id() % 256,
        next_counter() % 256
    );
    let mut setup = AgentSetup::new("retry", None);
    setup.network_isolation = true;
    setup.tenant_nic_json = Some(format!(
        "{{\"mac_address\": \"{mac}\", \"ipv4_address\": \"10.98.0.5\", \
         \"ipv4_cidr\": \"10.98.0.0/24\", \"ipv4_gateway\": null, \"ipv4_host_routes\": []}}"
    ));
    // 200 ms doubling to 1 s between attempts, 40 attempts: enough for the delay below.
    let run = RunningAgent::start_with(
        &setup,
        &[
            "--isolation-attempts",
            "40",
            "--isolation-retry-initial-ms",
            "200",
            "--isolation-retry-max-s",
            "1",
        ],
    )
    .await;
    let (client, target) = (&run.client, &run.target);

    // RPC answers while isolation is failing; the database may not be touched.
    wait_for_ping(client, target, &run.agent).await;
    let refused = client
        .call(
            target,
            "restart",
            args(json!({})),
            &Context::fresh(),
            Duration::from_secs(15),
        )
        .await
        .expect_err("restart is refused while isolation is pending");
    assert!(
        refused.to_string().contains("isolation pending"),
        "{refused}"
    );

    // The NIC appears 2 s in (late udev, a hot-plugged port).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nic = LateNic::create(&mac);
    let appeared = Instant::now();
    let guest = NetlinkHandle::in_named(&guest_netns()).expect("guest namespace");
    let deadline = appeared + Duration::from_secs(15);
    loop {
        let link = guest.link_by_name(&nic.name).expect("the late NIC");
        let addresses = guest.addresses(Some(link.index)).expect("addresses");
        if !link.up && addresses.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not isolated 15 s after it appeared\n{}",
            run.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("isolated {:?} after the NIC appeared", appeared.elapsed());

    // Once isolated, the database gate is open: restart no longer says "pending".
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = client
            .call(
                target,
                "restart",
                args(json!({})),
                &Context::fresh(),
                Duration::from_secs(30),
            )
            .await;
        match answer {
            Err(e) if e.to_string().contains("isolation pending") => {
                assert!(Instant::now() < deadline, "the gate never opened: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    let log = run.agent.log_text();
    assert!(
        log.contains("isolation failed; the database stays down until it succeeds"),
        "{log}"
    );
    assert!(
        log.contains("tenant NIC isolated from the VM after retrying"),
        "{log}"
    );
    assert!(
        log.contains("isolation guard running; the database may start"),
        "{log}"
    );
    run.finish().await;
}
