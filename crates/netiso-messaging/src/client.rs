//! The RPC client: call (with a reply queue and the timeout as message expiration), cast and
//! fanout cast. Used by the harness, tools and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{OnceCell, oneshot, watch};
use tracing::{debug, warn};

use crate::crypto::uuid4_hex;
use crate::dedup::ReplayFilter;
use crate::envelope::{self, RemoteFailure, Reply, Request};
use crate::error::{CallError, TransportError};
use crate::serializer::{Context, Serializer};
use crate::topology::{Target, Topology};
use crate::transport::{Outgoing, Transport};

type PendingCalls = Arc<StdMutex<HashMap<String, oneshot::Sender<Reply>>>>;

/// Sends requests to RPC servers.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    transport: Transport,
    exchange: String,
    serializer: Serializer,
    replies: OnceCell<ReplyListener>,
}

/// The caller's single reply queue and the calls waiting on it.
struct ReplyListener {
    queue: String,
    pending: PendingCalls,
    stop: watch::Sender<bool>,
    task: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ReplyListener {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl RpcClient {
    /// A client publishing to `exchange` (the control exchange) with `serializer`.
    pub fn new(transport: &Transport, exchange: &str, serializer: Serializer) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                transport: transport.clone(),
                exchange: exchange.to_owned(),
                serializer,
                replies: OnceCell::new(),
            }),
        }
    }

    /// Calls `method` and waits up to `timeout` for its reply; the request also expires in
    /// the queue after `timeout`.
    pub async fn call(
        &self,
        target: &Target,
        method: &str,
        args: Map<String, Value>,
        context: &Context,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        self.call_with(
            &self.inner.serializer,
            target,
            method,
            args,
            context,
            timeout,
        )
        .await
    }

    /// [`call`](Self::call) with another serializer than the client's: a caller of many
    /// guests, each with its own instance key, shares one client and one reply queue.
    pub async fn call_with(
        &self,
        serializer: &Serializer,
        target: &Target,
        method: &str,
        args: Map<String, Value>,
        context: &Context,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let listener = self
            .inner
            .replies
            .get_or_try_init(|| self.start_listener())
            .await?;
        if *listener.stop.borrow() {
            return Err(CallError::Transport(TransportError::Closed));
        }
        let msg_id = uuid4_hex();
        let (tx, rx) = oneshot::channel();
        lock(&listener.pending).insert(msg_id.clone(), tx);
        let mut request = Self::request(serializer, target, method, args, context);
        request.msg_id = Some(msg_id.clone());
        request.reply_q = Some(listener.queue.clone());
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || CallError::Timeout {
            method: method.to_owned(),
            timeout_ms,
        };
        // The whole call, publishing included, is bounded by the caller's timeout.
        let sent = tokio::time::timeout_at(
            deadline,
            self.publish_topic(target, &request, Some(timeout_ms)),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                lock(&listener.pending).remove(&msg_id);
                return Err(err.into());
            }
            Err(_) => {
                lock(&listener.pending).remove(&msg_id);
                return Err(timed_out());
            }
        }
        let reply = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(CallError::Transport(TransportError::Closed)),
            Err(_) => {
                lock(&listener.pending).remove(&msg_id);
                return Err(timed_out());
            }
        };
        if let Some(failure) = reply.failure {
            let failure = RemoteFailure::from_json(&failure)
                .map_err(|err| CallError::BadReply(err.to_string()))?;
            return Err(CallError::Remote {
                class: failure.class,
                module: failure.module,
                message: failure.message,
            });
        }
        Ok(serializer.deserialize_entity(reply.result)?)
    }

    /// The reply queue, once the first call created it.
    pub fn reply_queue(&self) -> Option<&str> {
        self.inner
            .replies
            .get()
            .map(|listener| listener.queue.as_str())
    }

    /// Stops listening for replies and deletes the reply queue (left alone, it would expire
    /// after `rabbit_transient_queues_ttl`). Calls made afterwards fail.
    pub async fn close(&self) {
        let Some(listener) = self.inner.replies.get() else {
            return;
        };
        listener.stop.send_replace(true);
        let task = lock(&listener.task).take();
        if let Some(task) = task
            && let Err(err) = task.await
        {
            warn!(error = %err, "reply listener failed");
        }
    }

    /// Sends `method` without waiting for a result; returns once the broker confirmed it.
    pub async fn cast(
        &self,
        target: &Target,
        method: &str,
        args: Map<String, Value>,
        context: &Context,
    ) -> Result<(), CallError> {
        let request = Self::request(&self.inner.serializer, target, method, args, context);
        self.publish_topic(target, &request, None).await?;
        Ok(())
    }

    /// Casts to every server of `target.topic` through its fanout exchange.
    pub async fn fanout_cast(
        &self,
        target: &Target,
        method: &str,
        args: Map<String, Value>,
        context: &Context,
    ) -> Result<(), CallError> {
        let request = Self::request(&self.inner.serializer, target, method, args, context);
        let body = envelope::wrap(&request.to_message());
        let exchange = Topology::new(self.inner.transport.options()).fanout_exchange(&target.topic);
        self.inner
            .transport
            .publish(&Outgoing {
                exchange: &exchange.name,
                declare: Some(&exchange),
                routing_key: "",
                body: &body,
                mandatory: false,
                expiration_ms: None,
            })
            .await?;
        Ok(())
    }

    fn request(
        serializer: &Serializer,
        target: &Target,
        method: &str,
        args: Map<String, Value>,
        context: &Context,
    ) -> Request {
        Request {
            method: method.to_owned(),
            args: args
                .iter()
                .map(|(name, value)| (name.clone(), serializer.serialize_entity(value)))
                .collect(),
            namespace: None,
            version: Some(target.version.clone()),
            msg_id: None,
            reply_q: None,
            timeout: None,
            unique_id: Some(uuid4_hex()),
            context: serializer.serialize_context(context),
        }
    }

    /// Publishes to the control exchange with `mandatory` (oslo does not): a request no
    /// queue is bound for fails at once with a "returned: 312 NO_ROUTE" error instead of being
    /// confirmed and silently dropped by the broker.
    async fn publish_topic(
        &self,
        target: &Target,
        request: &Request,
        expiration_ms: Option<u64>,
    ) -> Result<(), TransportError> {
        let body = envelope::wrap(&request.to_message());
        let exchange =
            Topology::new(self.inner.transport.options()).topic_exchange(&self.inner.exchange);
        self.inner
            .transport
            .publish(&Outgoing {
                exchange: &self.inner.exchange,
                declare: Some(&exchange),
                routing_key: &target.routing_key(),
                body: &body,
                mandatory: true,
                expiration_ms,
            })
            .await
    }

    async fn start_listener(&self) -> Result<ReplyListener, TransportError> {
        let queue = format!("reply_{}", uuid4_hex());
        let spec = Topology::new(self.inner.transport.options()).reply_consumer(&queue);
        let mut consumer = self
            .inner
            .transport
            .consume(vec![spec], vec![queue.clone()])
            .await?;
        let pending: PendingCalls = Arc::default();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let routes = Arc::clone(&pending);
        let task = tokio::spawn(async move {
            let mut recent = ReplayFilter::default();
            loop {
                let delivery = tokio::select! {
                    delivery = consumer.deliveries.recv() => delivery,
                    _ = stop_rx.wait_for(|s| *s) => break,
                };
                let Some(delivery) = delivery else { break };
                if let Err(err) = delivery.ack().await {
                    warn!(error = %err, "ack of a reply failed");
                    continue;
                }
                let reply = match envelope::unwrap(&delivery.body).and_then(Reply::from_message) {
                    Ok(reply) => reply,
                    Err(err) => {
                        warn!(error = %err, "unreadable reply dropped");
                        continue;
                    }
                };
                if !reply.unique_id.is_empty()
                    && !recent.admit(&[reply.unique_id.as_bytes()], std::time::Instant::now())
                {
                    debug!(msg_id = %reply.msg_id, "duplicate reply dropped");
                    continue;
                }
                if !reply.ending {
                    continue;
                }
                match lock(&routes).remove(&reply.msg_id) {
                    Some(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    None => {
                        warn!(msg_id = %reply.msg_id, "reply for an unknown or expired call dropped")
                    }
                }
            }
            consumer.stop().await;
        });
        Ok(ReplyListener {
            queue,
            pending,
            stop: stop_tx,
            task: StdMutex::new(Some(task)),
        })
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
