//! What a guest built from plain commands needs of this machine: throwaway namespaces, veth
//! pairs, temp folders and child processes that are removed or stopped when dropped (also on
//! error), and process memory and CPU from `/proc`. Synchronous and free of the agent's
//! crates, so the bench (in `xtask`, built before provisioning) can use it.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process: `prefix` + pid + counter (kept under 15 bytes for
/// interface names by the callers' short prefixes).
pub fn unique(prefix: &str) -> String {
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{serial}", std::process::id() % 100_000)
}

/// Runs `ip` with `args`, quietly; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    output("ip", args).map(drop)
}

/// Runs a program to its end; returns its standard output, or fails with its standard error.
pub fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot start `{program}`: is it installed?"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace made for this run, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ntb-<pid><n>` (or the given prefix), with loopback up.
    pub fn create(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        ip(&["netns", "add", &name])?;
        let netns = Self { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (for `ip -n` and `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A link created in some namespace, deleted on drop (a veth takes its peer with it).
#[derive(Debug)]
pub struct LinkGuard {
    netns: String,
    name: String,
}

impl LinkGuard {
    /// Remembers `name` in `netns` for deletion.
    pub fn new(netns: &str, name: &str) -> Self {
        Self {
            netns: netns.into(),
            name: name.into(),
        }
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        // Gone already when its namespace was deleted or its peer's namespace took it along.
        let _ = ip(&["-n", &self.netns, "link", "del", &self.name]);
    }
}

/// A temporary folder removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/netiso-bench-<pid>-<n>`.
    pub fn create() -> Result<Self> {
        let path = std::env::temp_dir().join(unique("netiso-bench-"));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // An overlay upper dir may still be busy for a moment after its mount namespace died.
        for _ in 0..10 {
            if std::fs::remove_dir_all(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("cleanup: could not remove {}", self.path.display());
    }
}

/// A child process stopped on drop: SIGTERM to it (and, when it leads its own process
/// group, to the group), then SIGKILL after a grace period.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
    group: bool,
}

impl ChildGuard {
    /// Spawns `command` with its output sent to `log`; `group` makes it a process-group leader
    /// so that its children (gunicorn's worker) are stopped with it.
    pub fn spawn(what: &str, mut command: Command, log: &Path, group: bool) -> Result<Self> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = file.try_clone()?;
        if group {
            use std::os::unix::process::CommandExt as _;
            command.process_group(0);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Self {
            child,
            what: what.into(),
            group,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`); returns how long it took.
    pub fn stop(&mut self, grace: Duration) -> Duration {
        let started = Instant::now();
        if !self.is_running() {
            return started.elapsed();
        }
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let _ = Command::new("kill")
            .args(["-TERM", "--", &target])
            .stderr(Stdio::null())
            .status();
        while started.elapsed() < grace {
            if !self.is_running() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("cleanup: {} ignored SIGTERM; killing it", self.what);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &target])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        started.elapsed()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The anonymous part of a process's resident memory, KiB (`RssAnon`): its heap and stacks,
/// what it holds alone, unlike the code pages that every process of one binary shares.
pub fn anon_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "RssAnon")
}

/// A `KiB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} for process {pid}"))
}

/// The direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time a task has run, in nanoseconds (`/proc/<pid>/schedstat`, the scheduler's own
/// precise count, not tick samples).
pub fn schedstat_ns(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("process {pid} is gone"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bad /proc/{pid}/schedstat"))
}

/// Polls `probe` every `every` until it gives a value or `limit` passes.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_program_fails_with_its_stderr() {
        let err = output("sh", &["-c", "echo broken >&2; exit 3"]).expect_err("exit 3");
        assert!(format!("{err:#}").contains("broken"), "{err:#}");
        assert_eq!(
            output("sh", &["-c", "echo fine"]).expect("exit 0"),
            "fine\n"
        );
    }

    #[test]
    fn unique_names_fit_interface_names() {
        let name = unique("ntbp");
        assert!(name.len() <= 15, "{name}");
        assert_ne!(unique("ntbp"), name);
    }
}
