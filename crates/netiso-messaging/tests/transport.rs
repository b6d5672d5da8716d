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
