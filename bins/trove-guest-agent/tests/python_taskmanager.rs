//! Trove's taskmanager as the foreign peer: a real Python `oslo.messaging` client with Trove's
//! SecureSerializer casts `prepare` (one database, one user granted on it, a rendered
//! `config_contents`) to the agent running inside the simulated guest, against the real
//! RabbitMQ, the guest's dockerd and the provisioned MariaDB image. The user must then log in
//! with Debian's `mariadb` client from inside the VM, write a row and read it back, and see
//! the configuration in effect; a conductor-like listener must receive the heartbeats. Needs
//! root, `cargo xtask provision` and the Python venv.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{AgentSetup, KEY, RunningAgent, test_url};
use netiso_runtime::ContainerRuntime;
use netiso_runtime::test_support::{
    ContainerGuard, PROVISION_HINT, connect_docker, guest_netns, next_counter,
};
use serde_json::{Value, json};
use tokio::process::Command;

const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_VENV: &str = "/var/lib/trove-netiso/venv";
/// The password the taskmanager gives `appuser`; it must never reach the agent's log.
const APP_PASSWORD: &str = "never-logged-s3cr3t";

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
async fn taskmanager_casts_prepare(setup: &AgentSetup, key: &str, mount_point: &str) -> Value {
    let run = Command::new(python())
        .arg(script("taskmanager_cast_prepare.py"))
        .args([
            test_url().as_str(),
            setup.exchange.as_str(),
            setup.guest_id.as_str(),
            key,
            setup.version.as_str(),
            setup.datastore.as_str(),
            mount_point,
            setup.port.to_string().as_str(),
        ])
        .env("APP_PASSWORD", APP_PASSWORD)
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

/// Runs SQL as `appuser` with Debian's `mariadb` client from inside the guest VM's
/// namespace, over TCP to the published port, and returns its tab-separated output.
fn sql_from_the_vm(port: u16, sql: &str) -> Result<String, String> {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &guest_netns(), "mariadb", "--protocol=TCP"])
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "appuser"])
        .args(["--connect-timeout=5", "-N", "-B", "app", "-e", sql])
        .env("MYSQL_PWD", APP_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the mariadb client: {e} ({PROVISION_HINT})"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "mariadb -e {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_taskmanager_casts_prepare_and_the_user_logs_in_with_heartbeats() {
    netiso_runtime::test_support::require_root();
    // Fail before building anything when the foreign peer is missing.
    python();
    let mut setup = AgentSetup::new("pytm", Some(KEY));
    setup.use_mariadb(unique_port());
    let container = ContainerGuard::new(setup.container_name.clone());
    // Trove's taskmanager casts without waiting for the guest; starting waits for rpc_ping,
    // which keeps the cast from being dropped before the agent declared its queues.
    let mut run = RunningAgent::start(&setup).await;
    let mount_point = run.dir.path().join("data").display().to_string();

    let started = Instant::now();
    let sent = taskmanager_casts_prepare(&setup, KEY, &mount_point).await;
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
        "python cast to notify_end (pull, create, init, SQL answers, users): {:?}",
        started.elapsed()
    );

    // The user the taskmanager asked for logs in from the VM, writes a row, reads it back.
    let answer = sql_from_the_vm(
        setup.port,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO t VALUES (1, 'from-python'); SELECT v FROM t WHERE id = 1",
    )
    .unwrap_or_else(|e| {
        panic!(
            "appuser cannot use the database: {e}\n{}",
            run.agent.log_text()
        )
    });
    assert_eq!(answer, "from-python");
    eprintln!(
        "python cast to the first row read back from the VM: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sql_from_the_vm(
            setup.port,
            "SELECT @@global.max_connections, @@character_set_database"
        )
        .expect("variables"),
        "200\tutf8mb4",
        "config_contents and the database's character set are in effect"
    );

    let docker = connect_docker().await;
    let info = docker
        .inspect(container.name())
        .await
        .expect("inspect")
        .expect("the database container exists");
    assert_eq!(info.image, format!("{}:{}", setup.image, setup.version));
    assert!(info.networks.contains_key("bridge"), "{info:?}");
    assert!(run.dir.path().join("state/guestagent.prepare.end").exists());

    // A restarted agent heartbeats the server's status periodically: `healthy` while root
    // logs in through the socket, `shutdown` once the container is stopped.
    let first_log = run.agent.log_text();
    run.restart_agent("agent-restarted.log", &["--heartbeat-interval", "1"])
        .await;
    let periodic = run.conductor.next(Duration::from_secs(30)).await;
    assert_eq!(
        (periodic.method.as_str(), periodic.status()),
        ("heartbeat", Some("healthy")),
        "{periodic:?}"
    );
    docker
        .stop(container.name(), Duration::from_secs(60))
        .await
        .expect("stop the database");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let event = run.conductor.next(Duration::from_secs(30)).await;
        if event.status() == Some("shutdown") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shutdown heartbeat after the stop: {event:?}"
        );
    }

    let log = format!("{first_log}{}", run.agent.log_text());
    assert!(
        log.contains("server secured, databases and users created"),
        "the agent says what it did:\n{log}"
    );
    assert!(!log.contains(APP_PASSWORD), "{log}");
    assert!(!log.contains(KEY), "the RPC key must never be logged");
    docker
        .remove(container.name(), true)
        .await
        .expect("remove the database container");
    run.finish().await;
}
