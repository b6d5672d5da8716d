//! The Trove reference: a venv of its own holding Trove from PyPI (`--no-deps`) and exactly
//! the modules its `docker-hostnic` plugin imports (`xtask/bench/trove-requirements.txt`), and
//! the way to start that plugin with its real code.
//!
//! Trove's plugin reads and writes fixed paths (`/etc/docker/hostnic.json`,
//! `/etc/trove/eth1.json`): it runs under `ip netns exec` (a private mount namespace) with an
//! overlay on `/etc` whose upper layer is a temp folder, so this machine's `/etc` is never
//! written.

use super::sys::{ChildGuard, TempDir};
use crate::sh::{run, say};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference venv (separate from the interop venv of the tests).
pub const TROVE_VENV: &str = "/var/lib/trove-netiso/trove-venv";
/// The Trove release measured.
pub const TROVE_VERSION: &str = "26.0.0";
const REQUIREMENTS: &str = "xtask/bench/trove-requirements.txt";
const LAUNCHER: &str = "xtask/bench/trove_plugin.py";

/// Creates or updates the venv; skips pip when nothing changed since the last install.
pub fn ensure_venv() -> Result<()> {
    let python = format!("{TROVE_VENV}/bin/python");
    if !Path::new(&python).exists() {
        run("python3", &["-m", "venv", TROVE_VENV])?;
    }
    let wanted = format!(
        "trove=={TROVE_VERSION}\n{}",
        std::fs::read_to_string(REQUIREMENTS)
            .with_context(|| format!("cannot read {REQUIREMENTS}"))?
    );
    let stamp = format!("{TROVE_VENV}/.netiso-bench-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|done| done == wanted) {
        say("  trove reference venv up to date");
        return Ok(());
    }
    let pip = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    let trove = format!("trove=={TROVE_VERSION}");
    run(&python, &[&pip[..], &["--no-deps", &trove]].concat())?;
    // Trove's own requirements are left out on purpose (only what the plugin imports is
    // installed), so pip's check of them would only print a list of "conflicts".
    run(
        &python,
        &[&pip[..], &["--no-warn-conflicts", "-r", REQUIREMENTS]].concat(),
    )?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {stamp}"))?;
    Ok(())
}

/// Files Trove's plugin will find under `/etc` inside its mount namespace.
pub struct EtcOverlay {
    upper: PathBuf,
    work: PathBuf,
}

impl EtcOverlay {
    /// Prepares the upper layer in `dir` with `/etc/trove/eth1.json` = `eth1_json` and an
    /// empty `/etc/docker/` (Trove creates `hostnic.json` there on import).
    pub fn prepare(dir: &TempDir, eth1_json: &str) -> Result<Self> {
        let upper = dir.path().join("etc-upper");
        let work = dir.path().join("etc-work");
        std::fs::create_dir_all(upper.join("trove"))?;
        std::fs::create_dir_all(upper.join("docker"))?;
        std::fs::create_dir_all(&work)?;
        std::fs::write(upper.join("trove/eth1.json"), eth1_json)?;
        Ok(Self { upper, work })
    }
}

/// Starts Trove's plugin (gunicorn master + one worker) in `netns`, serving `socket`.
pub fn start_plugin(
    netns: &str,
    overlay: &EtcOverlay,
    socket: &Path,
    log: &Path,
) -> Result<ChildGuard> {
    let launcher =
        std::fs::canonicalize(LAUNCHER).with_context(|| format!("cannot find {LAUNCHER}"))?;
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc && exec {TROVE_VENV}/bin/python {} {}",
        overlay.upper.display(),
        overlay.work.display(),
        launcher.display(),
        socket.display()
    );
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, "sh", "-c", &script]);
    ChildGuard::spawn("Trove's plugin (gunicorn)", command, log, true)
}
