//! Docker's `daemon.json` (its `insecure-registries`) on arbitrary bytes: never panics, an
//! error always names the file, and an accepted list is exactly the document's strings.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netiso_config::guest::parse_daemon_insecure_registries;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("daemon.json");
    match parse_daemon_insecure_registries(path, text) {
        Ok(registries) => {
            let document: serde_json::Value =
                serde_json::from_str(text).expect("accepted text is JSON");
            let expected: Vec<String> = document
                .get("insecure-registries")
                .and_then(serde_json::Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|item| item.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(registries, expected);
        }
        Err(error) => assert!(error.to_string().starts_with("daemon.json: "), "{error}"),
    }
});
