//! The command line of `docker-hostnic`. Self-contained (clap, the shared log format and the
//! default paths): `cargo xtask package` renders the man page and the
//! shell completions from the same definitions the binary parses with.

use std::path::PathBuf;

use clap::Parser;

use crate::logging::LogFormat;

/// Where dockerd looks for plugin sockets (`netiso_hostnic::server::DEFAULT_SOCKET_PATH`; a
/// unit test of the binary checks they agree).
pub const DEFAULT_SOCKET_PATH: &str = "/run/docker/plugins/docker-hostnic.sock";
/// Trove's plugin state file (`netiso_hostnic::state::DEFAULT_STATE_FILE`).
pub const DEFAULT_STATE_FILE: &str = "/etc/docker/hostnic.json";
/// Trove's injected tenant NIC file (`netiso_config::tenant_nic::DEFAULT_TENANT_NIC_FILE`).
pub const DEFAULT_TENANT_NIC_FILE: &str = "/etc/trove/eth1.json";

const EXAMPLES: &str = "\
Examples:
  systemctl start docker-hostnic.socket
      The usual way: systemd owns the socket and starts the plugin when dockerd connects.
  docker-hostnic --socket /run/docker/plugins/docker-hostnic.sock
      Run it by hand (dockerd finds the socket in /run/docker/plugins).
  docker network create -d docker-hostnic --subnet 10.1.0.0/24 database-network
      What Trove's agent (and trove-guest-agent) does with it.

Exit status: 0 stopped by SIGTERM or SIGINT; 1 an error of no more specific kind; 2 a usage
error; 71 the network namespace or the socket cannot be used; 78 the configuration (the
socket systemd passes, the state file) is unusable.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "docker-hostnic",
    version,
    about = "libnetwork remote network driver that gives a container the VM's tenant NIC",
    after_help = EXAMPLES
)]
pub struct Args {
    /// Unix socket to create, unless systemd passes one (LISTEN_FDS/LISTEN_PID).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// NetworkID -> tenant NIC map, in Trove's format.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
    /// Tenant NIC description injected by Trove (`eth1.json`: gateways, host routes).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_TENANT_NIC_FILE)]
    pub tenant_nic_file: PathBuf,
    /// Log line format on stderr; RUST_LOG overrides the level (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}
