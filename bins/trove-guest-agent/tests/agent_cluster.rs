//! The agent binary on a three-node RabbitMQ cluster (`cargo xtask provision
//! --rabbit-cluster`), as a Trove control plane runs one: the three hosts in its
//! `transport_url`, reached over the guest's management network, quorum queues
//! (`rabbit_quorum_queue = True`), a heartbeat every second. Two ways of losing a node:
//!
//! - the node leading the agent's queue is killed: calls are answered again and heartbeats
//!   resume, each within a bound;
//! - the node the agent is connected to, which also leads its queue, is cut off from the
//!   guest's management network (packets dropped inside the guest's namespace, connections
//!   left open, the node still in the cluster): the agent notices through its AMQP heartbeat,
//!   moves to another node, answers and heartbeats again within a bound, calls meanwhile fail
//!   only by timing out, and every cast the broker confirmed to Trove's API runs exactly once
//!   (its failure report reaches the conductor once; a report the agent published in the
//!   instant before the cut is lost with the dead connection, and the agent logs that).
//!
//! The figures are printed. Needs root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{AgentSetup, ConductorEvent, KEY, RunningAgent, TestBroker, TestConductor, args};
use netiso_messaging::test_support::cluster::{self, Loss, LostNode, ONE_NODE_AT_A_TIME};
use netiso_messaging::test_support::partition::{self, PartitionedNode};
use netiso_messaging::{CallError, Context, RpcClient, Target};
use serde_json::{Map, Value, json};

/// How long the agent may take to answer again, and to heartbeat again, after the loss.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// The same after a partition, where nothing tells the agent that its connection is dead:
/// amqprs gives it up after two heartbeat periods without a frame from the broker (the agent
/// negotiates oslo's default `heartbeat_timeout_threshold`, 60 s, so 120 s, as py-amqp under
/// oslo.messaging does), and the broker drops the agent's old consumer, which keeps its share
/// of the requests until then, after two periods of silence too (120 to 180 s). Reconnecting
/// takes seconds on top.
const PARTITION_BOUND: Duration = Duration::from_secs(240);
/// How long each `rpc_ping` waits for its answer.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How often Trove's API casts to the agent during the partition test.
const CAST_PERIOD: Duration = Duration::from_millis(100);
/// At most this many casts (the cast loop's bound: longer than [`PARTITION_BOUND`]).
const MAX_CASTS: u64 = 3_000;
/// How long after the cut every confirmed cast must have been reported by the agent.
const REPORT_BOUND: Duration = Duration::from_secs(300);
/// How long reports are still collected once every confirmed cast has one (a cast run twice
/// shows up here).
const LATE_REPORTS: Duration = Duration::from_secs(3);
/// What the agent logs when a cast's failure report could not be published.
const LOST_REPORT: &str = "notify_exc_info not sent";
/// What the agent logs when it drops a redelivered cast of the test's it already ran.
const DROPPED_DUPLICATE: [&str; 2] = [
    "dropped a duplicate or replayed message",
    "method=create_database",
];
/// The request ids of the partition test's casts: this prefix and the cast's number.
const REQUEST_PREFIX: &str = "req-partition-";

/// Epoch seconds now, as the agent's heartbeats carry them in `sent`.
fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One `rpc_ping` as Trove's API sends it: `Ok` when the agent answered within
/// [`PING_TIMEOUT`].
async fn ping(client: &RpcClient, target: &Target) -> Result<(), CallError> {
    let value = client
        .call(
            target,
            "rpc_ping",
            Map::new(),
            &Context::fresh(),
            PING_TIMEOUT,
        )
        .await?;
    assert_eq!(value, Value::Bool(true), "rpc_ping answers true");
    Ok(())
}

/// Starts the agent on the cluster: the three hosts over the management network, quorum
/// queues; its queues are declared once it answers `rpc_ping`. It is marked prepared, so that
/// [`heartbeat_every_second`] makes it heartbeat.
async fn start_on_cluster(name: &str) -> RunningAgent {
    if let Err(err) = cluster::check_reachable() {
        panic!("{err}");
    }
    let mut setup = AgentSetup::new(name, Some(KEY));
    setup.transport_url = cluster::guest_url().replace("amqp://", "rabbit://");
    setup.rabbit_options = vec!["rabbit_quorum_queue = True".into()];
    setup.test_broker = TestBroker {
        url: cluster::test_url(),
        quorum_queues: true,
    };
    let run = RunningAgent::start(&setup).await;
    let state = run.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("guestagent.prepare.end"), b"").expect("prepare marker");
    run
}

/// Restarts the agent heartbeating every second (Trove: every 60 s) and waits for its first
/// heartbeat.
async fn heartbeat_every_second(run: &mut RunningAgent, log_name: &str) {
    run.restart_agent(log_name, &["--heartbeat-interval", "1"])
        .await;
    let first = run.conductor.next(Duration::from_secs(20)).await;
    assert_eq!(first.method, "heartbeat", "{first:?}");
}

/// The node leading the agent's topic queue (the queue Trove's API calls it on).
fn leader_of_queue(run: &RunningAgent) -> String {
    let queue = &run.target.topic;
    cluster::leader_of(queue).unwrap_or_else(|| {
        panic!(
            "{queue} is not a quorum queue with a leader; agent log:\n{}",
            run.agent.log_text()
        )
    })
}

/// Pings the agent until it answers, at most until `since + bound`. Returns how long after
/// `since` the answer came and the failed calls' errors.
async fn first_answer(
    run: &RunningAgent,
    since: Instant,
    bound: Duration,
) -> (Duration, Vec<CallError>) {
    let mut failures = Vec::new();
    loop {
        assert!(
            since.elapsed() < bound,
            "no rpc_ping answered within {bound:?} of the loss ({} failed: {}); agent log:\n{}",
            failures.len(),
            cluster::summarize_failures(&failures),
            run.agent.log_text()
        );
        match ping(&run.client, &run.target).await {
            Ok(()) => return (since.elapsed(), failures),
            Err(err) => failures.push(err),
        }
    }
}

/// Waits for the first heartbeat the agent made after `since` (its `sent` at or after
/// `since_epoch`: one already on its way then does not count), at most until `since + bound`.
/// Returns how long after `since` it arrived; other casts the conductor received meanwhile
/// are added to `others`.
async fn first_heartbeat_after(
    conductor: &mut TestConductor,
    since: Instant,
    since_epoch: f64,
    bound: Duration,
    others: &mut Vec<ConductorEvent>,
) -> Duration {
    loop {
        let left = bound.saturating_sub(since.elapsed());
        let Ok(event) = tokio::time::timeout(left, conductor.next_event()).await else {
            panic!("no heartbeat made after the loss reached the conductor within {bound:?}");
        };
        if event.method != "heartbeat" {
            others.push(event);
        } else if event
            .args
            .get("sent")
            .and_then(Value::as_f64)
            .is_some_and(|sent| sent >= since_epoch)
        {
            return event.received_at.saturating_duration_since(since);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_and_heartbeats_again_after_its_queue_leader_is_killed() {
    let _one_at_a_time = ONE_NODE_AT_A_TIME.lock().await;
    let mut run = start_on_cluster("cluster").await;
    heartbeat_every_second(&mut run, "cluster").await;
    let queue = run.target.topic.clone();
    let leader = leader_of_queue(&run);
    let mut lost = LostNode::lose(&leader, Loss::Kill).expect("kill the leader");
    let killed = Instant::now();
    let killed_epoch = epoch_now();

    let (answered_after, failures) = first_answer(&run, killed, RECOVERY_BOUND).await;
    let heartbeat_after = first_heartbeat_after(
        &mut run.conductor,
        killed,
        killed_epoch,
        RECOVERY_BOUND,
        &mut Vec::new(),
    )
    .await;
    assert!(run.agent.is_running(), "the agent exited");
    let new_leader = cluster::leader_of(&queue);
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != leader),
        "{queue} should be led by another node than {leader}, is {new_leader:?}"
    );
    lost.restore().expect("the killed node rejoins");
    assert!(
        ping(&run.client, &run.target).await.is_ok(),
        "the agent stopped answering once the node came back"
    );
    eprintln!(
        "killed {leader} (leading {queue}): rpc_ping answered after {answered_after:?} \
         ({} failed before: {}), heartbeat after {heartbeat_after:?}, new leader {new_leader:?}",
        failures.len(),
        cluster::summarize_failures(&failures)
    );
    run.finish().await;
}

/// A context as Trove's API sends with a cast that may fail: the notification the agent
/// reports a failure under (`notify_exc_info`), here with request id `k`.
fn notification_context(k: u64) -> Context {
    let mut context = Context::fresh();
    context.0.insert(
        "trove_notification".into(),
        json!({
            "request_id": format!("{REQUEST_PREFIX}{k}"),
            "server_type": "guest",
            "notification_classname": "trove.common.notification.DBaaSDatabaseCreate",
        }),
    );
    context
}

/// Casts `create_database` (which this agent does not implement: each run of it reports a
/// `notify_exc_info` under the cast's request id) every [`CAST_PERIOD`] until `stop`, at most
/// [`MAX_CASTS`]. Returns how many were sent and, for each the broker confirmed, when.
async fn cast_until(
    client: RpcClient,
    target: Target,
    stop: Arc<AtomicBool>,
) -> (u64, BTreeMap<u64, Instant>) {
    let mut confirmed = BTreeMap::new();
    let mut sent = 0;
    while sent < MAX_CASTS && !stop.load(Ordering::Relaxed) {
        let k = sent;
        sent += 1;
        let at = Instant::now();
        let cast = client
            .cast(
                &target,
                "create_database",
                args(json!({"databases": []})),
                &notification_context(k),
            )
            .await;
        if cast.is_ok() {
            confirmed.insert(k, at);
        }
        tokio::time::sleep(CAST_PERIOD).await;
    }
    (sent, confirmed)
}

/// The cast number a `notify_exc_info` reports, if it reports one of ours.
fn reported_cast(event: &ConductorEvent) -> Option<u64> {
    if event.method != "notify_exc_info" {
        return None;
    }
    event.args["serialized_notification"]["request_id"]
        .as_str()?
        .strip_prefix(REQUEST_PREFIX)?
        .parse()
        .ok()
}

/// Collects the agent's reports until `settled` says they are all in, at most until
/// `deadline`, then for [`LATE_REPORTS`] more. Returns how often each cast was reported and
/// when the last report arrived.
async fn runs_of_casts(
    conductor: &mut TestConductor,
    earlier: Vec<ConductorEvent>,
    deadline: Instant,
    settled: impl Fn(&BTreeMap<u64, u32>) -> bool,
) -> (BTreeMap<u64, u32>, Option<Instant>) {
    let mut runs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut last = None;
    let mut count = |runs: &mut BTreeMap<u64, u32>, event: ConductorEvent| {
        if let Some(k) = reported_cast(&event) {
            *runs.entry(k).or_default() += 1;
            last = Some(event.received_at);
        }
    };
    for event in earlier {
        count(&mut runs, event);
    }
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_none() && (now >= deadline || settled(&runs)) {
            settle_until = Some(now + LATE_REPORTS);
        }
        // Without news, `settled` is asked again twice a second (it may read the agent's log).
        let until = settle_until.unwrap_or_else(|| deadline.min(now + Duration::from_millis(500)));
        match tokio::time::timeout_at(until.into(), conductor.next_event()).await {
            Ok(event) => count(&mut runs, event),
            Err(_) if settle_until.is_some_and(|end| Instant::now() >= end) => break,
            Err(_) => {}
        }
    }
    (runs, last)
}

/// The confirmed casts without a report: those sent before `cut_at`, and those sent after.
fn unreported(
    confirmed: &BTreeMap<u64, Instant>,
    runs: &BTreeMap<u64, u32>,
    cut_at: Instant,
) -> (Vec<u64>, Vec<u64>) {
    let missing = |before: bool| -> Vec<u64> {
        confirmed
            .iter()
            .filter(|(k, at)| !runs.contains_key(k) && (**at < cut_at) == before)
            .map(|(k, _)| *k)
            .collect()
    };
    (missing(true), missing(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_recovers_and_runs_every_confirmed_cast_once_when_its_node_is_cut_off() {
    let _one_at_a_time = ONE_NODE_AT_A_TIME.lock().await;
    let mut run = start_on_cluster("partition").await;
    let queue = run.target.topic.clone();
    let leader = leader_of_queue(&run);
    let others: Vec<String> = cluster::nodes()
        .into_iter()
        .filter(|node| *node != leader)
        .collect();
    assert!(
        !others.is_empty(),
        "a partition needs a cluster: {others:?}"
    );

    // The agent restarts while only the leader is reachable from the guest, so that it is
    // connected to the node leading its queue: the partition then takes both from it. The
    // old agent goes first, with its connection (one left behind a cut would stay a consumer).
    run.agent.stop();
    let mut steering: Vec<PartitionedNode> = others
        .iter()
        .map(|node| PartitionedNode::cut(node).unwrap_or_else(|err| panic!("cut {node}: {err}")))
        .collect();
    heartbeat_every_second(&mut run, "partition").await;
    for cut in &mut steering {
        cut.restore().expect("the other nodes' links come back");
    }
    let pid = run.agent.pid().expect("the agent runs");
    let connected_before =
        partition::nodes_connected_from(pid).expect("the agent's connections from /proc");
    assert_eq!(
        connected_before,
        BTreeSet::from([leader.clone()]),
        "the agent is connected to its queue's leader only"
    );

    // Trove's API casts to the agent from a second before the cut until the agent is back.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(cast_until(
        run.client.clone(),
        run.target.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut cut = PartitionedNode::cut(&leader).expect("cut the agent's node off");
    let cut_at = Instant::now();
    let cut_epoch = epoch_now();

    // The agent's connection stays established until its heartbeat timeout gives it up.
    let noticed = tokio::spawn(partition::time_until_disconnected(
        move || partition::nodes_connected_from(pid),
        leader.clone(),
        PARTITION_BOUND,
    ));
    let (answered_after, failures) = first_answer(&run, cut_at, PARTITION_BOUND).await;
    let unclear: Vec<&CallError> = failures
        .iter()
        .filter(|err| !matches!(err, CallError::Timeout { .. }))
        .collect();
    assert!(
        unclear.is_empty(),
        "calls during the partition may only time out: {unclear:?}"
    );
    let mut reports = Vec::new();
    let heartbeat_after = first_heartbeat_after(
        &mut run.conductor,
        cut_at,
        cut_epoch,
        PARTITION_BOUND,
        &mut reports,
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    // Still cut off: the agent is on another node, the cut node is still in the cluster.
    let connected_after =
        partition::nodes_connected_from(pid).expect("the agent's connections from /proc");
    cluster::assert_moved_off("the agent", &leader, &connected_after, &others[0]);
    let leader_during = cluster::leader_of(&queue);
    let (sent, confirmed) = traffic.await.expect("the cast task");
    cut.restore().expect("the link comes back");

    // A report the agent published in the instant before the cut goes down with the dead
    // connection: its publish gives up after `publish_timeout` (60 s), before the connection is
    // given up (120 s). The agent logs each such loss; a loss it does not log fails the test.
    let logged_losses = || run.agent.log_text().matches(LOST_REPORT).count();
    let (runs, last_report) =
        runs_of_casts(&mut run.conductor, reports, cut_at + REPORT_BOUND, |runs| {
            let (before, after) = unreported(&confirmed, runs, cut_at);
            after.is_empty() && before.len() <= logged_losses()
        })
        .await;
    let (unreported_before, unreported_after) = unreported(&confirmed, &runs, cut_at);
    assert!(
        unreported_after.is_empty(),
        "casts confirmed after the cut never ran: {unreported_after:?}"
    );
    let lost_reports = logged_losses();
    assert!(
        unreported_before.len() <= lost_reports,
        "casts confirmed before the cut neither reported nor logged as unreported \
         ({lost_reports} logged): {unreported_before:?}"
    );
    let twice: Vec<(&u64, &u32)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "casts run more than once: {twice:?}");
    let unknown: Vec<&u64> = runs.keys().filter(|k| **k >= sent).collect();
    assert!(
        unknown.is_empty(),
        "reports of casts never sent: {unknown:?}"
    );
    let recovered_at = cut_at + answered_after;
    let during = confirmed
        .values()
        .filter(|at| (cut_at..recovered_at).contains(*at))
        .count();
    assert!(
        during > 0,
        "no cast was confirmed during the partition: the test proved nothing"
    );
    assert!(run.agent.is_running(), "the agent exited");
    assert!(
        ping(&run.client, &run.target).await.is_ok(),
        "the agent stopped answering once the link came back"
    );
    let noticed_after = noticed
        .await
        .expect("the connection watcher")
        .unwrap_or_else(|| panic!("the agent kept its connection to {leader} past the bound"));
    let duplicates_dropped = run
        .agent
        .log_text()
        .lines()
        .filter(|line| DROPPED_DUPLICATE.iter().all(|part| line.contains(part)))
        .count();
    eprintln!(
        "cut {leader} (leading {queue}; during the cut led by {leader_during:?}) off the guest: \
         the agent gave up its connection after {noticed_after:?}, rpc_ping answered after \
         {answered_after:?} ({} calls timed out before), heartbeat after {heartbeat_after:?}, \
         agent moved to {connected_after:?}; {} of {sent} casts confirmed ({during} during the \
         partition), none run twice ({duplicates_dropped} redelivered ones dropped by the agent as run), \
         {} unreported (sent before the cut: {unreported_before:?}; reports logged as lost: \
         {lost_reports}), the last report {:?} after the cut",
        failures.len(),
        confirmed.len(),
        unreported_before.len(),
        last_report.map(|at| at.saturating_duration_since(cut_at)),
    );
    run.finish().await;
}
