//! The Python virtual environment holding the foreign peers (oslo.messaging and Trove's own
//! serializers, from PyPI).

use crate::layout::VENV;
use crate::sh::{run, say};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Requirement files installed as a whole, with their dependencies.
const REQUIREMENTS: &str = "tests/python/requirements.txt";
/// Requirement files installed with `--no-deps`: packages (Trove) whose declared dependency
/// tree is far wider than the modules the tests import; those modules are listed beside them.
const REQUIREMENTS_NO_DEPS: &str = "tests/python/requirements-nodeps.txt";

/// Creates the venv if needed and installs the requirement files under
/// `crates/*/tests/python/`, skipping the install when nothing changed since the last one.
pub fn ensure_venv() -> Result<()> {
    let python = format!("{VENV}/bin/python");
    if !Path::new(&python).exists() {
        run("python3", &["-m", "venv", VENV])?;
    }
    let with_deps = requirement_files(REQUIREMENTS)?;
    let no_deps_files = requirement_files(REQUIREMENTS_NO_DEPS)?;
    if with_deps.is_empty() && no_deps_files.is_empty() {
        say("  no requirements files yet");
        return Ok(());
    }
    let mut wanted = String::new();
    for file in with_deps.iter().chain(&no_deps_files) {
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
    pip_install(&python, &with_deps, &[])?;
    // The full trees are deliberately left out, so pip's check would only list "conflicts".
    pip_install(
        &python,
        &no_deps_files,
        &["--no-deps", "--no-warn-conflicts"],
    )?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {stamp}"))?;
    Ok(())
}

/// One `pip install` of all `files`, with `extra` flags.
fn pip_install(python: &str, files: &[PathBuf], extra: &[&str]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut args = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    args.extend_from_slice(extra);
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    for path in &paths {
        args.extend(["-r", path.as_str()]);
    }
    run(python, &args)
}

/// `crates/*/<relative>` files that exist, sorted.
fn requirement_files(relative: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("crates").context("run xtask from the workspace root")? {
        let candidate = entry?.path().join(relative);
        if candidate.exists() {
            found.push(candidate);
        }
    }
    found.sort();
    Ok(found)
}
