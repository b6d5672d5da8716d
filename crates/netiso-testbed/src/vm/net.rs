//! The cloud around one VM, built from namespaces this run owns (nothing of this machine's own
//! network is touched, and QEMU's user-mode networking, which would reach it, is not used):
//!
//! ```text
//!  [nvm-<pid>]  QEMU
//!     vmtap-m 10.254.0.1/24  dnsmasq (management DHCP), forwarders to RabbitMQ and the registry
//!     vmtap-t ─┐
//!              vmbr-t (bridge) ── vmbrp-t <==veth==> vmcli0 10.252.0.1/24 [nvm-cli-<pid>]
//!                                                     dnsmasq (tenant DHCP), the tenant client
//! ```
//!
//! The management side plays Trove's control plane network (the broker and the registry at
//! 10.254.0.1, reached through the provisioned loopback forwarders); the tenant side plays a
//! Neutron tenant network whose router is the client namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use netiso_netlink::{MacAddress, Namespace};

use crate::net::run_ip;
use crate::processes::GuestProcess;

/// The VM's management subnet: the control plane at `.1`, the VM at `.10`.
pub const MGMT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
/// The VM's management address (a fixed DHCP lease).
pub const VM_MGMT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 10);
/// The tenant subnet's router (the client namespace).
pub const TENANT_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
/// The tenant port's address (a fixed DHCP lease, also in `eth1.json`).
pub const VM_TENANT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 10);
/// The tenant subnet.
pub const TENANT_CIDR: &str = "10.252.0.0/24";
/// QEMU's tap for the management NIC, inside the VM namespace.
pub const MGMT_TAP: &str = "vmtap-m";
/// QEMU's tap for the tenant NIC, inside the VM namespace.
pub const TENANT_TAP: &str = "vmtap-t";
/// The ports the VM reaches on its control plane (AMQP, AMQPS, the registry).
pub const CONTROL_PLANE_PORTS: [u16; 3] = [5672, 5671, 5000];

/// The namespaces, links and DHCP servers of one VM run; removed on drop.
#[derive(Debug)]
pub struct VmNetwork {
    /// Where QEMU runs.
    pub vm_netns: String,
    /// The tenant client's namespace.
    pub client_netns: String,
    /// The management NIC's MAC.
    pub mgmt_mac: MacAddress,
    /// The tenant NIC's MAC (what `eth1.json` names).
    pub tenant_mac: MacAddress,
    services: Vec<GuestProcess>,
}

impl VmNetwork {
    /// Builds both networks and starts DHCP on each and the control-plane forwarders.
    /// `run_dir` holds the DHCP leases and logs; `forwarder_socket` names the provisioned
    /// loopback side of a forwarded port.
    pub fn create(run_dir: &Path, forwarder_socket: impl Fn(u16) -> PathBuf) -> Result<Self> {
        let pid = std::process::id();
        let mut this = Self {
            vm_netns: format!("nvm-{pid}"),
            client_netns: format!("nvm-cli-{pid}"),
            mgmt_mac: MacAddress::new([0x52, 0x54, 0x00, 0x25, (pid >> 8) as u8, pid as u8]),
            tenant_mac: MacAddress::new([0xfa, 0x16, 0x3e, 0x25, (pid >> 8) as u8, pid as u8]),
            services: Vec::new(),
        };
        for netns in [&this.vm_netns, &this.client_netns] {
            if Path::new("/run/netns").join(netns).exists() {
                // Our own pid: a leftover of this very process; remove it so the run goes on.
                let _ = Namespace::delete(netns);
            }
            Namespace::create(netns).with_context(|| format!("creating namespace {netns}"))?;
        }
        let vm = this.vm_netns.clone();
        let client = this.client_netns.clone();
        for tap in [MGMT_TAP, TENANT_TAP] {
            run_ip(&["-n", &vm, "tuntap", "add", "dev", tap, "mode", "tap"])?;
        }
        run_ip(&["-n", &vm, "link", "add", "vmbr-t", "type", "bridge"])?;
        run_ip(&[
            "-n", &vm, "link", "add", "vmbrp-t", "type", "veth", "peer", "name", "vmcli0", "netns",
            &client,
        ])?;
        run_ip(&["-n", &vm, "link", "set", TENANT_TAP, "master", "vmbr-t"])?;
        run_ip(&["-n", &vm, "link", "set", "vmbrp-t", "master", "vmbr-t"])?;
        run_ip(&[
            "-n",
            &vm,
            "addr",
            "add",
            &format!("{MGMT_GATEWAY}/24"),
            "dev",
            MGMT_TAP,
        ])?;
        run_ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{TENANT_ROUTER}/24"),
            "dev",
            "vmcli0",
        ])?;
        for link in ["lo", MGMT_TAP, TENANT_TAP, "vmbr-t", "vmbrp-t"] {
            run_ip(&["-n", &vm, "link", "set", link, "up"])?;
        }
        for link in ["lo", "vmcli0"] {
            run_ip(&["-n", &client, "link", "set", link, "up"])?;
        }
        this.services.push(dhcp_server(
            "management DHCP",
            &vm,
            MGMT_TAP,
            this.mgmt_mac,
            VM_MGMT_ADDR,
            MGMT_GATEWAY,
            run_dir,
        )?);
        this.services.push(dhcp_server(
            "tenant DHCP",
            &client,
            "vmcli0",
            this.tenant_mac,
            VM_TENANT_ADDR,
            TENANT_ROUTER,
            run_dir,
        )?);
        for port in CONTROL_PLANE_PORTS {
            let socket = forwarder_socket(port);
            if !socket.exists() {
                bail!(
                    "the loopback side of the forwarder for port {port} ({}) is missing: run `cargo xtask provision`",
                    socket.display()
                );
            }
            this.services.push(GuestProcess::start(
                &format!("forwarder {MGMT_GATEWAY}:{port}"),
                &vm,
                Path::new("/usr/bin/socat"),
                &[
                    format!("TCP-LISTEN:{port},bind={MGMT_GATEWAY},fork,reuseaddr"),
                    format!("UNIX-CONNECT:{}", socket.display()),
                ],
                &run_dir.join(format!("forward-{port}.log")),
            )?);
        }
        Ok(this)
    }

    /// The tenant DHCP server's leases (what the VM asked for on the tenant network).
    pub fn tenant_leases(run_dir: &Path) -> PathBuf {
        run_dir.join("vmcli0.leases")
    }
}

impl Drop for VmNetwork {
    fn drop(&mut self) {
        self.services.clear();
        for netns in [&self.client_netns, &self.vm_netns] {
            if let Err(e) = Namespace::delete(netns) {
                eprintln!("cleanup: removing namespace {netns}: {e}");
            }
        }
    }
}

/// dnsmasq as Neutron's DHCP agent runs it: one fixed lease per port, no DNS.
fn dhcp_server(
    name: &str,
    netns: &str,
    interface: &str,
    mac: MacAddress,
    addr: Ipv4Addr,
    router: Ipv4Addr,
    run_dir: &Path,
) -> Result<GuestProcess> {
    GuestProcess::start(
        name,
        netns,
        Path::new("/usr/sbin/dnsmasq"),
        &[
            "--keep-in-foreground".to_owned(),
            "--log-dhcp".to_owned(),
            "--log-facility=-".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--port=0".to_owned(),
            "--user=root".to_owned(),
            "--bind-interfaces".to_owned(),
            format!("--interface={interface}"),
            format!("--dhcp-range={addr},static,255.255.255.0,1h"),
            format!("--dhcp-host={mac},{addr}"),
            format!("--dhcp-option=option:router,{router}"),
            format!(
                "--dhcp-leasefile={}",
                run_dir.join(format!("{interface}.leases")).display()
            ),
            format!(
                "--pid-file={}",
                run_dir.join(format!("{interface}.pid")).display()
            ),
        ],
        &run_dir.join(format!("dhcp-{interface}.log")),
    )
}
