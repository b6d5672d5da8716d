//! The Trove reference: a venv of its own holding Trove from PyPI (`--no-deps`) and exactly
//! the modules its `docker-hostnic` plugin imports (`xtask/bench/trove-requirements.txt`), and
//! the launcher that serves that plugin with its real code (started by the testbed's
//! [`TrovePlugin`]).

use crate::sh::{run, say};
use anyhow::{Context, Result};
use netiso_testbed::bench_guest::TrovePlugin;
use std::path::{Path, PathBuf};

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

/// Trove's plugin as the testbed starts it: this venv and the bench's launcher script.
pub fn plugin() -> TrovePlugin {
    TrovePlugin {
        venv: PathBuf::from(TROVE_VENV),
        launcher: PathBuf::from(LAUNCHER),
    }
}
