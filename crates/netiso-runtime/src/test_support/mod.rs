//! Helpers for tests that run against the provisioned simulated guest (`cargo xtask
//! provision`): environment, unique names, drop guards, a throwaway database image in the
//! local registry, and tenant-like veth pairs with client namespaces.
//!
//! Tests that need root or a service and do not have it panic with the fix in the message;
//! they never skip. Everything a helper creates is removed by a guard's `Drop`, also when
//! the test fails.

pub mod image;
pub mod net;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::docker::DockerRuntime;
use crate::runtime::ContainerRuntime;

/// Default of `NETISO_DOCKER_HOST`: the simulated guest's dockerd.
pub const DEFAULT_TEST_DOCKER_HOST: &str = "unix:///run/trove-netiso/docker.sock";
/// Default of `NETISO_GUEST_REGISTRY`: the registry as dockerd (inside the guest) sees it.
pub const DEFAULT_GUEST_REGISTRY: &str = "10.251.0.1:5000";
/// Default of `NETISO_GUEST_NETNS`: the namespace dockerd runs in.
pub const DEFAULT_GUEST_NETNS: &str = "netiso-guest";

/// What a test tells the developer when a service is missing.
pub const PROVISION_HINT: &str = "run `cargo xtask provision` (as root)";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The guest dockerd (`NETISO_DOCKER_HOST`).
pub fn docker_host() -> String {
    env_or("NETISO_DOCKER_HOST", DEFAULT_TEST_DOCKER_HOST)
}

/// The registry as the guest dockerd reaches it (`NETISO_GUEST_REGISTRY`).
pub fn guest_registry() -> String {
    env_or("NETISO_GUEST_REGISTRY", DEFAULT_GUEST_REGISTRY)
}

/// The guest network namespace (`NETISO_GUEST_NETNS`).
pub fn guest_netns() -> String {
    env_or("NETISO_GUEST_NETNS", DEFAULT_GUEST_NETNS)
}

/// Panics unless the test runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, iptables, the guest dockerd): \
         run it as root after {PROVISION_HINT}"
    );
}

/// Connects to the guest dockerd or panics naming the fix.
pub async fn connect_docker() -> DockerRuntime {
    let host = docker_host();
    match DockerRuntime::connect(&host).await {
        Ok(docker) => docker,
        Err(e) => panic!("the guest dockerd at {host} is not reachable ({e}): {PROVISION_HINT}"),
    }
}

/// Runs a command (`ip`, `docker`, `nsenter`…): `Ok(stdout)` on success, else `Err` naming
/// the command line, its exit status and its stderr.
pub fn run_command(program: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_counter())
}

/// A per-process counter, for names, ports and subnets.
pub fn next_counter() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Runs an async cleanup to completion from `Drop`, on a runtime of its own in a thread of
/// its own, so it works inside and outside of a tokio runtime.
pub fn block_on_cleanup<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let joined = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(make()),
            Err(e) => eprintln!("cleanup: cannot build a runtime: {e}"),
        }
    })
    .join();
    if joined.is_err() {
        eprintln!("cleanup: the cleanup thread panicked");
    }
}

/// Force-removes a container by name when dropped.
#[derive(Debug)]
pub struct ContainerGuard {
    name: String,
}

impl ContainerGuard {
    /// Guards the container `name` (created or not yet).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(move || async move {
            let host = docker_host();
            match DockerRuntime::connect(&host).await {
                Ok(docker) => {
                    if let Err(e) = docker.remove(&name, true).await {
                        eprintln!("cleanup: removing container {name}: {e}");
                    }
                }
                Err(e) => eprintln!("cleanup: container {name} left behind: {e}"),
            }
        });
    }
}

/// Removes a network by name when dropped.
#[derive(Debug)]
pub struct NetworkGuard {
    name: String,
}

impl NetworkGuard {
    /// Guards the network `name` (created or not yet).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(move || async move {
            let host = docker_host();
            match DockerRuntime::connect(&host).await {
                Ok(docker) => {
                    if let Err(e) = docker.remove_network(&name).await {
                        eprintln!("cleanup: removing network {name}: {e}");
                    }
                }
                Err(e) => eprintln!("cleanup: network {name} left behind: {e}"),
            }
        });
    }
}
