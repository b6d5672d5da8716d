//! The operator commands (`preflight`, `isolate`, `netns`) and the daemon's contract with
//! systemd (exit statuses, `READY=1`, watchdog pings) run as the binary inside throwaway
//! namespaces that stand for the VM, with a tenant link and a management link. Needs root.

use std::net::TcpListener;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use netiso_netlink::test_support::TestNamespace;
use netiso_netlink::{MacAddress, RouteSpec, Rtnetlink};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

const BROKER: &str = "10.77.9.1";

fn agent_command(guest: &TestNamespace, conf: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", guest.name()))
        .arg(env!("CARGO_BIN_EXE_trove-guest-agent"))
        .arg("--config-dir")
        .arg(conf)
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

fn agent(guest: &TestNamespace, conf: &Path, args: &[&str]) -> Output {
    agent_command(guest, conf, args)
        .output()
        .expect("run nsenter + trove-guest-agent")
}

/// Whether the tenant link is down without addresses.
fn isolated(ns: &TestNamespace, tenant_if: &str) -> bool {
    let link = ns.handle().link_by_name(tenant_if).expect("tenant link");
    !link.up
        && ns
            .handle()
            .addresses(Some(link.index))
            .expect("addresses")
            .is_empty()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn up_with_address(ns: &TestNamespace, name: &str, cidr: &str) -> u32 {
    let link = ns.handle().link_by_name(name).expect("link");
    ns.handle()
        .add_address(link.index, cidr.parse().expect("cidr"))
        .expect("address");
    ns.handle().set_link_up(link.index, true).expect("up");
    link.index
}

fn mac_of(ns: &TestNamespace, name: &str) -> MacAddress {
    ns.handle()
        .link_by_name(name)
        .expect("link")
        .mac
        .expect("a MAC")
}

/// Writes a guest configuration whose tenant NIC is `mac`; returns the conf.d directory.
fn write_config(dir: &Path, mac: MacAddress, extra_netiso: &str) -> PathBuf {
    let conf = dir.join("conf.d");
    std::fs::create_dir_all(&conf).expect("conf.d");
    let nic = dir.join("eth1.json");
    std::fs::write(
        &nic,
        format!(
            "{{\"mac_address\": \"{mac}\", \"ipv4_address\": \"10.77.2.2\", \"ipv4_cidr\": \
             \"10.77.2.0/24\", \"ipv4_gateway\": \"10.77.2.1\", \"ipv4_host_routes\": []}}"
        ),
    )
    .expect("eth1.json");
    std::fs::write(
        conf.join("guest_info.conf"),
        "[DEFAULT]\nguest_id=cli-test\nnetwork_isolation=True\n",
    )
    .expect("guest_info.conf");
    std::fs::write(
        conf.join("trove-guestagent.conf"),
        format!(
            "[DEFAULT]\ntransport_url=rabbit://user:pass@{BROKER}:5672/\ncontrol_exchange=trove\n\n\
             [netiso]\ntenant_nic_file={}\nstate_dir={}\ndocker_socket={}\n{extra_netiso}",
            nic.display(),
            dir.join("state").display(),
            dir.join("no-docker.sock").display(),
        ),
    )
    .expect("trove-guestagent.conf");
    conf
}

/// The VM with a management link (to a namespace where the broker listens) and a tenant link.
struct Vm {
    guest: TestNamespace,
    _mgmt: TestNamespace,
    _tenant_peer: TestNamespace,
    mgmt_if: String,
    tenant_if: String,
    _broker: TcpListener,
}

impl Vm {
    fn new() -> Self {
        let guest = TestNamespace::new();
        let mgmt = TestNamespace::new();
        let tenant_peer = TestNamespace::new();
        let (mgmt_if, mgmt_peer) = guest.veth("clm", Some(&mgmt));
        let (tenant_if, tenant_end) = guest.veth("clt", Some(&tenant_peer));
        up_with_address(&guest, &mgmt_if, "10.77.1.2/24");
        up_with_address(&mgmt, &mgmt_peer, "10.77.1.1/24");
        up_with_address(&guest, &tenant_if, "10.77.2.2/24");
        up_with_address(&tenant_peer, &tenant_end, "10.77.2.1/24");
        let lo = mgmt.handle().link_by_name("lo").expect("lo");
        mgmt.handle()
            .add_address(lo.index, format!("{BROKER}/32").parse().expect("cidr"))
            .expect("broker address");
        let broker = mgmt
            .namespace()
            .run(|| TcpListener::bind((BROKER, 5672)))
            .expect("enter")
            .expect("listen");
        Self {
            guest,
            _mgmt: mgmt,
            _tenant_peer: tenant_peer,
            mgmt_if,
            tenant_if,
            _broker: broker,
        }
    }

    fn route_broker_via(&self, gateway: &str) {
        self.guest
            .handle()
            .replace_route(&RouteSpec::via(
                "10.77.9.0/24".parse().expect("net"),
                gateway.parse().expect("gw"),
            ))
            .expect("route");
    }
}

#[test]
fn preflight_fails_through_the_tenant_nic_and_passes_through_management() {
    let vm = Vm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(dir.path(), mac_of(&vm.guest, &vm.tenant_if), "");

    vm.route_broker_via("10.77.2.1");
    let failed = agent(&vm.guest, &conf, &["preflight", "--timeout", "2"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let text = stdout(&failed);
    assert!(
        text.contains(&format!(
            "FAIL  messaging (transport_url): the route to {BROKER}:5672 ({BROKER}) goes through \
             interface {}, the tenant NIC",
            vm.tenant_if
        )),
        "{text}"
    );

    vm.route_broker_via("10.77.1.1");
    let passed = agent(&vm.guest, &conf, &["preflight", "--timeout", "2"]);
    let text = stdout(&passed);
    assert!(passed.status.success(), "{passed:?}");
    assert!(
        text.contains(&format!(
            "ok    messaging (transport_url) {BROKER}:5672 via {}",
            vm.mgmt_if
        )),
        "{text}"
    );
    assert!(
        !text.contains("user:pass"),
        "the password is never printed: {text}"
    );
}

#[test]
fn isolate_dry_run_verify_and_apply_on_a_throwaway_vm() {
    let vm = Vm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(dir.path(), mac_of(&vm.guest, &vm.tenant_if), "");

    let verify = agent(&vm.guest, &conf, &["isolate", "--verify"]);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "not isolated yet: {verify:?}"
    );
    let dry_run = agent(&vm.guest, &conf, &["isolate", "--dry-run"]);
    assert!(dry_run.status.success(), "{dry_run:?}");
    assert!(
        stdout(&dry_run).contains(&vm.tenant_if),
        "{}",
        stdout(&dry_run)
    );
    let still_up = vm.guest.handle().link_by_name(&vm.tenant_if).expect("link");
    assert!(still_up.up, "--dry-run changes nothing");

    let apply = agent(&vm.guest, &conf, &["isolate", "--apply"]);
    assert!(apply.status.success(), "{apply:?}");
    let tenant = vm.guest.handle().link_by_name(&vm.tenant_if).expect("link");
    assert!(!tenant.up);
    assert!(
        vm.guest
            .handle()
            .addresses(Some(tenant.index))
            .expect("addresses")
            .is_empty()
    );
    let verify = agent(&vm.guest, &conf, &["isolate", "--verify"]);
    assert!(verify.status.success(), "{verify:?}");
    // The management link is untouched.
    assert!(
        vm.guest
            .handle()
            .link_by_name(&vm.mgmt_if)
            .expect("mgmt")
            .up
    );
}

#[test]
fn isolate_verify_compares_with_the_baseline_recorded_when_isolating() {
    let vm = Vm::new();
    vm.route_broker_via("10.77.1.1");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(dir.path(), mac_of(&vm.guest, &vm.tenant_if), "");
    let baseline = dir.path().join("state/isolation-baseline.json");

    let apply = agent(&vm.guest, &conf, &["isolate", "--apply"]);
    assert!(apply.status.success(), "{apply:?}");
    assert!(
        stdout(&apply).contains("baseline recorded in"),
        "{}",
        stdout(&apply)
    );
    let metadata = std::fs::metadata(&baseline).expect("the baseline file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777,
        0o644
    );
    let verify = agent(&vm.guest, &conf, &["isolate", "--verify"]);
    assert!(verify.status.success(), "{verify:?}");

    // A management route changes after isolation: --verify, run on its own, must see it.
    vm.guest
        .handle()
        .delete_route(
            &vm.guest
                .handle()
                .routes()
                .expect("routes")
                .into_iter()
                .find(|r| r.destination == "10.77.9.0/24".parse().expect("net"))
                .expect("the broker route"),
        )
        .expect("delete the broker route");
    let verify = agent(&vm.guest, &conf, &["isolate", "--verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] management routes unchanged: route 10.77.9.0/24 via 10.77.1.1"),
        "{text}"
    );
    assert!(text.contains("lost"), "{text}");

    // No baseline: reported as missing, never as success.
    std::fs::remove_file(&baseline).expect("remove the baseline");
    let verify = agent(&vm.guest, &conf, &["isolate", "--verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] management interfaces unchanged: no baseline recorded in")
            && text.contains("[FAIL] management routes unchanged: no baseline recorded in"),
        "{text}"
    );
    assert!(
        text.contains("[ ok ] tenant NIC absent or down"),
        "the tenant checks still run: {text}"
    );
}

/// A directory standing for dockerd's exec-root, with one sandbox bind-mounted in `netns/`
/// (as dockerd does); unmounted on drop.
struct FakeExecRoot {
    root: tempfile::TempDir,
    sandbox: PathBuf,
}

impl FakeExecRoot {
    fn new(namespace: &TestNamespace, sandbox_id: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("netns")).expect("netns dir");
        let sandbox = root.path().join("netns").join(sandbox_id);
        std::fs::write(&sandbox, b"").expect("mount point");
        mount(
            Some(Path::new(&format!("/run/netns/{}", namespace.name()))),
            &sandbox,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind-mount the sandbox");
        Self { root, sandbox }
    }
}

impl Drop for FakeExecRoot {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.sandbox, MntFlags::MNT_DETACH) {
            eprintln!("cleanup: unmount {}: {e}", self.sandbox.display());
        }
    }
}

#[test]
fn netns_lists_sandboxes_and_names_the_one_holding_the_tenant_nic() {
    let guest = TestNamespace::new();
    let sandbox_ns = TestNamespace::new();
    // The tenant NIC already handed to the "container": its end is in the sandbox.
    let (_vm_end, tenant_nic) = guest.veth("cln", Some(&sandbox_ns));
    up_with_address(&sandbox_ns, &tenant_nic, "10.77.2.2/24");
    let mac = mac_of(&sandbox_ns, &tenant_nic);
    let exec_root = FakeExecRoot::new(&sandbox_ns, "0123456789ab");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(
        dir.path(),
        mac,
        &format!("docker_exec_root={}\n", exec_root.root.path().display()),
    );

    let list = agent(&guest, &conf, &["netns", "list"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    let sandbox_line = text
        .lines()
        .find(|l| l.starts_with("0123456789ab"))
        .unwrap_or_else(|| panic!("sandbox listed: {text}"));
    assert!(
        sandbox_line.contains(&tenant_nic) && sandbox_line.ends_with("<- holds the tenant NIC"),
        "{text}"
    );
    assert!(
        text.contains(&format!("tenant NIC {mac}: in sandbox 0123456789ab")),
        "{text}"
    );

    let show = agent(&guest, &conf, &["netns", "show", "0123"]);
    assert!(show.status.success(), "{show:?}");
    let text = stdout(&show);
    assert!(text.contains("namespace 0123456789ab"), "{text}");
    assert!(text.contains("inet 10.77.2.2/24"), "{text}");
    assert!(text.contains("<- tenant NIC"), "{text}");
    assert!(text.contains("10.77.2.0/24"), "routes shown: {text}");

    let missing = agent(&guest, &conf, &["netns", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("no sandbox or container matches \"nope\""),
        "{missing:?}"
    );
}

#[test]
fn a_configuration_error_exits_78_after_isolating_the_tenant_nic() {
    let vm = Vm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // Unusable: no such runtime. eth1.json is fine and names the tenant NIC.
    let conf = write_config(
        dir.path(),
        mac_of(&vm.guest, &vm.tenant_if),
        "runtime = podman\n",
    );
    let run = agent(&vm.guest, &conf, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "EX_CONFIG: {stderr}");
    assert!(stderr.contains("cannot load the configuration"), "{stderr}");
    assert!(
        isolated(&vm.guest, &vm.tenant_if),
        "fail closed: the tenant NIC is isolated before exiting"
    );
}

#[test]
fn isolate_boot_needs_only_eth1_json() {
    let vm = Vm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(
        dir.path(),
        mac_of(&vm.guest, &vm.tenant_if),
        "runtime = podman\n",
    );
    let nic_file = dir.path().join("eth1.json");
    let nic = std::fs::read(&nic_file).expect("eth1.json");

    // The first boot: cloud-init has not written eth1.json yet.
    std::fs::remove_file(&nic_file).expect("remove eth1.json");
    let early = agent(&vm.guest, &conf, &["isolate", "--boot"]);
    assert!(early.status.success(), "{early:?}");
    assert!(
        stdout(&early).contains("nothing to isolate yet"),
        "{}",
        stdout(&early)
    );
    assert!(!isolated(&vm.guest, &vm.tenant_if));

    // Later boots: isolated, although the rest of the configuration is unusable.
    std::fs::write(&nic_file, nic).expect("eth1.json");
    let boot = agent(&vm.guest, &conf, &["isolate", "--boot"]);
    assert!(boot.status.success(), "{boot:?}");
    assert!(isolated(&vm.guest, &vm.tenant_if), "{}", stdout(&boot));
}

/// A broken container runtime must not take RPC down with it (the agent reports over RPC why
/// the database cannot run): the agent isolates, says the runtime does not answer, and keeps
/// running instead of exiting into a systemd restart loop.
#[test]
fn an_unreachable_container_runtime_keeps_the_agent_up_with_the_nic_isolated() {
    let vm = Vm::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // write_config points docker_socket at a socket that does not exist.
    let conf = write_config(dir.path(), mac_of(&vm.guest, &vm.tenant_if), "");
    let log = dir.path().join("agent.log");
    let mut agent = KillOnDrop(
        agent_command(&vm.guest, &conf, &["run", "--preflight-timeout", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    while !log_text().contains("the container runtime does not answer: serving RPC anyway") {
        if let Some(status) = agent.0.try_wait().expect("wait") {
            panic!("the agent exited ({status})\n{}", log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no warning within 30 s\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        log_text().contains(&dir.path().join("no-docker.sock").display().to_string()),
        "the warning names the socket\n{}",
        log_text()
    );
    assert!(isolated(&vm.guest, &vm.tenant_if));
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "still running\n{}",
        log_text()
    );
}

/// Kills the agent when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_comes_once_isolated_and_watchdog_pings_follow() {
    let vm = Vm::new();
    vm.route_broker_via("10.77.1.1");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_config(dir.path(), mac_of(&vm.guest, &vm.tenant_if), "");
    // A dockerd that accepts and never answers, at the path write_config names: the agent
    // keeps running after READY=1 instead of exiting on an unreachable runtime.
    let _silent_dockerd = UnixListener::bind(dir.path().join("no-docker.sock")).expect("bind");
    let notify_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let log = dir.path().join("agent.log");
    let mut agent = KillOnDrop(
        agent_command(&vm.guest, &conf, &[])
            .env("NOTIFY_SOCKET", &notify_path)
            // WatchdogSec=200ms: a ping every 100 ms.
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the agent"),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    let mut pings_after_ready = 0;
    let mut buffer = [0u8; 512];
    while pings_after_ready < 3 {
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "ready={ready}, {pings_after_ready} pings after READY within 30 s\n{}",
            log_text()
        );
        if let Some(status) = agent.0.try_wait().expect("wait") {
            panic!("the agent exited ({status}) early\n{}", log_text());
        }
        let Ok(n) = systemd.recv(&mut buffer) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if message.lines().any(|line| line == "READY=1") {
            assert!(!ready, "READY=1 sent twice: {message}");
            assert!(
                isolated(&vm.guest, &vm.tenant_if),
                "READY=1 before the tenant NIC was isolated: {message}"
            );
            ready = true;
        }
        if ready && message.lines().any(|line| line == "WATCHDOG=1") {
            pings_after_ready += 1;
        }
    }
}

/// Under systemd, stderr is the journal's stream (`JOURNAL_STREAM` names it): every line
/// starts with its syslog priority, so the journal records errors as errors. With the
/// variable inherited but stderr redirected elsewhere, lines stay plain.
#[test]
fn log_lines_carry_their_priority_only_into_the_journal_stream() {
    use std::io::Read as _;
    use std::os::fd::{AsRawFd as _, OwnedFd};
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::net::UnixStream;

    let (mut journal, agent_side) = UnixStream::pair().expect("a stream pair");
    let stream = std::fs::metadata(format!("/proc/self/fd/{}", agent_side.as_raw_fd()))
        .expect("the stream's device and inode");
    let journal_stream = format!("{}:{}", stream.dev(), stream.ino());
    let bad_config = [
        "--config-file",
        "/nonexistent/trove.conf",
        "isolate",
        "--dry-run",
    ];
    let status = Command::new(env!("CARGO_BIN_EXE_trove-guest-agent"))
        .args(bad_config)
        .env("JOURNAL_STREAM", &journal_stream)
        .stdout(Stdio::null())
        .stderr(Stdio::from(OwnedFd::from(agent_side)))
        .status()
        .expect("run the agent");
    assert_eq!(status.code(), Some(78), "a configuration error");
    let mut logged = String::new();
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    journal
        .read_to_string(&mut logged)
        .expect("read what the agent logged");
    let error_line = logged
        .lines()
        .find(|line| line.contains("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line in {logged:?}"));
    assert!(error_line.starts_with("<3>"), "{error_line:?}");

    let piped = Command::new(env!("CARGO_BIN_EXE_trove-guest-agent"))
        .args(bad_config)
        .env("JOURNAL_STREAM", &journal_stream)
        .output()
        .expect("run the agent");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(
        !stderr.contains("<3>"),
        "a pipe got journal prefixes: {stderr}"
    );
}
