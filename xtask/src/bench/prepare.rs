//! Part 7: `prepare` on the MariaDB image, per mode: from the cast to the tenant's first
//! successful login from the tenant network, and the agent's and mariadbd's resident memory
//! right after. The release harness runs the three database scenarios with `--measurements`;
//! every round is a whole scenario (a fresh guest, an empty data directory, an image layer of
//! its own), and its checks must pass for the figures to count.

use super::build::ReleaseBinaries;
use super::report::{Figure, Section};
use crate::layout::RUN_DIR;
use crate::sh::say;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::process::Command;

/// Rounds of the three scenarios; the figures are medians.
const ROUNDS: usize = 3;
/// The harness scenarios that run a database, one per mode.
const SCENARIOS: &str = "docker-isolated,docker-bridged,containerd-isolated";
/// The modes in report order: runtime, isolated, label.
const MODES: [(&str, bool, &str); 3] = [
    ("docker", true, "Docker, isolated"),
    ("docker", false, "Docker, bridged"),
    ("containerd", true, "containerd, isolated"),
];

/// One measurement line of the harness.
#[derive(Debug, Clone, PartialEq)]
struct Measurement {
    runtime: String,
    isolated: bool,
    to_healthy_ms: f64,
    to_login_ms: f64,
    agent_kib: f64,
    database_kib: f64,
}

fn parse(line: &str) -> Result<Measurement> {
    let value: Value = serde_json::from_str(line).context("a measurement line is not JSON")?;
    let number = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("measurement without `{key}`: {line}"))
    };
    Ok(Measurement {
        runtime: value
            .get("runtime")
            .and_then(Value::as_str)
            .with_context(|| format!("measurement without `runtime`: {line}"))?
            .to_owned(),
        isolated: value
            .get("isolated")
            .and_then(Value::as_bool)
            .with_context(|| format!("measurement without `isolated`: {line}"))?,
        to_healthy_ms: number("prepare_to_healthy_ms")?,
        to_login_ms: number("prepare_to_login_ms")?,
        agent_kib: number("agent_rss_kib")?,
        database_kib: number("database_rss_kib")?,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs part 7.
pub fn run(binaries: &ReleaseBinaries) -> Result<Section> {
    let started = std::time::Instant::now();
    let file = std::path::PathBuf::from(RUN_DIR)
        .join(format!("bench-prepare-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    for round in 1..=ROUNDS {
        say(&format!("  round {round}/{ROUNDS}: {SCENARIOS}"));
        let output = Command::new(&binaries.harness)
            .args(["--scenarios", SCENARIOS, "--measurements"])
            .arg(&file)
            .args(["--agent-bin"])
            .arg(&binaries.agent)
            .args(["--plugin-bin"])
            .arg(&binaries.plugin)
            .output()
            .context("cannot run the release harness")?;
        if !output.status.success() {
            let report = String::from_utf8_lossy(&output.stdout);
            let failures: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
            bail!(
                "the harness failed in round {round} ({}): {}{}",
                output.status,
                failures.join("; "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("the harness wrote no {}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    let measurements = text.lines().map(parse).collect::<Result<Vec<_>>>()?;

    let mut section = Section::new(
        "7. `prepare` on MariaDB: cast to the tenant's first login, memory after",
        &format!(
            "The release harness (`netiso-harness --scenarios {SCENARIOS} --measurements \
             FILE`, {ROUNDS} rounds, medians) plays Trove's taskmanager: it casts `prepare` \
             with a database, a user and the MariaDB config template rendered for 512 MB, \
             then Debian's `mariadb` client in the tenant's client namespace tries to log in \
             as that user every 250 ms over the tenant network. Timed from the cast to the \
             `healthy` heartbeat and to the first successful login. The image is \
             `trove-netiso/mariadb:10.11` plus a 1 MiB layer of the scenario's own, pulled \
             through the management network; the 88 MB MariaDB layer is already on the VM \
             (dockerd builds the scenario's image on it; containerd keeps it from the previous \
             round), so the pull is that one layer. Every `prepare` starts on an empty data \
             directory: `mariadb-install-db`, the temporary server, root's password (time \
             zones skipped, as Trove's `MYSQL_INITDB_SKIP_TZINFO=1` asks), then the real \
             server, `os_admin`, the database, the user and its grants. Memory is `VmRSS` of \
             the agent and of mariadbd (the container's PID 1) right after the login."
        ),
    );
    for (runtime, isolated, label) in MODES {
        let rows: Vec<&Measurement> = measurements
            .iter()
            .filter(|m| m.runtime == runtime && m.isolated == isolated)
            .collect();
        if rows.len() != ROUNDS {
            bail!("{label}: {} measurements instead of {ROUNDS}", rows.len());
        }
        let pick = |f: fn(&Measurement) -> f64| median(rows.iter().map(|m| f(m)).collect());
        section.figures.extend([
            Figure::cost(
                format!("{label}: prepare cast to first tenant login"),
                "ms",
                pick(|m| m.to_login_ms),
            ),
            Figure::cost(
                format!("{label}: prepare cast to `healthy` heartbeat"),
                "ms",
                pick(|m| m.to_healthy_ms),
            ),
            Figure::cost(
                format!("{label}: agent RSS after the login"),
                "MiB",
                pick(|m| m.agent_kib) / 1024.0,
            ),
            Figure::cost(
                format!("{label}: mariadbd RSS after the login"),
                "MiB",
                pick(|m| m.database_kib) / 1024.0,
            ),
        ]);
        let each: Vec<String> = rows
            .iter()
            .map(|m| format!("{:.0}", m.to_login_ms))
            .collect();
        section.notes.push(format!(
            "{label}: cast to login per round {} ms.",
            each.join(", ")
        ));
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_harness_measurement_line() {
        let line = r#"{"runtime":"docker","isolated":true,"image_tag":"h1-0","prepare_to_healthy_ms":5258,"prepare_to_login_ms":5286,"agent_rss_kib":20480,"database_rss_kib":102400}"#;
        assert_eq!(
            parse(line).expect("line"),
            Measurement {
                runtime: "docker".into(),
                isolated: true,
                to_healthy_ms: 5258.0,
                to_login_ms: 5286.0,
                agent_kib: 20480.0,
                database_kib: 102400.0,
            }
        );
        assert!(parse(r#"{"runtime":"docker"}"#).is_err());
    }

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
