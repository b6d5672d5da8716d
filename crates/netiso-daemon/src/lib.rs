//! What the two daemons of trove-netiso (`trove-guest-agent` and `docker-hostnic`) share, so
//! that an operator meets one set of conventions and `cargo xtask package` renders the man
//! pages and shell completions from the very definitions the binaries parse with:
//!
//! - [`cli`]: each daemon's command line (clap definitions only, no behaviour);
//! - [`exit_code`]: the exit statuses systemd units and scripts tell failures apart by;
//! - [`logging`]: the log format flag and the subscriber set-up (stderr, `RUST_LOG`).
//!
//! Behaviour lives in the library crates (`netiso-guest`, `netiso-hostnic`); the binaries
//! wire this crate's parsed flags to them.

pub mod cli;
pub mod exit_code;
pub mod logging;
