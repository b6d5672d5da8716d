//! Shared scaffolding of the end-to-end tests: the real guest dockerd (namespace
//! `netiso-guest`), OUR plugin binary inside that namespace under a per-test name, a veth
//! standing for the tenant NIC (VM end in the guest, peer in a client namespace of the test's
//! own), `eth1.json` rendered by netiso-config, and a line-echo "database" from netiso-runtime's
//! test support. Every helper panics naming the fix when something is missing (never skips);
//! every guard removes what it made, also when the test fails.
#![allow(dead_code)] // Each test binary uses a part of it.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a test failure.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netiso_config::render::{FixedIp, UserPort};
use netiso_config::tenant_nic::{HostRoute, MacAddress, TenantNic};
use netiso_runtime::test_support::image::{PublishedImage, echo_health_check};
use netiso_runtime::test_support::net::{NetnsGuard, in_netns};
use netiso_runtime::test_support::{
    NetworkGuard, PROVISION_HINT, docker_host, guest_netns, next_counter, require_root, unique_name,
};
use netiso_runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, DockerRuntime, HostnicNetworkSpec,
    NetworkAttachment, NetworkStatus, PullPolicy, RestartPolicy,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// OUR plugin binary, built by cargo for this test.
pub const PLUGIN_BINARY: &str = env!("CARGO_BIN_EXE_docker-hostnic");
/// The port the test database (echo server) listens on in the container.
pub const DB_PORT: u16 = 3306;
/// Where dockerd discovers legacy plugins by socket name.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// How long a container may take to become healthy on the loaded 2-core machine.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

pub use netiso_runtime::test_support::run_command as run;

/// The `docker` CLI against the guest dockerd.
pub fn docker_cli(args: &[&str]) -> Result<String, String> {
    let host = docker_host();
    let mut all = vec!["-H", host.as_str()];
    all.extend_from_slice(args);
    run("docker", &all)
}

/// `ip <args>` inside the network namespace of a running container (by its pid).
pub fn ip_in_container(pid: u32, args: &[&str]) -> String {
    let netns = format!("--net=/proc/{pid}/ns/net");
    let mut all = vec![netns.as_str(), "ip"];
    all.extend_from_slice(args);
    run("nsenter", &all).unwrap_or_else(|e| panic!("in the container: {e}"))
}

/// Root, the guest namespace, the guest dockerd and the `docker` CLI, or a panic naming the fix.
pub async fn setup() -> DockerRuntime {
    require_root();
    let guest = guest_netns();
    assert!(
        Path::new(&format!("/run/netns/{guest}")).exists(),
        "the guest namespace `{guest}` is missing: {PROVISION_HINT}"
    );
    docker_cli(&["version", "--format", "{{.Server.Version}}"]).unwrap_or_else(|e| {
        panic!("the docker CLI cannot reach the guest dockerd: {e}: {PROVISION_HINT}")
    });
    netiso_runtime::test_support::connect_docker().await
}

/// `<pid % 100000><n>`: short enough for interface names.
fn short_tag(n: u32) -> String {
    format!("{}{n}", std::process::id() % 100_000)
}

/// A veth standing for the VM's tenant NIC after isolation: its VM end (fixed MAC
/// `fa:16:3e:…`, down, no address) in the guest namespace, its peer (the tenant network's
/// other side) in a client namespace of its own with `.2` of the subnet. The port's fixed IP
/// is `.5`, its gateway `.1`.
#[derive(Debug)]
pub struct TenantPort {
    guest_netns: String,
    /// The VM end's name in the guest namespace.
    pub vm_if: String,
    /// The client end's name.
    pub client_if: String,
    /// The Neutron port's MAC (the VM end's MAC).
    pub mac: MacAddress,
    /// Third octet of the port's `10.253.<k>.0/24`.
    pub k: u8,
    /// `fd6e:7468:<pid>:<n>::/64`, the port's IPv6 subnet.
    pub ipv6_prefix: [u16; 4],
    // Dropped after the veth (field order): deleting it destroys the pair wherever the VM end is.
    client: NetnsGuard,
}

impl TenantPort {
    /// Creates the client namespace `nthn-cli-<pid>-<n>` and the veth pair.
    pub fn create() -> Self {
        let guest = guest_netns();
        let pid = std::process::id();
        let n = next_counter();
        let client = NetnsGuard::create(&format!("nthn-cli-{pid}-{n}"))
            .unwrap_or_else(|e| panic!("creating the client namespace: {e}"));
        let tag = short_tag(n);
        let vm_if = format!("nthv{tag}");
        let client_if = format!("nthc{tag}");
        assert!(vm_if.len() <= 15, "interface name too long: {vm_if}");
        let mac = MacAddress::new([
            0xfa,
            0x16,
            0x3e,
            (pid >> 8) as u8,
            pid as u8,
            (n as u8).wrapping_add(0x40),
        ]);
        let k = ((pid.wrapping_mul(7).wrapping_add(n)) % 250 + 1) as u8;
        let port = Self {
            guest_netns: guest.clone(),
            vm_if: vm_if.clone(),
            client_if: client_if.clone(),
            mac,
            k,
            ipv6_prefix: [0xfd6e, 0x7468, (pid & 0xffff) as u16, n as u16],
            client,
        };
        let mac_text = mac.to_string();
        run(
            "ip",
            &[
                "link",
                "add",
                &vm_if,
                "address",
                &mac_text,
                "netns",
                &guest,
                "type",
                "veth",
                "peer",
                "name",
                &client_if,
                "netns",
                port.client.name(),
            ],
        )
        .unwrap_or_else(|e| panic!("creating the tenant veth: {e}"));
        let ns = port.client.name().to_owned();
        let dad = format!("net.ipv6.conf.{client_if}.accept_dad=0");
        let v4 = format!("{}/24", port.client_ipv4());
        let v6 = format!("{}/64", port.client_ipv6());
        for args in [
            vec!["netns", "exec", &ns, "sysctl", "-q", "-w", &dad],
            vec!["-n", &ns, "addr", "add", &v4, "dev", &client_if],
            vec![
                "-n", &ns, "-6", "addr", "add", &v6, "dev", &client_if, "nodad",
            ],
            vec!["-n", &ns, "link", "set", &client_if, "up"],
        ] {
            run("ip", &args).unwrap_or_else(|e| panic!("configuring the client end: {e}"));
        }
        port
    }

    /// The client namespace.
    pub fn client_netns(&self) -> &str {
        self.client.name()
    }

    /// The port's IPv4 fixed IP (the container's address).
    pub fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 253, self.k, 5)
    }

    /// The subnet gateway.
    pub fn ipv4_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 253, self.k, 1)
    }

    /// The client's address.
    pub fn client_ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 253, self.k, 2)
    }

    /// The address `<prefix>::<host>` of the port's IPv6 subnet.
    pub fn ipv6_host(&self, host: u16) -> Ipv6Addr {
        let [a, b, c, d] = self.ipv6_prefix;
        Ipv6Addr::new(a, b, c, d, 0, 0, 0, host)
    }

    /// The port's IPv6 fixed IP.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6_host(5)
    }

    /// The client's IPv6 address.
    pub fn client_ipv6(&self) -> Ipv6Addr {
        self.ipv6_host(2)
    }

    /// The DHCPv6-stateful gateway recorded in `eth1.json`.
    pub fn ipv6_gateway(&self) -> Ipv6Addr {
        self.ipv6_host(1)
    }

    /// The IPv6 subnet in text.
    pub fn ipv6_cidr(&self) -> String {
        format!("{}/64", self.ipv6_host(0))
    }

    /// The IPv4 subnet in text.
    pub fn ipv4_cidr(&self) -> String {
        format!("10.253.{}.0/24", self.k)
    }

    /// A next-hop host route `192.168.<k>.0/24 via .254` and a connected one
    /// `172.31.<k>.0/24 via 0.0.0.0`, as Neutron lists them.
    pub fn ipv4_host_routes(&self) -> Vec<HostRoute<IpNet, IpAddr>> {
        vec![
            HostRoute {
                destination: format!("192.168.{}.0/24", self.k).parse().unwrap(),
                nexthop: IpAddr::V4(Ipv4Addr::new(10, 253, self.k, 254)),
            },
            HostRoute {
                destination: format!("172.31.{}.0/24", self.k).parse().unwrap(),
                nexthop: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        ]
    }

    /// A next-hop IPv6 host route `fd6f:<k>::/64 via <prefix>::fe`, a connected one
    /// `fd70:<k>::/64 via ::`, and a default `::/0` one the plugin must skip (the default
    /// route comes from router advertisements).
    pub fn ipv6_host_routes(&self) -> Vec<HostRoute<IpNet, IpAddr>> {
        vec![
            HostRoute {
                destination: format!("fd6f:{:x}::/64", self.k).parse().unwrap(),
                nexthop: IpAddr::V6(self.ipv6_host(0xfe)),
            },
            HostRoute {
                destination: format!("fd70:{:x}::/64", self.k).parse().unwrap(),
                nexthop: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            HostRoute {
                destination: "::/0".parse().unwrap(),
                nexthop: IpAddr::V6(self.ipv6_host(0xfe)),
            },
        ]
    }

    /// The Neutron port as Trove sees it: IPv4 always, IPv6 (a DHCPv6-stateful subnet) when
    /// asked.
    pub fn user_port(&self, with_ipv6: bool) -> UserPort {
        let mut fixed_ips = vec![FixedIp {
            ip_address: IpAddr::V4(self.ipv4()),
            cidr: self.ipv4_cidr().parse().unwrap(),
            gateway_ip: Some(IpAddr::V4(self.ipv4_gateway())),
            host_routes: self.ipv4_host_routes(),
            ipv6_ra_mode: None,
        }];
        if with_ipv6 {
            fixed_ips.push(FixedIp {
                ip_address: IpAddr::V6(self.ipv6()),
                cidr: self.ipv6_cidr().parse().unwrap(),
                gateway_ip: Some(IpAddr::V6(self.ipv6_gateway())),
                host_routes: self.ipv6_host_routes(),
                ipv6_ra_mode: Some("dhcpv6-stateful".to_owned()),
            });
        }
        UserPort {
            mac_address: self.mac,
            fixed_ips,
        }
    }

    /// The guest namespace's link with the port's MAC: `(name, flags)`, `None` when the NIC
    /// is not in the guest namespace.
    pub fn in_guest(&self) -> Option<(String, String)> {
        let links = run("ip", &["-n", &self.guest_netns, "-o", "link", "show"])
            .unwrap_or_else(|e| panic!("listing the guest's links: {e}"));
        find_link(&links, self.mac)
    }

    /// Waits (bounded) until the NIC is back in the guest namespace; returns its name and flags.
    pub fn wait_back_in_guest(&self, within: Duration) -> (String, String) {
        let started = Instant::now();
        loop {
            if let Some(found) = self.in_guest() {
                return found;
            }
            assert!(
                started.elapsed() < within,
                "the tenant NIC {} did not come back to `{}` within {within:?}",
                self.mac,
                self.guest_netns
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TenantPort {
    fn drop(&mut self) {
        // Never panics (a panic while unwinding aborts). The VM end is absent when a container
        // still holds it; deleting the client namespace then destroys the pair anyway.
        match run("ip", &["-n", &self.guest_netns, "link", "del", &self.vm_if]) {
            Ok(_) => {}
            Err(e) if e.contains("Cannot find device") => {}
            Err(e) => eprintln!("cleanup: {e}"),
        }
    }
}

/// In `ip -o link show` output, the link with `mac`: its name and its `<FLAGS>`.
pub fn find_link(links: &str, mac: MacAddress) -> Option<(String, String)> {
    let needle = format!("link/ether {mac} ");
    links
        .lines()
        .find(|line| line.contains(&needle))
        .map(|line| {
            let name = line
                .split(": ")
                .nth(1)
                .unwrap_or_default()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_owned();
            let flags = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(flags, _)| flags.to_owned())
                .unwrap_or_default();
            (name, flags)
        })
}

/// Whether a `<FLAGS>` list says the link is administratively up.
pub fn is_up(flags: &str) -> bool {
    flags.split(',').any(|flag| flag == "UP")
}

/// Test files in a temporary directory: `eth1.json`, the plugin's state file and log.
#[derive(Debug)]
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// A fresh directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new().prefix("nthn-").tempdir().unwrap(),
        }
    }

    /// A path in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `eth1.json` as Trove's taskmanager renders it, and reads it back the way the
    /// guest does.
    pub fn write_eth1_json(&self, port: &UserPort) -> TenantNic {
        let path = self.path("eth1.json");
        std::fs::write(&path, port.render_eth1_json()).unwrap();
        TenantNic::read(&path).unwrap_or_else(|e| panic!("our own eth1.json: {e}"))
    }
}

/// OUR plugin process inside the guest namespace, under a name of its own
/// (`nthn-<pid>-<n>`, socket `/run/docker/plugins/<name>.sock`) so it never meets the real
/// `docker-hostnic` of the harness or benchmarks. Stopped (SIGTERM, then SIGKILL) and its
/// socket removed on drop.
#[derive(Debug)]
pub struct PluginProcess {
    name: String,
    socket: PathBuf,
    state_file: PathBuf,
    tenant_nic_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PluginProcess {
    /// Starts the plugin on the files of `files` and waits (bounded) until it listens.
    pub fn start(files: &Files) -> Self {
        let name = format!("nthn-{}-{}", std::process::id(), next_counter());
        let mut plugin = Self {
            socket: Path::new(PLUGIN_DIR).join(format!("{name}.sock")),
            name,
            state_file: files.path("hostnic.json"),
            tenant_nic_file: files.path("eth1.json"),
            log: files.path("plugin.log"),
            child: None,
        };
        plugin.spawn();
        plugin
    }

    /// The driver name dockerd knows it by.
    pub fn driver(&self) -> &str {
        &self.name
    }

    /// Its state file (`hostnic.json`).
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts it (again) on its files and waits (bounded) until it listens.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the plugin already runs");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let netns = format!("--net=/run/netns/{}", guest_netns());
        let child = Command::new("nsenter")
            .arg(netns)
            .arg(PLUGIN_BINARY)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-file")
            .arg(&self.state_file)
            .arg("--tenant-nic-file")
            .arg(&self.tenant_nic_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nsenter {PLUGIN_BINARY}: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("the plugin exited early with {status}:\n{}", self.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the plugin did not listen on {} within 20 s:\n{}",
                self.socket.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, then (bounded) wait; SIGKILL after 10 s. Returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        if let Err(e) = kill(pid, Signal::SIGTERM) {
            eprintln!("SIGTERM to the plugin: {e}");
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        eprintln!("the plugin ignored SIGTERM for 10 s; killing it");
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stops it and starts it again on the same files.
    pub fn restart(&mut self) {
        assert!(
            self.stop(),
            "the plugin did not stop cleanly:\n{}",
            self.logs()
        );
        self.spawn();
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("cleanup: the plugin {} was killed", self.name);
        }
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("cleanup: {}: {e}", self.socket.display()),
        }
    }
}

/// The hostnic network for a tenant NIC on OUR plugin: Trove's spec with a unique name and
/// the test's driver name.
pub fn network_spec(nic: &TenantNic, plugin: &PluginProcess, name: &str) -> HostnicNetworkSpec {
    let mut spec = HostnicNetworkSpec::for_tenant_nic(nic);
    spec.name = name.to_owned();
    spec.driver = plugin.driver().to_owned();
    spec
}

/// The database container on the hostnic network `network` with the port's fixed IPs.
pub fn database_spec(
    name: &str,
    image: &PublishedImage,
    nic: &TenantNic,
    network: &str,
    restart_policy: RestartPolicy,
) -> ContainerSpec {
    let attachment = match NetworkAttachment::hostnic_for(nic) {
        NetworkAttachment::Hostnic { ipv4, ipv6, .. } => NetworkAttachment::Hostnic {
            network: network.to_owned(),
            ipv4,
            ipv6,
        },
        other => panic!("hostnic_for gave {other:?}"),
    };
    let mut spec = ContainerSpec::new(name, image.reference().clone(), attachment);
    spec.restart_policy = restart_policy;
    spec.healthcheck = Some(echo_health_check(image.port()));
    spec.labels.insert("netiso.test".into(), name.into());
    spec
}

/// Publishes the test database image and pulls it through the adapter.
pub async fn pulled_image(docker: &DockerRuntime) -> PublishedImage {
    let image = PublishedImage::publish(DB_PORT).await;
    docker
        .ensure_image(image.reference(), PullPolicy::Always, None, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("pull {}: {e}", image.reference()));
    image
}

/// Runs the container and waits until it is healthy; the plugin's log is in the panic.
pub async fn run_healthy(
    docker: &DockerRuntime,
    spec: &ContainerSpec,
    plugin: &PluginProcess,
) -> ContainerInfo {
    if let Err(e) = docker.run(spec).await {
        panic!("run {}: {e}\nplugin log:\n{}", spec.name, plugin.logs());
    }
    docker
        .wait_healthy(&spec.name, HEALTHY_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\nplugin log:\n{}", spec.name, plugin.logs()))
}

/// One line through the database port from the client namespace: connects (retrying,
/// bounded) to `address`, sends a line and returns the echoed line.
pub fn echo_from_client(client_netns: &str, address: SocketAddr) -> String {
    let line = format!("hello from {client_netns}\n");
    let sent = line.clone();
    let answer = in_netns(client_netns, move || -> Result<String, String> {
        let started = Instant::now();
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(sent.as_bytes())?;
                let mut echoed = String::new();
                BufReader::new(stream).read_line(&mut echoed)?;
                Ok(echoed)
            })();
            match attempt {
                Ok(echoed) => return Ok(echoed),
                Err(e) if started.elapsed() > Duration::from_secs(15) => {
                    return Err(format!("{address} from the client namespace: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, line, "the database port echoes the line");
    answer
}

/// Asserts that the container holds the tenant NIC as `eth0` with the port's MAC and IPv4
/// address, has no other interface but `lo`, and routes as `eth1.json` says.
pub fn assert_container_has_the_nic(info: &ContainerInfo, port: &TenantPort) {
    let pid = info
        .pid
        .unwrap_or_else(|| panic!("{} has no pid", info.name));
    let links = ip_in_container(pid, &["-o", "link", "show"]);
    let (name, flags) = find_link(&links, port.mac)
        .unwrap_or_else(|| panic!("no link with {} in the container:\n{links}", port.mac));
    assert_eq!(name, "eth0", "{links}");
    assert!(is_up(&flags), "eth0 is up: {links}");
    let names: Vec<&str> = links
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["lo", "eth0"],
        "the tenant NIC is the only NIC:\n{links}"
    );
    let addresses = ip_in_container(pid, &["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        addresses.contains(&format!("inet {}/24", port.ipv4())),
        "{addresses}"
    );
    let routes = ip_in_container(pid, &["-4", "route", "show"]);
    for expected in [
        format!("default via {} dev eth0", port.ipv4_gateway()),
        format!("192.168.{}.0/24 via 10.253.{}.254 dev eth0", port.k, port.k),
        format!("172.31.{}.0/24 dev eth0", port.k),
    ] {
        assert!(routes.contains(&expected), "`{expected}` in:\n{routes}");
    }
}

/// What an end-to-end test stands on: the guest dockerd, the pulled test database, a tenant
/// port with its `eth1.json`, OUR plugin on it, and the name of a hostnic network (created by
/// [`HostnicBed::create_network`] or by the test itself, removed on drop).
///
/// Fields drop in declaration order: the network while the plugin still answers
/// `DeleteNetwork`, then the plugin, the files, the veth, the image.
pub struct HostnicBed {
    _network: NetworkGuard,
    /// The network's name.
    pub network: String,
    /// OUR plugin process.
    pub plugin: PluginProcess,
    /// The tenant NIC as the guest reads it from `eth1.json`.
    pub nic: TenantNic,
    /// `eth1.json`, the plugin's state file and log.
    pub files: Files,
    /// The veth standing for the tenant NIC.
    pub port: TenantPort,
    /// The test database image, already pulled.
    pub image: PublishedImage,
    /// The adapter on the guest dockerd.
    pub docker: DockerRuntime,
}

impl HostnicBed {
    /// A bed whose port has an IPv4 subnet only.
    pub async fn start() -> Self {
        Self::start_on(false).await
    }

    /// A bed whose port also has an IPv6 (DHCPv6-stateful) subnet.
    pub async fn start_with_ipv6() -> Self {
        Self::start_on(true).await
    }

    async fn start_on(with_ipv6: bool) -> Self {
        let docker = setup().await;
        let image = pulled_image(&docker).await;
        let port = TenantPort::create();
        let files = Files::new();
        let nic = files.write_eth1_json(&port.user_port(with_ipv6));
        let plugin = PluginProcess::start(&files);
        let network = unique_name("nthn-net");
        Self {
            _network: NetworkGuard::new(&network),
            network,
            plugin,
            nic,
            files,
            port,
            image,
            docker,
        }
    }

    /// The network's spec: Trove's for this tenant NIC, on OUR plugin.
    pub fn network_spec(&self) -> HostnicNetworkSpec {
        network_spec(&self.nic, &self.plugin, &self.network)
    }

    /// Creates the network through the adapter; the plugin's log is in the panic.
    pub async fn create_network(&self) -> NetworkStatus {
        self.docker
            .ensure_hostnic_network(&self.network_spec())
            .await
            .unwrap_or_else(|e| panic!("network: {e}\nplugin log:\n{}", self.plugin.logs()))
    }

    /// The database container `name` on the bed's network.
    pub fn database_spec(&self, name: &str, restart_policy: RestartPolicy) -> ContainerSpec {
        database_spec(name, &self.image, &self.nic, &self.network, restart_policy)
    }

    /// Runs the container and waits until it is healthy.
    pub async fn run_healthy(&self, spec: &ContainerSpec) -> ContainerInfo {
        run_healthy(&self.docker, spec, &self.plugin).await
    }

    /// One line through the database port from the client namespace, to the port's IPv4.
    pub fn echo_over_ipv4(&self) {
        echo_from_client(
            self.port.client_netns(),
            SocketAddr::new(IpAddr::V4(self.port.ipv4()), DB_PORT),
        );
    }
}
