//! The AMQP transport: one supervised connection with failover over the `transport_url`
//! hosts, capped exponential reconnection backoff, publishing with broker confirms, and
//! consumers that re-declare and resume by themselves after a reconnection.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, ExchangeDeclareArguments, QueueBindArguments,
    QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{
    Ack, BasicProperties, Cancel, Close, CloseChannel, FieldTable, FieldValue, Nack, Return,
};
use async_trait::async_trait;

type AmqpResult<T> = Result<T, amqprs::error::Error>;
use netiso_config::TransportUrl;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{debug, error, info, warn};

use crate::confirm::{ConfirmOutcome, ConfirmTracker};
use crate::error::TransportError;
use crate::options::RabbitOptions;
use crate::tls::TlsClient;
use crate::topology::{ArgValue, ConsumerSpec, ExchangeSpec};

/// kombu's port when the URL names none. oslo.messaging writes it into the URL it gives kombu,
/// so it is 5672 with `ssl` on too (not kombu's TLS default, 5671).
const DEFAULT_PORT: u16 = 5672;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LIVENESS_POLL: Duration = Duration::from_millis(500);
/// AMQP short strings (names, routing keys) are at most 255 bytes; amqprs panics beyond.
const SHORT_STR_MAX: usize = 255;
/// The `basic.qos` prefetch used when `rabbit_qos_prefetch_count` is 0 (oslo's default,
/// meaning no limit). Without a limit the broker pushes a whole queue into the consumer:
/// a flood of casts would grow our memory with the queue. Deliveries are acked as soon as the
/// server has a free work permit, so the prefetch only has to cover one broker round trip at
/// full rate; the worst case held in memory is this many bodies of the broker's maximum
/// message size.
pub const DEFAULT_PREFETCH: u16 = 16;

/// One broker to try.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerHost {
    /// Host name or address.
    pub hostname: String,
    /// AMQP port.
    pub port: u16,
    /// Login.
    pub username: String,
    /// Password (never printed).
    pub password: String,
}

impl fmt::Debug for BrokerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.username, self.hostname, self.port)
    }
}

/// Where the brokers are: the connection-relevant part of a `transport_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Brokers, tried round robin from a random start (oslo shuffles them).
    pub hosts: Vec<BrokerHost>,
    /// Virtual host.
    pub virtual_host: String,
}

impl BrokerConfig {
    /// Takes hosts, credentials and virtual host from a parsed `transport_url`, with oslo's
    /// defaults (port 5672 even over TLS, `guest`/`guest`, vhost `/`).
    pub fn from_transport_url(url: &TransportUrl) -> Result<Self, TransportError> {
        if !matches!(url.scheme.as_str(), "rabbit" | "amqp") {
            return Err(TransportError::Config(format!(
                "transport_url scheme {:?} is not supported (expected rabbit://)",
                url.scheme
            )));
        }
        if url.hosts.is_empty() {
            return Err(TransportError::Config("transport_url names no host".into()));
        }
        let hosts = url
            .hosts
            .iter()
            .map(|host| BrokerHost {
                hostname: host.hostname.clone(),
                port: host.port.unwrap_or(DEFAULT_PORT),
                username: host.username.clone().unwrap_or_else(|| "guest".into()),
                password: host
                    .password
                    .as_ref()
                    .map_or_else(|| "guest".into(), |p| p.expose().to_owned()),
            })
            .collect();
        let virtual_host = match url.virtual_host.as_deref() {
            None | Some("") => "/".to_owned(),
            Some(vhost) => vhost.to_owned(),
        };
        Ok(Self {
            hosts,
            virtual_host,
        })
    }
}

/// State of the supervised connection.
#[derive(Clone)]
enum LinkState {
    Connecting { attempts: u32, last_error: String },
    Up(Arc<Link>),
    Closed,
}

/// One live AMQP connection and its publishing channel.
pub(crate) struct Link {
    generation: u64,
    broker: String,
    connection: Connection,
    publisher: Mutex<Option<PublishChannel>>,
    publisher_tracker: StdMutex<Option<Arc<StdMutex<ConfirmTracker>>>>,
}

struct PublishChannel {
    channel: Channel,
    tracker: Arc<StdMutex<ConfirmTracker>>,
    reason: CloseReason,
    last_tag: u64,
    declared: HashSet<String>,
}

fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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

fn check_short(value: &str, what: &str) -> Result<(), TransportError> {
    if value.len() > SHORT_STR_MAX {
        return Err(TransportError::Config(format!(
            "{what} is {} bytes long, AMQP allows at most {SHORT_STR_MAX}",
            value.len()
        )));
    }
    Ok(())
}

fn field_table(arguments: &[(String, ArgValue)]) -> Result<FieldTable, TransportError> {
    let mut table = FieldTable::new();
    for (name, value) in arguments {
        let key = name
            .as_str()
            .try_into()
            .map_err(|_| TransportError::Config(format!("argument name {name:?} too long")))?;
        let value = match value {
            ArgValue::Int(i) => FieldValue::I(*i),
            ArgValue::Bool(b) => FieldValue::t(*b),
            ArgValue::Str(s) => FieldValue::S(
                s.as_str()
                    .try_into()
                    .map_err(|_| TransportError::Config(format!("argument {name:?} too long")))?,
            ),
        };
        table.insert(key, value);
    }
    Ok(table)
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

/// Declares an exchange with the given flags.
async fn declare_exchange(
    channel: &Channel,
    reason: &CloseReason,
    spec: &ExchangeSpec,
) -> Result<(), TransportError> {
    check_short(&spec.name, "exchange name")?;
    let args = ExchangeDeclareArguments::new(&spec.name, spec.kind.as_str())
        .durable(spec.durable)
        .auto_delete(spec.auto_delete)
        .finish();
    channel
        .exchange_declare(args)
        .await
        .map_err(|err| refused_or(reason, format!("exchange.declare {}", spec.name), err))
}

/// Declares a consumer's exchange, queue and binding.
async fn declare_consumer(
    channel: &Channel,
    reason: &CloseReason,
    spec: &ConsumerSpec,
) -> Result<(), TransportError> {
    check_short(&spec.queue.name, "queue name")?;
    check_short(&spec.routing_key, "routing key")?;
    if let Some(exchange) = &spec.exchange {
        declare_exchange(channel, reason, exchange).await?;
    }
    let args = QueueDeclareArguments::new(&spec.queue.name)
        .durable(spec.queue.durable)
        .auto_delete(spec.queue.auto_delete)
        .exclusive(false)
        .arguments(field_table(&spec.queue.arguments)?)
        .finish();
    channel
        .queue_declare(args)
        .await
        .map_err(|err| refused_or(reason, format!("queue.declare {}", spec.queue.name), err))?;
    if let Some(exchange) = &spec.exchange {
        let bind =
            QueueBindArguments::new(&spec.queue.name, &exchange.name, &spec.routing_key).finish();
        channel.queue_bind(bind).await.map_err(|err| {
            refused_or(
                reason,
                format!("queue.bind {} to {}", spec.queue.name, exchange.name),
                err,
            )
        })?;
    }
    Ok(())
}

impl Link {
    fn fail_publishes(&self, reason: &str) {
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
            channel,
            tracker,
            reason,
            last_tag: 0,
            declared: HashSet::new(),
        })
    }

    async fn publish(
        &self,
        msg: &Outgoing<'_>,
        confirm_deadline: Instant,
    ) -> Result<ConfirmOutcome, TransportError> {
        let receiver = {
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
            receiver
        };
        match timeout_at(confirm_deadline, receiver).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Ok(ConfirmOutcome::Lost("confirm tracker dropped".into())),
            Err(_) => Ok(ConfirmOutcome::Lost(
                "no broker confirm before the deadline".into(),
            )),
        }
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

/// The broker's reason for closing a channel, kept so that the failed operation can say it.
type CloseReason = Arc<StdMutex<Option<String>>>;

/// Turns an amqprs error into ours, naming the broker's close reason when it closed the channel.
fn refused_or(
    reason: &CloseReason,
    operation: String,
    err: amqprs::error::Error,
) -> TransportError {
    match lock(reason).clone() {
        Some(reason) => TransportError::Refused { operation, reason },
        None => TransportError::amqp(operation, err),
    }
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

/// Wakes the supervisor when the broker closes the connection.
struct LossCallback {
    lost: Arc<Notify>,
}

#[async_trait]
impl ConnectionCallback for LossCallback {
    async fn close(&mut self, connection: &Connection, close: Close) -> AmqpResult<()> {
        warn!(connection = %connection, cause = %close, "broker closed the connection");
        self.lost.notify_one();
        Ok(())
    }
    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        warn!(%reason, "broker blocked publishing on this connection");
    }
    async fn unblocked(&mut self, _connection: &Connection) {
        info!("broker unblocked publishing");
    }
    async fn secret_updated(&mut self, _connection: &Connection) {}
}

struct Shared {
    config: BrokerConfig,
    options: RabbitOptions,
    state: watch::Receiver<LinkState>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A supervised connection to the broker, shared by servers and clients (cheap to clone).
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("hosts", &self.shared.config.hosts)
            .field("virtual_host", &self.shared.config.virtual_host)
            .finish()
    }
}

impl Transport {
    /// Starts the connection supervisor and waits (up to `wait`) for the first connection.
    pub async fn connect(
        config: BrokerConfig,
        options: RabbitOptions,
        wait: Duration,
    ) -> Result<Self, TransportError> {
        let transport = Self::start(config, options)?;
        transport.link(Instant::now() + wait, 0).await?;
        Ok(transport)
    }

    /// Starts the connection supervisor without waiting; operations wait for a connection.
    ///
    /// With `ssl` on, the TLS files are loaded here: a setting that cannot be honoured is
    /// [`TransportError::Tls`], never a plaintext connection.
    pub fn start(config: BrokerConfig, options: RabbitOptions) -> Result<Self, TransportError> {
        options.validate().map_err(TransportError::Options)?;
        if config.hosts.is_empty() {
            return Err(TransportError::Config("no broker host configured".into()));
        }
        let tls = TlsClient::new(&options.tls)?;
        if tls.is_some() && config.hosts.iter().any(|h| h.port == DEFAULT_PORT) {
            warn!(
                "ssl is on and a broker port is {DEFAULT_PORT} (oslo's port when transport_url \
                 names none): RabbitMQ's TLS listener is usually on 5671"
            );
        }
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting {
            attempts: 0,
            last_error: "not connected yet".into(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(supervise(
            config.clone(),
            options.clone(),
            tls,
            state_tx,
            shutdown_rx,
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                options,
                state: state_rx,
                shutdown: shutdown_tx,
            }),
        })
    }

    /// The options this transport declares with.
    pub fn options(&self) -> &RabbitOptions {
        &self.shared.options
    }

    /// Closes the connection; later operations fail with [`TransportError::Closed`].
    pub fn close(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.shared.state.borrow(), LinkState::Up(link) if link.connection.is_open())
    }

    /// Waits for a live connection whose generation is at least `min_generation`.
    pub(crate) async fn link(
        &self,
        deadline: Instant,
        min_generation: u64,
    ) -> Result<Arc<Link>, TransportError> {
        let mut state = self.shared.state.clone();
        loop {
            let unreachable = match &*state.borrow_and_update() {
                LinkState::Up(link) if link.generation >= min_generation => {
                    return Ok(Arc::clone(link));
                }
                LinkState::Closed => return Err(TransportError::Closed),
                LinkState::Up(_) => TransportError::Unreachable {
                    attempts: 0,
                    last_error: "waiting for a reconnection".into(),
                },
                LinkState::Connecting {
                    attempts,
                    last_error,
                } => TransportError::Unreachable {
                    attempts: *attempts,
                    last_error: last_error.clone(),
                },
            };
            match timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => return Err(unreachable),
            }
        }
    }

    /// Publishes and waits for the broker's confirm. A connection lost before the confirm
    /// means a retry on the next connection (the `_unique_id` lets receivers drop a
    /// duplicate); the whole operation is bounded by `publish_timeout`.
    ///
    /// Cancellation-safe: the publish runs in its own task, so a caller that stops waiting
    /// cannot leave the channel's delivery-tag count out of step with the broker's.
    pub async fn publish(&self, msg: &Outgoing<'_>) -> Result<(), TransportError> {
        check_short(msg.exchange, "exchange name")?;
        check_short(msg.routing_key, "routing key")?;
        let owned = OwnedOutgoing {
            exchange: msg.exchange.to_owned(),
            declare: msg.declare.cloned(),
            routing_key: msg.routing_key.to_owned(),
            body: msg.body.to_vec(),
            mandatory: msg.mandatory,
            expiration_ms: msg.expiration_ms,
        };
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
        let mut same_link_failures = 0;
        loop {
            let link = self.link(deadline, min_generation).await?;
            let failure = match link.publish(msg, deadline).await {
                Ok(ConfirmOutcome::Acked) => return Ok(()),
                Ok(ConfirmOutcome::Nacked) => {
                    return Err(TransportError::Nacked {
                        exchange: msg.exchange.into(),
                        routing_key: msg.routing_key.into(),
                    });
                }
                Ok(ConfirmOutcome::Returned { code, text }) => {
                    return Err(TransportError::Returned {
                        exchange: msg.exchange.into(),
                        routing_key: msg.routing_key.into(),
                        code,
                        text,
                    });
                }
                Ok(ConfirmOutcome::Lost(reason)) => TransportError::Unconfirmed {
                    exchange: msg.exchange.into(),
                    routing_key: msg.routing_key.into(),
                    reason,
                },
                Err(err) => err,
            };
            if Instant::now() >= deadline || !failure.is_retryable() {
                return Err(failure);
            }
            // Give a dying connection a moment to be noticed before judging it alive.
            sleep(Duration::from_millis(100)).await;
            if link.connection.is_open() {
                same_link_failures += 1;
                if same_link_failures > 2 {
                    return Err(failure);
                }
                min_generation = link.generation;
            } else {
                same_link_failures = 0;
                min_generation = link.generation + 1;
            }
            warn!(error = %failure, broker = %link.broker, "publish not confirmed, retrying");
        }
    }

    /// Declares consumers' exchanges, queues and bindings without consuming (tests, tools).
    pub async fn declare(&self, specs: &[ConsumerSpec]) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        for spec in specs {
            declare_consumer(&channel, &reason, spec).await?;
        }
        close_quietly(channel).await;
        Ok(())
    }

    /// Whether a queue exists (a passive declaration; the broker answers 404 when it does not).
    pub async fn queue_exists(&self, name: &str) -> Result<bool, TransportError> {
        check_short(name, "queue name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        let args = QueueDeclareArguments::new(name).passive(true).finish();
        match channel.queue_declare(args).await {
            Ok(_) => {
                close_quietly(channel).await;
                Ok(true)
            }
            Err(err) => match lock(&reason).clone() {
                Some(reason) if reason.contains("404") || reason.contains("NOT_FOUND") => Ok(false),
                _ => Err(refused_or(
                    &reason,
                    format!("passive queue.declare {name}"),
                    err,
                )),
            },
        }
    }

    /// Deletes a queue (cleanup of test or fanout queues).
    pub async fn delete_queue(&self, name: &str) -> Result<(), TransportError> {
        check_short(name, "queue name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        channel
            .queue_delete(QueueDeleteArguments::new(name).finish())
            .await
            .map_err(|err| refused_or(&reason, format!("queue.delete {name}"), err))?;
        close_quietly(channel).await;
        Ok(())
    }

    /// Deletes an exchange (cleanup).
    pub async fn delete_exchange(&self, name: &str) -> Result<(), TransportError> {
        check_short(name, "exchange name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        channel
            .exchange_delete(amqprs::channel::ExchangeDeleteArguments::new(name).finish())
            .await
            .map_err(|err| refused_or(&reason, format!("exchange.delete {name}"), err))?;
        close_quietly(channel).await;
        Ok(())
    }

    async fn scratch_channel(
        &self,
        deadline: Instant,
    ) -> Result<(Channel, CloseReason), TransportError> {
        let link = self.link(deadline, 0).await?;
        open_plain_channel(&link.connection).await
    }

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
        let prefetch = match self.shared.options.rabbit_qos_prefetch_count {
            0 => DEFAULT_PREFETCH,
            configured => configured,
        };
        let first = subscribe(&link, &specs, prefetch).await?;
        let (tx, rx) = mpsc::channel(256);
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

impl TransportError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Amqp { .. } | Self::Unconfirmed { .. })
    }
}

async fn close_quietly(channel: Channel) {
    if let Err(err) = channel.close().await {
        debug!(error = %err, "closing a channel failed");
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

/// Opens a channel whose broker-side close reason is recorded.
async fn open_plain_channel(
    connection: &Connection,
) -> Result<(Channel, CloseReason), TransportError> {
    let (channel, reason, _cancelled) = open_watched_channel(connection).await?;
    Ok((channel, reason))
}

/// Opens a channel whose close reason is recorded and whose consumer cancellations by the
/// broker are signalled.
async fn open_watched_channel(
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

/// A consuming channel, its consumers' receivers, and the broker-cancellation signal.
struct Subscription {
    channel: Channel,
    receivers: Vec<mpsc::UnboundedReceiver<ConsumerMessage>>,
    cancelled: Arc<Notify>,
}

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
            min_generation = if link.connection.is_open() {
                link.generation
            } else {
                link.generation + 1
            };
            warn!(broker = %link.broker, "consumer lost its channel or a consumer, re-subscribing");
        }
        let mut delay = state.transport.shared.options.rabbit_retry_interval;
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
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
                    min_generation = if link.connection.is_open() {
                        link.generation
                    } else {
                        link.generation + 1
                    };
                    tokio::select! {
                        () = sleep(delay) => {}
                        _ = state.stop.wait_for(|s| *s) => return,
                    }
                    delay = (delay * 2).min(state.transport.shared.options.rabbit_interval_max);
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

fn connection_name() -> String {
    let program = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "netiso".into());
    format!("{program}:{}:{}", std::process::id(), uuid::Uuid::new_v4())
}

/// Opens one connection, over TLS when configured: the certificate must name `host`.
async fn open_connection(
    host: &BrokerHost,
    config: &BrokerConfig,
    options: &RabbitOptions,
    tls: Option<&TlsClient>,
) -> Result<Connection, String> {
    let mut args =
        OpenConnectionArguments::new(&host.hostname, host.port, &host.username, &host.password)
            .virtual_host(&config.virtual_host)
            .heartbeat(options.heartbeat_timeout_threshold)
            .connection_name(&connection_name())
            .finish();
    if let Some(tls) = tls {
        args.tls_adaptor(tls.adaptor(&host.hostname));
    }
    let failed = |err: String| match tls {
        Some(tls) => match tls.take_failure() {
            Some(reason) => format!("TLS handshake failed: {reason}"),
            None => format!("{err} (connecting over TLS)"),
        },
        None => err,
    };
    match timeout(CONNECT_TIMEOUT, Connection::open(&args)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(failed(err.to_string())),
        Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Keeps one connection up: connects round robin with capped exponential backoff, publishes
/// it, waits for its loss, fails its unconfirmed publishes, and starts over.
async fn supervise(
    config: BrokerConfig,
    options: RabbitOptions,
    tls: Option<TlsClient>,
    state: watch::Sender<LinkState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let hosts = config.hosts.len();
    let mut index = usize::try_from(getrandom::u32().unwrap_or(0)).unwrap_or(0) % hosts;
    let mut attempts: u32 = 0;
    let mut generation: u64 = 0;
    let mut delay = options.rabbit_retry_interval;
    while !*shutdown.borrow() {
        let host = &config.hosts[index % hosts];
        index = index.wrapping_add(1);
        let connection = match open_connection(host, &config, &options, tls.as_ref()).await {
            Ok(connection) => connection,
            Err(err) => {
                attempts = attempts.saturating_add(1);
                warn!(broker = ?host, error = %err, attempts, retry_in = ?delay, "cannot connect to broker");
                state.send_replace(LinkState::Connecting {
                    attempts,
                    last_error: format!("{host:?}: {err}"),
                });
                tokio::select! {
                    () = sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                delay = (delay * 2).min(options.rabbit_interval_max);
                continue;
            }
        };
        attempts = 0;
        delay = options.rabbit_retry_interval;
        generation += 1;
        let lost = Arc::new(Notify::new());
        if let Err(err) = connection
            .register_callback(LossCallback {
                lost: Arc::clone(&lost),
            })
            .await
        {
            warn!(error = %err, "cannot register connection callback");
        }
        let watcher = connection.clone();
        let io_lost = Arc::clone(&lost);
        let io_task = tokio::spawn(async move {
            watcher.listen_network_io_failure().await;
            io_lost.notify_one();
        });
        let link = Arc::new(Link {
            generation,
            broker: format!("{host:?}"),
            connection: connection.clone(),
            publisher: Mutex::new(None),
            publisher_tracker: StdMutex::new(None),
        });
        info!(broker = ?host, vhost = %config.virtual_host, generation, tls = tls.is_some(), "connected to broker");
        state.send_replace(LinkState::Up(Arc::clone(&link)));
        let shutting_down = loop {
            tokio::select! {
                () = lost.notified() => break false,
                () = sleep(LIVENESS_POLL) => if !connection.is_open() { break false },
                _ = shutdown.wait_for(|s| *s) => break true,
            }
        };
        io_task.abort();
        if shutting_down {
            state.send_replace(LinkState::Closed);
            link.fail_publishes("transport closed");
            if let Err(err) = connection.close().await {
                debug!(error = %err, "closing the connection failed");
            }
            return;
        }
        state.send_replace(LinkState::Connecting {
            attempts: 0,
            last_error: format!("connection to {host:?} lost"),
        });
        link.fail_publishes("connection to broker lost");
        warn!(broker = ?host, "connection to broker lost, reconnecting");
        tokio::select! {
            () = sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    state.send_replace(LinkState::Closed);
}
