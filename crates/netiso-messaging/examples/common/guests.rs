//! The guest list of the fleet examples: `GUEST_ID INSTANCE_KEY` a line (`-`: no secure RPC),
//! `#` comments; refused when group or others can read it, since it holds keys.

use std::error::Error;
use std::os::unix::fs::PermissionsExt;

use netiso_messaging::{Guest, InstanceKey};

/// Reads the guest list at `path`.
pub fn read(path: &str) -> Result<Vec<Guest>, Box<dyn Error + Send + Sync>> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{path} holds instance keys but is readable by others (mode {:o}): chmod 600 it",
            mode & 0o777
        )
        .into());
    }
    let text = std::fs::read_to_string(path)?;
    let mut guests = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, key) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{path}:{}: expected `GUEST_ID KEY`", number + 1))?;
        let key = match key.trim() {
            "-" => None,
            // The error names the line, never the key.
            text => Some(
                InstanceKey::new(text).map_err(|err| format!("{path}:{}: {err}", number + 1))?,
            ),
        };
        guests.push(Guest::new(id, key));
    }
    Ok(guests)
}
