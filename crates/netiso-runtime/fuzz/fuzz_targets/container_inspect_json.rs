//! A daemon's container-inspect answer (outside input): whatever bollard's model accepts,
//! our mapping to `ContainerInfo` never panics and keeps its invariants.
#![no_main]

use bollard::models::ContainerInspectResponse;
use libfuzzer_sys::fuzz_target;
use netiso_runtime::docker::mapping::container_info;

fuzz_target!(|data: &[u8]| {
    let Ok(inspect) = serde_json::from_slice::<ContainerInspectResponse>(data) else {
        return;
    };
    let info = container_info(inspect);
    assert!(info.sandbox_key.is_none() || info.pid.is_some());
    assert!(info.pid != Some(0));
    let _ = info.describe_state();
});
