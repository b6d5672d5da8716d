//! Error types of the messaging crate, one enum per concern so callers can match on what failed.

use thiserror::Error;

/// Why an incoming body could not be turned into an oslo.messaging message.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is not UTF-8 JSON.
    #[error("message body is not valid JSON: {0}")]
    NotJson(String),
    /// The body (or the enveloped message) is JSON but not an object.
    #[error("message body is not a JSON object")]
    NotAnObject,
    /// The envelope names a version this peer does not speak.
    #[error("unsupported envelope version {0:?} (expected 2.x with minor 0)")]
    UnsupportedVersion(String),
    /// `oslo.message` is not a string holding a JSON object.
    #[error("oslo.message is not a string holding a JSON object: {0}")]
    BadInnerMessage(String),
    /// A required field is missing or has the wrong type.
    #[error("field {field:?} is missing or invalid: {reason}")]
    BadField {
        /// The field's key in the message.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why a Trove ciphertext could not be produced or read.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The instance key is not the 32 alphanumeric characters Trove generates.
    #[error("instance_rpc_encr_key must be 32 ASCII alphanumeric characters")]
    BadKey,
    /// The text is not base64.
    #[error("ciphertext is not base64: {0}")]
    NotBase64(String),
    /// The decoded bytes are not an IV followed by whole AES blocks.
    #[error("ciphertext has {0} bytes, expected a 16-byte IV and a positive multiple of 16")]
    BadLength(usize),
    /// Decryption produced something that is not UTF-8 JSON (wrong key or corrupt data).
    #[error("decrypted payload is not JSON (wrong key?): {0}")]
    NotJson(String),
    /// The PKCS#7 padding is malformed (strict decryption of received requests only).
    #[error("ciphertext padding is malformed (wrong key?)")]
    BadPadding,
    /// A ciphertext was expected but a non-string JSON value was found.
    #[error("expected an encrypted string, found {0}")]
    NotAString(&'static str),
}

/// Why a message could not be (de)serialized through Trove's serializers.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerializerError {
    /// The encrypted context key is missing although a key is configured.
    #[error("message has no {0:?} key although secure RPC is on")]
    MissingContext(&'static str),
    /// Decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The conductor wrapping is malformed.
    #[error("conductor entity is malformed: {0}")]
    BadConductorEntity(String),
    /// The context is not a JSON object.
    #[error("decrypted context is not a JSON object")]
    ContextNotAnObject,
}

/// Errors of the AMQP transport: connecting, declaring, publishing with confirms.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport configuration is unusable (no hosts, bad URL ...).
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// No broker could be reached before the deadline.
    #[error("could not connect to any broker ({attempts} attempts), last error: {last_error}")]
    Unreachable {
        /// How many connection attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last_error: String,
    },
    /// An AMQP operation failed.
    #[error("AMQP {operation} failed: {source}")]
    Amqp {
        /// What was being done.
        operation: String,
        /// The amqprs error.
        #[source]
        source: amqprs::error::Error,
    },
    /// The broker closed the channel because it refused an operation (e.g. 406
    /// PRECONDITION_FAILED for a declaration inequivalent to an existing one).
    #[error("broker refused {operation}: {reason}")]
    Refused {
        /// What was being done.
        operation: String,
        /// The broker's close code and text.
        reason: String,
    },
    /// The broker refused a published message (basic.nack).
    #[error("broker nacked the message published to {exchange:?}/{routing_key:?}")]
    Nacked {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// A mandatory message could not be routed (basic.return).
    #[error("message to {exchange:?}/{routing_key:?} was returned: {code} {text}")]
    Returned {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The channel or connection went away before the broker confirmed the message.
    #[error("publish to {exchange:?}/{routing_key:?} not confirmed: {reason}")]
    Unconfirmed {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// Why no confirmation will come.
        reason: String,
    },
    /// The transport was shut down.
    #[error("transport is closed")]
    Closed,
    /// Invalid options for the declarations.
    #[error("invalid [oslo_messaging_rabbit] options: {0}")]
    Options(#[from] OptionsError),
    /// The TLS settings cannot be honoured (the message names the option and its file).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl TransportError {
    /// Wraps an amqprs error with the name of the failed operation.
    pub(crate) fn amqp(operation: impl Into<String>, source: amqprs::error::Error) -> Self {
        Self::Amqp {
            operation: operation.into(),
            source,
        }
    }
}

/// Why `[oslo_messaging_rabbit]` options (or the `transport_url` query overriding them)
/// cannot be used. Every message names the option; query values are quoted because they are
/// never secrets (the password is in the URL's user part, not its query).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// Quorum queues (`rabbit_quorum_queue` or `rabbit_transient_quorum_queue`) and
    /// `rabbit_ha_queues` are both on; oslo refuses the combination too.
    #[error(
        "{quorum_option} and rabbit_ha_queues both enabled: a queue is quorum or HA (mirrored), \
         not both"
    )]
    QuorumWithHa {
        /// The quorum option that is on (`rabbit_quorum_queue` when both are).
        quorum_option: &'static str,
    },
    /// `rabbit_retry_interval` is zero: reconnection would spin.
    #[error("rabbit_retry_interval must be positive")]
    RetryIntervalNotPositive,
    /// A query option that takes a boolean has another value.
    #[error("transport_url option {option}={value:?} is not a boolean")]
    NotABoolean {
        /// The option's name.
        option: String,
        /// The value given.
        value: String,
    },
    /// A query option that takes a count has another value.
    #[error("transport_url option {option}={value:?} is not a whole number")]
    NotAWholeNumber {
        /// The option's name.
        option: String,
        /// The value given.
        value: String,
    },
    /// A query option that takes seconds has another value (or a negative one).
    #[error("transport_url option {option}={value:?} is not a number of seconds")]
    NotSeconds {
        /// The option's name.
        option: String,
        /// The value given.
        value: String,
    },
    /// A count beyond what the option's AMQP field can carry.
    #[error("transport_url option {option}={value:?} is too large")]
    TooLarge {
        /// The option's name.
        option: String,
        /// The value given.
        value: String,
    },
    /// `ssl_version` names no version oslo accepts.
    #[error("transport_url option {option}: {source}")]
    BadValue {
        /// The option's name.
        option: String,
        /// What is wrong with its value.
        #[source]
        source: netiso_config::value::ValueError,
    },
}

/// Why a [`crate::Dispatcher`] cannot be made.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatcherError {
    /// The endpoint version is not numeric `major.minor[.revision]`.
    #[error("bad endpoint version {version:?} (expected major.minor[.revision], e.g. \"1.3\")")]
    BadVersion {
        /// The version given.
        version: String,
    },
}

/// Errors seen by an RPC caller.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be published or the reply queue not set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No reply arrived in time.
    #[error("no reply to {method:?} within {timeout_ms} ms")]
    Timeout {
        /// The called method.
        method: String,
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// The server answered with a failure.
    #[error("remote {module}.{class}: {message}")]
    Remote {
        /// Exception class name.
        class: String,
        /// Exception module.
        module: String,
        /// Exception message.
        message: String,
    },
    /// The reply could not be read.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The request could not be serialized.
    #[error(transparent)]
    Serializer(#[from] SerializerError),
}
