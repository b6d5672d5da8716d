//! Trove's taskmanager as the foreign peer: a real Python `oslo.messaging` client with Trove's
//! SecureSerializer casts `prepare` to the agent running inside the simulated guest, against
//! the real RabbitMQ and the guest's dockerd. The database must then answer on its published
//! port inside the VM, and a conductor-like listener must receive the heartbeats. Needs root,
//! `cargo xtask provision` and the Python venv.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{AgentSetup, KEY, RunningAgent, test_url};
use netiso_runtime::ContainerRuntime;
use netiso_runtime::test_support::image::PublishedImage;
use netiso_runtime::test_support::net::in_netns;
use netiso_runtime::test_support::{
    ContainerGuard, PROVISION_HINT, connect_docker, guest_netns, next_counter,
};
use serde_json::{Value, json};
use tokio::process::Command;

const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_VENV: &str = "/var/lib/trove-netiso/venv";

fn unique_port() -> u16 {
    let offset = (std::process::id()
        .wrapping_mul(13)
        .wrapping_add(next_counter())
        .wrapping_add(7_919))
        % 20_000;
    u16::try_from(40_000 + offset).unwrap_or(40_000)
}

/// The venv's Python with oslo.messaging 18.3.1, or a loud failure naming the fix.
fn python() -> PathBuf {
    let venv = std::env::var("NETISO_PY_VENV").unwrap_or_else(|_| DEFAULT_VENV.to_owned());
    let python = PathBuf::from(&venv).join("bin/python");
    let check = std::process::Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m, cryptography; \
             assert m.version('oslo.messaging') == '18.3.1', m.version('oslo.messaging')",
        ])
        .stdout(Stdio::null())
        .status();
    assert!(
        check.is_ok_and(|s| s.success()),
        "{} lacks oslo.messaging 18.3.1 or cryptography: {PROVISION_HINT}",
        python.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs the taskmanager script to completion (bounded) and returns its JSON line.
async fn taskmanager_casts_prepare(setup: &AgentSetup, key: &str) -> Value {
    let run = Command::new(python())
        .arg(script("taskmanager_cast_prepare.py"))
        .args([
            test_url().as_str(),
            setup.exchange.as_str(),
            setup.guest_id.as_str(),
            key,
            setup.version.as_str(),
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PYTHON_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the Python taskmanager did not finish in {PYTHON_TIMEOUT:?}"))
        .expect("run the Python taskmanager");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python taskmanager failed ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("taskmanager output {stdout:?}: {e}\n{stderr}"))
}

/// Connects to the database's published port from inside the guest VM's namespace and
/// returns what its echo server sends back for one line.
fn echo_from_the_vm(port: u16, line: &str) -> Result<String, String> {
    let line = line.to_owned();
    in_netns(&guest_netns(), move || {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .map_err(|e| format!("connect {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("write to {address}: {e}"))?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(|e| format!("read from {address}: {e}"))?;
        Ok(answer.trim_end().to_owned())
    })?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_taskmanager_casts_prepare_and_the_database_answers_with_heartbeats() {
    netiso_runtime::test_support::require_root();
    // Fail before building anything when the foreign peer is missing.
    python();
    let image = PublishedImage::publish(unique_port()).await;
    let mut setup = AgentSetup::new("pytm", Some(KEY));
    setup.use_image(&image);
    let container = ContainerGuard::new(setup.container_name.clone());
    // Trove's taskmanager casts without waiting for the guest; starting waits for rpc_ping,
    // which keeps the cast from being dropped before the agent declared its queues.
    let mut run = RunningAgent::start(&setup).await;

    let started = Instant::now();
    let sent = taskmanager_casts_prepare(&setup, KEY).await;
    assert_eq!(sent["cast"], json!("prepare"), "{sent}");
    let request_id = sent["request_id"].clone();

    let end = run
        .conductor
        .expect_prepare_succeeded(&setup.guest_id, &run.agent)
        .await;
    let notification = &end.args["serialized_notification"];
    assert_eq!(
        notification["request_id"], request_id,
        "the taskmanager's context comes back unchanged: {notification}"
    );
    assert_eq!(
        notification["notification_classname"],
        json!("trove.common.notification.DBaaSInstanceCreate")
    );
    eprintln!(
        "python cast to notify_end (pull, create, start, port answers): {:?}",
        started.elapsed()
    );

    // The database is reachable: its published port answers inside the VM.
    let probe = format!("ping-{}", setup.guest_id);
    let answer = echo_from_the_vm(setup.port, &probe).unwrap_or_else(|e| {
        panic!(
            "the database does not answer: {e}\n{}",
            run.agent.log_text()
        )
    });
    assert_eq!(answer, probe);

    let docker = connect_docker().await;
    let info = docker
        .inspect(container.name())
        .await
        .expect("inspect")
        .expect("the database container exists");
    assert_eq!(info.image, image.reference().to_string());
    assert!(info.networks.contains_key("bridge"), "{info:?}");
    assert!(run.dir.path().join("state/guestagent.prepare.end").exists());

    let log = run.agent.log_text();
    assert!(
        log.contains("prepare asks for databases and users"),
        "the agent says what it did not do:\n{log}"
    );
    assert!(!log.contains("never-logged-s3cr3t"), "{log}");
    assert!(!log.contains(KEY), "the RPC key must never be logged");
    run.finish().await;
}
