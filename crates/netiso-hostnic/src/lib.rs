#![doc = include_str!("../README.md")]
//! The `docker-hostnic` libnetwork remote network driver.
//!
//! With network isolation, the Trove database container gets the VM's tenant NIC itself: the
//! guest agent creates a Docker network with this driver and `-o hostnic_mac=<MAC>`, and on
//! `Join` the driver names the host link with that MAC so dockerd moves it into the container.
//! Wire- and file-compatible with Trove's Python plugin, but crash-safe (atomic state), precise
//! in its errors, IPv6-aware and race-free on the IPv6 default route (see [`driver`]).
//!
//! Layers: [`protocol`] (pure decoding and answers), [`driver`] (behaviour), [`state`] (the state
//! file), [`NicLocator`] (finding links by MAC) and [`server`] (hyper over a unix socket).
//! [`parse_nic_mac`] holds the plugin's MAC rules; `eth1.json` and the MAC type are netiso-config's
//! ([`netiso_config::tenant_nic`]).

pub mod driver;
mod locator;
mod mac;
pub mod protocol;
pub mod server;
pub mod state;
mod write_deadline;

pub use driver::{Driver, DriverError};
pub use locator::{DEFAULT_MAX_SANDBOXES, LocateError, NetnsNicLocator, NicLocator};
pub use mac::{MacParseError, parse_nic_mac};
pub use netiso_config::tenant_nic::MacAddress;
pub use protocol::{DockerIdError, ProtocolError, Request, Response, decode_request};
pub use server::{
    PluginSocket, ServeLimits, ServerError, serve, serve_with_limits, termination_signal,
};
pub use state::{StateError, StateFileError, StateStore};
