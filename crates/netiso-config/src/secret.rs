//! A string whose value must never reach logs, `Debug` output or error messages.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A string that never shows in `Debug`/`Display`/logs.
///
/// Passwords of the transport URL and the per-instance RPC key travel through
/// configuration structs that are routinely logged with `{:?}`; wrapping them
/// makes a leak a type error instead of a review finding. Read the value only
/// where it is used, with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Gives the real value, for the one place that needs it (a login, a key schedule).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What every redacted value prints as.
pub(crate) const REDACTED: &str = "***";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn equality_compares_the_hidden_value() {
        assert_eq!(Secret::new("a"), Secret::new(String::from("a")));
        assert_ne!(Secret::new("a"), Secret::new("b"));
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let secret: Secret = serde_json::from_str("\"s3cr3t\"").expect("a JSON string");
        assert_eq!(secret.expose(), "s3cr3t");
        assert!(serde_json::from_str::<Secret>("42").is_err());
    }
}
