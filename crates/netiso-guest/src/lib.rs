#![doc = include_str!("../README.md")]
//! Guest-side orchestration of trove-netiso.
//!
//! [`isolation`] takes the tenant NIC away from the VM at start-up, fail-closed, and keeps it
//! away ([`isolation::Guard`]) when the OS or Docker brings it back.

pub mod agent;
pub(crate) mod gate;
pub mod injected;
pub mod isolation;
pub mod mysql;
pub mod netns_report;
pub mod preflight;
pub mod rpc;
pub mod volume;
