//! The state file (`hostnic.json`) parser: any bytes give the valid and the rejected entries,
//! or an error, never a panic; both survive a write/read round trip unchanged (nothing in a
//! file is lost by a rewrite).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_hostnic::state::{parse_networks, render_networks};

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_networks(data) {
        let written =
            render_networks(&parsed.networks, &parsed.rejected).expect("a parsed state renders");
        let again = parse_networks(&written).expect("a rendered state parses");
        assert_eq!(again.networks, parsed.networks);
        let raw = |state: &netiso_hostnic::state::ParsedState| -> Vec<(String, serde_json::Value)> {
            state
                .rejected
                .iter()
                .map(|(id, entry)| (id.clone(), entry.raw.clone()))
                .collect()
        };
        assert_eq!(raw(&again), raw(&parsed));
    }
});
