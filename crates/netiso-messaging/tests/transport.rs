//! The transport on the real broker: failover across hosts, clear errors when no broker is
//! reachable, publisher confirms and returns.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::time::Duration;

use netiso_messaging::error::TransportError;
use netiso_messaging::topology::Topology;
use netiso_messaging::transport::Outgoing;
use netiso_messaging::{BrokerConfig, BrokerHost, Transport};

use common::{broker_config, connect, test_options, unique};

fn dead_host() -> BrokerHost {
    // Port 1 on loopback refuses connections at once.
    BrokerHost {
        hostname: "127.0.0.1".into(),
        port: 1,
        username: "guest".into(),
        password: "guest".into(),
    }
}

#[tokio::test]
async fn fails_over_to_a_reachable_host() {
    common::init_tracing();
    let real = broker_config();
    let config = BrokerConfig {
        hosts: vec![dead_host(), dead_host(), real.hosts[0].clone()],
        virtual_host: real.virtual_host,
    };
    let transport = Transport::connect(config, test_options(), Duration::from_secs(15))
        .await
        .unwrap_or_else(|err| {
            panic!("no failover to the live broker: {err}. Run `cargo xtask provision`")
        });
    assert!(transport.is_connected());
    transport.close();
}

#[tokio::test]
async fn unreachable_brokers_give_a_clear_error() {
    let config = BrokerConfig {
        hosts: vec![dead_host()],
        virtual_host: "/".into(),
    };
    let err = Transport::connect(config, test_options(), Duration::from_millis(1500))
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        matches!(err, TransportError::Unreachable { attempts, .. } if attempts >= 2),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.1:1") && text.contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn publishes_are_confirmed_or_returned() {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let queue = unique("confirm");
    let spec = Topology::new(transport.options()).reply_consumer(&queue);
    let mut consumer = transport
        .consume(vec![spec], vec![queue.clone()])
        .await
        .unwrap();
    let publish = |routing_key: String| {
        let transport = transport.clone();
        async move {
            transport
                .publish(&Outgoing {
                    exchange: "",
                    declare: None,
                    routing_key: &routing_key,
                    body: b"{}",
                    mandatory: true,
                    expiration_ms: None,
                })
                .await
        }
    };
    // Concurrent publishes on one channel: the broker may merge their acks.
    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(publish(queue.clone())))
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for _ in 0..50 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.deliveries.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
        delivery.ack().await.unwrap();
    }
    match publish(unique("nowhere")).await {
        Err(TransportError::Returned { code, .. }) => assert_eq!(code, 312),
        other => panic!("an unroutable mandatory publish must be returned, got {other:?}"),
    }
    let too_long = "q".repeat(256);
    assert!(matches!(
        publish(too_long).await,
        Err(TransportError::Config(_))
    ));
    consumer.stop().await;
    transport.close();
}

/// A loopback TCP proxy to the broker whose existing connections can be frozen: the bytes stop
/// flowing but the sockets stay open, like a broker behind a dead network path.
struct FreezableProxy {
    port: u16,
    frozen: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watch) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let mut freeze = watch.clone();
                let generation = *freeze.borrow_and_update();
                tokio::spawn(async move {
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = async { freeze.wait_for(|g| *g > generation).await.is_ok() } => {
                            // Hold the sockets open and silent until the test ends.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Self { port, frozen, task }
    }

    /// Silences every connection open now; later connections flow normally.
    fn freeze_existing(&self) {
        self.frozen.send_modify(|g| *g += 1);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_silent_broker_is_detected_by_heartbeat_and_the_server_resumes() {
    use netiso_messaging::{
        Args, Context, Dispatcher, RpcClient, RpcServer, Serializer, ServerConfig, Target,
    };
    use serde_json::json;

    common::init_tracing();
    let real = broker_config();
    let broker = format!("{}:{}", real.hosts[0].hostname, real.hosts[0].port);
    let proxy = FreezableProxy::start(broker).await;
    let mut via_proxy = real.clone();
    via_proxy.hosts[0].hostname = "127.0.0.1".into();
    via_proxy.hosts[0].port = proxy.port;
    let mut options = test_options();
    options.heartbeat_timeout_threshold = 2;
    let server_transport = Transport::connect(via_proxy, options, Duration::from_secs(10))
        .await
        .unwrap_or_else(|err| {
            panic!("broker unreachable through the proxy: {err}. Run `cargo xtask provision`")
        });
    let client_transport = connect(test_options()).await;

    let exchange = unique("ex");
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: "1.3".into(),
    };
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    dispatcher.register("rpc_ping", |_ctx: Context, args: Args| async move {
        args.finish()?;
        Ok(json!(true))
    });
    let server = RpcServer::start(
        &server_transport,
        ServerConfig::new(exchange.clone(), target.clone(), Serializer::Plain)
            .with_max_concurrency(4),
        dispatcher,
    )
    .await
    .unwrap();
    let client = RpcClient::new(&client_transport, &exchange, Serializer::Plain);
    let ctx = Context::fresh();
    let ping = || {
        client.call(
            &target,
            "rpc_ping",
            serde_json::Map::new(),
            &ctx,
            Duration::from_secs(2),
        )
    };
    assert_eq!(ping().await.unwrap(), json!(true));

    proxy.freeze_existing();
    let frozen_at = tokio::time::Instant::now();
    let mut answered = false;
    while frozen_at.elapsed() < Duration::from_secs(40) {
        if ping().await.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "the server did not resume within 40 s of the broker going silent"
    );
    eprintln!(
        "server answered again {:?} after the freeze",
        frozen_at.elapsed()
    );

    client.close().await;
    server.stop().await;
    for queue in [target.topic.clone(), target.routing_key()] {
        client_transport.delete_queue(&queue).await.unwrap();
    }
    client_transport.delete_exchange(&exchange).await.unwrap();
}

#[tokio::test]
async fn abandoned_publishes_do_not_confuse_later_confirms() {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let queue = unique("abandon");
    let spec = Topology::new(transport.options()).reply_consumer(&queue);
    let mut consumer = transport
        .consume(vec![spec], vec![queue.clone()])
        .await
        .unwrap();
    let outgoing = |body: &'static [u8]| Outgoing {
        exchange: "",
        declare: None,
        routing_key: "",
        body,
        mandatory: true,
        expiration_ms: None,
    };
    // Callers that give up at once: their publishes still complete in the background.
    for _ in 0..30 {
        let mut msg = outgoing(b"{\"abandoned\": true}");
        msg.routing_key = &queue;
        let _ = tokio::time::timeout(Duration::from_micros(1), transport.publish(&msg)).await;
    }
    for _ in 0..20 {
        let mut msg = outgoing(b"{}");
        msg.routing_key = &queue;
        transport.publish(&msg).await.unwrap();
    }
    let nowhere = unique("nowhere");
    let mut msg = outgoing(b"{}");
    msg.routing_key = &nowhere;
    assert!(matches!(
        transport.publish(&msg).await,
        Err(TransportError::Returned { code: 312, .. })
    ));
    let mut received = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), consumer.deliveries.recv()).await
    {
        delivery.ack().await.unwrap();
        received += 1;
    }
    assert_eq!(
        received, 50,
        "abandoned publishes are still delivered, once"
    );
    consumer.stop().await;
    transport.close();
}
