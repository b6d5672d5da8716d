//! The `docker-hostnic` binary as systemd and dockerd run it: flags, request logs, SIGTERM, and
//! systemd socket activation through the real `systemd-socket-activate`.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a test failure.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_docker-hostnic");
const NET: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

/// One plugin call; `None` when the connection fails (e.g. the plugin was killed).
async fn try_call(socket: &Path, path: &str, body: &str) -> Option<u16> {
    let client: Client<UnixConnector, Full<Bytes>> = Client::unix();
    let request = hyper::Request::post(hyperlocal::Uri::new(socket, path))
        .body(Full::new(Bytes::from(body.to_owned())))
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

async fn call(socket: &Path, path: &str, body: &str) -> (u16, Value) {
    let client: Client<UnixConnector, Full<Bytes>> = Client::unix();
    let request = hyper::Request::post(hyperlocal::Uri::new(socket, path))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Waits (bounded) until something listens on `socket`.
fn wait_for_socket(socket: &Path, child: &mut Child) {
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "docker-hostnic exited early with {status}: {}",
                stderr_of(child)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "docker-hostnic did not listen on {} within 5 s",
        socket.display()
    );
}

/// Sends SIGTERM and waits (bounded) for a clean exit; returns stderr.
fn terminate(child: &mut Child) -> String {
    stop_with(child, Signal::SIGTERM)
}

/// Sends `signal` and waits (bounded) for a clean exit; returns stderr.
fn stop_with(child: &mut Child, signal: Signal) -> String {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            let logs = stderr_of(child);
            assert!(status.success(), "exit status {status}; logs:\n{logs}");
            return logs;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill().unwrap();
    panic!("docker-hostnic ignored {signal} for 10 s");
}

fn stderr_of(child: &mut Child) -> String {
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut logs).unwrap();
    }
    logs
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("eth1.json"),
            r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_gateway": "10.0.0.1"}"#,
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the plugin on these files (log level `info`) and waits until it listens on
    /// `socket`.
    fn serve(&self, socket: &Path, log_format: &str, stderr: Stdio) -> Child {
        let mut child = Command::new(BINARY)
            .args(self.flags(socket, log_format))
            .env("RUST_LOG", "info")
            .stderr(stderr)
            .spawn()
            .unwrap();
        wait_for_socket(socket, &mut child);
        child
    }

    fn flags(&self, socket: &Path, log_format: &str) -> Vec<String> {
        vec![
            "--socket".into(),
            socket.display().to_string(),
            "--state-file".into(),
            self.path("hostnic.json").display().to_string(),
            "--tenant-nic-file".into(),
            self.path("eth1.json").display().to_string(),
            "--log-format".into(),
            log_format.into(),
        ]
    }
}

/// Fails (never skips) when systemd's socket-activation helper is missing.
fn require_systemd_socket_activate() {
    let probe = Command::new("systemd-socket-activate")
        .arg("--version")
        .output();
    assert!(
        probe.is_ok_and(|output| output.status.success()),
        "this test needs `systemd-socket-activate` (Debian package systemd); run `cargo xtask provision`"
    );
}

fn create_body() -> String {
    json!({"NetworkID": NET, "Options": {"com.docker.network.generic": {"hostnic_mac": "fa:16:3e:12:34:56"}}, "IPv4Data": [], "IPv6Data": []})
        .to_string()
}

#[tokio::test]
async fn serves_its_socket_logs_each_call_and_stops_on_sigterm() {
    let files = Files::new();
    let socket = files.path("plugins/docker-hostnic.sock");
    let mut child = files.serve(&socket, "human", Stdio::piped());
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);

    assert_eq!(
        call(&socket, "/Plugin.Activate", "").await,
        (200, json!({"Implements": ["NetworkDriver"]}))
    );
    assert_eq!(
        call(&socket, "/NetworkDriver.CreateNetwork", &create_body()).await,
        (200, json!({}))
    );
    let (status, answer) = call(&socket, "/NetworkDriver.Join", "{}").await;
    assert_eq!(status, 400);
    assert!(
        answer["Err"]
            .as_str()
            .unwrap()
            .contains("missing field NetworkID")
    );

    let logs = terminate(&mut child);
    assert!(!socket.exists(), "the socket is removed on SIGTERM");
    let state: Value =
        serde_json::from_slice(&std::fs::read(files.path("hostnic.json")).unwrap()).unwrap();
    assert_eq!(state, json!({NET: {"mac_address": "fa:16:3e:12:34:56"}}));
    assert!(logs.contains("docker-hostnic is serving"), "{logs}");
    let create_line = logs
        .lines()
        .find(|line| line.contains("/NetworkDriver.CreateNetwork"))
        .expect(&logs);
    assert!(
        create_line.contains(NET)
            && create_line.contains("status=200")
            && create_line.contains("duration_us="),
        "{create_line}"
    );
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[tokio::test]
async fn runs_from_a_systemd_socket_and_logs_json() {
    require_systemd_socket_activate();
    let files = Files::new();
    let socket = files.path("activated.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", socket.display()))
        .arg(BINARY)
        .args(files.flags(&files.path("unused.sock"), "json"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&socket, &mut child);
    assert_eq!(call(&socket, "/Plugin.Activate", "").await.0, 200);
    assert_eq!(
        call(&socket, "/NetworkDriver.CreateNetwork", &create_body())
            .await
            .0,
        200
    );

    let logs = terminate(&mut child);
    assert!(
        !files.path("unused.sock").exists(),
        "--socket is not used when systemd passes one"
    );
    assert!(
        socket.exists(),
        "the socket belongs to systemd and is left in place"
    );
    // systemd-socket-activate adds plain-text lines of its own ("Listening on ...", "Execing ...");
    // every line of ours is a JSON object.
    let events: Vec<Value> = logs
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect(line))
        .collect();
    assert!(
        events
            .iter()
            .any(|event| event["message"] == "docker-hostnic is serving"),
        "{logs}"
    );
    let create = events
        .iter()
        .find(|event| event["endpoint"] == "/NetworkDriver.CreateNetwork")
        .expect(&logs);
    assert_eq!(create["network_id"], NET);
    assert_eq!(create["status"], 200);
    assert!(create["duration_us"].is_u64());
}

#[test]
fn refuses_a_second_instance_on_the_same_socket() {
    let files = Files::new();
    let socket = files.path("docker-hostnic.sock");
    let mut first = files.serve(&socket, "human", Stdio::piped());
    let second = Command::new(BINARY)
        .args(files.flags(&socket, "human"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("already serving"), "{message}");
    let logs = stop_with(&mut first, Signal::SIGINT);
    assert!(
        logs.contains("signal=\"SIGINT\"") || logs.contains("signal=SIGINT"),
        "{logs}"
    );
    assert!(!socket.exists(), "the socket is removed on SIGINT too");
}

#[test]
fn help_lists_the_flags() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--socket",
        "--state-file",
        "--tenant-nic-file",
        "--log-format",
        "/run/docker/plugins/docker-hostnic.sock",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// Concurrent `CreateNetwork` calls per start; writes are serialised, so most are in flight at
/// the kill.
const CALLS_PER_ROUND: u64 = 150;

#[tokio::test]
async fn acknowledged_networks_survive_sigkill_mid_write() {
    let files = Files::new();
    let socket = files.path("docker-hostnic.sock");
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3u64 {
        let mut child = files.serve(&socket, "json", Stdio::null());
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for index in 0..CALLS_PER_ROUND {
            let network_id = format!("{:064x}", round * 1000 + index + 1);
            let body = json!({"NetworkID": network_id, "Options": {"com.docker.network.generic": {"hostnic_mac": "fa:16:3e:12:34:56"}}}).to_string();
            let socket = socket.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let status = try_call(&socket, "/NetworkDriver.CreateNetwork", &body).await;
                let _ = done.send((network_id, status));
            });
        }
        drop(done);
        // Kill once a few writes were acknowledged, while the others are in flight.
        let kill_after = 2 + round * 5;
        let mut acknowledged_this_round = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acknowledged_this_round < kill_after {
            let Ok(Some((network_id, status))) =
                tokio::time::timeout_at(deadline, finished.recv()).await
            else {
                break;
            };
            if status == Some(200) {
                acknowledged.push(network_id);
                acknowledged_this_round += 1;
            }
        }
        kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap()),
            Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        while let Some((network_id, status)) = finished.recv().await {
            if status == Some(200) {
                acknowledged.push(network_id);
                acknowledged_this_round += 1;
            }
        }
        assert!(
            acknowledged_this_round < 60,
            "round {round}: the kill came after every write; nothing was interrupted"
        );
        let text = std::fs::read_to_string(files.path("hostnic.json")).unwrap();
        let state: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("state file corrupt after SIGKILL ({err}): {text:?}"));
        for network_id in &acknowledged {
            assert_eq!(
                state[network_id]["mac_address"], "fa:16:3e:12:34:56",
                "acknowledged network {network_id} was lost"
            );
        }
        let _ = std::fs::remove_file(&socket);
    }
    assert!(
        !acknowledged.is_empty(),
        "no CreateNetwork was acknowledged before the kills; the test proved nothing"
    );
    // The next start removes temporary files an interrupted write may have left.
    let mut child = files.serve(&socket, "json", Stdio::null());
    terminate(&mut child);
    let leftovers: Vec<String> = std::fs::read_dir(files.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn refuses_two_systemd_sockets_with_a_clear_message() {
    require_systemd_socket_activate();
    let files = Files::new();
    let (first, second) = (files.path("one.sock"), files.path("two.sock"));
    let mut child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", first.display()))
        .arg(format!("--listen={}", second.display()))
        .arg(BINARY)
        .args(files.flags(&files.path("unused.sock"), "human"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the program on the first connection.
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(&first).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut status = None;
    for _ in 0..400 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("docker-hostnic neither served nor exited within 10 s");
    };
    let logs = stderr_of(&mut child);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("LISTEN_FDS=2") && logs.contains("exactly one socket"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_is_kept_aside_and_reported() {
    let files = Files::new();
    std::fs::write(files.path("hostnic.json"), "{\"3f5e").unwrap();
    let socket = files.path("docker-hostnic.sock");
    let mut child = files.serve(&socket, "json", Stdio::piped());
    let (status, answer) = call(
        &socket,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NET, "EndpointID": NET, "SandboxKey": "/var/run/docker/netns/0123456789ab"}).to_string(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        answer["Err"].as_str().unwrap().contains("moved aside"),
        "{answer}"
    );
    let logs = terminate(&mut child);
    let report: Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["level"] == "ERROR")
        .expect(&logs);
    let kept_as = report["kept_as"].as_str().unwrap();
    assert!(kept_as.contains("hostnic.json.corrupt-"), "{report}");
    assert_eq!(std::fs::read_to_string(kept_as).unwrap(), "{\"3f5e");
}
