//! `cargo xtask demo`: the README's main command. Provisions, builds the agent, the plugin
//! and the harness, then runs the harness on both network modes (and containerd): its report shows every
//! check and the two traffic flows as observed (`client network => database container`,
//! `management network => guest VM`). `cargo xtask ci` runs every scenario through
//! [`run_harness`].

use crate::provision;
use crate::sh::{self, say};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The binaries the harness drives, built before it runs.
const PACKAGES: [&str; 3] = ["trove-guest-agent", "docker-hostnic", "netiso-harness"];

/// The scenarios of the demo: both modes with Docker, and isolated with containerd (each one a
/// SQL round trip from the tenant network to the MariaDB that `prepare` set up).
const DEMO_SCENARIOS: &str = "docker-isolated,docker-bridged,containerd-isolated";

/// Provision, build, run the harness on both modes.
pub fn run(all: bool) -> Result<()> {
    provision::run_without_ci_tools()?;
    say(
        "== demo: a simulated Trove guest, isolated then bridged (Docker), then isolated (containerd)",
    );
    run_harness(if all { None } else { Some(DEMO_SCENARIOS) })
}

/// Builds the harness and what it drives, then runs it (every scenario when `scenarios` is
/// `None`); fails when any check fails.
pub fn run_harness(scenarios: Option<&str>) -> Result<()> {
    let harness = build_harness()?;
    let mut args = Vec::new();
    if let Some(scenarios) = scenarios {
        args.extend(["--scenarios", scenarios]);
    }
    sh::run(&harness, &args)
}

/// Builds the harness and the binaries it drives (debug); the harness's path.
pub fn build_harness() -> Result<String> {
    let mut build = vec!["build", "--locked"];
    for package in PACKAGES {
        build.extend(["-p", package]);
    }
    sh::run("cargo", &build)?;
    let harness = target_dir().join("debug").join("netiso-harness");
    Ok(harness
        .to_str()
        .context("the target directory's path is not UTF-8")?
        .to_owned())
}

/// Where cargo puts binaries: `CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}
