//! The server's resource bounds and its recovery from a broker-side cancel, on the real
//! RabbitMQ: in-flight handlers never exceed `max_concurrency` and the broker never has more
//! than the prefetch count unacked; a reply whose queue is gone gives its work permit back at
//! once; a queue deleted under the server (`rabbitmqctl delete_queue`) is noticed and declared
//! again, and calls are answered again.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netiso_messaging::envelope;
use netiso_messaging::topology::Topology;
use netiso_messaging::transport::{DEFAULT_PREFETCH, Outgoing};
use netiso_messaging::{
    Args, CallError, Context, Dispatcher, RabbitOptions, RpcClient, RpcServer, Serializer,
    ServerConfig, Target, Transport, TransportError,
};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep};

use common::{connect, object, test_options, unique};

const NODE: &str = "rabbit@localhost";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn rabbitmqctl(args: &[&str]) -> String {
    let node = std::env::var("NETISO_TEST_RABBIT_NODE").unwrap_or_else(|_| NODE.to_owned());
    let output = Command::new("timeout")
        .args(["60", "rabbitmqctl", "-q", "-n", &node])
        .args(args)
        .env("HOME", "/var/lib/rabbitmq")
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run rabbitmqctl ({err}). Run `cargo xtask provision`")
        });
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed ({}{}). Run `cargo xtask provision`",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `messages_unacknowledged` of a queue, from the broker.
fn unacked(queue: &str) -> u64 {
    rabbitmqctl(&["list_queues", "name", "messages_unacknowledged"])
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("queue {queue} not listed by rabbitmqctl"))
}

struct Server {
    transport: Transport,
    exchange: String,
    target: Target,
    server: RpcServer,
}

async fn start(options: RabbitOptions, max_concurrency: usize, dispatcher: Dispatcher) -> Server {
    common::init_tracing();
    let transport = connect(options).await;
    let exchange = unique("bounded");
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: unique("topic"),
        server: Some(id),
        version: "1.0".into(),
    };
    let server = RpcServer::start(
        &transport,
        ServerConfig::new(exchange.clone(), target.clone(), Serializer::Plain)
            .with_max_concurrency(max_concurrency),
        dispatcher,
    )
    .await
    .unwrap();
    Server {
        transport,
        exchange,
        target,
        server,
    }
}

impl Server {
    fn client(&self) -> RpcClient {
        RpcClient::new(&self.transport, &self.exchange, Serializer::Plain)
    }

    async fn stop(self) {
        self.server.stop().await;
        for queue in [self.target.topic.clone(), self.target.routing_key()] {
            let _ = self.transport.delete_queue(&queue).await;
        }
        let _ = self.transport.delete_exchange(&self.exchange).await;
        self.transport.close();
    }
}

fn ping_dispatcher() -> Dispatcher {
    let mut d = Dispatcher::new("1.0").unwrap();
    d.register("rpc_ping", |_ctx: Context, args: Args| async move {
        args.finish()?;
        Ok(json!(true))
    });
    d
}

#[tokio::test]
async fn in_flight_work_and_unacked_deliveries_stay_bounded() {
    const MAX_CONCURRENCY: usize = 2;
    const CASTS: usize = 200;
    let gate = Arc::new(Semaphore::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut d = Dispatcher::new("1.0").unwrap();
    {
        let (gate, running, peak, done) =
            (gate.clone(), running.clone(), peak.clone(), done.clone());
        d.register("work", move |_ctx: Context, _args: Args| {
            let (gate, running, peak, done) =
                (gate.clone(), running.clone(), peak.clone(), done.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        });
    }
    let fx = start(test_options(), MAX_CONCURRENCY, d).await;
    let client = fx.client();
    let mut direct = fx.target.clone();
    direct.server = None;
    for _ in 0..CASTS {
        client
            .cast(&direct, "work", Map::new(), &Context::fresh())
            .await
            .unwrap();
    }
    // Handlers block: the server holds MAX_CONCURRENCY, the broker at most the prefetch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.load(Ordering::SeqCst) < MAX_CONCURRENCY {
        assert!(Instant::now() < deadline, "the handlers did not start");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(500)).await;
    let unacked_while_blocked = unacked(&fx.target.topic);
    println!(
        "blocked: {} handlers running (bound {MAX_CONCURRENCY}), {unacked_while_blocked} unacked at the broker (prefetch {DEFAULT_PREFETCH}), {CASTS} casts sent",
        running.load(Ordering::SeqCst)
    );
    assert_eq!(running.load(Ordering::SeqCst), MAX_CONCURRENCY);
    assert!(
        unacked_while_blocked <= u64::from(DEFAULT_PREFETCH),
        "{unacked_while_blocked} unacked > prefetch {DEFAULT_PREFETCH}"
    );
    gate.add_permits(CASTS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < CASTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CASTS} casts handled",
            done.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), MAX_CONCURRENCY);
    client.close().await;
    fx.stop().await;
}

#[tokio::test]
async fn a_reply_to_a_missing_queue_frees_its_permit_at_once() {
    // One permit, and a missing reply queue retried for 30 s: if the retry held the permit,
    // the next call would wait 30 s.
    let mut options = test_options();
    options.kombu_missing_consumer_retry_timeout = Duration::from_secs(30);
    let fx = start(options, 1, ping_dispatcher()).await;
    let exchange_spec = Topology::new(fx.transport.options()).topic_exchange(&fx.exchange);
    let routing_key = fx.target.routing_key();
    // More orphan calls than background retry slots: the surplus replies are dropped.
    let orphans = netiso_messaging::server::REPLY_RETRY_SLOTS + 4;
    for _ in 0..orphans {
        let msg = object(json!({
            "method": "rpc_ping", "args": {}, "version": "1.0",
            "_msg_id": uuid::Uuid::new_v4().simple().to_string(),
            "_reply_q": unique("gone"), "_timeout": null,
            "_unique_id": uuid::Uuid::new_v4().simple().to_string(),
        }));
        fx.transport
            .publish(&Outgoing {
                exchange: &fx.exchange,
                declare: Some(&exchange_spec),
                routing_key: &routing_key,
                body: &envelope::wrap(&msg),
                mandatory: true,
                expiration_ms: None,
            })
            .await
            .unwrap();
    }
    let client = fx.client();
    let started = Instant::now();
    let answer = client
        .call(
            &fx.target,
            "rpc_ping",
            Map::new(),
            &Context::fresh(),
            Duration::from_secs(10),
        )
        .await
        .expect("answered while the orphan replies are retried");
    assert_eq!(answer, json!(true));
    println!(
        "{orphans} replies to a missing queue, one permit: next call answered after {:?} (retry timeout 30 s)",
        started.elapsed()
    );
    client.close().await;
    fx.stop().await;
}

/// Calls until answered; returns how long it took.
async fn ping_until_answered(client: &RpcClient, target: &Target, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match client
            .call(
                target,
                "rpc_ping",
                Map::new(),
                &Context::fresh(),
                Duration::from_secs(1),
            )
            .await
        {
            Ok(value) => {
                assert_eq!(value, json!(true));
                return started.elapsed();
            }
            Err(
                CallError::Timeout { .. } | CallError::Transport(TransportError::Returned { .. }),
            ) => {
                assert!(
                    started.elapsed() < within,
                    "not answered within {within:?} after the queue was deleted"
                );
                sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("call failed: {err}"),
        }
    }
}

#[tokio::test]
async fn a_queue_deleted_by_the_broker_is_declared_again() {
    let fx = start(test_options(), 4, ping_dispatcher()).await;
    let client = fx.client();
    let mut direct = fx.target.clone();
    direct.server = None;
    ping_until_answered(&client, &fx.target, CALL_TIMEOUT).await;
    // Each of the three queues in turn: server, topic, fanout.
    for (queue, target) in [
        (fx.target.routing_key(), fx.target.clone()),
        (fx.target.topic.clone(), direct.clone()),
        (fx.server.fanout_queue().to_owned(), fx.target.clone()),
    ] {
        rabbitmqctl(&["delete_queue", &queue]);
        let took = ping_until_answered(&client, &target, Duration::from_secs(15)).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !fx.transport.queue_exists(&queue).await.unwrap() {
            assert!(Instant::now() < deadline, "{queue} not declared again");
            sleep(Duration::from_millis(50)).await;
        }
        println!("queue {queue} deleted by rabbitmqctl: answered again after {took:?}");
    }
    // The fanout queue came back too: a fanout cast reaches the server again (checked
    // through a call on the server's own queue afterwards: nothing was lost or stuck).
    client
        .fanout_cast(&fx.target, "rpc_ping", Map::new(), &Context::fresh())
        .await
        .unwrap();
    ping_until_answered(&client, &fx.target, CALL_TIMEOUT).await;
    client.close().await;
    fx.stop().await;
}
