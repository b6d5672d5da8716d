//! The plugin server over a real unix socket, with a scripted NIC locator (no privileges needed).
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a test failure.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{EP, NET_A, NET_B, TestServer, call, create_network_body, join_body, post};
use netiso_hostnic::protocol::Endpoint;
use netiso_hostnic::{LocateError, MacAddress, NicLocator, PluginSocket, ServerError};
use serde_json::{Value, json};

const MAC: &str = "fa:16:3e:12:34:56";
const ETH1: &str = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1", "ipv4_host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}], "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_gateway": "fd00::1", "ipv6_host_routes": [{"destination": "fd01::/64", "nexthop": "::"}]}"#;

/// The NIC `fa:16:3e:12:34:56` is `ens4` in the plugin namespace; nothing is in any sandbox.
struct ScriptedLocator;

impl NicLocator for ScriptedLocator {
    fn find_in_plugin_ns(&self, mac: MacAddress) -> Result<Option<String>, LocateError> {
        Ok((mac.to_string() == MAC).then(|| "ens4".to_owned()))
    }

    fn find_in_sandboxes(
        &self,
        _dir: &Path,
        _mac: MacAddress,
    ) -> Result<Option<PathBuf>, LocateError> {
        Ok(None)
    }
}

struct Setup {
    dir: tempfile::TempDir,
    server: TestServer,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("eth1.json"), ETH1).unwrap();
        let server = Self::start(dir.path());
        Self { dir, server }
    }

    fn start(dir: &Path) -> TestServer {
        TestServer::start(
            &dir.join("plugins/docker-hostnic.sock"),
            &dir.join("etc/hostnic.json"),
            &dir.join("eth1.json"),
            Arc::new(ScriptedLocator),
            None,
        )
    }

    fn socket(&self) -> PathBuf {
        self.server.socket.clone()
    }
}

#[tokio::test]
async fn activate_and_capabilities_accept_empty_bodies_and_get() {
    let setup = Setup::new();
    for method in ["POST", "GET"] {
        let answer = call(&setup.socket(), method, "/Plugin.Activate", "").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json, json!({"Implements": ["NetworkDriver"]}));
        assert_eq!(
            answer.content_type,
            "application/vnd.docker.plugins.v1.2+json"
        );
    }
    let answer = call(
        &setup.socket(),
        "POST",
        "/NetworkDriver.GetCapabilities",
        "",
    )
    .await;
    assert_eq!(
        answer.json,
        json!({"Scope": "local", "ConnectivityScope": "local", "GwAllocChecker": true})
    );
}

#[tokio::test]
async fn socket_is_0660_and_removed_on_graceful_shutdown() {
    let mut setup = Setup::new();
    let socket = setup.socket();
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    let leftovers: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary socket is left behind");
    setup.server.stop();
    assert!(
        !socket.exists(),
        "the socket is removed when the server stops"
    );
}

#[tokio::test]
async fn every_endpoint_answers_json_and_errors_carry_err() {
    let setup = Setup::new();
    let socket = setup.socket();
    let ids = json!({"NetworkID": NET_A, "EndpointID": EP});
    assert_eq!(
        post(
            &socket,
            Endpoint::CreateNetwork.path(),
            &create_network_body(NET_A, MAC)
        )
        .await
        .json,
        json!({})
    );
    let calls: Vec<(Endpoint, Value, Value)> = vec![
        (
            Endpoint::GwAllocCheck,
            json!({"Options": {}}),
            json!({"SkipIPv4": true, "SkipIPv6": true}),
        ),
        (
            Endpoint::CreateEndpoint,
            json!({"NetworkID": NET_A, "EndpointID": EP, "Interface": {"Address": "10.0.0.15/24"}}),
            json!({}),
        ),
        (
            Endpoint::EndpointOperInfo,
            ids.clone(),
            json!({"Value": {"hostnic_mac": MAC}}),
        ),
        (
            Endpoint::ProgramExternalConnectivity,
            json!({"NetworkID": NET_A, "EndpointID": EP, "Options": {}}),
            json!({}),
        ),
        (Endpoint::RevokeExternalConnectivity, ids.clone(), json!({})),
        (Endpoint::Leave, ids.clone(), json!({})),
        (Endpoint::DeleteEndpoint, ids.clone(), json!({})),
        (
            Endpoint::DiscoverNew,
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.2", "self": true}}),
            json!({}),
        ),
        (
            Endpoint::DiscoverDelete,
            json!({"DiscoveryType": 1, "DiscoveryData": {}}),
            json!({}),
        ),
        (
            Endpoint::AllocateNetwork,
            json!({"NetworkID": NET_A, "Options": {}, "IPv4Data": [], "IPv6Data": []}),
            json!({"Options": {}}),
        ),
        (
            Endpoint::FreeNetwork,
            json!({"NetworkID": NET_A}),
            json!({}),
        ),
        (
            Endpoint::DeleteNetwork,
            json!({"NetworkID": NET_A}),
            json!({}),
        ),
    ];
    for (endpoint, body, expected) in calls {
        let answer = post(&socket, endpoint.path(), &body).await;
        assert_eq!(
            (answer.status, &answer.json),
            (200, &expected),
            "{endpoint}"
        );
    }

    let unknown = post(&socket, "/IpamDriver.RequestPool", &json!({})).await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json["Err"]
            .as_str()
            .unwrap()
            .contains("not a docker-hostnic endpoint")
    );

    for endpoint in Endpoint::ALL {
        for malformed in [
            "{\"NetworkID\": ",
            "[]",
            "\"x\"",
            "{\"NetworkID\": 1, \"EndpointID\": 2, \"SandboxKey\": 3}",
        ] {
            let answer = call(&socket, "POST", endpoint.path(), malformed).await;
            if answer.status == 200 {
                // Endpoints that need no input ignore fields they do not use.
                assert!(
                    !answer.json.as_object().unwrap().contains_key("Err"),
                    "{endpoint}"
                );
                continue;
            }
            assert_eq!(
                answer.status, 400,
                "{endpoint} {malformed}: {:?}",
                answer.json
            );
            let message = answer.json["Err"].as_str().expect("Err string");
            // dockerd prefixes the method name itself; repeating it would read twice.
            assert!(
                !message.is_empty() && !message.contains(endpoint.name()),
                "{endpoint}: {message}"
            );
        }
    }

    let answer = call(&socket, "DELETE", "/Plugin.Activate", "").await;
    assert_eq!(answer.status, 405);
    assert!(answer.json["Err"].as_str().unwrap().contains("POST"));
    let huge = format!("{{\"NetworkID\": \"{}\"}}", "a".repeat(2 << 20));
    let answer = call(&socket, "POST", Endpoint::DeleteNetwork.path(), &huge).await;
    assert_eq!(answer.status, 413);
}

#[tokio::test]
async fn create_network_is_idempotent_and_conflicts_are_409() {
    let setup = Setup::new();
    let socket = setup.socket();
    let path = Endpoint::CreateNetwork.path();
    assert_eq!(
        post(&socket, path, &create_network_body(NET_A, MAC))
            .await
            .status,
        200
    );
    let again = post(
        &socket,
        path,
        &create_network_body(NET_A, "FA:16:3E:12:34:56"),
    )
    .await;
    assert_eq!((again.status, again.json), (200, json!({})));
    let conflict = post(
        &socket,
        path,
        &create_network_body(NET_A, "fa:16:3e:00:00:01"),
    )
    .await;
    assert_eq!(conflict.status, 409);
    assert!(
        conflict.json["Err"]
            .as_str()
            .unwrap()
            .contains("delete the network first")
    );
    let missing_mac = post(&socket, path, &json!({"NetworkID": NET_B, "Options": {}})).await;
    assert_eq!(missing_mac.status, 400);
    assert!(
        missing_mac.json["Err"]
            .as_str()
            .unwrap()
            .contains("hostnic_mac")
    );
}

#[tokio::test]
async fn join_answers_gateway_and_routes_and_networks_survive_a_restart() {
    let mut setup = Setup::new();
    let socket = setup.socket();
    assert_eq!(
        post(
            &socket,
            Endpoint::CreateNetwork.path(),
            &create_network_body(NET_A, MAC)
        )
        .await
        .status,
        200
    );
    setup.server.stop();

    let state: Value =
        serde_json::from_slice(&std::fs::read(setup.dir.path().join("etc/hostnic.json")).unwrap())
            .unwrap();
    assert_eq!(
        state,
        json!({NET_A: {"mac_address": MAC, "gateway": "10.0.0.1"}})
    );

    setup.server = Setup::start(setup.dir.path());
    let join = post(
        &socket,
        Endpoint::Join.path(),
        &join_body(NET_A, Path::new("/run/docker/netns/0123456789ab")),
    )
    .await;
    assert_eq!(join.status, 200, "{:?}", join.json);
    assert_eq!(
        join.json,
        json!({
            "InterfaceName": {"SrcName": "ens4", "DstPrefix": "eth"},
            "Gateway": "10.0.0.1",
            "StaticRoutes": [
                {"Destination": "192.168.0.0/16", "RouteType": 0, "NextHop": "10.0.0.254"},
                {"Destination": "fd01::/64", "RouteType": 1}
            ],
            "DisableGatewayService": true
        })
    );
    let unknown = post(
        &socket,
        Endpoint::Join.path(),
        &join_body(NET_B, Path::new("/x/y")),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json["Err"]
            .as_str()
            .unwrap()
            .contains("not known to docker-hostnic")
    );
}

#[tokio::test]
async fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let setup = Setup::new();
    let socket = setup.socket();
    assert!(matches!(
        PluginSocket::bind(&socket),
        Err(ServerError::AlreadyServing { .. })
    ));
    assert_eq!(
        call(&socket, "GET", "/Plugin.Activate", "").await.status,
        200,
        "the first server still answers"
    );

    let stale = setup.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let rebound = PluginSocket::bind(&stale).expect("a stale socket is replaced");
    assert_eq!(rebound.path(), Some(stale.clone()));
    drop(rebound);
    assert!(!stale.exists());

    let regular = setup.dir.path().join("regular-file");
    std::fs::write(&regular, "keep me").unwrap();
    let err = PluginSocket::bind(&regular).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&regular).unwrap(), "keep me");
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long the close took.
async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: std::time::Duration,
) -> Option<(String, std::time::Duration)> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let remaining = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(remaining, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&received).into_owned(),
                    started.elapsed(),
                ));
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_cannot_exhaust_the_server() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eth1.json"), ETH1).unwrap();
    let mut limits = netiso_hostnic::ServeLimits::default();
    limits.header_read_timeout = std::time::Duration::from_millis(500);
    limits.body_read_timeout = std::time::Duration::from_millis(500);
    limits.max_connections = 2;
    let server = TestServer::start_with_limits(
        &dir.path().join("plugins/docker-hostnic.sock"),
        &dir.path().join("etc/hostnic.json"),
        &dir.path().join("eth1.json"),
        Arc::new(ScriptedLocator),
        None,
        limits,
    );
    let socket = server.socket.clone();
    let bound = std::time::Duration::from_secs(5);

    // Connects and sends nothing.
    let mut silent = tokio::net::UnixStream::connect(&socket).await.unwrap();
    // Sends half of the headers.
    let mut half_headers = tokio::net::UnixStream::connect(&socket).await.unwrap();
    half_headers
        .write_all(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n")
        .await
        .unwrap();
    // Both slots are taken: a well-behaved client waits, but is served once they are cut off.
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(bound, call(&socket, "POST", "/Plugin.Activate", "")).await;
    let served_after = started.elapsed();
    println!("a third client was served after {served_after:?} (both slots held by slow clients)");
    assert_eq!(answer.expect("served within the bound").status, 200);

    for (name, stream) in [("silent", &mut silent), ("half headers", &mut half_headers)] {
        let (sent, took) = read_until_closed(stream, bound)
            .await
            .unwrap_or_else(|| panic!("the {name} client was not cut off within {bound:?}"));
        println!("{name} client: connection closed after {took:?}, received {sent:?}");
    }

    // Complete headers, half of the body: 408 and the connection is closed.
    let mut half_body = tokio::net::UnixStream::connect(&socket).await.unwrap();
    half_body
        .write_all(
            b"POST /NetworkDriver.GetCapabilities HTTP/1.1\r\nHost: plugin\r\nContent-Length: 100\r\n\r\n{\"half\":",
        )
        .await
        .unwrap();
    let (sent, took) = read_until_closed(&mut half_body, bound)
        .await
        .expect("the half-body client was not cut off within the bound");
    println!("half-body client: answered and closed after {took:?}");
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("was not received within"), "{sent}");
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eth1.json"), ETH1).unwrap();
    let mut limits = netiso_hostnic::ServeLimits::default();
    limits.write_timeout = std::time::Duration::from_millis(500);
    limits.max_connections = 1;
    let server = TestServer::start_with_limits(
        &dir.path().join("plugins/docker-hostnic.sock"),
        &dir.path().join("etc/hostnic.json"),
        &dir.path().join("eth1.json"),
        Arc::new(ScriptedLocator),
        None,
        limits,
    );
    let socket = server.socket.clone();
    let bound = std::time::Duration::from_secs(10);

    // Pipelines requests and reads none of the answers: they fill the socket's buffers.
    let greedy = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut greedy_reader, mut greedy_writer) = greedy.into_split();
    let writer = tokio::spawn(async move {
        let request =
            b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n";
        for _ in 0..50_000 {
            if greedy_writer.write_all(request).await.is_err() {
                break;
            }
        }
    });
    // The only slot is held: a well-behaved client is served once the greedy one is cut off.
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(bound, call(&socket, "POST", "/Plugin.Activate", "")).await;
    println!("a second client was served after {:?}", started.elapsed());
    assert_eq!(answer.expect("served within the bound").status, 200);
    let (received, took) = read_until_closed(&mut greedy_reader, bound)
        .await
        .expect("the client that never reads was not cut off");
    println!(
        "non-reading client: {} bytes of answers, then closed after {took:?}",
        received.len()
    );
    assert!(
        received.starts_with("HTTP/1.1 200"),
        "{}",
        &received[..received.len().min(200)]
    );
    writer.abort();
}
