//! The guest RPC handlers' logic ([`GuestService`]) against a fake container runtime, a
//! recording conductor and a scripted port probe: no root, no services.

use std::path::PathBuf;
use std::time::Duration;

use netiso_guest::mysql::{Layout, MysqlSettings};
use netiso_guest::rpc::{
    CONFIG_CONTENTS_FILE, GuestService, PREPARE_END_FILE, PrepareRequest, ProbeTarget,
    STOPPED_ON_REQUEST_FILE, UNFINISHED_START_FILE, status_of,
};
use netiso_messaging::{Context, ServiceStatus};
use netiso_runtime::{ContainerStatus, HealthStatus, NetworkAttachment};
use serde_json::json;

mod common;

use common::{Fixture, GUEST_ID, NAME, PORT, context_with_notification, info, tenant_nic};

#[tokio::test]
async fn prepare_bridged_pulls_runs_probes_the_published_port_and_reports_healthy() {
    let fx = Fixture::new();
    *fx.probe.failures.lock().expect("lock") = 2;
    let service = fx.service(false, None);
    assert!(!service.is_prepared());
    service
        .prepare(
            &context_with_notification(),
            PrepareRequest::version(Some("8.0.36".into())),
        )
        .await;

    assert_eq!(
        fx.runtime.calls(),
        vec![
            "ensure_image 10.251.0.1:5000/trove/mysql:8.0.36 Always credentials=false".to_owned(),
            format!(
                "create database 10.251.0.1:5000/trove/mysql:8.0.36 {:?}",
                NetworkAttachment::Bridged {
                    published_tcp_ports: vec![PORT]
                }
            ),
            "start database".to_owned(),
        ]
    );
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy", "notify_end"]
    );
    assert_eq!(
        fx.sink.notifications.lock().expect("lock")[0],
        json!({"request_id": "req-1", "server_type": "guest", "instance_id": GUEST_ID})
    );
    let targets = fx.probe.targets.lock().expect("lock").clone();
    assert_eq!(targets.len(), 3, "two refused attempts, then an answer");
    assert_eq!(
        targets[0],
        ProbeTarget::Vm(format!("127.0.0.1:{PORT}").parse().expect("addr"))
    );
    assert!(service.is_prepared());
    assert!(
        fx.state
            .path()
            .join("state")
            .join(PREPARE_END_FILE)
            .exists()
    );
}

#[tokio::test]
async fn prepare_isolated_creates_the_hostnic_network_and_probes_inside_the_container() {
    let fx = Fixture::new();
    let service = fx.service(true, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;

    let calls = fx.runtime.calls();
    assert_eq!(
        calls[1],
        "ensure_hostnic_network database-network docker-hostnic mac=fa:16:3e:12:34:56"
    );
    assert_eq!(
        calls[2],
        format!(
            "create database 10.251.0.1:5000/trove/mysql:8.0.36 {:?}",
            NetworkAttachment::hostnic_for(&tenant_nic())
        )
    );
    assert_eq!(
        fx.probe.targets.lock().expect("lock")[0],
        ProbeTarget::ContainerNamespace {
            netns: PathBuf::from("/var/run/docker/netns/0123456789ab"),
            address: "10.0.0.15:3306".parse().expect("addr"),
        }
    );
    // No notification in the context: nothing to notify_end, as Trove's EndNotification.
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy"]
    );
}

#[tokio::test]
async fn prepare_after_failed_isolation_starts_nothing_and_reports_failed_to_spawn() {
    let fx = Fixture::new();
    let service = fx.service(true, Some("isolation: no network interface has MAC x"));
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;

    assert!(fx.runtime.calls().is_empty(), "no runtime call at all");
    assert_eq!(
        fx.sink.events(),
        vec![
            "heartbeat failed to spawn".to_owned(),
            "notify_exc_info the database is not started on this VM: isolation: no network \
             interface has MAC x"
                .to_owned(),
        ]
    );
    assert!(!service.is_prepared());
    let refused = service.restart().await.expect_err("restart refused");
    assert!(refused.to_string().contains("isolation: no network"));
    let refused = service
        .start_db_with_conf_changes(None, None)
        .await
        .expect_err("start refused");
    assert!(refused.to_string().contains("not started on this VM"));
    // Stopping stays possible.
    service.stop_db().await.expect("stop_db");
}

#[tokio::test]
async fn mysql_prepare_refuses_bad_users_and_databases_before_touching_anything() {
    let fx = Fixture::new();
    let mut settings = fx.settings(false);
    settings.mysql = Some(MysqlSettings {
        manager: "mysql".into(),
        layout: Layout {
            config_dir: fx.state.path().join("etc-mysql"),
            socket_dir: fx.state.path().join("mysqld"),
            mount_point: fx.state.path().join("volume"),
            uid: 1001,
            gid: 1001,
        },
    });
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    let cases = [
        (
            json!({"users": [{"_name": "nopass", "_host": "%"}]}),
            "Cannot create user 'nopass': the user has no password",
        ),
        (
            json!({"databases": [{"_name": "a;b"}]}),
            "Cannot create database: 'a;b' is not a valid schema name",
        ),
        (
            json!({"users": [{"_name": "u", "_password": "pw", "_host": "db.example"}]}),
            "'db.example' is not a valid hostname",
        ),
        (
            json!({"overrides": {"a\n[client]": 1}}),
            "cannot be written to my.cnf",
        ),
    ];
    for (args, expected) in cases {
        let request = PrepareRequest {
            databases: args.get("databases").cloned(),
            users: args.get("users").cloned(),
            overrides: args.get("overrides").cloned(),
            device_path: Some(PathBuf::from("/dev/never-touched")),
            ..PrepareRequest::default()
        };
        service.prepare(&context_with_notification(), request).await;
        let events = fx.sink.events();
        let last = events.last().expect("an event");
        assert!(
            last.starts_with("notify_exc_info invalid request: ") && last.contains(expected),
            "{args}: {events:?}"
        );
        assert_eq!(
            events[events.len() - 2],
            "heartbeat failed to spawn",
            "{events:?}"
        );
    }
    assert!(fx.runtime.calls().is_empty(), "{:?}", fx.runtime.calls());
    assert!(
        !fx.state.path().join("etc-mysql").exists(),
        "no file written"
    );
    assert!(!service.is_prepared());
}

#[tokio::test]
async fn prepare_with_a_failing_pull_reports_failed_to_spawn_with_the_registry() {
    let fx = Fixture::new();
    *fx.runtime.pull_error.lock().expect("lock") = Some("connection refused".into());
    let service = fx.service(false, None);
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;

    let events = fx.sink.events();
    assert_eq!(
        events[..2],
        ["heartbeat building", "heartbeat failed to spawn"]
    );
    assert!(
        events[2].starts_with("notify_exc_info pulling image `10.251.0.1:5000/trove/mysql:8.0.36` from registry 10.251.0.1:5000 failed"),
        "{events:?}"
    );
    assert!(fx.runtime.containers.lock().expect("lock").is_empty());
    assert!(!service.is_prepared());
}

#[tokio::test]
async fn prepare_fails_early_when_the_container_exits() {
    let fx = Fixture::new();
    *fx.runtime.start_as.lock().expect("lock") = Some(ContainerStatus::Exited);
    let service = fx.service(false, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;
    let events = fx.sink.events();
    assert_eq!(
        events,
        vec!["heartbeat building", "heartbeat failed to spawn"]
    );
    assert!(fx.probe.targets.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn prepare_times_out_when_the_port_never_answers() {
    let fx = Fixture::new();
    *fx.probe.failures.lock().expect("lock") = u32::MAX;
    let mut settings = fx.settings(false);
    settings.state_change_wait_time = Duration::from_millis(600);
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    service
        .prepare(&context_with_notification(), PrepareRequest::default())
        .await;
    let events = fx.sink.events();
    assert_eq!(events[1], "heartbeat failed to spawn");
    assert!(
        events[2].contains("127.0.0.1:3306 (bridged, from the VM) did not answer")
            && events[2].contains("connection refused"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_existing_container_is_just_started() {
    let fx = Fixture::new();
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    fx.runtime
        .containers
        .lock()
        .expect("lock")
        .get_mut(NAME)
        .expect("container")
        .status = ContainerStatus::Exited;
    let service = fx.service(false, None);
    service
        .prepare(&Context::fresh(), PrepareRequest::default())
        .await;
    assert_eq!(fx.runtime.calls(), vec!["start database"]);
    assert_eq!(
        fx.sink.events(),
        vec!["heartbeat building", "heartbeat healthy"]
    );
}

#[tokio::test]
async fn stop_restart_and_start_with_conf_changes() {
    let fx = Fixture::new();
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    let service = fx.service(false, None);

    service.stop_db().await.expect("stop_db");
    assert_eq!(service.current_status().await, ServiceStatus::Shutdown);
    service.restart().await.expect("restart");
    assert_eq!(service.current_status().await, ServiceStatus::Healthy);

    service
        .start_db_with_conf_changes(
            Some("[mysqld]\nmax_connections = 10\n".into()),
            Some("8.4".into()),
        )
        .await
        .expect("start with a new version");
    assert_eq!(
        fx.runtime.calls(),
        vec![
            "stop database 3s",
            "restart database 3s",
            "stop database 3s",
            "remove database force=true",
            "ensure_image 10.251.0.1:5000/trove/mysql:8.4 Always credentials=false",
            &format!(
                "create database 10.251.0.1:5000/trove/mysql:8.4 {:?}",
                NetworkAttachment::Bridged {
                    published_tcp_ports: vec![PORT]
                }
            ),
            "start database",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(fx.state.path().join("state").join(CONFIG_CONTENTS_FILE))
            .expect("saved configuration"),
        "[mysqld]\nmax_connections = 10\n"
    );
    assert_eq!(
        fx.sink.events(),
        vec![
            "heartbeat shutdown",
            "heartbeat healthy",
            "heartbeat healthy"
        ]
    );
}

/// A container left exited after prepare (a crash, dockerd killed) with the status it has.
fn exited_after_prepare(fx: &Fixture) -> GuestService {
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    let service = fx.service(false, None);
    std::fs::create_dir_all(fx.state.path().join("state")).expect("state dir");
    std::fs::write(fx.state.path().join("state").join(PREPARE_END_FILE), b"").expect("prepared");
    service
}

/// The container exited with `exit_code` (137: killed; 0: stopped cleanly).
fn set_exited_with(fx: &Fixture, exit_code: i64) {
    let mut containers = fx.runtime.containers.lock().expect("lock");
    let container = containers.get_mut(NAME).expect("container");
    container.status = ContainerStatus::Exited;
    container.exit_code = Some(exit_code);
}

fn set_exited(fx: &Fixture) {
    set_exited_with(fx, 137);
}

#[tokio::test]
async fn a_database_that_stopped_by_itself_is_started_again() {
    let fx = Fixture::new();
    let _service = exited_after_prepare(&fx);
    // The prepared marker is read when the service is made, as at an agent start.
    let service = fx.service(false, None);
    set_exited(&fx);
    assert!(
        service.revive_database().await,
        "an exited, prepared database is revived"
    );
    assert_eq!(fx.runtime.calls(), vec!["start database"]);
    assert_eq!(service.current_status().await, ServiceStatus::Healthy);
    assert!(
        !service.revive_database().await,
        "a running database is left alone"
    );
    assert_eq!(fx.runtime.calls(), vec!["start database"]);
}

#[tokio::test]
async fn a_database_stopped_on_request_stays_down_also_after_an_agent_restart() {
    let fx = Fixture::new();
    let _service = exited_after_prepare(&fx);
    let service = fx.service(false, None);
    service.stop_db().await.expect("stop_db");
    assert!(!service.revive_database().await);
    assert!(
        fx.state
            .path()
            .join("state")
            .join(STOPPED_ON_REQUEST_FILE)
            .exists(),
        "the request is remembered on disk"
    );
    let restarted_agent = fx.service(false, None);
    assert!(!restarted_agent.revive_database().await);
    assert_eq!(fx.runtime.calls(), vec!["stop database 3s"]);

    restarted_agent.restart().await.expect("restart");
    assert!(
        !fx.state
            .path()
            .join("state")
            .join(STOPPED_ON_REQUEST_FILE)
            .exists(),
        "a restart ends the stop"
    );
    set_exited(&fx);
    assert!(restarted_agent.revive_database().await);
}

#[tokio::test]
async fn a_database_stopped_cleanly_by_anyone_stays_down() {
    let fx = Fixture::new();
    let _ = exited_after_prepare(&fx);
    let service = fx.service(false, None);
    for clean in [0, 143] {
        set_exited_with(&fx, clean);
        assert!(!service.revive_database().await, "exit {clean}");
    }
    assert!(fx.runtime.calls().is_empty(), "{:?}", fx.runtime.calls());
    set_exited_with(&fx, 1);
    assert!(
        service.revive_database().await,
        "a failed server is a crash"
    );
}

#[tokio::test]
async fn a_restart_that_lost_its_runtime_midway_is_finished_by_a_later_agent() {
    let fx = Fixture::new();
    let _ = exited_after_prepare(&fx);
    let service = fx.service(false, None);
    *fx.runtime.lost_during_restart.lock().expect("lock") = true;
    service
        .restart()
        .await
        .expect_err("the runtime went away during the restart");
    let marker = fx.state.path().join("state").join(UNFINISHED_START_FILE);
    assert!(
        marker.exists(),
        "the unfinished start is remembered on disk"
    );
    *fx.runtime.lost_during_restart.lock().expect("lock") = false;

    // The agent itself restarts too: the marker, not memory, says the database is wanted.
    let restarted_agent = fx.service(false, None);
    assert!(
        restarted_agent.revive_database().await,
        "a clean stop that was ours, half of a restart, is started again"
    );
    assert_eq!(
        fx.runtime.calls(),
        vec!["restart database 3s", "start database"]
    );
    assert!(!marker.exists(), "the start is done");
    set_exited_with(&fx, 0);
    assert!(
        !restarted_agent.revive_database().await,
        "a later clean stop by someone else is left alone"
    );
}

#[tokio::test]
async fn stop_db_supersedes_an_unfinished_restart() {
    let fx = Fixture::new();
    let _ = exited_after_prepare(&fx);
    let service = fx.service(false, None);
    *fx.runtime.lost_during_restart.lock().expect("lock") = true;
    service.restart().await.expect_err("runtime lost");
    *fx.runtime.lost_during_restart.lock().expect("lock") = false;
    service.stop_db().await.expect("stop_db");
    assert!(!service.revive_database().await);
    assert!(
        !fx.state
            .path()
            .join("state")
            .join(UNFINISHED_START_FILE)
            .exists()
    );
}

#[tokio::test]
async fn an_unprepared_or_refused_guest_revives_nothing() {
    let fx = Fixture::new();
    fx.runtime
        .set_running(NAME, "10.251.0.1:5000/trove/mysql:8.0.36");
    set_exited(&fx);
    let unprepared = fx.service(false, None);
    assert!(!unprepared.revive_database().await);
    let _ = exited_after_prepare(&fx);
    set_exited(&fx);
    let refused = fx.service(false, Some("isolation failed"));
    assert!(!refused.revive_database().await);
    assert!(
        fx.runtime.calls().iter().all(|c| !c.starts_with("start")),
        "{:?}",
        fx.runtime.calls()
    );
}

#[tokio::test]
async fn filesystem_stats_report_the_mount_point() {
    let fx = Fixture::new();
    let service = fx.service(false, None);
    let stats = service
        .filesystem_stats(Some("/ignored/like/trove".into()))
        .await
        .expect("stats");
    for key in [
        "block_size",
        "total_blocks",
        "free_blocks",
        "total",
        "free",
        "used",
    ] {
        assert!(stats.get(key).is_some(), "{key} in {stats}");
    }
    let mut settings = fx.settings(false);
    settings.mount_point = Some(fx.state.path().join("absent"));
    let service = GuestService::new(
        settings,
        fx.runtime.clone(),
        fx.sink.clone(),
        fx.probe.clone(),
        None,
    );
    let error = service.filesystem_stats(None).await.expect_err("missing");
    assert!(
        matches!(error, netiso_guest::rpc::FilesystemError::NotFound { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("Filesystem not found ("),
        "{error}"
    );
}

#[test]
fn statuses_follow_trove() {
    let mut container = info(NAME, "img", ContainerStatus::Running);
    assert_eq!(status_of(None), ServiceStatus::Shutdown);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Healthy);
    container.health = Some(HealthStatus::Starting);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Running);
    container.health = Some(HealthStatus::Unhealthy);
    assert_eq!(status_of(Some(&container)), ServiceStatus::Crashed);
    container.status = ContainerStatus::Exited;
    assert_eq!(status_of(Some(&container)), ServiceStatus::Shutdown);
    container.status = ContainerStatus::Restarting;
    assert_eq!(status_of(Some(&container)), ServiceStatus::Restarting);
}
