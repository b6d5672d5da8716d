//! The RPC server: consumes a target's queues, acks before dispatch, admits only requests
//! that authenticate and were not seen before, runs handlers with bounded concurrency and
//! replies to calls only.
//!
//! Bounds: a delivery is taken from the consumer (and acked) only once a work permit is free,
//! so at most `max_concurrency` requests are in flight and at most the consumer's prefetch
//! wait unacked at the broker's side of the agent; bodies above `max_message_bytes` are
//! refused unread; a reply whose queue is missing gives its permit back at once and is retried
//! in the background by at most [`REPLY_RETRY_SLOTS`] tasks.
//!
//! Refusals (unreadable, too large, not decrypting, replayed) never run a handler. A call
//! gets a failure reply naming the kind of refusal, and the log a line naming the method and
//! the kind, never a value: arguments carry passwords.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing::{debug, error, info, warn};

use crate::crypto::uuid4_hex;
use crate::dedup::ReplayFilter;
use crate::dispatcher::{Args, Dispatcher, GUEST_MODULE, Handler, Resolution};
use crate::envelope::{self, RemoteFailure, Reply, Request, printable};
use crate::error::{SerializerError, TransportError};
use crate::serializer::{Context, Serializer};
use crate::topology::{Target, Topology};
use crate::transport::{Consumer, Delivery, Outgoing, Transport};

const REPLY_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Replies retried in the background while their reply queue is missing. Beyond this, a
/// reply that cannot be delivered at once is dropped (its caller times out, as it would if
/// its queue never came back).
pub const REPLY_RETRY_SLOTS: usize = 16;
/// Default largest body read: far above any Trove guest request (a `prepare` with users,
/// databases and a configuration is a few KiB) and far below RabbitMQ's own limit (128 MiB
/// by default in 3.x, 16 MiB in 4.x), so one message cannot make the agent parse and decrypt
/// megabytes of JSON.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Default requests in flight at once: oslo's `executor_thread_pool_size`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Failure class of refused requests (module `trove_guest`: Trove's API shows the message).
pub const REFUSED_CLASS: &str = "MessageDecodeError";
/// Refusals logged one by one per [`REFUSAL_LOG_PERIOD`]; beyond that they are counted and
/// the count logged once per period, so that a flood of hostile messages cannot fill the log.
const REFUSALS_LOGGED_PER_PERIOD: u32 = 20;
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What an RPC server serves. Built with [`ServerConfig::new`] (oslo's defaults for the
/// limits), so that a later limit does not break callers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The control exchange (`[DEFAULT] control_exchange`, `trove` for guests).
    pub exchange: String,
    /// Topic, server and implemented version.
    pub target: Target,
    /// How arguments, results and the context are encoded.
    pub serializer: Serializer,
    /// Requests in flight at once (oslo's `executor_thread_pool_size` is 64); the next
    /// delivery is taken only when one finishes.
    pub max_concurrency: usize,
    /// Largest body read; larger ones are refused unread ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
}

impl ServerConfig {
    /// Serves `target` on `exchange` with `serializer`, at most [`DEFAULT_MAX_CONCURRENCY`]
    /// requests at once and bodies up to [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub fn new(exchange: impl Into<String>, target: Target, serializer: Serializer) -> Self {
        Self {
            exchange: exchange.into(),
            target,
            serializer,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The same, with another number of requests in flight at once (at least 1 is served).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// The same, with another largest body read.
    #[must_use]
    pub fn with_max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }
}

/// A running RPC server.
pub struct RpcServer {
    fanout_queue: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

struct ServerShared {
    transport: Transport,
    serializer: Serializer,
    dispatcher: Dispatcher,
    max_message_bytes: usize,
    reply_retries: Arc<Semaphore>,
}

/// Why a message was refused, as logged and as told to the caller. Deliberately coarse for
/// decryption: a sender learns that its request does not decrypt, not why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalKind {
    TooLarge,
    Unreadable,
    WrongContentType,
    BadRequest,
    NoContext,
    ContextNotDecrypting,
    ArgumentNotDecrypting,
}

impl RefusalKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "body too large",
            Self::Unreadable => "not an oslo.messaging message",
            Self::WrongContentType => "content type is not application/json",
            Self::BadRequest => "malformed request",
            Self::NoContext => "no encrypted context",
            Self::ContextNotDecrypting => "context does not decrypt with the instance key",
            Self::ArgumentNotDecrypting => "argument does not decrypt with the instance key",
        }
    }
}

/// A refused message: its kind, a value-free message for the caller, and where to reply.
struct Refusal {
    kind: RefusalKind,
    method: Option<String>,
    message: String,
    reply: Option<(String, String)>,
}

/// Decides which refusals are logged one by one: the first [`REFUSALS_LOGGED_PER_PERIOD`] of
/// each period; the others are counted and reported when the next period starts.
#[derive(Debug)]
struct RefusalLog {
    period_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    fn new(now: Instant) -> Self {
        Self {
            period_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this refusal; also logs the count of the previous period's unlogged
    /// ones when a new period starts.
    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.period_start) >= REFUSAL_LOG_PERIOD {
            if self.suppressed > 0 {
                warn!(
                    count = self.suppressed,
                    period_s = REFUSAL_LOG_PERIOD.as_secs(),
                    "more RPC messages refused than logged"
                );
            }
            *self = Self::new(now);
        }
        if self.logged < REFUSALS_LOGGED_PER_PERIOD {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// A request admitted to run.
struct Work {
    method: String,
    call: Option<(String, String)>,
    context: Context,
    args: Map<String, Value>,
    handler: Arc<dyn Handler>,
}

enum Admission {
    Run(Work),
    /// The dispatcher's answer (unknown method, unsupported version) to an authentic request.
    Answer {
        method: String,
        failure: RemoteFailure,
        call: Option<(String, String)>,
    },
    Refuse(Refusal),
    Replay {
        method: String,
    },
}

impl RpcServer {
    /// Declares the target's queues (topic, topic.server, fanout) and starts serving.
    pub async fn start(
        transport: &Transport,
        config: ServerConfig,
        dispatcher: Dispatcher,
    ) -> Result<Self, TransportError> {
        let topology = Topology::new(transport.options());
        let unique = uuid4_hex();
        let specs = topology.server_consumers(&config.exchange, &config.target, &unique);
        let fanout_queue = specs
            .last()
            .map(|spec| spec.queue.name.clone())
            .unwrap_or_default();
        let consumer = transport.consume(specs, vec![fanout_queue.clone()]).await?;
        info!(
            exchange = %config.exchange,
            topic = %config.target.topic,
            server = ?config.target.server,
            version = %config.target.version,
            max_concurrency = config.max_concurrency,
            max_message_bytes = config.max_message_bytes,
            "RPC server consuming"
        );
        let shared = Arc::new(ServerShared {
            transport: transport.clone(),
            serializer: config.serializer,
            dispatcher,
            max_message_bytes: config.max_message_bytes,
            reply_retries: Arc::new(Semaphore::new(REPLY_RETRY_SLOTS)),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        let task = tokio::spawn(serve(shared, consumer, stop_rx, limit));
        Ok(Self {
            fanout_queue,
            stop: stop_tx,
            task: Some(task),
        })
    }

    /// The uniquely named fanout queue (deleted on stop, as oslo does).
    pub fn fanout_queue(&self) -> &str {
        &self.fanout_queue
    }

    /// Stops consuming and deletes the fanout queue; topic queues stay.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            error!(error = %err, "RPC server task failed");
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn serve(
    shared: Arc<ServerShared>,
    mut consumer: Consumer,
    mut stop: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
) {
    let mut replays = ReplayFilter::default();
    let mut refusal_log = RefusalLog::new(Instant::now());
    loop {
        // Backpressure: no permit, no delivery taken, no ack, so the broker keeps the rest
        // (and sends at most the prefetch count unacked).
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(permit) = permit else { break };
        let delivery = tokio::select! {
            delivery = consumer.deliveries.recv() => delivery,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(delivery) = delivery else { break };
        // oslo acks before processing; a message whose ack failed will be redelivered, so it
        // is not processed here.
        if let Err(err) = delivery.ack().await {
            warn!(error = %err, routing_key = %delivery.routing_key, "ack failed, message left for redelivery");
            continue;
        }
        match admit(&shared, &mut replays, &delivery) {
            Admission::Run(work) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    handle(&shared, work).await;
                    drop(permit);
                });
            }
            Admission::Answer {
                method,
                failure,
                call,
            } => {
                warn!(method = %printable(&method), class = %failure.class, "RPC request not dispatched");
                if let Some((msg_id, reply_q)) = call {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        deliver_reply(&shared, reply_q, failure_reply(msg_id, &failure)).await;
                        drop(permit);
                    });
                }
            }
            Admission::Refuse(refusal) => {
                if refusal_log.admit(Instant::now()) {
                    warn!(
                        method = refusal.method.as_deref().map(printable).unwrap_or_default(),
                        reason = refusal.kind.as_str(),
                        routing_key = %delivery.routing_key,
                        bytes = delivery.body.len(),
                        "refused an RPC message"
                    );
                }
                if let Some((msg_id, reply_q)) = refusal.reply {
                    let failure = RemoteFailure::new(REFUSED_CLASS, GUEST_MODULE, refusal.message);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        deliver_reply(&shared, reply_q, failure_reply(msg_id, &failure)).await;
                        drop(permit);
                    });
                }
            }
            Admission::Replay { method } => {
                if refusal_log.admit(Instant::now()) {
                    info!(method = %printable(&method), "dropped a duplicate or replayed message");
                }
            }
        }
    }
    consumer.stop().await;
    info!("RPC server stopped");
}

/// Decides what to do with one delivery: parse, authenticate (context, then replay check,
/// then arguments), resolve the handler. Runs on the serving task, before any handler.
fn admit(shared: &ServerShared, replays: &mut ReplayFilter, delivery: &Delivery) -> Admission {
    let refuse = |kind, method: Option<&str>, message: String, reply| {
        Admission::Refuse(Refusal {
            kind,
            method: method.map(str::to_owned),
            message,
            reply,
        })
    };
    if delivery.body.len() > shared.max_message_bytes {
        let message = format!(
            "message of {} bytes refused: the limit is {} bytes",
            delivery.body.len(),
            shared.max_message_bytes
        );
        return refuse(RefusalKind::TooLarge, None, message, None);
    }
    let message = match envelope::unwrap(&delivery.body) {
        Ok(message) => message,
        Err(err) => return refuse(RefusalKind::Unreadable, None, err.to_string(), None),
    };
    let reply = match (message.get("_msg_id"), message.get("_reply_q")) {
        (Some(Value::String(id)), Some(Value::String(q))) => Some((id.clone(), q.clone())),
        _ => None,
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if delivery.content_type.as_deref() != Some("application/json") {
        let message = format!(
            "content type '{}' is not application/json",
            printable(delivery.content_type.as_deref().unwrap_or(""))
        );
        return refuse(
            RefusalKind::WrongContentType,
            method.as_deref(),
            message,
            reply,
        );
    }
    let request = match Request::from_message(message) {
        Ok(request) => request,
        Err(err) => {
            return refuse(
                RefusalKind::BadRequest,
                method.as_deref(),
                err.to_string(),
                reply,
            );
        }
    };
    let call = request.msg_id.clone().zip(request.reply_q.clone());
    let replay_key = shared.serializer.context_replay_key(&request.context);
    let context = match shared.serializer.deserialize_context(request.context) {
        Ok(context) => context,
        Err(err) => {
            let kind = match err {
                SerializerError::MissingContext(_) => RefusalKind::NoContext,
                _ => RefusalKind::ContextNotDecrypting,
            };
            let message = match kind {
                RefusalKind::NoContext => format!("request context: {err}"),
                _ => "request context: it does not decrypt with this instance's key".to_owned(),
            };
            return refuse(kind, Some(&request.method), message, call);
        }
    };
    let mut keys: Vec<&[u8]> = Vec::with_capacity(2);
    if let Some(unique_id) = &request.unique_id {
        keys.push(unique_id.as_bytes());
    }
    if let Some(key) = &replay_key {
        keys.push(key);
    }
    if !keys.is_empty() && !replays.admit(&keys, std::time::Instant::now()) {
        return Admission::Replay {
            method: request.method,
        };
    }
    let handler = match shared.dispatcher.resolve(
        &request.method,
        request.version.as_deref(),
        request.namespace.as_deref(),
    ) {
        Resolution::Run(handler) => handler,
        Resolution::Refuse(failure) => {
            return Admission::Answer {
                method: request.method,
                failure,
                call,
            };
        }
    };
    let mut args = Map::with_capacity(request.args.len());
    for (name, value) in request.args {
        match shared.serializer.deserialize_entity(value) {
            Ok(plain) => {
                args.insert(name, plain);
            }
            Err(_) => {
                let message = format!(
                    "{}() argument '{}' does not decrypt with this instance's key",
                    printable(&request.method),
                    printable(&name)
                );
                return refuse(
                    RefusalKind::ArgumentNotDecrypting,
                    Some(&request.method),
                    message,
                    call,
                );
            }
        }
    }
    Admission::Run(Work {
        method: request.method,
        call,
        context,
        args,
        handler,
    })
}

async fn handle(shared: &ServerShared, work: Work) {
    let Work {
        method,
        call,
        context,
        args,
        handler,
    } = work;
    let outcome = handler
        .call(context, Args::new(&method, args))
        .await
        .map_err(|err| err.into_failure());
    match &outcome {
        // The message is the handler's: handlers name what failed, never argument values.
        Err(failure) => warn!(
            method = %printable(&method),
            class = %failure.class,
            message = %failure.message,
            call = call.is_some(),
            "RPC request failed"
        ),
        Ok(_) => debug!(method = %printable(&method), "RPC request handled"),
    }
    let Some((msg_id, reply_q)) = call else {
        return;
    };
    let reply = match outcome {
        Ok(result) => Reply {
            result: shared.serializer.serialize_entity(&result),
            failure: None,
            ending: true,
            msg_id,
            unique_id: uuid4_hex(),
        },
        Err(failure) => failure_reply(msg_id, &failure),
    };
    deliver_reply(shared, reply_q, reply).await;
}

fn failure_reply(msg_id: String, failure: &RemoteFailure) -> Reply {
    Reply {
        result: Value::Null,
        failure: Some(failure.to_json()),
        ending: true,
        msg_id,
        unique_id: uuid4_hex(),
    }
}

/// Publishes a reply on the default exchange. When its queue is missing the caller's work
/// permit is given back at once and the retries (every 250 ms for
/// `kombu_missing_consumer_retry_timeout`, as oslo does) run in the background, in one of
/// [`REPLY_RETRY_SLOTS`]; with every slot taken the reply is dropped.
async fn deliver_reply(shared: &ServerShared, reply_q: String, reply: Reply) {
    let body = envelope::wrap(&reply.to_message());
    match publish_reply(&shared.transport, &reply_q, &body).await {
        Ok(()) => {}
        Err(TransportError::Returned { .. }) => {
            let Ok(slot) = Arc::clone(&shared.reply_retries).try_acquire_owned() else {
                warn!(reply_q = %printable(&reply_q), msg_id = %printable(&reply.msg_id), "reply queue missing and every retry slot busy: reply dropped");
                return;
            };
            debug!(reply_q = %printable(&reply_q), "reply queue missing, retrying in the background");
            let transport = shared.transport.clone();
            tokio::spawn(retry_reply(transport, reply_q, reply.msg_id, body, slot));
        }
        Err(err) => {
            error!(reply_q = %printable(&reply_q), msg_id = %printable(&reply.msg_id), error = %err, "reply dropped");
        }
    }
}

async fn retry_reply(
    transport: Transport,
    reply_q: String,
    msg_id: String,
    body: Vec<u8>,
    slot: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + transport.options().kombu_missing_consumer_retry_timeout;
    loop {
        sleep(REPLY_RETRY_INTERVAL).await;
        match publish_reply(&transport, &reply_q, &body).await {
            Ok(()) => break,
            Err(TransportError::Returned { .. }) if Instant::now() < deadline => {}
            Err(err) => {
                warn!(reply_q = %printable(&reply_q), msg_id = %printable(&msg_id), error = %err, "reply dropped");
                break;
            }
        }
    }
    drop(slot);
}

async fn publish_reply(
    transport: &Transport,
    reply_q: &str,
    body: &[u8],
) -> Result<(), TransportError> {
    transport
        .publish(&Outgoing {
            exchange: "",
            declare: None,
            routing_key: reply_q,
            body,
            mandatory: transport.options().direct_mandatory_flag,
            expiration_ms: None,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_per_period_quota_are_counted_not_logged() {
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        let logged = (0..1000).filter(|_| log.admit(start)).count();
        assert_eq!(logged, REFUSALS_LOGGED_PER_PERIOD as usize);
        assert_eq!(log.suppressed, 1000 - u64::from(REFUSALS_LOGGED_PER_PERIOD));
        assert!(
            log.admit(start + REFUSAL_LOG_PERIOD),
            "a new period logs again"
        );
        assert_eq!(log.suppressed, 0);
        assert_eq!(log.logged, 1);
    }
}
