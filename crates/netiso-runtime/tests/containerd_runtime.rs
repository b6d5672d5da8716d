//! The containerd adapter against the provisioned standalone containerd + runc and the local
//! registry (`cargo xtask provision`): pulls (real registry, a missing image, an unreachable
//! registry, a registry stub serving a corrupted layer), the isolated end-to-end path with a
//! veth standing for the tenant NIC, and an agent crash and restart.
//!
//! Each test uses its own containerd namespace (`netiso-test-<pid>-<n>`), its own "VM" and
//! "client" network namespaces, and removes everything in guards, also when it fails.
//! Needs root; fails (never skips) when something is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteContentRequest, DeleteImageRequest, DeleteNamespaceRequest,
    DeleteRequest, DeleteTaskRequest, GetImageRequest, InfoRequest, KillRequest,
    ListContainersRequest, ListContentRequest, ListImagesRequest, ListRequest, ListTasksRequest,
    containers_client::ContainersClient, content_client::ContentClient,
    images_client::ImagesClient, leases_client::LeasesClient, namespaces_client::NamespacesClient,
    tasks_client::TasksClient,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netiso_config::tenant_nic::{
    HostRoute, Ipv6Gateway, MacAddress, TenantIpv4, TenantIpv6, TenantNic,
};
use netiso_netlink::test_support::TestNamespace;
use netiso_netlink::{Namespace, NetlinkHandle, Rtnetlink};
use netiso_runtime::containerd::pull::sha256_digest;
use netiso_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
use netiso_runtime::test_support::image::{
    PublishedImage, busybox_rootfs_tar, echo_health_check, echo_server_command,
};
use netiso_runtime::test_support::{PROVISION_HINT, block_on_cleanup, next_counter, require_root};
use netiso_runtime::{
    ContainerRuntime, ContainerSpec, ContainerStatus, HealthCheck, HealthStatus,
    HostnicNetworkSpec, ImageReference, ImageStatus, NetworkAttachment, NetworkNamespace,
    PullPolicy, PullProgress, RuntimeError,
};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use tonic::Request;
use tonic::transport::Channel;

const DEFAULT_SOCKET: &str = "/run/trove-netiso/containerd/containerd.sock";
const DEFAULT_REGISTRY: &str = "127.0.0.1:5000";
const DB_PORT: u16 = 3306;
/// Set in the environment of a child process of the crash test: the step it runs.
const CHILD_STEP_ENV: &str = "NETISO_CD_CHILD_STEP";
const CHILD_TEST: &str = "containerd_agent_crash_and_restart";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn socket() -> String {
    env_or("NETISO_CONTAINERD_SOCKET", DEFAULT_SOCKET)
}

fn registry() -> String {
    env_or("NETISO_REGISTRY", DEFAULT_REGISTRY)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn request<T>(namespace: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "containerd-namespace",
        namespace.parse().expect("namespace"),
    );
    request
}

async fn channel() -> Channel {
    let socket = socket();
    containerd_client::connect(&socket)
        .await
        .unwrap_or_else(|e| panic!("containerd at {socket}: {e}: {PROVISION_HINT}"))
}

/// Removes every task, container, image, lease, snapshot and blob of a containerd namespace,
/// the namespace itself and our network namespaces for it, when dropped.
struct ContainerdNamespaceGuard {
    namespace: String,
}

impl ContainerdNamespaceGuard {
    fn new() -> Self {
        Self {
            namespace: format!("netiso-test-{}-{}", std::process::id(), next_counter()),
        }
    }
}

async fn wipe(namespace: &str) -> Result<(), String> {
    let channel = channel().await;
    let mut tasks = TasksClient::new(channel.clone());
    let listed = tasks
        .list(request(namespace, ListTasksRequest::default()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .tasks;
    for task in listed {
        let _ = tasks
            .kill(request(
                namespace,
                KillRequest {
                    container_id: task.id.clone(),
                    exec_id: String::new(),
                    signal: 9,
                    all: true,
                },
            ))
            .await;
        for _ in 0..50 {
            match tasks
                .delete(request(
                    namespace,
                    DeleteTaskRequest {
                        container_id: task.id.clone(),
                    },
                ))
                .await
            {
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break,
            }
        }
    }
    let mut containers = ContainersClient::new(channel.clone());
    for container in containers
        .list(request(namespace, ListContainersRequest::default()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .containers
    {
        let _ = containers
            .delete(request(
                namespace,
                DeleteContainerRequest { id: container.id },
            ))
            .await;
    }
    let mut images = ImagesClient::new(channel.clone());
    for image in images
        .list(request(namespace, ListImagesRequest::default()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .images
    {
        let _ = images
            .delete(request(
                namespace,
                DeleteImageRequest {
                    name: image.name,
                    sync: true,
                    target: None,
                },
            ))
            .await;
    }
    let mut leases = LeasesClient::new(channel.clone());
    for lease in leases
        .list(request(namespace, ListRequest::default()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .leases
    {
        let _ = leases
            .delete(request(
                namespace,
                DeleteRequest {
                    id: lease.id,
                    sync: true,
                },
            ))
            .await;
    }
    let mut snapshots = SnapshotsClient::new(channel.clone());
    for _ in 0..10 {
        let names = snapshot_names(&mut snapshots, namespace).await;
        if names.is_empty() {
            break;
        }
        for key in names {
            let _ = snapshots
                .remove(request(
                    namespace,
                    RemoveSnapshotRequest {
                        snapshotter: "overlayfs".into(),
                        key,
                    },
                ))
                .await;
        }
    }
    let mut content = ContentClient::new(channel.clone());
    let mut blobs = content
        .list(request(namespace, ListContentRequest::default()))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut digests = Vec::new();
    while let Ok(Some(page)) = blobs.message().await {
        digests.extend(page.info.into_iter().map(|i| i.digest));
    }
    for digest in digests {
        let _ = content
            .delete(request(namespace, DeleteContentRequest { digest }))
            .await;
    }
    match NamespacesClient::new(channel)
        .delete(Request::new(DeleteNamespaceRequest {
            name: namespace.to_owned(),
        }))
        .await
    {
        Err(e) if e.code() != tonic::Code::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

async fn snapshot_names(snapshots: &mut SnapshotsClient<Channel>, namespace: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(response) = snapshots
        .list(request(
            namespace,
            ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: Vec::new(),
            },
        ))
        .await
    {
        let mut stream = response.into_inner();
        while let Ok(Some(page)) = stream.message().await {
            names.extend(page.info.into_iter().map(|i| i.name));
        }
    }
    names
}

async fn lease_ids(namespace: &str) -> Vec<String> {
    LeasesClient::new(channel().await)
        .list(request(namespace, ListRequest::default()))
        .await
        .expect("list leases")
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect()
}

impl Drop for ContainerdNamespaceGuard {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        let prefix = format!("netiso-{namespace}-");
        if let Ok(names) = Namespace::list_named() {
            for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
                if let Err(e) = Namespace::delete(&name) {
                    eprintln!("cleanup: network namespace {name}: {e}");
                }
            }
        }
        block_on_cleanup(move || async move {
            if let Err(e) = wipe(&namespace).await {
                eprintln!("cleanup: containerd namespace {namespace}: {e}");
            }
        });
    }
}

/// Pushes a busybox echo-server image (one uncompressed OCI layer) to `registry`.
async fn push_test_image(registry: &str, port: u16) -> ImageReference {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let layer = busybox_rootfs_tar().unwrap_or_else(|e| panic!("{e}"));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": echo_server_command(port), "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&layer)] },
    });
    let reference = format!(
        "{registry}/netiso/cdtest:t{}-{}",
        std::process::id(),
        next_counter()
    );
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    client
        .push(
            &reference.parse().expect("reference"),
            &[ImageLayer::oci_v1(layer, None)],
            Config::oci_v1(serde_json::to_vec(&config).expect("config"), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("pushing {reference} to the registry: {e}: {PROVISION_HINT}"));
    reference.parse().expect("image reference")
}

/// A tenant NIC stand-in: a veth with one end in the "VM" namespace and the peer, carrying
/// the tenant gateway addresses, in a "client" namespace.
struct TenantLink {
    client: TestNamespace,
    vm: TestNamespace,
    vm_if: String,
    nic: TenantNic,
    gateway: Ipv4Addr,
}

impl TenantLink {
    fn new() -> Self {
        let vm = TestNamespace::new();
        let client = TestNamespace::new();
        let (vm_if, client_if) = vm.veth("ntv", Some(&client));
        let mac = vm
            .handle()
            .link_by_name(&vm_if)
            .expect("vm end")
            .mac
            .expect("veth has a MAC");
        let third = u8::try_from(std::process::id() % 200).unwrap_or(0)
            + u8::try_from(next_counter() % 50).unwrap_or(0);
        let gateway = Ipv4Addr::new(10, 77, third, 1);
        let cidr = Ipv4Net::new(Ipv4Addr::new(10, 77, third, 0), 24).expect("cidr");
        let v6_cidr = Ipv6Net::new(
            Ipv6Addr::new(0xfd77, u16::from(third), 0, 0, 0, 0, 0, 0),
            64,
        )
        .expect("v6");
        let v6_gateway = Ipv6Addr::new(0xfd77, u16::from(third), 0, 0, 0, 0, 0, 1);
        let handle = client.handle();
        let peer = handle.link_by_name(&client_if).expect("client end");
        handle
            .add_address(
                peer.index,
                IpNet::V4(Ipv4Net::new(gateway, 24).expect("gw")),
            )
            .expect("client address");
        handle
            .add_address(
                peer.index,
                IpNet::V6(Ipv6Net::new(v6_gateway, 64).expect("gw6")),
            )
            .expect("client v6 address");
        handle.set_link_up(peer.index, true).expect("client end up");
        let nic = TenantNic {
            mac_address: mac,
            ipv4: Some(TenantIpv4 {
                address: Ipv4Addr::new(10, 77, third, 5),
                cidr,
                gateway: Some(gateway),
                host_routes: vec![HostRoute {
                    destination: "192.0.2.0/24".parse().expect("route"),
                    nexthop: Ipv4Addr::new(10, 77, third, 254),
                }],
            }),
            ipv6: Some(TenantIpv6 {
                address: Ipv6Addr::new(0xfd77, u16::from(third), 0, 0, 0, 0, 0, 5),
                cidr: v6_cidr,
                host_routes: vec![],
                gateway: Ipv6Gateway::Dhcpv6Stateful(Some(v6_gateway)),
            }),
        };
        Self {
            client,
            vm,
            vm_if,
            nic,
            gateway,
        }
    }

    fn address(&self) -> Ipv4Addr {
        self.nic.ipv4.as_ref().expect("v4").address
    }

    /// Writes eth1.json for the NIC into a temporary directory.
    fn tenant_file(&self, dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("eth1.json");
        std::fs::write(&path, self.nic.to_json()).expect("write eth1.json");
        path
    }

    /// Connects from the client namespace and expects the echo server's answer.
    fn echo_from_client(&self, deadline: Duration) -> Result<(), String> {
        let target = SocketAddr::new(IpAddr::V4(self.address()), DB_PORT);
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < deadline {
            let attempt = self
                .client
                .namespace()
                .run(move || -> Result<String, String> {
                    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        .map_err(|e| format!("connect {target}: {e}"))?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(3)))
                        .map_err(|e| e.to_string())?;
                    stream.write_all(b"ping\n").map_err(|e| e.to_string())?;
                    let mut line = String::new();
                    BufReader::new(stream)
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    Ok(line)
                })
                .expect("enter the client namespace");
            match attempt {
                Ok(line) if line == "ping\n" => return Ok(()),
                Ok(line) => last = format!("unexpected answer {line:?}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    }

    /// Asserts the NIC is home: in the VM namespace under its name, down, no addresses.
    fn assert_home(&self) {
        let handle = self.vm.handle();
        let link = handle
            .link_by_mac(self.nic.mac_address)
            .expect("the tenant NIC is back in the VM namespace");
        assert_eq!(link.name, self.vm_if, "returned under its original name");
        assert!(!link.up, "returned down");
        assert!(
            handle
                .addresses(Some(link.index))
                .expect("addresses")
                .is_empty(),
            "returned without addresses"
        );
    }
}

/// What an adapter test stands on: a containerd namespace, a tenant link, and a temporary
/// folder holding `eth1.json` and the logs; removed in that order when dropped.
struct TestBed {
    guard: ContainerdNamespaceGuard,
    link: TenantLink,
    dir: tempfile::TempDir,
    tenant_file: PathBuf,
}

impl TestBed {
    fn new() -> Self {
        Self::with_link(TenantLink::new())
    }

    /// A bed whose `eth1.json` describes `link.nic` as the test changed it.
    fn with_link(link: TenantLink) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenant_file = link.tenant_file(&dir);
        Self {
            guard: ContainerdNamespaceGuard::new(),
            link,
            dir,
            tenant_file,
        }
    }

    fn namespace(&self) -> &str {
        &self.guard.namespace
    }

    /// The adapter's configuration: this bed's namespaces and files, the registry trusted.
    fn config(&self) -> ContainerdConfig {
        let mut config = ContainerdConfig::new(socket(), self.guard.namespace.clone());
        config.vm_netns = self.link.vm.namespace().path().to_owned();
        config.tenant_nic_file = Some(self.tenant_file.clone());
        config.log_dir = self.dir.path().to_owned();
        config.insecure_registries = vec![registry()];
        config
    }

    async fn connect(&self) -> ContainerdRuntime {
        connect(self.config()).await
    }

    /// A connected adapter that knows the hostnic network and holds a freshly pushed test
    /// image (an echo server on `DB_PORT`).
    async fn ready(&self) -> (ContainerdRuntime, ImageReference) {
        let image = push_test_image(&registry(), DB_PORT).await;
        let runtime = self.connect().await;
        runtime
            .ensure_hostnic_network(&HostnicNetworkSpec::for_tenant_nic(&self.link.nic))
            .await
            .expect("network");
        runtime
            .ensure_image(&image, PullPolicy::IfMissing, None, &mut |_| {})
            .await
            .expect("pull");
        (runtime, image)
    }
}

async fn connect(config: ContainerdConfig) -> ContainerdRuntime {
    match ContainerdRuntime::connect(config).await {
        Ok(runtime) => runtime,
        Err(e) => panic!("containerd is not reachable ({e}): {PROVISION_HINT}"),
    }
}

fn database_spec(name: &str, image: &ImageReference, nic: &TenantNic) -> ContainerSpec {
    ContainerSpec::new(name, image.clone(), NetworkAttachment::hostnic_for(nic))
}

/// Our containerd adapter's network namespaces for a containerd namespace.
fn adapter_netns(namespace: &str) -> Vec<String> {
    let prefix = format!("netiso-{namespace}-");
    Namespace::list_named()
        .expect("list /run/netns")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Checks eth0 inside the container namespace: MAC, addresses, routes, accept_ra.
fn assert_container_network(netns: &str, link: &TenantLink) {
    let inside = NetlinkHandle::in_named(netns).expect("container namespace");
    let eth0 = inside
        .link_by_name("eth0")
        .expect("eth0 in the container namespace");
    assert_eq!(eth0.mac, Some(link.nic.mac_address));
    assert!(eth0.up, "eth0 up");
    let addresses: Vec<IpAddr> = inside
        .addresses(Some(eth0.index))
        .expect("addresses")
        .into_iter()
        .map(|a| a.address.addr())
        .collect();
    assert!(
        addresses.contains(&IpAddr::V4(link.address())),
        "{addresses:?}"
    );
    let v6 = link.nic.ipv6.as_ref().expect("v6").address;
    assert!(addresses.contains(&IpAddr::V6(v6)), "{addresses:?}");
    let routes = inside.routes().expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.is_default() && r.gateway == Some(IpAddr::V4(link.gateway))),
        "IPv4 default route: {routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.destination.to_string() == "192.0.2.0/24" && r.gateway.is_some()),
        "IPv4 host route: {routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.is_default() && matches!(r.gateway, Some(IpAddr::V6(_)))),
        "IPv6 default route: {routes:?}"
    );
    assert_eq!(
        inside.accept_ra("eth0").expect("accept_ra"),
        Some(0),
        "RAs off with a gateway"
    );
    let lo = inside.link_by_name("lo").expect("lo");
    assert!(lo.up, "lo up");
}

fn assert_not_in_vm(link: &TenantLink) {
    let gone = link.vm.handle().link_by_mac(link.nic.mac_address);
    assert!(
        matches!(&gone, Err(e) if e.is_not_found()),
        "the VM namespace must not have the tenant NIC while the container has it: {gone:?}"
    );
}

async fn assert_nothing_left(namespace: &str, container: &str) {
    assert!(
        adapter_netns(namespace).is_empty(),
        "no network namespace left"
    );
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup hierarchies")
        .flatten()
        .map(|h| h.path().join("trove-netiso").join(namespace))
        .filter(|dir| dir.exists())
        .collect();
    assert!(cgroups.is_empty(), "no cgroup directory left: {cgroups:?}");
    assert!(lease_ids(namespace).await.is_empty(), "no lease left");
    let mut snapshots = SnapshotsClient::new(channel().await);
    let names = snapshot_names(&mut snapshots, namespace).await;
    assert!(
        !names
            .iter()
            .any(|n| n == container || n.starts_with("netiso-extract")),
        "no container or extraction snapshot left: {names:?}"
    );
}

#[test]
fn containerd_pulls_from_the_registry_with_progress_and_verified_digests() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let image = push_test_image(&registry(), DB_PORT).await;
        let runtime = bed.connect().await;

        let mut events: Vec<PullProgress> = Vec::new();
        let started = Instant::now();
        let pulled = runtime
            .ensure_image(&image, PullPolicy::Always, None, &mut |e| events.push(e))
            .await
            .expect("pull");
        eprintln!("containerd pull of {image}: {:?}", started.elapsed());
        let ImageStatus::Pulled { id } = &pulled else {
            panic!("expected a pull, got {pulled:?}");
        };
        assert!(id.starts_with("sha256:"), "{id}");
        let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        for expected in [
            "Pulling fs layer",
            "Downloading",
            "Verifying Checksum",
            "Extracting",
            "Pull complete",
        ] {
            assert!(
                statuses.contains(&expected),
                "{expected} missing from {statuses:?}"
            );
        }
        assert!(
            events
                .iter()
                .any(|e| e.current.is_some() && e.total.is_some())
        );

        let record = ImagesClient::new(channel().await)
            .get(request(
                bed.namespace(),
                GetImageRequest {
                    name: image.to_string(),
                },
            ))
            .await
            .expect("image record")
            .into_inner()
            .image
            .expect("image");
        let target = record.target.expect("target");
        ContentClient::new(channel().await)
            .info(request(
                bed.namespace(),
                InfoRequest {
                    digest: target.digest.clone(),
                },
            ))
            .await
            .expect("manifest in the content store");

        let again = runtime
            .ensure_image(&image, PullPolicy::IfMissing, None, &mut |_| {})
            .await
            .expect("present");
        assert_eq!(again, ImageStatus::Present { id: id.clone() });
        let mut events = Vec::new();
        runtime
            .ensure_image(&image, PullPolicy::Always, None, &mut |e| {
                events.push(e.status)
            })
            .await
            .expect("re-pull");
        assert!(events.iter().any(|s| s == "Already exists"), "{events:?}");
        assert!(
            lease_ids(bed.namespace()).await.is_empty(),
            "pull leases are dropped"
        );

        let missing: ImageReference = format!("{}/netiso/does-not-exist:nope", registry())
            .parse()
            .expect("ref");
        let err = runtime
            .ensure_image(&missing, PullPolicy::Always, None, &mut |_| {})
            .await
            .expect_err("missing image");
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");

        let mut unreachable_config = bed.config();
        unreachable_config
            .insecure_registries
            .push("127.0.0.1:9".into());
        let other = connect(unreachable_config).await;
        let nowhere: ImageReference = "127.0.0.1:9/netiso/cdtest:x".parse().expect("ref");
        let err = other
            .ensure_image(&nowhere, PullPolicy::Always, None, &mut |_| {})
            .await
            .expect_err("unreachable registry");
        match &err {
            RuntimeError::PullFailed {
                registry, message, ..
            } => {
                assert_eq!(registry, "127.0.0.1:9");
                assert!(message.contains("unreachable"), "{message}");
            }
            other => panic!("expected PullFailed, got {other}"),
        }
    });
}

/// A registry stub on 127.0.0.1 that serves a valid manifest and config but a layer whose
/// bytes do not match the digest the manifest names.
fn corrupt_registry_stub() -> (String, std::thread::JoinHandle<()>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let address = listener.local_addr().expect("addr").to_string();
    let layer = busybox_rootfs_tar().unwrap_or_else(|e| panic!("{e}"));
    let layer_digest = sha256_digest(&layer);
    let mut tampered = layer.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/busybox", "true"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .expect("config");
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "size": layer.len(), "digest": layer_digest }],
    }))
    .expect("manifest");
    let manifest_digest = sha256_digest(&manifest);
    let returned_digest = layer_digest.clone();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).expect("blocking");
        // Bounded: manifest, config, layer and a few retries at most.
        for _ in 0..12 {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header == "\r\n" || header.is_empty() {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let (status, content_type, body, digest): (&str, &str, &[u8], Option<&str>) =
                if path == "/v2/" {
                    ("200 OK", "application/json", b"{}", None)
                } else if path.contains("/manifests/") {
                    (
                        "200 OK",
                        "application/vnd.oci.image.manifest.v1+json",
                        &manifest,
                        Some(&manifest_digest),
                    )
                } else if path.ends_with(&config_digest) {
                    (
                        "200 OK",
                        "application/octet-stream",
                        &config,
                        Some(&config_digest),
                    )
                } else if path.ends_with(&layer_digest) {
                    ("200 OK", "application/octet-stream", &tampered, None)
                } else {
                    (
                        "404 Not Found",
                        "application/json",
                        br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#,
                        None,
                    )
                };
            let mut head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(digest) = digest {
                head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = stream.read_to_end(&mut rest);
        }
    });
    (address, handle, returned_digest)
}

#[test]
fn containerd_refuses_a_layer_whose_digest_does_not_match() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let (stub, _server, layer_digest) = corrupt_registry_stub();
        let mut config = bed.config();
        config.insecure_registries.push(stub.clone());
        let runtime = connect(config).await;
        let image: ImageReference = format!("{stub}/netiso/corrupt:t1").parse().expect("ref");
        let err = runtime
            .ensure_image(&image, PullPolicy::Always, None, &mut |_| {})
            .await
            .expect_err("a corrupted layer must be refused");
        eprintln!("refused as expected: {err}");
        match &err {
            RuntimeError::PullFailed { message, .. } => {
                assert!(message.contains("digest"), "{message}");
            }
            other => panic!("expected PullFailed, got {other}"),
        }
        let info = ContentClient::new(channel().await)
            .info(request(
                bed.namespace(),
                InfoRequest {
                    digest: layer_digest.clone(),
                },
            ))
            .await;
        assert!(
            matches!(&info, Err(s) if s.code() == tonic::Code::NotFound),
            "the corrupted layer must not be in the content store: {info:?}"
        );
        let record = ImagesClient::new(channel().await)
            .get(request(
                bed.namespace(),
                GetImageRequest {
                    name: image.to_string(),
                },
            ))
            .await;
        assert!(record.is_err(), "no image record for a failed pull");
        assert!(lease_ids(bed.namespace()).await.is_empty(), "no lease left");
    });
}

#[test]
fn containerd_isolated_end_to_end() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let (runtime, image) = bed.ready().await;
        let link = &bed.link;

        for round in 0..2 {
            let name = format!("db-{}-{round}", next_counter());
            let spec = database_spec(&name, &image, &link.nic);
            let started = Instant::now();
            runtime.run(&spec).await.expect("run");
            eprintln!(
                "containerd create+start (round {round}): {:?}",
                started.elapsed()
            );
            let info = runtime
                .wait_healthy(&name, Duration::from_secs(30))
                .await
                .expect("running");
            assert_eq!(info.status, ContainerStatus::Running);
            assert!(info.pid.is_some());
            let netns = runtime.netns_name(&name);
            assert_eq!(
                info.sandbox_key.as_deref(),
                Some(Path::new(&format!("/run/netns/{netns}")))
            );
            let endpoint = info.networks.get("database-network").expect("endpoint");
            assert_eq!(endpoint.ipv4, Some(link.address()));
            assert_not_in_vm(link);
            assert_container_network(&netns, link);
            link.echo_from_client(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("client cannot reach the database: {e}"));
            assert_eq!(adapter_netns(bed.namespace()), vec![netns.clone()]);

            if round == 0 {
                let err = runtime.run(&spec).await.expect_err("second create");
                assert!(matches!(err, RuntimeError::ContainerExists(_)), "{err}");
                let rival = database_spec(&format!("{name}-rival"), &image, &link.nic);
                let err = runtime.run(&rival).await.expect_err("the NIC is taken");
                assert!(
                    err.to_string().contains("neither in the VM namespace"),
                    "{err}"
                );
                assert_eq!(
                    adapter_netns(bed.namespace()),
                    vec![netns.clone()],
                    "rival namespace removed"
                );
                assert!(
                    runtime
                        .inspect(&rival.name)
                        .await
                        .expect("inspect")
                        .is_none()
                );
                link.echo_from_client(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("the first container lost its NIC: {e}"));
                let stop = Instant::now();
                runtime
                    .stop(&name, Duration::from_secs(1))
                    .await
                    .expect("stop");
                assert!(
                    stop.elapsed() >= Duration::from_secs(1),
                    "SIGTERM is ignored by nc as PID 1, so the kill follows the timeout"
                );
                let stopped = runtime
                    .inspect(&name)
                    .await
                    .expect("inspect")
                    .expect("exists");
                assert_eq!(stopped.status, ContainerStatus::Exited, "{stopped:?}");
                assert_eq!(stopped.exit_code, Some(137));
                runtime
                    .stop(&name, Duration::from_secs(1))
                    .await
                    .expect("stop again");
                runtime.start(&name).await.expect("start again");
                link.echo_from_client(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("after restart: {e}"));
                let listed = runtime.list().await.expect("list");
                assert!(
                    listed
                        .iter()
                        .any(|c| c.id == name && c.status == ContainerStatus::Running)
                );
            }

            assert!(runtime.remove(&name, true).await.expect("remove"));
            assert!(!runtime.remove(&name, true).await.expect("remove again"));
            assert!(runtime.inspect(&name).await.expect("inspect").is_none());
            link.assert_home();
            assert_nothing_left(bed.namespace(), &name).await;
        }
    });
}

/// Whether the runtime finds the tenant NIC among container `name`'s interfaces.
async fn holds_nic(runtime: &ContainerdRuntime, name: &str, nic: &TenantNic) -> bool {
    let mac = nic.mac_address;
    runtime
        .network_interfaces(name)
        .await
        .expect("read the container's interfaces")
        .is_some_and(|links| links.iter().any(|link| link.mac == Some(mac)))
}

#[test]
fn containerd_network_namespace_and_interfaces_follow_the_container_record() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let (runtime, image) = bed.ready().await;
        let name = format!("db-{}-netns", next_counter());
        let prepared = PathBuf::from(format!("/run/netns/{}", runtime.netns_name(&name)));
        assert_eq!(
            runtime.network_namespace(&name).await.expect("ask"),
            None,
            "no container yet"
        );

        runtime
            .create_container(&database_spec(&name, &image, &bed.link.nic))
            .await
            .expect("create");
        let created = runtime
            .network_namespace(&name)
            .await
            .expect("ask")
            .expect("prepared at create");
        assert_eq!(created, NetworkNamespace::Mounted(prepared.clone()));
        assert!(
            holds_nic(&runtime, &name, &bed.link.nic).await,
            "the NIC is in it before start"
        );

        runtime.start(&name).await.expect("start");
        let info = runtime
            .wait_healthy(&name, Duration::from_secs(30))
            .await
            .expect("running");
        let running = runtime
            .network_namespace(&name)
            .await
            .expect("ask")
            .expect("running");
        assert_eq!(running, NetworkNamespace::Mounted(prepared.clone()));
        let pid = info.pid.expect("a running task has a pid");
        assert_eq!(
            Namespace::open_path(running.path())
                .and_then(|ns| ns.id())
                .expect("prepared namespace"),
            Namespace::open_path(format!("/proc/{pid}/ns/net"))
                .and_then(|ns| ns.id())
                .expect("task namespace"),
            "the task runs in the prepared namespace"
        );

        runtime
            .stop(&name, Duration::from_secs(1))
            .await
            .expect("stop");
        let stopped = runtime
            .network_namespace(&name)
            .await
            .expect("ask")
            .expect("kept while the container exists");
        assert_eq!(stopped, NetworkNamespace::Mounted(prepared));
        assert!(
            holds_nic(&runtime, &name, &bed.link.nic).await,
            "a stopped container keeps the NIC"
        );

        assert!(runtime.remove(&name, true).await.expect("remove"));
        assert_eq!(runtime.network_namespace(&name).await.expect("ask"), None);
        assert!(
            !holds_nic(&runtime, &name, &bed.link.nic).await,
            "no container, no NIC"
        );
        bed.link.assert_home();
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_bridged_mode_is_refused() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let runtime = bed.connect().await;
        let image: ImageReference = format!("{}/netiso/cdtest:none", registry())
            .parse()
            .expect("ref");
        let spec = ContainerSpec::new(
            "bridged",
            image,
            NetworkAttachment::Bridged {
                published_tcp_ports: vec![DB_PORT],
            },
        );
        let err = runtime.create_container(&spec).await.expect_err("bridged");
        assert!(
            err.to_string().contains("unsupported with containerd"),
            "{err}"
        );
        assert!(adapter_netns(bed.namespace()).is_empty());
    });
}

/// What a child process of the crash test does, from its environment.
struct ChildPlan {
    step: String,
    namespace: String,
    vm_netns: PathBuf,
    tenant_file: PathBuf,
    log_dir: PathBuf,
    image: String,
    container: String,
    ready_file: PathBuf,
}

impl ChildPlan {
    fn from_env() -> Option<Self> {
        let get = |key: &str| std::env::var(format!("NETISO_CD_CHILD_{key}")).ok();
        Some(Self {
            step: std::env::var(CHILD_STEP_ENV).ok()?,
            namespace: get("NAMESPACE")?,
            vm_netns: get("VM_NETNS")?.into(),
            tenant_file: get("TENANT_FILE")?.into(),
            log_dir: get("LOG_DIR")?.into(),
            image: get("IMAGE")?,
            container: get("CONTAINER")?,
            ready_file: get("READY")?.into(),
        })
    }

    fn spawn(&self) -> std::process::Child {
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_STEP_ENV, &self.step)
            .env("NETISO_CD_CHILD_NAMESPACE", &self.namespace)
            .env("NETISO_CD_CHILD_VM_NETNS", &self.vm_netns)
            .env("NETISO_CD_CHILD_TENANT_FILE", &self.tenant_file)
            .env("NETISO_CD_CHILD_LOG_DIR", &self.log_dir)
            .env("NETISO_CD_CHILD_IMAGE", &self.image)
            .env("NETISO_CD_CHILD_CONTAINER", &self.container)
            .env("NETISO_CD_CHILD_READY", &self.ready_file)
            .spawn()
            .expect("spawn the child agent")
    }

    /// Runs the step in a child process and SIGKILLs it once it says it is done.
    fn run_and_kill(&self) {
        let _ = std::fs::remove_file(&self.ready_file);
        let mut child = self.spawn();
        let started = Instant::now();
        while !self.ready_file.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the child agent ({}) ended before it was killed: {status}",
                    self.step
                );
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!(
                    "the child agent ({}) did not finish its step in time",
                    self.step
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the agent");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed");
    }
}

/// The agent of the crash test: the test re-runs its own binary with the plan in the
/// environment, and this child is SIGKILLed by its parent once it reports its step done.
fn run_child_agent(plan: ChildPlan) -> ! {
    runtime().block_on(async {
        let mut config = ContainerdConfig::new(socket(), plan.namespace.clone());
        config.vm_netns = plan.vm_netns.clone();
        config.tenant_nic_file = Some(plan.tenant_file.clone());
        config.log_dir = plan.log_dir.clone();
        config.insecure_registries = vec![registry()];
        let runtime = connect(config).await;
        let nic = TenantNic::read(&plan.tenant_file).expect("eth1.json");
        runtime
            .ensure_hostnic_network(&HostnicNetworkSpec::for_tenant_nic(&nic))
            .await
            .expect("network");
        match plan.step.as_str() {
            "prepare" => {
                runtime
                    .prepare_network(&plan.container, &nic)
                    .await
                    .expect("prepare");
            }
            "run" => {
                let image: ImageReference = plan.image.parse().expect("image");
                runtime
                    .ensure_image(&image, PullPolicy::IfMissing, None, &mut |_| {})
                    .await
                    .expect("pull");
                runtime
                    .run(&database_spec(&plan.container, &image, &nic))
                    .await
                    .expect("run");
            }
            other => panic!("unknown child step {other}"),
        }
        std::fs::write(&plan.ready_file, b"done").expect("ready file");
        // The parent kills us here; bounded in case it does not.
        tokio::time::sleep(Duration::from_secs(300)).await;
        panic!("the parent did not kill the child agent");
    })
}

#[test]
fn containerd_agent_crash_and_restart() {
    if let Some(plan) = ChildPlan::from_env() {
        run_child_agent(plan);
    }
    require_root();
    let bed = TestBed::new();
    let link = &bed.link;
    let rt = runtime();
    let image = rt.block_on(push_test_image(&registry(), DB_PORT));
    let name = format!("db-crash-{}", next_counter());
    let mut plan = ChildPlan {
        step: "prepare".into(),
        namespace: bed.namespace().to_owned(),
        vm_netns: link.vm.namespace().path().to_owned(),
        tenant_file: bed.tenant_file.clone(),
        log_dir: bed.dir.path().to_owned(),
        image: image.to_string(),
        container: name.clone(),
        ready_file: bed.dir.path().join("ready"),
    };

    // 1. The agent dies right after moving the NIC into a new namespace.
    plan.run_and_kill();
    let netns = adapter_netns(bed.namespace());
    assert_eq!(netns.len(), 1, "one namespace prepared: {netns:?}");
    assert_not_in_vm(link);

    // 2. A new agent creates and starts the container, reusing that namespace, then dies.
    plan.step = "run".into();
    plan.run_and_kill();
    assert_eq!(adapter_netns(bed.namespace()), netns, "no second namespace");

    // 3. A third agent finds the running task and carries on.
    rt.block_on(async {
        let runtime = bed.connect().await;
        assert!(
            lease_ids(bed.namespace()).await.is_empty(),
            "stale leases are removed at start-up"
        );
        let info = runtime
            .inspect(&name)
            .await
            .expect("inspect")
            .expect("container survives");
        assert_eq!(info.status, ContainerStatus::Running);
        let pid = info.pid;
        runtime
            .start(&name)
            .await
            .expect("start is a no-op on a running container");
        let again = runtime
            .inspect(&name)
            .await
            .expect("inspect")
            .expect("exists");
        assert_eq!(again.pid, pid, "the same task");
        assert_container_network(&netns[0], link);
        assert_not_in_vm(link);
        link.echo_from_client(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("client cannot reach the database after the crash: {e}"));
        assert!(runtime.remove(&name, true).await.expect("remove"));
        link.assert_home();
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_unreachable_socket_is_named() {
    runtime().block_on(async {
        let config = ContainerdConfig::new("/run/trove-netiso/no-such/containerd.sock", "netiso-x");
        let err = ContainerdRuntime::connect(config)
            .await
            .expect_err("no daemon");
        assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/run/trove-netiso/no-such/containerd.sock"),
            "{err}"
        );
    });
}

#[test]
fn containerd_missing_tenant_nic_leaves_nothing_behind() {
    require_root();
    runtime().block_on(async {
        let mut link = TenantLink::new();
        link.nic.mac_address = MacAddress::new([0x02, 0x6e, 0x65, 0x74, 0x69, 0x73]);
        let bed = TestBed::with_link(link);
        let (runtime, image) = bed.ready().await;
        let link = &bed.link;
        let name = format!("db-nonic-{}", next_counter());
        let err = runtime
            .run(&database_spec(&name, &image, &link.nic))
            .await
            .expect_err("no such NIC");
        assert!(err.to_string().contains("02:6e:65:74:69:73"), "{err}");
        assert!(runtime.inspect(&name).await.expect("inspect").is_none());
        assert!(
            link.vm.handle().link_by_name(&link.vm_if).is_ok(),
            "the VM's own link is untouched"
        );
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_restart_policy_brings_the_database_back_until_stopped() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let (runtime, image) = bed.ready().await;
        let link = &bed.link;
        let name = format!("db-restart-{}", next_counter());
        let spec = database_spec(&name, &image, &link.nic);
        assert_eq!(
            spec.restart_policy,
            netiso_runtime::RestartPolicy::UnlessStopped
        );
        runtime.run(&spec).await.expect("run");
        let first = runtime
            .wait_healthy(&name, Duration::from_secs(30))
            .await
            .expect("running");
        let pid = first.pid.expect("pid");

        // The database dies behind everyone's back: containerd's restart monitor (10 s
        // interval) starts it again in the same prepared namespace.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the database");
        let started = Instant::now();
        let restarted = loop {
            let info = runtime
                .inspect(&name)
                .await
                .expect("inspect")
                .expect("exists");
            if info.status == ContainerStatus::Running && info.pid.is_some_and(|p| p != pid) {
                break info;
            }
            assert!(
                started.elapsed() < Duration::from_secs(45),
                "not restarted by containerd's restart monitor: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!("restarted by the monitor after {:?}", started.elapsed());
        assert_eq!(restarted.sandbox_key, first.sandbox_key);
        link.echo_from_client(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("after the restart: {e}"));

        // A stop is respected: the grace period outlasts a monitor pass (10 s) without the
        // monitor killing the task early, and the monitor leaves it stopped afterwards.
        let stopping = Instant::now();
        runtime
            .stop(&name, Duration::from_secs(11))
            .await
            .expect("stop");
        assert!(
            stopping.elapsed() >= Duration::from_secs(11),
            "killed before the grace period ended: {:?}",
            stopping.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let stopped = runtime
            .inspect(&name)
            .await
            .expect("inspect")
            .expect("exists");
        assert_eq!(stopped.status, ContainerStatus::Exited, "{stopped:?}");

        assert!(runtime.remove(&name, true).await.expect("remove"));
        link.assert_home();
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_health_checks_run_as_exec_probes() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let (runtime, image) = bed.ready().await;
        let link = &bed.link;
        let name = format!("db-healthy-{}", next_counter());
        let mut spec = database_spec(&name, &image, &link.nic);
        spec.healthcheck = Some(echo_health_check(DB_PORT));
        runtime.run(&spec).await.expect("run");
        let info = runtime
            .wait_healthy(&name, Duration::from_secs(30))
            .await
            .expect("the echo server passes its health check");
        assert_eq!(info.health, Some(HealthStatus::Healthy));
        assert!(runtime.remove(&name, true).await.expect("remove"));
        link.assert_home();

        let name = format!("db-sick-{}", next_counter());
        let mut spec = database_spec(&name, &image, &link.nic);
        spec.healthcheck = Some(HealthCheck {
            test: vec!["CMD".into(), "/bin/busybox".into(), "false".into()],
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            retries: 2,
            start_period: Duration::ZERO,
        });
        runtime.run(&spec).await.expect("run");
        let err = runtime
            .wait_healthy(&name, Duration::from_secs(4))
            .await
            .expect_err("a failing probe never gets healthy");
        match &err {
            RuntimeError::HealthTimeout { last_state, .. } => {
                assert!(last_state.contains("unhealthy"), "{last_state}");
            }
            other => panic!("expected HealthTimeout, got {other}"),
        }
        let mut bad = database_spec("db-bad-check", &image, &link.nic);
        bad.healthcheck = Some(HealthCheck {
            test: vec!["CMD".into()],
            ..echo_health_check(DB_PORT)
        });
        let err = runtime.create_container(&bad).await.expect_err("bad check");
        assert!(matches!(err, RuntimeError::InvalidSpec { .. }), "{err}");
        assert!(runtime.remove(&name, true).await.expect("remove"));
        link.assert_home();
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_runs_a_docker_pushed_gzip_image() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let link = &bed.link;
        let runtime = bed.connect().await;
        runtime
            .ensure_hostnic_network(&HostnicNetworkSpec::for_tenant_nic(&link.nic))
            .await
            .expect("network");
        // Built by the guest dockerd and pushed there: Docker schema 2, gzip layer.
        let published = PublishedImage::publish(DB_PORT).await;
        let docker_name = published.reference().to_string();
        let (_, path) = docker_name
            .split_once('/')
            .expect("registry/repository:tag");
        let image: ImageReference = format!("{}/{path}", registry()).parse().expect("ref");
        let mut statuses = Vec::new();
        let pulled = runtime
            .ensure_image(&image, PullPolicy::Always, None, &mut |e| {
                statuses.push(e.status)
            })
            .await
            .expect("pull the Docker-pushed image");
        assert!(matches!(pulled, ImageStatus::Pulled { .. }), "{pulled:?}");
        for expected in ["Download complete", "Extracting", "Pull complete"] {
            assert!(
                statuses.iter().any(|s| s == expected),
                "{expected}: {statuses:?}"
            );
        }
        let name = format!("db-docker-{}", next_counter());
        runtime
            .run(&database_spec(&name, &image, &link.nic))
            .await
            .expect("run the Docker-built image");
        link.echo_from_client(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("client cannot reach the database: {e}"));
        assert!(runtime.remove(&name, true).await.expect("remove"));
        link.assert_home();
        assert_nothing_left(bed.namespace(), &name).await;
    });
}

#[test]
fn containerd_start_up_removes_leases_of_dead_agents() {
    require_root();
    runtime().block_on(async {
        let bed = TestBed::new();
        let mut leases = LeasesClient::new(channel().await);
        // pid 999999999 is above any pid_max: that agent is gone. A lease of a live
        // process (ours) and a foreign lease are kept.
        for (id, owner) in [
            ("netiso-pull-999999999-1", true),
            (&*format!("netiso-pull-{}-1", std::process::id()), true),
            ("someone-else", false),
        ] {
            let labels = if owner {
                [(
                    "org.openstack.trove.netiso/lease".to_owned(),
                    "pull".to_owned(),
                )]
                .into()
            } else {
                std::collections::HashMap::new()
            };
            leases
                .create(request(
                    bed.namespace(),
                    containerd_client::services::v1::CreateRequest {
                        id: id.to_owned(),
                        labels,
                    },
                ))
                .await
                .expect("create lease");
        }
        let _runtime = bed.connect().await;
        let mut left = lease_ids(bed.namespace()).await;
        left.sort();
        assert_eq!(
            left,
            vec![
                format!("netiso-pull-{}-1", std::process::id()),
                "someone-else".to_owned()
            ]
        );
    });
}
