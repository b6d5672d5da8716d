//! Every `ContainerRuntime` method of the Docker adapter against the real dockerd of the
//! simulated guest (Debian docker.io 20.10, API 1.41). Needs root and `cargo xtask provision`.

use std::time::{Duration, Instant};

use netiso_config::secret::Secret;
use netiso_netlink::Namespace;
use netiso_runtime::test_support::image::{PublishedImage, echo_health_check};
use netiso_runtime::test_support::{
    ContainerGuard, NetworkGuard, connect_docker, guest_registry, require_root, unique_name,
};
use netiso_runtime::{
    Bind, ContainerRuntime, ContainerSpec, ContainerStatus, DockerRuntime, HealthStatus,
    HostnicNetworkSpec, ImageReference, ImageStatus, IpamPool, NetworkAttachment, NetworkNamespace,
    NetworkStatus, PullPolicy, PullProgress, RegistryCredentials, RestartPolicy, RuntimeError,
};

/// A host directory for a bind mount, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(owner: &ContainerGuard) -> Self {
        let path = std::env::temp_dir().join(owner.name());
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: {}: {e}", self.0.display());
        }
    }
}

/// The echo server's port inside test containers (nothing is published here).
const DB_PORT: u16 = 3306;

async fn setup() -> DockerRuntime {
    require_root();
    connect_docker().await
}

/// Pulls `image`, failing the test with the runtime's message.
async fn pull(docker: &DockerRuntime, image: &ImageReference) -> Vec<PullProgress> {
    let mut events = Vec::new();
    docker
        .ensure_image(image, PullPolicy::Always, None, &mut |e| events.push(e))
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}"));
    events
}

fn bridged_spec(name: &str, image: &PublishedImage) -> ContainerSpec {
    let mut spec = ContainerSpec::new(
        name,
        image.reference().clone(),
        NetworkAttachment::Bridged {
            published_tcp_ports: vec![],
        },
    );
    spec.user = Some("1001:1001".into());
    spec.restart_policy = RestartPolicy::No;
    spec.healthcheck = Some(echo_health_check(image.port()));
    spec.labels.insert("netiso.test".into(), name.into());
    spec
}

/// A pulled image and a running, healthy container from it.
async fn running_container(
    docker: &DockerRuntime,
    prefix: &str,
) -> (PublishedImage, ContainerGuard) {
    let image = PublishedImage::publish(DB_PORT).await;
    pull(docker, image.reference()).await;
    let guard = ContainerGuard::new(unique_name(prefix));
    docker
        .run(&bridged_spec(guard.name(), &image))
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", guard.name()));
    docker
        .wait_healthy(guard.name(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (image, guard)
}

#[tokio::test]
async fn ensure_image_pulls_from_the_registry_with_progress_events() {
    let docker = setup().await;
    let image = PublishedImage::publish(DB_PORT).await;
    let reference = image.reference().to_string();
    assert_eq!(
        docker.local_image_id(&reference).await.expect("inspect"),
        None,
        "the published image must not be local before the pull"
    );

    let started = Instant::now();
    let mut events = Vec::new();
    let status = docker
        .ensure_image(image.reference(), PullPolicy::IfMissing, None, &mut |e| {
            events.push(e)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "pull of {reference}: {:?}, {} events",
        started.elapsed(),
        events.len()
    );
    let ImageStatus::Pulled { id } = status else {
        panic!("expected a pull, got {status:?}");
    };
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(
        events.iter().any(|e| e.status.starts_with("Status:")),
        "no final status event in {events:?}"
    );
    assert!(
        events.iter().any(|e| e.status.starts_with("Digest:")),
        "no digest event in {events:?}"
    );

    let mut again = Vec::new();
    let status = docker
        .ensure_image(image.reference(), PullPolicy::IfMissing, None, &mut |e| {
            again.push(e)
        })
        .await
        .expect("present");
    assert_eq!(status, ImageStatus::Present { id: id.clone() });
    assert!(again.is_empty(), "no pull expected: {again:?}");

    // Credentials for the image's registry travel in X-Registry-Auth (this registry has no
    // auth and ignores them; the daemon must accept the header).
    let credentials = RegistryCredentials {
        server: guest_registry(),
        username: "trove".into(),
        password: Secret::new("unused-by-an-open-registry"),
    };
    let status = docker
        .ensure_image(
            image.reference(),
            PullPolicy::Always,
            Some(&credentials),
            &mut |e| again.push(e),
        )
        .await
        .expect("re-pull");
    assert_eq!(status, ImageStatus::Pulled { id });
    assert!(
        again
            .iter()
            .any(|e| e.status.contains("Image is up to date")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_missing_image_names_image_and_registry() {
    let docker = setup().await;
    let registry = guest_registry();
    let reference: ImageReference = format!("{registry}/netiso/testdb:{}", unique_name("absent"))
        .parse()
        .expect("valid reference");
    let err = docker
        .ensure_image(&reference, PullPolicy::IfMissing, None, &mut |_| {})
        .await
        .expect_err("the tag was never pushed");
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&reference.to_string()) && text.contains(&format!("registry {registry}")),
        "{text}"
    );
}

#[tokio::test]
async fn create_and_run_apply_the_spec_and_report_pid_sandbox_health() {
    let docker = setup().await;
    let image = PublishedImage::publish(DB_PORT).await;
    pull(&docker, image.reference()).await;
    let guard = ContainerGuard::new(unique_name("nti-run"));
    let host_dir = TempDir::new(&guard);
    std::fs::write(host_dir.0.join("marker"), "from the VM").expect("marker");
    let mut spec = bridged_spec(guard.name(), &image);
    spec.env
        .insert("NETISO_TEST_SECRET".into(), Secret::new("s3cret value"));
    spec.binds.push(Bind {
        host_path: host_dir.0.display().to_string(),
        container_path: "/data".into(),
        read_only: true,
    });

    let created = Instant::now();
    let id = docker
        .create_container(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info = docker
        .inspect(guard.name())
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(
        (info.id.as_str(), info.status),
        (id.as_str(), ContainerStatus::Created)
    );
    assert_eq!((info.pid, info.sandbox_key.as_deref()), (None, None));

    let started = Instant::now();
    docker
        .start(guard.name())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start_time = started.elapsed();
    let info = docker
        .wait_healthy(guard.name(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "create+start {:?} (start call {start_time:?}), healthy after {:?}",
        created.elapsed() - started.elapsed() + start_time,
        started.elapsed()
    );
    assert_eq!(info.name, guard.name());
    assert_eq!(info.image, image.reference().to_string());
    assert_eq!(info.health, Some(HealthStatus::Healthy));
    let pid = info.pid.expect("a running container has a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid_line.split_whitespace().nth(1) == Some("1001"),
        "runs as 1001: {uid_line}"
    );
    let sandbox = info.sandbox_key.expect("a running container has a sandbox");
    assert!(
        sandbox.exists(),
        "sandbox key {} must exist",
        sandbox.display()
    );
    let container_netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
    eprintln!(
        "sandbox {} for netns {}",
        sandbox.display(),
        container_netns.display()
    );
    let bridge = info.networks.get("bridge").expect("on the default bridge");
    assert!(bridge.ipv4.is_some(), "{bridge:?}");

    // Environment and binds reach the container's process.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|var| var == b"NETISO_TEST_SECRET=s3cret value"),
        "environment not applied"
    );
    let marker = std::fs::read_to_string(format!("/proc/{pid}/root/data/marker"))
        .expect("the bind is visible in the container");
    assert_eq!(marker, "from the VM");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("mounts");
    let data_mount = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/data"))
        .unwrap_or_else(|| panic!("no /data mount in\n{mounts}"));
    let options = data_mount.split_whitespace().nth(3).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "read-only bind: {data_mount}"
    );

    // Starting a running container is not an error.
    docker.start(guard.name()).await.expect("idempotent start");
}

#[tokio::test]
async fn stop_kills_after_the_timeout_and_is_idempotent() {
    let docker = setup().await;
    let (_image, guard) = running_container(&docker, "nti-stop").await;
    // busybox nc as PID 1 ignores SIGTERM: only the kill after the timeout stops it.
    let started = Instant::now();
    docker
        .stop(guard.name(), Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    eprintln!("stop with a 1 s timeout took {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "stop returned before its timeout: {took:?}"
    );
    let info = docker
        .inspect(guard.name())
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.status, ContainerStatus::Exited);
    assert_eq!(
        info.exit_code,
        Some(137),
        "killed: {}",
        info.describe_state()
    );
    assert_eq!((info.pid, info.sandbox_key.as_deref()), (None, None));
    docker
        .stop(guard.name(), Duration::from_secs(1))
        .await
        .expect("stopping a stopped container is not an error");
}

#[tokio::test]
async fn network_namespace_and_interfaces_are_the_sandbox_while_the_container_runs() {
    let docker = setup().await;
    let (_image, guard) = running_container(&docker, "nti-netns").await;
    let info = docker
        .inspect(guard.name())
        .await
        .expect("inspect")
        .expect("exists");
    let namespace = docker
        .network_namespace(guard.name())
        .await
        .expect("ask")
        .expect("a running container has a namespace");
    let sandbox = info.sandbox_key.expect("a running container has a sandbox");
    assert_eq!(namespace, NetworkNamespace::Mounted(sandbox));
    let pid = info.pid.expect("a running container has a pid");
    assert_eq!(
        Namespace::open_path(namespace.path())
            .and_then(|ns| ns.id())
            .expect("sandbox namespace"),
        Namespace::open_path(format!("/proc/{pid}/ns/net"))
            .and_then(|ns| ns.id())
            .expect("process namespace"),
        "the sandbox is the process's namespace"
    );
    let links = docker
        .network_interfaces(guard.name())
        .await
        .expect("read the container's interfaces")
        .expect("a running container has interfaces");
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert!(
        names.contains(&"lo") && names.contains(&"eth0"),
        "bridged: lo and eth0, got {names:?}"
    );

    docker
        .stop(guard.name(), Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        docker.network_namespace(guard.name()).await.expect("ask"),
        None,
        "dockerd tears the sandbox down with the process"
    );
    assert_eq!(
        docker.network_interfaces(guard.name()).await.expect("ask"),
        None
    );
    assert_eq!(
        docker
            .network_namespace(&unique_name("nti-absent"))
            .await
            .expect("ask"),
        None
    );
}

#[tokio::test]
async fn restart_runs_a_new_process() {
    let docker = setup().await;
    let (_image, guard) = running_container(&docker, "nti-restart").await;
    let before = docker
        .inspect(guard.name())
        .await
        .expect("inspect")
        .expect("exists");
    docker
        .restart(guard.name(), Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = docker
        .wait_healthy(guard.name(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.status, ContainerStatus::Running);
    assert_ne!(after.pid, before.pid, "restart must start a new process");
    assert_eq!(after.id, before.id);
}

#[tokio::test]
async fn list_shows_our_container_and_remove_is_idempotent() {
    let docker = setup().await;
    let (_image, guard) = running_container(&docker, "nti-list").await;
    let listed = docker.list().await.unwrap_or_else(|e| panic!("{e}"));
    let ours = listed
        .iter()
        .find(|c| c.names.iter().any(|n| n == guard.name()))
        .unwrap_or_else(|| panic!("{} not in {listed:?}", guard.name()));
    assert_eq!(ours.status, ContainerStatus::Running);
    assert_eq!(
        ours.labels.get("netiso.test").map(String::as_str),
        Some(guard.name())
    );

    let err = docker
        .remove(guard.name(), false)
        .await
        .expect_err("a running container is not removed without force");
    assert!(err.to_string().contains(guard.name()), "{err}");
    assert!(docker.remove(guard.name(), true).await.expect("remove"));
    assert_eq!(docker.inspect(guard.name()).await.expect("inspect"), None);
    assert!(
        !docker
            .remove(guard.name(), true)
            .await
            .expect("second remove")
    );
    assert!(
        !docker
            .list()
            .await
            .expect("list")
            .iter()
            .any(|c| c.id == ours.id),
        "removed container still listed"
    );
    let err = docker.start(guard.name()).await.expect_err("gone");
    assert!(
        matches!(err, RuntimeError::ContainerNotFound(ref n) if n == guard.name()),
        "{err:?}"
    );
}

#[tokio::test]
async fn creating_a_taken_name_is_a_clear_conflict() {
    let docker = setup().await;
    let image = PublishedImage::publish(DB_PORT).await;
    pull(&docker, image.reference()).await;
    let guard = ContainerGuard::new(unique_name("nti-dup"));
    let spec = bridged_spec(guard.name(), &image);
    docker
        .create_container(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = docker
        .create_container(&spec)
        .await
        .expect_err("name taken");
    assert!(
        matches!(err, RuntimeError::ContainerExists(ref n) if n == guard.name()),
        "{err:?}"
    );
}

/// A bridge-driver stand-in for the hostnic network (the plugin is another crate's), on a
/// subnet unique to this test: the create/compare/recreate logic is driver-independent.
fn stand_in_network(name: &str, mac: &str, third_octet: u8) -> HostnicNetworkSpec {
    HostnicNetworkSpec {
        name: name.to_owned(),
        driver: "bridge".to_owned(),
        mac_address: mac.parse().expect("mac"),
        ipv4: Some(IpamPool {
            subnet: format!("10.253.{third_octet}.0/24")
                .parse()
                .expect("subnet"),
            gateway: Some(format!("10.253.{third_octet}.1").parse().expect("gateway")),
        }),
        ipv6: None,
    }
}

fn unique_octet(slot: u32) -> u8 {
    u8::try_from((std::process::id() * 4 + slot) % 250 + 1).unwrap_or(1)
}

#[tokio::test]
async fn a_missing_network_driver_is_a_clear_error() {
    let docker = setup().await;
    // A driver name no plugin can have, so a docker-hostnic plugin being tested by someone
    // else on this daemon cannot change the outcome; the code path is the same.
    let driver = unique_name("netiso-absent-driver");
    let name = unique_name("nti-nodrv");
    let _guard = NetworkGuard::new(name.clone());
    let mut spec = stand_in_network(&name, "02:00:00:00:00:01", unique_octet(0));
    spec.driver = driver.clone();
    let err = docker
        .ensure_hostnic_network(&spec)
        .await
        .expect_err("no such driver");
    assert!(
        matches!(err, RuntimeError::NetworkDriverUnavailable { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&driver) && text.contains(&spec.name) && text.contains("plugin"),
        "{text}"
    );
}

#[tokio::test]
async fn an_existing_network_is_reused_when_it_matches_and_recreated_when_stale() {
    let docker = setup().await;
    let name = unique_name("nti-net");
    let _guard = NetworkGuard::new(name.clone());
    let mut spec = stand_in_network(&name, "02:00:00:00:00:02", unique_octet(1));
    spec.ipv6 = Some(IpamPool {
        subnet: format!("fd00:253:{}::/64", unique_octet(1))
            .parse()
            .expect("subnet"),
        gateway: None,
    });

    let created = docker
        .ensure_hostnic_network(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(created, NetworkStatus::Created { .. }),
        "{created:?}"
    );
    let reused = docker
        .ensure_hostnic_network(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        reused,
        NetworkStatus::Reused {
            id: created.id().to_owned()
        }
    );

    let mut moved = spec.clone();
    moved.mac_address = "02:00:00:00:00:03".parse().expect("mac");
    let recreated = docker
        .ensure_hostnic_network(&moved)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let NetworkStatus::Recreated { id, differences } = &recreated else {
        panic!("expected a recreation, got {recreated:?}");
    };
    assert_ne!(id, created.id());
    assert_eq!(
        differences,
        &vec!["hostnic_mac: existing `02:00:00:00:00:02`, wanted `02:00:00:00:00:03`".to_owned()]
    );
    assert!(docker.remove_network(&name).await.expect("remove"));
    assert!(!docker.remove_network(&name).await.expect("second remove"));
}

#[tokio::test]
async fn a_stale_network_in_use_is_refused_and_static_endpoint_addresses_apply() {
    let docker = setup().await;
    let image = PublishedImage::publish(DB_PORT).await;
    pull(&docker, image.reference()).await;
    let name = unique_name("nti-inuse");
    let _network_guard = NetworkGuard::new(name.clone());
    let octet = unique_octet(2);
    let spec = stand_in_network(&name, "02:00:00:00:00:04", octet);
    docker
        .ensure_hostnic_network(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut moved = spec.clone();
    moved.ipv4 = Some(IpamPool {
        subnet: format!("10.253.{}.0/24", unique_octet(3))
            .parse()
            .expect("subnet"),
        gateway: None,
    });

    // The isolated-mode container: static endpoint address, nothing published.
    let container = ContainerGuard::new(unique_name("nti-inuse"));
    let address = format!("10.253.{octet}.77").parse().expect("ip");
    let mut db = bridged_spec(container.name(), &image);
    db.network = NetworkAttachment::Hostnic {
        network: name.clone(),
        ipv4: Some(address),
        ipv6: None,
    };
    docker
        .create_container(&db)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Created but never started: the network's inspect lists no endpoint, yet removing the
    // network would strand the container. Refused, running or not.
    for phase in ["created", "running"] {
        if phase == "running" {
            docker
                .start(container.name())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let err = docker
            .ensure_hostnic_network(&moved)
            .await
            .expect_err(phase);
        let RuntimeError::NetworkMismatchInUse { containers, .. } = &err else {
            panic!("{phase}: expected NetworkMismatchInUse, got {err:?}");
        };
        assert_eq!(containers, &vec![container.name().to_owned()], "{phase}");
        let text = err.to_string();
        assert!(
            text.contains("IPAM pools") && text.contains(&name),
            "{phase}: {text}"
        );
    }

    let info = docker
        .inspect(container.name())
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.networks.len(), 1, "{:?}", info.networks);
    assert_eq!(info.networks[&name].ipv4, Some(address));
}

#[tokio::test]
async fn duplicate_networks_of_one_name_are_replaced_by_one() {
    let docker = setup().await;
    let name = unique_name("nti-twins");
    let _guard = NetworkGuard::new(name.clone());
    // API 1.41 lets two networks share a name (no CheckDuplicate): make two directly.
    let client = bollard::Docker::connect_with_host(docker.endpoint()).expect("client");
    for slot in [4, 5] {
        let twin = stand_in_network(&name, "02:00:00:00:00:05", unique_octet(slot));
        client
            .create_network(netiso_runtime::docker::mapping::network_create_request(
                &twin,
            ))
            .await
            .unwrap_or_else(|e| panic!("creating twin {name}: {e}"));
    }
    let spec = stand_in_network(&name, "02:00:00:00:00:05", unique_octet(4));
    let status = docker
        .ensure_hostnic_network(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let NetworkStatus::Recreated { differences, .. } = &status else {
        panic!("expected a recreation, got {status:?}");
    };
    assert_eq!(differences, &vec!["2 networks share the name".to_owned()]);
    let again = docker
        .ensure_hostnic_network(&spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again,
        NetworkStatus::Reused {
            id: status.id().to_owned()
        }
    );
    assert!(docker.remove_network(&name).await.expect("remove"));
    assert!(
        !docker
            .remove_network(&name)
            .await
            .expect("only one was left")
    );
}

#[tokio::test]
async fn wait_healthy_fails_early_when_the_container_exits() {
    let docker = setup().await;
    let image = PublishedImage::publish(DB_PORT).await;
    pull(&docker, image.reference()).await;
    let guard = ContainerGuard::new(unique_name("nti-exit"));
    let mut spec = bridged_spec(guard.name(), &image);
    // With a health check, "running" alone is not ready, so the exit is always seen.
    spec.command = Some(vec!["/bin/busybox".into(), "false".into()]);
    docker.run(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    let timeout = Duration::from_secs(120);
    let err = docker
        .wait_healthy(guard.name(), timeout)
        .await
        .expect_err("the container exits at once");
    let RuntimeError::HealthTimeout {
        waited, last_state, ..
    } = &err
    else {
        panic!("expected HealthTimeout, got {err:?}");
    };
    assert!(*waited < timeout, "gave up only at the deadline: {err}");
    assert!(
        last_state.starts_with("exited") && last_state.ends_with("(code 1)"),
        "{last_state}"
    );
}
