//! The release build every part measures: one `cargo build` for all of them, so dependencies
//! are compiled once with one feature set (separate `cargo build`, `cargo run` and `cargo bench`
//! invocations each resolve their own features and rebuild the shared dependencies), and the
//! executables' paths taken from cargo's own build messages rather than guessed.

use crate::sh::say;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The optimised executables the benchmark runs.
pub struct ReleaseBinaries {
    /// Our libnetwork plugin (`bins/docker-hostnic`).
    pub plugin: PathBuf,
    /// The guest agent (`bins/trove-guest-agent`).
    pub agent: PathBuf,
    /// The end-to-end harness (`bins/netiso-harness`), for the `prepare` part.
    pub harness: PathBuf,
    /// The messaging example that times our RPC server against Python's.
    pub rpc_bench: PathBuf,
    /// The messaging crate's fleet client as a tool (part 8's sweep).
    pub fleet_sweep: PathBuf,
    /// The stand-in conductor recording heartbeats (part 8).
    pub fleet_conductor: PathBuf,
    /// `benches/benches/isolation.rs`.
    pub isolation_bench: PathBuf,
    /// `benches/benches/micro.rs` (criterion).
    pub micro_bench: PathBuf,
}

/// The `cargo build` arguments; bench targets built this way use the release profile, which
/// the bench profile inherits unchanged. The benches are named: `--benches` would also build
/// every library and binary of the selected packages as a test harness.
const BUILD_ARGS: [&str; 25] = [
    "build",
    "--release",
    "--locked",
    "--message-format=json-render-diagnostics",
    "-p",
    "docker-hostnic",
    "-p",
    "trove-guest-agent",
    "-p",
    "netiso-harness",
    "-p",
    "netiso-messaging",
    "-p",
    "netiso-benches",
    "--bins",
    "--bench",
    "isolation",
    "--bench",
    "micro",
    "--example",
    "rpc_bench",
    "--example",
    "fleet_sweep",
    "--example",
    "fleet_conductor",
];

/// Builds everything in one invocation and returns where each executable is.
pub fn release_binaries() -> Result<ReleaseBinaries> {
    say(&format!("$ cargo {}", BUILD_ARGS.join(" ")));
    let mut child = Command::new("cargo")
        .args(BUILD_ARGS)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child
        .stdout
        .take()
        .context("cargo's stdout was not piped")?;
    let mut executables = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's build messages")?;
        if let Some((kind, name, path)) = executable_of(&line) {
            executables.insert((kind, name), path);
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", BUILD_ARGS.join(" "));
    }
    let mut take = |kind: &str, name: &str| {
        executables
            .remove(&(kind.to_owned(), name.to_owned()))
            .with_context(|| format!("cargo built no {kind} target named `{name}`"))
    };
    Ok(ReleaseBinaries {
        plugin: take("bin", "docker-hostnic")?,
        agent: take("bin", "trove-guest-agent")?,
        harness: take("bin", "netiso-harness")?,
        rpc_bench: take("example", "rpc_bench")?,
        fleet_sweep: take("example", "fleet_sweep")?,
        fleet_conductor: take("example", "fleet_conductor")?,
        isolation_bench: take("bench", "isolation")?,
        micro_bench: take("bench", "micro")?,
    })
}

/// The target kind, target name and executable of one `compiler-artifact` message, if it
/// produced an executable. A binary or example built as a test harness (same kind and name
/// as the real one) is not it: only bench targets are taken from test-mode builds.
fn executable_of(line: &str) -> Option<(String, String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = message.get("executable")?.as_str()?;
    let target = message.get("target")?;
    let kind = target.get("kind")?.as_array()?.first()?.as_str()?;
    let name = target.get("name")?.as_str()?;
    let test_harness = message
        .get("profile")
        .and_then(|p| p.get("test"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if test_harness && kind != "bench" {
        return None;
    }
    Some((kind.to_owned(), name.to_owned(), PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executable_of_a_bench_artifact() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/benches#0.1.0","target":{"kind":["bench"],"crate_types":["bin"],"name":"micro","src_path":"/w/benches/benches/micro.rs"},"profile":{"opt_level":"3"},"features":[],"filenames":["/w/target/release/deps/micro-0123"],"executable":"/w/target/release/deps/micro-0123","fresh":true}"#;
        assert_eq!(
            executable_of(line),
            Some((
                "bench".to_owned(),
                "micro".to_owned(),
                PathBuf::from("/w/target/release/deps/micro-0123")
            ))
        );
    }

    #[test]
    fn takes_a_binary_but_not_its_test_harness() {
        let harness = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"docker-hostnic"},"profile":{"test":true},"executable":"/w/target/release/deps/docker_hostnic-0123"}"#;
        assert_eq!(executable_of(harness), None);
        let binary = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"docker-hostnic"},"profile":{"test":false},"executable":"/w/target/release/docker-hostnic"}"#;
        assert_eq!(
            executable_of(binary),
            Some((
                "bin".to_owned(),
                "docker-hostnic".to_owned(),
                PathBuf::from("/w/target/release/docker-hostnic")
            ))
        );
    }

    #[test]
    fn ignores_libraries_and_other_messages() {
        let library = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"netiso_config"},"executable":null}"#;
        assert_eq!(executable_of(library), None);
        assert_eq!(
            executable_of(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(executable_of("not json"), None);
    }
}
