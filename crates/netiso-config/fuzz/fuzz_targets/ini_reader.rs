//! The oslo INI reader on arbitrary bytes: it must never panic, every error must name a
//! line inside the input, and every accepted file must type-check without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netiso_config::OsloConfig;
use netiso_config::ini::IniFile;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.conf");
    match IniFile::parse_bytes(path, data) {
        Ok(file) => {
            let lines = 1 + data.iter().filter(|b| **b == b'\n' || **b == b'\r').count();
            for entry in file.entries() {
                assert!(entry.line >= 1 && entry.line <= lines, "line {} outside input", entry.line);
                assert!(!entry.key.is_empty(), "empty key accepted");
            }
            let mut config = OsloConfig::default();
            config.add_file(&file);
            let _ = netiso_config::GuestConfig::from_oslo(&config);
            let _ = netiso_config::ControlPlaneConfig::from_oslo(&config);
        }
        Err(error) => {
            let lines = 1 + data.iter().filter(|b| **b == b'\n' || **b == b'\r').count();
            assert!(error.line >= 1 && error.line <= lines, "error line {} outside input", error.line);
            assert!(error.to_string().starts_with("fuzz.conf:"));
        }
    }
});
