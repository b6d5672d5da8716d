//! The Python virtual environment holding the foreign peers (oslo.messaging from PyPI).

use crate::layout::VENV;
use crate::sh::{run, say};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Creates the venv if needed and installs every `requirements.txt` under
/// `crates/*/tests/python/`, skipping the install when nothing changed since the last one.
pub fn ensure_venv() -> Result<()> {
    let python = format!("{VENV}/bin/python");
    if !Path::new(&python).exists() {
        run("python3", &["-m", "venv", VENV])?;
    }
    let requirement_files = requirement_files()?;
    if requirement_files.is_empty() {
        say("  no requirements files yet");
        return Ok(());
    }
    let mut wanted = String::new();
    for file in &requirement_files {
        wanted.push_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
        );
    }
    let stamp = format!("{VENV}/.netiso-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|done| done == wanted) {
        say("  venv up to date");
        return Ok(());
    }
    let mut args = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    let paths: Vec<String> = requirement_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    for path in &paths {
        args.extend(["-r", path.as_str()]);
    }
    run(&python, &args)?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {stamp}"))?;
    Ok(())
}

fn requirement_files() -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("crates").context("run xtask from the workspace root")? {
        let candidate = entry?.path().join("tests/python/requirements.txt");
        if candidate.exists() {
            found.push(candidate);
        }
    }
    found.sort();
    Ok(found)
}
