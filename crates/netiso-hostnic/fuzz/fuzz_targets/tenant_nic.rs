//! The tenant NIC file (`eth1.json`) parser: any bytes give a NIC or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_hostnic::TenantNic;

fuzz_target!(|data: &[u8]| {
    if let Ok(nic) = TenantNic::parse(data) {
        for route in nic.ipv4_host_routes {
            assert!(route.destination.addr().is_ipv4());
        }
        for route in nic.ipv6_host_routes {
            assert!(route.destination.addr().is_ipv6());
        }
    }
});
