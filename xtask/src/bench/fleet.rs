//! Part 8: a fleet of guests on one broker. N real `trove-guest-agent` processes (release
//! build, bridged mode, each with its own guest id, instance key and configuration), then as
//! many Python oslo.messaging stand-ins as the cap allows, measured one size after another:
//! start to all ready, a taskmanager-like sweep with the fleet client (`fleet_sweep`),
//! heartbeats at a stand-in conductor (`fleet_conductor`), per-guest memory and idle CPU, and
//! what the broker holds per guest. Everything started is stopped by guards, also on error.

use super::build::ReleaseBinaries;
use super::report::{Figure, Section, Target};
use super::sys::{self, ChildGuard, TempDir};
use crate::layout::{DOCKER_EXEC_ROOT, DOCKER_SOCKET, RABBIT_NODE};
use crate::sh::say;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the fleet part runs (`cargo xtask bench fleet --sizes ...`).
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Fleet sizes, measured in this order.
    pub sizes: Vec<usize>,
    /// At most this many Python stand-ins (each holds about 60 MiB and a second of CPU to start).
    pub python_cap: usize,
    /// The agents' `--heartbeat-interval`, seconds (Trove's default is 60).
    pub heartbeat_interval: u64,
    /// The idle window after the sweep, seconds: CPU, heartbeats and memory are read over it.
    pub idle_seconds: u64,
    /// Calls in flight during a sweep.
    pub concurrency: usize,
    /// Sizes not yet started once the part has run this long are skipped (and said so).
    pub budget: Duration,
}

/// The broker URL the agents and the tools use (the host's loopback: the agents run in this
/// machine's network namespace; bridged mode needs no other).
const BROKER: &str = "127.0.0.1:5672";
/// `fleet_sweep`'s per-call timeout.
const CALL_TIMEOUT_MS: &str = "30000";
/// Memory each agent and each Python stand-in is allowed for, when deciding whether the first
/// size fits (RSS measured: about 11 and 60 MiB, the broker's growth besides); later sizes use
/// what the earlier ones cost the machine ([`per_guest_budget_kib`]).
const AGENT_BUDGET_KIB: u64 = 24 * 1024;
const PYTHON_BUDGET_KIB: u64 = 96 * 1024;
/// Room left above the measured cost per guest when deciding whether a larger size fits.
const BUDGET_MARGIN: f64 = 1.5;

/// One sweep's summary line from `fleet_sweep`.
#[derive(Debug, Clone, Default, PartialEq)]
struct SweepLine {
    method: String,
    guests: usize,
    answered: usize,
    sweep_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_sweep_line(line: &str) -> Option<SweepLine> {
    let fields: HashMap<&str, &str> = line
        .strip_prefix("sweep ")?
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect();
    Some(SweepLine {
        method: (*fields.get("method")?).to_owned(),
        guests: fields.get("guests")?.parse().ok()?,
        answered: fields.get("answered")?.parse().ok()?,
        sweep_ms: fields.get("sweep_ms")?.parse().ok()?,
        p50_ms: fields.get("p50_ms")?.parse().ok()?,
        p99_ms: fields.get("p99_ms")?.parse().ok()?,
    })
}

/// What the broker holds for one side's guests.
#[derive(Debug, Clone, Default)]
struct BrokerShare {
    connections: usize,
    channels: usize,
    queues: usize,
    memory_delta_kib: f64,
}

/// Every figure of one side (ours or Python's) at one size.
#[derive(Debug, Clone, Default)]
struct SideRun {
    guests: usize,
    ready_ms: f64,
    sweeps: Vec<SweepLine>,
    heartbeats_per_s: Option<f64>,
    lateness_ms: Option<(f64, f64, f64)>,
    rss_median_mib: f64,
    rss_max_mib: f64,
    anon_median_mib: f64,
    idle_cpu_ms_per_min: f64,
    idle_wakeups_per_min: f64,
    broker: BrokerShare,
    /// The drop of the machine's `MemAvailable` from before the guests started to the end of
    /// the idle window, per guest: the process, its kernel objects and the broker's share.
    machine_kib_per_guest: f64,
}

impl SideRun {
    /// What one more guest of this side costs the machine, at least its private memory and
    /// its broker share (`MemAvailable` moves with the other work on a shared machine).
    fn cost_kib_per_guest(&self) -> f64 {
        let per = self.guests.max(1) as f64;
        let floor = self.anon_median_mib * 1024.0 + self.broker.memory_delta_kib / per;
        self.machine_kib_per_guest.max(floor)
    }
}

/// The memory allowed per guest when deciding whether a size fits: the measured cost of the
/// largest size run so far with [`BUDGET_MARGIN`], or `fallback` before any.
fn per_guest_budget_kib(runs: &[SideRun], fallback: u64) -> u64 {
    runs.iter().max_by_key(|r| r.guests).map_or(fallback, |r| {
        (r.cost_kib_per_guest() * BUDGET_MARGIN).ceil() as u64
    })
}
/// Runs part 8.
pub fn run(binaries: &ReleaseBinaries, options: &FleetOptions) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "8. Fleet: N guests on one broker",
        &format!(
            "N real `trove-guest-agent` processes (the release build), each with its own guest \
             id, instance key and configuration folder, run in bridged mode \
             (`network_isolation = False`) in this machine's network namespace, connected to \
             the provisioned RabbitMQ on {BROKER}. They share the provisioned dockerd (its \
             socket `{DOCKER_SOCKET}`: the agent asks it for its version at start-up and \
             inspects the absent database container for each heartbeat; no container is \
             created, pulled or started). Each agent's state folder holds \
             `guestagent.prepare.end`, as on a guest after `prepare`, so that it heartbeats; \
             `--heartbeat-interval {hb}`. A stand-in conductor (`fleet_conductor`, our \
             messaging crate) consumes the conductor queue and decrypts each heartbeat's \
             `sent` with its guest's key. Per size: spawn to the last agent serving RPC (its \
             sd_notify `STATUS=serving RPC`, sent once its queues are consumed; one socket \
             for all); then one sweep with the fleet client \
             (`cargo run --release -p netiso-messaging --example fleet_sweep`, {conc} calls in \
             flight, {CALL_TIMEOUT_MS} ms per call) calling `rpc_ping` then \
             `get_filesystem_stats` on every guest; then {idle} s idle, over which the \
             heartbeats arriving (rate, and lateness = arrival − the guest's `sent`), each \
             agent's CPU (`/proc/<pid>/task/*/schedstat`) and at its end its RSS are read; \
             then the broker: connections per guest (`ss -tnp`, by process), their channels \
             (`rabbitmqctl list_connections`), queues whose name holds a guest id \
             (`rabbitmqctl list_queues`), and the growth of the broker's memory \
             (`rabbitmqctl status`, Erlang's total) since before the agents started, per \
             guest. Python: the oslo.messaging 18.3.1 server of part 4 \
             (`crates/netiso-messaging/tests/python/py_server.py`, Trove's serializers, \
             threading executor, `rpc_ping` and `get_filesystem_stats`), at most {cap} of them \
             (each holds about 60 MiB), the same steps; the stand-in does not heartbeat. The \
             machine is shared (other builds run beside it): the load averages at the top \
             apply. The agents' fanout queues expire 60 s after they stop \
             (`rabbit_transient_queues_ttl = 60`); topic queues are deleted at the end by \
             `fleet_sweep --delete-queues`.",
            hb = options.heartbeat_interval,
            conc = options.concurrency,
            idle = options.idle_seconds,
            cap = options.python_cap,
        ),
    );
    let mut ours_runs: Vec<SideRun> = Vec::new();
    let mut python_runs: Vec<SideRun> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut python_done: HashSet<usize> = HashSet::new();
    let available_at_start = mem_available_kib();
    for &size in &options.sizes {
        if started.elapsed() > options.budget {
            skipped.push(format!(
                "N = {size}: not started, the part had run {:.0} s (budget {:.0} s)",
                started.elapsed().as_secs_f64(),
                options.budget.as_secs_f64()
            ));
            continue;
        }
        if let Some(reason) =
            does_not_fit(size, 1, per_guest_budget_kib(&ours_runs, AGENT_BUDGET_KIB))
        {
            say(&format!("  fleet: N = {size} skipped: {reason}"));
            skipped.push(format!("N = {size} (ours): {reason}"));
            continue;
        }
        say(&format!("  fleet: {size} agents"));
        match agents(binaries, options, size) {
            Ok(side) => ours_runs.push(side),
            Err(error) => {
                say(&format!("  fleet: N = {size} (ours) failed: {error:#}"));
                skipped.push(format!("N = {size} (ours): failed: {error:#}"));
            }
        }
        let python_size = size.min(options.python_cap);
        if python_size == 0 || !python_done.insert(python_size) {
            continue;
        }
        // oslo opens a second connection for its replies.
        if let Some(reason) = does_not_fit(
            python_size,
            2,
            per_guest_budget_kib(&python_runs, PYTHON_BUDGET_KIB),
        ) {
            skipped.push(format!("N = {python_size} (Python): {reason}"));
            continue;
        }
        say(&format!("  fleet: {python_size} Python stand-ins"));
        match python_fleet(binaries, options, python_size) {
            Ok(side) => python_runs.push(side),
            Err(error) => {
                say(&format!(
                    "  fleet: N = {python_size} (Python) failed: {error:#}"
                ));
                skipped.push(format!("N = {python_size} (Python): failed: {error:#}"));
            }
        }
    }
    section.notes.push(table(&ours_runs, &python_runs));
    add_figures(&mut section, &ours_runs, &python_runs, options);
    if let Some(note) = capacity_note(&ours_runs, &python_runs, available_at_start) {
        section.notes.push(note);
    }
    if !skipped.is_empty() {
        section.notes.push(format!(
            "Not measured: {}.",
            skipped
                .iter()
                .map(|s| s.replace('\n', " "))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if ours_runs.is_empty() {
        section.failure = Some(format!(
            "no fleet size was measured: {}",
            skipped.join("; ")
        ));
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Why `guests` guests holding `connections` broker connections and `kib` of memory each
/// would not fit now, if they would not.
fn does_not_fit(guests: usize, connections: usize, kib: u64) -> Option<String> {
    match broker_sockets() {
        Ok((used, limit)) if used + guests * connections + 8 > limit => {
            return Some(format!(
                "the broker allows {limit} sockets and {used} are in use; {guests} guests need \
                 {} more (its limit comes from the file descriptor limit it was started with: \
                 `cargo xtask provision` starts it with up to 65536, capped by the hard limit)",
                guests * connections
            ));
        }
        Ok(_) => {}
        Err(error) => return Some(format!("the broker's socket limit is unknown: {error:#}")),
    }
    let available = mem_available_kib();
    let needed = guests as u64 * kib + 1024 * 1024;
    (available < needed).then(|| {
        format!(
            "{} MiB of memory available, {} MiB needed",
            available / 1024,
            needed / 1024
        )
    })
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rabbitmqctl_json(args: &[&str]) -> Result<Value> {
    let mut all = vec!["-n", RABBIT_NODE, "-q"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--formatter", "json"]);
    let text = crate::sh::output("rabbitmqctl", &all)?;
    serde_json::from_str(&text).with_context(|| format!("rabbitmqctl {args:?} printed no JSON"))
}

/// (sockets in use, socket limit) of the broker.
fn broker_sockets() -> Result<(usize, usize)> {
    let status = rabbitmqctl_json(&["status"])?;
    let fds = &status["file_descriptors"];
    let number = |key: &str| {
        fds[key]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .with_context(|| format!("no file_descriptors.{key} in `rabbitmqctl status`"))
    };
    Ok((number("sockets_used")?, number("sockets_limit")?))
}

/// The broker's memory as Erlang counts it, KiB.
fn broker_memory_kib() -> Result<f64> {
    let status = rabbitmqctl_json(&["status"])?;
    status["memory"]["total"]["erlang"]
        .as_f64()
        .map(|bytes| bytes / 1024.0)
        .context("no memory.total.erlang in `rabbitmqctl status`")
}

/// One guest of a fleet: id and instance key.
struct GuestId {
    id: String,
    key: String,
}

/// `n` guests with fresh ids and keys, and the 0600 guest list the tools read.
fn make_guests(dir: &Path, tag: &str, n: usize) -> Result<(Vec<GuestId>, PathBuf)> {
    let mut random = std::fs::File::open("/dev/urandom")?;
    let mut guests = Vec::with_capacity(n);
    for index in 0..n {
        let mut bytes = [0u8; 16];
        random.read_exact(&mut bytes)?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        guests.push(GuestId {
            id: format!("{tag}-{index:05}"),
            key,
        });
    }
    let list = dir.join("guests.txt");
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&list)
        .with_context(|| format!("cannot create {}", list.display()))?;
    for guest in &guests {
        writeln!(file, "{} {}", guest.id, guest.key)?;
    }
    Ok((guests, list))
}

/// Processes stopped together on drop: SIGTERM to all at once, then each is waited for (and
/// killed after a grace period) by its own guard.
#[derive(Default)]
struct Fleet {
    agents: Vec<ChildGuard>,
}

impl Fleet {
    fn pids(&self) -> Vec<u32> {
        self.agents.iter().map(ChildGuard::pid).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        signal_all("-TERM", &self.pids());
        // Each guard waits for its process, and kills it if it is still there after 5 s.
        self.agents.clear();
    }
}

/// Sends `signal` to `pids`, a few hundred per `kill`.
fn signal_all(signal: &str, pids: &[u32]) {
    for chunk in pids.chunks(256) {
        let mut args = vec![signal.to_owned(), "--".to_owned()];
        args.extend(chunk.iter().map(u32::to_string));
        let _ = Command::new("kill")
            .args(&args)
            .stderr(Stdio::null())
            .status();
    }
}

/// The stand-in conductor, printing heartbeats; stopped (stdin closed, then killed) on drop.
struct Conductor {
    child: Child,
    stdin: Option<ChildStdin>,
    beats: Arc<Mutex<Vec<Beat>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// One heartbeat: arrival and the guest's `sent`, seconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Beat {
    arrived: f64,
    sent: f64,
}

impl Conductor {
    fn start(tool: &Path, exchange: &str, queue: &str, guests: &Path) -> Result<Self> {
        let mut child = Command::new(tool)
            .args([exchange, queue])
            .arg(guests)
            .env(
                "NETISO_TEST_AMQP_URL",
                format!("amqp://guest:guest@{BROKER}/%2f"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", tool.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let beats: Arc<Mutex<Vec<Beat>>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = Arc::clone(&beats);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "READY" {
                    let _ = ready_tx.send(());
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["heartbeat", _, arrived, sent, _] = words.as_slice()
                    && let (Ok(arrived), Ok(sent)) = (arrived.parse(), sent.parse())
                {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Beat { arrived, sent });
                }
            }
        });
        let mut conductor = Self {
            child,
            stdin,
            beats,
            reader: Some(reader),
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            conductor.stop();
            bail!("the stand-in conductor did not start consuming within 30 s");
        }
        Ok(conductor)
    }

    /// The heartbeats that arrived between `from` and `to` (seconds since the epoch).
    fn beats_between(&self, from: f64, to: f64) -> Vec<Beat> {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|b| b.arrived >= from && b.arrived < to)
            .copied()
            .collect()
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Conductor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes one agent's configuration folder, state folder (marked prepared) and data folder.
fn write_agent_files(root: &Path, guest: &GuestId, exchange: &str, conductor: &str) -> Result<()> {
    let conf = root.join("conf.d");
    let state = root.join("state");
    let data = root.join("data");
    for dir in [&conf, &state, &data] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(state.join("guestagent.prepare.end"), "")?;
    let private = |path: PathBuf, text: String| -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    };
    private(
        conf.join("guest_info.conf"),
        format!(
            "[DEFAULT]\nguest_id={id}\ndatastore_manager=mysql\ndatastore_version=8.0\n\
             tenant_id=netiso-fleet\nnetwork_isolation=False\ninstance_rpc_encr_key={key}\n",
            id = guest.id,
            key = guest.key
        ),
    )?;
    let root = root.display();
    private(
        conf.join("trove-guestagent.conf"),
        format!(
            "[DEFAULT]\ntransport_url = rabbit://guest:guest@{BROKER}/\n\
             control_exchange = {exchange}\nconductor_queue = {conductor}\n\n\
             [oslo_messaging_rabbit]\nrabbit_transient_queues_ttl = 60\n\n\
             [mysql]\ndocker_image = 127.0.0.1:5000/netiso/busybox\ntcp_ports = 3306\n\
             mount_point = {root}/data\n\n[netiso]\nruntime = docker\n\
             docker_socket = {DOCKER_SOCKET}\ndocker_exec_root = {DOCKER_EXEC_ROOT}\n\
             plugin_socket = {root}/plugin.sock\nhostnic_state_file = {root}/hostnic.json\n\
             state_dir = {root}/state\ntenant_nic_file = {root}/eth1.json\n\
             database_container = {id}-db\n",
            id = guest.id
        ),
    )?;
    Ok(())
}

/// What an agent tells systemd once its RPC server consumes (`READY=1` comes earlier: it
/// means isolated, before the broker is reached).
const SERVING: &str = "STATUS=serving RPC";

/// Counts the agents serving RPC ([`SERVING`] notifications) on one socket shared by all.
struct ReadyCounter {
    times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyCounter {
    fn bind(path: &Path) -> Result<Self> {
        let socket =
            UnixDatagram::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, stopped) = (Arc::clone(&times), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(len) = socket.recv(&mut buffer) else {
                    continue;
                };
                if String::from_utf8_lossy(&buffer[..len]).contains(SERVING) {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Instant::now());
                }
            }
        });
        Ok(Self {
            times,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> usize {
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn last(&self) -> Option<Instant> {
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .copied()
    }
}

impl Drop for ReadyCounter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Runs the fleet tool's sweep of `rpc_ping` and `get_filesystem_stats`; all must answer.
fn sweep(
    tool: &Path,
    options: &FleetOptions,
    exchange: &str,
    guests: &Path,
) -> Result<Vec<SweepLine>> {
    let out = Command::new(tool)
        .args(["--exchange", exchange, "--concurrency"])
        .arg(options.concurrency.to_string())
        .args(["--timeout-ms", CALL_TIMEOUT_MS])
        .arg(guests)
        .args([
            "rpc_ping",
            r#"get_filesystem_stats={"fs_path": "/var/lib/mysql"}"#,
        ])
        .env(
            "NETISO_TEST_AMQP_URL",
            format!("amqp://guest:guest@{BROKER}/%2f"),
        )
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<SweepLine> = stdout.lines().filter_map(parse_sweep_line).collect();
    if lines.len() != 2 || !out.status.success() {
        // One line per guest, then the summaries: keep what was not an answer.
        let unanswered: Vec<&str> = stdout
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .nth(3)
                    .is_none_or(|w| w != "answered")
            })
            .take(20)
            .collect();
        bail!(
            "the sweep did not reach every guest ({}): {} {}",
            out.status,
            unanswered.join("\n"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(lines)
}

/// Deletes the guests' topic queues (the fanout ones expire by themselves).
fn delete_topic_queues(tool: &Path, exchange: &str, guests: &Path) {
    let status = Command::new(tool)
        .args(["--quiet", "--delete-queues", "--exchange", exchange])
        .arg(guests)
        .env(
            "NETISO_TEST_AMQP_URL",
            format!("amqp://guest:guest@{BROKER}/%2f"),
        )
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        say("  cleanup: the fleet's topic queues could not all be deleted");
    }
}

/// CPU nanoseconds of every thread of `pid`.
/// CPU time (ns) and times scheduled in (each a wake-up, for a process that sleeps between
/// events) over all of a process's threads, from their `schedstat`.
fn process_schedstat(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    tasks
        .filter_map(|task| task.ok())
        .filter_map(|task| task.file_name().to_str().and_then(|t| t.parse().ok()))
        .filter_map(|tid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()
        })
        .filter_map(|text| parse_schedstat(&text))
        .fold((0, 0), |(ns, runs), (n, r)| (ns + n, runs + r))
}

/// `(cpu ns, timeslices)` of one `schedstat` line: run time, wait time, timeslices.
fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace();
    let ns = fields.next()?.parse().ok()?;
    let runs = fields.nth(1)?.parse().ok()?;
    Some((ns, runs))
}

/// What the idle window measured.
struct Idle {
    /// CPU ms per minute, mean per process.
    cpu_ms_per_min: f64,
    /// Times scheduled in per minute, mean per process.
    wakeups_per_min: f64,
    /// RSS at the window's end, median and maximum, MiB.
    rss_median_mib: f64,
    rss_max_mib: f64,
    /// The anonymous (unshared) part of RSS at the window's end, median, MiB.
    anon_median_mib: f64,
}

/// Over the idle window: CPU per minute and, at its end, resident memory.
fn idle_window(pids: &[u32], seconds: u64) -> Result<Idle> {
    let before: Vec<(u64, u64)> = pids.iter().map(|&p| process_schedstat(p)).collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after: Vec<(u64, u64)> = pids.iter().map(|&p| process_schedstat(p)).collect();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let (total_ns, total_runs) = after.iter().zip(&before).fold(
        (0_u64, 0_u64),
        |(ns, runs), ((ns_after, runs_after), (ns_before, runs_before))| {
            (
                ns + ns_after.saturating_sub(*ns_before),
                runs + runs_after.saturating_sub(*runs_before),
            )
        },
    );
    let per_process_per_min = |total: u64| total as f64 / pids.len().max(1) as f64 / minutes;
    let cpu_ms_per_min = per_process_per_min(total_ns) / 1e6;
    let wakeups_per_min = per_process_per_min(total_runs);
    let mut rss: Vec<u64> = pids
        .iter()
        .map(|&p| sys::rss_kib(p))
        .collect::<Result<_>>()
        .context("a guest process ended during the idle window")?;
    let mut anon: Vec<u64> = pids
        .iter()
        .map(|&p| sys::anon_kib(p))
        .collect::<Result<_>>()
        .context("a guest process ended during the idle window")?;
    rss.sort_unstable();
    anon.sort_unstable();
    let mib = |sorted: &[u64], at: usize| sorted.get(at).copied().unwrap_or(0) as f64 / 1024.0;
    Ok(Idle {
        cpu_ms_per_min,
        wakeups_per_min,
        rss_median_mib: mib(&rss, rss.len() / 2),
        rss_max_mib: mib(&rss, rss.len().saturating_sub(1)),
        anon_median_mib: mib(&anon, anon.len() / 2),
    })
}

/// Connections (by process, `ss`), their channels and the queues naming a guest id.
fn broker_share(pids: &[u32], ids: &[String], memory_before_kib: f64) -> Result<BrokerShare> {
    let ours: HashSet<u32> = pids.iter().copied().collect();
    let ss = crate::sh::output(
        "ss",
        &["-Htnp", "state", "established", "( dport = :5672 )"],
    )?;
    let mut ports = HashSet::new();
    for line in ss.lines() {
        let pid = line
            .split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u32>().ok());
        let port = line
            .split_whitespace()
            .nth(2)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u64>().ok());
        if let (Some(pid), Some(port)) = (pid, port)
            && ours.contains(&pid)
        {
            ports.insert(port);
        }
    }
    let connections = rabbitmqctl_json(&["list_connections", "peer_port", "channels"])?;
    let channels: u64 = connections
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["peer_port"].as_u64().is_some_and(|p| ports.contains(&p)))
                .filter_map(|c| c["channels"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let queues = rabbitmqctl_json(&["list_queues", "name"])?;
    let queue_count = queues
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|q| q["name"].as_str())
                .filter(|name| ids.iter().any(|id| name.contains(id.as_str())))
                .count()
        })
        .unwrap_or(0);
    Ok(BrokerShare {
        connections: ports.len(),
        channels: usize::try_from(channels).unwrap_or(usize::MAX),
        queues: queue_count,
        memory_delta_kib: broker_memory_kib()? - memory_before_kib,
    })
}

/// Our side at one size.
fn agents(binaries: &ReleaseBinaries, options: &FleetOptions, n: usize) -> Result<SideRun> {
    let dir = TempDir::create()?;
    let tag = sys::unique("fleet");
    let exchange = format!("netiso-{tag}");
    let conductor_queue = format!("netiso-{tag}-conductor");
    let (guests, list) = make_guests(dir.path(), &tag, n)?;
    let ids: Vec<String> = guests.iter().map(|g| g.id.clone()).collect();
    let memory_before = broker_memory_kib()?;
    let available_before = mem_available_kib();
    let conductor = Conductor::start(
        &binaries.fleet_conductor,
        &exchange,
        &conductor_queue,
        &list,
    )?;
    for guest in &guests {
        write_agent_files(
            &dir.path().join(&guest.id),
            guest,
            &exchange,
            &conductor_queue,
        )?;
    }
    let ready = ReadyCounter::bind(&dir.path().join("notify.sock"))?;
    let mut fleet = Fleet::default();
    let spawned = Instant::now();
    for guest in &guests {
        let root = dir.path().join(&guest.id);
        let mut command = Command::new(&binaries.agent);
        command
            .arg("--config-dir")
            .arg(root.join("conf.d"))
            .args(["run", "--preflight-timeout", "2", "--heartbeat-interval"])
            .arg(options.heartbeat_interval.to_string())
            .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
            .env("RUST_LOG", "warn");
        fleet.agents.push(ChildGuard::spawn(
            "trove-guest-agent",
            command,
            &root.join("agent.log"),
            false,
        )?);
    }
    let limit = Duration::from_secs(60) + Duration::from_millis(100) * n as u32;
    // Ends early when an agent exits: it would never be ready.
    let mut polls = 0_u32;
    let all_ready = sys::poll(limit, Duration::from_millis(50), || {
        polls += 1;
        if polls.is_multiple_of(20) && fleet.agents.iter_mut().any(|agent| !agent.is_running()) {
            return Some(None);
        }
        (ready.count() >= n).then(|| ready.last())
    });
    let Some(Some(last_ready)) = all_ready else {
        let dead = fleet
            .agents
            .iter_mut()
            .zip(&guests)
            .find_map(|(agent, guest)| (!agent.is_running()).then_some(guest));
        let detail = dead.map_or(String::new(), |guest| {
            format!(
                "; {} exited:\n{}",
                guest.id,
                log_tail(&dir.path().join(&guest.id).join("agent.log"))
            )
        });
        bail!(
            "{} of {n} agents ready after {:.0} s{detail}",
            ready.count(),
            limit.as_secs_f64()
        );
    };
    let ready_ms = sys::ms(last_ready - spawned);
    say(&format!("    {n} agents ready in {ready_ms:.0} ms"));
    let sweeps = sweep(&binaries.fleet_sweep, options, &exchange, &list)?;
    for line in &sweeps {
        say(&format!(
            "    sweep {}: {:.0} ms, p50 {:.2} ms, p99 {:.2} ms",
            line.method, line.sweep_ms, line.p50_ms, line.p99_ms
        ));
    }
    let pids = fleet.pids();
    let window_start = unix_now();
    let idle = idle_window(&pids, options.idle_seconds)?;
    let machine_kib_per_guest = machine_cost_per_guest(available_before, n);
    let window_end = unix_now();
    let beats = conductor.beats_between(window_start, window_end);
    let mut lateness: Vec<Duration> = beats
        .iter()
        .map(|b| Duration::from_secs_f64((b.arrived - b.sent).max(0.0)))
        .collect();
    lateness.sort_unstable();
    let broker = broker_share(&pids, &ids, memory_before)?;
    drop(fleet);
    drop(conductor);
    delete_topic_queues(&binaries.fleet_sweep, &exchange, &list);
    Ok(SideRun {
        guests: n,
        ready_ms,
        sweeps,
        heartbeats_per_s: Some(beats.len() as f64 / (window_end - window_start)),
        lateness_ms: (!lateness.is_empty()).then(|| {
            (
                sys::ms(sys::quantile(&lateness, 0.5)),
                sys::ms(sys::quantile(&lateness, 0.99)),
                sys::ms(sys::quantile(&lateness, 1.0)),
            )
        }),
        rss_median_mib: idle.rss_median_mib,
        rss_max_mib: idle.rss_max_mib,
        anon_median_mib: idle.anon_median_mib,
        idle_cpu_ms_per_min: idle.cpu_ms_per_min,
        idle_wakeups_per_min: idle.wakeups_per_min,
        broker,
        machine_kib_per_guest,
    })
}

/// The drop of `MemAvailable` since `available_before`, per guest (0 when it rose).
fn machine_cost_per_guest(available_before: u64, guests: usize) -> f64 {
    available_before.saturating_sub(mem_available_kib()) as f64 / guests.max(1) as f64
}

/// Python stand-ins: stopped (stdin closed, then SIGTERM, then SIGKILL) on drop.
#[derive(Default)]
struct PythonFleet {
    children: Vec<(Child, Option<ChildStdin>)>,
}

impl Drop for PythonFleet {
    fn drop(&mut self) {
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left: Vec<u32> = Vec::new();
        for (child, _) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                left.push(child.id());
            }
        }
        signal_all("-KILL", &left);
        for (child, _) in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// Python's side at one size.
fn python_fleet(binaries: &ReleaseBinaries, options: &FleetOptions, n: usize) -> Result<SideRun> {
    let dir = TempDir::create()?;
    let tag = sys::unique("pyfleet");
    let exchange = format!("netiso-{tag}");
    let (guests, list) = make_guests(dir.path(), &tag, n)?;
    let ids: Vec<String> = guests.iter().map(|g| g.id.clone()).collect();
    let memory_before = broker_memory_kib()?;
    let available_before = mem_available_kib();
    let venv =
        std::env::var("NETISO_PY_VENV").unwrap_or_else(|_| "/var/lib/trove-netiso/venv".to_owned());
    let scripts = Path::new("crates/netiso-messaging/tests/python").canonicalize()?;
    let url = format!("amqp://guest:guest@{BROKER}/%2f");
    let mut fleet = PythonFleet::default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let spawned = Instant::now();
    for guest in &guests {
        let topic = format!("guestagent.{}", guest.id);
        let mut child = Command::new(Path::new(&venv).join("bin/python"))
            .arg(scripts.join("py_server.py"))
            .args([&url, &exchange, &topic, &guest.id, &guest.key])
            .current_dir(&scripts)
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start py_server.py: run `cargo xtask provision`")?;
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            let tx = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) if line == "READY" => {
                            let _ = tx.send(Instant::now());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        }
        fleet.children.push((child, stdin));
    }
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_secs(2) * n as u32;
    let mut last_ready = spawned;
    for count in 0..n {
        let wait = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(wait) {
            Ok(at) => last_ready = last_ready.max(at),
            Err(_) => bail!("{count} of {n} Python stand-ins ready before the deadline"),
        }
    }
    let ready_ms = sys::ms(last_ready - spawned);
    say(&format!(
        "    {n} Python stand-ins ready in {ready_ms:.0} ms"
    ));
    let sweeps = sweep(&binaries.fleet_sweep, options, &exchange, &list)?;
    let pids: Vec<u32> = fleet.children.iter().map(|(c, _)| c.id()).collect();
    let idle = idle_window(&pids, options.idle_seconds.min(30))?;
    let machine_kib_per_guest = machine_cost_per_guest(available_before, n);
    let broker = broker_share(&pids, &ids, memory_before)?;
    drop(fleet);
    delete_topic_queues(&binaries.fleet_sweep, &exchange, &list);
    Ok(SideRun {
        guests: n,
        ready_ms,
        sweeps,
        heartbeats_per_s: None,
        lateness_ms: None,
        rss_median_mib: idle.rss_median_mib,
        rss_max_mib: idle.rss_max_mib,
        anon_median_mib: idle.anon_median_mib,
        idle_cpu_ms_per_min: idle.cpu_ms_per_min,
        idle_wakeups_per_min: idle.wakeups_per_min,
        broker,
        machine_kib_per_guest,
    })
}

/// How many guests of each side the memory available when the part began would hold, at
/// the cost per guest measured at each side's largest size.
fn capacity_note(ours: &[SideRun], python: &[SideRun], available_kib: u64) -> Option<String> {
    let side = |runs: &[SideRun], name: &str| {
        runs.iter().max_by_key(|r| r.guests).map(|r| {
            let cost = r.cost_kib_per_guest();
            format!(
                "{name}: {:.1} MiB per guest (at N = {}), about {} guests",
                cost / 1024.0,
                r.guests,
                (available_kib as f64 / cost.max(1.0)).floor()
            )
        })
    };
    let sides: Vec<String> = [side(ours, "ours"), side(python, "Python")]
        .into_iter()
        .flatten()
        .collect();
    (!sides.is_empty()).then(|| {
        format!(
            "Where each side stops fitting: what a guest costs the machine (the drop of \
             `MemAvailable` from before the guests started to the end of the idle window, per \
             guest: the process, its kernel objects and the broker's growth; at least its \
             private memory and broker share), against the {:.0} MiB available when the part \
             began: {}.",
            available_kib as f64 / 1024.0,
            sides.join("; ")
        )
    })
}

/// The per-size table, ours beside Python's.
fn table(ours: &[SideRun], python: &[SideRun]) -> String {
    let mut out = String::from(
        "| guests | side | spawn → all ready | sweep `rpc_ping` (p50 / p99 per call) | sweep \
         `get_filesystem_stats` (p50 / p99) | heartbeats/s (lateness p50 / p99 / max) | RSS \
         per guest, median (max); its private part (`RssAnon`), median | idle CPU per guest (wake-ups per minute) | broker memory per guest | \
         machine memory per guest (`MemAvailable` drop) | connections / channels / queues per \
         guest |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let rows = ours
        .iter()
        .map(|r| ("ours", r))
        .chain(python.iter().map(|r| ("Python", r)));
    let mut rows: Vec<(&str, &SideRun)> = rows.collect();
    rows.sort_by_key(|(side, r)| (r.guests, *side != "ours"));
    for (side, r) in rows {
        let sweep = |i: usize| {
            r.sweeps.get(i).map_or("—".to_owned(), |s| {
                format!(
                    "{}/{} in {:.0} ms ({:.2} / {:.2} ms)",
                    s.answered, s.guests, s.sweep_ms, s.p50_ms, s.p99_ms
                )
            })
        };
        let beats = match (r.heartbeats_per_s, r.lateness_ms) {
            (Some(rate), Some((p50, p99, max))) => {
                format!("{rate:.2} ({p50:.1} / {p99:.1} / {max:.1} ms)")
            }
            (Some(rate), None) => format!("{rate:.2}"),
            _ => "— (does not heartbeat)".to_owned(),
        };
        let per = |count: usize| count as f64 / r.guests.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {side} | {:.2} s | {} | {} | {beats} | {:.1} MiB ({:.1}); {:.2} MiB \
             private | {:.2} ms/min ({:.0}) | {:.0} KiB | {:.1} MiB | {:.2} / {:.2} / {:.2} |",
            r.guests,
            r.ready_ms / 1e3,
            sweep(0),
            sweep(1),
            r.rss_median_mib,
            r.rss_max_mib,
            r.anon_median_mib,
            r.idle_cpu_ms_per_min,
            r.idle_wakeups_per_min,
            r.broker.memory_delta_kib / r.guests.max(1) as f64,
            r.machine_kib_per_guest / 1024.0,
            per(r.broker.connections),
            per(r.broker.channels),
            per(r.broker.queues),
        );
    }
    out
}

/// Target figures at the largest size measured (and Python's at its largest).
fn add_figures(
    section: &mut Section,
    ours: &[SideRun],
    python: &[SideRun],
    options: &FleetOptions,
) {
    let Some(largest) = ours.iter().max_by_key(|r| r.guests) else {
        return;
    };
    let reference = python.iter().max_by_key(|r| r.guests);
    let n = largest.guests;
    if let Some(ping) = largest.sweeps.first() {
        let figure = Figure::cost(
            format!("sweep of {n} guests, `rpc_ping`, every one answered"),
            "s",
            ping.sweep_ms / 1e3,
        );
        section.figures.push(if n >= 1000 {
            figure.target(Target::ValueAtMost(10.0))
        } else {
            figure
        });
    }
    let mut rss = Figure::cost(
        format!("agent idle RSS, median of {n}"),
        "MiB",
        largest.rss_median_mib,
    )
    .target(Target::ValueAtMost(8.0));
    let mut cpu = Figure::cost(
        format!(
            "agent idle CPU per minute, mean of {n} (heartbeat every {} s)",
            options.heartbeat_interval
        ),
        "ms",
        largest.idle_cpu_ms_per_min,
    )
    .target(Target::ValueAtMost(1.0));
    let mut memory = Figure::cost(
        format!("broker memory per guest ({n} of ours)"),
        "KiB",
        largest.broker.memory_delta_kib / n.max(1) as f64,
    );
    if let Some(py) = reference {
        rss = rss.against(py.rss_median_mib);
        cpu = cpu.against(py.idle_cpu_ms_per_min);
        memory = memory
            .against(py.broker.memory_delta_kib / py.guests.max(1) as f64)
            .target(Target::RatioAtMost(1.0));
        section.notes.push(format!(
            "References are the Python stand-ins at N = {} (this machine holds at most {} of \
             them in this part).",
            py.guests, options.python_cap
        ));
    }
    let mut wakeups = Figure::cost(
        format!("agent idle wake-ups per minute, mean of {n}"),
        "/min",
        largest.idle_wakeups_per_min,
    );
    if let Some(py) = reference {
        wakeups = wakeups.against(py.idle_wakeups_per_min);
    }
    section.notes.push(
        "Where an idle agent's wake-ups come from (traced with `strace -e epoll_wait` on one \
         agent): each timer that expires wakes the current-thread runtime once, and one set \
         more than 4 s ahead up to twice more before that, as tokio's timer wheel moves it to \
         finer slots. The timers of an idle agent: amqprs's channel dispatcher purges stale \
         consumer buffers every 10 s on each channel (`CONSUMER_PURGE_INTERVAL`, not \
         configurable; the agent holds two channels, consuming and publishing with confirms, \
         kept apart so that a publish the broker refuses, which closes its channel, cannot \
         stop the consumers): about 24 wake-ups a minute, four per 10 s (the two expiries and \
         the wheel's moves), more than half of an idle agent's; the AMQP heartbeat, sent and \
         received every 30 s; the Trove heartbeat every 60 s (one Docker inspect on a new \
         unix connection, one encrypted publish and its confirm); the connection's liveness \
         check every 120 s. The CPU per wake-up is mostly the kernel's (the context switch \
         and `epoll_wait`), and it grows when the machine is otherwise idle (cold caches)."
            .to_owned(),
    );
    let mut private = Figure::cost(
        format!(
            "agent idle private memory (`RssAnon`: RSS without the code pages every agent \
             shares), median of {n}"
        ),
        "MiB",
        largest.anon_median_mib,
    );
    if let Some(py) = reference {
        private = private.against(py.anon_median_mib);
    }
    section.figures.extend([rss, private, cpu, wakeups, memory]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sweep_summary() {
        let line = "sweep method=rpc_ping guests=100 answered=99 refused=0 timed_out=1 failed=0 sweep_ms=85.1 p50_ms=1.62 p99_ms=3.90";
        let parsed = parse_sweep_line(line).expect("parsed");
        assert_eq!(parsed.method, "rpc_ping");
        assert_eq!((parsed.guests, parsed.answered), (100, 99));
        assert_eq!(parsed.p99_ms, 3.9);
        assert_eq!(parse_sweep_line("heartbeat x 1 2 ok"), None);
    }

    #[test]
    fn reads_cpu_time_and_timeslices_from_schedstat() {
        assert_eq!(
            parse_schedstat("14685707 201833 140\n"),
            Some((14_685_707, 140))
        );
        assert_eq!(parse_schedstat("14685707"), None);
    }

    #[test]
    fn a_larger_size_is_budgeted_from_what_the_largest_run_cost() {
        assert_eq!(per_guest_budget_kib(&[], 24 * 1024), 24 * 1024);
        let run = |guests, machine_kib_per_guest| SideRun {
            guests,
            machine_kib_per_guest,
            anon_median_mib: 1.0,
            broker: BrokerShare {
                memory_delta_kib: 4096.0 * guests as f64,
                ..BrokerShare::default()
            },
            ..SideRun::default()
        };
        // 6 MiB measured at N = 500 counts, not the noisier N = 10.
        assert_eq!(
            per_guest_budget_kib(&[run(10, 20480.0), run(500, 6144.0)], 0),
            9216
        );
        // A drop below private memory plus the broker share (other work freed memory) is
        // not believed.
        assert_eq!(per_guest_budget_kib(&[run(100, 0.0)], 0), 7680);
    }

    #[test]
    fn the_capacity_note_names_each_side() {
        let run = |guests, kib| SideRun {
            guests,
            machine_kib_per_guest: kib,
            ..SideRun::default()
        };
        let note =
            capacity_note(&[run(500, 5120.0)], &[run(100, 65536.0)], 1024 * 1024).expect("a note");
        assert!(note.contains("ours: 5.0 MiB per guest (at N = 500), about 204 guests"));
        assert!(note.contains("Python: 64.0 MiB per guest (at N = 100), about 16 guests"));
        assert_eq!(capacity_note(&[], &[], 1024), None);
    }

    #[test]
    fn the_table_puts_sides_of_a_size_together() {
        let run = |guests| SideRun {
            guests,
            ..SideRun::default()
        };
        let text = table(&[run(10), run(100)], &[run(10)]);
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("| 10 | ours"));
        assert!(rows[1].starts_with("| 10 | Python"));
        assert!(rows[2].starts_with("| 100 | ours"));
    }
}
