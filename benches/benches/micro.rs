//! Micro-benchmarks (criterion) of the pure functions on the hot paths: reading the guest's
//! INI configuration, decoding + decrypting an RPC request envelope, and decoding plugin
//! requests. `cargo bench -p netiso-benches --bench micro`; `cargo xtask bench` runs it and
//! copies the figures into `docs/benchmarks.md`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use netiso_config::ini::IniFile;
use netiso_hostnic::decode_request;
use netiso_messaging::envelope::{self, Request};
use netiso_messaging::{Context, InstanceKey, Serializer};
use serde_json::{Map, Value, json};

/// A guest configuration as Trove's taskmanager injects it (`trove-guestagent.conf`).
const GUEST_CONF: &str = "\
[DEFAULT]
debug = False
log_file = trove-guestagent.log
log_dir = /var/log/trove/
ignore_users = os_admin
control_exchange = trove
transport_url = rabbit://trove:s3cret@10.0.0.5:5672,trove:s3cret@10.0.0.6:5672/
rpc_backend = rabbit
command_process_timeout = 60
use_syslog = False
datastore_manager = mysql
datastore_version = 8.0
instance_rpc_encr_key = Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq
network_isolation = True
management_networks = 6f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b
docker_image_registry = 10.0.0.7:5000
# Comments and continuation lines as oslo.config accepts them.
guest_id = 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b
[oslo_messaging_rabbit]
rabbit_ha_queues = False
amqp_durable_queues = False
heartbeat_timeout_threshold = 60
[oslo_messaging_notifications]
driver = messagingv2
[mysql]
docker_image = 10.0.0.7:5000/mysql
backup_docker_image = 10.0.0.7:5000/db-backup-mysql:1.1.0
root_controller = trove.extensions.mysql.service.MySQLRootController
volume_support = True
device_path = /dev/vdb
replication_strategy = MysqlGTIDReplication
";

const NETWORK_ID: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
const ENDPOINT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn ini(c: &mut Criterion) {
    let path = Path::new("/etc/trove/conf.d/trove-guestagent.conf");
    c.bench_function("ini: parse trove-guestagent.conf (32 lines)", |b| {
        b.iter(|| IniFile::parse(path, black_box(GUEST_CONF)).map(|f| f.entries().len()))
    });
}

/// An encrypted `prepare`-like call as Trove's controller sends it: every argument and the
/// context encrypted by `SecureSerializer`, inside the 2.0 envelope.
fn encrypted_call(serializer: &Serializer) -> Vec<u8> {
    let args = [
        ("packages", json!(["mysql-server-8.0"])),
        (
            "databases",
            json!([{"_name": "db1", "_character_set": "utf8mb4"}]),
        ),
        ("memory_mb", json!(4096)),
        (
            "users",
            json!([{"_name": "app", "_password": "secret", "_host": "%"}]),
        ),
        ("device_path", json!("/dev/vdb")),
        ("mount_point", json!("/var/lib/mysql")),
        (
            "config_contents",
            json!("[mysqld]\nmax_connections = 100\n"),
        ),
    ];
    let mut serialized = Map::new();
    for (name, value) in args {
        serialized.insert(name.into(), serializer.serialize_entity(&value));
    }
    let request = Request {
        method: "prepare".into(),
        args: serialized,
        namespace: None,
        version: Some("1.0".into()),
        msg_id: Some("6c1f0e3c2b5a4d7e8f9a0b1c2d3e4f5a".into()),
        reply_q: Some("reply_0f1e2d3c4b5a69788a9b0c1d2e3f4a5b".into()),
        timeout: None,
        unique_id: Some("9a8b7c6d5e4f30211203f4e5d6c7b8a9".into()),
        context: serializer.serialize_context(&Context::fresh()),
    };
    envelope::wrap(&request.to_message())
}

/// What the server does with a delivery before dispatch: unwrap, read the request, decrypt
/// the context and every argument.
fn decode_and_decrypt(serializer: &Serializer, body: &[u8]) -> Option<usize> {
    let message = envelope::unwrap(body).ok()?;
    let request = Request::from_message(message).ok()?;
    let context = serializer.deserialize_context(request.context).ok()?;
    let args: Map<String, Value> = request
        .args
        .into_iter()
        .map(|(name, value)| Some((name, serializer.deserialize_entity(value).ok()?)))
        .collect::<Option<_>>()?;
    Some(context.0.len() + args.len())
}

fn envelope(c: &mut Criterion) {
    let Ok(key) = InstanceKey::new("Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq") else {
        panic!("the benchmark's instance key is valid");
    };
    let serializer = Serializer::Secure(key);
    let body = encrypted_call(&serializer);
    assert_eq!(
        decode_and_decrypt(&serializer, &body),
        Some(Context::fresh().0.len() + 7),
        "the benchmark message must decode"
    );
    c.bench_function("rpc: envelope decode + decrypt (prepare, 7 args)", |b| {
        b.iter(|| decode_and_decrypt(&serializer, black_box(&body)))
    });
}

fn plugin_requests(c: &mut Criterion) {
    let create_network = format!(
        r#"{{"NetworkID":"{NETWORK_ID}","Options":{{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{{"hostnic_mac":"fa:16:3e:12:34:56"}}}},"IPv4Data":[{{"AddressSpace":"LocalDefault","Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24"}}],"IPv6Data":[]}}"#
    );
    let create_endpoint = format!(
        r#"{{"NetworkID":"{NETWORK_ID}","EndpointID":"{ENDPOINT_ID}","Interface":{{"Address":"10.0.0.15/24","AddressIPv6":"","MacAddress":""}},"Options":{{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}}}"#
    );
    let join = format!(
        r#"{{"NetworkID":"{NETWORK_ID}","EndpointID":"{ENDPOINT_ID}","SandboxKey":"/var/run/docker/netns/0123456789ab","Options":{{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}}}"#
    );
    let cases = [
        ("/Plugin.Activate", String::new()),
        ("/NetworkDriver.CreateNetwork", create_network),
        ("/NetworkDriver.CreateEndpoint", create_endpoint),
        ("/NetworkDriver.Join", join),
    ];
    for (path, body) in &cases {
        assert!(
            decode_request(path, body.as_bytes()).is_ok(),
            "the benchmark body for {path} must decode"
        );
        c.bench_function(&format!("plugin: decode_request {path}"), |b| {
            b.iter(|| decode_request(black_box(path), black_box(body.as_bytes())).is_ok())
        });
    }
}

criterion_group!(micro, ini, envelope, plugin_requests);
criterion_main!(micro);
