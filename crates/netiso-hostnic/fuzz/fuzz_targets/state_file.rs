//! The state file (`hostnic.json`) parser: any bytes give a network map or an error, never a
//! panic; a parsed map survives a write/read round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_hostnic::state::{parse_networks, render_networks};

fuzz_target!(|data: &[u8]| {
    if let Ok(networks) = parse_networks(data) {
        let written = render_networks(&networks).expect("a parsed state renders");
        assert_eq!(parse_networks(&written).ok(), Some(networks));
    }
});
