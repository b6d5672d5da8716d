//! MAC parsing never panics, and whatever parses prints back in lowercase colon form and
//! parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_netlink::MacAddress;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(mac) = text.parse::<MacAddress>()
    {
        let shown = mac.to_string();
        assert_eq!(shown.len(), 17);
        assert_eq!(shown, shown.to_lowercase());
        assert_eq!(shown.parse::<MacAddress>().ok(), Some(mac));
    }
});
