//! Our client against our server on the real broker: results, readable failures, bad input,
//! duplicates, casts and fanout casts, plain and encrypted.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netiso_messaging::envelope::{self, Reply};
use netiso_messaging::topology::Topology;
use netiso_messaging::transport::Outgoing;
use netiso_messaging::{
    Args, CallError, Context, Dispatcher, HandlerError, InstanceKey, RpcClient, RpcServer,
    Serializer, ServerConfig, Target, Transport,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use common::{KEY, connect, object, test_options, unique};

struct Fixture {
    transport: Transport,
    exchange: String,
    target: Target,
    server: RpcServer,
    casts: mpsc::UnboundedReceiver<Value>,
    pings: Arc<AtomicUsize>,
}

fn dispatcher(casts: mpsc::UnboundedSender<Value>, pings: Arc<AtomicUsize>) -> Dispatcher {
    let mut d = Dispatcher::new("1.3").unwrap();
    d.register("rpc_ping", move |_ctx: Context, args: Args| {
        let pings = Arc::clone(&pings);
        async move {
            args.finish()?;
            pings.fetch_add(1, Ordering::SeqCst);
            Ok(json!(true))
        }
    });
    d.register("echo", |ctx: Context, mut args: Args| async move {
        let value: Value = args.take("value")?;
        args.finish()?;
        Ok(json!({"value": value, "request_id": ctx.get("request_id")}))
    });
    d.register("fail", |_ctx: Context, mut args: Args| async move {
        let message: String = args.take("message")?;
        Err(HandlerError::new(message))
    });
    d.register("record", move |_ctx: Context, mut args: Args| {
        let casts = casts.clone();
        async move {
            let value: Value = args.take("value")?;
            let _ = casts.send(value);
            Ok(Value::Null)
        }
    });
    d
}

async fn start(serializer: Serializer) -> Fixture {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("ex");
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: "1.3".into(),
    };
    let (tx, casts) = mpsc::unbounded_channel();
    let pings = Arc::new(AtomicUsize::new(0));
    let server = RpcServer::start(
        &transport,
        ServerConfig::new(exchange.clone(), target.clone(), serializer).with_max_concurrency(16),
        dispatcher(tx, Arc::clone(&pings)),
    )
    .await
    .expect("server starts");
    Fixture {
        transport,
        exchange,
        target,
        server,
        casts,
        pings,
    }
}

impl Fixture {
    async fn cleanup(self) {
        let fanout_queue = self.server.fanout_queue().to_owned();
        assert!(self.transport.queue_exists(&fanout_queue).await.unwrap());
        self.server.stop().await;
        assert!(
            !self.transport.queue_exists(&fanout_queue).await.unwrap(),
            "the fanout queue is deleted on stop"
        );
        assert!(
            self.transport
                .queue_exists(&self.target.topic)
                .await
                .unwrap(),
            "topic queues stay"
        );
        for queue in [self.target.topic.clone(), self.target.routing_key()] {
            self.transport
                .delete_queue(&queue)
                .await
                .expect("delete queue");
        }
        self.transport
            .delete_exchange(&self.exchange)
            .await
            .expect("delete exchange");
        self.transport.close();
    }

    fn client(&self, serializer: Serializer) -> RpcClient {
        RpcClient::new(&self.transport, &self.exchange, serializer)
    }
}

fn remote(result: Result<Value, CallError>) -> (String, String, String) {
    match result {
        Err(CallError::Remote {
            class,
            module,
            message,
        }) => (class, module, message),
        other => panic!("expected a remote failure, got {other:?}"),
    }
}

async fn exercise(serializer: Serializer) {
    let mut fx = start(serializer.clone()).await;
    let client = fx.client(serializer);
    let ctx = Context::fresh();
    let t = Duration::from_secs(10);
    let call = |method: &'static str, args: Value, target: Target| {
        let client = client.clone();
        let ctx = ctx.clone();
        async move { client.call(&target, method, object(args), &ctx, t).await }
    };

    assert_eq!(
        call("rpc_ping", json!({}), fx.target.clone())
            .await
            .unwrap(),
        json!(true)
    );
    let echoed = call(
        "echo",
        json!({"value": {"a": [1, "é", null]}}),
        fx.target.clone(),
    )
    .await
    .unwrap();
    assert_eq!(echoed["value"], json!({"a": [1, "é", null]}));
    assert_eq!(
        echoed["request_id"],
        ctx.get("request_id").cloned().unwrap()
    );

    let mut direct = fx.target.clone();
    direct.server = None;
    assert_eq!(
        call("rpc_ping", json!({}), direct).await.unwrap(),
        json!(true)
    );

    let (class, module, message) = remote(call("nope", json!({}), fx.target.clone()).await);
    assert_eq!(
        (class.as_str(), module.as_str()),
        ("NoSuchMethod", "oslo_messaging.rpc.dispatcher")
    );
    assert_eq!(message, "Endpoint does not support RPC method nope");

    let mut newer = fx.target.clone();
    newer.version = "1.4".into();
    let (class, _, message) = remote(call("rpc_ping", json!({}), newer).await);
    assert_eq!(class, "UnsupportedVersion");
    assert_eq!(
        message,
        "Endpoint does not support RPC version 1.4. Attempted method: rpc_ping"
    );

    let (class, module, message) =
        remote(call("fail", json!({"message": "disk full"}), fx.target.clone()).await);
    assert_eq!(
        (class.as_str(), module.as_str(), message.as_str()),
        ("GuestError", "trove_guest", "disk full")
    );

    let (class, _, message) =
        remote(call("rpc_ping", json!({"extra": 1}), fx.target.clone()).await);
    assert_eq!(class, "TypeError");
    assert_eq!(
        message,
        "rpc_ping() got an unexpected keyword argument 'extra'"
    );

    client
        .cast(
            &fx.target,
            "record",
            object(json!({"value": "cast-1"})),
            &ctx,
        )
        .await
        .unwrap();
    client
        .fanout_cast(
            &fx.target,
            "record",
            object(json!({"value": "fanout-1"})),
            &ctx,
        )
        .await
        .unwrap();
    let mut nobody = fx.target.clone();
    nobody.topic = unique("no-such-topic");
    match client
        .cast(&nobody, "record", object(json!({"value": "lost"})), &ctx)
        .await
    {
        Err(CallError::Transport(netiso_messaging::TransportError::Returned {
            code: 312, ..
        })) => {}
        other => panic!("a cast nobody can receive must fail, got {other:?}"),
    }
    let mut got = vec![];
    for _ in 0..2 {
        let value = tokio::time::timeout(t, fx.casts.recv())
            .await
            .expect("cast arrives")
            .unwrap();
        got.push(value);
    }
    got.sort_by_key(Value::to_string);
    assert_eq!(got, vec![json!("cast-1"), json!("fanout-1")]);
    let reply_queue = client.reply_queue().unwrap().to_owned();
    assert!(fx.transport.queue_exists(&reply_queue).await.unwrap());
    client.close().await;
    assert!(
        !fx.transport.queue_exists(&reply_queue).await.unwrap(),
        "reply queue deleted on close"
    );
    assert!(matches!(
        client
            .call(&fx.target, "rpc_ping", object(json!({})), &ctx, t)
            .await,
        Err(CallError::Transport(
            netiso_messaging::TransportError::Closed
        ))
    ));
    fx.cleanup().await;
}

#[tokio::test]
async fn plain_calls_casts_and_failures() {
    exercise(Serializer::Plain).await;
}

#[tokio::test]
async fn encrypted_calls_casts_and_failures() {
    exercise(Serializer::Secure(InstanceKey::new(KEY).unwrap())).await;
}

/// Publishes a raw body as a call and returns the reply.
async fn raw_call(
    fx: &Fixture,
    body_of: impl Fn(&str, &str) -> Vec<u8>,
    content_type_json: bool,
) -> Option<Reply> {
    let reply_q = unique("reply");
    let spec = Topology::new(fx.transport.options()).reply_consumer(&reply_q);
    let mut consumer = fx
        .transport
        .consume(vec![spec], vec![reply_q.clone()])
        .await
        .unwrap();
    let msg_id = uuid::Uuid::new_v4().simple().to_string();
    let body = body_of(&msg_id, &reply_q);
    let exchange = Topology::new(fx.transport.options()).topic_exchange(&fx.exchange);
    let routing_key = fx.target.routing_key();
    if content_type_json {
        fx.transport
            .publish(&Outgoing {
                exchange: &fx.exchange,
                declare: Some(&exchange),
                routing_key: &routing_key,
                body: &body,
                mandatory: true,
                expiration_ms: Some(10_000),
            })
            .await
            .unwrap();
    } else {
        publish_text_plain(&fx.transport, &fx.exchange, &routing_key, &body).await;
    }
    let reply = match tokio::time::timeout(Duration::from_secs(3), consumer.deliveries.recv()).await
    {
        Ok(Some(delivery)) => {
            delivery.ack().await.unwrap();
            Some(Reply::from_message(envelope::unwrap(&delivery.body).unwrap()).unwrap())
        }
        _ => None,
    };
    consumer.stop().await;
    reply
}

/// Publishes with a foreign content type through a separate plain amqprs connection.
async fn publish_text_plain(
    _transport: &Transport,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) {
    use amqprs::BasicProperties;
    use amqprs::channel::BasicPublishArguments;
    use amqprs::connection::{Connection, OpenConnectionArguments};
    let config = common::broker_config();
    let host = &config.hosts[0];
    let args =
        OpenConnectionArguments::new(&host.hostname, host.port, &host.username, &host.password)
            .virtual_host(&config.virtual_host)
            .finish();
    let connection = Connection::open(&args).await.unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    let props = BasicProperties::default()
        .with_content_type("text/plain")
        .finish();
    channel
        .basic_publish(
            props,
            body.to_vec(),
            BasicPublishArguments::new(exchange, routing_key),
        )
        .await
        .unwrap();
    channel.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn bad_messages_get_failures_and_the_server_keeps_consuming() {
    let fx = start(Serializer::Secure(InstanceKey::new(KEY).unwrap())).await;
    let ctx =
        Serializer::Secure(InstanceKey::new(KEY).unwrap()).serialize_context(&Context::fresh());
    let ctx_wire = ctx["context"].as_str().unwrap().to_owned();

    // Not JSON at all: nothing to reply to; the server must survive it.
    assert!(
        raw_call(&fx, |_, _| b"\xff not json".to_vec(), true)
            .await
            .is_none()
    );
    // Wrong envelope version: no reply (the message cannot be trusted to be a request).
    let wrong_version = |id: &str, q: &str| {
        json!({"oslo.version": "3.0", "oslo.message": json!({"method": "rpc_ping", "_msg_id": id, "_reply_q": q}).to_string()})
            .to_string()
            .into_bytes()
    };
    assert!(raw_call(&fx, wrong_version, true).await.is_none());

    let request = |method: &str, context: Value, extra: Value| {
        let method = method.to_owned();
        move |id: &str, q: &str| {
            let mut msg = object(
                json!({"method": method, "args": {}, "version": "1.0", "_msg_id": id, "_reply_q": q, "_timeout": null, "_unique_id": uuid::Uuid::new_v4().simple().to_string()}),
            );
            if !context.is_null() {
                msg.insert("_context_context".into(), context.clone());
            }
            for (k, v) in object(extra.clone()) {
                msg.insert(k, v);
            }
            envelope::wrap(&msg)
        }
    };
    let failure_of = |reply: Option<Reply>| {
        let reply = reply.expect("a failure reply");
        assert_eq!(reply.result, Value::Null);
        assert!(reply.ending);
        netiso_messaging::envelope::RemoteFailure::from_json(&reply.failure.expect("failure set"))
            .unwrap()
    };

    let undecryptable = failure_of(
        raw_call(
            &fx,
            request(
                "rpc_ping",
                json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                json!({}),
            ),
            true,
        )
        .await,
    );
    assert_eq!(undecryptable.class, "MessageDecodeError");
    assert!(
        undecryptable.message.contains("request context"),
        "{}",
        undecryptable.message
    );

    let missing_ctx =
        failure_of(raw_call(&fx, request("rpc_ping", Value::Null, json!({})), true).await);
    assert!(
        missing_ctx.message.contains("_context_context"),
        "{}",
        missing_ctx.message
    );

    let bad_method = failure_of(
        raw_call(
            &fx,
            request("", json!(ctx_wire), json!({"method": 5})),
            true,
        )
        .await,
    );
    assert!(
        bad_method.message.contains("\"method\""),
        "{}",
        bad_method.message
    );

    let wrong_type =
        failure_of(raw_call(&fx, request("rpc_ping", json!(ctx_wire), json!({})), false).await);
    assert!(
        wrong_type.message.contains("text/plain"),
        "{}",
        wrong_type.message
    );

    // The server still answers, and a duplicate _unique_id is answered only once.
    let dup_id = uuid::Uuid::new_v4().simple().to_string();
    let dup = request("rpc_ping", json!(ctx_wire), json!({"_unique_id": dup_id}));
    let first = raw_call(&fx, &dup, true)
        .await
        .expect("first copy answered");
    assert_eq!(first.failure, None);
    assert!(
        raw_call(&fx, &dup, true).await.is_none(),
        "duplicate must be dropped"
    );
    assert_eq!(fx.pings.load(Ordering::SeqCst), 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn a_reply_waits_for_its_reply_queue_to_appear() {
    let fx = start(Serializer::Plain).await;
    let reply_q = unique("late-reply");
    let msg_id = uuid::Uuid::new_v4().simple().to_string();
    let msg = object(json!({
        "method": "rpc_ping", "args": {}, "version": "1.0", "_msg_id": msg_id, "_reply_q": reply_q,
        "_timeout": null, "_unique_id": uuid::Uuid::new_v4().simple().to_string(),
    }));
    let body = envelope::wrap(&msg);
    let exchange = Topology::new(fx.transport.options()).topic_exchange(&fx.exchange);
    let routing_key = fx.target.routing_key();
    fx.transport
        .publish(&Outgoing {
            exchange: &fx.exchange,
            declare: Some(&exchange),
            routing_key: &routing_key,
            body: &body,
            mandatory: true,
            expiration_ms: Some(10_000),
        })
        .await
        .unwrap();
    // The server's first replies are returned (no queue yet); it retries every 250 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let spec = Topology::new(fx.transport.options()).reply_consumer(&reply_q);
    let mut consumer = fx
        .transport
        .consume(vec![spec], vec![reply_q.clone()])
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.deliveries.recv())
        .await
        .expect("the retried reply arrives")
        .unwrap();
    delivery.ack().await.unwrap();
    let reply = Reply::from_message(envelope::unwrap(&delivery.body).unwrap()).unwrap();
    assert_eq!(reply.msg_id, msg_id);
    assert_eq!(reply.result, json!(true));
    assert!(
        tokio::time::timeout(Duration::from_millis(700), consumer.deliveries.recv())
            .await
            .is_err(),
        "exactly one reply"
    );
    consumer.stop().await;
    fx.cleanup().await;
}
