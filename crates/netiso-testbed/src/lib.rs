//! Trove guests to test trove-netiso against, built and torn down by one library that the
//! harness (`netiso-harness`), `cargo xtask vm` (through the harness), the bench and the soak
//! all drive.
//!
//! With the `guests` feature (on by default), two kinds of guest stand behind one interface,
//! `TroveGuest`:
//! - the **simulated guest** (`guest::Guest`): network namespaces and veth pairs on this
//!   machine, the provisioned dockerd or containerd, the agent and the plugin as processes;
//!   quick, and able to inject faults a VM cannot (a full disk, a cut broker node);
//! - the **VM guest** (`vm::VmGuest`): the guest image booted under QEMU with two virtio
//!   NICs on taps in namespaces of its own, cloud-init reading Trove's injected files, and
//!   systemd starting the units as it would on a Trove instance.
//!
//! Either way the harness plays Trove's control plane ([`controller::Controller`]) over real
//! RPC on the provisioned RabbitMQ (`controller::Controller`), and the tenant logs in to the
//! database from a client namespace of its own (`sql::TenantLogin`). Everything a guest
//! creates is removed by drop guards, also when a check fails or the run is interrupted.
//!
//! Always built: [`host`], the system guards (namespaces, veths, child processes, `/proc`),
//! and [`bench_guest`], the bench's guest with a dockerd of its own and both plugins, ours
//! and Trove's, for measuring one against the other without an agent.
//!
//! Errors here are reports for the person running a check, never matched on by a caller,
//! so they are carried as `anyhow` chains with the context of each step: the one library
//! of the workspace that does so, because it is the harness's body, not an API.

pub mod bench_guest;
pub mod host;

#[cfg(feature = "guests")]
pub mod controller;
#[cfg(feature = "guests")]
pub mod guest;
#[cfg(feature = "guests")]
pub mod guest_files;
#[cfg(feature = "guests")]
pub mod image;
#[cfg(feature = "guests")]
pub mod net;
#[cfg(feature = "guests")]
pub mod probes;
#[cfg(feature = "guests")]
pub mod processes;
#[cfg(feature = "guests")]
pub mod report;
#[cfg(feature = "guests")]
pub mod scenarios;
#[cfg(feature = "guests")]
pub mod settings;
#[cfg(feature = "guests")]
pub mod soak;
#[cfg(feature = "guests")]
pub mod sql;
#[cfg(feature = "guests")]
mod trove_guest;
#[cfg(feature = "guests")]
pub mod vm;

#[cfg(feature = "guests")]
pub use trove_guest::{GuestKind, PrepareCast, TenantNic, TroveGuest};
