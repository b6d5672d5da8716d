//! A three-node RabbitMQ cluster beside the single broker, as a Trove control plane runs it:
//! the agent gets the three hosts in its `transport_url` and quorum queues, and the tests stop
//! the node that leads a queue while traffic flows.
//!
//! Each node has its own name, AMQP port, Erlang distribution port, configuration and data
//! directory; all share the rabbitmq user's Erlang cookie (so `rabbitmqctl` and the nodes
//! authenticate to one another), listen on loopback only and load no plugin (the single
//! broker's management port stays free). The second and third nodes join the first with
//! `rabbitmqctl join_cluster`; a node that is already a member is left as it is. Like the
//! single broker, each node's port is forwarded into the management network.

use super::services::{RABBIT_HOME, ensure_forwarder, rabbit_env_base, write_if_changed};
use crate::layout::{CLUSTER_NODES, CLUSTER_STATE_DIR, ClusterNode, LOG_DIR};
use crate::sh::{output, run, say, spawn_daemon, tcp_answers, wait_until};
use anyhow::{Context, Result, bail};
use std::time::Duration;

/// Each node's file descriptor limit: the cluster serves tests, not the fleet benchmark.
const NODE_NOFILE: u64 = 4096;
/// The start script in each node's folder (`NETISO_TEST_CLUSTER_STATE`/`<short name>/`).
const START_SCRIPT: &str = "start-node.sh";

/// Starts the nodes that do not answer, joins the ones not yet clustered and waits until
/// every node runs with all three as members.
pub fn ensure() -> Result<()> {
    // All started before any is waited for: a clustered node restarted after the whole
    // cluster stopped waits for its peers before it opens its port.
    for node in &CLUSTER_NODES {
        start_node_unless_running(node)?;
    }
    for node in &CLUSTER_NODES {
        wait_until(node.name, Duration::from_secs(180), || {
            tcp_answers(&node_address(node))
        })?;
    }
    let [first, rest @ ..] = &CLUSTER_NODES;
    for node in rest {
        if !running_members(node)?.iter().any(|m| m == first.name) {
            say(&format!("  {} joins {}", node.name, first.name));
            run_ctl(node, &["stop_app"])?;
            run_ctl(node, &["join_cluster", first.name])?;
            run_ctl(node, &["start_app"])?;
        }
    }
    wait_until(
        "the three RabbitMQ nodes to run as one cluster",
        Duration::from_secs(120),
        || {
            running_members(first).is_ok_and(|members| {
                CLUSTER_NODES
                    .iter()
                    .all(|node| members.iter().any(|m| m == node.name))
            })
        },
    )?;
    // The simulated guest reaches the cluster over its management network, as the broker.
    for node in &CLUSTER_NODES {
        ensure_forwarder(node.amqp_port)?;
    }
    say(&format!(
        "  cluster {} runs on 127.0.0.1 ports {}",
        CLUSTER_NODES
            .iter()
            .map(|n| n.name)
            .collect::<Vec<_>>()
            .join(", "),
        CLUSTER_NODES
            .iter()
            .map(|n| n.amqp_port.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

fn node_dir(node: &ClusterNode) -> String {
    format!("{CLUSTER_STATE_DIR}/{}", node.short)
}

fn node_config(node: &ClusterNode) -> String {
    format!(
        "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n",
        node.amqp_port
    )
}

fn node_address(node: &ClusterNode) -> String {
    format!("127.0.0.1:{}", node.amqp_port)
}

/// Starts `node` unless it answers on its AMQP port with its current configuration (a
/// changed one restarts it); does not wait for it.
fn start_node_unless_running(node: &ClusterNode) -> Result<()> {
    let dir = node_dir(node);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let config = format!("{dir}/rabbitmq.conf");
    let plugins = format!("{dir}/enabled_plugins");
    let script = format!("{dir}/{START_SCRIPT}");
    let mut changed = write_if_changed(&config, &node_config(node))?;
    changed |= write_if_changed(&plugins, "[].\n")?;
    changed |= write_if_changed(&script, &start_script(node, &dir))?;
    run("chown", &["-R", "rabbitmq:rabbitmq", &dir])?;
    let address = node_address(node);
    if tcp_answers(&address) {
        if !changed {
            say(&format!("  {} answers on {address}", node.name));
            return Ok(());
        }
        say(&format!(
            "  restarting {}: its configuration changed",
            node.name
        ));
        run_ctl(node, &["stop"])?;
        wait_until(
            &format!("{} to stop", node.name),
            Duration::from_secs(60),
            || !tcp_answers(&address),
        )?;
    }
    spawn_daemon(
        "sh",
        &[&script],
        &[],
        &format!("{LOG_DIR}/rabbitmq-{}.log", node.short),
    )
}

/// The script that starts `node` (in its folder, [`START_SCRIPT`]): provision runs it, and so
/// does a test that killed the node and wants it back, so both start it the same way.
fn start_script(node: &ClusterNode, dir: &str) -> String {
    let mut env = rabbit_env_base(node.name, &format!("{dir}/rabbitmq.conf"));
    env.extend([
        ("RABBITMQ_NODE_PORT", node.amqp_port.to_string()),
        ("RABBITMQ_DIST_PORT", node.dist_port.to_string()),
        (
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            format!("{dir}/enabled_plugins"),
        ),
        ("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia")),
        ("RABBITMQ_LOG_BASE", format!("{dir}/log")),
    ]);
    let assignments: Vec<String> = env
        .iter()
        .map(|(name, value)| format!("  {name}='{value}' \\\n"))
        .collect();
    format!(
        "#!/bin/sh\n# RabbitMQ node {name} of the test cluster (`cargo xtask provision \
         --rabbit-cluster`).\n# setpriv switches to the rabbitmq user without PAM, which would \
         lower the file limit.\nexec env \\\n{vars}  prlimit --nofile={NODE_NOFILE}:{NODE_NOFILE} \
         setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \\\n  env \
         --chdir={RABBIT_HOME} /usr/lib/rabbitmq/bin/rabbitmq-server\n",
        name = node.name,
        vars = assignments.concat(),
    )
}

/// The running members of the cluster `node` belongs to, as it reports them.
fn running_members(node: &ClusterNode) -> Result<Vec<String>> {
    let text = output(
        "rabbitmqctl",
        &[
            "-n",
            node.name,
            "-q",
            "cluster_status",
            "--formatter",
            "json",
        ],
    )?;
    let status: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "rabbitmqctl cluster_status of {} printed no JSON",
            node.name
        )
    })?;
    let Some(members) = status.get("running_nodes").and_then(|v| v.as_array()) else {
        bail!("cluster_status of {} names no running node", node.name);
    };
    Ok(members
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect())
}

fn run_ctl(node: &ClusterNode, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", node.name];
    all.extend_from_slice(args);
    run("rabbitmqctl", &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_script_quotes_every_value_and_names_the_node() {
        let node = &CLUSTER_NODES[1];
        let script = start_script(node, "/state/c2");
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("  RABBITMQ_NODENAME='netiso-c2@localhost' \\\n"));
        assert!(script.contains(
            "  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \\\n"
        ));
        assert!(script.contains("RABBITMQ_DIST_PORT='25682'"));
        assert!(script.ends_with("/usr/lib/rabbitmq/bin/rabbitmq-server\n"));
        for (_, value) in rabbit_env_base(node.name, "/state/c2/rabbitmq.conf") {
            assert!(!value.contains('\''), "{value} would break the quoting");
        }
    }

    #[test]
    fn each_node_listens_on_its_own_loopback_port() {
        let configs: Vec<String> = CLUSTER_NODES.iter().map(node_config).collect();
        for (node, config) in CLUSTER_NODES.iter().zip(&configs) {
            assert!(config.contains(&format!("127.0.0.1:{}", node.amqp_port)));
        }
        let mut ports: Vec<u16> = CLUSTER_NODES
            .iter()
            .flat_map(|n| [n.amqp_port, n.dist_port])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * CLUSTER_NODES.len(), "ports must differ");
    }
}
