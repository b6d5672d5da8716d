//! Configuration for trove-netiso, compatible with what OpenStack Trove writes.

pub mod secret;
pub mod transport_url;

pub use secret::Secret;
pub use transport_url::{TransportHost, TransportUrl, TransportUrlError};
