//! Shared helpers of the integration tests: the real broker, the Python venv, unique names.
//! A missing service makes a test fail with what to do, never skip.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netiso_config::TransportUrl;
use netiso_messaging::{Args, BrokerConfig, Context, Dispatcher, RabbitOptions, Transport};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_VENV: &str = "/var/lib/trove-netiso/venv";
pub const KEY: &str = "Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq";

/// The broker URL under test (`NETISO_TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("NETISO_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub fn broker_config() -> BrokerConfig {
    let url = amqp_url();
    let parsed = TransportUrl::from_str(&url)
        .unwrap_or_else(|err| panic!("bad NETISO_TEST_AMQP_URL {url:?}: {err}"));
    BrokerConfig::from_transport_url(&parsed).expect("usable broker URL")
}

/// Options for tests: quick reconnection so failures show fast.
pub fn test_options() -> RabbitOptions {
    let mut options = RabbitOptions::default();
    options.rabbit_retry_interval = Duration::from_millis(200);
    options.rabbit_interval_max = Duration::from_secs(2);
    options.publish_timeout = Duration::from_secs(20);
    options.kombu_missing_consumer_retry_timeout = Duration::from_secs(5);
    options
}

/// Connects or fails the test with instructions.
pub async fn connect(options: RabbitOptions) -> Transport {
    match Transport::connect(broker_config(), options, Duration::from_secs(10)).await {
        Ok(transport) => transport,
        Err(err) => panic!(
            "RabbitMQ is not reachable at {}: {err}. Run `cargo xtask provision` (or set NETISO_TEST_AMQP_URL)",
            amqp_url()
        ),
    }
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("netiso-test-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// The interop venv's Python, checked to have oslo.messaging 18.3.1.
pub fn python() -> PathBuf {
    let venv = std::env::var("NETISO_PY_VENV").unwrap_or_else(|_| DEFAULT_VENV.to_owned());
    let python = PathBuf::from(&venv).join("bin/python");
    let check = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m, cryptography; assert m.version('oslo.messaging') == '18.3.1', m.version('oslo.messaging')",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "the Python venv {venv} lacks oslo.messaging==18.3.1 or cryptography ({}). Run `cargo xtask provision`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!("no Python venv at {venv} ({err}). Run `cargo xtask provision`"),
    }
}

/// Path of a script under tests/python.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Logs this test binary's tracing output (debug level) to a file of the shared test-log
/// folder, which `tests/log_secrets.rs` scans for secrets.
pub fn init_tracing() {
    let suite = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "netiso-messaging".into());
    netiso_messaging::test_support::init_file_tracing(env!("CARGO_TARGET_TMPDIR"), &suite);
}

/// A Python helper process (`tests/python/<name>`), killed when dropped; it speaks in lines.
pub struct PyProcess {
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl PyProcess {
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(python())
            .arg(script(name))
            .args(args)
            .current_dir(script(""))
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {name}: {err}. Run `cargo xtask provision`"));
        let lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        Self { child, lines }
    }

    pub async fn line(&mut self, wait: Duration) -> String {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("python helper gave no line: {other:?}"),
        }
    }

    pub async fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("python helper exits")
            .unwrap()
    }
}

/// What a recording server ran: how often each `n` of `echo` (the calls) and of `record`
/// (the casts) ran, so that a test sees a loss and a second run alike.
#[derive(Debug, Default)]
pub struct Seen {
    pub calls: HashMap<u64, u32>,
    pub casts: HashMap<u64, u32>,
}

impl Seen {
    /// The casts of `confirmed` that have not run (yet).
    pub fn missing_casts(&self, confirmed: &BTreeSet<u64>) -> Vec<u64> {
        confirmed
            .iter()
            .copied()
            .filter(|n| !self.casts.contains_key(n))
            .collect()
    }

    /// Panics on a call or a cast that ran more than once.
    pub fn assert_none_ran_twice(&self) {
        let twice: Vec<_> = self.calls.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "calls handled more than once: {twice:?}");
        let dup_casts: Vec<_> = self.casts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            dup_casts.is_empty(),
            "casts handled more than once: {dup_casts:?}"
        );
    }
}

/// A server's methods that record into `seen`: `echo` (a call, answers its `n`) and `record`
/// (a cast).
pub fn recording_dispatcher(seen: &Arc<Mutex<Seen>>) -> Dispatcher {
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    let calls = Arc::clone(seen);
    dispatcher.register("echo", move |_ctx: Context, mut args: Args| {
        let seen = Arc::clone(&calls);
        async move {
            let n: u64 = args.take("n")?;
            *seen.lock().unwrap().calls.entry(n).or_default() += 1;
            Ok(json!(n))
        }
    });
    let casts = Arc::clone(seen);
    dispatcher.register("record", move |_ctx: Context, mut args: Args| {
        let seen = Arc::clone(&casts);
        async move {
            let n: u64 = args.take("n")?;
            *seen.lock().unwrap().casts.entry(n).or_default() += 1;
            Ok(Value::Null)
        }
    });
    dispatcher
}

/// Waits (at most `bound`) until every cast in `confirmed` has run; panics naming the ones
/// that did not. Returns when the last of them was first seen to have run.
pub async fn wait_for_casts(
    seen: &Mutex<Seen>,
    confirmed: &BTreeSet<u64>,
    bound: Duration,
) -> Instant {
    let deadline = Instant::now() + bound;
    loop {
        let missing = seen.lock().unwrap().missing_casts(confirmed);
        if missing.is_empty() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "confirmed casts lost: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
