//! The RPC server: consumes a target's queues, acks before dispatch, drops duplicates, checks
//! versions, runs handlers concurrently and replies to calls only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing::{debug, error, info, warn};

use crate::crypto::uuid4_hex;
use crate::dedup::RecentIds;
use crate::dispatcher::{Args, Dispatcher, GUEST_MODULE, Resolution};
use crate::envelope::{self, RemoteFailure, Reply, Request};
use crate::error::TransportError;
use crate::serializer::Serializer;
use crate::topology::{Target, Topology};
use crate::transport::{Consumer, Delivery, Outgoing, Transport};

const REPLY_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// What an RPC server serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The control exchange (`[DEFAULT] control_exchange`, `trove` for guests).
    pub exchange: String,
    /// Topic, server and implemented version.
    pub target: Target,
    /// How arguments, results and the context are encoded.
    pub serializer: Serializer,
    /// Handlers running at once (oslo's `executor_thread_pool_size` is 64).
    pub max_concurrency: usize,
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
}

/// A message that could not be read as a request, with where to send the failure.
struct Undecodable {
    reason: String,
    reply: Option<(String, String)>,
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
            "RPC server consuming"
        );
        let shared = Arc::new(ServerShared {
            transport: transport.clone(),
            serializer: config.serializer,
            dispatcher,
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
    let mut recent = RecentIds::default();
    loop {
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
        let request = match decode(&delivery) {
            Ok(request) => request,
            Err(bad) => {
                error!(
                    routing_key = %delivery.routing_key,
                    reason = %bad.reason,
                    "rejected an unreadable RPC message"
                );
                if let Some((msg_id, reply_q)) = bad.reply {
                    let failure =
                        RemoteFailure::new("MessageDecodeError", GUEST_MODULE, bad.reason);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        send_reply(&shared.transport, &reply_q, failure_reply(msg_id, &failure))
                            .await;
                    });
                }
                continue;
            }
        };
        if let Some(unique_id) = &request.unique_id
            && !recent.insert(unique_id)
        {
            info!(method = %request.method, unique_id, "dropped a duplicate message");
            continue;
        }
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            handle(&shared, request).await;
            drop(permit);
        });
    }
    consumer.stop().await;
    info!("RPC server stopped");
}

fn decode(delivery: &Delivery) -> Result<Request, Undecodable> {
    let message = envelope::unwrap(&delivery.body).map_err(|err| Undecodable {
        reason: err.to_string(),
        reply: None,
    })?;
    let reply = match (message.get("_msg_id"), message.get("_reply_q")) {
        (Some(Value::String(id)), Some(Value::String(q))) => Some((id.clone(), q.clone())),
        _ => None,
    };
    if delivery.content_type.as_deref() != Some("application/json") {
        return Err(Undecodable {
            reason: format!(
                "content type {:?} is not application/json",
                delivery.content_type.as_deref().unwrap_or("")
            ),
            reply,
        });
    }
    Request::from_message(message).map_err(|err| Undecodable {
        reason: err.to_string(),
        reply,
    })
}

async fn handle(shared: &ServerShared, request: Request) {
    let method = request.method.clone();
    let call = request.msg_id.clone().zip(request.reply_q.clone());
    let outcome = run(shared, request).await;
    match (&outcome, &call) {
        (Err(failure), _) => warn!(
            method,
            class = %failure.class,
            message = %failure.message,
            call = call.is_some(),
            "RPC request failed"
        ),
        (Ok(_), _) => debug!(method, "RPC request handled"),
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
    send_reply(&shared.transport, &reply_q, reply).await;
}

async fn run(shared: &ServerShared, request: Request) -> Result<Value, RemoteFailure> {
    let context = shared
        .serializer
        .deserialize_context(request.context)
        .map_err(|err| {
            RemoteFailure::new(
                "MessageDecodeError",
                GUEST_MODULE,
                format!("request context: {err}"),
            )
        })?;
    let handler = match shared.dispatcher.resolve(
        &request.method,
        request.version.as_deref(),
        request.namespace.as_deref(),
    ) {
        Resolution::Run(handler) => handler,
        Resolution::Refuse(failure) => return Err(failure),
    };
    let args: Map<String, Value> = request
        .args
        .into_iter()
        .map(|(name, value)| (name, shared.serializer.deserialize_entity(value)))
        .collect();
    handler
        .call(context, Args::new(&request.method, args))
        .await
        .map_err(|err| err.into_failure())
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

/// Publishes a reply on the default exchange, retrying while the reply queue is missing.
async fn send_reply(transport: &Transport, reply_q: &str, reply: Reply) {
    let body = envelope::wrap(&reply.to_message());
    let options = transport.options();
    let deadline = Instant::now() + options.kombu_missing_consumer_retry_timeout;
    let outgoing = Outgoing {
        exchange: "",
        declare: None,
        routing_key: reply_q,
        body: &body,
        mandatory: options.direct_mandatory_flag,
        expiration_ms: None,
    };
    loop {
        match transport.publish(&outgoing).await {
            Ok(()) => return,
            Err(TransportError::Returned { .. }) if Instant::now() < deadline => {
                debug!(reply_q, msg_id = %reply.msg_id, "reply queue missing, retrying");
                sleep(REPLY_RETRY_INTERVAL).await;
            }
            Err(err) => {
                error!(reply_q, msg_id = %reply.msg_id, error = %err, "reply dropped");
                return;
            }
        }
    }
}
