//! A three-node RabbitMQ cluster (`cargo xtask provision --rabbit-cluster`) with quorum
//! queues (`rabbit_quorum_queue = True`, as a Trove control plane runs it) loses the node
//! that leads the server's queue while casts and calls flow, stopped cleanly or killed: every
//! cast the client saw confirmed runs exactly once, no call is answered twice, calls are
//! answered again after a bounded time, on the nodes that are left. The lost node is brought
//! back (and rejoins) when the test ends, also when it fails.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netiso_config::TransportUrl;
use netiso_messaging::test_support::cluster::{self, Loss, LostNode, ONE_NODE_AT_A_TIME};
use netiso_messaging::{
    Args, BrokerConfig, Context, Dispatcher, RpcClient, RpcServer, Serializer, ServerConfig,
    Target, Transport,
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};

use common::{object, test_options, unique};

/// How long the cluster may take to answer a call again after losing a queue's leader.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

async fn connect_cluster() -> Transport {
    let url = cluster::test_url();
    let parsed = TransportUrl::from_str(&url).unwrap();
    let config = BrokerConfig::from_transport_url(&parsed).unwrap();
    let mut options = test_options();
    options.rabbit_quorum_queue = true;
    match Transport::connect(config, options, Duration::from_secs(10)).await {
        Ok(transport) => transport,
        Err(err) => panic!(
            "the RabbitMQ cluster is not reachable at {url}: {err}: {}",
            cluster::PROVISION_HINT
        ),
    }
}

#[derive(Default)]
struct Seen {
    calls: HashMap<u64, u32>,
    casts: HashMap<u64, u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_survive_their_leader_stopping() {
    lose_the_leader(Loss::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_survive_their_leader_killed() {
    lose_the_leader(Loss::Kill).await;
}

async fn lose_the_leader(loss: Loss) {
    let _one_at_a_time = ONE_NODE_AT_A_TIME.lock().await;
    common::init_tracing();
    if let Err(err) = cluster::check_reachable() {
        panic!("{err}");
    }
    let server_transport = connect_cluster().await;
    let client_transport = connect_cluster().await;
    let exchange = unique("cluster");
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: "1.3".into(),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    let calls = Arc::clone(&seen);
    dispatcher.register("echo", move |_ctx: Context, mut args: Args| {
        let seen = Arc::clone(&calls);
        async move {
            let n: u64 = args.take("n")?;
            *seen.lock().unwrap().calls.entry(n).or_default() += 1;
            Ok(json!(n))
        }
    });
    let casts = Arc::clone(&seen);
    dispatcher.register("record", move |_ctx: Context, mut args: Args| {
        let seen = Arc::clone(&casts);
        async move {
            let n: u64 = args.take("n")?;
            *seen.lock().unwrap().casts.entry(n).or_default() += 1;
            Ok(Value::Null)
        }
    });
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
    let call = |n: u64, wait: Duration| {
        let (client, target, ctx) = (client.clone(), target.clone(), ctx.clone());
        async move {
            client
                .call(&target, "echo", object(json!({"n": n})), &ctx, wait)
                .await
        }
    };
    assert_eq!(call(0, Duration::from_secs(10)).await.unwrap(), json!(0));

    let queue = target.routing_key();
    let leader = cluster::leader_of(&queue).unwrap_or_else(|| {
        panic!(
            "{queue} is not a quorum queue with a leader: {nodes:?}",
            nodes = cluster::nodes()
        )
    });

    // Casts keep flowing while the leader goes.
    let traffic = {
        let (client, target, ctx) = (client.clone(), target.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut confirmed = BTreeSet::new();
            for k in 1_000..1_150u64 {
                if client
                    .cast(&target, "record", object(json!({"n": k})), &ctx)
                    .await
                    .is_ok()
                {
                    confirmed.insert(k);
                }
                sleep(Duration::from_millis(20)).await;
            }
            confirmed
        })
    };
    sleep(Duration::from_millis(500)).await;
    let mut lost = LostNode::lose(&leader, loss).unwrap();
    let stopped = Instant::now();

    // Calls fail or time out while the queue elects a new leader, then are answered.
    let mut n = 1;
    let recovered = loop {
        assert!(
            stopped.elapsed() < RECOVERY_BOUND,
            "no call answered within {RECOVERY_BOUND:?} of stopping {leader}"
        );
        if let Ok(value) = call(n, Duration::from_secs(3)).await {
            assert_eq!(value, json!(n), "a reply must answer its own call");
            break stopped.elapsed();
        }
        n += 1;
    };
    let new_leader = cluster::leader_of(&queue);
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != leader),
        "{queue} should be led by another node than {leader}, is {new_leader:?}"
    );
    let confirmed = traffic.await.unwrap();
    lost.restore().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<u64> = {
            let seen = seen.lock().unwrap();
            confirmed
                .iter()
                .copied()
                .filter(|k| !seen.casts.contains_key(k))
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed casts lost: {missing:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    {
        let seen = seen.lock().unwrap();
        let twice: Vec<_> = seen.calls.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "calls handled more than once: {twice:?}");
        let dup_casts: Vec<_> = seen.casts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            dup_casts.is_empty(),
            "casts handled more than once: {dup_casts:?}"
        );
        assert!(
            confirmed.len() >= 75,
            "too few confirmed casts to mean anything: {}",
            confirmed.len()
        );
    }
    eprintln!(
        "leader {leader} lost ({loss:?}): first call answered after {recovered:?}, new leader \
         {new_leader:?}, {} casts confirmed, all run once",
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
