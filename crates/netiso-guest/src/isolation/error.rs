//! Errors of the isolation step; each names the MAC and the file it came from.

use std::path::PathBuf;

use netiso_netlink::{MacAddress, NetlinkError};

use super::VerifyReport;

/// Why the tenant NIC could not be isolated. Any of these means: do not start the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    /// No link in the VM's namespace has the tenant MAC.
    #[error(
        "no network interface has MAC {mac} (tenant NIC from {}): cannot isolate it",
        file.display()
    )]
    NicNotFound {
        /// The MAC that was looked for.
        mac: MacAddress,
        /// The file it came from.
        file: PathBuf,
    },
    /// A netlink or sysctl step failed.
    #[error("isolating tenant NIC {mac} (from {}): {step}: {error}", file.display())]
    Netlink {
        /// The tenant MAC.
        mac: MacAddress,
        /// The file it came from.
        file: PathBuf,
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        error: NetlinkError,
    },
    /// Every step ran but the invariants still do not hold.
    #[error("tenant NIC {mac} (from {}) is not isolated after apply:\n{report}", file.display())]
    NotIsolated {
        /// The tenant MAC.
        mac: MacAddress,
        /// The file it came from.
        file: PathBuf,
        /// The failed verification.
        report: VerifyReport,
    },
}
