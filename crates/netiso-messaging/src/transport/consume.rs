//! Consuming: queues declared and consumed on their own channel with a bounded prefetch, and
//! a task that forwards deliveries and, when the channel, the connection or a consumer is
//! lost (or the broker cancels one), declares and consumes every queue again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage,
    QueueDeleteArguments,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tracing::{error, info, warn};

use super::Transport;
use super::backoff::Backoff;
use super::channel::{close_quietly, open_plain_channel, open_watched_channel};
use super::declare::{declare_consumer, field_table};
use super::supervisor::Link;
use crate::error::TransportError;
use crate::topology::ConsumerSpec;

/// The `basic.qos` prefetch used when `rabbit_qos_prefetch_count` is 0 (oslo's default,
/// meaning no limit). Without a limit the broker pushes a whole queue into the consumer:
/// a flood of casts would grow our memory with the queue. Deliveries are acked as soon as the
/// server has a free work permit, so the prefetch only has to cover one broker round trip at
/// full rate; the worst case held in memory is this many bodies of the broker's maximum
/// message size.
pub const DEFAULT_PREFETCH: u16 = 16;

/// How many deliveries wait for the consumer before forwarding pauses (and with it acks, so
/// the broker's prefetch bounds what is held).
const DELIVERY_BUFFER: usize = 256;

/// How long the re-subscribing task waits for a connection before looking again (it only
/// stops waiting for a stop or a closed transport).
const RESUBSCRIBE_WAIT: Duration = Duration::from_secs(3600);

/// The prefetch asked of the broker: `rabbit_qos_prefetch_count` when set, else
/// [`DEFAULT_PREFETCH`].
fn effective_prefetch(rabbit_qos_prefetch_count: u16) -> u16 {
    match rabbit_qos_prefetch_count {
        0 => DEFAULT_PREFETCH,
        configured => configured,
    }
}

/// A message received by a consumer.
pub struct Delivery {
    /// The raw body.
    pub body: Vec<u8>,
    /// Its content type (oslo requires `application/json`).
    pub content_type: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// True if the broker delivered it before (after a reconnection).
    pub redelivered: bool,
    delivery_tag: u64,
    channel: Channel,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("delivery_tag", &self.delivery_tag)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl Delivery {
    /// Acknowledges the message; oslo acks before processing and never requeues.
    pub async fn ack(&self) -> Result<(), TransportError> {
        self.channel
            .basic_ack(BasicAckArguments::new(self.delivery_tag, false))
            .await
            .map_err(|err| TransportError::amqp("basic.ack", err))
    }
}

/// A running subscription; dropping it stops consuming.
pub struct Consumer {
    /// Deliveries from every consumed queue.
    pub deliveries: mpsc::Receiver<Delivery>,
    stop: watch::Sender<bool>,
    ready: watch::Receiver<u64>,
    task: Option<JoinHandle<()>>,
}

impl Consumer {
    /// Stops consuming, deletes the queues named at creation and closes the channel.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            error!(error = %err, "consumer task failed");
        }
    }

    /// The connection generation on which the consumer was last (re)subscribed.
    pub fn subscribed_generation(&self) -> u64 {
        *self.ready.borrow()
    }

    /// Waits until the consumer is subscribed on a connection newer than `generation`.
    pub async fn wait_resubscribed(&mut self, generation: u64, wait: Duration) -> bool {
        timeout(wait, self.ready.wait_for(|g| *g > generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Transport {
    /// Declares and consumes `specs`; deliveries arrive on the returned consumer, across
    /// reconnections (declarations are repeated on every new connection). The first
    /// declaration happens before this returns, so configuration errors surface here.
    pub async fn consume(
        &self,
        specs: Vec<ConsumerSpec>,
        delete_on_stop: Vec<String>,
    ) -> Result<Consumer, TransportError> {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let link = self.link(deadline, 0).await?;
        let prefetch = effective_prefetch(self.shared.options.rabbit_qos_prefetch_count);
        let first = subscribe(&link, &specs, prefetch).await?;
        let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(link.generation);
        let task = tokio::spawn(consume_loop(ConsumeLoop {
            transport: self.clone(),
            specs,
            prefetch,
            delete_on_stop,
            tx,
            stop: stop_rx,
            ready: ready_tx,
            first: Some((link, first)),
        }));
        Ok(Consumer {
            deliveries: rx,
            stop: stop_tx,
            ready: ready_rx,
            task: Some(task),
        })
    }
}

/// A consuming channel, its consumers' receivers, and the broker-cancellation signal.
struct Subscription {
    channel: Channel,
    receivers: Vec<mpsc::UnboundedReceiver<ConsumerMessage>>,
    cancelled: Arc<Notify>,
}

/// Opens a consuming channel on `link`, sets its prefetch, declares every spec, then
/// consumes every queue with manual acks.
async fn subscribe(
    link: &Link,
    specs: &[ConsumerSpec],
    prefetch: u16,
) -> Result<Subscription, TransportError> {
    let (channel, reason, cancelled) = open_watched_channel(&link.connection).await?;
    if prefetch > 0 {
        channel
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(|err| TransportError::amqp("basic.qos", err))?;
    }
    for spec in specs {
        declare_consumer(&channel, &reason, spec).await?;
    }
    let mut receivers = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut args = BasicConsumeArguments::new(&spec.queue.name, "")
            .manual_ack(true)
            .finish();
        args.arguments = field_table(&spec.consumer_arguments)?;
        let (_tag, receiver) = channel.basic_consume_rx(args).await.map_err(|err| {
            TransportError::amqp(format!("basic.consume {}", spec.queue.name), err)
        })?;
        receivers.push(receiver);
    }
    Ok(Subscription {
        channel,
        receivers,
        cancelled,
    })
}

/// Everything the consuming task owns.
struct ConsumeLoop {
    transport: Transport,
    specs: Vec<ConsumerSpec>,
    prefetch: u16,
    delete_on_stop: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    stop: watch::Receiver<bool>,
    ready: watch::Sender<u64>,
    first: Option<(Arc<Link>, Subscription)>,
}

/// Forwards deliveries of the current subscription; when it is lost, waits for a connection
/// (the same one if still open) and subscribes again, backing off while that fails.
async fn consume_loop(mut state: ConsumeLoop) {
    let mut current = state.first.take();
    let mut min_generation = 0;
    loop {
        if let Some((link, subscription)) = current.take() {
            state.ready.send_replace(link.generation);
            let channel = subscription.channel.clone();
            let stopped = forward(subscription, &state.tx, &mut state.stop).await;
            if stopped {
                // Closing the consuming channel first cancels our consumers, so deleting
                // their queues does not look like a broker-side cancellation.
                close_quietly(channel).await;
                delete_queues(&link, &state.delete_on_stop).await;
                return;
            }
            // A consumer the broker cancelled leaves the channel open with its other
            // consumers: close it, so that every queue is declared and consumed afresh.
            if channel.is_open() {
                close_quietly(channel).await;
            }
            min_generation = link.generation_after_failure();
            warn!(broker = %link.broker, "consumer lost its channel or a consumer, re-subscribing");
        }
        let options = &state.transport.shared.options;
        let mut backoff = Backoff::new(options.rabbit_retry_interval, options.rabbit_interval_max);
        loop {
            let far = Instant::now() + RESUBSCRIBE_WAIT;
            let link = tokio::select! {
                link = state.transport.link(far, min_generation) => link,
                _ = state.stop.wait_for(|s| *s) => return,
            };
            let link = match link {
                Ok(link) => link,
                Err(TransportError::Closed) => return,
                Err(_) => continue,
            };
            match subscribe(&link, &state.specs, state.prefetch).await {
                Ok(subscription) => {
                    info!(broker = %link.broker, generation = link.generation, "consumer re-subscribed");
                    current = Some((link, subscription));
                    break;
                }
                Err(err) => {
                    error!(error = %err, "re-declaring consumers failed, will retry");
                    min_generation = link.generation_after_failure();
                    tokio::select! {
                        () = sleep(backoff.after_failure()) => {}
                        _ = state.stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }
}

/// Deletes queues on a short-lived channel; failures are logged (the queues expire anyway).
async fn delete_queues(link: &Link, queues: &[String]) {
    if queues.is_empty() {
        return;
    }
    let (channel, _reason) = match open_plain_channel(&link.connection).await {
        Ok(opened) => opened,
        Err(err) => {
            warn!(error = %err, ?queues, "could not delete queues on stop");
            return;
        }
    };
    for queue in queues {
        let args = QueueDeleteArguments::new(queue).finish();
        if let Err(err) = channel.queue_delete(args).await {
            warn!(queue, error = %err, "could not delete queue on stop");
        }
    }
    close_quietly(channel).await;
}

/// Forwards deliveries until a stop (true), or until the channel is lost or the broker
/// cancels any of its consumers (false: re-subscribe).
///
/// The merged channel is unbounded but holds at most the prefetch count of messages: the
/// broker sends no more until they are acked, and they are acked only after `tx` took them.
async fn forward(
    subscription: Subscription,
    tx: &mpsc::Sender<Delivery>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Subscription {
        channel,
        receivers,
        cancelled,
    } = subscription;
    let (merged_tx, mut merged_rx) = mpsc::unbounded_channel();
    let mut pumps = Vec::with_capacity(receivers.len());
    for mut receiver in receivers {
        let merged_tx = merged_tx.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                if merged_tx.send(Some(message)).is_err() {
                    return;
                }
            }
            // This consumer ended (cancelled, or its channel closed).
            let _ = merged_tx.send(None);
        }));
    }
    drop(merged_tx);
    let stopped = loop {
        let message = tokio::select! {
            message = merged_rx.recv() => message,
            () = cancelled.notified() => break false,
            _ = stop.wait_for(|s| *s) => break true,
        };
        let Some(Some(message)) = message else {
            break false;
        };
        let Some(deliver) = message.deliver else {
            continue;
        };
        let delivery = Delivery {
            body: message.content.unwrap_or_default(),
            content_type: message
                .basic_properties
                .as_ref()
                .and_then(|p| p.content_type().cloned()),
            routing_key: deliver.routing_key().clone(),
            redelivered: deliver.redelivered(),
            delivery_tag: deliver.delivery_tag(),
            channel: channel.clone(),
        };
        if tx.send(delivery).await.is_err() {
            break true;
        }
    };
    for pump in pumps {
        pump.abort();
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_prefetch_is_bounded_and_a_set_one_is_kept() {
        assert_eq!(effective_prefetch(0), DEFAULT_PREFETCH);
        assert_eq!(effective_prefetch(1), 1);
        assert_eq!(effective_prefetch(64), 64);
        assert_eq!(effective_prefetch(u16::MAX), u16::MAX);
    }
}
