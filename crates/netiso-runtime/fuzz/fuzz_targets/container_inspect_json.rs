//! A daemon's container-inspect answer (outside input): whatever bollard's model accepts,
//! our mapping to `ContainerInfo` never panics and keeps its invariants, and the network
//! namespace read from it agrees with that mapping. Raw bytes cover
//! malformed answers; a well-formed answer with arbitrary values covers the mapping itself.
#![no_main]

use bollard::models::ContainerInspectResponse;
use libfuzzer_sys::fuzz_target;
use netiso_runtime::NetworkNamespace;
use netiso_runtime::docker::mapping::{container_info, network_namespace};

const STATUSES: [&str; 9] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
    "stopping",
    "",
];
const HEALTHS: [&str; 5] = ["none", "starting", "healthy", "unhealthy", ""];

fn check(inspect: ContainerInspectResponse) {
    let namespace = network_namespace(&inspect);
    let info = container_info(inspect);
    match namespace {
        None => assert_eq!(info.pid, None),
        Some(NetworkNamespace::Mounted(path)) => {
            assert!(info.pid.is_some());
            assert_eq!(info.sandbox_key, Some(path));
        }
        Some(NetworkNamespace::Process(pid)) => {
            assert_eq!((info.pid, info.sandbox_key.as_deref()), (Some(pid), None));
        }
        Some(other) => panic!("a kind the Docker mapping never gives: {other:?}"),
    }
    assert!(info.sandbox_key.is_none() || info.pid.is_some());
    assert_ne!(info.pid, Some(0));
    assert!(info.error.as_deref() != Some(""));
    let _ = info.describe_state();
}

type Input = (Vec<u8>, String, i64, u8, u8, String, String, String);

fuzz_target!(|input: Input| {
    let (raw, name, pid, status, health, sandbox, ipv4, ipv6) = input;
    if let Ok(inspect) = serde_json::from_slice::<ContainerInspectResponse>(&raw) {
        check(inspect);
    }
    let answer = serde_json::json!({
        "Id": name,
        "Name": name,
        "State": {
            "Status": STATUSES[usize::from(status) % STATUSES.len()],
            "Pid": pid,
            "ExitCode": pid,
            "Error": sandbox,
            "Health": {"Status": HEALTHS[usize::from(health) % HEALTHS.len()]},
        },
        "NetworkSettings": {
            "SandboxKey": sandbox,
            "Networks": {name.clone(): {
                "IPAddress": ipv4, "GlobalIPv6Address": ipv6, "MacAddress": name,
            }},
        },
    });
    let inspect: ContainerInspectResponse =
        serde_json::from_value(answer).unwrap_or_else(|e| panic!("well-formed answer: {e}"));
    check(inspect);
});
