//! The crate's configuration error: every variant names where the problem is.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ini::IniSyntaxError;
use crate::source::Origin;
use crate::tenant_nic::TenantNicError;
use crate::transport_url::TransportUrlError;
use crate::value::ValueError;

/// Why configuration could not be loaded. Messages never contain secret values.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A malformed INI file (names file and line).
    #[error(transparent)]
    Syntax(#[from] IniSyntaxError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// A `--config-file` that does not exist (oslo refuses to start too).
    #[error("config file {} not found", path.display())]
    ConfigFileNotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// A `--config-dir` that does not exist or is not a directory.
    #[error("config directory {} not found", path.display())]
    ConfigDirNotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// A value that does not convert to its option's type.
    #[error("{location}: {reason}")]
    InvalidValue {
        /// File and line (or variable), section and option.
        location: Box<OptionLocation>,
        /// What is wrong.
        reason: ValueError,
    },
    /// A `transport_url` that does not parse.
    #[error("{location}: {reason}")]
    InvalidTransportUrl {
        /// File and line (or variable), section and option.
        location: Box<OptionLocation>,
        /// What is wrong (never includes the password).
        reason: Box<TransportUrlError>,
    },
    /// A required option that no source sets.
    #[error("required option [{section}] {option} is not set ({hint})")]
    MissingOption {
        /// Section of the option.
        section: String,
        /// Option name.
        option: String,
        /// Who normally writes it.
        hint: &'static str,
    },
    /// Options that are valid alone but not together.
    #[error("{0}")]
    Conflict(String),
    /// The tenant NIC file is malformed.
    #[error(transparent)]
    TenantNic(#[from] TenantNicError),
    /// Docker's `daemon.json` (where the agent finds Docker's insecure registries) is not
    /// what Docker accepts.
    #[error("{}: {reason}", path.display())]
    DockerDaemonConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line and column for JSON syntax).
        reason: String,
    },
}

/// Where a bad value is: its origin, section and option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionLocation {
    /// Where the value was written.
    pub origin: Origin,
    /// Section (group) of the option.
    pub section: String,
    /// Option name.
    pub option: String,
}

impl OptionLocation {
    /// Boxed, as errors carry it.
    pub fn boxed(origin: Origin, section: &str, option: &str) -> Box<Self> {
        Box::new(Self {
            origin,
            section: section.to_owned(),
            option: option.to_owned(),
        })
    }
}

impl std::fmt::Display for OptionLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [{}] {}", self.origin, self.section, self.option)
    }
}
