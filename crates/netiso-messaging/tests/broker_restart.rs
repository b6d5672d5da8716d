//! Stopping and restarting RabbitMQ mid-traffic: the server resumes by itself, no call is
//! answered twice, and no cast our client saw confirmed is lost. Topic queues are durable here
//! (`amqp_durable_queues`): with oslo's default transient queues a broker restart drops queued
//! messages by design, for Python as for us.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netiso_messaging::{Context, RpcClient, RpcServer, Serializer, ServerConfig, Target};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

use common::{Seen, connect, object, test_options, unique};

const NODE: &str = "rabbit@localhost";

fn rabbitmqctl(action: &str) -> Result<(), String> {
    let node = std::env::var("NETISO_TEST_RABBIT_NODE").unwrap_or_else(|_| NODE.to_owned());
    let output = Command::new("timeout")
        .args(["60", "rabbitmqctl", "-n", &node, action])
        .env("HOME", "/var/lib/rabbitmq")
        .output()
        .map_err(|err| format!("cannot run rabbitmqctl: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {action} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Restarts the broker application even if the test fails half-way.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl("start_app") {
            eprintln!("could not restore the broker: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_survive_a_broker_restart() {
    common::init_tracing();
    if let Err(err) = rabbitmqctl("status") {
        panic!("rabbitmqctl cannot reach the broker node ({err}). Run `cargo xtask provision`");
    }
    let mut options = test_options();
    options.amqp_durable_queues = true;
    let server_transport = connect(options.clone()).await;
    let client_transport = connect(options).await;
    let exchange = unique("ex");
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: "1.3".into(),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dispatcher = common::recording_dispatcher(&seen);
    let server = RpcServer::start(
        &server_transport,
        ServerConfig::new(exchange.clone(), target.clone(), Serializer::Plain)
            .with_max_concurrency(8),
        dispatcher,
    )
    .await
    .unwrap();
    let client = RpcClient::new(&client_transport, &exchange, Serializer::Plain);
    let ctx = Context::fresh();

    let guard = BrokerGuard;
    let mut confirmed = BTreeSet::new();
    let mut answered_after_restart = 0;
    let mut restarted_at = None;
    let started = Instant::now();
    let mut n: u64 = 0;
    while answered_after_restart < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no recovery within 120 s"
        );
        if restarted_at.is_none() && n == 20 {
            let traffic = {
                let client = client.clone();
                let target = target.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    // Keep casting while the broker goes down.
                    let mut ok = Vec::new();
                    for k in 1_000_000..1_000_040u64 {
                        if client
                            .cast(&target, "record", object(json!({"n": k})), &ctx)
                            .await
                            .is_ok()
                        {
                            ok.push(k);
                        }
                        sleep(Duration::from_millis(25)).await;
                    }
                    ok
                })
            };
            sleep(Duration::from_millis(150)).await;
            rabbitmqctl("stop_app").unwrap();
            sleep(Duration::from_secs(1)).await;
            rabbitmqctl("start_app").unwrap();
            restarted_at = Some(Instant::now());
            confirmed.extend(traffic.await.unwrap());
        }
        if client
            .cast(&target, "record", object(json!({"n": n})), &ctx)
            .await
            .is_ok()
        {
            confirmed.insert(n);
        }
        match client
            .call(
                &target,
                "echo",
                object(json!({"n": n})),
                &ctx,
                Duration::from_secs(5),
            )
            .await
        {
            Ok(value) => {
                assert_eq!(value, json!(n), "a reply must answer its own call");
                if restarted_at.is_some() {
                    answered_after_restart += 1;
                }
            }
            Err(err) => assert!(
                restarted_at.is_some() || n >= 20,
                "call {n} failed before the restart: {err}"
            ),
        }
        n += 1;
        sleep(Duration::from_millis(20)).await;
    }
    drop(guard);

    // Every confirmed cast arrives, exactly once.
    common::wait_for_casts(&seen, &confirmed, Duration::from_secs(20)).await;
    {
        let seen = seen.lock().unwrap();
        seen.assert_none_ran_twice();
        assert!(
            confirmed.len() > 20,
            "too few confirmed casts to mean anything: {}",
            confirmed.len()
        );
    }
    let recovery = restarted_at.map(|t| t.elapsed());
    eprintln!(
        "confirmed casts: {}, calls made: {n}, time since restart: {recovery:?}",
        confirmed.len()
    );

    client.close().await;
    timeout(Duration::from_secs(10), server.stop())
        .await
        .unwrap();
    for queue in [target.topic.clone(), target.routing_key()] {
        server_transport.delete_queue(&queue).await.unwrap();
    }
    server_transport.delete_exchange(&exchange).await.unwrap();
}
