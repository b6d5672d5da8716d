//! `cargo xtask ci`: the one gate a submission must pass, run by `.ci/run`.

use crate::advisories;
use crate::demo;
use crate::layout::test_environment;
use crate::provision;
use crate::sh::{self, output, run_with_env, say};
use crate::soak;
use crate::vm;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// libFuzzer iterations per fuzz target: a smoke run that proves the target builds and
/// survives its seed corpus and a few thousand mutations, bounded in time as well.
const FUZZ_RUNS: &str = "-runs=20000";
const FUZZ_SECONDS: &str = "-max_total_time=60";
/// The VM scenario CI boots: the isolated Docker guest is the one Trove deploys by default, and
/// its checks cover systemd, cloud-init, the first boot's tenant window, `prepare`, kill -9
/// and a reboot. The bridged and containerd guests add about ten minutes of software
/// emulation each, more than CI's time budget holds; `cargo xtask vm` runs all three.
const CI_VM_SCENARIOS: &str = "vm-docker-isolated";
/// Where the test suites write their logs (`netiso_messaging::test_support::log_dir`).
const TEST_LOG_DIR: &str = "target/tmp/test-logs";

/// Provision, then every check in order; the first failure stops the run.
pub fn run() -> Result<()> {
    provision::run(true)?;
    say("== fmt");
    sh::run("cargo", &["fmt", "--all", "--check"])?;
    say("== clippy");
    sh::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    say("== cargo-deny (bans, licenses, sources)");
    sh::run("cargo", &["deny", "check", "bans", "licenses", "sources"])?;
    say("== cargo-deny advisories (the RustSec snapshot, offline)");
    advisories::check()?;
    say("== tests (as root: the privileged tests are required to run)");
    // Test logs of earlier runs would be scanned with this run's; start from an empty folder.
    match std::fs::remove_dir_all(TEST_LOG_DIR) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).context(format!("cannot empty {TEST_LOG_DIR}")),
    }
    run_with_env(
        "cargo",
        &["test", "--workspace", "--all-targets", "--locked"],
        &test_environment(),
    )?;
    say("== doctests (each library crate's README example included)");
    sh::run("cargo", &["test", "--doc", "--workspace", "--locked"])?;
    say("== rustdoc, warnings denied (broken intra-doc links included)");
    run_with_env(
        "cargo",
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings".to_string())],
    )?;
    say("== netiso-runtime with the Docker adapter only (what an embedder without protoc builds)");
    docker_only_runtime()?;
    say("== cargo package (every library crate, built from its packaged sources)");
    package_libraries()?;
    say("== harness (every scenario on the simulated guest)");
    demo::run_harness(None)?;
    say("== soak (fixed seed: every fault kind once per segment, invariants after every step)");
    soak::run_short()?;
    say("== test logs hold no secret (every suite's log, scanned after all of them ran)");
    run_with_env(
        "cargo",
        &[
            "test",
            "--locked",
            "-p",
            "netiso-messaging",
            "--test",
            "log_secrets",
            "--",
            "--nocapture",
        ],
        &test_environment(),
    )?;
    say("== fuzz smoke runs");
    for fuzz_dir in fuzz_dirs()? {
        fuzz_smoke(&fuzz_dir)?;
    }
    say("== vm (the guest image booted under QEMU and driven as Trove's control plane does)");
    vm::run_provisioned(Some(CI_VM_SCENARIOS))?;
    say("ci: all checks passed");
    Ok(())
}

/// Builds `netiso-runtime --no-default-features --features docker` with `PROTOC` pointing
/// nowhere, and checks that nothing of the containerd adapter (its protobuf build included)
/// is in that build's dependency tree: an embedder taking only Docker needs no `protoc`.
fn docker_only_runtime() -> Result<()> {
    let features = [
        "-p",
        "netiso-runtime",
        "--no-default-features",
        "--features",
        "docker",
    ];
    let mut check = vec!["check", "--locked"];
    check.extend(features);
    run_with_env(
        "cargo",
        &check,
        &[("PROTOC", "/nonexistent/protoc-is-not-needed".to_string())],
    )?;
    let mut tree = vec![
        "tree",
        "--locked",
        "--edges",
        "normal,build",
        "--prefix",
        "none",
    ];
    tree.extend(features);
    let listed = output("cargo", &tree)?;
    let containerd: Vec<&str> = listed
        .lines()
        .filter(|line| {
            [
                "containerd-client",
                "prost-build",
                "tonic-build",
                "tonic-prost-build",
            ]
            .iter()
            .any(|name| line.starts_with(&format!("{name} ")))
        })
        .collect();
    anyhow::ensure!(
        containerd.is_empty(),
        "the Docker-only build still depends on: {}",
        containerd.join(", ")
    );
    say("  no containerd or protobuf build dependency");
    Ok(())
}

/// `cargo package` of every crate in `crates/` at once: nothing is on crates.io, so cargo
/// resolves the crates' dependencies on each other from the packages it has just made (a
/// local overlay registry), then builds each package from its `.crate` sources. `--allow-dirty`
/// because the check is that the packages build, not that the tree is committed.
fn package_libraries() -> Result<()> {
    let mut args = vec!["package", "--locked", "--allow-dirty"];
    let names = library_crates()?;
    forget_verified_packages(&names)?;
    for name in &names {
        args.extend(["-p", name.as_str()]);
    }
    sh::run("cargo", &args)
}

/// Removes the sources an earlier `cargo package` extracted for verification. cargo unpacks
/// each package it verifies into `$CARGO_HOME/registry/src/<local registry>/<name>-<version>`
/// and reuses that folder while it exists; our version stays 0.1.0 from commit to commit, so
/// without this a later run would verify an earlier run's sources (a crate depending on a
/// newer item of another then fails to build).
fn forget_verified_packages(names: &[String]) -> Result<()> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    let sources = cargo_home.join("registry").join("src");
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        // Local (overlay) registries are named after a hash only; crates.io's is "index.…".
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for extracted in std::fs::read_dir(registry.path())?.flatten() {
            let file_name = extracted.file_name();
            let folder = file_name.to_string_lossy();
            if names.iter().any(|name| is_extracted_package(&folder, name)) {
                std::fs::remove_dir_all(extracted.path())
                    .with_context(|| format!("cannot remove {}", extracted.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Whether `folder` is `<name>-<version>` (a version starts with a digit, so `netiso-config`
/// does not claim a hypothetical `netiso-config-extra-1.0.0`).
fn is_extracted_package(folder: &str, name: &str) -> bool {
    folder
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
}

/// The package names of the publishable crates: every folder of `crates/` with a manifest
/// that does not take the workspace's `publish = false` (as `netiso-daemon` does).
fn library_crates() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("crates").context("run xtask from the workspace root")? {
        let dir = entry?.path();
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if is_publishable(&text)
            && let Some(name) = dir.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether a crate manifest leaves publishing on: no `publish = false` of its own and no
/// `publish.workspace = true` (the workspace's default is `false`).
fn is_publishable(manifest: &str) -> bool {
    !manifest.lines().map(str::trim).any(|line| {
        let line: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        line == "publish=false" || line == "publish.workspace=true"
    })
}

/// Every `crates/*/fuzz` folder holding a cargo-fuzz project.
fn fuzz_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir("crates").context("run xtask from the workspace root")? {
        let dir = entry?.path().join("fuzz");
        if dir.join("Cargo.toml").exists() {
            dirs.push(dir);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Runs each target of one fuzz project briefly. `--sanitizer none` keeps cargo-fuzz on stable
/// Rust (sanitizers are nightly-only); coverage-guided fuzzing still works. All fuzz projects
/// share one target folder so their common dependencies build once.
fn fuzz_smoke(fuzz_dir: &Path) -> Result<()> {
    let dir = fuzz_dir.display().to_string();
    let shared_target = [("CARGO_TARGET_DIR", "target/fuzz".to_string())];
    let targets = output("cargo", &["fuzz", "list", "--fuzz-dir", &dir])?;
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        run_with_env(
            "cargo",
            &[
                "fuzz",
                "run",
                "--fuzz-dir",
                &dir,
                "--sanitizer",
                "none",
                target,
                "--",
                FUZZ_RUNS,
                FUZZ_SECONDS,
            ],
            &shared_target,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_extracted_package, is_publishable};

    #[test]
    fn only_our_packages_extracted_folders_are_forgotten() {
        assert!(is_extracted_package("netiso-config-0.1.0", "netiso-config"));
        assert!(!is_extracted_package(
            "netiso-config-extra-1.0.0",
            "netiso-config"
        ));
        assert!(!is_extracted_package("serde-1.0.0", "netiso-config"));
    }

    #[test]
    fn a_crate_taking_the_workspaces_publish_false_is_not_packaged() {
        assert!(!is_publishable(
            "[package]\nname = \"x\"\npublish.workspace = true\n"
        ));
        assert!(!is_publishable("[package]\npublish = false\n"));
        assert!(is_publishable("[package]\nname = \"netiso-config\"\n"));
    }
}
