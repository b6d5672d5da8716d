//! The simulated guest's fixed part: a management network namespace and a guest VM namespace
//! joined by the management veth. This machine's own interfaces and routes are never touched.
//!
//! ```text
//!  this machine (loopback: RabbitMQ, registry)
//!        ^ unix-socket forwarders (services.rs)
//!  [netiso-mgmt] nimgmt-gw 10.251.0.1/24 <==veth==> mgmt0 10.251.0.10/24 [netiso-guest]
//!                                                    dockerd, containerd, plugin, agent
//! ```
//!
//! Tenant NICs are not made here: each test or harness run creates its own and removes it.

use crate::layout::{
    GUEST_MGMT_ADDR, GUEST_MGMT_IF, GUEST_NETNS, MGMT_GATEWAY_ADDR, MGMT_GATEWAY_IF, MGMT_NETNS,
    MGMT_PREFIX_LEN,
};
use crate::sh::{output, run, say, succeeds};
use anyhow::Result;

/// Creates whatever part of the topology is missing.
pub fn ensure() -> Result<()> {
    for netns in [MGMT_NETNS, GUEST_NETNS] {
        ensure_netns(netns)?;
    }
    if !link_exists(MGMT_NETNS, MGMT_GATEWAY_IF) || !link_exists(GUEST_NETNS, GUEST_MGMT_IF) {
        // A half-made pair (one end lost) is removed and made again.
        for (netns, link) in [(MGMT_NETNS, MGMT_GATEWAY_IF), (GUEST_NETNS, GUEST_MGMT_IF)] {
            if link_exists(netns, link) {
                run("ip", &["-n", netns, "link", "del", link])?;
            }
        }
        run(
            "ip",
            &[
                "-n",
                MGMT_NETNS,
                "link",
                "add",
                MGMT_GATEWAY_IF,
                "type",
                "veth",
                "peer",
                "name",
                GUEST_MGMT_IF,
                "netns",
                GUEST_NETNS,
            ],
        )?;
    }
    ensure_address(MGMT_NETNS, MGMT_GATEWAY_IF, MGMT_GATEWAY_ADDR)?;
    ensure_address(GUEST_NETNS, GUEST_MGMT_IF, GUEST_MGMT_ADDR)?;
    for (netns, link) in [
        (MGMT_NETNS, "lo"),
        (MGMT_NETNS, MGMT_GATEWAY_IF),
        (GUEST_NETNS, "lo"),
        (GUEST_NETNS, GUEST_MGMT_IF),
    ] {
        run("ip", &["-n", netns, "link", "set", link, "up"])?;
    }
    say(&format!(
        "  {MGMT_NETNS} {MGMT_GATEWAY_IF} {MGMT_GATEWAY_ADDR} <-> {GUEST_NETNS} {GUEST_MGMT_IF} {GUEST_MGMT_ADDR}"
    ));
    Ok(())
}

fn ensure_netns(name: &str) -> Result<()> {
    let listed = output("ip", &["netns", "list"])?;
    if listed
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
    {
        say(&format!("  netns {name} present"));
        return Ok(());
    }
    run("ip", &["netns", "add", name])
}

fn link_exists(netns: &str, link: &str) -> bool {
    succeeds("ip", &["-n", netns, "link", "show", "dev", link])
}

fn ensure_address(netns: &str, link: &str, addr: &str) -> Result<()> {
    let shown = output("ip", &["-n", netns, "-o", "addr", "show", "dev", link])?;
    let cidr = format!("{addr}/{MGMT_PREFIX_LEN}");
    if shown.split_whitespace().any(|word| word == cidr) {
        return Ok(());
    }
    run("ip", &["-n", netns, "addr", "add", &cidr, "dev", link])
}
