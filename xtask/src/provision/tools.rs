//! Cargo subcommands CI needs (cargo-deny, cargo-fuzz), installed from crates.io when missing.

use crate::sh::{run, say, succeeds};
use anyhow::Result;

/// (subcommand, crate) pairs.
const TOOLS: &[(&str, &str)] = &[("deny", "cargo-deny"), ("fuzz", "cargo-fuzz")];

/// Installs each missing tool with `cargo install --locked`.
pub fn ensure_installed() -> Result<()> {
    for (subcommand, krate) in TOOLS {
        if succeeds("cargo", &[subcommand, "--version"]) {
            say(&format!("  {krate} present"));
        } else {
            run("cargo", &["install", "--locked", krate])?;
        }
    }
    Ok(())
}
