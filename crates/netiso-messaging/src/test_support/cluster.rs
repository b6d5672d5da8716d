//! The three-node RabbitMQ test cluster (`cargo xtask provision --rabbit-cluster`): where
//! its nodes are, which node leads a quorum queue, and losing a node (stopped or killed) with
//! a guard that brings it back and waits until the cluster has it again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use netiso_config::TransportUrl;
use serde_json::Value;

use crate::{BrokerConfig, CallError};

const DEFAULT_TEST_URL: &str =
    "amqp://guest:guest@127.0.0.1:5681,guest:guest@127.0.0.1:5682,guest:guest@127.0.0.1:5683/%2f";
const DEFAULT_GUEST_URL: &str = "amqp://guest:guest@10.251.0.1:5681,guest:guest@10.251.0.1:5682,guest:guest@10.251.0.1:5683/%2f";
const DEFAULT_NODES: &str = "netiso-c1@localhost,netiso-c2@localhost,netiso-c3@localhost";
const DEFAULT_STATE: &str = "/var/lib/trove-netiso/rabbit-cluster";
/// How long a lost node may take to be running in the cluster again.
const REJOIN_BOUND: Duration = Duration::from_secs(120);

/// The distinct errors among the calls that failed while a test waited for an answer, each
/// with how often it came and the index of its first occurrence: a bound that passed then
/// says why the calls failed, not only how many did.
pub fn summarize_failures(failures: &[CallError]) -> String {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (index, err) in failures.iter().enumerate() {
        seen.entry(err.to_string()).or_insert((0, index)).0 += 1;
    }
    seen.iter()
        .map(|(err, (count, first))| format!("{count}x from #{first}: {err}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a test that finds no cluster tells its reader.
pub const PROVISION_HINT: &str = "run `cargo xtask provision --rabbit-cluster`";

pub(super) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The cluster as this machine reaches it: every node in one `transport_url`
/// (`NETISO_TEST_CLUSTER_URL`).
pub fn test_url() -> String {
    env_or("NETISO_TEST_CLUSTER_URL", DEFAULT_TEST_URL)
}

/// The cluster as the simulated guest reaches it over its management network
/// (`NETISO_GUEST_CLUSTER_URL`).
pub fn guest_url() -> String {
    env_or("NETISO_GUEST_CLUSTER_URL", DEFAULT_GUEST_URL)
}

/// The nodes' Erlang names (`NETISO_TEST_CLUSTER_NODES`).
pub fn nodes() -> Vec<String> {
    env_or("NETISO_TEST_CLUSTER_NODES", DEFAULT_NODES)
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Where the simulated guest reaches `node` over its management network: the host of
/// [`guest_url`] at the node's position in [`nodes`] (both list the nodes in the same order).
/// What a partition of the node cuts.
pub fn guest_endpoint(node: &str) -> Result<(Ipv4Addr, u16), String> {
    let nodes = nodes();
    let index = nodes
        .iter()
        .position(|n| n == node)
        .ok_or_else(|| format!("{node} is not one of the cluster's nodes {nodes:?}"))?;
    // The URL holds the broker password: errors name the variable, never the value.
    let parsed = TransportUrl::from_str(&guest_url())
        .map_err(|err| format!("NETISO_GUEST_CLUSTER_URL does not parse: {err}"))?;
    let config = BrokerConfig::from_transport_url(&parsed)
        .map_err(|err| format!("NETISO_GUEST_CLUSTER_URL is not a broker URL: {err}"))?;
    let host = config.hosts.get(index).ok_or_else(|| {
        format!(
            "NETISO_GUEST_CLUSTER_URL has {} hosts, the cluster {} nodes",
            config.hosts.len(),
            nodes.len()
        )
    })?;
    let address = host.hostname.parse::<Ipv4Addr>().map_err(|err| {
        format!(
            "the guest reaches {node} at {:?}, not an IPv4 address: {err}",
            host.hostname
        )
    })?;
    Ok((address, host.port))
}

/// Runs `rabbitmqctl -n node -q args`, at most 60 s; its output, or why it failed.
pub fn rabbitmqctl(node: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("timeout")
        .args(["60", "rabbitmqctl", "-n", node, "-q"])
        .args(args)
        .env("HOME", "/var/lib/rabbitmq")
        .output()
        .map_err(|err| format!("cannot run rabbitmqctl: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl -n {node} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Why the cluster cannot be used, if a node does not answer.
pub fn check_reachable() -> Result<(), String> {
    for node in nodes() {
        rabbitmqctl(&node, &["status"]).map_err(|err| {
            format!("cluster node {node} does not answer ({err}): {PROVISION_HINT}")
        })?;
    }
    Ok(())
}

/// The node leading quorum queue `queue`, asked of the first node that answers.
pub fn leader_of(queue: &str) -> Option<String> {
    nodes().iter().find_map(|node| {
        let text = rabbitmqctl(
            node,
            &[
                "list_queues",
                "name",
                "type",
                "leader",
                "--formatter",
                "json",
            ],
        )
        .ok()?;
        let queues: Value = serde_json::from_str(&text).ok()?;
        queues.as_array()?.iter().find_map(|q| {
            (q.get("name")?.as_str()? == queue && q.get("type")?.as_str()? == "quorum")
                .then(|| q.get("leader")?.as_str().map(str::to_owned))
                .flatten()
        })
    })
}

/// The running members of the cluster, as `node` reports them (none when it does not answer).
pub fn running_members(node: &str) -> Vec<String> {
    rabbitmqctl(node, &["cluster_status", "--formatter", "json"])
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|status| {
            Some(
                status
                    .get("running_nodes")?
                    .as_array()?
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Panics unless `who` (a client cut off from `cut`) is now connected to other nodes only,
/// and `cut` is still a running member as `ask` sees the cluster: the client moved away from
/// a node that is unreachable, not gone, which is what a partition test must have produced.
pub fn assert_moved_off(who: &str, cut: &str, connected: &BTreeSet<String>, ask: &str) {
    assert!(
        !connected.is_empty() && !connected.contains(cut),
        "{who} should have moved off {cut}: connected to {connected:?}"
    );
    assert!(
        running_members(ask).iter().any(|member| member == cut),
        "{cut} should still be in the cluster"
    );
}

/// How a node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `rabbitmqctl stop_app`: the node leaves in order.
    Stop,
    /// SIGKILL of the node's Erlang VM: no goodbye to clients or peers.
    Kill,
}

/// The Erlang VM (`beam.smp`) running `node`, found by the node name in its environment.
fn beam_of(node: &str) -> Option<u32> {
    let wanted = format!("RABBITMQ_NODENAME={node}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            (comm.trim() == "beam.smp"
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes()))
            .then_some(pid)
        })
}

/// A node taken out of the cluster; brought back by [`LostNode::restore`] or, at the latest,
/// on drop (also when the test fails), so that the next test finds three nodes.
#[derive(Debug)]
pub struct LostNode {
    node: String,
    loss: Loss,
    restored: bool,
}

impl LostNode {
    /// Takes `node` out of the cluster the way `loss` says.
    pub fn lose(node: &str, loss: Loss) -> Result<Self, String> {
        let lost = Self {
            node: node.to_owned(),
            loss,
            restored: false,
        };
        match loss {
            Loss::Stop => drop(rabbitmqctl(node, &["stop_app"])?),
            Loss::Kill => {
                let pid = beam_of(node).ok_or_else(|| format!("no beam.smp runs {node}"))?;
                let status = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .map_err(|err| format!("cannot run kill: {err}"))?;
                if !status.success() {
                    return Err(format!("kill -KILL {pid} ({node}) failed: {status}"));
                }
            }
        }
        Ok(lost)
    }

    /// Starts the node again (its application, or, killed, its start script written by
    /// provision) and waits until another node lists it as running.
    pub fn restore(&mut self) -> Result<(), String> {
        self.restored = true;
        match self.loss {
            Loss::Stop => drop(rabbitmqctl(&self.node, &["start_app"])?),
            Loss::Kill => self.run_start_script()?,
        }
        let deadline = Instant::now() + REJOIN_BOUND;
        while Instant::now() < deadline {
            let back = nodes()
                .iter()
                .filter(|n| **n != self.node)
                .any(|n| running_members(n).contains(&self.node));
            if back {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "{} did not rejoin the cluster within {REJOIN_BOUND:?}",
            self.node
        ))
    }

    fn run_start_script(&self) -> Result<(), String> {
        let short = self
            .node
            .trim_start_matches("netiso-")
            .split('@')
            .next()
            .unwrap_or_default();
        let state = env_or("NETISO_TEST_CLUSTER_STATE", DEFAULT_STATE);
        let script = format!("{state}/{short}/start-node.sh");
        let log = format!("/var/log/trove-netiso/rabbitmq-{short}.log");
        let status = Command::new("sh")
            .args([
                "-c",
                &format!("setsid -f sh '{script}' >> '{log}' 2>&1 < /dev/null"),
            ])
            .status()
            .map_err(|err| format!("cannot run {script}: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{script} failed: {status}"))
        }
    }
}

impl Drop for LostNode {
    fn drop(&mut self) {
        if !self.restored
            && let Err(err) = self.restore()
        {
            eprintln!("could not bring back node {}: {err}", self.node);
        }
    }
}

/// Tests that lose a node hold this while they do: two nodes lost at once is a quorum lost.
pub static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportError;

    #[test]
    fn a_failure_summary_counts_each_error_and_names_its_first_call() {
        let timeout = || CallError::Timeout {
            method: "echo".into(),
            timeout_ms: 3000,
        };
        let failures = [
            CallError::Transport(TransportError::Closed),
            timeout(),
            timeout(),
        ];
        let summary = summarize_failures(&failures);
        assert!(
            summary.contains("2x from #1: no reply to \"echo\" within 3000 ms"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("1x from #0: {}", TransportError::Closed)),
            "{summary}"
        );
        assert_eq!(summarize_failures(&[]), "");
    }
}
