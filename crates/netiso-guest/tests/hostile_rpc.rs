//! A hostile sender against the guest's RPC endpoint, on the real RabbitMQ: it has the broker
//! credentials (any guest of a shared-vhost cloud has) but not this instance's key. The
//! server is the agent's: [`RpcServer`] with the guest's dispatcher and Trove's encryption,
//! over the fake runtime and conductor of `common`, so that any work done shows.
//!
//! Each kind of message is sent [`TRIES`] times. Proven: no handler runs for it (the
//! dispatcher's request counter moves only for the trusted caller's calls, the runtime and the
//! conductor see nothing), every call gets a failure reply carrying no secret, replays of a
//! trusted request run once, and after each kind the trusted caller is still answered. The
//! figures are printed; the log (debug level) is scanned for every secret used.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::connection::{Connection, OpenConnectionArguments};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::Fixture;
use netiso_config::TransportUrl;
use netiso_guest::rpc::{self, GUEST_API_VERSION, InFlight};
use netiso_messaging::envelope::{self, RemoteFailure, Reply, Request};
use netiso_messaging::test_support::{init_file_tracing, known_secrets, scan_files};
use netiso_messaging::topology::Topology;
use netiso_messaging::transport::Consumer;
use netiso_messaging::{
    BrokerConfig, Context, InstanceKey, RabbitOptions, RpcClient, RpcServer, Serializer,
    ServerConfig, Target, Transport,
};
use serde_json::{Map, Value, json};
use std::str::FromStr;

/// Messages of each kind.
const TRIES: usize = 40;
const KEY: &str = "Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq";
/// Another instance's key: what a neighbouring guest holds.
const FOREIGN_KEY: &str = "Bm2yN8q4ZtP0xW7cK3vR9aL5sD1fH6jE";
const HOSTILE_ROOT_PASSWORD: &str = "hostile-root-password-5e1f0a";
const HOSTILE_USER_PASSWORD: &str = "hostile-user-password-8c2d4b";
const HOSTILE_TOKEN: &str = "gAAAAABhostile-keystone-token-3a9b";
const TRUSTED_ROOT_PASSWORD: &str = "trusted-root-password-61d7e2";
const TRUSTED_USER_PASSWORD: &str = "trusted-user-password-0b94c3";
const TRUSTED_TOKEN: &str = "gAAAAABtrusted-keystone-token-c4f1";
const CONFIG_SECRET: &str = "config-secret-marker-77d1e5";
/// The server's body limit in this test (the default is 4 MiB; smaller keeps the test light).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const REPLY_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn test_url() -> String {
    std::env::var("NETISO_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

fn broker_config() -> BrokerConfig {
    let url = test_url();
    let parsed = TransportUrl::from_str(&url).unwrap_or_else(|e| panic!("bad {url:?}: {e}"));
    BrokerConfig::from_transport_url(&parsed).expect("usable broker URL")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(len);
    out
}

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The arguments of a `prepare` carrying passwords and a configuration.
fn prepare_args(root_password: &str, user_password: &str) -> Map<String, Value> {
    object(json!({
        "packages": null, "databases": [{"_name": "app"}], "memory_mb": 2048,
        "users": [{"_name": "appuser", "_host": "%", "_password": user_password}],
        "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql", "backup_info": null,
        "config_contents": format!("[mysqld]\n# {CONFIG_SECRET}\n"),
        "root_password": root_password, "overrides": {}, "cluster_config": null,
        "snapshot": null, "modules": null, "ds_version": "8.0.36",
    }))
}

fn context_with_token(token: &str) -> Context {
    let mut context = Context::fresh();
    context.0.insert("auth_token".into(), Value::from(token));
    context
}

/// The hostile side: its own plain AMQP connection (broker credentials only) and a reply
/// queue it consumes.
struct Hostile {
    connection: Connection,
    channel: Channel,
    exchange: String,
    routing_key: String,
    reply_q: String,
    replies: Consumer,
}

impl Hostile {
    async fn start(transport: &Transport, exchange: &str, routing_key: &str) -> Self {
        let config = broker_config();
        let host = &config.hosts[0];
        let args =
            OpenConnectionArguments::new(&host.hostname, host.port, &host.username, &host.password)
                .virtual_host(&config.virtual_host)
                .finish();
        let connection = Connection::open(&args).await.unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {}: {e}. Run `cargo xtask provision`",
                test_url()
            )
        });
        let channel = connection.open_channel(None).await.expect("channel");
        let reply_q = format!("reply_{}", uid());
        let spec = Topology::new(transport.options()).reply_consumer(&reply_q);
        let replies = transport
            .consume(vec![spec], vec![reply_q.clone()])
            .await
            .expect("hostile reply queue");
        Self {
            connection,
            channel,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            reply_q,
            replies,
        }
    }

    async fn publish(&self, body: Vec<u8>, content_type: &str) {
        let props = BasicProperties::default()
            .with_content_type(content_type)
            .with_delivery_mode(2)
            .finish();
        self.channel
            .basic_publish(
                props,
                body,
                BasicPublishArguments::new(&self.exchange, &self.routing_key),
            )
            .await
            .expect("hostile publish");
    }

    /// A request message as a call to our reply queue.
    fn call_message(&self, method: &str, args: Map<String, Value>) -> (String, Map<String, Value>) {
        let msg_id = uid();
        let request = Request {
            method: method.to_owned(),
            args,
            namespace: None,
            version: Some("1.1".into()),
            msg_id: Some(msg_id.clone()),
            reply_q: Some(self.reply_q.clone()),
            timeout: None,
            unique_id: Some(uid()),
            context: Map::new(),
        };
        (msg_id, request.to_message())
    }

    /// The next reply, if one comes within [`REPLY_WAIT`].
    async fn reply(&mut self) -> Option<Reply> {
        let delivery = tokio::time::timeout(REPLY_WAIT, self.replies.deliveries.recv())
            .await
            .ok()??;
        delivery.ack().await.expect("ack reply");
        Some(
            Reply::from_message(envelope::unwrap(&delivery.body).expect("reply body"))
                .expect("reply"),
        )
    }

    async fn close(self) {
        self.replies.stop().await;
        let _ = self.channel.close().await;
        let _ = self.connection.close().await;
    }
}

/// The figures of one kind of hostile message.
#[derive(Debug, Default)]
struct Figures {
    kind: &'static str,
    tried: usize,
    failure_replies: usize,
    success_replies: usize,
    handlers_run: u64,
}

/// Counts (and acks) the replies arriving until none comes for 300 ms.
async fn drain(replies: &mut Consumer) -> usize {
    let mut n = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(300), replies.deliveries.recv()).await
    {
        delivery.ack().await.expect("ack");
        n += 1;
    }
    n
}

/// What a failure reply may not contain, and its class.
fn check_failure(reply: &Reply, secrets: &[String]) -> RemoteFailure {
    assert_eq!(reply.result, Value::Null);
    let text = reply.failure.as_deref().expect("a failure reply");
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a failure reply leaks a secret: {text}"
        );
    }
    RemoteFailure::from_json(text).expect("failure JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_without_the_instance_key_gets_nothing_done_and_nothing_leaked() {
    let log = init_file_tracing(env!("CARGO_TARGET_TMPDIR"), "netiso-guest-hostile_rpc")
        .expect("the test log is this process's first subscriber");
    let mut options = RabbitOptions::default();
    options.kombu_missing_consumer_retry_timeout = Duration::from_secs(2);
    options.publish_timeout = Duration::from_secs(20);
    let transport = Transport::connect(broker_config(), options, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {}: {e}. Run `cargo xtask provision`",
                test_url()
            )
        });
    let key = InstanceKey::new(KEY).expect("key");
    let foreign = InstanceKey::new(FOREIGN_KEY).expect("key");
    let secure = Serializer::Secure(key.clone());
    let foreign_serializer = Serializer::Secure(foreign.clone());

    let fx = Fixture::new();
    let in_flight = InFlight::default();
    let service = Arc::new(fx.service(false, None));
    let guest_id = uuid::Uuid::new_v4().to_string();
    let exchange = format!("netiso-test-hostile-{}", uid());
    let target = Target {
        topic: format!("guestagent.{guest_id}"),
        server: Some(guest_id.clone()),
        version: GUEST_API_VERSION.into(),
    };
    let server = RpcServer::start(
        &transport,
        ServerConfig::new(exchange.clone(), target.clone(), secure.clone())
            .with_max_concurrency(8)
            .with_max_message_bytes(MAX_MESSAGE_BYTES),
        rpc::dispatcher(Arc::clone(&service), &in_flight),
    )
    .await
    .expect("server starts");
    let trusted = RpcClient::new(&transport, &exchange, secure.clone());
    let trusted_target = Target {
        server: None,
        version: "1.0".into(),
        ..target.clone()
    };
    let mut trusted_calls: u64 = 0;
    let ping = |client: RpcClient, target: Target| async move {
        client
            .call(
                &target,
                "rpc_ping",
                Map::new(),
                &context_with_token(TRUSTED_TOKEN),
                Duration::from_secs(10),
            )
            .await
    };
    assert_eq!(
        ping(trusted.clone(), trusted_target.clone())
            .await
            .expect("first ping"),
        json!(true)
    );
    trusted_calls += 1;

    let mut hostile = Hostile::start(&transport, &exchange, &target.topic).await;
    let secrets: Vec<String> = known_secrets().into_iter().map(|s| s.needle).collect();
    let mut table: Vec<Figures> = Vec::new();

    // Each kind: build a body per try, whether a reply is due, and the failure class.
    type Build<'a> = Box<dyn Fn(&Hostile) -> (Vec<u8>, &'static str) + 'a>;
    let encrypted = |serializer: &Serializer, args: Map<String, Value>| -> Map<String, Value> {
        args.into_iter()
            .map(|(k, v)| (k, serializer.serialize_entity(&v)))
            .collect()
    };
    let kinds: Vec<(&'static str, bool, Build<'_>)> = vec![
        (
            "prepare encrypted with another instance's key",
            true,
            Box::new(|h: &Hostile| {
                let args = encrypted(
                    &foreign_serializer,
                    prepare_args(HOSTILE_ROOT_PASSWORD, HOSTILE_USER_PASSWORD),
                );
                let (_, mut msg) = h.call_message("prepare", args);
                for (k, v) in
                    foreign_serializer.serialize_context(&context_with_token(HOSTILE_TOKEN))
                {
                    msg.insert(format!("_context_{k}"), v);
                }
                (envelope::wrap(&msg), "application/json")
            }),
        ),
        (
            "prepare in plaintext (context spread, plain arguments)",
            true,
            Box::new(|h: &Hostile| {
                let (_, mut msg) = h.call_message(
                    "prepare",
                    prepare_args(HOSTILE_ROOT_PASSWORD, HOSTILE_USER_PASSWORD),
                );
                for (k, v) in context_with_token(HOSTILE_TOKEN).0 {
                    msg.insert(format!("_context_{k}"), v);
                }
                (envelope::wrap(&msg), "application/json")
            }),
        ),
        (
            "forged ciphertexts (random bytes)",
            true,
            Box::new(|h: &Hostile| {
                let forged = |n: usize| Value::from(STANDARD.encode(random_bytes(16 * n)));
                let args = object(json!({"fs_path": forged(2)}));
                let (_, mut msg) = h.call_message("get_filesystem_stats", args);
                msg.insert(
                    "_context_context".into(),
                    forged(2 + usize::from(random_bytes(1)[0] % 8)),
                );
                (envelope::wrap(&msg), "application/json")
            }),
        ),
        (
            "stolen context with plaintext arguments (Trove would accept)",
            true,
            Box::new(|h: &Hostile| {
                // A context encrypted with the right key, as sniffed from the broker, with the
                // arguments in clear: Trove's lenient SecureSerializer would run it.
                let (_, mut msg) = h.call_message(
                    "prepare",
                    prepare_args(HOSTILE_ROOT_PASSWORD, HOSTILE_USER_PASSWORD),
                );
                for (k, v) in secure.serialize_context(&context_with_token(HOSTILE_TOKEN)) {
                    msg.insert(format!("_context_{k}"), v);
                }
                (envelope::wrap(&msg), "application/json")
            }),
        ),
        (
            "oversized body",
            false,
            Box::new(|h: &Hostile| {
                let (_, mut msg) = h.call_message("rpc_ping", Map::new());
                msg.insert(
                    "padding".into(),
                    Value::from("x".repeat(MAX_MESSAGE_BYTES + 1)),
                );
                (envelope::wrap(&msg), "application/json")
            }),
        ),
        (
            "deep JSON nesting (100000 levels)",
            false,
            Box::new(|_: &Hostile| {
                let depth = 100_000;
                (
                    format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                    "application/json",
                )
            }),
        ),
        (
            "deep nesting inside the message (200 levels)",
            false,
            Box::new(|h: &Hostile| {
                let (_, msg) = h.call_message("rpc_ping", Map::new());
                let mut text = envelope::wrap(&msg);
                // Replace `"args": {}` with 200 nested arrays inside the inner message.
                let needle = b"\\\"args\\\": {}";
                let nested = format!("\\\"args\\\": {}{}", "[".repeat(200), "]".repeat(200));
                if let Some(at) = text.windows(needle.len()).position(|w| w == needle) {
                    text.splice(at..at + needle.len(), nested.into_bytes());
                }
                (text, "application/json")
            }),
        ),
        (
            "invalid UTF-8",
            false,
            Box::new(|_: &Hostile| {
                (
                    b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"\xff\xfe\"}".to_vec(),
                    "application/json",
                )
            }),
        ),
        (
            "wrong envelope version",
            false,
            Box::new(|h: &Hostile| {
                let (_, msg) = h.call_message("rpc_ping", Map::new());
                let inner = Value::Object(msg).to_string();
                (
                    json!({"oslo.version": "3.0", "oslo.message": inner})
                        .to_string()
                        .into_bytes(),
                    "application/json",
                )
            }),
        ),
        (
            "wrong content type",
            true,
            Box::new(|h: &Hostile| {
                let (_, mut msg) = h.call_message("rpc_ping", Map::new());
                for (k, v) in secure.serialize_context(&Context::fresh()) {
                    msg.insert(format!("_context_{k}"), v);
                }
                (envelope::wrap(&msg), "text/plain")
            }),
        ),
        (
            "not JSON",
            false,
            Box::new(|_: &Hostile| (random_bytes(64), "application/json")),
        ),
    ];

    for (kind, replies_due, build) in &kinds {
        let before = in_flight.started();
        let mut figures = Figures {
            kind,
            ..Figures::default()
        };
        for _ in 0..TRIES {
            let (body, content_type) = build(&hostile);
            hostile.publish(body, content_type).await;
            figures.tried += 1;
        }
        if *replies_due {
            for _ in 0..TRIES {
                let reply = hostile
                    .reply()
                    .await
                    .unwrap_or_else(|| panic!("{kind}: a call must get a failure reply"));
                if reply.failure.is_some() {
                    let failure = check_failure(&reply, &secrets);
                    assert_eq!(failure.class, "MessageDecodeError", "{kind}: {failure:?}");
                    figures.failure_replies += 1;
                } else {
                    figures.success_replies += 1;
                }
            }
        }
        // The trusted caller is still served after each kind.
        assert_eq!(
            ping(trusted.clone(), trusted_target.clone())
                .await
                .unwrap_or_else(|e| panic!("after {kind}: {e}")),
            json!(true)
        );
        trusted_calls += 1;
        figures.handlers_run = in_flight.started() - before - 1;
        let extra = drain(&mut hostile.replies).await;
        assert_eq!(
            extra, 0,
            "{kind}: at most one reply per call, none for unreadable bodies"
        );
        table.push(figures);
    }

    // Replays of a trusted request: the same body, a fresh `_unique_id`, another IV.
    let before = in_flight.started();
    let trusted_args = object(json!({"fs_path": null}));
    let mut request = Request {
        method: "get_filesystem_stats".into(),
        args: encrypted(&secure, trusted_args),
        namespace: None,
        version: Some("1.0".into()),
        msg_id: Some(uid()),
        reply_q: Some(hostile.reply_q.clone()),
        timeout: None,
        unique_id: Some(uid()),
        context: secure.serialize_context(&context_with_token(TRUSTED_TOKEN)),
    };
    hostile
        .publish(envelope::wrap(&request.to_message()), "application/json")
        .await;
    let original = hostile.reply().await.expect("the original is answered");
    assert!(original.failure.is_none(), "{original:?}");
    let replays = [
        ("replay: same body", false, false),
        ("replay: fresh _unique_id", true, false),
        ("replay: fresh _unique_id and altered IV", true, true),
    ];
    for (kind, fresh_id, flip_iv) in replays {
        let replay_before = in_flight.started();
        for _ in 0..TRIES {
            if fresh_id {
                request.unique_id = Some(uid());
            }
            if flip_iv {
                // CBC without a MAC: XOR-ing the IV changes the first plaintext block at will.
                // Byte 8 of `{"user": null` is the space after the colon; turned into a newline
                // the JSON stays valid, so only the replay filter can catch this copy.
                let wire = request.context["context"].as_str().expect("wire");
                let mut raw = STANDARD.decode(wire).expect("base64");
                raw[8] ^= b' ' ^ b'\n';
                request
                    .context
                    .insert("context".into(), Value::from(STANDARD.encode(&raw)));
                assert!(
                    secure.deserialize_context(request.context.clone()).is_ok(),
                    "the altered context still decrypts"
                );
            }
            hostile
                .publish(envelope::wrap(&request.to_message()), "application/json")
                .await;
        }
        assert_eq!(
            ping(trusted.clone(), trusted_target.clone())
                .await
                .expect("ping after replays"),
            json!(true)
        );
        trusted_calls += 1;
        let replies = drain(&mut hostile.replies).await;
        table.push(Figures {
            kind,
            tried: TRIES,
            failure_replies: 0,
            success_replies: replies,
            handlers_run: in_flight.started() - replay_before - 1,
        });
    }
    assert_eq!(
        in_flight.started() - before,
        1 + 3,
        "the original and three pings ran"
    );

    // Figures.
    println!("hostile sender against the guest RPC server ({TRIES} messages per kind)");
    println!(
        "{:<62} {:>6} {:>9} {:>9} {:>9}",
        "kind", "tried", "failures", "results", "handlers"
    );
    for f in &table {
        println!(
            "{:<62} {:>6} {:>9} {:>9} {:>9}",
            f.kind, f.tried, f.failure_replies, f.success_replies, f.handlers_run
        );
    }
    let tried: usize = table.iter().map(|f| f.tried).sum();
    let handlers: u64 = table.iter().map(|f| f.handlers_run).sum();
    let successes: usize = table.iter().map(|f| f.success_replies).sum();
    println!(
        "messages tried: {tried}; handlers run for them: {handlers}; results returned to them: {successes}"
    );
    println!(
        "trusted calls answered: {trusted_calls}; dispatcher requests in total: {} (trusted calls + the replayed original)",
        in_flight.started()
    );
    assert_eq!(
        handlers, 0,
        "no handler may run for the hostile sender: {table:#?}"
    );
    assert_eq!(
        successes, 0,
        "no result may reach the hostile sender: {table:#?}"
    );
    assert_eq!(in_flight.started(), trusted_calls + 1);
    assert!(
        fx.runtime.calls().is_empty(),
        "the runtime was used: {:?}",
        fx.runtime.calls()
    );
    assert!(
        fx.sink.events().is_empty(),
        "the conductor was told: {:?}",
        fx.sink.events()
    );

    // A trusted prepare with secrets runs (so its secrets reach the handlers and must still
    // stay out of the log).
    trusted
        .cast(
            &trusted_target,
            "prepare",
            prepare_args(TRUSTED_ROOT_PASSWORD, TRUSTED_USER_PASSWORD),
            &context_with_token(TRUSTED_TOKEN),
        )
        .await
        .expect("trusted prepare");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fx.sink.events().iter().any(|e| e.starts_with("heartbeat")) {
        assert!(Instant::now() < deadline, "the trusted prepare did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    hostile.close().await;
    trusted.close().await;
    server.stop().await;
    for queue in [target.topic.clone(), target.routing_key()] {
        let _ = transport.delete_queue(&queue).await;
    }
    let _ = transport.delete_exchange(&exchange).await;
    transport.close();

    let findings = scan_files(std::slice::from_ref(&log), &known_secrets()).expect("scan the log");
    let lines = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    println!(
        "secrets found in this test's log ({}, {lines} lines): {}",
        log.display(),
        findings.len()
    );
    assert!(findings.is_empty(), "{findings:#?}");
    assert!(lines > 0, "the log must hold the refusals");
}
