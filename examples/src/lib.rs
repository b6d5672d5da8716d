//! Runnable examples of the trove-netiso libraries, for operators and for tooling that
//! embeds them. Run one with `cargo run -p netiso-examples --example <name>`:
//!
//! - `render_injected_files`: the files Trove's taskmanager injects into a guest
//!   (`guest_info.conf`, `eth1.json`, `daemon.json`), rendered from `trove.conf` and
//!   per-instance facts, byte for byte as Trove writes them.
