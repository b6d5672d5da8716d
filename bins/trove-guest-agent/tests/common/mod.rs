//! Shared helpers of the agent's integration tests: the real broker, a test conductor, the
//! agent process inside the simulated guest namespace, and drop guards for everything.
//! A missing service makes a test fail with what to do, never skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use netiso_config::TransportUrl;
use netiso_messaging::{
    Args, BrokerConfig, CallError, Context, Dispatcher, InstanceKey, RabbitOptions, RpcClient,
    RpcServer, Serializer, ServerConfig, Target, Transport, TransportError,
};
use netiso_runtime::test_support::image::PublishedImage;
use netiso_runtime::test_support::{PROVISION_HINT, block_on_cleanup, guest_netns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub const KEY: &str = "Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq";
/// How long each report of a `prepare` (pull, create, start, port answers) may take.
const PREPARE_REPORT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_TEST_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_GUEST_URL: &str = "amqp://guest:guest@10.251.0.1:5672/%2f";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The broker as this test process reaches it.
pub fn test_url() -> String {
    env_or("NETISO_TEST_AMQP_URL", DEFAULT_TEST_URL)
}

/// The broker as the agent inside the guest namespace reaches it (management network).
pub fn guest_url() -> String {
    env_or("NETISO_GUEST_AMQP_URL", DEFAULT_GUEST_URL)
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("netiso-agent-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The broker (or cluster) as this test process reaches it, and whether its queues are
/// quorum queues (`rabbit_quorum_queue`, as the agent under test is told).
#[derive(Debug, Clone)]
pub struct TestBroker {
    pub url: String,
    pub quorum_queues: bool,
}

impl Default for TestBroker {
    fn default() -> Self {
        Self {
            url: test_url(),
            quorum_queues: false,
        }
    }
}

fn broker_config(url: &str) -> BrokerConfig {
    let parsed = TransportUrl::from_str(url).unwrap_or_else(|e| panic!("bad {url:?}: {e}"));
    BrokerConfig::from_transport_url(&parsed).expect("usable broker URL")
}

fn options(quorum_queues: bool) -> RabbitOptions {
    let mut options = RabbitOptions::default();
    options.rabbit_quorum_queue = quorum_queues;
    options.rabbit_retry_interval = Duration::from_millis(200);
    options.rabbit_interval_max = Duration::from_secs(2);
    options.publish_timeout = Duration::from_secs(20);
    options.kombu_missing_consumer_retry_timeout = Duration::from_secs(5);
    options
}

/// Connects to the broker or fails the test with instructions.
pub async fn connect() -> Transport {
    connect_to(&TestBroker::default()).await
}

/// Connects to `broker` or fails the test with instructions.
pub async fn connect_to(broker: &TestBroker) -> Transport {
    let config = broker_config(&broker.url);
    match Transport::connect(
        config,
        options(broker.quorum_queues),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(transport) => transport,
        Err(e) => panic!(
            "RabbitMQ is not reachable at {}: {e}: {PROVISION_HINT}",
            broker.url
        ),
    }
}

/// Deletes the queues and exchange a test made, when dropped (also on failure).
pub struct BrokerCleanup {
    pub queues: Vec<String>,
    pub exchange: String,
    pub broker: TestBroker,
}

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchange = self.exchange.clone();
        let broker = self.broker.clone();
        block_on_cleanup(move || async move {
            let config = broker_config(&broker.url);
            let options = options(broker.quorum_queues);
            match Transport::connect(config, options, Duration::from_secs(5)).await {
                Ok(transport) => {
                    for queue in &queues {
                        if let Err(e) = transport.delete_queue(queue).await {
                            eprintln!("cleanup: queue {queue}: {e}");
                        }
                    }
                    if let Err(e) = transport.delete_exchange(&exchange).await {
                        eprintln!("cleanup: exchange {exchange}: {e}");
                    }
                    transport.close();
                }
                Err(e) => eprintln!("cleanup: broker unreachable, queues left: {e}"),
            }
        });
    }
}

/// One cast the conductor received: method, decrypted arguments, arrival time.
#[derive(Debug, Clone)]
pub struct ConductorEvent {
    pub method: String,
    pub args: Map<String, Value>,
    pub received_at: Instant,
}

impl ConductorEvent {
    /// `payload.service_status` of a heartbeat.
    pub fn status(&self) -> Option<&str> {
        self.args
            .get("payload")
            .and_then(|p| p.get("service_status"))
            .and_then(Value::as_str)
    }
}

/// A stand-in for Trove's conductor on a test-declared queue.
pub struct TestConductor {
    server: Option<RpcServer>,
    events: mpsc::UnboundedReceiver<ConductorEvent>,
}

impl TestConductor {
    pub async fn start(
        transport: &Transport,
        exchange: &str,
        queue: &str,
        guest_id: &str,
        key: Option<&str>,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut dispatcher = Dispatcher::new("1.0").expect("version");
        for method in [
            "heartbeat",
            "notify_end",
            "notify_exc_info",
            "update_backup",
        ] {
            let tx = tx.clone();
            dispatcher.register(method, move |_context: Context, args: Args| {
                let event = ConductorEvent {
                    method: method.to_owned(),
                    args: args.into_map(),
                    received_at: Instant::now(),
                };
                let _ = tx.send(event);
                async move { Ok(Value::Null) }
            });
        }
        let serializer = match key {
            Some(key) => Serializer::Conductor {
                key: InstanceKey::new(key).expect("key"),
                instance_id: guest_id.to_owned(),
            },
            None => Serializer::Plain,
        };
        let server = RpcServer::start(
            transport,
            ServerConfig::new(
                exchange.to_owned(),
                Target {
                    topic: queue.to_owned(),
                    server: None,
                    version: "1.0".into(),
                },
                serializer,
            )
            // One at a time: events arrive in the order the agent sent them.
            .with_max_concurrency(1),
            dispatcher,
        )
        .await
        .expect("test conductor starts");
        Self {
            server: Some(server),
            events,
        }
    }

    /// The next event, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> ConductorEvent {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the test conductor stopped"),
            Err(_) => panic!("no conductor cast within {timeout:?}"),
        }
    }

    /// The next event, however long it takes (callers bound the wait).
    pub async fn next_event(&mut self) -> ConductorEvent {
        self.events
            .recv()
            .await
            .expect("the test conductor stopped")
    }

    /// Nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(wait, self.events.recv()).await {
            panic!("unexpected conductor cast: {event:?}");
        }
    }

    /// Waits for what a successful `prepare` sends the conductor: `building`, then `healthy`
    /// (later), then `notify_end` for this guest; returns the `notify_end` for further checks.
    pub async fn expect_prepare_succeeded(
        &mut self,
        guest_id: &str,
        agent: &AgentProcess,
    ) -> ConductorEvent {
        let building = self.next(PREPARE_REPORT_TIMEOUT).await;
        assert_eq!(building.method, "heartbeat", "{building:?}");
        assert_eq!(building.status(), Some("building"), "{building:?}");
        assert_eq!(building.args["instance_id"], Value::from(guest_id));
        let healthy = self.next(PREPARE_REPORT_TIMEOUT).await;
        assert_eq!(healthy.method, "heartbeat", "{healthy:?}");
        assert_eq!(
            healthy.status(),
            Some("healthy"),
            "{healthy:?}\n{}",
            agent.log_text()
        );
        assert!(
            healthy.args["sent"].as_f64() > building.args["sent"].as_f64(),
            "sent strictly increases"
        );
        let end = self.next(PREPARE_REPORT_TIMEOUT).await;
        assert_eq!(end.method, "notify_end", "{end:?}");
        assert_eq!(
            end.args["serialized_notification"]["instance_id"],
            Value::from(guest_id)
        );
        assert_eq!(end.args["notification_args"], Value::Object(Map::new()));
        end
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// What the agent's configuration directory says.
pub struct AgentSetup {
    pub guest_id: String,
    pub exchange: String,
    pub conductor_queue: String,
    pub key: Option<&'static str>,
    pub network_isolation: bool,
    /// `eth1.json` content, when there is a tenant NIC.
    pub tenant_nic_json: Option<String>,
    pub image: String,
    pub version: String,
    pub port: u16,
    pub container_name: String,
    /// `state_change_wait_time` in seconds.
    pub wait_seconds: u64,
    /// `[DEFAULT] transport_url` (the guest's view of the broker).
    pub transport_url: String,
    /// Lines of `[oslo_messaging_rabbit]` (e.g. the TLS options), if any.
    pub rabbit_options: Vec<String>,
    /// The broker as the test reaches it (the agent's, from this machine).
    pub test_broker: TestBroker,
    /// `datastore_manager`: `testdb` (a plain container, readiness on its port) unless a
    /// test runs the MariaDB image ([`AgentSetup::use_mariadb`]).
    pub datastore: String,
    /// `[netiso] docker_socket`: the guest's dockerd unless a test names another path.
    pub docker_socket: Option<PathBuf>,
}

impl AgentSetup {
    pub fn new(prefix: &str, key: Option<&'static str>) -> Self {
        let guest_id = uuid::Uuid::new_v4().to_string();
        Self {
            exchange: unique(&format!("{prefix}-x")),
            conductor_queue: unique(&format!("{prefix}-cond")),
            key,
            network_isolation: false,
            tenant_nic_json: None,
            image: format!(
                "{}/netiso/testdb",
                netiso_runtime::test_support::guest_registry()
            ),
            version: "absent".into(),
            port: 3306,
            container_name: format!("nti-agent-{}", &guest_id[..8]),
            wait_seconds: 10,
            transport_url: guest_url().replace("amqp://", "rabbit://"),
            rabbit_options: Vec::new(),
            test_broker: TestBroker::default(),
            datastore: "testdb".into(),
            docker_socket: None,
            guest_id,
        }
    }

    /// The database is the provisioned MariaDB image, listening on `port` (the datastore
    /// is `mariadb`: the agent sets it up as Trove's MySQL manager does).
    pub fn use_mariadb(&mut self, port: u16) {
        self.image = format!(
            "{}/trove-netiso/mariadb",
            netiso_runtime::test_support::guest_registry()
        );
        self.version = "10.11".into();
        self.port = port;
        self.datastore = "mariadb".into();
        self.wait_seconds = 180;
    }

    /// The database is `image` (name, tag as the datastore version, its echo port).
    pub fn use_image(&mut self, image: &PublishedImage) {
        self.image = image.reference().name().to_owned();
        self.version = image.reference().tag_or_digest().to_owned();
        self.port = image.port();
    }

    /// The guest's topic and server queues.
    pub fn queues(&self) -> Vec<String> {
        vec![
            self.conductor_queue.clone(),
            format!("guestagent.{}", self.guest_id),
            format!("guestagent.{}.{}", self.guest_id, self.guest_id),
        ]
    }

    pub fn cleanup(&self) -> BrokerCleanup {
        BrokerCleanup {
            queues: self.queues(),
            exchange: self.exchange.clone(),
            broker: self.test_broker.clone(),
        }
    }

    /// The guest's RPC target, as Trove's API addresses it (no server).
    pub fn target(&self) -> Target {
        Target {
            topic: format!("guestagent.{}", self.guest_id),
            server: None,
            version: "1.0".into(),
        }
    }

    pub fn client(&self, transport: &Transport) -> RpcClient {
        let serializer = match self.key {
            Some(key) => Serializer::Secure(InstanceKey::new(key).expect("key")),
            None => Serializer::Plain,
        };
        RpcClient::new(transport, &self.exchange, serializer)
    }

    /// Writes `guest_info.conf` and `trove-guestagent.conf` as the taskmanager would, plus
    /// our `[netiso]` section, into `dir/conf.d`; state in `dir/state`, data in `dir/data`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let conf = dir.join("conf.d");
        std::fs::create_dir_all(&conf).expect("conf.d");
        std::fs::create_dir_all(dir.join("data")).expect("data");
        let mut info = format!(
            "[DEFAULT]\nguest_id={}\ndatastore_manager={}\ndatastore_version={}\n\
             tenant_id=t1\nnetwork_isolation={}\n",
            self.guest_id,
            self.datastore,
            self.version,
            if self.network_isolation {
                "True"
            } else {
                "False"
            }
        );
        if let Some(key) = self.key {
            info.push_str(&format!("instance_rpc_encr_key={key}\n"));
        }
        std::fs::write(conf.join("guest_info.conf"), info).expect("guest_info.conf");
        let tenant_nic_file = dir.join("eth1.json");
        if let Some(json) = &self.tenant_nic_json {
            std::fs::write(&tenant_nic_file, json).expect("eth1.json");
        }
        let agent = format!(
            "[DEFAULT]\ntransport_url={}\ncontrol_exchange={}\nconductor_queue={}\n\
             state_change_wait_time={}\n\n\
             [{}]\ndocker_image={}\ntcp_ports={}\nmount_point={}\n\n\
             [netiso]\ndocker_socket={}\ndocker_exec_root={}\nstate_dir={}\n\
              tenant_nic_file={}\ndatabase_container={}\n\
              mysql_config_dir={}\nmysql_socket_dir={}\nfstab_file={}\n\n\
              [oslo_messaging_rabbit]\n{}",
            self.transport_url,
            self.exchange,
            self.conductor_queue,
            self.wait_seconds,
            self.datastore,
            self.image,
            self.port,
            dir.join("data").display(),
            self.docker_socket.as_ref().map_or_else(
                || {
                    netiso_runtime::test_support::docker_host()
                        .trim_start_matches("unix://")
                        .to_owned()
                },
                |path| path.display().to_string()
            ),
            std::env::var("NETISO_DOCKER_EXEC_ROOT")
                .unwrap_or_else(|_| "/run/trove-netiso/docker-exec".into()),
            dir.join("state").display(),
            tenant_nic_file.display(),
            self.container_name,
            dir.join("etc-mysql").display(),
            dir.join("mysqld").display(),
            dir.join("fstab").display(),
            self.rabbit_options
                .iter()
                .map(|line| format!("{line}\n"))
                .collect::<String>(),
        );
        std::fs::write(conf.join("trove-guestagent.conf"), agent).expect("agent conf");
        conf
    }
}

/// The agent binary running inside the simulated guest's namespace; SIGTERM then SIGKILL on
/// drop.
pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

pub fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_trove-guest-agent")
}

/// Runs `trove-guest-agent <args>` inside the guest namespace (as the VM would).
pub fn guest_command(args: &[&str]) -> Command {
    let netns = format!("--net=/run/netns/{}", guest_netns());
    assert!(
        Path::new(&format!("/run/netns/{}", guest_netns())).exists(),
        "the simulated guest namespace {} is missing: {PROVISION_HINT}",
        guest_netns()
    );
    let mut command = Command::new("nsenter");
    command.arg(netns).arg(agent_binary()).args(args);
    command
}

/// Agents log at debug level in tests, so that the secret scan of the test logs
/// (`netiso_messaging::test_support`) sees everything the agent could ever print.
const AGENT_TEST_LOG_LEVEL: &str = "debug";

/// A new file for an agent's log in the shared test-log folder (kept after the test, scanned
/// for secrets by `netiso-messaging`'s `log_secrets` test and `cargo xtask ci`).
pub fn agent_log_path(name: &str) -> PathBuf {
    netiso_messaging::test_support::log_file(
        env!("CARGO_TARGET_TMPDIR"),
        &format!("trove-guest-agent-{name}-{}", uuid::Uuid::new_v4().simple()),
    )
}

impl AgentProcess {
    pub fn spawn(conf_dir: &Path, log: PathBuf) -> Self {
        Self::spawn_with(conf_dir, log, &[])
    }

    /// Like `spawn`, with extra `run` flags.
    pub fn spawn_with(conf_dir: &Path, log: PathBuf, run_flags: &[&str]) -> Self {
        Self::spawn_logging(conf_dir, log, run_flags, AGENT_TEST_LOG_LEVEL)
    }

    /// Like `spawn_with`, at the given `RUST_LOG` level.
    pub fn spawn_logging(conf_dir: &Path, log: PathBuf, run_flags: &[&str], level: &str) -> Self {
        netiso_runtime::test_support::require_root();
        let log_file = std::fs::File::create(&log).expect("log file");
        let conf = conf_dir.to_string_lossy();
        let mut args = vec!["--config-dir", &conf, "run"];
        args.extend_from_slice(run_flags);
        let child = guest_command(&args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn nsenter + trove-guest-agent");
        Self {
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, wait: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = kill(pid, Signal::SIGTERM);
        self.wait_exit(wait)
    }

    /// Waits (bounded) for the agent to exit by itself.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The agent's resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmRSS:")
    }

    /// The agent's peak resident set size in KiB (`VmHWM`, from /proc).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmHWM:")
    }

    /// The agent's process id while it runs (nsenter execs the agent in its place, so it is
    /// the agent's own), e.g. to read its sockets from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs (has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl AgentProcess {
    /// SIGTERM, then SIGKILL after 10 s; a no-op once it has exited.
    pub fn stop(&mut self) {
        if self.child.is_some()
            && self.terminate(Duration::from_secs(10)).is_none()
            && let Some(child) = self.child.as_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Calls `rpc_ping` until it answers (bounded); returns how long that took.
pub async fn wait_for_ping(client: &RpcClient, target: &Target, agent: &AgentProcess) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        match client
            .call(
                target,
                "rpc_ping",
                Map::new(),
                &Context::fresh(),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(value) => {
                assert_eq!(value, Value::Bool(true));
                return started.elapsed();
            }
            // Before the agent declares its queues the broker returns the request (mandatory
            // publish, no route) or it expires unanswered.
            Err(CallError::Timeout { .. }) if Instant::now() < deadline => {}
            Err(CallError::Transport(TransportError::Returned { .. }))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rpc_ping failed: {e}\nagent log:\n{}", agent.log_text()),
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not answer rpc_ping within 60 s; log:\n{}",
            agent.log_text()
        );
    }
}

pub fn args(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// An agent started on an [`AgentSetup`] and answering `rpc_ping`, our client playing Trove's
/// API, and a test conductor listening on the conductor queue.
///
/// Fields drop in declaration order: the agent stops before the conductor, the files and the
/// broker's queues and exchange go last.
pub struct RunningAgent {
    pub agent: AgentProcess,
    pub client: RpcClient,
    pub target: Target,
    pub conductor: TestConductor,
    pub transport: Transport,
    /// The agent's configuration directory.
    pub conf: PathBuf,
    /// From spawning the agent to its first answered `rpc_ping`.
    pub ready_after: Duration,
    /// Holds `conf.d`, `state` and `data` (the agent's logs are in the test-log folder).
    pub dir: tempfile::TempDir,
    _broker: BrokerCleanup,
}

impl RunningAgent {
    /// Writes the setup's files, starts the conductor, then the agent, and waits for its first
    /// `rpc_ping` answer (which also means its queues are declared).
    pub async fn start(setup: &AgentSetup) -> Self {
        Self::start_with(setup, &[]).await
    }

    /// Like `start`, with extra `run` flags.
    pub async fn start_with(setup: &AgentSetup, run_flags: &[&str]) -> Self {
        let broker = setup.cleanup();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = setup.write(dir.path());
        let transport = connect_to(&setup.test_broker).await;
        let conductor = TestConductor::start(
            &transport,
            &setup.exchange,
            &setup.conductor_queue,
            &setup.guest_id,
            setup.key,
        )
        .await;
        let started = Instant::now();
        let agent = AgentProcess::spawn_with(&conf, agent_log_path("agent"), run_flags);
        let client = setup.client(&transport);
        let target = setup.target();
        wait_for_ping(&client, &target, &agent).await;
        Self {
            agent,
            client,
            target,
            conductor,
            transport,
            conf,
            ready_after: started.elapsed(),
            dir,
            _broker: broker,
        }
    }

    /// Stops the agent, starts a new one on the same files with extra `run` flags, logging to
    /// a new file named after `log_name`, and waits for its `rpc_ping` answer.
    pub async fn restart_agent(&mut self, log_name: &str, run_flags: &[&str]) {
        self.restart_agent_logging(log_name, run_flags, AGENT_TEST_LOG_LEVEL)
            .await;
    }

    /// Like `restart_agent`, at the given `RUST_LOG` level.
    pub async fn restart_agent_logging(&mut self, log_name: &str, run_flags: &[&str], level: &str) {
        self.agent.stop();
        self.agent =
            AgentProcess::spawn_logging(&self.conf, agent_log_path(log_name), run_flags, level);
        wait_for_ping(&self.client, &self.target, &self.agent).await;
    }

    /// Stops the agent and the conductor and closes the connection.
    pub async fn finish(self) {
        let Self {
            mut agent,
            conductor,
            transport,
            ..
        } = self;
        agent.stop();
        conductor.stop().await;
        transport.close();
    }
}
