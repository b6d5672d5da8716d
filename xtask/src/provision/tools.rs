//! Cargo subcommands CI needs (cargo-deny, cargo-fuzz, cargo-deb), installed from crates.io
//! when missing.

use crate::sh::{output, run, say, succeeds};
use anyhow::Result;

/// (subcommand, crate) pairs.
const TOOLS: &[(&str, &str)] = &[("deny", "cargo-deny"), ("fuzz", "cargo-fuzz")];

/// cargo-deb, pinned: the packages' metadata and the maintainer scripts it writes are checked
/// by `xtask/tests/package.rs` against this version's behaviour.
const CARGO_DEB: &str = "cargo-deb";
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Installs each missing tool with `cargo install --locked`.
pub fn ensure_installed() -> Result<()> {
    for (subcommand, krate) in TOOLS {
        if succeeds("cargo", &[subcommand, "--version"]) {
            say(&format!("  {krate} present"));
        } else {
            run("cargo", &["install", "--locked", krate])?;
        }
    }
    ensure_cargo_deb()
}

/// Installs cargo-deb at the pinned version unless that version is already there.
pub fn ensure_cargo_deb() -> Result<()> {
    let installed = output("cargo", &["deb", "--version"]).unwrap_or_default();
    if installed.split_whitespace().nth(1) == Some(CARGO_DEB_VERSION) {
        say(&format!("  {CARGO_DEB} {CARGO_DEB_VERSION} present"));
        return Ok(());
    }
    run(
        "cargo",
        &[
            "install",
            "--locked",
            CARGO_DEB,
            "--version",
            CARGO_DEB_VERSION,
        ],
    )
}
