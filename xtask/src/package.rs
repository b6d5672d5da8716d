//! `cargo xtask package`: the Debian packages of the two daemons, built by cargo-deb from the
//! `[package.metadata.deb]` of `bins/trove-guest-agent` and `bins/docker-hostnic` (release
//! builds). Their man pages and shell completions are rendered first, from the binaries' own
//! clap definitions, into `target/release/package-assets/` (generated, never committed;
//! cargo-deb resolves `target/release/` asset paths to the real target folder).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::provision;
use crate::sh::{output, run, say};

/// The packaged binaries, each a workspace package of the same name.
pub const PACKAGES: &[&str] = &["trove-guest-agent", "docker-hostnic"];
/// Where the generated man pages and completions go, under the real target folder (the
/// packages' assets name `target/release/package-assets`, which cargo-deb resolves there).
fn assets_dir() -> PathBuf {
    crate::demo::target_dir()
        .join("release")
        .join("package-assets")
}

/// Renders the docs, builds both packages and prints the `.deb` paths, one per line, last.
pub fn run_task() -> Result<()> {
    let debs = build()?;
    say("== packages built");
    for deb in &debs {
        say(&deb.display().to_string());
    }
    Ok(())
}

/// Renders the docs and builds both packages; returns the `.deb` paths.
pub fn build() -> Result<Vec<PathBuf>> {
    provision::ensure_cargo_deb()?;
    render_docs(
        netiso_daemon::cli::agent::Cli::command(),
        &assets_dir().join("trove-guest-agent"),
    )?;
    render_docs(
        netiso_daemon::cli::hostnic::Args::command(),
        &assets_dir().join("docker-hostnic"),
    )?;
    // One release build of both (one feature resolution, as cargo-deb would do per package),
    // then cargo-deb packages what it built.
    let mut build = vec!["build", "--release", "--locked"];
    for package in PACKAGES {
        build.extend(["-p", package]);
    }
    run("cargo", &build)?;
    let mut debs = Vec::new();
    for package in PACKAGES {
        say(&format!("== package {package}"));
        // cargo-deb prints the path of the package it wrote as its last line.
        let printed = output("cargo", &["deb", "--no-build", "--locked", "-p", package])?;
        let deb = printed
            .lines()
            .map(str::trim)
            .rfind(|line| line.ends_with(".deb"))
            .map(PathBuf::from)
            .with_context(|| format!("cargo deb -p {package} printed no .deb path: {printed}"))?;
        if !deb.is_file() {
            bail!(
                "cargo deb -p {package} names {} but it does not exist",
                deb.display()
            );
        }
        debs.push(deb);
    }
    Ok(debs)
}

/// Writes `<name>.8.gz` and the bash, zsh and fish completions of `command` into `dir`.
fn render_docs(mut command: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = command.get_name().to_owned();
    let page = dir.join(format!("{name}.8"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut roff)
        .context("cannot render the man page")?;
    std::fs::write(&page, roff).with_context(|| format!("cannot write {}", page.display()))?;
    // Debian ships man pages compressed; -n keeps the timestamp out, for reproducible packages.
    run("gzip", &["-9nf", &page.display().to_string()])?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, &name, dir)
            .with_context(|| format!("cannot write the {shell} completion of {name}"))?;
    }
    say(&format!(
        "  {name}: man page and completions in {}",
        dir.display()
    ));
    Ok(())
}
