//! Publishing with broker confirms: one confirm-mode channel per connection, exchanges
//! declared once per channel before their first publish, oslo's message properties, and a
//! retry on the next connection when the one in use is lost before the broker's confirm.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, Nack, Return};
use async_trait::async_trait;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::warn;

use super::channel::{CloseReason, close_quietly};
use super::declare::{check_short, declare_exchange};
use super::supervisor::{Link, generation_after_failure};
use super::{AmqpResult, Transport, lock};
use crate::confirm::{ConfirmOutcome, ConfirmTracker};
use crate::error::TransportError;
use crate::topology::ExchangeSpec;

/// How often a publish is retried on a connection that stayed open: a channel the broker
/// keeps closing will not start confirming.
const MAX_SAME_LINK_RETRIES: u32 = 2;

/// How long a failed publish waits before judging whether its connection is still alive, so
/// that a dying connection has a moment to be noticed.
const SETTLE_BEFORE_RETRY: Duration = Duration::from_millis(100);

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Exchange (`""` for the default exchange).
    pub exchange: &'a str,
    /// Declared once per channel before the first publish to it, as oslo does.
    pub declare: Option<&'a ExchangeSpec>,
    /// Routing key.
    pub routing_key: &'a str,
    /// The enveloped body.
    pub body: &'a [u8],
    /// Ask the broker to return the message when it has no route.
    pub mandatory: bool,
    /// Per-message TTL (calls: the call timeout).
    pub expiration_ms: Option<u64>,
}

/// An [`Outgoing`] that owns its data, for the publishing task.
struct OwnedOutgoing {
    exchange: String,
    declare: Option<ExchangeSpec>,
    routing_key: String,
    body: Vec<u8>,
    mandatory: bool,
    expiration_ms: Option<u64>,
}

impl OwnedOutgoing {
    fn new(msg: &Outgoing<'_>) -> Self {
        Self {
            exchange: msg.exchange.to_owned(),
            declare: msg.declare.cloned(),
            routing_key: msg.routing_key.to_owned(),
            body: msg.body.to_vec(),
            mandatory: msg.mandatory,
            expiration_ms: msg.expiration_ms,
        }
    }

    fn borrow(&self) -> Outgoing<'_> {
        Outgoing {
            exchange: &self.exchange,
            declare: self.declare.as_ref(),
            routing_key: &self.routing_key,
            body: &self.body,
            mandatory: self.mandatory,
            expiration_ms: self.expiration_ms,
        }
    }
}

/// Publishes oslo's basic properties (JSON, persistent, priority 0, empty headers).
fn properties(expiration_ms: Option<u64>) -> BasicProperties {
    let mut props = BasicProperties::default();
    props
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_delivery_mode(2)
        .with_priority(0)
        .with_headers(FieldTable::new());
    if let Some(ms) = expiration_ms {
        props.with_expiration(&ms.to_string());
    }
    props.finish()
}

/// Numbers publishing channels across all connections, so that a publish can tell whether
/// the channel that failed it is still the one in use.
static PUBLISH_CHANNELS_OPENED: AtomicU64 = AtomicU64::new(0);

/// The confirm-mode channel of one connection, with its delivery-tag count and the exchanges
/// already declared on it.
pub(super) struct PublishChannel {
    /// This channel's number among [`PUBLISH_CHANNELS_OPENED`].
    serial: u64,
    channel: Channel,
    tracker: Arc<StdMutex<ConfirmTracker>>,
    reason: CloseReason,
    last_tag: u64,
    declared: HashSet<String>,
}

impl Link {
    /// Settles every publish waiting on this connection's confirms as lost, for `reason`.
    pub(super) fn fail_publishes(&self, reason: &str) {
        if let Some(tracker) = lock(&self.publisher_tracker).as_ref() {
            lock(tracker).close(reason);
        }
    }

    async fn open_publisher(&self) -> Result<PublishChannel, TransportError> {
        let channel = self
            .connection
            .open_channel(None)
            .await
            .map_err(|err| TransportError::amqp("channel.open", err))?;
        let tracker = Arc::new(StdMutex::new(ConfirmTracker::default()));
        let reason = CloseReason::default();
        channel
            .register_callback(ConfirmCallback {
                tracker: Arc::clone(&tracker),
                reason: Arc::clone(&reason),
            })
            .await
            .map_err(|err| TransportError::amqp("channel callback registration", err))?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(|err| TransportError::amqp("confirm.select", err))?;
        *lock(&self.publisher_tracker) = Some(Arc::clone(&tracker));
        Ok(PublishChannel {
            serial: PUBLISH_CHANNELS_OPENED.fetch_add(1, Ordering::Relaxed) + 1,
            channel,
            tracker,
            reason,
            last_tag: 0,
            declared: HashSet::new(),
        })
    }

    /// Closes the publishing channel numbered `serial`, if it is still the one in use, so that
    /// the next publish opens a fresh one. Publishes still waiting on its confirms are settled
    /// as lost, which sends them to a retry.
    async fn replace_publisher(&self, serial: u64, reason: &str) {
        let old = {
            let mut guard = self.publisher.lock().await;
            if guard.as_ref().is_none_or(|p| p.serial != serial) {
                return;
            }
            guard.take()
        };
        if let Some(old) = old {
            lock(&old.tracker).close(reason);
            close_quietly(old.channel).await;
        }
    }

    /// Publishes `msg` on this connection's publishing channel and waits for the broker's
    /// settlement; returns it with the number of the channel that carried the message.
    async fn publish(
        &self,
        msg: &Outgoing<'_>,
        confirm_deadline: Instant,
    ) -> Result<(ConfirmOutcome, u64), TransportError> {
        let (receiver, serial) = {
            let mut guard = self.publisher.lock().await;
            let reuse = guard.as_ref().is_some_and(|p| p.channel.is_open());
            if !reuse {
                *guard = Some(self.open_publisher().await?);
            }
            let Some(publisher) = guard.as_mut() else {
                return Err(TransportError::Closed);
            };
            if let Some(spec) = msg.declare
                && !publisher.declared.contains(&spec.name)
            {
                if let Err(err) =
                    declare_exchange(&publisher.channel, &publisher.reason, spec).await
                {
                    *guard = None;
                    return Err(err);
                }
                publisher.declared.insert(spec.name.clone());
            }
            publisher.last_tag += 1;
            let tag = publisher.last_tag;
            let receiver = lock(&publisher.tracker).register(
                tag,
                msg.exchange,
                msg.routing_key,
                msg.mandatory,
            );
            let mut args = BasicPublishArguments::new(msg.exchange, msg.routing_key);
            args.mandatory = msg.mandatory;
            let sent = publisher
                .channel
                .basic_publish(properties(msg.expiration_ms), msg.body.to_vec(), args)
                .await;
            if let Err(err) = sent {
                lock(&publisher.tracker).forget(tag);
                *guard = None;
                return Err(TransportError::amqp("basic.publish", err));
            }
            (receiver, publisher.serial)
        };
        let outcome = match timeout_at(confirm_deadline, receiver).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => ConfirmOutcome::Lost("confirm tracker dropped".into()),
            Err(_) => ConfirmOutcome::Lost("no broker confirm before the deadline".into()),
        };
        Ok((outcome, serial))
    }
}

/// Feeds channel callbacks into the confirm tracker.
struct ConfirmCallback {
    tracker: Arc<StdMutex<ConfirmTracker>>,
    reason: CloseReason,
}

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, channel: &Channel, close: CloseChannel) -> AmqpResult<()> {
        warn!(channel = %channel, cause = %close, "broker closed the publishing channel");
        lock(&self.tracker).close(&format!("channel closed by broker: {close}"));
        *lock(&self.reason) = Some(close.to_string());
        Ok(())
    }
    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> AmqpResult<()> {
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> AmqpResult<bool> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        lock(&self.tracker).ack(ack.delivery_tag(), ack.mutiple());
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        lock(&self.tracker).nack(nack.delivery_tag(), nack.multiple());
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        ret: Return,
        _properties: BasicProperties,
        _content: Vec<u8>,
    ) {
        lock(&self.tracker).returned(
            ret.exchange(),
            ret.routing_key(),
            ret.reply_code(),
            ret.reply_text(),
        );
    }
}

/// What the broker's settlement of `msg` means to the publisher: only an ack is success.
fn settle(outcome: ConfirmOutcome, msg: &Outgoing<'_>) -> Result<(), TransportError> {
    match outcome {
        ConfirmOutcome::Acked => Ok(()),
        ConfirmOutcome::Nacked => Err(TransportError::Nacked {
            exchange: msg.exchange.into(),
            routing_key: msg.routing_key.into(),
        }),
        ConfirmOutcome::Returned { code, text } => Err(TransportError::Returned {
            exchange: msg.exchange.into(),
            routing_key: msg.routing_key.into(),
            code,
            text,
        }),
        ConfirmOutcome::Lost(reason) => Err(TransportError::Unconfirmed {
            exchange: msg.exchange.into(),
            routing_key: msg.routing_key.into(),
            reason,
        }),
    }
}

impl TransportError {
    /// Whether publishing again may succeed: the channel or connection failed, the confirm
    /// never came, or the broker nacked the message. A return or a refusal would only be
    /// repeated.
    ///
    /// A nack is retried on a fresh channel: RabbitMQ 3.10 nacks every message a channel
    /// routes to a quorum queue whose leader was lost just before the channel first used the
    /// queue, for minutes, while a new channel on the same connection delivers to the new
    /// leader at once.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Amqp { .. } | Self::Unconfirmed { .. } | Self::Nacked { .. }
        )
    }
}

/// Counts failed publishes on a connection that stayed open, which a retry cannot outlast.
#[derive(Debug, Default)]
struct SameLinkRetries {
    failures: u32,
}

impl SameLinkRetries {
    /// The generation to publish on next after a failure on generation `generation`, or `None`
    /// to give up: the same connection while it is open, at most
    /// [`MAX_SAME_LINK_RETRIES`] times in a row, else the next connection.
    fn next_generation(&mut self, generation: u64, connection_open: bool) -> Option<u64> {
        if connection_open {
            self.failures += 1;
            if self.failures > MAX_SAME_LINK_RETRIES {
                return None;
            }
        } else {
            self.failures = 0;
        }
        Some(generation_after_failure(generation, connection_open))
    }
}

impl Transport {
    /// Publishes and waits for the broker's confirm. A connection lost before the confirm
    /// means a retry on the next connection (the `_unique_id` lets receivers drop a
    /// duplicate); the whole operation is bounded by `publish_timeout`.
    ///
    /// Cancellation-safe: the publish runs in its own task, so a caller that stops waiting
    /// cannot leave the channel's delivery-tag count out of step with the broker's.
    pub async fn publish(&self, msg: &Outgoing<'_>) -> Result<(), TransportError> {
        check_short(msg.exchange, "exchange name")?;
        check_short(msg.routing_key, "routing key")?;
        let owned = OwnedOutgoing::new(msg);
        let transport = self.clone();
        tokio::spawn(async move { transport.publish_confirmed(&owned.borrow()).await })
            .await
            .unwrap_or_else(|err| {
                Err(TransportError::Unconfirmed {
                    exchange: msg.exchange.into(),
                    routing_key: msg.routing_key.into(),
                    reason: format!("publish task failed: {err}"),
                })
            })
    }

    async fn publish_confirmed(&self, msg: &Outgoing<'_>) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let mut min_generation = 0;
        let mut retries = SameLinkRetries::default();
        loop {
            let link = self.link(deadline, min_generation).await?;
            let (published, serial) = match link.publish(msg, deadline).await {
                Ok((outcome, serial)) => (settle(outcome, msg), Some(serial)),
                Err(err) => (Err(err), None),
            };
            let failure = match published {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if let (TransportError::Nacked { .. }, Some(serial)) = (&failure, serial) {
                link.replace_publisher(serial, "publishing channel replaced after a nack")
                    .await;
            }
            if Instant::now() >= deadline || !failure.is_retryable() {
                return Err(failure);
            }
            sleep(SETTLE_BEFORE_RETRY).await;
            let Some(next) = retries.next_generation(link.generation, link.connection.is_open())
            else {
                return Err(failure);
            };
            min_generation = next;
            warn!(error = %failure, broker = %link.broker, "publish not confirmed, retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Outgoing<'_> {
        Outgoing {
            exchange: "trove",
            declare: None,
            routing_key: "guestagent.abc",
            body,
            mandatory: true,
            expiration_ms: Some(30_000),
        }
    }

    #[test]
    fn properties_are_oslos() {
        let props = properties(None);
        assert_eq!(
            props.content_type().map(String::as_str),
            Some("application/json")
        );
        assert_eq!(props.content_encoding().map(String::as_str), Some("utf-8"));
        assert_eq!(props.delivery_mode(), Some(2), "persistent");
        assert_eq!(props.priority(), Some(0));
        assert_eq!(props.headers(), Some(&FieldTable::new()));
        assert_eq!(props.expiration(), None);
        assert_eq!(
            properties(Some(30_000)).expiration().map(String::as_str),
            Some("30000"),
            "a call's timeout becomes the message TTL in milliseconds"
        );
    }

    #[test]
    fn an_owned_message_borrows_back_the_same_fields() {
        let body = br#"{"oslo.version": "2.0"}"#;
        let spec = ExchangeSpec {
            name: "trove".into(),
            kind: crate::topology::ExchangeKind::Topic,
            durable: false,
            auto_delete: false,
        };
        let msg = Outgoing {
            declare: Some(&spec),
            ..message(body)
        };
        let owned = OwnedOutgoing::new(&msg);
        let back = owned.borrow();
        assert_eq!(back.exchange, msg.exchange);
        assert_eq!(back.routing_key, msg.routing_key);
        assert_eq!(back.body, msg.body);
        assert_eq!(back.mandatory, msg.mandatory);
        assert_eq!(back.expiration_ms, msg.expiration_ms);
        assert_eq!(back.declare, msg.declare);
    }

    #[test]
    fn only_an_ack_settles_a_publish_successfully() {
        let msg = message(b"{}");
        assert!(settle(ConfirmOutcome::Acked, &msg).is_ok());
        assert!(matches!(
            settle(ConfirmOutcome::Nacked, &msg),
            Err(TransportError::Nacked { exchange, routing_key })
                if exchange == "trove" && routing_key == "guestagent.abc"
        ));
        let returned = ConfirmOutcome::Returned {
            code: 312,
            text: "NO_ROUTE".into(),
        };
        assert!(matches!(
            settle(returned, &msg),
            Err(TransportError::Returned { code: 312, text, .. }) if text == "NO_ROUTE"
        ));
        assert!(matches!(
            settle(ConfirmOutcome::Lost("connection to broker lost".into()), &msg),
            Err(TransportError::Unconfirmed { reason, .. }) if reason == "connection to broker lost"
        ));
    }

    #[test]
    fn channel_failures_missing_confirms_and_nacks_are_retried() {
        let msg = message(b"{}");
        let lost = settle(ConfirmOutcome::Lost("gone".into()), &msg).unwrap_err();
        assert!(lost.is_retryable());
        let nacked = settle(ConfirmOutcome::Nacked, &msg).unwrap_err();
        assert!(
            nacked.is_retryable(),
            "a nack is retried on a fresh channel"
        );
        let amqp = TransportError::amqp(
            "basic.publish",
            amqprs::error::Error::ChannelUseError("closed".into()),
        );
        assert!(amqp.is_retryable());
        let refusals = [
            settle(
                ConfirmOutcome::Returned {
                    code: 312,
                    text: "NO_ROUTE".into(),
                },
                &msg,
            )
            .unwrap_err(),
            TransportError::Refused {
                operation: "exchange.declare trove".into(),
                reason: "406 PRECONDITION_FAILED".into(),
            },
            TransportError::Closed,
            TransportError::Config("routing key too long".into()),
        ];
        for err in refusals {
            assert!(!err.is_retryable(), "{err}");
        }
    }

    #[test]
    fn an_open_connection_gets_two_retries_a_lost_one_moves_on() {
        let mut retries = SameLinkRetries::default();
        assert_eq!(retries.next_generation(3, true), Some(3));
        assert_eq!(retries.next_generation(3, true), Some(3));
        assert_eq!(retries.next_generation(3, true), None);

        let mut retries = SameLinkRetries::default();
        assert_eq!(retries.next_generation(3, true), Some(3));
        assert_eq!(retries.next_generation(3, true), Some(3));
        assert_eq!(
            retries.next_generation(3, false),
            Some(4),
            "a new connection"
        );
        assert_eq!(
            retries.next_generation(4, true),
            Some(4),
            "the count restarts"
        );
        assert_eq!(retries.next_generation(4, true), Some(4));
        assert_eq!(retries.next_generation(4, true), None);
    }
}
