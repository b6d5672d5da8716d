//! The command line of `trove-guest-agent`. Self-contained (clap and the shared log format
//! only): `cargo xtask package` renders the man page and the shell
//! completions from the same definitions the binary parses with.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::logging::LogFormat;

/// Isolation attempts at start-up by default (`netiso_guest::agent::RetryPolicy`'s; a unit
/// test of the binary checks they agree).
pub const DEFAULT_ISOLATION_ATTEMPTS: u32 = 15;

const EXAMPLES: &str = "\
Examples:
  trove-guest-agent --config-dir=/etc/trove/conf.d
      Run the agent, as its systemd unit does (the same flags as Trove's guest-agent).
  trove-guest-agent isolate --boot
      Take the tenant NIC named in /etc/trove/eth1.json away from the VM, even with an
      unusable configuration (trove-netiso-isolate.service, before the network is up).
  trove-guest-agent isolate --verify
      Check the isolation invariants against the baseline recorded at isolation.
  trove-guest-agent preflight --timeout 2
      Check that the broker and the registry are reached through the management network.
  trove-guest-agent netns list
      Every container sandbox and which one holds the tenant NIC.

Exit status: 0 success; 1 a check failed (preflight, isolate --verify) or another error;
2 a usage error; 69 a dependency (the container runtime, the broker) is unreachable;
71 isolation failed; 78 the configuration is unusable (systemd does not restart the agent
on 78: fix the configuration, then `systemctl restart trove-guest-agent`).";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "trove-guest-agent",
    version,
    about = "Trove guest agent: tenant NIC isolation, preflight, guest RPC and heartbeats",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// A configuration file (oslo `--config-file`); repeatable, read first, in order.
    #[arg(long, value_name = "FILE", global = true)]
    pub config_file: Vec<PathBuf>,
    /// A directory whose `*.conf` files are read in sorted order (oslo `--config-dir`);
    /// repeatable. Default when neither flag is given: /etc/trove/conf.d.
    #[arg(long, value_name = "DIR", global = true)]
    pub config_dir: Vec<PathBuf>,
    /// Log line format on stderr; RUST_LOG overrides the level (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// What to do; `run` when omitted (Trove's unit passes only `--config-dir`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: isolate, preflight, serve RPC, guard, heartbeat (until SIGTERM).
    Run(RunArgs),
    /// The isolation step on its own.
    Isolate(IsolateArgs),
    /// Check that every transport_url host and the registry are reached through a
    /// management interface and answer a TCP connect.
    Preflight {
        /// Per-endpoint timeout in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Container network namespaces: `ip netns` and `ip netns exec <id> ip a`, natively.
    #[command(subcommand)]
    Netns(NetnsCommand),
}

/// `run`'s flags.
#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// Per-endpoint preflight timeout in seconds.
    #[arg(long, default_value_t = 5)]
    pub preflight_timeout: u64,
    /// How long SIGTERM waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 60)]
    pub shutdown_timeout: u64,
    /// Seconds between status heartbeats once prepared (Trove: 60).
    #[arg(long, default_value_t = 60)]
    pub heartbeat_interval: u64,
    /// Isolation attempts at start-up before the database is refused (the first included).
    #[arg(long, default_value_t = DEFAULT_ISOLATION_ATTEMPTS)]
    pub isolation_attempts: u32,
    /// Pause after the first failed isolation attempt, in milliseconds; doubled after each.
    #[arg(long, default_value_t = 1000)]
    pub isolation_retry_initial_ms: u64,
    /// Longest pause between isolation attempts, in seconds.
    #[arg(long, default_value_t = 60)]
    pub isolation_retry_max_s: u64,
}

impl Default for RunArgs {
    /// What `run` means without flags (no subcommand at all, as Trove's unit starts it).
    fn default() -> Self {
        Self {
            preflight_timeout: 5,
            shutdown_timeout: 60,
            heartbeat_interval: 60,
            isolation_attempts: DEFAULT_ISOLATION_ATTEMPTS,
            isolation_retry_initial_ms: 1000,
            isolation_retry_max_s: 60,
        }
    }
}

/// `isolate`'s mode, exactly one.
#[derive(Debug, ClapArgs)]
#[group(required = true, multiple = false)]
pub struct IsolateArgs {
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Isolate the tenant NIC now (fails if it is not in this namespace).
    #[arg(long)]
    pub apply: bool,
    /// Check every isolation invariant; exit status 1 if one fails.
    #[arg(long)]
    pub verify: bool,
    /// The boot-time step: isolate the NIC the tenant NIC file names even when the rest of
    /// the configuration is unusable; nothing to do (exit 0) without the file or in bridged
    /// mode, or when the NIC is not in the VM.
    #[arg(long)]
    pub boot: bool,
}

/// `netns`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum NetnsCommand {
    /// Every container sandbox, its interfaces, and which one holds the tenant NIC.
    List,
    /// One sandbox (by id or unique prefix, or by container name): interfaces, addresses,
    /// routes.
    Show {
        /// Sandbox id, id prefix or container name.
        target: String,
    },
}
