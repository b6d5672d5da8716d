//! Trove's own `docker-hostnic` plugin, started with its real code from a venv, for the bench
//! to measure ours against.
//!
//! Trove's plugin reads and writes fixed paths (`/etc/docker/hostnic.json`,
//! `/etc/trove/eth1.json`): it runs under `ip netns exec` (a private mount namespace) with an
//! overlay on `/etc` whose upper layer is a temp folder, so this machine's `/etc` is never
//! written.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::host::{ChildGuard, TempDir};

/// Where Trove's plugin comes from: a venv holding Trove and the modules its plugin imports
/// (made by `cargo xtask bench`), and the script that serves it with gunicorn.
#[derive(Debug, Clone)]
pub struct TrovePlugin {
    /// The venv (its `bin/python` runs the launcher).
    pub venv: PathBuf,
    /// The launcher script, whose one argument is the socket to serve.
    pub launcher: PathBuf,
}

impl TrovePlugin {
    /// Starts the plugin (gunicorn master and one worker) in `netns`, serving `socket`, with
    /// `/etc/trove/eth1.json` = `eth1_json` and an empty `/etc/docker/` in its view of `/etc`
    /// (the overlay's layers live in `dir`).
    pub fn start(
        &self,
        netns: &str,
        dir: &TempDir,
        eth1_json: &str,
        socket: &Path,
        log: &Path,
    ) -> Result<ChildGuard> {
        let upper = dir.path().join("etc-upper");
        let work = dir.path().join("etc-work");
        std::fs::create_dir_all(upper.join("trove"))?;
        std::fs::create_dir_all(upper.join("docker"))?;
        std::fs::create_dir_all(&work)?;
        std::fs::write(upper.join("trove/eth1.json"), eth1_json)?;
        let launcher = std::fs::canonicalize(&self.launcher)
            .with_context(|| format!("cannot find {}", self.launcher.display()))?;
        let script = format!(
            "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc && exec {}/bin/python {} {}",
            upper.display(),
            work.display(),
            self.venv.display(),
            launcher.display(),
            socket.display()
        );
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, "sh", "-c", &script]);
        ChildGuard::spawn("Trove's plugin (gunicorn)", command, log, true)
    }
}
