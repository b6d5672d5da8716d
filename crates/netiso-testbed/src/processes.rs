//! Processes the harness starts inside the guest namespace (the plugin, the agent) and the
//! shared services it restarts on purpose (dockerd, RabbitMQ), each with a guard that
//! stops or restores it on drop, also when a check fails or the run is interrupted.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A program running in the guest namespace (`nsenter --net=...` execs it, so the child's
/// pid is the program's). Stopped with SIGTERM, then SIGKILL, on drop.
#[derive(Debug)]
pub struct GuestProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl GuestProcess {
    /// Starts `program args` inside `netns`, stdout and stderr appended to `log`.
    pub fn start(
        name: &str,
        netns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        if !program.exists() {
            bail!(
                "{name} binary {} not found (build it: `cargo build -p {}`)",
                program.display(),
                program
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C on the terminal reaches only the harness, which
            // then stops the agent and removes the container before stopping the plugin
            // (dockerd needs the plugin to remove the container).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} with nsenter"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log, for failure details.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Kills it at once (a crash, for the restart checks) and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".to_owned();
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return format!("exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        format!("killed after {grace:?}")
    }
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let how = self.stop(Duration::from_secs(10));
            eprintln!("cleanup: {} {how}", self.name);
        }
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `probe` every 100 ms until it gives a value or `limit` passes.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CPU time every thread of `pid` has run so far, from each thread's
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on the CPU; exact, unlike the clock ticks
/// of `stat`). A thread that exits while being read is skipped.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let mut nanoseconds = 0u64;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        let path = task?.path().join("schedstat");
        let Ok(line) = std::fs::read_to_string(&path) else {
            continue;
        };
        nanoseconds += first_schedstat_field(&line)
            .with_context(|| format!("{}: {line:?}", path.display()))?;
    }
    Ok(Duration::from_nanos(nanoseconds))
}

/// The time on the CPU, the first field of a `schedstat` line.
fn first_schedstat_field(line: &str) -> Result<u64> {
    let field = line
        .split_whitespace()
        .next()
        .context("an empty schedstat")?;
    field
        .parse()
        .with_context(|| format!("schedstat's time on the CPU {field:?}"))
}

/// Whether `pid` no longer runs: absent, or a zombie nobody has reaped yet.
pub fn process_gone(pid: i32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    state.is_empty() || state.contains(") Z ")
}

/// A daemon's command line (dockerd's from its pid file, containerd's from its process), so
/// it can be started again as it was.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    pid: i32,
    argv: Vec<String>,
    netns: String,
}

impl DaemonCommand {
    /// Reads the running dockerd's command line.
    pub fn read(pid_file: &Path, netns: &str) -> Result<Self> {
        let pid: i32 = std::fs::read_to_string(pid_file)
            .with_context(|| format!("reading {} (is dockerd provisioned?)", pid_file.display()))?
            .trim()
            .parse()
            .context("dockerd's pid file holds no pid")?;
        Self::from_pid(pid, netns).with_context(|| format!("dockerd (from {})", pid_file.display()))
    }

    /// The command line of the running process `pid`.
    pub fn from_pid(pid: i32, netns: &str) -> Result<Self> {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("process {pid} is not running"))?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if argv.is_empty() {
            bail!("process {pid} has an empty command line");
        }
        Ok(Self {
            pid,
            argv,
            netns: netns.to_owned(),
        })
    }

    /// SIGKILL (a crash), and waits (bounded) until the process is gone.
    pub fn kill_hard(&self, limit: Duration) -> Result<()> {
        let pid = Pid::from_raw(self.pid);
        kill(pid, Signal::SIGKILL).with_context(|| format!("SIGKILL to {}", self.pid))?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if process_gone(self.pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} still runs {limit:?} after SIGKILL", self.pid)
    }

    /// SIGTERM, and waits (bounded) until the process is gone.
    pub fn terminate(&self, limit: Duration) -> Result<()> {
        let pid = Pid::from_raw(self.pid);
        kill(pid, Signal::SIGTERM).with_context(|| format!("SIGTERM to dockerd {}", self.pid))?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if kill(pid, None).is_err() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("dockerd {} still runs {limit:?} after SIGTERM", self.pid)
    }

    /// Starts dockerd again, detached in its own session, inside the guest namespace.
    pub fn start(&self, log: &Path) -> Result<()> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let status = Command::new("setsid")
            .arg("-f")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .context("running setsid")?;
        if !status.success() {
            bail!("starting dockerd failed: {status}");
        }
        Ok(())
    }
}

/// Makes sure dockerd runs again when a dockerd restart check ends in any way.
#[derive(Debug)]
pub struct DockerdGuard {
    command: DaemonCommand,
    socket: PathBuf,
    log: PathBuf,
}

impl DockerdGuard {
    /// Guards the dockerd described by `command`.
    pub fn new(command: DaemonCommand, socket: &Path, log: &Path) -> Self {
        Self {
            command,
            socket: socket.to_owned(),
            log: log.to_owned(),
        }
    }
}

/// True when dockerd answers `/_ping` on its socket.
pub fn dockerd_answers(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

impl Drop for DockerdGuard {
    fn drop(&mut self) {
        if dockerd_answers(&self.socket) {
            return;
        }
        eprintln!("cleanup: dockerd does not answer, starting it again");
        if let Err(e) = self.command.start(&self.log) {
            eprintln!("cleanup: {e:#}: run `cargo xtask provision`");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !dockerd_answers(&self.socket) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `rabbitmqctl -n <node> <action>` (bounded by rabbitmqctl's own timeout).
pub fn rabbitmqctl(node: &str, action: &str) -> Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(["-n", node, "--timeout", "60", action])
        .output()
        .context("cannot run rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "`rabbitmqctl {action}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts the RabbitMQ application again on drop, whatever happened in between.
#[derive(Debug)]
pub struct RabbitGuard {
    node: String,
}

impl RabbitGuard {
    /// Stops the application (`stop_app`); it is restarted when the guard drops.
    pub fn stop_app(node: &str) -> Result<Self> {
        let guard = Self {
            node: node.to_owned(),
        };
        rabbitmqctl(node, "stop_app")?;
        Ok(guard)
    }
}

impl Drop for RabbitGuard {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&self.node, "start_app") {
            eprintln!("cleanup: {e:#}: RabbitMQ may be stopped, run `cargo xtask provision`");
        }
    }
}

/// One harness run at a time: runs share the guest namespace, the plugin socket and the
/// `database` container. Held (an exclusive `flock`) for the life of the run.
#[derive(Debug)]
pub struct RunLock {
    _lock: nix::fcntl::Flock<File>,
}

impl RunLock {
    /// Takes the lock at `path`, or says which run holds it.
    pub fn acquire(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                use std::io::Write as _;
                lock.set_len(0)?;
                writeln!(lock, "{}", std::process::id())?;
                Ok(Self { _lock: lock })
            }
            Err((_, errno)) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                bail!(
                    "another netiso-harness run (pid {}) holds {}: {errno}",
                    holder.trim(),
                    path.display()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_the_time_on_the_cpu_and_rejects_garbage() {
        assert_eq!(
            first_schedstat_field("123456789 2000 17\n").expect("parsed"),
            123_456_789
        );
        assert!(first_schedstat_field("").is_err());
        assert!(first_schedstat_field("x 1 2").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu_time() {
        let pid = std::process::id();
        let spent = cpu_time(pid).expect("own schedstat");
        assert!(spent > Duration::ZERO, "{spent:?}");
        assert!(cpu_time(u32::MAX).is_err());
    }
}
