//! `eth1.json` validation on arbitrary bytes: never panics, and whatever it accepts
//! renders to JSON that parses back to the same model; the MAC salvaged from a refused file
//! (failing closed) is the one validation would read.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netiso_config::TenantNic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(nic) = TenantNic::parse(Path::new("eth1.json"), text) {
        let rendered = nic.to_json();
        let again = TenantNic::parse(Path::new("eth1.json"), &rendered)
            .unwrap_or_else(|error| panic!("own rendering rejected: {error}: {rendered}"));
        assert_eq!(again, nic);
        assert_eq!(TenantNic::mac_of_refused_text(text), Some(nic.mac_address));
    }
});
