//! `prepare` of the MariaDB image with the containerd runtime, isolated: the tenant NIC
//! moves from a throwaway VM namespace into the container, the user `prepare` created logs
//! in from the tenant network with Debian's `mariadb` client, writes a row, and a restart
//! keeps it. Needs root and `cargo xtask provision` (containerd, the registry, the image).
//!
//! The containerd namespace is fixed (`netiso-guest-mysql-test`) so that the 300 MB image is
//! pulled once and kept, as dockerd keeps it; each run's container is removed.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use netiso_config::tenant_nic::{TenantIpv4, TenantNic};
use netiso_config::{IsolationMode, VolumeSettings};
use netiso_guest::mysql::{Layout, MysqlSettings};
use netiso_guest::rpc::{DatabaseSettings, GuestService, PrepareRequest};
use netiso_messaging::Context;
use netiso_netlink::Rtnetlink;
use netiso_netlink::test_support::TestNamespace;
use netiso_runtime::test_support::{PROVISION_HINT, block_on_cleanup, next_counter};
use netiso_runtime::{ContainerRuntime, ContainerdConfig, ContainerdRuntime};
use serde_json::json;

mod common;

use common::{NoPortProbe, RecordingSink};

const NAMESPACE: &str = "netiso-guest-mysql-test";
const PASSWORD: &str = "cd-app-s3cr3t";
/// `prepare`'s `root_password`: root is enabled from anywhere with it (Trove's
/// `enable_root_on_prepare`).
const ROOT_PASSWORD: &str = "cd-root-s3cr3t";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Removes the container (which hands the NIC back) when dropped.
struct ContainerdContainerGuard {
    config: ContainerdConfig,
    name: String,
}

impl Drop for ContainerdContainerGuard {
    fn drop(&mut self) {
        let (config, name) = (self.config.clone(), self.name.clone());
        block_on_cleanup(move || async move {
            match ContainerdRuntime::connect(config).await {
                Ok(runtime) => {
                    if let Err(e) = runtime.remove(&name, true).await {
                        eprintln!("cleanup: removing container {name}: {e}");
                    }
                }
                Err(e) => eprintln!("cleanup: container {name} left behind: {e}"),
            }
        });
    }
}

/// SQL as `user` from the client namespace to the container's tenant address.
fn sql_as(
    client: &TestNamespace,
    address: Ipv4Addr,
    (user, password): (&str, &str),
    sql: &str,
) -> Result<String, String> {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", client.name(), "mariadb", "--protocol=TCP"])
        .args([
            "-h",
            &address.to_string(),
            "-u",
            user,
            "--connect-timeout=5",
        ])
        .args(["-N", "-B", "app", "-e", sql])
        .env("MYSQL_PWD", password)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the mariadb client: {e} ({PROVISION_HINT})"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

#[test]
fn containerd_prepare_runs_mariadb_with_the_tenant_nic_and_the_user_logs_in() {
    netiso_runtime::test_support::require_root();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    // The VM namespace holds the tenant NIC; its peer is the tenant network's client.
    let vm = TestNamespace::new();
    let client = TestNamespace::new();
    let (vm_if, client_if) = vm.veth("ntm", Some(&client));
    let mac = vm
        .handle()
        .link_by_name(&vm_if)
        .expect("vm end")
        .mac
        .expect("veth MAC");
    let third = u8::try_from(std::process::id() % 200).unwrap_or(0)
        + u8::try_from(next_counter() % 50).unwrap_or(0);
    let gateway = Ipv4Addr::new(10, 78, third, 1);
    let peer = client
        .handle()
        .link_by_name(&client_if)
        .expect("client end");
    client
        .handle()
        .add_address(
            peer.index,
            IpNet::V4(Ipv4Net::new(gateway, 24).expect("cidr")),
        )
        .expect("client address");
    client
        .handle()
        .set_link_up(peer.index, true)
        .expect("client up");
    let nic = TenantNic {
        mac_address: mac,
        ipv4: Some(TenantIpv4 {
            address: Ipv4Addr::new(10, 78, third, 5),
            cidr: Ipv4Net::new(Ipv4Addr::new(10, 78, third, 0), 24).expect("cidr"),
            gateway: Some(gateway),
            host_routes: vec![],
        }),
        ipv6: None,
    };
    let tenant_file = dir.path().join("eth1.json");
    std::fs::write(&tenant_file, nic.to_json()).expect("eth1.json");

    let registry = env_or("NETISO_REGISTRY", "127.0.0.1:5000");
    let mut config = ContainerdConfig::new(
        env_or(
            "NETISO_CONTAINERD_SOCKET",
            "/run/trove-netiso/containerd/containerd.sock",
        ),
        NAMESPACE,
    );
    config.vm_netns = vm.namespace().path().to_owned();
    config.tenant_nic_file = Some(tenant_file.clone());
    config.log_dir = dir.path().to_owned();
    config.insecure_registries = vec![registry.clone()];
    let name = format!("nti-mysql-{}-{}", std::process::id(), next_counter());
    let _container = ContainerdContainerGuard {
        config: config.clone(),
        name: name.clone(),
    };

    tokio.block_on(async {
        let runtime = ContainerdRuntime::connect(config)
            .await
            .unwrap_or_else(|e| panic!("containerd is not reachable ({e}): {PROVISION_HINT}"));
        let layout = Layout {
            config_dir: dir.path().join("etc-mysql"),
            socket_dir: dir.path().join("mysqld"),
            mount_point: dir.path().join("volume"),
            uid: 1001,
            gid: 1001,
        };
        let settings = DatabaseSettings {
            guest_id: "guest-containerd-mysql".into(),
            container_name: name.clone(),
            docker_image: Some(format!("{registry}/trove-netiso/mariadb")),
            container_registry: None,
            default_version: Some("10.11".into()),
            credentials: None,
            mode: IsolationMode::Isolated {
                tenant_nic_file: tenant_file.clone(),
            },
            tenant_nic: Some(nic.clone()),
            tcp_ports: vec![3306],
            mount_point: Some(layout.mount_point.clone()),
            state_change_wait_time: Duration::from_secs(180),
            state_dir: dir.path().join("state"),
            volume: VolumeSettings::default(),
            fstab: dir.path().join("fstab"),
            mysql: Some(MysqlSettings {
                manager: "mariadb".into(),
                layout: layout.clone(),
            }),
        };
        let sink = Arc::new(RecordingSink::default());
        let service = GuestService::new(
            settings,
            Arc::new(runtime),
            sink.clone(),
            Arc::new(NoPortProbe),
            None,
        );
        let request = PrepareRequest {
            ds_version: Some("10.11".into()),
            databases: Some(json!([{"_name": "app"}])),
            users: Some(
                json!([{"_name": "appuser", "_host": "%", "_password": PASSWORD,
                "_databases": [{"_name": "app"}]}]),
            ),
            config_contents: Some("[mysqld]\nmax_connections = 199\n".into()),
            root_password: Some(netiso_config::Secret::new(ROOT_PASSWORD)),
            mount_point: Some(layout.mount_point.clone()),
            ..PrepareRequest::default()
        };
        let started = Instant::now();
        service.prepare(&Context::fresh(), request).await;
        let events = sink.events.lock().expect("lock").clone();
        assert_eq!(
            events,
            ["heartbeat building", "heartbeat healthy"],
            "prepare succeeded"
        );
        eprintln!(
            "containerd prepare (pull if needed, NIC, init, users): {:?}",
            started.elapsed()
        );
        assert!(
            vm.handle()
                .link_by_mac(netiso_netlink::MacAddress::new(mac.octets()))
                .is_err(),
            "the tenant NIC left the VM"
        );

        let address = nic.ipv4.as_ref().expect("v4").address;
        let client = &client;
        let sql =
            |client, address, query: &str| sql_as(client, address, ("appuser", PASSWORD), query);
        let answer = sql(
            client,
            address,
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO t VALUES (1, 'tenant'); SELECT v FROM t",
        )
        .unwrap_or_else(|e| panic!("appuser cannot use the database: {e}"));
        assert_eq!(answer, "tenant");
        eprintln!(
            "containerd prepare to the first row read from the tenant network: {:?}",
            started.elapsed()
        );
        assert_eq!(
            sql(client, address, "SELECT @@global.max_connections").expect("variable"),
            "199"
        );

        assert_eq!(
            sql_as(
                client,
                address,
                ("root", ROOT_PASSWORD),
                "SELECT CURRENT_USER()"
            )
            .expect("root logs in from the tenant network with prepare's root_password"),
            "root@%"
        );

        service.restart().await.expect("restart");
        assert_eq!(
            sql(client, address, "SELECT v FROM t").expect("after restart"),
            "tenant"
        );
    });
}
