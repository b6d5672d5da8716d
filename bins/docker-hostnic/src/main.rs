//! `docker-hostnic`: the libnetwork remote network driver that hands the VM's tenant NIC to the
//! Trove database container. Discovered by dockerd through its socket in
//! `/run/docker/plugins`; all behaviour lives in the `netiso-hostnic` crate.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use netiso_daemon::cli::hostnic::Args;
use netiso_daemon::{exit_code, logging};
use netiso_hostnic::{
    Driver, NetnsNicLocator, PluginSocket, StateStore, serve, termination_signal,
};

/// An error and the documented exit status (`exit_code`) of its kind.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

/// Tags an error with its exit status.
trait Status<T> {
    fn status(self, status: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> Status<T> for Result<T, E> {
    fn status(self, status: u8) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            status,
            error: error.into(),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { status, error }) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(status)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    // Before any other thread exists: this reads and clears LISTEN_FDS/LISTEN_PID.
    let activated = PluginSocket::from_systemd().status(exit_code::CONFIG)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .status(exit_code::FAILURE)?;
    // Before the socket exists, so that a SIGTERM sent as soon as dockerd can connect is handled
    // gracefully rather than by the default action.
    let signal = {
        let _runtime = runtime.enter();
        termination_signal()
            .context("cannot install the SIGTERM/SIGINT handlers")
            .status(exit_code::FAILURE)?
    };

    let state = StateStore::open(&args.state_file)
        .with_context(|| format!("cannot open the state file {}", args.state_file.display()))
        .status(exit_code::CONFIG)?;
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
        .context("cannot open an rtnetlink handle on this network namespace")
        .status(exit_code::ISOLATION)?;
    let socket = match activated {
        Some(socket) => socket,
        None => PluginSocket::bind(&args.socket).status(exit_code::ISOLATION)?,
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
        .context("the plugin server failed")
        .status(exit_code::FAILURE)?;
    tracing::info!("docker-hostnic stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_defaults_are_the_libraries() {
        assert_eq!(
            netiso_daemon::cli::hostnic::DEFAULT_SOCKET_PATH,
            netiso_hostnic::server::DEFAULT_SOCKET_PATH
        );
        assert_eq!(
            netiso_daemon::cli::hostnic::DEFAULT_STATE_FILE,
            netiso_hostnic::state::DEFAULT_STATE_FILE
        );
        assert_eq!(
            netiso_daemon::cli::hostnic::DEFAULT_TENANT_NIC_FILE,
            netiso_config::tenant_nic::DEFAULT_TENANT_NIC_FILE
        );
    }
}
