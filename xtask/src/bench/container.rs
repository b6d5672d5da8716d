//! Part 2: container start, `docker run` to "database port reachable from the client", in
//! isolated mode with our plugin and with Trove's, and in bridged mode, on the bench guest.

use super::guestvm::{BenchGuest, DATABASE_ADDR, DATABASE_PORT, Mode};
use super::report::{Figure, Section, fmt_number};
use super::sys::{ms, quantile};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
            "On the bench guest (a namespace with its own dockerd, see `xtask/src/bench/guestvm.rs`), \
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
    // Interleaved, so that the load of this shared machine hits every mode alike; each run
    // gets a fresh tenant network (untimed), as a new instance would.
    for round in 0..=RUNS {
        for (mode, runs) in modes.iter().zip(samples.iter_mut()) {
            let tenant = guest.tenant(*mode)?;
            let took = time_one_start(guest, &tenant)
                .with_context(|| format!("{} run {round}", mode.label()))?;
            if round > 0 {
                runs.push(took);
            }
        }
    }
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

/// One timed start: the probe is waiting before the clock starts; the container is removed
/// afterwards.
fn time_one_start(guest: &BenchGuest, tenant: &super::guestvm::Tenant<'_>) -> Result<Duration> {
    let mut probe = tenant
        .probe(&[
            "wait",
            DATABASE_ADDR,
            &DATABASE_PORT.to_string(),
            LIMIT_SECONDS,
        ])
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
        let start = Instant::now();
        let name = tenant.run_container()?;
        let reached = lines.next();
        let took = start.elapsed();
        let outcome = match reached {
            Some(Ok(line)) if line == "reachable" => Ok(took),
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
