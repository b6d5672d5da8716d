//! oslo.messaging-compatible RPC over RabbitMQ for the Trove guest, with Trove's serializers.
//!
//! Layers, bottom up: [`pyjson`] and [`envelope`] (wire format), [`crypto`] and [`serializer`]
//! (Trove's encryption), then the AMQP transport, the RPC server and client, and the conductor
//! client.

pub mod crypto;
pub mod envelope;
pub mod error;
pub mod pyjson;
pub mod serializer;

pub use crypto::InstanceKey;
pub use error::{CallError, CryptoError, EnvelopeError, SerializerError, TransportError};
pub use serializer::{Context, Serializer};
