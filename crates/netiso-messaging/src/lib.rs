#![doc = include_str!("../README.md")]
//! oslo.messaging-compatible RPC over RabbitMQ for the Trove guest, with Trove's serializers.
//!
//! Layers, bottom up: [`netiso_config::pyjson`] (Python's `json.dumps`, shared with the
//! injected-file renderers) and [`envelope`] (wire format), [`crypto`] and [`serializer`]
//! (Trove's encryption), then the AMQP transport, the RPC server and client, and the conductor
//! client.

pub mod client;
pub mod conductor;
pub mod confirm;
pub mod crypto;
pub mod dedup;
mod dispatcher;
pub mod envelope;
pub mod error;
pub mod fleet;
pub mod options;
pub mod serializer;
pub mod server;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tls;
pub mod topology;
pub mod transport;

pub use client::RpcClient;
pub use conductor::{ConductorClient, ServiceStatus};
pub use crypto::InstanceKey;
pub use dispatcher::{Args, Dispatcher, HandlerError};
pub use error::{
    CallError, CryptoError, DispatcherError, EnvelopeError, OptionsError, SerializerError,
    TransportError,
};
pub use fleet::{FleetClient, Guest, GuestResult, Outcome, Sweep, SweepOptions};
pub use options::RabbitOptions;
pub use serializer::{Context, Serializer};
pub use server::{RpcServer, ServerConfig};
pub use tls::TlsError;
pub use topology::Target;
pub use transport::{BrokerConfig, BrokerHost, Transport};
