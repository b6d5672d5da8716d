//! The `--log-format` values of both daemons, apart from the logging set-up so that the
//! command-line definitions (and `cargo xtask package`, which renders their man pages and
//! completions from them) need only clap.

use clap::ValueEnum;

/// How log lines look.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log shippers.
    Json,
}
