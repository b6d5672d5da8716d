//! `cargo xtask bench`: every performance claim of trove-netiso measured against its
//! reference on this machine, in one run, and written to `docs/benchmarks.md`.
//!
//! 1. plugin latency and memory, ours against Trove's Python plugin ([`plugin`]);
//! 2. container start with either plugin and in bridged mode ([`container`]);
//! 3. the data path, Docker's NAT against the directly handed-over NIC ([`datapath`]);
//! 4. RPC against Python oslo.messaging, and the agent's footprint ([`rpc`]);
//! 5. the isolation step against `ip` commands, and 6. micro-benchmarks ([`cargo_benches`]);
//! 7. `prepare` on the MariaDB image to the tenant's first login, per mode ([`prepare`]);
//! 8. a fleet of agents and of Python stand-ins on one broker ([`fleet`]).
//!
//! A part that fails is reported as not measured, with its error, and the others still run;
//! the task fails at the end if any part did, after the report is written.

mod build;
mod cargo_benches;
mod container;
mod datapath;
mod fleet;
mod http;
mod plugin;
mod prepare;
mod report;
mod rpc;
mod sys;
mod trove_ref;

/// The client-side probe script the bench runs in a tenant's client namespace.
const NETPROBE: &str = "xtask/bench/netprobe.py";

use crate::provision;
use crate::sh::{self, say};
use anyhow::{Result, bail};
use netiso_testbed::bench_guest::BenchGuest;
use report::{Machine, Section};
use std::cell::RefCell;
use std::time::Instant;

pub use fleet::FleetOptions;

/// Where the report goes.
const REPORT: &str = "docs/benchmarks.md";

/// The parts, by the name `--only` takes.
const PARTS: [&str; 8] = [
    "plugin",
    "container",
    "datapath",
    "rpc",
    "isolation",
    "micro",
    "prepare",
    "fleet",
];

/// Provision, build, measure every part (or the `only` ones), write the report (printed only
/// when some parts were left out, so `docs/benchmarks.md` always describes a full run).
pub fn run(only: &[String], fleet_options: &FleetOptions) -> Result<()> {
    let started = Instant::now();
    if let Some(unknown) = only.iter().find(|p| !PARTS.contains(&p.as_str())) {
        bail!(
            "unknown part `{unknown}`: the parts are {}",
            PARTS.join(", ")
        );
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|p| p == name);
    provision::run_without_ci_tools()?;
    say("== bench: the Trove reference venv");
    trove_ref::ensure_venv()?;
    let mut machine = machine()?;
    say("== bench: release build");
    let binaries = build::release_binaries()?;
    let our_plugin = binaries.plugin.clone();

    // Parts 2 and 3 share one bench guest (its own dockerd, plugins, image), started when the
    // first of them runs and stopped after the last, so it adds no load to the other parts.
    let guest: RefCell<Option<Result<BenchGuest>>> = RefCell::new(None);
    let with_guest = |body: &dyn Fn(&BenchGuest) -> Result<Section>| {
        let mut slot = guest.borrow_mut();
        let started = slot.get_or_insert_with(|| {
            say("  starting the bench guest (dockerd, both plugins, test image)");
            BenchGuest::start(&our_plugin, &trove_ref::plugin())
        });
        match started {
            Ok(guest) => body(guest),
            Err(error) => bail!("the bench guest could not start: {error:#}"),
        }
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut part = |name: &str, title: &str, body: &mut dyn FnMut() -> Result<Section>| {
        if !wanted(name) {
            return;
        }
        say(&format!("== bench: {name}"));
        let part_started = Instant::now();
        match body() {
            Ok(section) => sections.push(section),
            Err(error) => {
                say(&format!("  {name} could not be measured: {error:#}"));
                let mut section = Section::new(title, "");
                section.failure = Some(format!("{error:#}"));
                section.seconds = part_started.elapsed().as_secs_f64();
                sections.push(section);
            }
        }
    };
    part(
        "plugin",
        "1. Plugin latency: Activate, CreateEndpoint, Join",
        &mut || plugin::run(&our_plugin),
    );
    part(
        "container",
        "2. Container start: `docker run` to database port reachable",
        &mut || with_guest(&container::run),
    );
    part(
        "datapath",
        "3. Data path: NAT (bridged) against the direct NIC (isolated)",
        &mut || with_guest(&datapath::run),
    );
    drop(guest.borrow_mut().take());
    part(
        "rpc",
        "4. RPC: rpc_ping against Python oslo.messaging; the agent's footprint",
        &mut || rpc::run(&binaries),
    );
    part(
        "isolation",
        "5. Isolation: netlink apply against `ip` commands",
        &mut || cargo_benches::isolation(&binaries.isolation_bench),
    );
    part(
        "micro",
        "6. Micro-benchmarks of the hot pure functions",
        &mut || cargo_benches::micro(&binaries.micro_bench),
    );
    part(
        "prepare",
        "7. `prepare` on MariaDB: cast to the tenant's first login, memory after",
        &mut || prepare::run(&binaries),
    );
    part("fleet", "8. Fleet: N guests on one broker", &mut || {
        fleet::run(&binaries, fleet_options)
    });

    machine.load_end = load_average();
    let text = report::render(&machine, &sections, started.elapsed().as_secs_f64());
    say(&text);
    if only.is_empty() {
        let kept = std::fs::read_to_string(REPORT)
            .ok()
            .and_then(|old| kept_tail(&old).map(str::to_owned))
            .unwrap_or_default();
        std::fs::write(REPORT, format!("{text}{kept}"))?;
        say(&format!(
            "bench: {REPORT} written in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    } else {
        say(&format!(
            "bench: partial run ({}), {REPORT} left as it was",
            only.join(",")
        ));
    }
    let failed: Vec<&str> = sections
        .iter()
        .filter(|s| s.failure.is_some())
        .map(|s| s.title.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("some parts were not measured: {}", failed.join("; "));
    }
    Ok(())
}

/// Marks where the parts measured outside `cargo xtask bench` begin (the VM's, measured by
/// `cargo xtask vm`): a full run keeps them as they are.
const KEPT_MARKER: &str = "<!-- measured outside cargo xtask bench: kept as is -->";

/// The part of an existing report a new run keeps: from [`KEPT_MARKER`] to the end.
fn kept_tail(report: &str) -> Option<&str> {
    report.find(KEPT_MARKER).map(|at| &report[at..])
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine the figures belong to.
fn machine() -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown model", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let commit = sh::output("git", &["rev-parse", "--short", "HEAD"])
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let dirty = sh::output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_ok_and(|s| !s.trim().is_empty());
    Ok(Machine {
        date: sh::output("date", &["-u", "+%Y-%m-%d %H:%M"])?
            .trim()
            .to_owned(),
        cpus: format!("{cores} × {model}"),
        memory: format!("{:.1} GiB", memory_kib / 1024.0 / 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load: load_average(),
        load_end: String::new(),
        commit: if dirty {
            format!("{commit} (with uncommitted changes)")
        } else {
            commit
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_keeps_the_parts_measured_elsewhere() {
        let report =
            format!("# Benchmarks\n\n## 8. Fleet\n\n{KEPT_MARKER}\n\n## 9. VM\n\nfigures\n");
        assert_eq!(
            kept_tail(&report),
            Some(format!("{KEPT_MARKER}\n\n## 9. VM\n\nfigures\n").as_str())
        );
        assert_eq!(kept_tail("# Benchmarks\n\n## 8. Fleet\n"), None);
    }
}
