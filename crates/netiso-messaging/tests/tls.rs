//! TLS to the real RabbitMQ (its 5671 listener from `cargo xtask provision`): our client and
//! server, with and without a client certificate, and Python oslo.messaging 18.3.1 as the peer
//! in both directions, every side configured through `transport_url` query options as oslo
//! reads them. Refusals: a CA that did not sign the broker's certificate (the real broker),
//! an expired certificate and one for another name (a local TLS acceptor of this test's own,
//! with certificates it makes).

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netiso_config::TransportUrl;
use netiso_messaging::{
    Args, BrokerConfig, Context, Dispatcher, RabbitOptions, RpcClient, RpcServer, Serializer,
    ServerConfig, Target, Transport, TransportError,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use common::{PyProcess, object, test_options, unique};

const TLS_DIR: &str = "/var/lib/trove-netiso/tls";
const PROVISION: &str =
    "Run `cargo xtask provision` (it makes the test CA and RabbitMQ's TLS listener)";

fn env_or(name: &str, default: String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

/// The broker's TLS URL: `ssl` and `ssl_ca_file` in its query (`NETISO_TEST_AMQPS_URL`).
fn amqps_url() -> String {
    env_or(
        "NETISO_TEST_AMQPS_URL",
        format!("amqp://guest:guest@127.0.0.1:5671/%2f?ssl=true&ssl_ca_file={TLS_DIR}/ca.pem"),
    )
}

/// The same URL presenting the provisioned client certificate.
fn amqps_url_with_client_cert() -> String {
    let cert = env_or("NETISO_TLS_CLIENT_CERT", format!("{TLS_DIR}/client.pem"));
    let key = env_or("NETISO_TLS_CLIENT_KEY", format!("{TLS_DIR}/client-key.pem"));
    format!("{}&ssl_cert_file={cert}&ssl_key_file={key}", amqps_url())
}

/// Broker and options from a URL, its query applied as oslo applies it.
fn from_url(url: &str) -> (BrokerConfig, RabbitOptions) {
    let parsed = TransportUrl::from_str(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
    let config = BrokerConfig::from_transport_url(&parsed).unwrap();
    let mut options = test_options();
    let ignored = options.apply_url_query(&parsed.query).unwrap();
    assert!(ignored.is_empty(), "unknown query options {ignored:?}");
    assert!(options.tls.ssl, "{url} does not turn ssl on");
    (config, options)
}

/// Connects over TLS or fails the test with what to do.
async fn connect_tls(url: &str) -> (Transport, Duration) {
    let (config, options) = from_url(url);
    let started = Instant::now();
    match Transport::connect(config, options, Duration::from_secs(10)).await {
        Ok(transport) => (transport, started.elapsed()),
        Err(err) => panic!("no TLS connection to RabbitMQ at {url}: {err}. {PROVISION}"),
    }
}

fn target() -> Target {
    let id = uuid::Uuid::new_v4().to_string();
    Target {
        topic: format!("guestagent.{id}"),
        server: Some(id),
        version: "1.3".into(),
    }
}

async fn cleanup(transport: &Transport, exchange: &str, target: &Target) {
    for queue in [target.topic.clone(), target.routing_key()] {
        transport.delete_queue(&queue).await.unwrap();
    }
    transport.delete_exchange(exchange).await.unwrap();
}

/// `rpc_ping` and a `record` cast whose values land in the returned list.
fn dispatcher() -> (Dispatcher, Arc<Mutex<Vec<Value>>>) {
    let casts = Arc::new(Mutex::new(Vec::new()));
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    dispatcher.register("rpc_ping", |_ctx: Context, args: Args| async move {
        args.finish()?;
        Ok(json!(true))
    });
    let recorded = Arc::clone(&casts);
    dispatcher.register("record", move |_ctx: Context, mut args: Args| {
        let recorded = Arc::clone(&recorded);
        async move {
            recorded.lock().await.push(args.take("value")?);
            Ok(Value::Null)
        }
    });
    (dispatcher, casts)
}

async fn wait_for_casts(casts: &Mutex<Vec<Value>>, expected: &[Value]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while casts.lock().await.len() < expected.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*casts.lock().await, expected);
}

/// `ssl` and `peer_cert_subject` of every broker connection this process opened.
fn broker_view_of_our_connections() -> Vec<(String, String)> {
    let node = std::env::var("NETISO_RABBIT_NODE").unwrap_or_else(|_| "rabbit@localhost".into());
    let out = std::process::Command::new("timeout")
        .args(["30", "rabbitmqctl", "-n", &node, "-q", "list_connections"])
        .args(["ssl", "peer_cert_subject", "client_properties"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl: {e}. {PROVISION}"));
    assert!(
        out.status.success(),
        "rabbitmqctl list_connections failed: {}. {PROVISION}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = format!(":{}:", std::process::id());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&ours))
        .map(|line| {
            let mut fields = line.split('\t');
            let ssl = fields.next().unwrap_or_default().to_owned();
            let subject = fields.next().unwrap_or_default().to_owned();
            (ssl, subject)
        })
        .collect()
}

async fn our_client_calls_our_server(url: &str, client_cert: bool) {
    common::init_tracing();
    let (server_transport, connect_time) = connect_tls(url).await;
    let (client_transport, _) = connect_tls(url).await;
    eprintln!("TLS connect (TCP + handshake + AMQP open): {connect_time:?}");
    let exchange = unique("tls-ex");
    let target = target();
    let (dispatcher, casts) = dispatcher();
    let server = RpcServer::start(
        &server_transport,
        ServerConfig::new(exchange.clone(), target.clone(), Serializer::Plain)
            .with_max_concurrency(4),
        dispatcher,
    )
    .await
    .unwrap();
    let client = RpcClient::new(&client_transport, &exchange, Serializer::Plain);
    let answer = client
        .call(
            &target,
            "rpc_ping",
            object(json!({})),
            &Context::fresh(),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!(true));
    client
        .cast(
            &target,
            "record",
            object(json!({"value": "cast over TLS"})),
            &Context::fresh(),
        )
        .await
        .unwrap();
    wait_for_casts(&casts, &[json!("cast over TLS")]).await;

    let view = broker_view_of_our_connections();
    eprintln!("the broker's view (ssl, peer certificate): {view:?}");
    assert!(
        !view.is_empty() && view.iter().all(|(ssl, _)| ssl == "true"),
        "the broker must see only TLS connections from this process: {view:?}"
    );
    // Tests run in parallel in this process: the view holds other tests' connections too,
    // so each variant checks that its kind is there.
    if client_cert {
        assert!(
            view.iter()
                .any(|(_, subject)| subject.contains("CN=trove-guest")),
            "the broker must see the client certificate: {view:?}"
        );
    } else {
        assert!(
            view.iter().any(|(_, subject)| subject.is_empty()),
            "the broker must see a connection without a certificate: {view:?}"
        );
    }
    client.close().await;
    server.stop().await;
    cleanup(&server_transport, &exchange, &target).await;
    client_transport.close();
    server_transport.close();
}

#[tokio::test]
async fn our_client_and_server_over_tls_without_a_client_certificate() {
    our_client_calls_our_server(&amqps_url(), false).await;
}

#[tokio::test]
async fn our_client_and_server_over_tls_with_a_client_certificate() {
    our_client_calls_our_server(&amqps_url_with_client_cert(), true).await;
}

#[tokio::test]
async fn tls_1_2_only_connects_too() {
    let (transport, _) = connect_tls(&format!("{}&ssl_version=TLSv1_2", amqps_url())).await;
    assert!(transport.is_connected());
    transport.close();
}

#[tokio::test]
async fn python_client_calls_our_server_over_tls() {
    common::init_tracing();
    let (transport, _) = connect_tls(&amqps_url()).await;
    let exchange = unique("tls-ex");
    let target = target();
    let (mut dispatcher, casts) = dispatcher();
    dispatcher.register("echo", |ctx: Context, mut args: Args| async move {
        let value: Value = args.take("value")?;
        args.finish()?;
        Ok(json!({"value": value, "request_id": ctx.get("request_id")}))
    });
    let server = RpcServer::start(
        &transport,
        ServerConfig::new(exchange.clone(), target.clone(), Serializer::Plain)
            .with_max_concurrency(4),
        dispatcher,
    )
    .await
    .unwrap();
    // Python presents the client certificate, through the same query options.
    let url = amqps_url_with_client_cert();
    let server_name = target.server.clone().unwrap();
    let mut py = PyProcess::spawn(
        "py_client.py",
        &[&url, &exchange, &target.topic, &server_name, "-"],
    );
    let out: Value = serde_json::from_str(&py.line(Duration::from_secs(90)).await).unwrap();
    assert!(py.finish().await.success());
    assert_eq!(out["rpc_ping"], json!({"result": true}), "{out}");
    assert_eq!(out["topic_call"], json!({"result": true}), "{out}");
    assert_eq!(
        out["echo"]["result"]["value"],
        json!({"n": 2048, "s": "8.0.36", "none": null}),
        "{out}"
    );
    wait_for_casts(&casts, &[json!("cast-from-python")]).await;
    server.stop().await;
    cleanup(&transport, &exchange, &target).await;
    transport.close();
}

#[tokio::test]
async fn our_client_calls_a_python_server_over_tls() {
    common::init_tracing();
    let (transport, _) = connect_tls(&amqps_url_with_client_cert()).await;
    let exchange = unique("tls-ex");
    let target = target();
    let url = amqps_url();
    let server_name = target.server.clone().unwrap();
    let mut py = PyProcess::spawn(
        "py_server.py",
        &[&url, &exchange, &target.topic, &server_name, "-"],
    );
    assert_eq!(py.line(Duration::from_secs(60)).await, "READY");
    let client = RpcClient::new(&transport, &exchange, Serializer::Plain);
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
        .call(&target, "echo", object(json!({"value": ["é", 1]})), &ctx, t)
        .await
        .unwrap();
    assert_eq!(echoed["value"], json!(["é", 1]));
    client.close().await;
    assert!(py.finish().await.success());
    cleanup(&transport, &exchange, &target).await;
    transport.close();
}

/// A CA of this test's own, and leaf certificates it signs.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "netiso TLS test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names`, valid from `days_from_now.0` to `.1` days from now.
    fn leaf(
        &self,
        names: &[&str],
        days_from_now: (i64, i64),
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days_from_now.0);
        params.not_after = now + time::Duration::days(days_from_now.1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    fn write(&self, dir: &std::path::Path) -> String {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path.display().to_string()
    }
}

/// Accepts TLS connections on a loopback port with `identity` until dropped; returns the port.
async fn tls_acceptor(
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> (u16, tokio::task::JoinHandle<()>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(identity.0, identity.1)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // The client refuses the certificate: the handshake fails, which is the point.
            let _ = acceptor.accept(stream).await;
        }
    });
    (port, task)
}

/// Connects to `port` trusting `ca_file`, and returns the error, which must come after
/// retries (a refused certificate is retried like any connection failure).
async fn refused(port: u16, ca_file: &str) -> String {
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f?ssl=true&ssl_ca_file={ca_file}");
    let (config, options) = from_url(&url);
    let err = Transport::connect(config, options, Duration::from_millis(1500))
        .await
        .expect_err("the certificate must be refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(
        matches!(err, TransportError::Unreachable { attempts, .. } if attempts >= 2),
        "refusals are retried: {text}"
    );
    text
}

#[tokio::test]
async fn an_expired_broker_certificate_is_refused_and_said_so() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let (port, task) = tls_acceptor(ca.leaf(&["127.0.0.1"], (-30, -1))).await;
    let text = refused(port, &ca_file).await;
    assert!(
        text.contains("TLS handshake failed: the broker's certificate has expired"),
        "{text}"
    );
    task.abort();
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_and_said_so() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let (port, task) = tls_acceptor(ca.leaf(&["broker.example", "10.9.9.9"], (-1, 30))).await;
    let text = refused(port, &ca_file).await;
    assert!(
        text.contains("the broker's certificate is not valid for name \"127.0.0.1\""),
        "{text}"
    );
    assert!(
        text.contains("broker.example"),
        "says what it is valid for: {text}"
    );
    task.abort();
}

#[tokio::test]
async fn the_real_broker_is_refused_with_a_ca_that_did_not_sign_it() {
    let other = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = other.write(dir.path());
    let (config, _) = from_url(&amqps_url());
    let port = config.hosts[0].port;
    let text = refused(port, &ca_file).await;
    assert!(
        text.contains("unknown issuer") && text.contains(&ca_file),
        "{text}"
    );
}

#[tokio::test]
async fn unusable_tls_files_stop_the_transport_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let url = format!(
        "amqp://guest:guest@127.0.0.1:5671/%2f?ssl=true&ssl_ca_file={}",
        missing.display()
    );
    let (config, options) = from_url(&url);
    let err = Transport::start(config, options).expect_err("missing CA file");
    assert!(matches!(err, TransportError::Tls(_)), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "[oslo_messaging_rabbit] ssl_ca_file = {}: cannot read the file",
            missing.display()
        )),
        "{err}"
    );
}
