//! `cargo xtask provision`: make this machine ready for every test, idempotently.
//!
//! Order matters: packages before tools and services; the namespaces before the daemons that
//! run inside them; RabbitMQ and the registry before the forwarders that expose them on the
//! management network; dockerd and the registry before the database image.

mod cluster;
mod images;
mod packages;
mod python;
mod services;
mod tls;
mod tools;
mod topology;

pub use tools::ensure_cargo_deb;

use crate::layout::{LOG_DIR, RUN_DIR, STATE_DIR};
use crate::sh::say;
use anyhow::{Context, Result, ensure};

/// Runs every provisioning step, printing what each one did; with `rabbit_cluster`, also
/// the three-node RabbitMQ cluster (the CI tests need it; the demo and benchmarks do not).
pub fn run(rabbit_cluster: bool) -> Result<()> {
    provision(true, rabbit_cluster)
}

/// Everything but the cargo subcommands only CI uses (cargo-deny, cargo-fuzz): the demo and
/// the benchmarks need the services, and building those tools from source would add minutes
/// to their first run on a fresh machine.
pub fn run_without_ci_tools() -> Result<()> {
    provision(false, false)
}

fn provision(with_ci_tools: bool, rabbit_cluster: bool) -> Result<()> {
    ensure!(
        nix_is_root(),
        "provision must run as root: it installs packages and creates network namespaces"
    );
    for dir in [STATE_DIR, RUN_DIR, LOG_DIR] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    }
    say("== packages");
    packages::ensure_installed()?;
    packages::ensure_qemu()?;
    if with_ci_tools {
        say("== cargo tools");
        tools::ensure_installed()?;
    }
    say("== python interop venv");
    python::ensure_venv()?;
    say("== simulated guest topology");
    topology::ensure()?;
    say("== services");
    services::ensure_running()?;
    if rabbit_cluster {
        say("== rabbitmq cluster");
        cluster::ensure()?;
    }
    say("== database image");
    images::ensure_mariadb()?;
    say("provision: done");
    Ok(())
}

/// Root is needed for apt, namespaces and daemons; tell it plainly instead of failing later.
fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
