//! Running external commands with their command line shown and their failure explained.

use anyhow::{Context, Result, bail};
/// Runs a program quietly and returns its standard output, or an error with its stderr (the
/// testbed's, shared with the bench guest).
pub use netiso_testbed::host::output;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// When this xtask started: section headings carry the time since, so a CI log shows where
/// its minutes went.
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the clock the section headings are stamped with (call first thing in `main`).
pub fn start_clock() {
    LazyLock::force(&STARTED);
}

/// Prints a progress line (xtask talks to a human or a CI log). A section heading (a line
/// starting `== `) ends with the minutes and seconds since the task started.
#[allow(clippy::print_stdout)]
pub fn say(line: &str) {
    if line.starts_with("== ") {
        println!("{line}  [{}]", since_start(STARTED.elapsed()));
    } else {
        println!("{line}");
    }
}

/// `+12m05s`: short enough to sit at the end of a heading.
fn since_start(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    format!("+{}m{:02}s", seconds / 60, seconds % 60)
}

/// Runs a program, streaming its output, and fails with its exit status.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    run_with_env(program, args, &[])
}

/// Like [`run`], with extra environment variables.
pub fn run_with_env(program: &str, args: &[&str], env: &[(&str, String)]) -> Result<()> {
    say(&format!("$ {program} {}", args.join(" ")));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .with_context(|| format!("cannot start `{program}`: is it installed?"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs a program quietly and tells whether it succeeded (for probes).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a long-running daemon in its own session, detached from xtask, its output
/// appended to `log`.
pub fn spawn_daemon(program: &str, args: &[&str], env: &[(&str, String)], log: &str) -> Result<()> {
    say(&format!(
        "$ {program} {}   (detached, log {log})",
        args.join(" ")
    ));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {log}"))?;
    let err_file = log_file.try_clone()?;
    let mut setsid_args = vec!["-f", program];
    setsid_args.extend_from_slice(args);
    let status = Command::new("setsid")
        .args(&setsid_args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .status()
        .context("cannot run setsid (util-linux)")?;
    if !status.success() {
        bail!("could not start {program} ({status}); see {log}");
    }
    Ok(())
}

/// Polls `probe` every 200 ms until it holds or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if probe() {
            say(&format!(
                "  {what}: ready after {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} did not become ready within {} s", limit.as_secs())
}

/// Tells whether something accepts TCP connections at `addr` (this process's namespace).
pub fn tcp_answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

/// Sends `GET path` over plain HTTP/1.0 and returns the status code, if any answer came.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_since_start_reads_as_minutes_and_padded_seconds() {
        assert_eq!(since_start(Duration::from_millis(999)), "+0m00s");
        assert_eq!(since_start(Duration::from_secs(65)), "+1m05s");
        assert_eq!(since_start(Duration::from_secs(3725)), "+62m05s");
    }
}
