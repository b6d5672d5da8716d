//! A flood of casts against the real agent (inside the simulated guest namespace, real
//! RabbitMQ, Trove's encryption with the real instance key): the agent's memory stays flat
//! (bounded prefetch and in-flight work) and its heartbeats keep coming while it works through
//! the queue. Prints the figures: peak RSS from /proc during the flood, heartbeat gaps and
//! delivery delays at a conductor-like consumer, the flood's rate. Needs root and
//! `cargo xtask provision`.

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use common::{AgentSetup, KEY, RunningAgent, test_url};
use netiso_config::TransportUrl;
use netiso_messaging::envelope::{self, Request};
use netiso_messaging::test_support::{known_secrets, scan_files};
use netiso_messaging::{BrokerConfig, Context, InstanceKey, Serializer};
use netiso_runtime::test_support::PROVISION_HINT;
use serde_json::{Map, Value};

/// Casts in the flood.
const CASTS: usize = 100_000;
/// The agent's heartbeat period in this test (Trove: 60 s).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the agent may take to work through the flood before the test fails.
const DRAIN_DEADLINE: Duration = Duration::from_secs(900);
/// Growth of the agent's peak RSS over its idle RSS that still counts as flat. The bounded
/// parts (prefetch × a 0.4 KiB body, 64 in-flight pings, the replay filter's at most 16384
/// entries) add up to well under 2 MiB; the allowance covers allocator slack.
const FLAT_RSS_GROWTH_KIB: u64 = 16 * 1024;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_casts_keeps_memory_flat_and_heartbeats_on_time() {
    let setup = AgentSetup::new("flood", Some(KEY));
    let mut run = RunningAgent::start(&setup).await;
    // Prepared: the agent heartbeats every HEARTBEAT; info level, as in production (a debug
    // line per cast would measure the log writer).
    let state = run.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("guestagent.prepare.end"), b"").expect("prepare marker");
    run.restart_agent_logging("flood", &["--heartbeat-interval", "1"], "info")
        .await;
    for _ in 0..3 {
        let event = run.conductor.next(Duration::from_secs(10)).await;
        assert_eq!(event.method, "heartbeat", "{event:?}");
    }
    let idle_rss = run.agent.rss_kib().expect("agent RSS");

    // The flood: a separate connection publishing rpc_ping casts, each a distinct request
    // (fresh `_unique_id`, context encrypted afresh) as Trove's API would send them.
    let url = test_url();
    let config = BrokerConfig::from_transport_url(&TransportUrl::from_str(&url).expect("URL"))
        .expect("broker config");
    let host = config.hosts[0].clone();
    let args =
        OpenConnectionArguments::new(&host.hostname, host.port, &host.username, &host.password)
            .virtual_host(&config.virtual_host)
            .finish();
    let connection = Connection::open(&args)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at {url}: {e}: {PROVISION_HINT}"));
    let channel = connection.open_channel(None).await.expect("channel");
    let exchange = setup.exchange.clone();
    let topic = run.target.topic.clone();
    let publisher_channel = channel.clone();
    let publisher = tokio::spawn(async move {
        let secure = Serializer::Secure(InstanceKey::new(KEY).expect("key"));
        let started = Instant::now();
        for _ in 0..CASTS {
            let mut context = Map::new();
            context.insert(
                "request_id".into(),
                Value::from(format!("req-{}", uuid::Uuid::new_v4())),
            );
            let request = Request {
                method: "rpc_ping".into(),
                args: Map::new(),
                namespace: None,
                version: Some("1.0".into()),
                msg_id: None,
                reply_q: None,
                timeout: None,
                unique_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                context: secure.serialize_context(&Context(context)),
            };
            let props = BasicProperties::default()
                .with_content_type("application/json")
                .with_content_encoding("utf-8")
                .with_delivery_mode(2)
                .finish();
            publisher_channel
                .basic_publish(
                    props,
                    envelope::wrap(&request.to_message()),
                    BasicPublishArguments::new(&exchange, &topic),
                )
                .await
                .expect("flood publish");
        }
        started.elapsed()
    });

    // While it runs: sample the agent's RSS, time the heartbeats, watch the queue drain.
    let flood_started = Instant::now();
    let mut peak_rss = idle_rss;
    let mut heartbeats: Vec<(Instant, f64)> = Vec::new();
    let mut delays: Vec<f64> = Vec::new();
    let mut publish_took = None;
    let mut last_queue_check = Instant::now();
    let mut publisher = Some(publisher);
    let drained_after = loop {
        assert!(
            flood_started.elapsed() < DRAIN_DEADLINE,
            "the agent did not work through {CASTS} casts within {DRAIN_DEADLINE:?}"
        );
        assert!(run.agent.is_running(), "the agent exited during the flood");
        if let Some(rss) = run.agent.rss_kib() {
            peak_rss = peak_rss.max(rss);
        }
        if let Ok(event) =
            tokio::time::timeout(Duration::from_millis(20), run.conductor.next_event()).await
            && event.method == "heartbeat"
        {
            let sent = event.args["sent"].as_f64().unwrap_or(0.0);
            delays.push((now_epoch() - sent).max(0.0));
            heartbeats.push((event.received_at, sent));
        }
        if publisher.as_ref().is_some_and(|p| p.is_finished()) {
            let task = publisher.take().expect("publisher");
            publish_took = Some(task.await.expect("publisher task"));
        }
        if publish_took.is_some() && last_queue_check.elapsed() > Duration::from_millis(250) {
            last_queue_check = Instant::now();
            let declared = channel
                .queue_declare(
                    QueueDeclareArguments::new(&run.target.topic)
                        .passive(true)
                        .finish(),
                )
                .await
                .expect("passive declare");
            if declared.is_some_and(|(_, messages, _)| messages == 0) {
                break flood_started.elapsed();
            }
        }
    };
    // Every cast was taken: a call queued behind them is answered.
    common::wait_for_ping(&run.client, &run.target, &run.agent).await;
    let handled_after = flood_started.elapsed();
    let peak_hwm = run.agent.peak_rss_kib().unwrap_or(0);
    let _ = channel.close().await;
    let _ = connection.close().await;

    let status = run
        .agent
        .terminate(Duration::from_secs(30))
        .expect("the agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = run.agent.log_text();
    let handled: u64 = log
        .lines()
        .find_map(|line| line.split("handled=").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("the agent logs how many requests it handled");
    let findings = scan_files(std::slice::from_ref(&run.agent.log), &known_secrets())
        .expect("scan the agent log");

    let gaps: Vec<f64> = heartbeats
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0).as_secs_f64())
        .collect();
    let mut sorted_gaps = gaps.clone();
    sorted_gaps.sort_by(f64::total_cmp);
    let mut sorted_delays = delays.clone();
    sorted_delays.sort_by(f64::total_cmp);
    let lateness = |gap: f64| (gap - HEARTBEAT.as_secs_f64()).max(0.0);
    let publish_took = publish_took.expect("publisher finished");
    println!("flood of {CASTS} encrypted rpc_ping casts against the agent:");
    println!(
        "  published in {:.1} s ({:.0}/s); queue drained after {:.1} s; all handled ({handled} requests) after {:.1} s ({:.0} casts/s)",
        publish_took.as_secs_f64(),
        CASTS as f64 / publish_took.as_secs_f64(),
        drained_after.as_secs_f64(),
        handled_after.as_secs_f64(),
        CASTS as f64 / handled_after.as_secs_f64()
    );
    println!(
        "  agent RSS: idle {idle_rss} KiB, peak sampled during the flood {peak_rss} KiB (+{} KiB), VmHWM {peak_hwm} KiB",
        peak_rss.saturating_sub(idle_rss)
    );
    println!(
        "  heartbeats during the flood: {} (period {:?}); gap p50 {:.3} s, max {:.3} s; lateness max {:.3} s; sent→received delay p50 {:.3} s, max {:.3} s",
        heartbeats.len(),
        HEARTBEAT,
        percentile(&sorted_gaps, 0.5),
        sorted_gaps.last().copied().unwrap_or(f64::NAN),
        sorted_gaps.last().copied().map_or(f64::NAN, lateness),
        percentile(&sorted_delays, 0.5),
        sorted_delays.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  agent crashes: 0; secrets found in the agent log: {}",
        findings.len()
    );

    assert!(
        handled >= CASTS as u64,
        "{handled} requests handled < {CASTS} casts"
    );
    assert!(findings.is_empty(), "{findings:#?}");
    assert!(
        peak_rss.saturating_sub(idle_rss) < FLAT_RSS_GROWTH_KIB,
        "the agent's RSS grew from {idle_rss} to {peak_rss} KiB during the flood"
    );
    // Liveness, not speed: heartbeats kept coming while the agent worked.
    let expected = (drained_after.as_secs_f64() / HEARTBEAT.as_secs_f64()) as usize;
    assert!(
        heartbeats.len() * 2 >= expected,
        "{} heartbeats during {:.1} s of flood",
        heartbeats.len(),
        drained_after.as_secs_f64()
    );
    run.finish().await;
}
