//! A three-node RabbitMQ cluster (`cargo xtask provision --rabbit-cluster`) with quorum
//! queues (`rabbit_quorum_queue = True`, as a Trove control plane runs it) loses the node
//! that leads the server's queue while casts and calls flow, stopped cleanly or killed: every
//! cast the client saw confirmed runs exactly once, no call is answered twice, calls are
//! answered again after a bounded time, on the nodes that are left. The lost node is brought
//! back (and rejoins) when the test ends, also when it fails.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netiso_config::TransportUrl;
use netiso_messaging::{
    Args, BrokerConfig, Context, Dispatcher, RpcClient, RpcServer, Serializer, ServerConfig,
    Target, Transport,
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};

use common::{object, test_options, unique};

const DEFAULT_CLUSTER_URL: &str =
    "amqp://guest:guest@127.0.0.1:5681,guest:guest@127.0.0.1:5682,guest:guest@127.0.0.1:5683/%2f";
const DEFAULT_NODES: &str = "netiso-c1@localhost,netiso-c2@localhost,netiso-c3@localhost";
const DEFAULT_STATE: &str = "/var/lib/trove-netiso/rabbit-cluster";
/// How long the cluster may take to answer a call again after losing a queue's leader.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

fn cluster_url() -> String {
    std::env::var("NETISO_TEST_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned())
}

fn nodes() -> Vec<String> {
    std::env::var("NETISO_TEST_CLUSTER_NODES")
        .unwrap_or_else(|_| DEFAULT_NODES.to_owned())
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn rabbitmqctl(node: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("timeout")
        .args(["60", "rabbitmqctl", "-n", node, "-q"])
        .args(args)
        .env("HOME", "/var/lib/rabbitmq")
        .output()
        .map_err(|err| format!("cannot run rabbitmqctl: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl -n {node} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The node leading quorum queue `queue`, asked of any node that answers.
fn leader_of(queue: &str) -> Option<String> {
    nodes().iter().find_map(|node| {
        let text = rabbitmqctl(
            node,
            &[
                "list_queues",
                "name",
                "type",
                "leader",
                "--formatter",
                "json",
            ],
        )
        .ok()?;
        let queues: Value = serde_json::from_str(&text).ok()?;
        queues.as_array()?.iter().find_map(|q| {
            (q.get("name")?.as_str()? == queue && q.get("type")?.as_str()? == "quorum")
                .then(|| q.get("leader")?.as_str().map(str::to_owned))
                .flatten()
        })
    })
}

/// How the leader is lost.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `rabbitmqctl stop_app`: the node leaves in order.
    Stop,
    /// SIGKILL of the node's Erlang VM: no goodbye to clients or peers.
    Kill,
}

/// The Erlang VM (`beam.smp`) running `node`, found by the node name in its environment.
fn beam_of(node: &str) -> Option<u32> {
    let wanted = format!("RABBITMQ_NODENAME={node}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            (comm.trim() == "beam.smp"
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes()))
            .then_some(pid)
        })
}

/// Brings the lost node back even if the test fails half-way, and waits until the cluster
/// has it again, so that the next test finds three nodes.
struct NodeGuard {
    node: String,
    loss: Loss,
    restored: bool,
}

impl NodeGuard {
    fn restore(&mut self) -> Result<(), String> {
        self.restored = true;
        match self.loss {
            Loss::Stop => rabbitmqctl(&self.node, &["start_app"]).map(drop)?,
            Loss::Kill => {
                let short = self
                    .node
                    .trim_start_matches("netiso-")
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let state = std::env::var("NETISO_TEST_CLUSTER_STATE")
                    .unwrap_or_else(|_| DEFAULT_STATE.to_owned());
                let script = format!("{state}/{short}/start-node.sh");
                let log = format!("/var/log/trove-netiso/rabbitmq-{short}.log");
                let status = Command::new("sh")
                    .args([
                        "-c",
                        &format!("setsid -f sh {script} >> {log} 2>&1 < /dev/null"),
                    ])
                    .status()
                    .map_err(|err| format!("cannot run {script}: {err}"))?;
                if !status.success() {
                    return Err(format!("{script} failed: {status}"));
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            let back = nodes()
                .iter()
                .filter(|n| **n != self.node)
                .any(|n| running_members(n).contains(&self.node));
            if back {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "{} did not rejoin the cluster within 120 s",
            self.node
        ))
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if !self.restored
            && let Err(err) = self.restore()
        {
            eprintln!("could not bring back node {}: {err}", self.node);
        }
    }
}

/// The running members of the cluster, as `node` reports them (none when it does not answer).
fn running_members(node: &str) -> Vec<String> {
    rabbitmqctl(node, &["cluster_status", "--formatter", "json"])
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|status| {
            Some(
                status
                    .get("running_nodes")?
                    .as_array()?
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

async fn connect_cluster() -> Transport {
    let url = cluster_url();
    let parsed = TransportUrl::from_str(&url).unwrap();
    let config = BrokerConfig::from_transport_url(&parsed).unwrap();
    let mut options = test_options();
    options.rabbit_quorum_queue = true;
    match Transport::connect(config, options, Duration::from_secs(10)).await {
        Ok(transport) => transport,
        Err(err) => panic!(
            "the RabbitMQ cluster is not reachable at {url}: {err}. Run `cargo xtask provision \
             --rabbit-cluster`"
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

/// Tests that lose a node run one at a time: two nodes lost at once is a quorum lost.
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn lose_the_leader(loss: Loss) {
    let _one_at_a_time = ONE_NODE_AT_A_TIME.lock().await;
    common::init_tracing();
    for node in nodes() {
        if let Err(err) = rabbitmqctl(&node, &["status"]) {
            panic!(
                "cluster node {node} does not answer ({err}). Run `cargo xtask provision \
                 --rabbit-cluster`"
            );
        }
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
    let leader = leader_of(&queue).unwrap_or_else(|| {
        panic!(
            "{queue} is not a quorum queue with a leader: {nodes:?}",
            nodes = nodes()
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
    let mut guard = NodeGuard {
        node: leader.clone(),
        loss,
        restored: false,
    };
    match loss {
        Loss::Stop => drop(rabbitmqctl(&leader, &["stop_app"]).unwrap()),
        Loss::Kill => {
            let pid = beam_of(&leader).unwrap_or_else(|| panic!("no beam.smp runs {leader}"));
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -KILL {pid} failed");
        }
    }
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
    let new_leader = leader_of(&queue);
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != leader),
        "{queue} should be led by another node than {leader}, is {new_leader:?}"
    );
    let confirmed = traffic.await.unwrap();
    guard.restore().unwrap();

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
