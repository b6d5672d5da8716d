//! Injecting each fault into the simulated guest, and undoing the ones that last (a node
//! down, a stalled broker, a full disk) when their hold ends, also on drop.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use netiso_messaging::test_support::cluster::{self, Loss, LostNode};
use netiso_messaging::test_support::partition;
use netiso_netlink::{NetlinkHandle, Rtnetlink as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::schedule::{FaultKind, Step};
use crate::controller::Controller;
use crate::guest::Guest;
use crate::net::{CLIENT_ADDR, GUEST_TENANT_ADDR, run_ip};
use crate::probes::GuestView;
use crate::processes::{DaemonCommand, dockerd_answers, process_gone, wait_for};
use crate::settings::Settings;

/// Where dockerd and containerd log when the soak starts them again (provision's logs).
const DOCKERD_LOG: &str = "/var/log/trove-netiso/dockerd.log";
const CONTAINERD_LOG: &str = "/var/log/trove-netiso/containerd.log";
/// The provisioned containerd's configuration, by which its process is recognised (dockerd
/// runs a containerd of its own, which is not the one the containerd runtime uses).
const CONTAINERD_CONFIG: &str = "/var/lib/trove-netiso/containerd/config.toml";
/// How long a daemon may take to answer again after being started.
const DAEMON_START_LIMIT: Duration = Duration::from_secs(90);
/// Beyond two missed heartbeats, how long a stalled broker stays silent: long enough that
/// the agent has to notice the silence itself and move to another node.
const STALL_MARGIN: Duration = Duration::from_secs(5);

/// A fault that lasts until [`Injected::release`] (or drop).
#[derive(Debug)]
pub enum Injected {
    /// Done at once (a kill and restart, a torn file).
    Instant,
    /// The fault did not apply to the guest's current state; nothing was done.
    NotApplicable(String),
    /// A cluster node down; restarted on release.
    Node(LostNode),
    /// A node's forwarders stopped (SIGSTOP); continued on release.
    Stall(StalledForwarders),
    /// The state directory filled by this file; removed on release.
    Filler(FillerFile),
    /// The tenant NIC was brought up with an address and a default route; how long the VM
    /// held them.
    TenantWindow(Duration),
}

impl Injected {
    /// Ends a lasting fault (a node back in the cluster, a broker answering again, the
    /// space freed).
    pub fn release(self) -> Result<()> {
        match self {
            Self::Instant | Self::NotApplicable(_) | Self::TenantWindow(_) => Ok(()),
            Self::Node(mut node) => node.restore().map_err(|e| anyhow!(e)),
            Self::Stall(mut stall) => {
                stall.resume();
                Ok(())
            }
            Self::Filler(mut filler) => filler.remove(),
        }
    }
}

/// Injects `step.fault` into `guest`.
pub async fn inject(
    settings: &Settings,
    guest: &mut Guest,
    controller: &Controller,
    step: &Step,
) -> Result<Injected> {
    match step.fault {
        FaultKind::AgentKill => {
            if let Some(agent) = guest.agent.as_mut() {
                agent.kill_hard();
            }
            guest.start_agent()?;
            Ok(Injected::Instant)
        }
        FaultKind::AgentRestart => {
            if let Some(agent) = guest.agent.as_mut() {
                agent.stop(Duration::from_secs(20));
            }
            guest.start_agent()?;
            Ok(Injected::Instant)
        }
        FaultKind::PluginKill => {
            guest.kill_plugin();
            guest.start_plugin()?;
            Ok(Injected::Instant)
        }
        FaultKind::PluginRestart => {
            guest.stop_plugin();
            guest.start_plugin()?;
            Ok(Injected::Instant)
        }
        FaultKind::PluginStateCorrupt => {
            guest.kill_plugin();
            tear(&guest.files.hostnic_state_file())?;
            guest.start_plugin()?;
            Ok(Injected::Instant)
        }
        FaultKind::AgentStateCorrupt => {
            if let Some(agent) = guest.agent.as_mut() {
                agent.kill_hard();
            }
            let files = state_files(&guest.files.state_dir())?;
            if let Some(file) = files.get(step.hold_seconds as usize % files.len().max(1)) {
                tear(file)?;
            }
            guest.start_agent()?;
            Ok(Injected::Instant)
        }
        FaultKind::StateDirFull => {
            let filler = FillerFile::fill(&guest.files.state_dir())?;
            if let Some(agent) = guest.agent.as_mut() {
                agent.stop(Duration::from_secs(20));
            }
            guest.start_agent()?;
            Ok(Injected::Filler(filler))
        }
        FaultKind::DockerdKill => {
            let command = DaemonCommand::read(&settings.dockerd_pid_file, &settings.guest_netns)?;
            let managed = settings.docker_exec_root.join("containerd/containerd.pid");
            let managed_pid = std::fs::read_to_string(&managed)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok());
            command.kill_hard(Duration::from_secs(30))?;
            // dockerd's own containerd dies with it, but lingers as a zombie where nothing
            // reaps it promptly; dockerd takes a zombie named by its pid file for a running
            // containerd and then waits in vain for its socket. Kill it for sure and remove
            // its pid file (systemd kills the whole control group before a restart).
            if let Some(pid) = managed_pid {
                if !process_gone(pid) {
                    DaemonCommand::from_pid(pid, &settings.guest_netns)?
                        .kill_hard(Duration::from_secs(30))?;
                }
                let _ = std::fs::remove_file(&managed);
            }
            // The unit crashes as a whole (its control group: dockerd, its containerd and the
            // containers' shims). A shim outliving its containerd keeps a task the next
            // containerd does not know, and every start of that container then fails ("task
            // already exists").
            let managed_socket = format!(
                "{}/containerd/containerd.sock",
                settings.docker_exec_root.display()
            );
            for shim in processes_where(|comm, cmdline| {
                comm.starts_with("containerd-shim") && cmdline.contains(&managed_socket)
            }) {
                DaemonCommand::from_pid(shim, &settings.guest_netns)
                    .and_then(|process| process.kill_hard(Duration::from_secs(30)))
                    .or_else(|err| if process_gone(shim) { Ok(()) } else { Err(err) })?;
            }
            // A killed dockerd leaves its pid file, and refuses to start while the pid in it
            // names a process (the killed one lingers as a zombie where nothing reaps it).
            std::fs::remove_file(&settings.dockerd_pid_file)
                .with_context(|| format!("removing {}", settings.dockerd_pid_file.display()))?;
            let socket = settings.docker_socket.clone();
            start_and_wait(&command, DOCKERD_LOG, "dockerd", || {
                dockerd_answers(&socket)
            })
            .await?;
            replug_tenant_nic(guest)?;
            Ok(Injected::Instant)
        }
        FaultKind::ContainerdKill => {
            let pid = containerd_pid()
                .ok_or_else(|| anyhow!("no containerd runs {CONTAINERD_CONFIG}"))?;
            let command = DaemonCommand::from_pid(pid, &settings.guest_netns)?;
            command.kill_hard(Duration::from_secs(30))?;
            let socket = settings.containerd_socket.clone();
            start_and_wait(&command, CONTAINERD_LOG, "containerd", || {
                containerd_answers(&socket)
            })
            .await?;
            replug_tenant_nic(guest)?;
            Ok(Injected::Instant)
        }
        FaultKind::BrokerNodeKill => {
            // The node the agent is connected to: the agent has to notice the loss itself
            // (a node it is not connected to only moves the queue's leader, unseen by it).
            let node = agent_node(guest)?;
            let queue = format!("guestagent.{}", guest.spec.guest_id);
            let leads = cluster::leader_of(&queue).is_some_and(|leader| leader == node);
            println!(
                "soak: killing {node} (the agent's node{})",
                if leads {
                    ", and its queue's leader"
                } else {
                    ""
                }
            );
            Ok(Injected::Node(
                LostNode::lose(&node, Loss::Kill).map_err(|e| anyhow!(e))?,
            ))
        }
        FaultKind::BrokerStall => {
            let node = agent_node(guest)?;
            let (_, port) = cluster::guest_endpoint(&node).map_err(|e| anyhow!(e))?;
            println!("soak: stalling {node} (the agent's node) at its forwarders");
            Ok(Injected::Stall(StalledForwarders::stop(port)?))
        }
        FaultKind::TenantDhcp => tenant_dhcp(settings, guest, controller).await,
    }
}

/// Starts a killed daemon again with its command line and waits until `answers`.
async fn start_and_wait(
    command: &DaemonCommand,
    log: &str,
    name: &str,
    answers: impl Fn() -> bool,
) -> Result<()> {
    command.start(Path::new(log))?;
    wait_for(DAEMON_START_LIMIT, || {
        let up = answers();
        async move { up.then_some(()) }
    })
    .await
    .ok_or_else(|| anyhow!("{name} did not answer within {DAEMON_START_LIMIT:?} of its restart"))
}

/// A restarted runtime may have removed the dead container's namespace, destroying the
/// simulated tenant NIC with it (a veth) where the VM's kernel would take a virtio NIC back:
/// put it back as the kernel would, and say so.
fn replug_tenant_nic(guest: &Guest) -> Result<()> {
    if guest.tenant().replug_if_destroyed()? {
        println!(
            "soak: the tenant veth went with the dead container's namespace; put back in the VM as a virtio NIC would return"
        );
    }
    Ok(())
}

/// How long a lasting fault is held; a stall outlasts two heartbeats of `heartbeat_threshold`
/// (the guest's `heartbeat_timeout_threshold`), after which a client gives a connection up.
pub fn hold(step: &Step, heartbeat_threshold: Duration) -> Duration {
    let base = Duration::from_secs(step.hold_seconds);
    match step.fault {
        FaultKind::BrokerStall => base + 2 * heartbeat_threshold + STALL_MARGIN,
        FaultKind::BrokerNodeKill | FaultKind::StateDirFull => base,
        _ => Duration::ZERO,
    }
}

/// Truncates `path` to half its length (a write torn by a crash); a missing file becomes a
/// torn JSON object.
fn tear(path: &Path) -> Result<()> {
    let length = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if length == 0 {
        return std::fs::write(path, b"{\"torn")
            .with_context(|| format!("writing {}", path.display()));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_len(length / 2)
        .with_context(|| format!("truncating {}", path.display()))
}

/// The regular files of the agent's state directory, sorted (the schedule picks by index).
pub fn state_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(FillerFile::NAME))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A file filling a (small, tmpfs) directory to the last byte.
#[derive(Debug)]
pub struct FillerFile {
    path: Option<PathBuf>,
}

impl FillerFile {
    const NAME: &'static str = "soak-filler";
    /// At most this many chunks are written (a bound on the loop, far above a test tmpfs).
    const MAX_CHUNKS: usize = 1 << 16;

    fn fill(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::NAME);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let this = Self {
            path: Some(path.clone()),
        };
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..Self::MAX_CHUNKS {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => return Err(err).with_context(|| format!("filling {}", path.display())),
            }
        }
        // Smaller writes until not one byte is left.
        for size in [4096usize, 1] {
            for _ in 0..Self::MAX_CHUNKS {
                if file.write(&chunk[..size]).map_or(true, |n| n == 0) {
                    break;
                }
            }
        }
        Ok(this)
    }

    fn remove(&mut self) -> Result<()> {
        if let Some(path) = self.path.take() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for FillerFile {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            eprintln!("cleanup: {err:#}");
        }
    }
}

/// The socat forwarders of one broker port, stopped (SIGSTOP): connections through them
/// stay open and carry nothing, new ones are accepted by the kernel and never answered.
#[derive(Debug)]
pub struct StalledForwarders {
    port: u16,
    stopped: Vec<i32>,
}

impl StalledForwarders {
    fn stop(port: u16) -> Result<Self> {
        let mut this = Self {
            port,
            stopped: Vec::new(),
        };
        let pids = forwarder_pids(port);
        if pids.is_empty() {
            bail!(
                "no forwarder of port {port} runs (run `cargo xtask provision --rabbit-cluster`)"
            );
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok() {
                this.stopped.push(pid);
            }
        }
        Ok(this)
    }

    fn resume(&mut self) {
        // A stopped forwarder cannot fork, but provision may have started a new one
        // meanwhile: the recorded ones and every current forwarder of the port are continued.
        let mut pids = std::mem::take(&mut self.stopped);
        pids.extend(forwarder_pids(self.port));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

impl Drop for StalledForwarders {
    fn drop(&mut self) {
        self.resume();
    }
}

/// The processes forwarding broker port `port` into the management network (both halves of
/// provision's socat pair and their per-connection forks), recognised by their meeting point.
fn forwarder_pids(port: u16) -> Vec<i32> {
    let meeting_point = format!("fwd-{port}.sock");
    processes_where(|comm, cmdline| comm == "socat" && cmdline.contains(&meeting_point))
}

fn containerd_pid() -> Option<i32> {
    processes_where(|comm, cmdline| comm == "containerd" && cmdline.contains(CONTAINERD_CONFIG))
        .into_iter()
        .next()
}

fn processes_where(wanted: impl Fn(&str, &str) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            wanted(comm.trim(), &cmdline).then_some(pid)
        })
        .collect()
}

fn containerd_answers(socket: &Path) -> bool {
    std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cluster node the agent is connected to now (its own sockets, not its namespace's).
fn agent_node(guest: &Guest) -> Result<String> {
    let pid = guest.agent_pid()?;
    partition::nodes_connected_from(pid)
        .map_err(|e| anyhow!(e))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the agent (pid {pid}) holds no connection to a cluster node"))
}

/// The OS brings the tenant NIC up with its address and a default route, as DHCP would. The
/// NIC must be in the VM for that: a running database holds it, so it is stopped first (and
/// started again by the step's recovery).
async fn tenant_dhcp(
    settings: &Settings,
    guest: &mut Guest,
    controller: &Controller,
) -> Result<Injected> {
    let mac = guest.tenant().mac;
    let netns = settings.guest_netns.clone();
    let in_vm = |netns: &str| {
        GuestView::read(netns)
            .ok()
            .and_then(|v| v.link_with_mac(mac).map(|l| (l.index, l.name.clone())))
    };
    let stopped_here = in_vm(&netns).is_none();
    if stopped_here {
        controller
            .call("stop_db", serde_json::json!({}), Duration::from_secs(60))
            .await?;
    }
    let Some((index, name)) = wait_for(Duration::from_secs(15), || {
        let found = in_vm(&netns);
        async move { found }
    })
    .await
    else {
        if stopped_here {
            controller
                .call(
                    "start_db_with_conf_changes",
                    serde_json::json!({}),
                    Duration::from_secs(180),
                )
                .await?;
        }
        return Ok(Injected::NotApplicable(
            "the tenant NIC did not come back to the VM when the database stopped".to_owned(),
        ));
    };
    let handle = NetlinkHandle::in_named(&netns)?;
    let started = Instant::now();
    // Each step may lose the race against the guard (the link taken down or the address
    // removed before the next step): that is the guard winning, not an error.
    let _ = handle.set_link_up(index, true);
    let _ = handle.add_address(index, format!("{GUEST_TENANT_ADDR}/24").parse()?);
    let _ = run_ip(&[
        "-n",
        &netns,
        "route",
        "add",
        "default",
        "via",
        &CLIENT_ADDR.to_string(),
        "dev",
        &name,
        "metric",
        "50",
    ]);
    let clean_at = wait_for_clean(&netns, mac).await;
    Ok(Injected::TenantWindow(
        clean_at
            .unwrap_or_else(Instant::now)
            .duration_since(started),
    ))
}

/// Polls (every 2 ms, at most 10 s) until the VM holds no tenant address or route; when it
/// was first seen clean, or `None` if it never came clean (the window then lasted the whole
/// wait, which the invariant reports).
async fn wait_for_clean(netns: &str, mac: netiso_netlink::MacAddress) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(view) = GuestView::read(netns) {
            let link = view.link_with_mac(mac).map(|l| l.index);
            if view.tenant_addresses().is_empty()
                && view.tenant_routes(link).is_empty()
                && view.tenant_default_routes(link).is_empty()
            {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
