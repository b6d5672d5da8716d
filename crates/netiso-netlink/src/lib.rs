#![doc = include_str!("../README.md")]
//! rtnetlink and network namespaces for trove-netiso, on `neli`.
//!
//! Everything trove-netiso does to a guest's network (find the tenant NIC by MAC, take it away
//! from the VM, hand it to a container, get it back) goes through this crate:
//!
//! - [`NetlinkHandle`]: an rtnetlink socket bound to one network namespace, implementing
//!   [`Rtnetlink`] (links, addresses, routes, route lookup, `accept_ra`).
//! - [`Rtnetlink`]: the test seam; a recording fake lives in `fake` (feature `test-support`).
//! - [`LinkEvents`]: an async stream of link changes of one namespace.
//! - [`Namespace`]: create, open, delete and list network namespaces (`ip netns` compatible).
//! - [`NetlinkError`]: typed errors (not found, already exists, permission, kernel errno with
//!   the extended-ack message).

mod api;
mod error;
mod events;
mod handle;
mod model;
pub mod netns;
mod wire;

#[cfg(feature = "test-support")]
pub mod fake;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use api::Rtnetlink;
pub use error::{NetlinkError, Result};
pub use events::LinkEvents;
pub use handle::{MAX_IFNAME_LEN, NetlinkHandle};
pub use model::{
    Address, Link, LinkEvent, NamespaceTarget, PROTOCOL_BOOT, PROTOCOL_KERNEL, PROTOCOL_RA, Route,
    RouteSpec, RouteType, Scope, TABLE_LOCAL, TABLE_MAIN, VethSpec,
};
/// The MAC type of the whole project (netiso-config), re-exported because links are found by it.
pub use netiso_config::{MacAddress, MacParseError};
pub use netns::{Namespace, Sandbox};
