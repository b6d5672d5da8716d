//! The daemons' command lines. Self-contained (clap and the shared log format only), so that
//! `cargo xtask package` can render man pages and completions without the daemons' behaviour.

pub mod agent;
pub mod hostnic;
