//! The agent binary end to end, inside the simulated guest namespace, against the real
//! RabbitMQ and the guest's dockerd: our `RpcClient` plays Trove's API, a test conductor on a
//! test-declared queue receives the heartbeats. Needs root and `cargo xtask provision`.

mod common;

use std::time::{Duration, Instant};

use common::{AgentSetup, KEY, RunningAgent, args, wait_for_ping};
use netiso_messaging::{CallError, Context, RpcClient, Target};
use netiso_runtime::ContainerRuntime;
use netiso_runtime::test_support::image::PublishedImage;
use netiso_runtime::test_support::{ContainerGuard, connect_docker, next_counter};
use serde_json::{Value, json};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const CAST_TIMEOUT: Duration = Duration::from_secs(60);

fn unique_port() -> u16 {
    let offset = (std::process::id()
        .wrapping_mul(7)
        .wrapping_add(next_counter()))
        % 20_000;
    u16::try_from(40_000 + offset).unwrap_or(40_000)
}

/// An auth token and a user password of `tests/known-secrets.txt`: sent in the encrypted
/// prepare, they must never reach a log (the test-log scan checks it).
const AUTH_TOKEN: &str = "gAAAAABtrusted-keystone-token-c4f1";
const USER_PASSWORD: &str = "trusted-user-password-0b94c3";

fn prepare_context(guest_id: &str) -> Context {
    let mut context = Context::fresh();
    context
        .0
        .insert("auth_token".into(), Value::from(AUTH_TOKEN));
    context.0.insert(
        "trove_notification".into(),
        json!({
            "request_id": "req-agent-test",
            "server_type": "guest",
            "instance_id": guest_id,
            "notification_classname": "trove.common.notification.DBaaSInstanceCreate",
        }),
    );
    context
}

/// Calls `get_filesystem_stats` as Trove's API does and checks the answer has its fields.
async fn expect_filesystem_stats(client: &RpcClient, target: &Target) {
    let stats = client
        .call(
            target,
            "get_filesystem_stats",
            args(json!({"fs_path": null})),
            &Context::fresh(),
            CALL_TIMEOUT,
        )
        .await
        .expect("get_filesystem_stats");
    assert_filesystem_stats(&stats);
}

fn assert_filesystem_stats(stats: &Value) {
    for key in [
        "block_size",
        "total_blocks",
        "free_blocks",
        "total",
        "free",
        "used",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing in {stats}");
    }
    assert!(
        stats["block_size"].as_u64().is_some_and(|b| b > 0),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_agent_answers_ping_and_filesystem_stats_refuses_the_rest_and_stops_on_sigterm() {
    let setup = AgentSetup::new("plain", None);
    let mut run = RunningAgent::start(&setup).await;
    eprintln!(
        "start to first rpc_ping: {:?}; idle RSS {:?} KiB",
        run.ready_after,
        run.agent.rss_kib()
    );
    let (client, target) = (&run.client, &run.target);

    expect_filesystem_stats(client, target).await;

    match client
        .call(
            target,
            "list_users",
            args(json!({"limit": null, "marker": null, "include_marker": false})),
            &Context::fresh(),
            CALL_TIMEOUT,
        )
        .await
    {
        Err(CallError::Remote { class, message, .. }) => {
            assert_eq!(class, "NotSupported");
            assert!(
                message.starts_with("list_users is not supported by this agent"),
                "{message}"
            );
        }
        other => panic!("list_users must be refused, got {other:?}"),
    }
    match client
        .call(
            target,
            "get_hwinfo",
            args(json!({})),
            &Context::fresh(),
            CALL_TIMEOUT,
        )
        .await
    {
        Err(CallError::Remote { class, .. }) => assert_eq!(class, "NoSuchMethod"),
        other => panic!("get_hwinfo is unknown to Trove's guest too, got {other:?}"),
    }
    // Nothing prepared, nothing refused: no heartbeat yet.
    run.conductor.expect_silence(Duration::from_secs(1)).await;

    let status = run
        .agent
        .terminate(Duration::from_secs(15))
        .expect("the agent exits after SIGTERM");
    let log = run.agent.log_text();
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(log.contains("guest agent stopped"), "{log}");
    assert!(
        !log.contains("guest:guest"),
        "the broker password must never be logged:\n{log}"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_agent_prepares_a_bridged_database_and_heartbeats_the_conductor() {
    let image = PublishedImage::publish(unique_port()).await;
    let mut setup = AgentSetup::new("prep", Some(KEY));
    setup.use_image(&image);
    let container = ContainerGuard::new(setup.container_name.clone());
    let mut run = RunningAgent::start(&setup).await;
    let (client, target) = (&run.client, &run.target);

    expect_filesystem_stats(client, target).await;

    let prepare_args = args(json!({
        "packages": null, "databases": [], "memory_mb": 2048,
        "users": [{"_name": "app", "_host": "%", "_password": USER_PASSWORD}],
        "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql", "backup_info": null,
        "config_contents": "[mysqld]\n", "root_password": "never-logged-s3cr3t",
        "overrides": {}, "cluster_config": null, "snapshot": null, "modules": null,
        "ds_version": setup.version,
    }));
    let started = Instant::now();
    client
        .cast(
            target,
            "prepare",
            prepare_args,
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");

    run.conductor
        .expect_prepare_succeeded(&setup.guest_id, &run.agent)
        .await;
    eprintln!(
        "prepare (pull, create, start, port answers): {:?}",
        started.elapsed()
    );

    let docker = connect_docker().await;
    let info = docker
        .inspect(container.name())
        .await
        .expect("inspect")
        .expect("the database container exists");
    assert_eq!(info.image, image.reference().to_string());
    assert!(info.networks.contains_key("bridge"), "{info:?}");
    assert!(run.dir.path().join("state/guestagent.prepare.end").exists());

    // stop_db stops the container and reports shutdown.
    client
        .call(
            target,
            "stop_db",
            args(json!({})),
            &Context::fresh(),
            Duration::from_secs(60),
        )
        .await
        .expect("stop_db");
    let shutdown = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(shutdown.status(), Some("shutdown"), "{shutdown:?}");
    let stopped = docker.inspect(container.name()).await.expect("inspect");
    assert_ne!(
        stopped.map(|i| i.status),
        Some(netiso_runtime::ContainerStatus::Running)
    );

    // start_db_with_conf_changes starts it again and waits for the port.
    client
        .call(
            target,
            "start_db_with_conf_changes",
            args(json!({"config_contents": null, "ds_version": setup.version})),
            &Context::fresh(),
            Duration::from_secs(60),
        )
        .await
        .expect("start_db_with_conf_changes");
    let healthy = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(healthy.status(), Some("healthy"), "{healthy:?}");

    let log = run.agent.log_text();
    assert!(!log.contains("never-logged-s3cr3t"), "{log}");
    assert!(
        !log.contains(USER_PASSWORD) && !log.contains(AUTH_TOKEN),
        "{log}"
    );
    assert!(!log.contains(KEY), "the RPC key must never be logged");

    // A restarted agent finds the prepare marker and heartbeats the container's status
    // periodically, without a new prepare.
    run.restart_agent("restarted", &["--heartbeat-interval", "1"])
        .await;
    let periodic = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(periodic.method, "heartbeat");
    assert_eq!(periodic.status(), Some("healthy"), "{periodic:?}");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_failure_fails_closed_but_keeps_rpc_up() {
    let mut setup = AgentSetup::new("closed", Some(KEY));
    setup.network_isolation = true;
    // A MAC no interface of the guest has.
    setup.tenant_nic_json = Some(
        "{\"mac_address\": \"fa:16:3e:de:ad:01\", \"ipv4_address\": \"10.99.0.5\", \
         \"ipv4_cidr\": \"10.99.0.0/24\", \"ipv4_gateway\": null, \"ipv4_host_routes\": []}"
            .to_owned(),
    );
    setup.version = "never-pulled".into();
    let container = ContainerGuard::new(setup.container_name.clone());
    // Three attempts, 100 ms then 200 ms apart: the agent gives up quickly.
    let mut run = RunningAgent::start_with(
        &setup,
        &[
            "--isolation-attempts",
            "3",
            "--isolation-retry-initial-ms",
            "100",
        ],
    )
    .await;
    let (client, target) = (&run.client, &run.target);

    let at_start = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(at_start.method, "heartbeat");
    assert_eq!(at_start.status(), Some("failed to spawn"), "{at_start:?}");

    client
        .cast(
            target,
            "prepare",
            args(json!({"ds_version": setup.version, "root_password": null})),
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");
    let refused = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(refused.status(), Some("failed to spawn"), "{refused:?}");
    let exc = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(exc.method, "notify_exc_info", "{exc:?}");
    let message = exc.args["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no network interface has MAC fa:16:3e:de:ad:01"),
        "the reason reaches the conductor: {message}"
    );

    // RPC stays up for diagnosis, and no container was created.
    wait_for_ping(client, target, &run.agent).await;
    let docker = connect_docker().await;
    assert!(
        docker
            .inspect(container.name())
            .await
            .expect("inspect")
            .is_none(),
        "no database container may exist"
    );
    let log = run.agent.log_text();
    assert!(
        log.contains("isolation failed: no database will be started on this VM"),
        "{log}"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_dockerd_is_down_serves_rpc_and_uses_dockerd_once_it_answers() {
    let mut setup = AgentSetup::new("nodocker", None);
    let sockets = tempfile::tempdir().expect("tempdir");
    let socket = sockets.path().join("docker.sock");
    setup.docker_socket = Some(socket.clone());
    let mut run = RunningAgent::start(&setup).await;
    let (client, target) = (&run.client, &run.target);

    let restart = |client: &RpcClient, target: &Target| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            match client
                .call(
                    &target,
                    "restart",
                    args(json!({})),
                    &Context::fresh(),
                    CALL_TIMEOUT,
                )
                .await
            {
                Err(CallError::Remote { message, .. }) => message,
                other => panic!("restart of an absent database must fail, got {other:?}"),
            }
        }
    };
    let while_down = restart(client, target).await;
    assert!(
        while_down.contains("cannot reach the container runtime")
            && while_down.contains(&socket.display().to_string()),
        "the reply names the runtime's socket: {while_down}"
    );

    // dockerd "comes back" at the configured path.
    let docker_host = netiso_runtime::test_support::docker_host();
    std::os::unix::fs::symlink(docker_host.trim_start_matches("unix://"), &socket)
        .expect("socket link");
    let once_up = restart(client, target).await;
    assert!(
        !once_up.contains("cannot reach the container runtime")
            && once_up.contains(&setup.container_name),
        "dockerd answers now: no container {}: {once_up}",
        setup.container_name
    );
    assert!(run.agent.is_running(), "the agent never exited");
    let log = run.agent.log_text();
    assert!(
        log.contains("the container runtime does not answer: serving RPC anyway"),
        "{log}"
    );
    assert!(log.contains("connected to dockerd"), "{log}");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_prepare_finish_and_report() {
    let image = PublishedImage::publish(unique_port()).await;
    let mut setup = AgentSetup::new("term", Some(KEY));
    setup.use_image(&image);
    // Nothing listens on the configured port: prepare waits `state_change_wait_time` for it,
    // long enough to be terminated in the middle.
    setup.port = setup.port.wrapping_add(1);
    setup.wait_seconds = 4;
    let _container = ContainerGuard::new(setup.container_name.clone());
    let mut run = RunningAgent::start(&setup).await;

    run.client
        .cast(
            &run.target,
            "prepare",
            args(json!({"ds_version": setup.version})),
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");
    let building = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(building.status(), Some("building"));

    let status = run
        .agent
        .terminate(Duration::from_secs(30))
        .expect("the agent exits after finishing prepare");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        run.agent.log_text()
    );
    let failed = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(failed.status(), Some("failed to spawn"), "{failed:?}");
    let exc = run.conductor.next(CAST_TIMEOUT).await;
    assert_eq!(exc.method, "notify_exc_info");
    assert!(
        exc.args["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!(
                ":{} (bridged, from the VM) did not answer",
                setup.port
            ))),
        "{exc:?}"
    );
    let log = run.agent.log_text();
    assert!(
        log.contains("shutting down: finishing in-flight requests in_flight=1"),
        "{log}"
    );
    run.finish().await;
}
