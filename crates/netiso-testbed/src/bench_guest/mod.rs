//! The bench's simulated guest (parts 2 and 3 of `cargo xtask bench`), independent of the
//! provisioned one: a guest namespace running a dockerd of its own (default bridge, iptables NAT, Docker's
//! default exec root `/var/run/docker` so that Trove's plugin accepts the sandbox keys), both
//! plugins serving that dockerd, a client namespace per tenant network, and a test image
//! imported from files of this machine. Everything is removed on drop.
//!
//! ```text
//!  [client ns] 10.254.0.1/24 <== tenant veth ==> [guest ns] dockerd, plugins
//!                                                  bridged: 10.254.0.10 on the VM, DNAT to docker0
//!                                                  isolated: the NIC moved into the container
//! ```
//!
//! dockerd runs in a mount namespace of its own with a temp folder bound on
//! `/run/docker`, so its exec root, its containerd and the plugin sockets it discovers are
//! all in that folder; its data root is another temp folder.

mod trove_plugin;

use crate::host::{self as sys, ChildGuard, LinkGuard, Netns, TempDir, output};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use self::trove_plugin::TrovePlugin;

/// The tenant subnet (distinct from the harness's 10.252.0.0/24 and the management network).
pub const TENANT_SUBNET: &str = "10.254.0.0/24";
/// The client's address, also the tenant gateway (a Neutron router port).
pub const CLIENT_ADDR: &str = "10.254.0.1";
/// The database's address: the VM's tenant address (bridged) or the container's (isolated).
pub const DATABASE_ADDR: &str = "10.254.0.10";
/// The echo service standing for the database.
pub const DATABASE_PORT: u16 = 3306;
/// iperf3's port in the container.
pub const IPERF_PORT: u16 = 5201;

/// Which way the database container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Docker's bridge, ports published through DNAT on the VM's tenant address.
    Bridged,
    /// The tenant NIC handed to the container by our plugin.
    IsolatedOurs,
    /// The tenant NIC handed to the container by Trove's plugin.
    IsolatedTrove,
}

impl Mode {
    /// How the report names the mode.
    pub fn label(self) -> &'static str {
        match self {
            Self::Bridged => "bridged (DNAT)",
            Self::IsolatedOurs => "isolated, our plugin",
            Self::IsolatedTrove => "isolated, Trove's plugin",
        }
    }
}

/// The running bench guest.
pub struct BenchGuest {
    image: String,
    host: String,
    mac: String,
    our_driver: String,
    trove_driver: String,
    containers: std::cell::RefCell<Vec<String>>,
    // Dropped in this order: plugins, dockerd, then the namespaces, then the folder.
    _our_plugin: ChildGuard,
    _trove_plugin: ChildGuard,
    _dockerd: ChildGuard,
    guest: Netns,
    dir: TempDir,
}

impl BenchGuest {
    /// Creates the namespaces, starts dockerd and both plugins (our `docker-hostnic` binary
    /// and Trove's, as `trove` says), imports the test image.
    pub fn start(our_plugin: &Path, trove: &TrovePlugin) -> Result<Self> {
        let dir = TempDir::create()?;
        let guest = Netns::create("ntbg")?;
        let pid = std::process::id();
        let mac = format!("fa:16:3e:c0:{:02x}:{:02x}", (pid >> 8) & 0xff, pid & 0xff);
        let run_docker = dir.path().join("run-docker");
        std::fs::create_dir_all(run_docker.join("plugins"))?;
        let socket = dir.path().join("docker.sock");
        let host = format!("unix://{}", socket.display());

        // Its own (empty) daemon.json: this machine's /etc/docker/daemon.json, if any, is not
        // the bench's configuration.
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}\n")?;
        let script = format!(
            "mkdir -p /run/docker && mount --bind {} /run/docker && exec dockerd \
             --config-file {} --data-root {} -H {host} --pidfile {} --log-level warn",
            run_docker.display(),
            config.display(),
            dir.path().join("docker-data").display(),
            dir.path().join("docker.pid").display(),
        );
        // `nsenter --net` + `unshare --mount` rather than `ip netns exec`: the latter remounts
        // /sys, which hides the cgroup mounts dockerd needs. The mount namespace is a slave
        // of this machine's: nothing mounted inside (the bind, overlays, netns files) leaks out.
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", guest.name()))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--"])
            .args(["sh", "-c", &script]);
        let mut dockerd = ChildGuard::spawn(
            "the bench dockerd",
            command,
            &dir.path().join("dockerd.log"),
            true,
        )?;
        let up = sys::poll(Duration::from_secs(60), Duration::from_millis(200), || {
            if !dockerd.is_running() {
                return Some(false);
            }
            output(
                "docker",
                &["-H", &host, "version", "--format", "{{.Server.Version}}"],
            )
            .ok()
            .map(|_| true)
        });
        if up != Some(true) {
            bail!(
                "the bench dockerd did not answer within 60 s; log:\n{}",
                tail(&dir.path().join("dockerd.log"))
            );
        }

        fast_arp(guest.name(), "docker0")?;
        let our_driver = sys::unique("ntbours");
        let trove_driver = sys::unique("ntbtrove");
        let eth1 = eth1_json(&mac);
        std::fs::write(dir.path().join("eth1.json"), &eth1)?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", guest.name()])
            .arg(our_plugin)
            .arg("--socket")
            .arg(
                run_docker
                    .join("plugins")
                    .join(format!("{our_driver}.sock")),
            )
            .arg("--state-file")
            .arg(dir.path().join("hostnic.json"))
            .arg("--tenant-nic-file")
            .arg(dir.path().join("eth1.json"));
        let our_plugin = ChildGuard::spawn(
            "our plugin (bench guest)",
            command,
            &dir.path().join("ours.log"),
            true,
        )?;
        let trove_plugin = trove.start(
            guest.name(),
            &dir,
            &eth1,
            &run_docker
                .join("plugins")
                .join(format!("{trove_driver}.sock")),
            &dir.path().join("trove.log"),
        )?;
        for driver in [&our_driver, &trove_driver] {
            let sock = run_docker.join("plugins").join(format!("{driver}.sock"));
            if sys::poll(Duration::from_secs(60), Duration::from_millis(100), || {
                sock.exists().then_some(())
            })
            .is_none()
            {
                bail!(
                    "the plugin {driver} did not create {} within 60 s",
                    sock.display()
                );
            }
        }

        let image = format!("netiso-bench:{}", sys::unique("t"));
        import_image(&dir, &host, &image)?;
        Ok(Self {
            image,
            host,
            mac,
            our_driver,
            trove_driver,
            containers: std::cell::RefCell::new(Vec::new()),
            _our_plugin: our_plugin,
            _trove_plugin: trove_plugin,
            _dockerd: dockerd,
            guest,
            dir,
        })
    }

    /// Runs the docker CLI against the bench dockerd.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-H", self.host.as_str()];
        full.extend_from_slice(args);
        output("docker", &full)
    }

    /// A temp folder for logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prepares the tenant network for `mode`: a client namespace and a fresh veth pair (in the
    /// isolated modes the guest end has the tenant MAC and a Docker network of the plugin's
    /// driver names it; on the bridged VM the guest end carries the VM's tenant address).
    /// Removed when the returned guard drops.
    pub fn tenant(&self, mode: Mode) -> Result<Tenant<'_>> {
        let client = Netns::create("ntbc")?;
        let guest_if = sys::unique("ntbt");
        let client_if = sys::unique("ntbk");
        sys::ip(&[
            "-n",
            client.name(),
            "link",
            "add",
            &client_if,
            "type",
            "veth",
            "peer",
            "name",
            &guest_if,
            "netns",
            self.guest.name(),
        ])?;
        let link = LinkGuard::new(client.name(), &client_if);
        let g = self.guest.name();
        let c = client.name();
        sys::ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            &client_if,
        ])?;
        sys::ip(&["-n", c, "link", "set", "dev", &client_if, "up"])?;
        fast_arp(c, &client_if)?;
        let network = match mode {
            Mode::Bridged => {
                // Not the tenant MAC: an isolated tenant may exist at the same time.
                sys::ip(&[
                    "-n",
                    g,
                    "addr",
                    "add",
                    &format!("{DATABASE_ADDR}/24"),
                    "dev",
                    &guest_if,
                ])?;
                sys::ip(&["-n", g, "link", "set", "dev", &guest_if, "up"])?;
                None
            }
            Mode::IsolatedOurs | Mode::IsolatedTrove => {
                sys::ip(&[
                    "-n", g, "link", "set", "dev", &guest_if, "address", &self.mac,
                ])?;
                let driver = if mode == Mode::IsolatedOurs {
                    &self.our_driver
                } else {
                    &self.trove_driver
                };
                let name = sys::unique("ntbnet");
                self.docker(&[
                    "network",
                    "create",
                    "-d",
                    driver,
                    "--subnet",
                    TENANT_SUBNET,
                    "--gateway",
                    CLIENT_ADDR,
                    "-o",
                    &format!("hostnic_mac={}", self.mac),
                    &name,
                ])
                .with_context(|| format!("creating the {} network", mode.label()))?;
                Some(name)
            }
        };
        Ok(Tenant {
            guest: self,
            mode,
            network,
            containers: std::cell::RefCell::new(Vec::new()),
            _link: link,
            client,
        })
    }

    /// Removes a container (SIGKILL); errors are reported, not returned (used in cleanup).
    pub fn remove(&self, name: &str) {
        if let Err(e) = self.docker(&["rm", "-f", name]) {
            eprintln!("cleanup: {e}");
        }
        self.containers.borrow_mut().retain(|c| c != name);
    }

    /// Whether the tenant NIC is back in the guest namespace (after an isolated container).
    pub fn nic_is_home(&self) -> bool {
        output("ip", &["-n", self.guest.name(), "-o", "link", "show"])
            .is_ok_and(|links| links.contains(&self.mac))
    }
}

impl Drop for BenchGuest {
    fn drop(&mut self) {
        let left: Vec<String> = self.containers.borrow().clone();
        for name in left {
            self.remove(&name);
        }
    }
}

/// A mode's tenant network; the Docker network and the veth pair go when it drops.
pub struct Tenant<'a> {
    guest: &'a BenchGuest,
    /// The mode.
    pub mode: Mode,
    network: Option<String>,
    containers: std::cell::RefCell<Vec<String>>,
    // Dropped in this order: the veth pair, then the client namespace.
    _link: LinkGuard,
    client: Netns,
}

impl Tenant<'_> {
    /// A command run in this tenant's client namespace (the bench's probes).
    pub fn in_client(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.client.name(), program])
            .args(args);
        command
    }

    /// The client namespace.
    pub fn client_netns(&self) -> &str {
        self.client.name()
    }

    /// `docker run -d` of the test image in this mode; returns the container's name.
    pub fn run_container(&self) -> Result<String> {
        let name = sys::unique("ntbdb");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name.as_str(),
            "--label",
            "netiso-bench=1",
        ];
        let db_port = format!("{DATABASE_PORT}:{DATABASE_PORT}");
        let iperf_port = format!("{IPERF_PORT}:{IPERF_PORT}");
        match &self.network {
            None => args.extend(["-p", db_port.as_str(), "-p", iperf_port.as_str()]),
            Some(network) => args.extend(["--network", network.as_str(), "--ip", DATABASE_ADDR]),
        }
        args.push(&self.guest.image);
        self.guest.containers.borrow_mut().push(name.clone());
        self.containers.borrow_mut().push(name.clone());
        self.guest
            .docker(&args)
            .with_context(|| format!("docker run ({})", self.mode.label()))?;
        Ok(name)
    }

    /// Removes a container and, in the isolated modes, waits until Docker has given the NIC
    /// back to the guest namespace (so the next run can take it).
    pub fn remove_container(&self, name: &str) -> Result<()> {
        self.guest.remove(name);
        self.containers.borrow_mut().retain(|c| c != name);
        if self.network.is_some()
            && sys::poll(Duration::from_secs(20), Duration::from_millis(50), || {
                self.guest.nic_is_home().then_some(())
            })
            .is_none()
        {
            bail!("the tenant NIC did not come back to the guest within 20 s");
        }
        Ok(())
    }

    /// The host pid of a container's main process.
    pub fn container_pid(&self, name: &str) -> Result<u32> {
        let pid = self
            .guest
            .docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
        pid.trim()
            .parse()
            .with_context(|| format!("bad pid {pid:?} for {name}"))
    }
}

impl Drop for Tenant<'_> {
    fn drop(&mut self) {
        let left: Vec<String> = self.containers.borrow().clone();
        for name in left {
            self.guest.remove(&name);
        }
        if let Some(network) = &self.network
            && let Err(e) = self.guest.docker(&["network", "rm", network])
        {
            eprintln!("cleanup: {e}");
        }
    }
}

/// The probes poll an address before it exists (the container is starting): its neighbour
/// entry goes unresolved and, with the default 1 s ARP retransmit time, the first answer would
/// wait up to 1 s for the next ARP request, in every mode. 20 ms on the two links that resolve
/// the database's address (the client's, and docker0 for the bridged container) keeps that
/// artefact of polling out of the figures. Both are in the bench's own namespaces.
fn fast_arp(netns: &str, link: &str) -> Result<()> {
    sys::ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-qw",
        &format!("net.ipv4.neigh.{link}.retrans_time_ms=20"),
    ])
}

fn eth1_json(mac: &str) -> String {
    format!(
        r#"{{"mac_address": "{mac}", "ipv4_address": "{DATABASE_ADDR}", "ipv4_cidr": "{TENANT_SUBNET}", "ipv4_gateway": "{CLIENT_ADDR}", "ipv4_host_routes": []}}"#
    )
}

/// Imports the test image: busybox (static) for `sh`, `cat` and an echo server on the
/// database port, and this machine's iperf3 with the libraries `ldd` names, at their paths.
fn import_image(dir: &TempDir, host: &str, image: &str) -> Result<()> {
    let rootfs = dir.path().join("rootfs");
    for sub in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("cannot copy /bin/busybox (Debian package busybox-static)")?;
    for applet in ["sh", "cat", "nc"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let iperf3 = "/usr/bin/iperf3";
    let mut files = vec![PathBuf::from(iperf3)];
    let ldd = output("ldd", &[iperf3]).context("iperf3 is needed (Debian package iperf3)")?;
    for line in ldd.lines() {
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    for file in &files {
        let inside = rootfs.join(file.strip_prefix("/").unwrap_or(file));
        if let Some(parent) = inside.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(file, &inside).with_context(|| format!("cannot copy {}", file.display()))?;
    }
    sys_chmod_tmp(&rootfs.join("tmp"))?;
    let tar = dir.path().join("rootfs.tar");
    output(
        "tar",
        &[
            "-C",
            &rootfs.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    )?;
    let cmd = format!(
        r#"CMD ["/bin/sh", "-c", "/bin/nc -ll -p {DATABASE_PORT} -e /bin/cat & exec /usr/bin/iperf3 -s -p {IPERF_PORT}"]"#
    );
    output(
        "docker",
        &[
            "-H",
            host,
            "import",
            "--change",
            &cmd,
            &tar.display().to_string(),
            image,
        ],
    )
    .context("docker import of the test image")?;
    Ok(())
}

fn sys_chmod_tmp(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
