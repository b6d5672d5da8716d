//! Part 3: the data path, NAT against direct. iperf3 from the client namespace to the
//! database container, bridged (Docker's DNAT on the VM) against isolated (the tenant NIC in
//! the container), with the CPU time spent per GB, and request/response latency.

use super::NETPROBE;
use super::report::{Figure, Section, Target};
use super::sys::{self, ChildGuard};
use anyhow::{Context, Result, bail};
use netiso_testbed::bench_guest::{
    BenchGuest, DATABASE_ADDR, DATABASE_PORT, IPERF_PORT, Mode, Tenant,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// Seconds per iperf3 run.
const SECONDS: &str = "3";
/// Runs per mode (interleaved, so machine load hits both alike).
const ROUNDS: usize = 5;
/// Round trips per latency run.
const ROUND_TRIPS: &str = "5000";

#[derive(Debug, Clone, Copy, Default)]
struct Transfer {
    gbit_per_s: f64,
    cpu_s_per_gb: f64,
}

/// Runs part 3.
pub fn run(guest: &BenchGuest) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "3. Data path: NAT (bridged) against the direct NIC (isolated)",
        &format!(
            "On the bench guest, iperf3 3.x (this machine's binary, copied with the libraries \
             `ldd` lists into the test image, so the server runs inside the database container) \
             receives a {SECONDS} s TCP stream from `iperf3 -c` in the client namespace (iperf3 \
             rather than a sink of our own: a standard tool anyone can rerun by hand, whose \
             sender and receiver cost the same in both modes, so the difference is the path); \
             bridged, \
             the client sends to the VM's tenant address and Docker's DNAT + bridge forward it \
             to the container; isolated, the client reaches the container's own NIC (our \
             plugin). {ROUNDS} runs per mode, interleaved (both containers run at once, each on its own \
             tenant network and client namespace); medians. CPU: the sum of the CPU time \
             (`/proc/<pid>/schedstat`, nanoseconds) of the iperf3 client, the iperf3 server and \
             every `ksoftirqd` thread during the transfer, per GB received. Without \
             `CONFIG_IRQ_TIME_ACCOUNTING` (this kernel) the packet processing done in softirq \
             context (NAT, conntrack, bridging, veth) is charged to the task it interrupted, which \
             is almost always one of these (the sender in `local_bh_enable`, or ksoftirqd); other \
             processes on this shared machine are not counted, so their load does not inflate \
             the figure, though it does lower throughput for both modes alike. Latency: \
             `xtask/bench/netprobe.py rr`, {ROUND_TRIPS} round trips of 64 bytes on one TCP \
             connection to the echo service (a Python client: its own cost is in both modes)."
        ),
    );
    let mut bridged = Vec::new();
    let mut isolated = Vec::new();
    let mut bridged_rr = Vec::new();
    let mut isolated_rr = Vec::new();
    // Both containers run at once, each on its own tenant network and client namespace, so
    // that the rounds interleave and the load of this shared machine hits both alike.
    let nat = guest.tenant(Mode::Bridged)?;
    let direct = guest.tenant(Mode::IsolatedOurs)?;
    let nat_server = start_server(&nat)?;
    let direct_server = start_server(&direct)?;
    for _ in 0..ROUNDS {
        bridged.push(transfer(guest, &nat, nat_server)?);
        isolated.push(transfer(guest, &direct, direct_server)?);
        bridged_rr.push(round_trips(&nat)?);
        isolated_rr.push(round_trips(&direct)?);
    }
    drop(direct);
    drop(nat);
    let median = |runs: &mut Vec<Transfer>, pick: fn(&Transfer) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (b_rate, i_rate) = (
        median(&mut bridged, |t| t.gbit_per_s),
        median(&mut isolated, |t| t.gbit_per_s),
    );
    let (b_cpu, i_cpu) = (
        median(&mut bridged, |t| t.cpu_s_per_gb),
        median(&mut isolated, |t| t.cpu_s_per_gb),
    );
    section.figures.push(
        Figure::rate("TCP throughput, isolated vs bridged", "Gbit/s", i_rate).against(b_rate),
    );
    section.figures.push(
        Figure::cost(
            "CPU seconds per GB, isolated vs bridged (the seed's claim: less CPU without NAT)",
            "CPU s/GB",
            i_cpu,
        )
        .against(b_cpu)
        .target(Target::RatioAtMost(1.0)),
    );
    let rr_median = |runs: &[[f64; 3]], at: usize| {
        let mut values: Vec<f64> = runs.iter().map(|r| r[at]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    section.figures.push(
        Figure::cost(
            "request/response p50, isolated vs bridged",
            "µs",
            rr_median(&isolated_rr, 0),
        )
        .against(rr_median(&bridged_rr, 0)),
    );
    section.figures.push(
        Figure::cost(
            "request/response p99, isolated vs bridged",
            "µs",
            rr_median(&isolated_rr, 1),
        )
        .against(rr_median(&bridged_rr, 1)),
    );
    let runs = |runs: &[Transfer]| {
        runs.iter()
            .map(|t| {
                format!(
                    "{:.2} Gbit/s at {:.2} CPU s/GB",
                    t.gbit_per_s, t.cpu_s_per_gb
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    section.notes.push(format!(
        "Every run: bridged {}; isolated {}.",
        runs(&bridged),
        runs(&isolated)
    ));
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Starts the test container on `tenant`, waits until both services answer, returns the
/// host pid of its iperf3 server.
fn start_server(tenant: &Tenant<'_>) -> Result<u32> {
    let name = tenant.run_container()?;
    wait_reachable(tenant)?;
    tenant.container_pid(&name)
}

fn wait_reachable(tenant: &Tenant<'_>) -> Result<()> {
    let out = tenant
        .in_client(
            "python3",
            &[
                NETPROBE,
                "wait",
                DATABASE_ADDR,
                &DATABASE_PORT.to_string(),
                "60",
            ],
        )
        .output()
        .context("cannot run the client probe")?;
    if !out.status.success() {
        bail!("the database container was not reachable within 60 s");
    }
    // iperf3 starts beside the echo service; give it the same bounded chance.
    sys::poll(Duration::from_secs(10), Duration::from_millis(100), || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                tenant.client_netns(),
                "iperf3",
                "-c",
                DATABASE_ADDR,
            ])
            .args(["-p", &IPERF_PORT.to_string(), "-n", "1K"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    })
    .context("iperf3 in the container did not answer within 10 s")?;
    Ok(())
}

/// One iperf3 run; CPU of client, server and ksoftirqd threads around it.
fn transfer(guest: &BenchGuest, tenant: &Tenant<'_>, server: u32) -> Result<Transfer> {
    let log = guest.dir().join("iperf3-client.json");
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            tenant.client_netns(),
            "iperf3",
            "-c",
            DATABASE_ADDR,
        ])
        .args(["-p", &IPERF_PORT.to_string(), "-t", SECONDS, "-J"]);
    let softirqd = ksoftirqd_threads();
    let before_server = sys::schedstat_ns(server)?;
    let before_soft: u64 = softirqd
        .iter()
        .filter_map(|p| sys::schedstat_ns(*p).ok())
        .sum();
    let mut client = ChildGuard::spawn("iperf3 client", command, &log, false)?;
    let client_pid = client.pid();
    // Sample the client's CPU just before it exits: poll until it is done.
    let mut client_ns = 0;
    let done =
        sys::poll(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || match sys::schedstat_ns(client_pid) {
                Ok(ns) => {
                    client_ns = ns;
                    (!client.is_running()).then_some(())
                }
                Err(_) => Some(()),
            },
        );
    if done.is_none() {
        bail!("iperf3 did not finish within 60 s");
    }
    let after_server = sys::schedstat_ns(server)?;
    let after_soft: u64 = softirqd
        .iter()
        .filter_map(|p| sys::schedstat_ns(*p).ok())
        .sum();
    let json = std::fs::read_to_string(&log)?;
    let (bytes, bits_per_second) =
        iperf_received(&json).with_context(|| format!("unexpected iperf3 output:\n{json}"))?;
    let cpu_ns =
        client_ns + (after_server - before_server) + after_soft.saturating_sub(before_soft);
    Ok(Transfer {
        gbit_per_s: bits_per_second / 1e9,
        cpu_s_per_gb: (cpu_ns as f64 / 1e9) / (bytes / 1e9),
    })
}

/// `bytes` and `bits_per_second` of iperf3's `"sum_received"` (JSON output, read without a
/// JSON library: the object holds numbers only).
fn iperf_received(json: &str) -> Option<(f64, f64)> {
    let at = json.find("\"sum_received\"")?;
    let object = &json[at..];
    let object = &object[..object.find('}')?];
    let field = |name: &str| -> Option<f64> {
        let key = format!("\"{name}\":");
        let rest = object[object.find(&key)? + key.len()..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok()
    };
    Some((field("bytes")?, field("bits_per_second")?))
}

/// The pids of the `ksoftirqd/N` kernel threads.
fn ksoftirqd_threads() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// `[p50, p99, mean]` in µs of 64-byte round trips.
fn round_trips(tenant: &Tenant<'_>) -> Result<[f64; 3]> {
    let out = tenant
        .in_client(
            "python3",
            &[
                NETPROBE,
                "rr",
                DATABASE_ADDR,
                &DATABASE_PORT.to_string(),
                ROUND_TRIPS,
                "64",
            ],
        )
        .output()
        .context("cannot run the latency probe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match values.as_slice() {
        [p50, p99, mean] if out.status.success() => Ok([*p50, *p99, *mean]),
        _ => bail!(
            "the latency probe failed: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf_sum_received() {
        let json = r#"{"end": {"sum_sent": {"bytes": 5, "bits_per_second": 1.0}, "sum_received": {
            "start": 0, "end": 4.0, "seconds": 4.0, "bytes": 2000000000, "bits_per_second": 4000000000.5,
            "sender": true }}}"#;
        assert_eq!(iperf_received(json), Some((2e9, 4000000000.5)));
    }
}
