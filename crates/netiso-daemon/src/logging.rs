//! Logging set-up shared by the daemons (`trove-guest-agent`, `docker-hostnic`): both must log
//! the same way for operators (journald or a log file, one format flag, `RUST_LOG` for the
//! level).

use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`); colours only on a terminal, so
/// journald and log files get plain text.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
