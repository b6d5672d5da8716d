//! Part 1: plugin latency, ours (`docker-hostnic`, release build) against Trove's
//! (`trove/cmd/network_driver.py` under gunicorn, one worker), same requests, same namespace.

use super::http::PluginClient;
use super::report::{Figure, Section, Target};
use super::sys::{self, ChildGuard, LinkGuard, Netns, TempDir, ms, quantile};
use super::trove_ref;
use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Requests per endpoint and plugin (the issue asks for at least 2 000).
const REQUESTS: usize = 2_000;
/// Untimed requests first (imports, caches, connection set-up).
const WARM_UP: usize = 50;
const NETWORK_ID: &str = "5b7e2c4d9f1a3e6b8c0d2f4a6b8c0e1f3a5c7e9b1d3f5a7c9e0b2d4f6a8c0e2f";
const ENDPOINT_ID: &str = "7c9e1a3b5d7f9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d";
/// A sandbox key Trove's schema accepts (`^/var/run/docker/netns/[0-9a-f]{12}$`).
const SANDBOX_KEY: &str = "/var/run/docker/netns/4f2a9c1e7b3d";

/// The three calls measured, with the bodies dockerd sends.
fn timed_calls() -> [(&'static str, &'static str, String); 3] {
    [
        ("Plugin.Activate", "/Plugin.Activate", String::new()),
        (
            "CreateEndpoint",
            "/NetworkDriver.CreateEndpoint",
            format!(
                r#"{{"NetworkID":"{NETWORK_ID}","EndpointID":"{ENDPOINT_ID}","Interface":{{"Address":"10.254.0.10/24","AddressIPv6":"","MacAddress":""}},"Options":{{"com.docker.network.endpoint.exposedports":[{{"Proto":6,"Port":3306}}],"com.docker.network.portmap":[]}}}}"#
            ),
        ),
        (
            "Join",
            "/NetworkDriver.Join",
            format!(
                r#"{{"NetworkID":"{NETWORK_ID}","EndpointID":"{ENDPOINT_ID}","SandboxKey":"{SANDBOX_KEY}","Options":{{"com.docker.network.endpoint.exposedports":[{{"Proto":6,"Port":3306}}],"com.docker.network.portmap":[]}}}}"#
            ),
        ),
    ]
}

fn create_network(mac: &str) -> String {
    format!(
        r#"{{"NetworkID":"{NETWORK_ID}","Options":{{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{{"hostnic_mac":"{mac}"}}}},"IPv4Data":[{{"AddressSpace":"LocalDefault","Pool":"10.254.0.0/24","Gateway":"10.254.0.1/24"}}],"IPv6Data":[]}}"#
    )
}

fn eth1_json(mac: &str) -> String {
    format!(
        r#"{{"mac_address": "{mac}", "ipv4_address": "10.254.0.10", "ipv4_cidr": "10.254.0.0/24", "ipv4_gateway": "10.254.0.1", "ipv4_host_routes": [{{"destination": "10.253.0.0/24", "nexthop": "10.254.0.1"}}]}}"#
    )
}

/// Latency figures of one plugin for one call.
struct CallStats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

/// What one plugin measured.
struct PluginRun {
    calls: Vec<(&'static str, CallStats)>,
    rss_kib: u64,
    connections: u64,
}

/// Runs part 1.
pub fn run(our_plugin: &Path) -> Result<Section> {
    let mut section = Section::new(
        "1. Plugin latency: Activate, CreateEndpoint, Join",
        &format!(
            "Both plugins run in one throwaway network namespace holding a veth whose MAC the \
             network names, so both `Join`s find a real link by MAC. Ours: `docker-hostnic` \
             (release build) with `--socket`, `--state-file` and `--tenant-nic-file` in a temp \
             folder. Trove's: trove {} from PyPI, `trove/cmd/network_driver.py` started by its \
             own `StandaloneApplication` (gunicorn, one sync worker, as `trove-docker-plugin` \
             does; `xtask/bench/trove_plugin.py` only changes the socket path), with eventlet's \
             monkey-patching from `trove/cmd/__init__.py`, and an overlay on `/etc` in its \
             private mount namespace for `/etc/trove/eth1.json` and `/etc/docker/hostnic.json`. \
             The same request bodies (as dockerd sends them) go to both over a unix socket, \
             from one client in this process, one request at a time: {WARM_UP} untimed, then \
             {REQUESTS} timed per call. The connection is kept open while the server allows \
             it: gunicorn's sync worker closes it after every answer, so Trove's figures include \
             one connect per request, as dockerd experiences it. Requests/s is sequential \
             throughput (1 / mean latency). RSS is `VmRSS` after the run (gunicorn: master + \
             worker).",
            trove_ref::TROVE_VERSION
        ),
    );
    let started = Instant::now();
    let netns = Netns::create("ntbp")?;
    let veth = sys::unique("ntbv");
    let peer = sys::unique("ntbw");
    let pid = std::process::id();
    let mac = format!("fa:16:3e:b0:{:02x}:{:02x}", (pid >> 8) & 0xff, pid & 0xff);
    sys::ip(&[
        "-n",
        netns.name(),
        "link",
        "add",
        &veth,
        "address",
        &mac,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
    ])?;
    let _veth = LinkGuard::new(netns.name(), &veth);
    let dir = TempDir::create()?;

    let ours = {
        let socket = dir.path().join("ours.sock");
        std::fs::write(dir.path().join("eth1.json"), eth1_json(&mac))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns.name()])
            .arg(our_plugin)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-file")
            .arg(dir.path().join("hostnic.json"))
            .arg("--tenant-nic-file")
            .arg(dir.path().join("eth1.json"));
        let plugin = ChildGuard::spawn("our plugin", command, &dir.path().join("ours.log"), true)?;
        measure(plugin, &socket, &mac, &dir.path().join("ours.log"), false).context("our plugin")?
    };
    let trove = {
        let socket = dir.path().join("trove.sock");
        let log = dir.path().join("trove.log");
        let plugin =
            trove_ref::plugin().start(netns.name(), &dir, &eth1_json(&mac), &socket, &log)?;
        measure(plugin, &socket, &mac, &log, true).context("Trove's plugin")?
    };

    for ((name, o), (_, t)) in ours.calls.iter().zip(&trove.calls) {
        let join = *name == "Join";
        let p50_target = if join {
            Target::RatioAtMost(1.0 / 50.0)
        } else {
            Target::None
        };
        section.figures.push(
            Figure::cost(format!("{name} p50"), "ms", ms(o.p50))
                .against(ms(t.p50))
                .target(p50_target),
        );
        let p99 = Figure::cost(format!("{name} p99"), "ms", ms(o.p99)).against(ms(t.p99));
        section.figures.push(if join {
            p99.target(Target::ValueAtMost(1.0))
        } else {
            p99
        });
        section.figures.push(
            Figure::rate(
                format!("{name} requests/s (sequential)"),
                "req/s",
                o.per_second,
            )
            .against(t.per_second),
        );
    }
    section.figures.push(
        Figure::cost(
            "plugin RSS after the run (gunicorn: master + worker)",
            "MiB",
            ours.rss_kib as f64 / 1024.0,
        )
        .against(trove.rss_kib as f64 / 1024.0)
        .target(Target::RatioAtMost(0.1)),
    );
    if let Some((p50, p99)) = server_side_join(&dir.path().join("ours.log")) {
        let stats = |run: &PluginRun, call: &str| {
            run.calls
                .iter()
                .find(|(name, _)| *name == call)
                .map(|(_, stats)| (ms(stats.p50) * 1e3, ms(stats.p99) * 1e3))
                .unwrap_or_default()
        };
        let (join_p50_us, client_p99_us) = stats(&ours, "Join");
        let (activate_p50_us, _) = stats(&ours, "Plugin.Activate");
        let (trove_join_p50_us, _) = stats(&trove, "Join");
        section.notes.push(format!(
            "`Join` p50 budget: 1/50 of Trove's measured p50 is {:.0} µs; ours is {join_p50_us:.0} \
             µs, of which the plugin's own handling is {p50} µs (below) and an empty call \
             (`Plugin.Activate`, the socket round trip and HTTP) {activate_p50_us:.0} µs. The \
             handling is one `eth1.json` read and one rtnetlink link dump (the same work \
             Trove's `Join` does with pyroute2). The issue's reference for Trove, about 28 ms, \
             would give a budget of 560 µs; Trove's `Join` measured here is faster than that.",
            trove_join_p50_us / 50.0
        ));
        section.notes.push(format!(
            "Our plugin's own handling time of the timed `Join`s (its request log's \
             `duration_us`, wall time inside the plugin: decode, `eth1.json` read, rtnetlink \
             link dump, answer): p50 {p50} µs, p99 {p99} µs, against {client_p99_us:.0} µs p99 \
             seen by the client. The rest of the client's figure is the unix socket and the \
             scheduling of two processes; on this shared 2-core machine (load averages in the \
             table above) the plugin's own wall time includes the moments its thread waits \
             for a CPU, so a p99 over 1 ms measures the machine's other jobs as much as the \
             plugin (its p50 is the cost of the work itself)."
        ));
    }
    section.notes.push(format!(
        "Connections opened for {} requests: ours {}, Trove's {}. Issue's reference figures \
         for Trove on a 2-core machine of this kind: Join p50 about 28 ms, gunicorn RSS about 76 MB.",
        3 * (REQUESTS + WARM_UP) + 1,
        ours.connections,
        trove.connections
    ));
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Waits for the plugin, creates the network (untimed), times the three calls, reads RSS,
/// stops the plugin.
fn measure(
    mut plugin: ChildGuard,
    socket: &Path,
    mac: &str,
    log: &Path,
    gunicorn: bool,
) -> Result<PluginRun> {
    let ready = sys::poll(Duration::from_secs(60), Duration::from_millis(50), || {
        let mut client = PluginClient::new(socket);
        client
            .post("/Plugin.Activate", b"")
            .ok()
            .filter(|a| a.status == 200)
    });
    if ready.is_none() {
        bail!(
            "the plugin did not answer Plugin.Activate on {} within 60 s; log:\n{}",
            socket.display(),
            tail(log)
        );
    }
    let mut client = PluginClient::new(socket);
    let created = client.post(
        "/NetworkDriver.CreateNetwork",
        create_network(mac).as_bytes(),
    )?;
    ensure!(
        created.status == 200,
        "CreateNetwork answered {}: {}",
        created.status,
        String::from_utf8_lossy(&created.body)
    );
    let mut calls = Vec::new();
    for (name, path, body) in timed_calls() {
        let mut samples = Vec::with_capacity(REQUESTS);
        for round in 0..WARM_UP + REQUESTS {
            let start = Instant::now();
            let answer = client
                .post(path, body.as_bytes())
                .with_context(|| format!("{path}, request {round}; log:\n{}", tail(log)))?;
            let took = start.elapsed();
            if answer.status != 200 {
                bail!(
                    "{path} answered {}: {}\nlog:\n{}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body),
                    tail(log)
                );
            }
            if name == "Join" && !String::from_utf8_lossy(&answer.body).contains("SrcName") {
                bail!(
                    "Join answered without SrcName: {}",
                    String::from_utf8_lossy(&answer.body)
                );
            }
            if round >= WARM_UP {
                samples.push(took);
            }
        }
        let total: Duration = samples.iter().sum();
        samples.sort();
        calls.push((
            name,
            CallStats {
                p50: quantile(&samples, 0.50),
                p99: quantile(&samples, 0.99),
                per_second: samples.len() as f64 / total.as_secs_f64(),
            },
        ));
    }
    let pid = plugin.pid();
    let mut rss_kib = process_tree_rss(pid)?;
    if gunicorn {
        ensure!(
            !sys::children(pid).is_empty(),
            "gunicorn's worker is missing; log:\n{}",
            tail(log)
        );
    }
    if rss_kib == 0 {
        rss_kib = sys::rss_kib(pid)?;
    }
    plugin.stop(Duration::from_secs(10));
    Ok(PluginRun {
        calls,
        rss_kib,
        connections: client.connections,
    })
}

/// RSS of a process and its descendants (gunicorn master + worker); `ip netns exec` and
/// `sh -c ... exec` leave the plugin itself at the spawned pid.
fn process_tree_rss(pid: u32) -> Result<u64> {
    let mut total = sys::rss_kib(pid).context("the plugin exited")?;
    let mut queue: Vec<u32> = sys::children(pid);
    // Bounded: a plugin has a handful of processes.
    for _ in 0..64 {
        let Some(child) = queue.pop() else { break };
        total += sys::rss_kib(child).unwrap_or(0);
        queue.extend(sys::children(child));
    }
    Ok(total)
}

/// p50 and p99 of `duration_us` over the last timed `Join` lines of our plugin's log.
fn server_side_join(log: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let all: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("endpoint=/NetworkDriver.Join"))
        .filter_map(|l| l.split("duration_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    let mut timed: Vec<u64> = all[all.len().saturating_sub(REQUESTS)..].to_vec();
    if timed.is_empty() {
        return None;
    }
    timed.sort_unstable();
    let at = |q: f64| timed[((timed.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.99)))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
