//! `rpc_ping` benchmark: our server against Python oslo.messaging 18.3.1's on the same broker,
//! in the same run, called by the same (our) client with Trove's encryption.
//!
//! Reports round-trip p50/p99 and calls/s, sequential and with 8 concurrent callers, plus the
//! server process's CPU time per call (from /proc, USER_HZ = 100) and its resident memory, and
//! the client's CPU per call. The two servers run side by side and take turns, block by block.
//! A third server, the floor, takes turns with them: a minimal responder on the same broker
//! and the same client (ack, read `_msg_id` and `_reply_q`, publish a fixed encrypted `true`:
//! no decryption, no dispatch), the round trip any server pays.
//! A second table compares our client and server over TLS with the same pair in plaintext
//! (two servers of ours, taking turns likewise).
//!
//! ```text
//! cargo run --release -p netiso-messaging --example rpc_bench -- [CALLS]
//! ```
//! Environment: `NETISO_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
//! `NETISO_TEST_AMQPS_URL` (default: port 5671 with `ssl=true` and the provisioned CA in the
//! query), `NETISO_PY_VENV` (default `/var/lib/trove-netiso/venv`).

#![allow(clippy::print_stdout)] // a report tool: its output is the point

use std::error::Error;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use netiso_config::TransportUrl;
use netiso_messaging::envelope::{self, Reply};
use netiso_messaging::topology::Topology;
use netiso_messaging::transport::Outgoing;
use netiso_messaging::{
    Args, BrokerConfig, Context, Dispatcher, InstanceKey, RabbitOptions, RpcClient, RpcServer,
    Serializer, ServerConfig, Target, Transport,
};
use serde_json::{Map, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const KEY: &str = "Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq";
const CONCURRENCY: usize = 8;

fn url() -> String {
    std::env::var("NETISO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn tls_url() -> String {
    std::env::var("NETISO_TEST_AMQPS_URL").unwrap_or_else(|_| {
        "amqp://guest:guest@127.0.0.1:5671/%2f?ssl=true&ssl_ca_file=/var/lib/trove-netiso/tls/ca.pem"
            .to_owned()
    })
}

/// A transport to `url`, its query applied as oslo applies it (`ssl` and the `ssl_*` files).
async fn transport(url: &str) -> AnyResult<Transport> {
    let parsed = TransportUrl::from_str(url)?;
    let config = BrokerConfig::from_transport_url(&parsed)?;
    let mut options = RabbitOptions::default();
    options.apply_url_query(&parsed.query)?;
    Ok(Transport::connect(config, options, Duration::from_secs(10)).await?)
}

/// `rpc_bench serve EXCHANGE TOPIC SERVER URL`: our server in its own process, until stdin
/// closes.
async fn serve(exchange: &str, topic: &str, server: &str, url: &str) -> AnyResult<()> {
    let transport = transport(url).await?;
    let mut dispatcher = Dispatcher::new("1.3")?;
    dispatcher.register("rpc_ping", |_ctx: Context, args: Args| async move {
        args.finish()?;
        Ok(json!(true))
    });
    let rpc = RpcServer::start(
        &transport,
        ServerConfig::new(
            exchange.to_owned(),
            Target {
                topic: topic.to_owned(),
                server: Some(server.to_owned()),
                version: "1.3".into(),
            },
            Serializer::Secure(InstanceKey::new(KEY)?),
        )
        .with_max_concurrency(64),
        dispatcher,
    )
    .await?;
    println!("READY");
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    rpc.stop().await;
    Ok(())
}

/// `rpc_bench floor EXCHANGE TOPIC SERVER URL`: the minimal responder, until stdin closes.
/// It consumes the `topic.server` queue our client calls, acks, reads the envelope for
/// `_msg_id` and `_reply_q`, and publishes one precomputed encrypted `true` to the reply
/// queue as our server does (default exchange, confirmed), without decrypting the request
/// or dispatching it.
async fn floor(exchange: &str, topic: &str, server: &str, url: &str) -> AnyResult<()> {
    let transport = transport(url).await?;
    let target = Target {
        topic: topic.to_owned(),
        server: Some(server.to_owned()),
        version: "1.3".into(),
    };
    let spec = Topology::new(transport.options()).topic_consumer(exchange, &target.routing_key());
    let mut consumer = transport.consume(vec![spec], Vec::new()).await?;
    let result = serde_json::Value::String(InstanceKey::new(KEY)?.encrypt_value(&json!(true)));
    println!("READY");
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    loop {
        let delivery = tokio::select! {
            delivery = consumer.deliveries.recv() => delivery,
            _ = stdin.read_to_end(&mut sink) => break,
        };
        let Some(delivery) = delivery else { break };
        delivery.ack().await?;
        let message = envelope::unwrap(&delivery.body)?;
        let (Some(msg_id), Some(reply_q)) = (
            message.get("_msg_id").and_then(serde_json::Value::as_str),
            message.get("_reply_q").and_then(serde_json::Value::as_str),
        ) else {
            continue;
        };
        let reply = Reply {
            result: result.clone(),
            failure: None,
            ending: true,
            msg_id: msg_id.to_owned(),
            unique_id: uuid::Uuid::new_v4().simple().to_string(),
        };
        let body = envelope::wrap(&reply.to_message());
        let reply_q = reply_q.to_owned();
        let transport = transport.clone();
        // Confirmed off the loop, as our server's replies are: calls in flight overlap.
        tokio::spawn(async move {
            let _ = transport
                .publish(&Outgoing {
                    exchange: "",
                    declare: None,
                    routing_key: &reply_q,
                    body: &body,
                    mandatory: transport.options().direct_mandatory_flag,
                    expiration_ms: None,
                })
                .await;
        });
    }
    consumer.stop().await;
    Ok(())
}

/// CPU seconds (user + system) and resident KiB of a process, from /proc.
fn process_usage(pid: u32) -> AnyResult<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields after the name start at 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmRSS")?
        .parse()?;
    Ok(((utime + stime) / 100.0, rss))
}

struct Phase {
    calls: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    per_second: f64,
}

fn summarize(mut latencies: Vec<Duration>, wall: Duration) -> Phase {
    latencies.sort();
    let pick = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mean_ms = latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
        / latencies.len().max(1) as f64;
    Phase {
        mean_ms,
        calls: latencies.len(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
    }
}

/// Latencies of every call and the wall time of the blocks that made them.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Samples {
    fn add(&mut self, (latencies, wall): (Vec<Duration>, Duration)) {
        self.latencies.extend(latencies);
        self.wall += wall;
    }

    fn summary(self) -> Phase {
        summarize(self.latencies, self.wall)
    }
}

/// `calls` calls spread over `callers` concurrent callers: each call's latency, and the wall
/// time of the whole block.
async fn run_calls(
    client: &RpcClient,
    target: &Target,
    calls: usize,
    callers: usize,
) -> AnyResult<(Vec<Duration>, Duration)> {
    let ctx = Context::fresh();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..callers {
        let client = client.clone();
        let target = target.clone();
        let ctx = ctx.clone();
        let share = calls / callers + usize::from(worker < calls % callers);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                let result = client
                    .call(
                        &target,
                        "rpc_ping",
                        Map::new(),
                        &ctx,
                        Duration::from_secs(15),
                    )
                    .await?;
                if result != json!(true) {
                    return Err(format!("rpc_ping returned {result}").into());
                }
                latencies.push(t.elapsed());
            }
            AnyResult::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((latencies, started.elapsed()))
}

struct ServerProcess {
    name: &'static str,
    child: Child,
    target: Target,
}

async fn wait_ready(child: &mut Child) -> AnyResult<()> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await?? {
            Some(line) if line == "READY" => break,
            Some(_) => {}
            None => return Err("server exited before READY".into()),
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(())
}

/// Starts server `name`: `python`, `floor` (the minimal responder), or ours (any other name)
/// connected to `url`.
async fn spawn_server(name: &'static str, exchange: &str, url: &str) -> AnyResult<ServerProcess> {
    let id = uuid::Uuid::new_v4().to_string();
    let target = Target {
        topic: format!("guestagent.{id}"),
        server: Some(id.clone()),
        version: "1.0".into(),
    };
    let mut command = if name != "python" {
        let mode = if name == "floor" { "floor" } else { "serve" };
        let mut c = Command::new(std::env::current_exe()?);
        c.args([mode, exchange, &target.topic, &id, url]);
        c
    } else {
        let venv =
            std::env::var("NETISO_PY_VENV").unwrap_or_else(|_| "/var/lib/trove-netiso/venv".into());
        let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
        let mut c = Command::new(PathBuf::from(venv).join("bin/python"));
        c.arg(scripts.join("py_server.py"))
            .args([url, exchange, &target.topic, &id, KEY])
            .current_dir(scripts)
            .env("PYTHONWARNINGS", "ignore");
        c
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_ready(&mut child).await?;
    Ok(ServerProcess {
        name,
        child,
        target,
    })
}

/// Both servers run side by side and take turns: the calls are made in `ROUNDS` blocks, each
/// block going to one server and then the other (which one first alternates), so that a change
/// of load on this shared machine during the run weighs on both alike.
const ROUNDS: usize = 10;

/// One server under test, the client that calls it, and its CPU time before the calls.
struct Leg {
    server: ServerProcess,
    client: RpcClient,
    pid: u32,
    cpu_before: f64,
}

/// Starts server `name` on `url`, warms it up through `client` and notes its CPU time.
async fn leg(name: &'static str, exchange: &str, url: &str, client: RpcClient) -> AnyResult<Leg> {
    let server = spawn_server(name, exchange, url).await?;
    run_calls(&client, &server.target, 200, CONCURRENCY).await?; // warm-up
    let pid = server.child.id().ok_or("server has no pid")?;
    let (cpu_before, _) = process_usage(pid)?;
    Ok(Leg {
        server,
        client,
        pid,
        cpu_before,
    })
}

/// `calls` sequential calls, then twice as many with [`CONCURRENCY`] callers, to every leg in
/// turn; returns (sequential, concurrent) samples per leg.
async fn take_turns(legs: &[Leg], calls: usize) -> AnyResult<Vec<(Samples, Samples)>> {
    let mut sequential: Vec<Samples> = legs.iter().map(|_| Samples::default()).collect();
    let mut concurrent: Vec<Samples> = legs.iter().map(|_| Samples::default()).collect();
    for (samples, callers, total) in [
        (&mut sequential, 1, calls),
        (&mut concurrent, CONCURRENCY, calls * 2),
    ] {
        for round in 0..ROUNDS {
            let block = total / ROUNDS + usize::from(round < total % ROUNDS);
            for turn in 0..legs.len() {
                let index = (round + turn) % legs.len();
                let leg = &legs[index];
                samples[index]
                    .add(run_calls(&leg.client, &leg.server.target, block, callers).await?);
            }
        }
    }
    Ok(sequential.into_iter().zip(concurrent).collect())
}

/// One row of a report: name, sequential and concurrent summaries, server CPU µs per call and
/// RSS KiB.
type Row = (&'static str, Phase, Phase, f64, u64);

/// Stops every leg's server, deletes its queues, and summarizes its samples.
async fn finish(
    transport: &Transport,
    legs: Vec<Leg>,
    samples: Vec<(Samples, Samples)>,
) -> AnyResult<Vec<Row>> {
    let mut report = Vec::new();
    for (mut leg, (sequential, concurrent)) in legs.into_iter().zip(samples) {
        let (cpu_after, rss_kib) = process_usage(leg.pid)?;
        let (sequential, concurrent) = (sequential.summary(), concurrent.summary());
        let total = sequential.calls + concurrent.calls;
        let cpu_per_call_us = (cpu_after - leg.cpu_before) / total as f64 * 1e6;
        drop(leg.server.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(20), leg.server.child.wait()).await;
        let target = &leg.server.target;
        for queue in [target.topic.clone(), target.routing_key()] {
            transport.delete_queue(&queue).await?;
        }
        leg.client.close().await;
        report.push((
            leg.server.name,
            sequential,
            concurrent,
            cpu_per_call_us,
            rss_kib,
        ));
    }
    Ok(report)
}

fn print_table(report: &[Row]) {
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>12} {:>9}",
        "server",
        "seq p50",
        "seq p99",
        "seq mean",
        "seq call/s",
        "8x p50",
        "8x p99",
        "8x call/s",
        "CPU us/call",
        "RSS MiB"
    );
    for (name, s, c, cpu, rss) in report {
        println!(
            "{name:<8} {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>10.0} {:>7.3}ms {:>7.3}ms {:>10.0} {:>12.1} {:>9.1}",
            s.p50_ms,
            s.p99_ms,
            s.mean_ms,
            s.per_second,
            c.p50_ms,
            c.p99_ms,
            c.per_second,
            cpu,
            *rss as f64 / 1024.0
        );
    }
}

fn secure_client(transport: &Transport, exchange: &str) -> AnyResult<RpcClient> {
    Ok(RpcClient::new(
        transport,
        exchange,
        Serializer::Secure(InstanceKey::new(KEY)?),
    ))
}

async fn bench(calls: usize) -> AnyResult<()> {
    let plain_url = url();
    let transport = transport(&plain_url).await?;
    let exchange = format!("netiso-bench-{}", uuid::Uuid::new_v4().simple());
    let client = secure_client(&transport, &exchange)?;
    let mut legs = Vec::new();
    for name in ["rust", "python", "floor"] {
        legs.push(leg(name, &exchange, &plain_url, client.clone()).await?);
    }
    let (client_cpu_before, _) = process_usage(std::process::id())?;
    let samples = take_turns(&legs, calls).await?;
    let (client_cpu_after, _) = process_usage(std::process::id())?;
    let client_cpu_per_call_us =
        (client_cpu_after - client_cpu_before) / (calls * 3 * legs.len()) as f64 * 1e6;
    let report = finish(&transport, legs, samples).await?;
    println!(
        "rpc_ping, encrypted (SecureSerializer), same broker and client, servers taking turns in {ROUNDS} rounds; {calls} sequential + {} with {CONCURRENCY} callers each",
        calls * 2
    );
    print_table(&report);
    println!("client CPU per call (the same for both servers): {client_cpu_per_call_us:.1} us");
    if let [
        (_, rs, rc, rcpu, rrss),
        (_, ps, pc, pcpu, prss),
        (_, fs, _, _, _),
    ] = report.as_slice()
    {
        println!(
            "ratios rust/python: seq p50 {:.2} (target <= 0.5), 8x p50 {:.2}, seq throughput {:.2}x, 8x throughput {:.2}x (target >= 10), CPU/call {:.3} (target <= 0.05), RSS {:.3} (target <= 0.2)",
            rs.p50_ms / ps.p50_ms,
            rc.p50_ms / pc.p50_ms,
            rs.per_second / ps.per_second,
            rc.per_second / pc.per_second,
            rcpu / pcpu,
            *rrss as f64 / *prss as f64
        );
        println!(
            "against the floor (minimal responder, same broker and client): seq p50 rust/floor {:.2} (target <= 1.15), python/floor {:.2}",
            rs.p50_ms / fs.p50_ms,
            ps.p50_ms / fs.p50_ms
        );
    }
    tls_against_plaintext(&transport, &exchange, calls).await?;
    transport.delete_exchange(&exchange).await?;
    Ok(())
}

/// Our client and server over TLS against the same pair in plaintext: two servers of ours,
/// each called by a client on a connection of its kind, taking turns.
async fn tls_against_plaintext(
    transport: &Transport,
    exchange: &str,
    calls: usize,
) -> AnyResult<()> {
    let (plain_url, tls_url) = (url(), tls_url());
    let tls_transport = transport_or_hint(&tls_url).await?;
    let legs = vec![
        leg(
            "plain",
            exchange,
            &plain_url,
            secure_client(transport, exchange)?,
        )
        .await?,
        leg(
            "tls",
            exchange,
            &tls_url,
            secure_client(&tls_transport, exchange)?,
        )
        .await?,
    ];
    let samples = take_turns(&legs, calls).await?;
    let report = finish(transport, legs, samples).await?;
    tls_transport.close();
    println!();
    println!(
        "rpc_ping, encrypted, our client and server, over TLS (client and server connections) and in plaintext, taking turns in {ROUNDS} rounds; {calls} sequential + {} with {CONCURRENCY} callers each",
        calls * 2
    );
    print_table(&report);
    Ok(())
}

async fn transport_or_hint(url: &str) -> AnyResult<Transport> {
    transport(url).await.map_err(|e| {
        format!("no TLS connection to {url}: {e} (run `cargo xtask provision`)").into()
    })
}

/// Both sides run on a single-threaded runtime: the server as `trove-guest-agent` runs it, the
/// client (common to both servers) so that it adds as little as it can to every round trip.
fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(mode @ ("serve" | "floor")) = args.get(1).map(String::as_str) {
        let [_, _, exchange, topic, server, url] = args.as_slice() else {
            return Err(format!("usage: rpc_bench {mode} EXCHANGE TOPIC SERVER URL").into());
        };
        return runtime.block_on(async {
            if mode == "floor" {
                floor(exchange, topic, server, url).await
            } else {
                serve(exchange, topic, server, url).await
            }
        });
    }
    let calls = args.get(1).map(|c| c.parse()).transpose()?.unwrap_or(2000);
    runtime.block_on(bench(calls))
}
