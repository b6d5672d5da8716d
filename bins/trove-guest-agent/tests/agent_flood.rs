//! Floods and hostile messages against the real agent (inside the simulated guest namespace,
//! real RabbitMQ, Trove's encryption):
//!
//! - 100 000 casts with the real instance key: the agent's memory stays flat (bounded prefetch
//!   and in-flight work) and its heartbeats keep coming while it works through the queue.
//!   Prints peak RSS from /proc, heartbeat gaps and delays at a conductor-like consumer, rates.
//! - Hostile messages from a sender without the key: the agent does nothing for them (no
//!   conductor cast, no container, its request counter moves only for the trusted pings),
//!   stays up, keeps answering, and logs no secret.
//!
//! Needs root and `cargo xtask provision`.

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, Channel, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use common::{AgentSetup, KEY, RunningAgent, test_url};
use netiso_config::TransportUrl;
use netiso_messaging::envelope::{self, Request};
use netiso_messaging::test_support::{known_secrets, scan_files};
use netiso_messaging::{BrokerConfig, Context, InstanceKey, Serializer};
use netiso_runtime::ContainerRuntime;
use netiso_runtime::test_support::{ContainerGuard, PROVISION_HINT, connect_docker};
use serde_json::{Map, Value, json};

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

/// A plain AMQP connection with the broker credentials and nothing else.
async fn raw_channel() -> (Connection, Channel) {
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
    (connection, channel)
}

async fn publish_raw(
    channel: &Channel,
    exchange: &str,
    topic: &str,
    body: Vec<u8>,
    content_type: &str,
) {
    let props = BasicProperties::default()
        .with_content_type(content_type)
        .with_content_encoding("utf-8")
        .with_delivery_mode(2)
        .finish();
    channel
        .basic_publish(props, body, BasicPublishArguments::new(exchange, topic))
        .await
        .expect("publish");
}

/// The `handled=` count the agent logs when it stops.
fn handled_in_log(log: &str) -> u64 {
    log.lines()
        .find_map(|line| line.split("handled=").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("the agent logs how many requests it handled")
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
    let (connection, channel) = raw_channel().await;
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
            publish_raw(
                &publisher_channel,
                &exchange,
                &topic,
                envelope::wrap(&request.to_message()),
                "application/json",
            )
            .await;
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
    let handled = handled_in_log(&run.agent.log_text());
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

/// Hostile messages per kind against the real agent.
const HOSTILE_TRIES: usize = 500;
const HOSTILE_ROOT_PASSWORD: &str = "hostile-root-password-5e1f0a";
const HOSTILE_USER_PASSWORD: &str = "hostile-user-password-8c2d4b";
const HOSTILE_TOKEN: &str = "gAAAAABhostile-keystone-token-3a9b";
/// Another instance's key: what a neighbouring guest holds.
const FOREIGN_KEY: &str = "Bm2yN8q4ZtP0xW7cK3vR9aL5sD1fH6jE";

fn hostile_prepare(unique_id: String) -> Request {
    let args = json!({
        "packages": null, "databases": [], "memory_mb": 2048,
        "users": [{"_name": "app", "_host": "%", "_password": HOSTILE_USER_PASSWORD}],
        "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql", "backup_info": null,
        "config_contents": "[mysqld]\n", "root_password": HOSTILE_ROOT_PASSWORD,
        "overrides": {}, "cluster_config": null, "snapshot": null, "modules": null,
        "ds_version": "8.0.36",
    });
    let Value::Object(args) = args else {
        unreachable!("an object literal")
    };
    Request {
        method: "prepare".into(),
        args,
        namespace: None,
        version: Some("1.1".into()),
        msg_id: None,
        reply_q: None,
        timeout: None,
        unique_id: Some(unique_id),
        context: Map::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_make_the_real_agent_do_nothing() {
    let setup = AgentSetup::new("hostile", Some(KEY));
    let container = ContainerGuard::new(setup.container_name.clone());
    let mut run = RunningAgent::start(&setup).await;
    let (connection, channel) = raw_channel().await;
    let foreign = Serializer::Secure(InstanceKey::new(FOREIGN_KEY).expect("key"));
    let mut context = Context::fresh();
    context
        .0
        .insert("auth_token".into(), Value::from(HOSTILE_TOKEN));
    let mut trusted_pings: u64 = 1; // RunningAgent::start's
    let mut figures: Vec<(&str, usize)> = Vec::new();
    let kinds: [(&str, &str); 7] = [
        (
            "prepare cast encrypted with another instance's key",
            "foreign",
        ),
        ("prepare cast in plaintext", "plain"),
        ("oversized body (5 MiB)", "oversized"),
        ("deep JSON nesting (100000 levels)", "deep"),
        ("invalid UTF-8", "utf8"),
        ("wrong envelope version", "version"),
        ("wrong content type", "content-type"),
    ];
    let started = Instant::now();
    let mut peak_rss = run.agent.rss_kib().unwrap_or(0);
    for (label, kind) in kinds {
        let tries = if kind == "oversized" {
            10
        } else {
            HOSTILE_TRIES
        };
        for _ in 0..tries {
            let mut request = hostile_prepare(uuid::Uuid::new_v4().simple().to_string());
            let mut content_type = "application/json";
            let body = match kind {
                "foreign" => {
                    request.args = request
                        .args
                        .into_iter()
                        .map(|(k, v)| (k, foreign.serialize_entity(&v)))
                        .collect();
                    request.context = foreign.serialize_context(&context);
                    envelope::wrap(&request.to_message())
                }
                "plain" => {
                    request.context = context.0.clone();
                    envelope::wrap(&request.to_message())
                }
                "oversized" => {
                    request
                        .args
                        .insert("padding".into(), Value::from("x".repeat(5 << 20)));
                    envelope::wrap(&request.to_message())
                }
                "deep" => format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
                "utf8" => b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"\xff\"}".to_vec(),
                "version" => json!({"oslo.version": "3.0", "oslo.message": "{}"})
                    .to_string()
                    .into_bytes(),
                _ => {
                    content_type = "text/plain";
                    request.context = Serializer::Secure(InstanceKey::new(KEY).expect("key"))
                        .serialize_context(&context);
                    envelope::wrap(&request.to_message())
                }
            };
            publish_raw(
                &channel,
                &setup.exchange,
                &run.target.topic,
                body,
                content_type,
            )
            .await;
            if let Some(rss) = run.agent.rss_kib() {
                peak_rss = peak_rss.max(rss);
            }
        }
        // Still up and answering after each kind: one call, queued behind the hostile ones.
        let answer = run
            .client
            .call(
                &run.target,
                "rpc_ping",
                Map::new(),
                &Context::fresh(),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("after {label}: {e}\n{}", run.agent.log_text()));
        assert_eq!(answer, Value::Bool(true));
        trusted_pings += 1;
        assert!(run.agent.is_running(), "the agent exited after {label}");
        figures.push((label, tries));
    }
    // Nothing was done for the hostile sender: a prepare would have told the conductor
    // `building` and created the container.
    run.conductor.expect_silence(Duration::from_secs(2)).await;
    let docker = connect_docker().await;
    assert!(
        docker
            .inspect(container.name())
            .await
            .expect("inspect")
            .is_none(),
        "no database container may exist"
    );
    let _ = channel.close().await;
    let _ = connection.close().await;
    let status = run
        .agent
        .terminate(Duration::from_secs(30))
        .expect("the agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = run.agent.log_text();
    let handled = handled_in_log(&log);
    let findings = scan_files(std::slice::from_ref(&run.agent.log), &known_secrets())
        .expect("scan the agent log");
    println!(
        "hostile sender against the real agent ({:.1} s):",
        started.elapsed().as_secs_f64()
    );
    for (label, tries) in &figures {
        println!("  {label:<52} {tries:>5} sent");
    }
    let tried: usize = figures.iter().map(|(_, n)| n).sum();
    println!(
        "  messages tried: {tried}; agent crashes: 0; requests handled: {handled} (= {trusted_pings} trusted pings); conductor casts: 0; containers created: 0; peak RSS {peak_rss} KiB; secrets found in the agent log: {}",
        findings.len()
    );
    assert_eq!(handled, trusted_pings, "only the trusted pings ran");
    assert!(findings.is_empty(), "{findings:#?}");
    assert!(
        log.contains("refused an RPC message"),
        "refusals are logged (up to 20 per 10 s)"
    );
    run.finish().await;
}
