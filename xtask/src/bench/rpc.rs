//! Part 4: RPC. The messaging crate's `rpc_bench` example (our client calling our server, then
//! a Python oslo.messaging 18.3.1 server with Trove's serializer, on the same broker, in one
//! run) is run and its table read back into figures.

use super::build::ReleaseBinaries;
use super::report::{Figure, Section, Target};
use crate::sh::say;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Sequential calls (the example makes twice as many with 8 callers).
const CALLS: &str = "2000";

/// One row of the example's table.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    seq_p50: f64,
    seq_p99: f64,
    seq_rate: f64,
    conc_p50: f64,
    conc_p99: f64,
    conc_rate: f64,
    cpu_us: f64,
    rss_mib: f64,
}

fn parse_row(line: &str) -> Option<Row> {
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.trim_end_matches("ms").parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    // server | seq p50 | seq p99 | seq mean | seq call/s | 8x p50 | 8x p99 | 8x call/s | CPU | RSS
    if v.len() != 9 {
        return None;
    }
    Some(Row {
        seq_p50: v[0],
        seq_p99: v[1],
        seq_rate: v[3],
        conc_p50: v[4],
        conc_p99: v[5],
        conc_rate: v[6],
        cpu_us: v[7],
        rss_mib: v[8],
    })
}

/// Runs part 4.
pub fn run(binaries: &ReleaseBinaries) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "4. RPC: rpc_ping against Python oslo.messaging; the agent's footprint",
        &format!(
            "`cargo run --release -p netiso-messaging --example rpc_bench -- {CALLS}` (see \
             `crates/netiso-messaging/README.md`): `rpc_ping` with Trove's `SecureSerializer` \
             (every argument, result and the context AES-encrypted), our client calling our \
             server in its own process (single-threaded runtime, as the agent runs it) and the \
             Python oslo.messaging 18.3.1 server \
             (`crates/netiso-messaging/tests/python/py_server.py`, Trove's serializers, \
             threading executor) on the same RabbitMQ, both running side by side and taking \
             turns in 10 rounds so that a change of load weighs on both alike. {CALLS} \
             sequential calls each, then twice as many with 8 concurrent callers, after 200 \
             untimed. CPU per call and RSS are the server process's (`/proc`). Targets: p50 ≤ 1/2 and RSS ≤ 1/5 of \
             Python's (the messaging crate's), and issue 17's: 8-caller throughput ≥ 10× and \
             server CPU per call ≤ 1/20 of Python's. \
             A third server takes turns with them, the floor: a minimal responder of the same \
             example on the same broker, called by the same client, that acks, reads \
             `_msg_id` and `_reply_q` from the envelope and publishes a precomputed encrypted \
             `true` to the reply queue (confirmed, as our server does), without decrypting or \
             dispatching: the round trip any server pays (issue 17's target: our sequential \
             p50 within 1.15× of it). \
             Then the same calls to two servers of ours taking turns, one over TLS (RabbitMQ's \
             5671 listener, TLS 1.3, client and server connections both TLS) and one in \
             plaintext: the \"over TLS\" figures, with plaintext as their reference."
        ),
    );
    say(&format!("$ {} {CALLS}", binaries.rpc_bench.display()));
    let out = Command::new(&binaries.rpc_bench)
        .arg(CALLS)
        .envs(crate::layout::test_environment())
        .output()
        .with_context(|| format!("cannot run {}", binaries.rpc_bench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "rpc_bench failed ({}):\n{}\n{}",
            out.status,
            stdout.trim(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(parse_row)
    };
    let (Some(ours), Some(python), Some(floor)) = (row("rust"), row("python"), row("floor")) else {
        bail!("rpc_bench printed no table:\n{stdout}");
    };
    let figures = [
        Figure::cost("round trip p50, sequential", "ms", ours.seq_p50)
            .against(python.seq_p50)
            .target(Target::RatioAtMost(0.5)),
        Figure::cost(
            "round trip p50, sequential, against the floor (minimal responder)",
            "ms",
            ours.seq_p50,
        )
        .against(floor.seq_p50)
        .target(Target::RatioAtMost(1.15)),
        Figure::cost(
            "Python's round trip p50, sequential, against the floor",
            "ms",
            python.seq_p50,
        )
        .against(floor.seq_p50),
        Figure::cost("round trip p99, sequential", "ms", ours.seq_p99).against(python.seq_p99),
        // One caller at a time is bounded by the client and the broker (the floor above
        // measures that bound); the sequential target is the one against the floor.
        Figure::rate("calls/s, sequential", "calls/s", ours.seq_rate).against(python.seq_rate),
        Figure::cost("round trip p50, 8 callers", "ms", ours.conc_p50).against(python.conc_p50),
        Figure::cost("round trip p99, 8 callers", "ms", ours.conc_p99).against(python.conc_p99),
        Figure::rate("calls/s, 8 callers", "calls/s", ours.conc_rate)
            .against(python.conc_rate)
            .target(Target::GainAtLeast(10.0)),
        Figure::rate(
            "calls/s, 8 callers, against the floor (the most any server gets from this client \
             and broker)",
            "calls/s",
            ours.conc_rate,
        )
        .against(floor.conc_rate),
        Figure::rate(
            "the floor's calls/s, 8 callers, against Python's",
            "calls/s",
            floor.conc_rate,
        )
        .against(python.conc_rate),
        Figure::cost("server CPU per call", "µs", ours.cpu_us)
            .against(python.cpu_us)
            .target(Target::RatioAtMost(0.05)),
        Figure::cost("server RSS", "MiB", ours.rss_mib)
            .against(python.rss_mib)
            .target(Target::RatioAtMost(0.2)),
    ];
    section.figures.extend(figures);
    // The second table: our client and server over TLS, against the same pair in plaintext.
    let (Some(plain), Some(tls)) = (row("plain"), row("tls")) else {
        bail!("rpc_bench printed no TLS table:\n{stdout}");
    };
    section.figures.extend([
        Figure::cost(
            "over TLS: round trip p50, sequential (ref.: plaintext)",
            "ms",
            tls.seq_p50,
        )
        .against(plain.seq_p50),
        Figure::cost(
            "over TLS: round trip p99, sequential (ref.: plaintext)",
            "ms",
            tls.seq_p99,
        )
        .against(plain.seq_p99),
        Figure::cost(
            "over TLS: round trip p50, 8 callers (ref.: plaintext)",
            "ms",
            tls.conc_p50,
        )
        .against(plain.conc_p50),
        Figure::cost(
            "over TLS: server CPU per call (ref.: plaintext)",
            "µs",
            tls.cpu_us,
        )
        .against(plain.cpu_us),
    ]);
    // One call at a time, a round trip is two broker hops and the client as well as the
    // server; only the server differs. Our server's CPU per call bounds what it adds, so the
    // rest of our round trip is what both servers pay: it caps the sequential gain.
    let client_cpu_us = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client CPU per call (the same for both servers):"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("us")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("rpc_bench printed no client CPU line:\n{stdout}"))?;
    section.figures.push(Figure::cost(
        "client CPU per call (the same client for both servers)",
        "µs",
        client_cpu_us,
    ));
    let our_mean_ms = 1e3 / ours.seq_rate;
    let python_mean_ms = 1e3 / python.seq_rate;
    let common_ms = (our_mean_ms - ours.cpu_us / 1e3).max(f64::EPSILON);
    section.notes.push(format!(
        "Sequential calls: our mean round trip is {our_mean_ms:.3} ms, of which our server \
         spends {:.3} ms of CPU; the remaining {common_ms:.3} ms is paid by the Python server \
         as well: the client ({:.3} ms of CPU per call), RabbitMQ's two hops, and four \
         process wake-ups per call (client, broker, server, broker), which cost tens of µs \
         each on this virtual machine. So one caller at a time can be at most {:.1}× faster \
         against Python's mean of {python_mean_ms:.3} ms, however fast our server. The \
         8-caller figure, where the server is the bottleneck, is the one that measures the \
         server.",
        ours.cpu_us / 1e3,
        client_cpu_us / 1e3,
        python_mean_ms / common_ms
    ));
    section.notes.push(format!(
        "rpc_bench's own output:\n\n```text\n{}\n```",
        stdout.trim()
    ));
    match agent_footprint(&binaries.agent) {
        Ok((ready, rss_mib)) => {
            section.figures.push(Figure::cost(
                "agent start to serving RPC (bridged guest)",
                "ms",
                ready,
            ));
            section.figures.push(
                Figure::cost(
                    "agent idle RSS 3 s after ready, vs the Python RPC server",
                    "MiB",
                    rss_mib,
                )
                .against(python.rss_mib),
            );
            section.notes.push(
                "The agent's RSS is compared with the Python oslo.messaging server above (a \
                 lower bound for Trove's Python guest agent, which loads far more: Trove's \
                 guest agent itself is not installed by the bench, its dependency tree is the \
                 whole of Trove). The agent runs in `netiso-guest` in bridged mode \
                 (`network_isolation = False`, no tenant NIC), with the provisioned dockerd and \
                 RabbitMQ through the management network; ready is its systemd \
                 `STATUS=serving RPC` notification, sent once the RPC server consumes (its \
                 `READY=1` comes earlier: it means isolated)."
                    .to_owned(),
            );
        }
        Err(error) => {
            section.failure = Some(format!("the agent's footprint: {error:#}"));
        }
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Starts `trove-guest-agent` in the provisioned guest (bridged mode), times it to its
/// `STATUS=serving RPC` notification, reads its RSS after 3 s of idling, stops it; returns
/// (ms, MiB).
fn agent_footprint(agent: &Path) -> Result<(f64, f64)> {
    use super::sys::{self, ChildGuard, TempDir};
    use crate::layout::{DOCKER_EXEC_ROOT, DOCKER_SOCKET, GUEST_NETNS, MGMT_GATEWAY_ADDR};
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    let dir = TempDir::create()?;
    let root = dir.path().display().to_string();
    let id = format!("0e7c5b3a-bench-4000-8000-{:012}", std::process::id());
    let conf = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf)?;
    std::fs::create_dir_all(dir.path().join("state"))?;
    std::fs::write(
        conf.join("guest_info.conf"),
        format!(
            "[DEFAULT]\nguest_id={id}\ndatastore_manager=mysql\ndatastore_version=8.0\n\
             tenant_id=netiso-bench\nnetwork_isolation=False\n\
             instance_rpc_encr_key=Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq\n"
        ),
    )?;
    std::fs::write(
        conf.join("trove-guestagent.conf"),
        format!(
            "[DEFAULT]\ntransport_url = rabbit://guest:guest@{MGMT_GATEWAY_ADDR}:5672/\n\
             control_exchange = netiso-bench-{pid}\nconductor_queue = netiso-bench-conductor-{pid}\n\
             \n[mysql]\ndocker_image = {MGMT_GATEWAY_ADDR}:5000/netiso/busybox\ntcp_ports = 3306\n\
             mount_point = {root}/data\n\n[netiso]\nruntime = docker\n\
             docker_socket = {DOCKER_SOCKET}\ndocker_exec_root = {DOCKER_EXEC_ROOT}\n\
             plugin_socket = {root}/plugin.sock\nhostnic_state_file = {root}/hostnic.json\n\
             state_dir = {root}/state\ntenant_nic_file = {root}/eth1.json\n\
             database_container = netiso-bench-db-{pid}\n",
            pid = std::process::id()
        ),
    )?;
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", GUEST_NETNS])
        .arg(agent)
        .arg("--config-dir")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &notify_path);
    let log = dir.path().join("agent.log");
    let started = Instant::now();
    let mut process = ChildGuard::spawn("trove-guest-agent", command, &log, false)?;
    let mut buffer = [0u8; 512];
    // Bounded: each receive waits at most 60 s, and an agent sends a handful of states.
    let mut ready = None;
    for _ in 0..16 {
        let Ok(len) = notify.recv(&mut buffer) else {
            break;
        };
        if String::from_utf8_lossy(&buffer[..len]).contains("STATUS=serving RPC") {
            ready = Some(started.elapsed());
            break;
        }
    }
    let Some(ready) = ready else {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "the agent sent no `STATUS=serving RPC` within 60 s; log:\n{}",
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    };
    std::thread::sleep(Duration::from_secs(3));
    let rss = sys::rss_kib(process.pid())?;
    process.stop(Duration::from_secs(30));
    delete_queues_of(&id);
    Ok((sys::ms(ready), rss as f64 / 1024.0))
}

/// Removes the broker queues named after the bench agent's guest id (oslo's queues outlive
/// their consumer).
fn delete_queues_of(guest_id: &str) {
    let Ok(listed) = crate::sh::output(
        "rabbitmqctl",
        &[
            "-n",
            crate::layout::RABBIT_NODE,
            "-q",
            "list_queues",
            "name",
        ],
    ) else {
        return;
    };
    for queue in listed
        .lines()
        .map(str::trim)
        .filter(|q| q.contains(guest_id))
    {
        let _ = crate::sh::output(
            "rabbitmqctl",
            &[
                "-n",
                crate::layout::RABBIT_NODE,
                "-q",
                "delete_queue",
                queue,
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_table_row() {
        let line = "rust       0.440ms   6.700ms   0.640ms       1572   1.480ms  12.200ms       3761         72.0       5.4";
        let row = parse_row(line).expect("parsed");
        assert_eq!(row.seq_rate, 1572.0);
        assert_eq!(row.rss_mib, 5.4);
        assert_eq!(row.conc_p99, 12.2);
    }
}
