//! Taking the tenant NIC away from the VM's network namespace.
//!
//! Trove runs `ip link set <nic> down`, logs a warning when that fails and carries on (fails
//! open), leaves the NIC's addresses and routes in place and never notices when the OS brings
//! the NIC back up. Here:
//!
//! - [`plan`] says what must change (tenant addresses, routes through the tenant NIC, the
//!   default route included, link state, `accept_ra`) and what is left alone (every other
//!   interface and its routes). It prints for humans (`--dry-run`).
//! - [`apply`] does it, idempotently, and fails closed: an `Err` means the tenant NIC may still
//!   be reachable and the database must not start.
//! - [`verify`] checks each invariant and reports it; [`baseline`] keeps the management side
//!   as it was when the agent isolated, so that a later `isolate --verify` compares against it.
//! - [`Guard`] watches link, address and route events and re-isolates the NIC whenever it
//!   comes back, gets an address or a route.
//!
//! The NIC is always found by MAC, whatever its current name.

mod apply;
pub mod baseline;
mod error;
mod guard;
pub mod ifupdown;
mod plan;
mod verify;

#[cfg(test)]
mod tests;

pub use apply::{ApplyReport, apply, isolate};
pub use error::IsolationError;
pub use guard::{Guard, GuardOptions, GuardReport};
pub use plan::{Action, IsolationPlan, ManagementBaseline, TenantNicState, WhenAbsent, plan};
pub use verify::{Check, Invariant, VerifyReport, verify};

use std::path::PathBuf;

use netiso_netlink::MacAddress;

/// Which NIC to isolate: its MAC and the file the MAC came from (`/etc/trove/eth1.json`), so
/// that every error can name both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationTarget {
    /// The tenant NIC's MAC address.
    pub mac: MacAddress,
    /// The file the MAC was read from.
    pub source: PathBuf,
}

impl IsolationTarget {
    /// A target for `mac`, read from `source`.
    pub fn new(mac: MacAddress, source: impl Into<PathBuf>) -> Self {
        Self {
            mac,
            source: source.into(),
        }
    }
}
