//! The agent binary over TLS: `[oslo_messaging_rabbit] ssl = True` with the provisioned CA and
//! client certificate, through the management network's forwarder to RabbitMQ's 5671
//! listener; and unusable TLS settings ending the run with an error naming option and file.
//! Needs root and `cargo xtask provision`.

mod common;

use std::time::Duration;

use common::{AgentProcess, AgentSetup, RunningAgent};

const TLS_DIR: &str = "/var/lib/trove-netiso/tls";

fn env_or(name: &str, default: String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

/// The broker's TLS listener as the guest reaches it, without the query: the TLS options
/// go to `[oslo_messaging_rabbit]`, as a Trove deployment writes them.
fn guest_amqps_url() -> String {
    let url = env_or(
        "NETISO_GUEST_AMQPS_URL",
        "amqp://guest:guest@10.251.0.1:5671/%2f".to_owned(),
    );
    let without_query = url.split_once('?').map_or(url.as_str(), |(base, _)| base);
    without_query.replace("amqp://", "rabbit://")
}

fn tls_setup(prefix: &str, ca_file: &str) -> AgentSetup {
    let mut setup = AgentSetup::new(prefix, None);
    setup.transport_url = guest_amqps_url();
    setup.rabbit_options = vec![
        "ssl = True".to_owned(),
        format!("ssl_ca_file = {ca_file}"),
        format!(
            "ssl_cert_file = {}",
            env_or("NETISO_TLS_CLIENT_CERT", format!("{TLS_DIR}/client.pem"))
        ),
        format!(
            "ssl_key_file = {}",
            env_or("NETISO_TLS_CLIENT_KEY", format!("{TLS_DIR}/client-key.pem"))
        ),
    ];
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_ssl_on_answers_rpc_ping_over_tls() {
    let ca = env_or("NETISO_TLS_CA", format!("{TLS_DIR}/ca.pem"));
    assert!(
        std::path::Path::new(&ca).exists(),
        "no test CA at {ca}: run `cargo xtask provision`"
    );
    let setup = tls_setup("tls", &ca);
    let mut run = RunningAgent::start(&setup).await;
    eprintln!("start to first rpc_ping over TLS: {:?}", run.ready_after);
    let log = run.agent.log_text();
    let connected = log
        .lines()
        .find(|line| line.contains("connected to broker"))
        .unwrap_or_else(|| panic!("no connection logged:\n{log}"));
    assert!(
        connected.contains("10.251.0.1:5671") && connected.contains("tls=true"),
        "{connected}"
    );
    let status = run
        .agent
        .terminate(Duration::from_secs(15))
        .expect("the agent exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        run.agent.log_text()
    );
    let log = run.agent.log_text();
    assert!(
        !log.contains("PRIVATE KEY"),
        "key material must never be logged:\n{log}"
    );
    run.finish().await;
}

#[test]
fn agent_with_an_unreadable_ca_file_exits_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-ca.pem");
    let setup = tls_setup("tlsbad", &missing.display().to_string());
    let _broker = setup.cleanup();
    let conf = setup.write(dir.path());
    let mut agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let status = agent
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the agent kept running:\n{}", agent.log_text()));
    let log = agent.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "[oslo_messaging_rabbit] ssl_ca_file = {}: cannot read the file",
            missing.display()
        )),
        "{log}"
    );
    assert!(
        !log.contains("connected to broker"),
        "no plaintext fallback:\n{log}"
    );
}

#[test]
fn agent_refusing_the_brokers_certificate_logs_why_and_keeps_retrying() {
    // The client certificate as the only trust anchor: the broker's certificate, signed by
    // the test CA, has an issuer this file does not hold.
    let not_the_ca = env_or("NETISO_TLS_CLIENT_CERT", format!("{TLS_DIR}/client.pem"));
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = tls_setup("tlsca", &not_the_ca);
    let _broker = setup.cleanup();
    let conf = setup.write(dir.path());
    let mut agent = AgentProcess::spawn(&conf, dir.path().join("agent.log"));
    let reason = "TLS handshake failed: the broker's certificate has an unknown issuer";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent.log_text().matches(reason).count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = agent.log_text();
    assert!(
        log.matches(reason).count() >= 2,
        "two refused attempts logged with their reason within 30 s:\n{log}"
    );
    assert!(
        log.contains(&format!("ssl_ca_file {not_the_ca}")),
        "names the CA file:\n{log}"
    );
    assert!(!log.contains("connected to broker"), "{log}");
    let status = agent
        .terminate(Duration::from_secs(15))
        .expect("the agent was still running and exits on SIGTERM");
    assert!(status.success(), "exit status {status}\n{log}");
}
