//! One error type for every rtnetlink and namespace operation, so callers can tell
//! "not there" and "already there" apart from real kernel failures.

use std::path::PathBuf;

/// What went wrong talking to the kernel or handling a namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The object (link, address, route, namespace) does not exist (ENOENT, ENODEV, ESRCH).
    #[error("{operation}: not found{}", detail(.message))]
    NotFound {
        /// The operation and its object, e.g. `delete route 10.0.0.0/8`.
        operation: String,
        /// The kernel's extended-ack text, when it gave one.
        message: Option<String>,
    },
    /// The object already exists (EEXIST).
    #[error("{operation}: already exists{}", detail(.message))]
    AlreadyExists {
        /// The operation and its object.
        operation: String,
        /// The kernel's extended-ack text, when it gave one.
        message: Option<String>,
    },
    /// The caller lacks the privilege (EPERM, EACCES): not root or missing CAP_NET_ADMIN.
    #[error("{operation}: permission denied (run as root or with CAP_NET_ADMIN){}", detail(.message))]
    Permission {
        /// The operation and its object.
        operation: String,
        /// The kernel's extended-ack text, when it gave one.
        message: Option<String>,
    },
    /// Any other error the kernel answered with.
    #[error("{operation}: kernel error {errno} ({}){}", std::io::Error::from_raw_os_error(*.errno), detail(.message))]
    Kernel {
        /// The operation and its object.
        operation: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack text, when it gave one.
        message: Option<String>,
    },
    /// The netlink socket itself failed (create, send, receive).
    #[error("{operation}: netlink socket: {source}")]
    Socket {
        /// The operation that was under way.
        operation: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The kernel's answer could not be decoded or a request could not be encoded.
    #[error("{operation}: malformed netlink message: {reason}")]
    Protocol {
        /// The operation that was under way.
        operation: String,
        /// What did not fit.
        reason: String,
    },
    /// A namespace or sysctl file could not be opened, mounted or written.
    #[error("{operation} {}: {source}", .path.display())]
    Io {
        /// The operation that was under way.
        operation: String,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An argument was refused before reaching the kernel (bad name, bad MAC...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn detail(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

impl NetlinkError {
    /// Builds the typed error for a kernel errno (positive).
    pub fn from_errno(operation: impl Into<String>, errno: i32, message: Option<String>) -> Self {
        let operation = operation.into();
        match errno {
            libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL => {
                Self::NotFound { operation, message }
            }
            libc::EEXIST => Self::AlreadyExists { operation, message },
            libc::EPERM | libc::EACCES => Self::Permission { operation, message },
            errno => Self::Kernel {
                operation,
                errno,
                message,
            },
        }
    }

    /// Builds the typed error for an I/O error on a file (namespace, sysctl).
    pub fn io(
        operation: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        let operation = operation.into();
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Self::Permission {
                operation: format!("{operation} {}", path.display()),
                message: Some(source.to_string()),
            },
            Some(libc::ENOENT) => Self::NotFound {
                operation: format!("{operation} {}", path.display()),
                message: None,
            },
            Some(libc::EEXIST) => Self::AlreadyExists {
                operation: format!("{operation} {}", path.display()),
                message: None,
            },
            _ => Self::Io {
                operation,
                path,
                source,
            },
        }
    }

    /// The errno behind this error, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Socket { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True for [`NetlinkError::NotFound`]: lets idempotent callers treat "already gone" as done.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for [`NetlinkError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_typed_variants() {
        assert!(NetlinkError::from_errno("x", libc::ENODEV, None).is_not_found());
        assert!(NetlinkError::from_errno("x", libc::EEXIST, None).is_already_exists());
        assert!(matches!(
            NetlinkError::from_errno("x", libc::EPERM, None),
            NetlinkError::Permission { .. }
        ));
        let e = NetlinkError::from_errno(
            "add route",
            libc::ENETUNREACH,
            Some("Nexthop has invalid gateway".into()),
        );
        assert_eq!(e.errno(), Some(libc::ENETUNREACH));
        let text = e.to_string();
        assert!(text.contains("add route"), "{text}");
        assert!(text.contains("Nexthop has invalid gateway"), "{text}");
    }
}
