//! Part 2: container start, `docker run` to "database port reachable from the client", in
//! isolated mode with our plugin and with Trove's, and in bridged mode, on the bench guest.

use super::NETPROBE;
use super::report::{Figure, Section, fmt_number};
use super::sys::{ms, quantile};
use anyhow::{Context, Result, bail};
use netiso_testbed::bench_guest::{BenchGuest, DATABASE_ADDR, DATABASE_PORT, Mode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Timed runs per mode.
const RUNS: usize = 10;
/// How long one run may take before it counts as failed.
const LIMIT_SECONDS: &str = "60";

/// Runs part 2.
pub fn run(guest: &BenchGuest) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "2. Container start: `docker run` to database port reachable",
        &format!(
            "On the bench guest (a namespace with its own dockerd, see `crates/netiso-testbed/src/bench_guest`), \
             the test image (busybox `nc -ll -e cat` standing for the database on port \
             {DATABASE_PORT}, iperf3 beside it) is started with `docker run -d` and the clock \
             stops when a client in the client namespace gets an echo from \
             {DATABASE_ADDR}:{DATABASE_PORT} (it tries every 5 ms: `xtask/bench/netprobe.py wait`). \
             Isolated: the tenant NIC goes into the container through the plugin (ours, then \
             Trove's, same daemon, same NIC); bridged: Docker's bridge with the port published \
             through DNAT on the VM's tenant address. {RUNS} runs per mode after one untimed, the modes interleaved; each run has a fresh \
             tenant network and the container is removed afterwards (both untimed). Spread is min–max. The ARP \
             retransmit time of the bench's two namespaces is 20 ms instead of 1 s: the probe \
             polls the address before it exists, and the default would add up to 1 s of \
             waiting for the next ARP request to every mode."
        ),
    );
    let modes = [Mode::IsolatedOurs, Mode::IsolatedTrove, Mode::Bridged];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(RUNS); modes.len()];
    let mut steps: Vec<Vec<Steps>> = vec![Vec::with_capacity(RUNS); modes.len()];
    // Interleaved, so that the load of this shared machine hits every mode alike; each run
    // gets a fresh tenant network (untimed), as a new instance would.
    for round in 0..=RUNS {
        for ((mode, runs), mode_steps) in modes.iter().zip(samples.iter_mut()).zip(&mut steps) {
            let tenant = guest.tenant(*mode)?;
            let (took, run_steps) = time_one_start(guest, &tenant, *mode)
                .with_context(|| format!("{} run {round}", mode.label()))?;
            if round > 0 {
                runs.push(took);
                mode_steps.push(run_steps);
            }
        }
    }
    section.notes.push(breakdown_table(&modes, &steps));
    let mut medians = Vec::new();
    for (mode, mut runs) in modes.into_iter().zip(samples) {
        runs.sort();
        let median = quantile(&runs, 0.5);
        medians.push((mode, median));
        section.notes.push(format!(
            "{}: median {} ms, min {} ms, max {} ms (sorted runs: {}).",
            mode.label(),
            fmt_number(ms(median)),
            fmt_number(ms(runs[0])),
            fmt_number(ms(runs[runs.len() - 1])),
            runs.iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let get = |wanted: Mode| {
        medians
            .iter()
            .find(|(mode, _)| *mode == wanted)
            .map(|(_, d)| ms(*d))
            .unwrap_or(0.0)
    };
    section.figures.push(
        Figure::cost(
            "isolated: our plugin vs Trove's (median)",
            "ms",
            get(Mode::IsolatedOurs),
        )
        .against(get(Mode::IsolatedTrove)),
    );
    section.figures.push(
        Figure::cost(
            "isolated (our plugin) vs bridged (median)",
            "ms",
            get(Mode::IsolatedOurs),
        )
        .against(get(Mode::Bridged)),
    );
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Where one start's time went, each step measured from the moment `docker run` was started:
/// dockerd's events (its clock is this machine's) and, for our plugin, its own handling time.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    /// dockerd's `container create` event: the CLI, the API call, the container's record and
    /// its root filesystem layer.
    created: Duration,
    /// dockerd's `network connect` event: the start request and the network set-up (for the
    /// isolated modes the plugin's `CreateEndpoint` and `Join` and Docker moving the NIC into
    /// the sandbox; bridged, the veth pair, the bridge port and the NAT rules).
    connected: Duration,
    /// dockerd's `container start` event: runc created and started the process.
    started: Duration,
    /// The client's first echo from the database port.
    reached: Duration,
    /// Wall time our plugin spent inside the requests of this run (from its request log).
    plugin: Option<Duration>,
}

/// The median of each step per mode, as a Markdown table.
fn breakdown_table(modes: &[Mode], steps: &[Vec<Steps>]) -> String {
    let median = |runs: &[Steps], pick: &dyn Fn(&Steps) -> Option<Duration>| {
        let mut values: Vec<Duration> = runs.iter().filter_map(pick).collect();
        values.sort();
        (!values.is_empty()).then(|| ms(quantile(&values, 0.5)))
    };
    let cell = |value: Option<f64>| value.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} ms"));
    let mut text = String::from(
        "Where the time goes (medians over the timed runs; each step from the moment \
         `docker run` started, taken from dockerd's own events, whose clock is this \
         machine's): `create` is dockerd's `container create` event (CLI, API, container \
         record, its filesystem layer); `network` is `network connect` (the start request and \
         the network set-up: isolated, the plugin's `CreateEndpoint` and `Join` and Docker \
         moving the NIC into the sandbox; bridged, veth, bridge port and NAT rules); `start` \
         is `container start` (runc created and started the process); `reached` is the \
         client's first echo. The plugin column is our plugin's own handling time for the \
         run's requests (its request log).\n\n\
         | mode | create | network | start | reached | network − create | start − network | reached − start | our plugin's own time |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (mode, runs) in modes.iter().zip(steps) {
        let at = |pick: fn(&Steps) -> Duration| median(runs, &|s| Some(pick(s)));
        let gap = |later: fn(&Steps) -> Duration, earlier: fn(&Steps) -> Duration| {
            median(runs, &|s| Some(later(s).saturating_sub(earlier(s))))
        };
        let plugin = median(runs, &|s| s.plugin).map(|v| format!("{v:.2} ms"));
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            mode.label(),
            cell(at(|s| s.created)),
            cell(at(|s| s.connected)),
            cell(at(|s| s.started)),
            cell(at(|s| s.reached)),
            cell(gap(|s| s.connected, |s| s.created)),
            cell(gap(|s| s.started, |s| s.connected)),
            cell(gap(|s| s.reached, |s| s.started)),
            plugin.unwrap_or_else(|| "—".to_owned()),
        ));
    }
    text
}

/// Nanoseconds since the epoch, as dockerd's events carry them.
fn epoch_nanos(at: SystemTime) -> i128 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// dockerd's events for container `name` between `since` and `until`: (type, action, when).
fn docker_events(
    guest: &BenchGuest,
    name: &str,
    since: SystemTime,
    until: SystemTime,
) -> Result<Vec<(String, String, i128)>> {
    let id = guest.docker(&["inspect", "--format", "{{.Id}}", name])?;
    let id = id.trim();
    let seconds = |at: SystemTime| {
        let nanos = epoch_nanos(at);
        format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
    };
    let text = guest.docker(&[
        "events",
        "--since",
        &seconds(since),
        "--until",
        &seconds(until),
        "--format",
        "{{json .}}",
    ])?;
    let mut events = Vec::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("dockerd printed an event that is not JSON: {line}"))?;
        let attributes = &event["Actor"]["Attributes"];
        let ours = match event["Type"].as_str() {
            Some("container") => event["Actor"]["ID"].as_str() == Some(id),
            Some("network") => attributes["container"].as_str() == Some(id),
            _ => false,
        };
        if !ours {
            continue;
        }
        let when = event["timeNano"]
            .as_i64()
            .map(i128::from)
            .context("a docker event without timeNano")?;
        events.push((
            event["Type"].as_str().unwrap_or_default().to_owned(),
            event["Action"].as_str().unwrap_or_default().to_owned(),
            when,
        ));
    }
    Ok(events)
}

/// The sum of `duration_us` of the plugin calls logged after byte `from` of `log`.
fn plugin_time_since(log: &Path, from: u64) -> Option<Duration> {
    let text = std::fs::read(log).ok()?;
    let start = usize::try_from(from).ok()?.min(text.len());
    let micros: u64 = String::from_utf8_lossy(&text[start..])
        .lines()
        .filter(|l| l.contains("plugin call"))
        .filter_map(|l| l.split("duration_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    (micros > 0).then(|| Duration::from_micros(micros))
}

/// One timed start: the probe is waiting before the clock starts; the container is removed
/// afterwards.
fn time_one_start(
    guest: &BenchGuest,
    tenant: &netiso_testbed::bench_guest::Tenant<'_>,
    mode: Mode,
) -> Result<(Duration, Steps)> {
    let mut probe = tenant
        .in_client(
            "python3",
            &[
                NETPROBE,
                "wait",
                DATABASE_ADDR,
                &DATABASE_PORT.to_string(),
                LIMIT_SECONDS,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the client probe")?;
    let stdout = probe.stdout.take().context("probe has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let result = (|| {
        match lines.next() {
            Some(Ok(line)) if line == "waiting" => {}
            other => bail!("the probe did not start: {other:?}"),
        }
        let plugin_log = guest.dir().join("ours.log");
        let plugin_log_at = std::fs::metadata(&plugin_log).map_or(0, |m| m.len());
        let wall_start = SystemTime::now();
        let start = Instant::now();
        let name = tenant.run_container()?;
        let reached = lines.next();
        let took = start.elapsed();
        let outcome = match reached {
            Some(Ok(line)) if line == "reachable" => {
                let events = docker_events(guest, &name, wall_start, SystemTime::now())?;
                let offset = |kind: &str, action: &str| {
                    events
                        .iter()
                        .find(|(t, a, _)| t == kind && a == action)
                        .map(|(_, _, when)| {
                            let nanos = (when - epoch_nanos(wall_start)).max(0);
                            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
                        })
                        .with_context(|| {
                            format!("dockerd reported no `{kind} {action}` event for {name}")
                        })
                };
                let steps = Steps {
                    created: offset("container", "create")?,
                    connected: offset("network", "connect")?,
                    started: offset("container", "start")?,
                    reached: took,
                    plugin: (mode == Mode::IsolatedOurs)
                        .then(|| plugin_time_since(&plugin_log, plugin_log_at))
                        .flatten(),
                };
                Ok((took, steps))
            }
            _ => {
                let logs = guest
                    .docker(&["logs", "--tail", "5", &name])
                    .unwrap_or_default();
                Err(anyhow::anyhow!(
                    "the database was not reachable within {LIMIT_SECONDS} s; container log: {logs}"
                ))
            }
        };
        tenant.remove_container(&name)?;
        outcome
    })();
    let _ = probe.kill();
    let _ = probe.wait();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sys::TempDir;

    #[test]
    fn the_plugin_time_of_a_run_counts_only_the_calls_logged_after_it_began() {
        let dir = TempDir::create().expect("temp dir");
        let log = dir.path().join("ours.log");
        let before = "INFO plugin call endpoint=/NetworkDriver.Join status=200 duration_us=900\n";
        let during = "INFO plugin call endpoint=/NetworkDriver.CreateEndpoint status=200 duration_us=120\n\
                      INFO something else duration_us=5000\n\
                      INFO plugin call endpoint=/NetworkDriver.Join status=200 duration_us=230\n";
        std::fs::write(&log, format!("{before}{during}")).expect("log");
        let from = u64::try_from(before.len()).expect("length");
        assert_eq!(
            plugin_time_since(&log, from),
            Some(Duration::from_micros(350))
        );
        assert_eq!(plugin_time_since(&log, u64::MAX), None);
    }

    #[test]
    fn the_breakdown_has_a_row_per_mode_with_the_gaps_between_steps() {
        let run = |created, connected, started, reached| Steps {
            created: Duration::from_millis(created),
            connected: Duration::from_millis(connected),
            started: Duration::from_millis(started),
            reached: Duration::from_millis(reached),
            plugin: None,
        };
        let table = breakdown_table(
            &[Mode::Bridged],
            &[vec![run(40, 150, 230, 280), run(50, 170, 240, 300)]],
        );
        let row = table.lines().last().expect("a row");
        assert!(
            row.starts_with(&format!("| {} |", Mode::Bridged.label())),
            "{row}"
        );
        // Medians of two round to the upper one: 50, 170, 240, 300; the gaps of each run are
        // 110 and 120, 80 and 70, 50 and 60.
        assert!(
            row.contains("| 50 ms | 170 ms | 240 ms | 300 ms | 120 ms | 80 ms | 60 ms | — |"),
            "{row}"
        );
    }
}
