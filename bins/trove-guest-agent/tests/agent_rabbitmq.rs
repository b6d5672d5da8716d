//! The agent binary end to end, inside the simulated guest namespace, against the real
//! RabbitMQ and the guest's dockerd: our `RpcClient` plays Trove's API, a test conductor on a
//! test-declared queue receives the heartbeats. Needs root and `cargo xtask provision`.

mod common;

use std::time::{Duration, Instant};

use common::{AgentProcess, AgentSetup, KEY, TestConductor, args, connect, wait_for_ping};
use netiso_messaging::{CallError, Context};
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

fn prepare_context(guest_id: &str) -> Context {
    let mut context = Context::fresh();
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
    let _cleanup = setup.cleanup();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = setup.write(dir.path());
    let transport = connect().await;
    let mut conductor = TestConductor::start(
        &transport,
        &setup.exchange,
        &setup.conductor_queue,
        &setup.guest_id,
        None,
    )
    .await;
    let started = Instant::now();
    let mut agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let client = setup.client(&transport);
    let target = setup.target();
    let first_ping = wait_for_ping(&client, &target, &agent).await;
    eprintln!(
        "start to first rpc_ping: {:?} (ping loop {:?}); idle RSS {:?} KiB",
        started.elapsed(),
        first_ping,
        agent.rss_kib()
    );

    let stats = client
        .call(
            &target,
            "get_filesystem_stats",
            args(json!({"fs_path": null})),
            &Context::fresh(),
            CALL_TIMEOUT,
        )
        .await
        .expect("get_filesystem_stats");
    assert_filesystem_stats(&stats);

    match client
        .call(
            &target,
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
            &target,
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
    conductor.expect_silence(Duration::from_secs(1)).await;

    let status = agent
        .terminate(Duration::from_secs(15))
        .expect("the agent exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(log.contains("guest agent stopped"), "{log}");
    assert!(
        !log.contains("guest:guest"),
        "the broker password must never be logged:\n{log}"
    );
    conductor.stop().await;
    transport.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_agent_prepares_a_bridged_database_and_heartbeats_the_conductor() {
    let port = unique_port();
    let image = PublishedImage::publish(port).await;
    let mut setup = AgentSetup::new("prep", Some(KEY));
    setup.image = image.reference().name().to_owned();
    setup.version = image.reference().tag_or_digest().to_owned();
    setup.port = port;
    let container = ContainerGuard::new(setup.container_name.clone());
    let _cleanup = setup.cleanup();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = setup.write(dir.path());
    let transport = connect().await;
    let mut conductor = TestConductor::start(
        &transport,
        &setup.exchange,
        &setup.conductor_queue,
        &setup.guest_id,
        Some(KEY),
    )
    .await;
    let agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let client = setup.client(&transport);
    let target = setup.target();
    wait_for_ping(&client, &target, &agent).await;

    let stats = client
        .call(
            &target,
            "get_filesystem_stats",
            args(json!({"fs_path": null})),
            &Context::fresh(),
            CALL_TIMEOUT,
        )
        .await
        .expect("get_filesystem_stats (encrypted)");
    assert_filesystem_stats(&stats);

    let prepare_args = args(json!({
        "packages": null, "databases": [], "memory_mb": 2048, "users": [],
        "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql", "backup_info": null,
        "config_contents": "[mysqld]\n", "root_password": "never-logged-s3cr3t",
        "overrides": {}, "cluster_config": null, "snapshot": null, "modules": null,
        "ds_version": setup.version,
    }));
    let started = Instant::now();
    client
        .cast(
            &target,
            "prepare",
            prepare_args,
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");

    let building = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(building.method, "heartbeat");
    assert_eq!(building.status(), Some("building"), "{building:?}");
    assert_eq!(building.args["instance_id"], json!(setup.guest_id));
    let healthy = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(
        healthy.status(),
        Some("healthy"),
        "{healthy:?}\n{}",
        agent.log_text()
    );
    assert!(
        healthy.args["sent"].as_f64() > building.args["sent"].as_f64(),
        "sent strictly increases"
    );
    let end = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(end.method, "notify_end", "{end:?}");
    assert_eq!(
        end.args["serialized_notification"]["instance_id"],
        json!(setup.guest_id)
    );
    assert_eq!(end.args["notification_args"], json!({}));
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
    assert!(dir.path().join("state/guestagent.prepare.end").exists());

    // stop_db stops the container and reports shutdown.
    client
        .call(
            &target,
            "stop_db",
            args(json!({})),
            &Context::fresh(),
            Duration::from_secs(60),
        )
        .await
        .expect("stop_db");
    let shutdown = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(shutdown.status(), Some("shutdown"), "{shutdown:?}");
    let stopped = docker.inspect(container.name()).await.expect("inspect");
    assert_ne!(
        stopped.map(|i| i.status),
        Some(netiso_runtime::ContainerStatus::Running)
    );

    // start_db_with_conf_changes starts it again and waits for the port.
    client
        .call(
            &target,
            "start_db_with_conf_changes",
            args(json!({"config_contents": null, "ds_version": setup.version})),
            &Context::fresh(),
            Duration::from_secs(60),
        )
        .await
        .expect("start_db_with_conf_changes");
    let healthy = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(healthy.status(), Some("healthy"), "{healthy:?}");

    let log = agent.log_text();
    assert!(!log.contains("never-logged-s3cr3t"), "{log}");
    assert!(!log.contains(KEY), "the RPC key must never be logged");
    drop(agent);

    // A restarted agent finds the prepare marker and heartbeats the container's status
    // periodically, without a new prepare.
    let agent = AgentProcess::spawn_with(
        &conf,
        dir.path().join("agent-restarted.log"),
        &["--heartbeat-interval", "1"],
    );
    wait_for_ping(&client, &target, &agent).await;
    let periodic = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(periodic.method, "heartbeat");
    assert_eq!(periodic.status(), Some("healthy"), "{periodic:?}");
    drop(agent);
    conductor.stop().await;
    transport.close();
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
    let _cleanup = setup.cleanup();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = setup.write(dir.path());
    let transport = connect().await;
    let mut conductor = TestConductor::start(
        &transport,
        &setup.exchange,
        &setup.conductor_queue,
        &setup.guest_id,
        Some(KEY),
    )
    .await;
    let agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let client = setup.client(&transport);
    let target = setup.target();
    wait_for_ping(&client, &target, &agent).await;

    let at_start = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(at_start.method, "heartbeat");
    assert_eq!(at_start.status(), Some("failed to spawn"), "{at_start:?}");

    client
        .cast(
            &target,
            "prepare",
            args(json!({"ds_version": setup.version, "root_password": null})),
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");
    let refused = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(refused.status(), Some("failed to spawn"), "{refused:?}");
    let exc = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(exc.method, "notify_exc_info", "{exc:?}");
    let message = exc.args["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no network interface has MAC fa:16:3e:de:ad:01"),
        "the reason reaches the conductor: {message}"
    );

    // RPC stays up for diagnosis, and no container was created.
    wait_for_ping(&client, &target, &agent).await;
    let docker = connect_docker().await;
    assert!(
        docker
            .inspect(container.name())
            .await
            .expect("inspect")
            .is_none(),
        "no database container may exist"
    );
    let log = agent.log_text();
    assert!(
        log.contains("isolation failed: no database will be started on this VM"),
        "{log}"
    );
    drop(agent);
    conductor.stop().await;
    transport.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_prepare_finish_and_report() {
    let port = unique_port();
    let image = PublishedImage::publish(port).await;
    let mut setup = AgentSetup::new("term", Some(KEY));
    setup.image = image.reference().name().to_owned();
    setup.version = image.reference().tag_or_digest().to_owned();
    // Nothing listens on the configured port: prepare waits `state_change_wait_time` for it,
    // long enough to be terminated in the middle.
    setup.port = port.wrapping_add(1);
    setup.wait_seconds = 4;
    let _container = ContainerGuard::new(setup.container_name.clone());
    let _cleanup = setup.cleanup();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = setup.write(dir.path());
    let transport = connect().await;
    let mut conductor = TestConductor::start(
        &transport,
        &setup.exchange,
        &setup.conductor_queue,
        &setup.guest_id,
        Some(KEY),
    )
    .await;
    let mut agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let client = setup.client(&transport);
    let target = setup.target();
    wait_for_ping(&client, &target, &agent).await;

    client
        .cast(
            &target,
            "prepare",
            args(json!({"ds_version": setup.version})),
            &prepare_context(&setup.guest_id),
        )
        .await
        .expect("cast prepare");
    let building = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(building.status(), Some("building"));

    let status = agent
        .terminate(Duration::from_secs(30))
        .expect("the agent exits after finishing prepare");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        agent.log_text()
    );
    let failed = conductor.next(CAST_TIMEOUT).await;
    assert_eq!(failed.status(), Some("failed to spawn"), "{failed:?}");
    let exc = conductor.next(CAST_TIMEOUT).await;
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
    let log = agent.log_text();
    assert!(
        log.contains("shutting down: finishing in-flight requests in_flight=1"),
        "{log}"
    );
    conductor.stop().await;
    transport.close();
}
