//! The long-running services, each started only when it does not already answer.
//!
//! RabbitMQ (plaintext 5672 and TLS 5671, certificates from [`super::tls`]) and the registry
//! listen on this machine's loopback only. The management network
//! reaches them through socat forwarders: one end listens inside the management namespace,
//! the other connects on loopback, and the two meet on a unix socket (unix sockets are not
//! network-namespaced). So the guest namespace reaches its control plane over its management
//! NIC exactly as a real guest would, and nothing listens on this machine's own interfaces.
//! dockerd and containerd run inside the guest namespace with their own roots and sockets.

use super::tls;
use crate::layout::{
    AMQP_PORT, AMQPS_PORT, CONTAINERD_SOCKET, DOCKER_DATA_ROOT, DOCKER_EXEC_ROOT, DOCKER_SOCKET,
    FORWARDED_PORTS, GUEST_NETNS, LOG_DIR, MGMT_GATEWAY_ADDR, MGMT_NETNS, RABBIT_NODE,
    REGISTRY_PORT, RUN_DIR, STATE_DIR,
};
use crate::sh::{http_status, run, say, spawn_daemon, succeeds, tcp_answers, wait_until};
use anyhow::{Context, Result};
use std::time::Duration;

/// Starts whichever service does not answer, and waits until each one does.
pub fn ensure_running() -> Result<()> {
    ensure_rabbitmq()?;
    ensure_registry()?;
    for port in FORWARDED_PORTS {
        ensure_forwarder(port)?;
    }
    ensure_dockerd()?;
    ensure_containerd()?;
    Ok(())
}

/// RabbitMQ's configuration file: a TLS listener on loopback beside the plaintext one (which
/// `RABBITMQ_NODE_IP_ADDRESS` sets). `verify_peer` checks a client certificate when one is
/// presented; `fail_if_no_peer_cert = false` lets clients without one in too.
fn rabbitmq_config() -> String {
    format!(
        "listeners.ssl.default = 127.0.0.1:{AMQPS_PORT}\n\
         ssl_options.cacertfile = {}\n\
         ssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = false\n",
        tls::path("ca.pem"),
        tls::path("server.pem"),
        tls::path("server-key.pem"),
    )
}

/// Writes `text` to `path` unless it already holds it; true when it wrote.
pub(super) fn write_if_changed(path: &str, text: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {path}"))?;
    Ok(true)
}

/// The rabbitmq user's home, where its Erlang cookie lives (rabbitmqctl reads it from there).
pub(super) const RABBIT_HOME: &str = "/var/lib/rabbitmq";

/// What every broker node of this project is started with: its name, loopback only (for
/// AMQP and for Erlang distribution), its configuration file and the rabbitmq user.
pub(super) fn rabbit_env_base(node: &str, config_path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RABBITMQ_NODENAME", node.to_string()),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_string()),
        ("RABBITMQ_CONFIG_FILE", config_path.to_string()),
        ("ERL_EPMD_ADDRESS", "127.0.0.1".to_string()),
        ("HOME", RABBIT_HOME.to_string()),
        ("USER", "rabbitmq".to_string()),
        ("LOGNAME", "rabbitmq".to_string()),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".to_string(),
        ),
    ]
}

/// The file descriptor limit the broker asks for: enough sockets for a thousand-guest fleet.
const RABBIT_NOFILE_WANTED: u64 = 65536;

/// The broker's file descriptor limit: what it wants, capped by the hard limit this process
/// may grant (a container's hard limit can be lower, and raising it needs a privilege CI lacks).
fn rabbit_nofile() -> Result<u64> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let (_, hard) = nofile_limits(&limits)
        .context("/proc/self/limits has no readable \"Max open files\" line")?;
    Ok(hard.min(RABBIT_NOFILE_WANTED))
}

/// The soft file limit of the running broker of this project (the `beam.smp` started with
/// our node name), when one runs and its limits can be read.
fn running_broker_nofile() -> Option<u64> {
    let wanted_env = format!("RABBITMQ_NODENAME={RABBIT_NODE}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let dir = entry.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim() != "beam.smp" {
                return None;
            }
            let environ = std::fs::read(dir.join("environ")).ok()?;
            let ours = environ
                .split(|byte| *byte == 0)
                .any(|entry| entry == wanted_env.as_bytes());
            if !ours {
                return None;
            }
            let limits = std::fs::read_to_string(dir.join("limits")).ok()?;
            nofile_limits(&limits).map(|(soft, _)| soft)
        })
}

/// The soft and hard "Max open files" limits in a `/proc/<pid>/limits` text (`u64::MAX`
/// for unlimited).
fn nofile_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let value = |field: &str| match field {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((value(fields.next()?)?, value(fields.next()?)?))
}

fn ensure_rabbitmq() -> Result<()> {
    let certificates = tls::ensure()?;
    let nofile = rabbit_nofile()?;
    let dir = format!("{STATE_DIR}/rabbitmq");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let config_path = format!("{dir}/rabbitmq.conf");
    let config_changed = write_if_changed(&config_path, &rabbitmq_config())?;
    let plain = format!("127.0.0.1:{AMQP_PORT}");
    let secure = format!("127.0.0.1:{AMQPS_PORT}");
    if tcp_answers(&plain) {
        let restart_because = if !tcp_answers(&secure) {
            Some("it has no TLS listener")
        } else if certificates.server_changed {
            Some("its TLS certificate was made again")
        } else if config_changed {
            Some("its configuration changed")
        } else if running_broker_nofile().is_some_and(|soft| soft < nofile) {
            Some("its file descriptor limit is below what the fleet benchmark needs")
        } else {
            None
        };
        let Some(reason) = restart_because else {
            say(&format!("  rabbitmq answers on {plain} and (TLS) {secure}"));
            return Ok(());
        };
        say(&format!("  restarting rabbitmq: {reason}"));
        run("rabbitmqctl", &["-n", RABBIT_NODE, "stop"])?;
        wait_until("rabbitmq to stop", Duration::from_secs(60), || {
            !tcp_answers(&plain)
        })?;
    }
    let env = rabbit_env_base(RABBIT_NODE, &config_path);
    // The broker's socket limit comes from its file descriptor limit at start-up (1024 here
    // gives 832 sockets): a fleet of a thousand guests, one connection each, needs more.
    if nofile < RABBIT_NOFILE_WANTED {
        say(&format!(
            "  note: rabbitmq gets the hard file limit, {nofile}, not {RABBIT_NOFILE_WANTED}"
        ));
    }
    // Debian's /usr/sbin/rabbitmq-server switches user through `su`, whose PAM session
    // (pam_limits) puts the soft limit back to 1024; setpriv switches without PAM, and the
    // broker starts where Debian's wrapper would start it, in the rabbitmq user's home.
    let nofile_arg = format!("--nofile={nofile}:{nofile}");
    spawn_daemon(
        "prlimit",
        &[
            &nofile_arg,
            "setpriv",
            "--reuid=rabbitmq",
            "--regid=rabbitmq",
            "--init-groups",
            "env",
            &format!("--chdir={RABBIT_HOME}"),
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
        ],
        &env,
        &format!("{LOG_DIR}/rabbitmq.log"),
    )?;
    wait_until("rabbitmq", Duration::from_secs(120), || {
        tcp_answers(&plain) && tcp_answers(&secure)
    })
}

fn ensure_registry() -> Result<()> {
    let addr = format!("127.0.0.1:{REGISTRY_PORT}");
    if http_status(&addr, "/v2/") == Some(200) {
        say(&format!("  registry answers on {addr}"));
        return Ok(());
    }
    let storage = format!("{STATE_DIR}/registry");
    std::fs::create_dir_all(&storage).with_context(|| format!("cannot create {storage}"))?;
    // Debian's packaged config turns on htpasswd auth; tests use an open loopback registry.
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n"
    );
    let config_path = format!("{STATE_DIR}/registry.yml");
    std::fs::write(&config_path, config).with_context(|| format!("cannot write {config_path}"))?;
    spawn_daemon(
        "docker-registry",
        &["serve", &config_path],
        &[],
        &format!("{LOG_DIR}/registry.log"),
    )?;
    wait_until("registry", Duration::from_secs(30), || {
        http_status(&addr, "/v2/") == Some(200)
    })
}

/// Probes `MGMT_GATEWAY_ADDR:port` from inside the guest namespace, as the guest would.
fn reachable_from_guest(port: u16) -> bool {
    let netns = format!("--net=/run/netns/{GUEST_NETNS}");
    let script = format!("exec 3<>/dev/tcp/{MGMT_GATEWAY_ADDR}/{port}");
    succeeds("nsenter", &[&netns, "timeout", "3", "bash", "-c", &script])
}

/// Makes `127.0.0.1:port` reachable from the guest namespace at `MGMT_GATEWAY_ADDR:port`,
/// unless it already is.
pub(super) fn ensure_forwarder(port: u16) -> Result<()> {
    if reachable_from_guest(port) {
        say(&format!(
            "  {MGMT_GATEWAY_ADDR}:{port} answers from {GUEST_NETNS}"
        ));
        return Ok(());
    }
    let meeting_point = format!("{RUN_DIR}/fwd-{port}.sock");
    // Stale halves (from a killed session) would hold the port or the socket.
    let _ = succeeds("pkill", &["-f", &meeting_point]);
    let loopback_side = format!("UNIX-LISTEN:{meeting_point},fork,unlink-early,mode=600");
    spawn_daemon(
        "socat",
        &[&loopback_side, &format!("TCP:127.0.0.1:{port}")],
        &[],
        &format!("{LOG_DIR}/forward-{port}.log"),
    )?;
    let netns = format!("--net=/run/netns/{MGMT_NETNS}");
    let mgmt_side = format!("TCP-LISTEN:{port},bind={MGMT_GATEWAY_ADDR},fork,reuseaddr");
    spawn_daemon(
        "nsenter",
        &[
            &netns,
            "socat",
            &mgmt_side,
            &format!("UNIX-CONNECT:{meeting_point}"),
        ],
        &[],
        &format!("{LOG_DIR}/forward-{port}.log"),
    )?;
    wait_until(
        &format!("forwarder {MGMT_GATEWAY_ADDR}:{port}"),
        Duration::from_secs(10),
        || reachable_from_guest(port),
    )
}

fn docker_answers() -> bool {
    let host = format!("unix://{DOCKER_SOCKET}");
    succeeds("docker", &["-H", &host, "version"])
}

fn ensure_dockerd() -> Result<()> {
    if docker_answers() {
        say(&format!("  dockerd answers on {DOCKER_SOCKET}"));
        return Ok(());
    }
    let netns = format!("--net=/run/netns/{GUEST_NETNS}");
    let host = format!("unix://{DOCKER_SOCKET}");
    let registry = format!("{MGMT_GATEWAY_ADDR}:{REGISTRY_PORT}");
    let pidfile = format!("{RUN_DIR}/dockerd.pid");
    // `nsenter --net` rather than `ip netns exec`: the latter remounts /sys privately, which
    // hides the cgroup mounts dockerd needs.
    spawn_daemon(
        "nsenter",
        &[
            &netns,
            "dockerd",
            "--data-root",
            DOCKER_DATA_ROOT,
            "--exec-root",
            DOCKER_EXEC_ROOT,
            "--pidfile",
            &pidfile,
            "-H",
            &host,
            "--insecure-registry",
            &registry,
        ],
        &[],
        &format!("{LOG_DIR}/dockerd.log"),
    )?;
    wait_until("dockerd", Duration::from_secs(90), docker_answers)
}

fn containerd_answers() -> bool {
    succeeds("ctr", &["--address", CONTAINERD_SOCKET, "version"])
}

fn ensure_containerd() -> Result<()> {
    if containerd_answers() {
        say(&format!("  containerd answers on {CONTAINERD_SOCKET}"));
        return Ok(());
    }
    let dir = format!("{STATE_DIR}/containerd");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let config = format!(
        "version = 2\nroot = \"{dir}/root\"\nstate = \"{RUN_DIR}/containerd/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
         [grpc]\n  address = \"{CONTAINERD_SOCKET}\"\n\n\
         [ttrpc]\n  address = \"{CONTAINERD_SOCKET}.ttrpc\"\n"
    );
    let config_path = format!("{dir}/config.toml");
    std::fs::write(&config_path, config).with_context(|| format!("cannot write {config_path}"))?;
    let netns = format!("--net=/run/netns/{GUEST_NETNS}");
    spawn_daemon(
        "nsenter",
        &[&netns, "containerd", "--config", &config_path],
        &[],
        &format!("{LOG_DIR}/containerd.log"),
    )?;
    wait_until("containerd", Duration::from_secs(60), containerd_answers)
}

#[cfg(test)]
mod tests {
    use super::nofile_limits;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 20000                files     \n";

    #[test]
    fn reads_the_soft_and_hard_open_files_limits() {
        assert_eq!(nofile_limits(LIMITS), Some((1024, 20000)));
    }

    #[test]
    fn unlimited_reads_as_the_largest_limit() {
        let unlimited = LIMITS.replace("20000", "unlimited");
        assert_eq!(nofile_limits(&unlimited), Some((1024, u64::MAX)));
    }

    #[test]
    fn a_text_without_the_line_is_not_read() {
        assert_eq!(
            nofile_limits("Max cpu time  unlimited  unlimited  seconds\n"),
            None
        );
    }
}
