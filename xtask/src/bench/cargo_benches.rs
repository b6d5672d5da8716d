//! Parts 5 and 6: the benchmarks that live in `benches/` (package `netiso-benches`), run
//! through cargo, their output read back into figures.

use super::report::{Figure, Section, Target};
use crate::sh::say;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs a bench executable from the release build with `--bench` (the flag `cargo bench`
/// passes, without which criterion only smoke-tests each function) and returns its stdout.
fn run_bench(executable: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(executable);
    command.arg("--bench").args(args);
    say(&format!(
        "$ {} --bench {}",
        executable.display(),
        args.join(" ")
    ));
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", executable.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}\n{}",
            executable.display(),
            out.status,
            stdout.trim(),
            tail(&String::from_utf8_lossy(&out.stderr), 15)
        );
    }
    Ok(stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The number before `unit` after `label` in `line` (`"netiso    0.45 ms"` → 0.45).
fn number_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Part 5: `benches/benches/isolation.rs`.
pub fn isolation(executable: &Path) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "5. Isolation: netlink apply against `ip` commands",
        "`cargo bench -p netiso-benches --bench isolation` (see `benches/README.md`): in \
         throwaway namespaces, `isolate` (plan + apply + verify over rtnetlink) on a fake VM \
         whose tenant NIC carries 1 to 10 000 routes, beside the iproute2 sequence doing the \
         same work (find the NIC by MAC in `ip -o link`, `sysctl accept_ra=0`, link down, \
         flush addresses, flush IPv4 and IPv6 routes); then the hand-over of the NIC into a \
         container namespace (move + rename, up, address, gateway) beside the four `ip` \
         commands. Medians of 3 to 21 rounds; setup is not timed. Targets (from the isolation \
         issue): `apply` with 10 routes under 5 ms and at least 10× faster than `ip`.",
    );
    let stdout = run_bench(executable, &[])?;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("apply,") {
            let routes = rest.split_whitespace().next().unwrap_or("?").to_owned();
            let (Some(ours), Some(ip)) = (number_after(line, "netiso"), number_after(line, "| ip"))
            else {
                bail!("unexpected isolation bench line: {line}");
            };
            let mut figure =
                Figure::cost(format!("apply, {routes} routes (ours vs `ip`)"), "ms", ours)
                    .against(ip);
            if routes == "10" {
                figure = figure.target(Target::GainAtLeast(10.0));
                section.figures.push(figure);
                section.figures.push(
                    Figure::cost("apply, 10 routes, absolute", "ms", ours)
                        .target(Target::ValueAtMost(5.0)),
                );
                continue;
            }
            section.figures.push(figure);
        } else if line.starts_with("move + rename") {
            if let (Some(ours), Some(ip)) =
                (number_after(line, "netiso"), number_after(line, "| ip"))
            {
                section.figures.push(
                    Figure::cost("hand-over: move + rename + address + gateway", "ms", ours)
                        .against(ip),
                );
            }
        } else if line.starts_with("of which") || line.starts_with("linearity") {
            section.notes.push(format!("`{line}`"));
        }
    }
    if section.figures.is_empty() {
        bail!("the isolation bench printed no figures:\n{stdout}");
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Part 6: `benches/benches/micro.rs` (criterion).
pub fn micro(executable: &Path) -> Result<Section> {
    let started = Instant::now();
    let mut section = Section::new(
        "6. Micro-benchmarks of the hot pure functions",
        "`cargo bench -p netiso-benches --bench micro` (criterion, 1 s warm-up, 3 s \
         measurement per function; the figure is criterion's point estimate of the mean): \
         parsing an injected `trove-guestagent.conf` with netiso-config's INI reader; \
         unwrapping an oslo 2.0 envelope holding a `prepare` call encrypted by Trove's \
         `SecureSerializer` and decrypting its context and 7 arguments; decoding each plugin \
         request body as dockerd sends it. No reference: these locate the cost inside the \
         figures above.",
    );
    let stdout = run_bench(
        executable,
        &["--warm-up-time", "1", "--measurement-time", "3", "--noplot"],
    )?;
    let mut name: Option<String> = None;
    for line in stdout.lines() {
        if let Some((label, times)) = line.split_once("time:") {
            let label = label.trim();
            let label = if label.is_empty() {
                name.take().unwrap_or_default()
            } else {
                label.to_owned()
            };
            let Some(estimate) = criterion_estimate(times) else {
                bail!("unexpected criterion line: {line}");
            };
            section.figures.push(Figure::cost(label, "µs", estimate));
        } else if !line.starts_with(' ') && !line.trim().is_empty() {
            name = Some(line.trim().to_owned());
        }
    }
    if section.figures.is_empty() {
        bail!("the micro bench printed no figures:\n{stdout}");
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// `[1.2 µs 1.3 µs 1.4 µs]` → 1.3 (in µs).
fn criterion_estimate(times: &str) -> Option<f64> {
    let inner = times.trim().strip_prefix('[')?.strip_suffix(']')?;
    let words: Vec<&str> = inner.split_whitespace().collect();
    let (value, unit) = (words.get(2)?, words.get(3)?);
    let value: f64 = value.parse().ok()?;
    let scale = match *unit {
        "ps" => 1e-6,
        "ns" => 1e-3,
        "µs" | "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_estimates() {
        assert_eq!(
            criterion_estimate("   [1.0000 µs 2.5000 µs 3.0000 µs]"),
            Some(2.5)
        );
        let ns = criterion_estimate("[900.00 ns 950.00 ns 1.0000 µs]").expect("parsed");
        assert!((ns - 0.95).abs() < 1e-9, "{ns}");
        assert_eq!(criterion_estimate("garbage"), None);
    }

    #[test]
    fn reads_isolation_lines() {
        let line = "apply,    10 routes: netiso     0.480 ms | ip    25.900 ms | ip/netiso   54.0x";
        assert_eq!(number_after(line, "netiso"), Some(0.48));
        assert_eq!(number_after(line, "| ip"), Some(25.9));
    }
}
