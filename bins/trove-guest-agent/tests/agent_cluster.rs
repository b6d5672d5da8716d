//! The agent binary on a three-node RabbitMQ cluster (`cargo xtask provision
//! --rabbit-cluster`), as a Trove control plane runs one: the three hosts in its
//! `transport_url`, reached over the guest's management network, and quorum queues
//! (`rabbit_quorum_queue = True`). The node leading the agent's queue is killed while the
//! agent heartbeats every second: calls are answered again and heartbeats resume, each within
//! a bound, and the figures are printed. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::{AgentSetup, KEY, RunningAgent, TestBroker};
use netiso_messaging::test_support::cluster::{self, Loss, LostNode, ONE_NODE_AT_A_TIME};
use netiso_messaging::{Context, RpcClient, Target};
use serde_json::{Map, Value};

/// How long the agent may take to answer again, and to heartbeat again, after the loss.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

async fn ping(client: &RpcClient, target: &Target) -> bool {
    client
        .call(
            target,
            "rpc_ping",
            Map::new(),
            &Context::fresh(),
            Duration::from_secs(3),
        )
        .await
        .is_ok_and(|value| value == Value::Bool(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_and_heartbeats_again_after_its_queue_leader_is_killed() {
    let _one_at_a_time = ONE_NODE_AT_A_TIME.lock().await;
    if let Err(err) = cluster::check_reachable() {
        panic!("{err}");
    }
    let mut setup = AgentSetup::new("cluster", Some(KEY));
    setup.transport_url = cluster::guest_url().replace("amqp://", "rabbit://");
    setup.rabbit_options = vec!["rabbit_quorum_queue = True".into()];
    setup.test_broker = TestBroker {
        url: cluster::test_url(),
        quorum_queues: true,
    };
    let mut run = RunningAgent::start(&setup).await;
    // Prepared: the agent heartbeats, every second.
    let state = run.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("guestagent.prepare.end"), b"").expect("prepare marker");
    run.restart_agent("cluster", &["--heartbeat-interval", "1"])
        .await;
    let first = run.conductor.next(Duration::from_secs(20)).await;
    assert_eq!(first.method, "heartbeat", "{first:?}");

    let queue = run.target.topic.clone();
    let leader = cluster::leader_of(&queue).unwrap_or_else(|| {
        panic!(
            "{queue} is not a quorum queue with a leader; agent log:\n{}",
            run.agent.log_text()
        )
    });
    let mut lost = LostNode::lose(&leader, Loss::Kill).expect("kill the leader");
    let killed = Instant::now();

    let answered_after = loop {
        assert!(
            killed.elapsed() < RECOVERY_BOUND,
            "no rpc_ping answered within {RECOVERY_BOUND:?} of killing {leader}; agent log:\n{}",
            run.agent.log_text()
        );
        if ping(&run.client, &run.target).await {
            break killed.elapsed();
        }
    };
    let heartbeat_after = loop {
        let left = RECOVERY_BOUND.saturating_sub(killed.elapsed());
        let event = run.conductor.next(left).await;
        if event.method == "heartbeat" && event.received_at > killed {
            break event.received_at - killed;
        }
    };
    assert!(run.agent.is_running(), "the agent exited");
    let new_leader = cluster::leader_of(&queue);
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != leader),
        "{queue} should be led by another node than {leader}, is {new_leader:?}"
    );
    lost.restore().expect("the killed node rejoins");
    assert!(
        ping(&run.client, &run.target).await,
        "the agent stopped answering once the node came back"
    );
    eprintln!(
        "killed {leader} (leading {queue}): rpc_ping answered after {answered_after:?}, \
         heartbeat after {heartbeat_after:?}, new leader {new_leader:?}"
    );
    run.finish().await;
}
