//! The oslo INI reader on arbitrary bytes: it must never panic, every line number it reports
//! must lie inside the input, and every accepted file must go through the typed models
//! without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netiso_config::ini::IniFile;
use netiso_config::{ControlPlaneConfig, GuestConfig, OsloConfig};

fuzz_target!(|data: &[u8]| {
    let lines = 1 + data.iter().filter(|b| **b == b'\n' || **b == b'\r').count();
    match IniFile::parse_bytes(Path::new("fuzz.conf"), data) {
        Ok(file) => {
            for entry in file.entries() {
                assert!(
                    (1..=lines).contains(&entry.line),
                    "line {} outside input",
                    entry.line
                );
                assert!(!entry.key.is_empty(), "empty key accepted");
            }
            let mut config = OsloConfig::default();
            config.add_file(&file);
            let _ = GuestConfig::from_oslo(&config);
            let _ = ControlPlaneConfig::from_oslo(&config);
        }
        Err(error) => {
            assert!(
                (1..=lines).contains(&error.line),
                "error line {} outside input",
                error.line
            );
            assert!(error.to_string().starts_with("fuzz.conf:"));
        }
    }
});
