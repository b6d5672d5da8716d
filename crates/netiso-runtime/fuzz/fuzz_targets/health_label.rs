//! The health check kept in a containerd container label (read back from containerd, which
//! anyone with access to its socket can write): decoding never panics, whatever decodes has a
//! runnable probe, and encoding it again gives a label that decodes to the same check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_runtime::containerd::health::{decode, encode, is_valid, probe_args};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(check) = decode(text) {
        let args =
            probe_args(&check).unwrap_or_else(|| panic!("decoded without a probe: {check:?}"));
        assert!(!args.is_empty());
        assert!(is_valid(&check));
        let label = encode(&check);
        assert_eq!(decode(&label), Some(check), "label {label}");
    }
});
