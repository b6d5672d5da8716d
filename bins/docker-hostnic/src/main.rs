//! `docker-hostnic`: the libnetwork remote network driver that hands the VM's tenant NIC to the
//! Trove database container. Discovered by dockerd through its socket in
//! `/run/docker/plugins`; all behaviour lives in the `netiso-hostnic` crate.

#[path = "../../shared/logging.rs"]
mod logging;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use logging::LogFormat;
use netiso_config::tenant_nic::DEFAULT_TENANT_NIC_FILE;
use netiso_hostnic::server::DEFAULT_SOCKET_PATH;
use netiso_hostnic::state::DEFAULT_STATE_FILE;
use netiso_hostnic::{
    Driver, NetnsNicLocator, PluginSocket, StateStore, serve, termination_signal,
};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "libnetwork remote network driver that gives a container the VM's tenant NIC"
)]
struct Args {
    /// Unix socket to create, unless systemd passes one (LISTEN_FDS/LISTEN_PID).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// NetworkID -> tenant NIC map, in Trove's format.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    /// Tenant NIC description injected by Trove (`eth1.json`: gateways, host routes).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_TENANT_NIC_FILE)]
    tenant_nic_file: PathBuf,
    /// Log line format on stderr; RUST_LOG overrides the level (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format);
    // Before any other thread exists: this reads and clears LISTEN_FDS/LISTEN_PID.
    let activated = PluginSocket::from_systemd()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Before the socket exists, so that a SIGTERM sent as soon as dockerd can connect is handled
    // gracefully rather than by the default action.
    let signal = {
        let _runtime = runtime.enter();
        termination_signal().context("cannot install the SIGTERM/SIGINT handlers")?
    };

    let state = StateStore::open(&args.state_file)
        .with_context(|| format!("cannot open the state file {}", args.state_file.display()))?;
    if let Some(kept) = state.set_aside() {
        tracing::error!(
            state_file = %args.state_file.display(),
            kept_as = %kept.kept_as.display(),
            reason = %kept.reason,
            "the state file was corrupt: it was kept aside and an empty state started; networks created before are unknown until recreated"
        );
    }
    let networks = state.networks().len();
    let locator = NetnsNicLocator::new()
        .context("cannot open an rtnetlink handle on this network namespace")?;
    let socket = match activated {
        Some(socket) => socket,
        None => PluginSocket::bind(&args.socket)?,
    };
    let socket_path = socket.path().unwrap_or_else(|| args.socket.clone());
    let driver = Arc::new(Driver::new(
        state,
        args.tenant_nic_file.clone(),
        Arc::new(locator),
    ));
    tracing::info!(
        socket = %socket_path.display(),
        state_file = %args.state_file.display(),
        tenant_nic_file = %args.tenant_nic_file.display(),
        networks,
        "docker-hostnic is serving"
    );
    runtime
        .block_on(serve(socket, driver, async {
            let name = signal.await;
            tracing::info!(signal = name, "shutting down");
        }))
        .context("the plugin server failed")?;
    tracing::info!("docker-hostnic stopped");
    Ok(())
}
