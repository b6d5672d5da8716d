//! Interop with the real Python oslo.messaging 18.3.1 on the same broker: Python calls our
//! server (plain and encrypted), our client calls a Python server, a Python conductor-like
//! server decrypts our casts, and both sides' declarations are equivalent.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::sync::Arc;
use std::time::Duration;

use netiso_messaging::{
    Args, CallError, ConductorClient, Context, Dispatcher, HandlerError, InstanceKey,
    RabbitOptions, RpcClient, RpcServer, Serializer, ServerConfig, ServiceStatus, Target,
    Transport, TransportError,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use common::{KEY, PyProcess, amqp_url, connect, object, test_options, unique};

fn guest_target(version: &str) -> Target {
    let id = uuid::Uuid::new_v4().to_string();
    Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: version.into(),
    }
}

async fn cleanup(transport: &Transport, exchange: &str, target: &Target) {
    for queue in [target.topic.clone(), target.routing_key()] {
        transport.delete_queue(&queue).await.unwrap();
    }
    transport.delete_exchange(exchange).await.unwrap();
}

async fn python_calls_our_server(key: Option<&str>) {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("ex");
    let target = guest_target("1.3");
    let serializer = key.map_or(Serializer::Plain, |k| {
        Serializer::Secure(InstanceKey::new(k).unwrap())
    });
    let casts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    dispatcher.register("rpc_ping", |_ctx: Context, args: Args| async move {
        args.finish()?;
        Ok(json!(true))
    });
    dispatcher.register("echo", |ctx: Context, mut args: Args| async move {
        let value: Value = args.take("value")?;
        args.finish()?;
        Ok(json!({"value": value, "request_id": ctx.get("request_id")}))
    });
    dispatcher.register("fail", |_ctx: Context, mut args: Args| async move {
        Err(HandlerError::new(args.take::<String>("message")?))
    });
    let recorded = Arc::clone(&casts);
    dispatcher.register("record", move |_ctx: Context, mut args: Args| {
        let recorded = Arc::clone(&recorded);
        async move {
            recorded.lock().await.push(args.take("value")?);
            Ok(Value::Null)
        }
    });
    let server = RpcServer::start(
        &transport,
        ServerConfig::new(exchange.clone(), target.clone(), serializer).with_max_concurrency(8),
        dispatcher,
    )
    .await
    .unwrap();

    let url = amqp_url();
    let server_name = target.server.clone().unwrap();
    let mut py = PyProcess::spawn(
        "py_client.py",
        &[
            &url,
            &exchange,
            &target.topic,
            &server_name,
            key.unwrap_or("-"),
        ],
    );
    let out: Value = serde_json::from_str(&py.line(Duration::from_secs(90)).await).unwrap();
    assert!(py.finish().await.success());

    assert_eq!(out["rpc_ping"], json!({"result": true}), "{out}");
    assert_eq!(out["topic_call"], json!({"result": true}), "{out}");
    assert_eq!(
        out["echo"]["result"],
        json!({"value": {"n": 2048, "s": "8.0.36", "none": null}, "request_id": out["echo_request_id"]}),
        "{out}"
    );
    let remote = |name: &str| out[name]["remote_error"].clone();
    assert_eq!(
        remote("no_such_method")["exc_type"],
        "NoSuchMethod",
        "{out}"
    );
    assert_eq!(
        remote("no_such_method")["value"],
        "Endpoint does not support RPC method get_hwinfo"
    );
    assert_eq!(
        remote("unsupported_version")["exc_type"],
        "UnsupportedVersion",
        "{out}"
    );
    assert_eq!(
        remote("unsupported_version")["value"],
        "Endpoint does not support RPC version 1.4. Attempted method: rpc_ping"
    );
    assert_eq!(remote("handler_error")["exc_type"], "GuestError", "{out}");
    assert_eq!(remote("handler_error")["value"], "disk full");
    assert_eq!(remote("bad_arguments")["exc_type"], "TypeError", "{out}");
    assert_eq!(
        remote("bad_arguments")["value"],
        "rpc_ping() got an unexpected keyword argument 'extra'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while casts.lock().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*casts.lock().await, vec![json!("cast-from-python")]);
    server.stop().await;
    cleanup(&transport, &exchange, &target).await;
}

#[tokio::test]
async fn python_client_calls_our_plain_server() {
    python_calls_our_server(None).await;
}

#[tokio::test]
async fn python_client_calls_our_encrypted_server() {
    python_calls_our_server(Some(KEY)).await;
}

async fn we_call_python_server(key: Option<&str>) {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("ex");
    let target = guest_target("1.3");
    let url = amqp_url();
    let server_name = target.server.clone().unwrap();
    let mut py = PyProcess::spawn(
        "py_server.py",
        &[
            &url,
            &exchange,
            &target.topic,
            &server_name,
            key.unwrap_or("-"),
        ],
    );
    assert_eq!(py.line(Duration::from_secs(60)).await, "READY");
    let serializer = key.map_or(Serializer::Plain, |k| {
        Serializer::Secure(InstanceKey::new(k).unwrap())
    });
    let client = RpcClient::new(&transport, &exchange, serializer);
    let ctx = Context::fresh();
    let t = Duration::from_secs(15);
    assert_eq!(
        client
            .call(&target, "rpc_ping", object(json!({})), &ctx, t)
            .await
            .unwrap(),
        json!(true)
    );
    let echoed = client
        .call(
            &target,
            "echo",
            object(json!({"value": [1, "é", 2.5, null]})),
            &ctx,
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        echoed,
        json!({"value": [1, "é", 2.5, null], "request_id": ctx.get("request_id")})
    );
    match client
        .call(&target, "fail", object(json!({"message": "boom"})), &ctx, t)
        .await
    {
        Err(CallError::Remote {
            class,
            module,
            message,
        }) => {
            assert_eq!(
                (class.as_str(), module.as_str(), message.as_str()),
                ("ValueError", "builtins", "boom")
            );
        }
        other => panic!("expected the Python failure, got {other:?}"),
    }
    match client
        .call(&target, "nope", object(json!({})), &ctx, t)
        .await
    {
        Err(CallError::Remote { class, message, .. }) => {
            assert_eq!(class, "NoSuchMethod");
            assert_eq!(message, "Endpoint does not support RPC method nope");
        }
        other => panic!("expected NoSuchMethod, got {other:?}"),
    }
    client.close().await;
    assert!(py.finish().await.success());
    cleanup(&transport, &exchange, &target).await;
}

#[tokio::test]
async fn our_client_calls_python_plain_server() {
    we_call_python_server(None).await;
}

#[tokio::test]
async fn our_client_calls_python_encrypted_server() {
    we_call_python_server(Some(KEY)).await;
}

#[tokio::test]
async fn python_conductor_decrypts_our_heartbeats_and_notifications() {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("ex");
    let topic = unique("trove-conductor");
    let instance_id = uuid::Uuid::new_v4().to_string();
    let url = amqp_url();
    let mut py = PyProcess::spawn(
        "py_conductor.py",
        &[&url, &exchange, &topic, &instance_id, KEY, "7"],
    );
    assert_eq!(py.line(Duration::from_secs(60)).await, "READY");
    let conductor = ConductorClient::new(
        &transport,
        &exchange,
        &topic,
        &instance_id,
        Some(InstanceKey::new(KEY).unwrap()),
    );
    conductor.heartbeat(ServiceStatus::Building).await.unwrap();
    conductor.heartbeat(ServiceStatus::Healthy).await.unwrap();
    conductor
        .heartbeat(ServiceStatus::FailedToSpawn)
        .await
        .unwrap();
    let mut request_ctx = Context::fresh();
    request_ctx.0.insert(
        "trove_notification".into(),
        json!({"instance_id": instance_id, "name": "db1"}),
    );
    let notification = request_ctx.get("trove_notification").cloned().unwrap();
    conductor
        .notify_end(&request_ctx, notification.clone())
        .await
        .unwrap();
    conductor
        .notify_exc_info(
            &request_ctx,
            notification.clone(),
            "prepare failed",
            vec!["Traceback ...".into()],
        )
        .await
        .unwrap();

    conductor
        .update_backup(
            &request_ctx,
            "b-1",
            object(json!({"size": 1.5, "state": "COMPLETED", "success": true})),
        )
        .await
        .unwrap();
    conductor.report_root(&request_ctx).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..7 {
        received
            .push(serde_json::from_str::<Value>(&py.line(Duration::from_secs(30)).await).unwrap());
    }
    assert!(py.finish().await.success());
    received.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["method"] != "heartbeat",
                v["args"]["sent"].as_f64().unwrap_or(f64::MAX),
            )
        };
        key(a).partial_cmp(&key(b)).unwrap()
    });
    let heartbeats: Vec<&Value> = received
        .iter()
        .filter(|m| m["method"] == "heartbeat")
        .collect();
    let statuses: Vec<&str> = heartbeats
        .iter()
        .map(|m| m["args"]["payload"]["service_status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["building", "healthy", "failed to spawn"]);
    let sent: Vec<f64> = heartbeats
        .iter()
        .map(|m| m["args"]["sent"].as_f64().unwrap())
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0] < w[1]),
        "sent must strictly increase: {sent:?}"
    );
    for m in &received {
        assert_eq!(m["context_instance_id"], json!(instance_id), "{m}");
    }
    for m in &heartbeats {
        assert_eq!(m["args"]["instance_id"], json!(instance_id));
    }
    let end = received
        .iter()
        .find(|m| m["method"] == "notify_end")
        .unwrap();
    assert_eq!(end["args"]["serialized_notification"], notification);
    assert_eq!(end["args"]["notification_args"], json!({}));
    assert_eq!(
        end["context_request_id"],
        request_ctx.get("request_id").cloned().unwrap()
    );
    let backup = received
        .iter()
        .find(|m| m["method"] == "update_backup")
        .unwrap();
    assert_eq!(backup["args"]["backup_id"], "b-1");
    assert_eq!(backup["args"]["instance_id"], json!(instance_id));
    assert_eq!(
        backup["args"]["fields"],
        json!({"size": 1.5, "state": "COMPLETED", "success": true})
    );
    assert!(backup["args"]["sent"].as_f64().unwrap() > *sent.last().unwrap());
    let root = received
        .iter()
        .find(|m| m["method"] == "report_root")
        .unwrap();
    assert_eq!(root["args"]["instance_id"], json!(instance_id));
    let exc = received
        .iter()
        .find(|m| m["method"] == "notify_exc_info")
        .unwrap();
    assert_eq!(exc["args"]["message"], "prepare failed");
    assert_eq!(exc["args"]["exception"], json!(["Traceback ..."]));
    transport.delete_queue(&topic).await.unwrap();
    transport
        .delete_queue(&format!("{topic}.conductor-host"))
        .await
        .unwrap();
    transport.delete_exchange(&exchange).await.unwrap();
}

/// Starts a server with no methods: only its declarations on the broker matter.
async fn start_declaring_server(
    transport: &Transport,
    exchange: &str,
    target: &Target,
) -> Result<RpcServer, TransportError> {
    RpcServer::start(
        transport,
        ServerConfig::new(exchange.to_owned(), target.clone(), Serializer::Plain)
            .with_max_concurrency(1),
        Dispatcher::new("1.3").unwrap(),
    )
    .await
}

async fn declarations_match(options: RabbitOptions, py_mode: &str) {
    common::init_tracing();
    let transport = connect(options).await;
    let exchange = unique("ex");
    let url = amqp_url();

    // Ours first, then Python's on top.
    let target = guest_target("1.3");
    let server = start_declaring_server(&transport, &exchange, &target)
        .await
        .unwrap();
    let name = target.server.clone().unwrap();
    let mut py = PyProcess::spawn(
        "py_declare.py",
        &[&url, &exchange, &target.topic, &name, py_mode],
    );
    let mut lines = Vec::new();
    loop {
        let line = py.line(Duration::from_secs(60)).await;
        let done = line == "DECLARED" || line.starts_with("ERROR");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(
        py.finish().await.success(),
        "Python could not declare on top of ours: {lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("DECLARED"),
        "{lines:?}"
    );
    server.stop().await;
    cleanup(&transport, &exchange, &target).await;

    // Python's first, then ours on top: a 406 would fail the start.
    let target = guest_target("1.3");
    let name = target.server.clone().unwrap();
    let py = PyProcess::spawn(
        "py_declare.py",
        &[&url, &exchange, &target.topic, &name, py_mode],
    );
    assert!(py.finish().await.success(), "Python declarations failed");
    let server = start_declaring_server(&transport, &exchange, &target)
        .await
        .unwrap_or_else(|err| panic!("our declarations differ from Python's: {err}"));
    server.stop().await;
    cleanup(&transport, &exchange, &target).await;
}

#[tokio::test]
async fn declarations_match_python_with_default_options() {
    declarations_match(test_options(), "default").await;
}

#[tokio::test]
async fn declarations_match_python_with_quorum_queues() {
    let mut options = test_options();
    options.rabbit_quorum_queue = true;
    options.rabbit_quorum_delivery_limit = 3;
    declarations_match(
        options,
        "rabbit_quorum_queue=true,rabbit_quorum_delivery_limit=3",
    )
    .await;
}

#[tokio::test]
async fn declarations_match_python_with_durable_auto_delete_ha_and_ttl() {
    let mut options = test_options();
    options.amqp_durable_queues = true;
    options.amqp_auto_delete = true;
    options.rabbit_ha_queues = true;
    options.rabbit_transient_queues_ttl = 60;
    declarations_match(
        options,
        "amqp_durable_queues=true,amqp_auto_delete=true,rabbit_ha_queues=true,rabbit_transient_queues_ttl=60",
    )
    .await;
}

#[tokio::test]
async fn declarations_match_python_with_transient_quorum_queues() {
    let mut options = test_options();
    options.rabbit_transient_quorum_queue = true;
    declarations_match(options, "rabbit_transient_quorum_queue=true").await;
}

#[tokio::test]
async fn a_different_declaration_is_refused_by_the_broker() {
    // The check above is only meaningful if the broker does reject inequivalent flags.
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("ex");
    let target = guest_target("1.3");
    let start = |options: RabbitOptions| {
        let exchange = exchange.clone();
        let target = target.clone();
        async move {
            let transport = connect(options).await;
            start_declaring_server(&transport, &exchange, &target).await
        }
    };
    let first = start(test_options()).await.unwrap();
    let mut quorum = test_options();
    quorum.rabbit_quorum_queue = true;
    let err = start(quorum)
        .await
        .err()
        .expect("inequivalent declaration must fail");
    assert!(
        err.to_string().contains("PRECONDITION_FAILED") || err.to_string().contains("406"),
        "{err}"
    );
    first.stop().await;
    cleanup(&transport, &exchange, &target).await;
}
