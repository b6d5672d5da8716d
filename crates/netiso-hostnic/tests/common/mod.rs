//! Shared helpers of the integration tests: a plugin client over the unix socket, a server
//! running on its own runtime (optionally inside a network namespace), and throwaway network
//! namespaces.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};
use netiso_hostnic::{Driver, NicLocator, PluginSocket, StateStore};
use nix::sched::{CloneFlags, setns};
use serde_json::Value;

pub const NET_A: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
pub const NET_B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const EP: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// What the plugin answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub content_type: String,
}

/// Sends one plugin call over the unix socket, as dockerd does.
pub async fn call(socket: &Path, method: &str, path: &str, body: &str) -> Answer {
    let client: Client<UnixConnector, Full<Bytes>> = Client::unix();
    let request = hyper::Request::builder()
        .method(method)
        .uri(hyperlocal::Uri::new(socket, path))
        .header("Accept", "application/vnd.docker.plugins.v1.2+json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = client.request(request).await.expect("the plugin answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "answer is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        json,
        content_type,
    }
}

/// `POST` with a JSON body.
pub async fn post(socket: &Path, path: &str, body: &Value) -> Answer {
    call(socket, "POST", path, &body.to_string()).await
}

pub fn create_network_body(network_id: &str, mac: &str) -> Value {
    serde_json::json!({
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {"hostnic_mac": mac}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}],
        "IPv6Data": []
    })
}

pub fn join_body(network_id: &str, sandbox_key: &Path) -> Value {
    serde_json::json!({"NetworkID": network_id, "EndpointID": EP, "SandboxKey": sandbox_key, "Options": {}})
}

/// A plugin server on its own thread and runtime; stopped (gracefully) on drop.
pub struct TestServer {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server; with `netns`, its thread enters that namespace first, so the runtime's
    /// threads (and the driver's lookups) all live there.
    pub fn start(
        socket: &Path,
        state_file: &Path,
        tenant_nic_file: &Path,
        locator: Arc<dyn NicLocator>,
        netns: Option<PathBuf>,
    ) -> Self {
        Self::start_with_limits(
            socket,
            state_file,
            tenant_nic_file,
            locator,
            netns,
            netiso_hostnic::ServeLimits::default(),
        )
    }

    /// [`TestServer::start`] with explicit connection limits.
    pub fn start_with_limits(
        socket: &Path,
        state_file: &Path,
        tenant_nic_file: &Path,
        locator: Arc<dyn NicLocator>,
        netns: Option<PathBuf>,
        limits: netiso_hostnic::ServeLimits,
    ) -> Self {
        let state = StateStore::open(state_file).expect("state file opens");
        let driver = Arc::new(Driver::new(state, tenant_nic_file.to_owned(), locator));
        let plugin_socket = PluginSocket::bind(socket).expect("socket binds");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(netns) = netns {
                let file = File::open(&netns).expect("open the test namespace");
                setns(&file, CloneFlags::CLONE_NEWNET).expect("enter the test namespace");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(netiso_hostnic::serve_with_limits(
                    plugin_socket,
                    driver,
                    limits,
                    async {
                        let _ = stopped.await;
                    },
                ))
                .expect("server runs");
        });
        Self {
            socket: socket.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Asks the server to stop and waits until it has.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread exits cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        } else if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Fails loudly when the real-kernel tests cannot run.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and veth pairs and need root: run `cargo test -p netiso-hostnic` as root"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.is_ok_and(|output| output.status.success()),
        "these tests need the `ip` tool: install iproute2 (run `cargo xtask provision`)"
    );
}

/// A throwaway network namespace `nth-<pid>-<n>`, deleted on drop (also when a test fails).
pub struct TestNetns {
    pub name: String,
}

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

impl TestNetns {
    pub fn new() -> Self {
        let name = format!(
            "nth-{}-{}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full);
    }

    /// Adds a veth pair inside the namespace, the first end carrying `mac`.
    pub fn add_veth(&self, name: &str, peer: &str, mac: &str) {
        assert!(
            name.len() <= 15 && peer.len() <= 15,
            "interface names are at most 15 characters"
        );
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
        self.ip(&["link", "set", name, "address", mac]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run_ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A short interface name unique to this test process.
pub fn ifname(tag: &str) -> String {
    let name = format!("nh{}{tag}", std::process::id() % 100_000);
    assert!(name.len() <= 15);
    name
}
