//! Restarting the REAL guest dockerd brings Trove's `unless-stopped` database container back
//! with the tenant NIC, served by OUR plugin that kept running meanwhile (as its socket unit
//! runs it before and after docker.service). Needs root and `cargo xtask provision`; fails
//! (never skips) otherwise.
//!
//! This stops the shared guest dockerd for a while, so it lives in a test binary of its own:
//! `cargo test` runs test binaries one at a time, so in CI nothing else uses dockerd meanwhile.
//! A guard starts dockerd again with its own command line even when the test fails.
#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{HostnicBed, assert_container_has_the_nic, docker_cli, is_up};
use netiso_runtime::test_support::{ContainerGuard, guest_netns, unique_name};
use netiso_runtime::{ContainerRuntime, ContainerStatus, HealthStatus, RestartPolicy};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where `cargo xtask provision` has dockerd write its pid.
const DOCKERD_PID_FILE: &str = "/run/trove-netiso/dockerd.pid";
/// Where the provisioned dockerd logs.
const DOCKERD_LOG: &str = "/var/log/trove-netiso/dockerd.log";
/// Shutting down stops the containers (our echo server ignores SIGTERM: 10 s, then a kill).
const STOP_WITHIN: Duration = Duration::from_secs(90);
/// Start-up restores every container of the shared daemon.
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

fn docker_answers() -> bool {
    docker_cli(&["version", "--format", "{{.Server.Version}}"]).is_ok()
}

fn is_alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// The provisioned dockerd, stopped by the test and started again with its own command line
/// (also on drop, when the test failed half-way).
struct Dockerd {
    command_line: Vec<String>,
    stopped: bool,
}

impl Dockerd {
    /// The running daemon, from its pid file and `/proc/<pid>/cmdline`.
    fn running() -> (Self, Pid) {
        let text = std::fs::read_to_string(DOCKERD_PID_FILE).unwrap_or_else(|e| {
            panic!(
                "{DOCKERD_PID_FILE}: {e}: {}",
                netiso_runtime::test_support::PROVISION_HINT
            )
        });
        let pid = Pid::from_raw(
            text.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{DOCKERD_PID_FILE} holds `{}`: {e}", text.trim())),
        );
        let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("dockerd (pid {pid}) is not running: {e}"));
        let command_line: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        assert!(
            command_line.first().is_some_and(|p| p.ends_with("dockerd")),
            "pid {pid} from {DOCKERD_PID_FILE} is not dockerd: {command_line:?}"
        );
        (
            Self {
                command_line,
                stopped: false,
            },
            pid,
        )
    }

    /// SIGTERM, then waits (bounded) until it has exited.
    fn stop(&mut self, pid: Pid) -> Duration {
        let started = Instant::now();
        self.stopped = true;
        kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM to dockerd {pid}: {e}"));
        while is_alive(pid) {
            assert!(
                started.elapsed() < STOP_WITHIN,
                "dockerd {pid} did not exit within {STOP_WITHIN:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// Starts it detached, in the guest namespace, logging where provisioning logs it, and
    /// waits (bounded) until it answers.
    fn start(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(DOCKERD_LOG)
            .map_err(|e| format!("{DOCKERD_LOG}: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("{DOCKERD_LOG}: {e}"))?;
        let status = Command::new("setsid")
            .arg("-f")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", guest_netns()))
            .args(&self.command_line)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .status()
            .map_err(|e| format!("cannot run setsid: {e}"))?;
        if !status.success() {
            return Err(format!("setsid -f nsenter dockerd: {status}"));
        }
        while !docker_answers() {
            if started.elapsed() > ANSWER_WITHIN {
                return Err(format!(
                    "dockerd did not answer within {ANSWER_WITHIN:?}; see {DOCKERD_LOG}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        self.stopped = false;
        Ok(started.elapsed())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.stopped && !docker_answers() {
            eprintln!("cleanup: starting dockerd again: {:?}", self.command_line);
            if let Err(e) = self.start() {
                eprintln!("cleanup: {e}; run `cargo xtask provision`");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerd_restart_brings_the_unless_stopped_container_back_with_its_nic() {
    let bed = HostnicBed::start().await;
    let (docker, port, plugin) = (&bed.docker, &bed.port, &bed.plugin);
    bed.create_network().await;
    let container = ContainerGuard::new(unique_name("nthn-db"));
    let before = bed
        .run_healthy(&bed.database_spec(container.name(), RestartPolicy::UnlessStopped))
        .await;
    assert_container_has_the_nic(&before, port);

    // Declared after the container guard: dropped first, so dockerd runs again before the
    // container, network and image are removed.
    let (mut dockerd, pid) = Dockerd::running();
    let stopped_in = dockerd.stop(pid);
    let (name, flags) = port.wait_back_in_guest(Duration::from_secs(20));
    assert_eq!(
        (name.as_str(), is_up(&flags)),
        (port.vm_if.as_str(), false),
        "the stopping daemon gave the NIC back"
    );
    let answered_in = dockerd.start().unwrap_or_else(|e| panic!("{e}"));

    // The daemon restarts the container (its restart policy) through our plugin.
    let started = Instant::now();
    let after = loop {
        let info = docker
            .inspect(container.name())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} vanished", container.name()));
        if info.status == ContainerStatus::Running && info.health == Some(HealthStatus::Healthy) {
            break info;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} is not back and healthy 90 s after dockerd answered: {}\nplugin log:\n{}",
            container.name(),
            info.describe_state(),
            plugin.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "dockerd stopped in {stopped_in:?}, answered in {answered_in:?}, container healthy {:?} later",
        started.elapsed()
    );
    assert_ne!(after.pid, before.pid, "a new process after the restart");
    assert_eq!(port.in_guest(), None, "the NIC left the VM namespace again");
    assert_container_has_the_nic(&after, port);
    bed.echo_over_ipv4();
    assert!(docker.remove(container.name(), true).await.unwrap());
    port.wait_back_in_guest(Duration::from_secs(20));
}
