//! Channels other than the publishing one: opened with a callback that records the broker's
//! reason when it closes them and signals a consumer it cancelled, so that a failed operation
//! can say what the broker refused and a consumer can re-subscribe.

use std::sync::{Arc, Mutex as StdMutex};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{AmqpResult, lock};
use crate::error::TransportError;

/// The broker's reason for closing a channel, kept so that the failed operation can say it.
pub(super) type CloseReason = Arc<StdMutex<Option<String>>>;

/// Turns an amqprs error into ours, naming the broker's close reason when it closed the channel.
pub(super) fn refused_or(
    reason: &CloseReason,
    operation: String,
    err: amqprs::error::Error,
) -> TransportError {
    match lock(reason).clone() {
        Some(reason) => TransportError::Refused { operation, reason },
        None => TransportError::amqp(operation, err),
    }
}

/// Whether the broker closed a channel because the object named does not exist (404).
pub(super) fn is_not_found(close_reason: &str) -> bool {
    close_reason.contains("404") || close_reason.contains("NOT_FOUND")
}

/// Logs broker-initiated closes of consumer channels and cancellations of their consumers
/// (queue deleted, node lost); either way the consumer task then re-subscribes.
struct ConsumerChannelCallback {
    reason: CloseReason,
    cancelled: Arc<Notify>,
}

#[async_trait]
impl ChannelCallback for ConsumerChannelCallback {
    async fn close(&mut self, channel: &Channel, close: CloseChannel) -> AmqpResult<()> {
        warn!(channel = %channel, cause = %close, "broker closed a consumer channel");
        *lock(&self.reason) = Some(close.to_string());
        Ok(())
    }
    async fn cancel(&mut self, channel: &Channel, cancel: Cancel) -> AmqpResult<()> {
        warn!(channel = %channel, consumer = cancel.consumer_tag(), "broker cancelled a consumer, re-subscribing");
        self.cancelled.notify_one();
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> AmqpResult<bool> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, _ack: Ack) {}
    async fn publish_nack(&mut self, _channel: &Channel, _nack: Nack) {}
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// Opens a channel whose broker-side close reason is recorded.
pub(super) async fn open_plain_channel(
    connection: &Connection,
) -> Result<(Channel, CloseReason), TransportError> {
    let (channel, reason, _cancelled) = open_watched_channel(connection).await?;
    Ok((channel, reason))
}

/// Opens a channel whose close reason is recorded and whose consumer cancellations by the
/// broker are signalled.
pub(super) async fn open_watched_channel(
    connection: &Connection,
) -> Result<(Channel, CloseReason, Arc<Notify>), TransportError> {
    let channel = connection
        .open_channel(None)
        .await
        .map_err(|err| TransportError::amqp("channel.open", err))?;
    let reason = CloseReason::default();
    let cancelled = Arc::new(Notify::new());
    channel
        .register_callback(ConsumerChannelCallback {
            reason: Arc::clone(&reason),
            cancelled: Arc::clone(&cancelled),
        })
        .await
        .map_err(|err| TransportError::amqp("channel callback registration", err))?;
    Ok((channel, reason, cancelled))
}

/// Closes a channel that is no longer needed; a failure only matters to the debug log.
///
/// The close runs on a task of its own, which a caller's timeout, `select!` or abort cannot
/// cancel: amqprs 2.1.5's channel dispatcher unwraps the hand-over of `channel.close-ok` to
/// the waiting `close()` and panics when that future was dropped before the answer came,
/// leaving the channel without a dispatcher.
pub(super) async fn close_quietly(channel: Channel) {
    let closing = tokio::spawn(async move {
        if let Err(err) = channel.close().await {
            debug!(error = %err, "closing a channel failed");
        }
    });
    if let Err(err) = closing.await {
        debug!(error = %err, "the task closing a channel ended abnormally");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_error() -> amqprs::error::Error {
        amqprs::error::Error::ChannelUseError("channel closed".into())
    }

    #[test]
    fn a_recorded_close_reason_makes_a_refusal() {
        let reason = CloseReason::default();
        *lock(&reason) = Some("406 PRECONDITION_FAILED - inequivalent arg 'durable'".into());
        let err = refused_or(&reason, "queue.declare q1".into(), channel_error());
        assert!(
            matches!(&err, TransportError::Refused { operation, reason }
                if operation == "queue.declare q1" && reason.starts_with("406")),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "broker refused queue.declare q1: 406 PRECONDITION_FAILED - inequivalent arg 'durable'"
        );
    }

    #[test]
    fn without_a_close_reason_the_amqp_error_is_kept() {
        let err = refused_or(
            &CloseReason::default(),
            "exchange.delete x".into(),
            channel_error(),
        );
        assert!(
            matches!(&err, TransportError::Amqp { operation, .. } if operation == "exchange.delete x"),
            "{err}"
        );
    }

    #[test]
    fn not_found_is_recognised_by_code_or_name() {
        assert!(is_not_found("404 NOT_FOUND - no queue 'q1' in vhost '/'"));
        assert!(is_not_found("NOT_FOUND"));
        assert!(is_not_found("code 404"));
        assert!(!is_not_found("406 PRECONDITION_FAILED"));
        assert!(!is_not_found("403 ACCESS_REFUSED"));
    }
}
