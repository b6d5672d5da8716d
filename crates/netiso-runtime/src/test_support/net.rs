//! A tenant-like link for tests: a veth pair with one end in the guest namespace and the
//! other in a client namespace of the test's own, and a way to run code in that namespace.
//! Uses `ip` (iproute2): this is test scaffolding, not the product's netlink code.

use std::fs::File;
use std::net::Ipv4Addr;

use nix::sched::{CloneFlags, setns};

use super::{PROVISION_HINT, guest_netns, next_counter, run_command};

fn ip(args: &[&str]) -> Result<String, String> {
    run_command("ip", args)
}

/// A network namespace deleted on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Creates `/run/netns/<name>` with its loopback up.
    pub fn create(name: &str) -> Result<Self, String> {
        ip(&["netns", "add", name])?;
        let guard = Self {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(guard)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A /24 link between the guest namespace (`.1`) and a fresh client namespace (`.2`),
/// like a tenant network reaching the VM. Removed on drop (the veth first, then the
/// namespace).
#[derive(Debug)]
pub struct TenantLink {
    guest_netns: String,
    guest_if: String,
    /// The guest end's address (`10.252.<n>.1`).
    pub guest_address: Ipv4Addr,
    /// The client end's address (`10.252.<n>.2`).
    pub client_address: Ipv4Addr,
    // Dropped after the veth is deleted (field order).
    client: NetnsGuard,
}

impl TenantLink {
    /// Creates the client namespace `nti-cli-<pid>-<n>` and the veth pair, picking a
    /// `10.252.<n>.0/24` that has no route in the guest namespace yet. Panics naming the fix
    /// when the guest namespace is missing.
    pub fn create() -> Self {
        let guest = guest_netns();
        let routes = ip(&["-n", &guest, "-4", "route", "show"])
            .unwrap_or_else(|e| panic!("guest namespace `{guest}`: {e}: {PROVISION_HINT}"));
        let pid = std::process::id();
        let n = next_counter();
        let client = NetnsGuard::create(&format!("nti-cli-{pid}-{n}"))
            .unwrap_or_else(|e| panic!("creating the client namespace: {e}"));
        let third = (0..254u32)
            .map(|i| ((pid.wrapping_mul(31).wrapping_add(n).wrapping_add(i)) % 254 + 1) as u8)
            .find(|octet| !routes.contains(&format!("10.252.{octet}.0/24")))
            .unwrap_or_else(|| panic!("no free 10.252.x.0/24 in `{guest}`"));
        let tag = format!("{}{n}", pid % 100_000);
        let guest_if = format!("ntg{tag}");
        let client_if = format!("ntc{tag}");
        assert!(
            guest_if.len() <= 15 && client_if.len() <= 15,
            "interface name too long"
        );
        ip(&[
            "link",
            "add",
            &guest_if,
            "netns",
            &guest,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            client.name(),
        ])
        .unwrap_or_else(|e| panic!("creating the veth pair: {e}"));
        let link = Self {
            guest_netns: guest.clone(),
            guest_if: guest_if.clone(),
            guest_address: Ipv4Addr::new(10, 252, third, 1),
            client_address: Ipv4Addr::new(10, 252, third, 2),
            client,
        };
        let guest_cidr = format!("{}/24", link.guest_address);
        let client_cidr = format!("{}/24", link.client_address);
        for args in [
            vec![
                "-n",
                guest.as_str(),
                "addr",
                "add",
                &guest_cidr,
                "dev",
                &guest_if,
            ],
            vec!["-n", guest.as_str(), "link", "set", &guest_if, "up"],
            vec![
                "-n",
                link.client.name(),
                "addr",
                "add",
                &client_cidr,
                "dev",
                &client_if,
            ],
            vec!["-n", link.client.name(), "link", "set", &client_if, "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("configuring the tenant link: {e}"));
        }
        link
    }

    /// The client namespace.
    pub fn client_netns(&self) -> &str {
        self.client.name()
    }

    /// The guest end's interface name.
    pub fn guest_interface(&self) -> &str {
        &self.guest_if
    }
}

impl Drop for TenantLink {
    fn drop(&mut self) {
        if let Err(e) = ip(&["-n", &self.guest_netns, "link", "del", &self.guest_if]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs `work` on a new thread that has joined the network namespace `netns`, so sockets it
/// opens live there; the calling thread's namespace is untouched.
pub fn in_netns<T, F>(netns: &str, work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        Ok(work())
    })
    .join()
    .map_err(|_| format!("the thread in {netns} panicked"))?
}

/// Runs `ip netns exec <netns> <args>` and returns stdout, for checks such as
/// `iptables -t nat -S DOCKER`.
pub fn netns_exec(netns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", netns];
    all.extend_from_slice(args);
    ip(&all)
}
