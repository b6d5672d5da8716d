//! What a soak counts: per fault kind, how often it was injected and recovered from and how
//! long recovery took; the invariant violations; the longest tenant window; the casts. Pure,
//! so the report's arithmetic is tested apart from the guest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::schedule::{FaultKind, Segment};

/// One invariant that did not hold, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `segment#step`, as the progress lines print it.
    pub at: String,
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

#[derive(Debug, Default, Clone)]
struct KindTally {
    injected: u32,
    recovered: u32,
    recovery: Vec<Duration>,
}

/// Everything a soak run counted.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    kinds: BTreeMap<FaultKind, KindTally>,
    violations: Vec<Violation>,
    longest_tenant_window: Option<Duration>,
    casts: BTreeMap<Segment, (u64, u64)>,
}

impl Tally {
    /// A fault was injected.
    pub fn injected(&mut self, kind: FaultKind) {
        self.kinds.entry(kind).or_default().injected += 1;
    }

    /// The guest recovered from a fault of `kind` after `took`.
    pub fn recovered(&mut self, kind: FaultKind, took: Duration) {
        let tally = self.kinds.entry(kind).or_default();
        tally.recovered += 1;
        tally.recovery.push(took);
    }

    /// An invariant did not hold.
    pub fn violation(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    /// The VM held a tenant address or route for `window`.
    pub fn tenant_window(&mut self, window: Duration) {
        self.longest_tenant_window =
            Some(self.longest_tenant_window.unwrap_or_default().max(window));
    }

    /// The casts of `segment` so far: how many the broker confirmed, and how many runs of
    /// them the agent's log shows.
    pub fn set_casts(&mut self, segment: Segment, confirmed: u64, run: u64) {
        self.casts.insert(segment, (confirmed, run));
    }

    /// Faults injected in all.
    pub fn faults(&self) -> u32 {
        self.kinds.values().map(|t| t.injected).sum()
    }

    /// Faults recovered from in all.
    pub fn recoveries(&self) -> u32 {
        self.kinds.values().map(|t| t.recovered).sum()
    }

    /// The violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The fault kinds injected at least once.
    pub fn kinds_injected(&self) -> Vec<FaultKind> {
        self.kinds
            .iter()
            .filter(|(_, t)| t.injected > 0)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The report: a table per fault kind, the violations, then the summary line.
    pub fn render(&self, seed: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>9} {:>10} {:>10}",
            "fault", "injected", "recovered", "p50", "p99"
        );
        for (kind, tally) in &self.kinds {
            let mut times = tally.recovery.clone();
            times.sort();
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>9} {:>10} {:>10}",
                kind.as_str(),
                tally.injected,
                tally.recovered,
                show(percentile(&times, 50)),
                show(percentile(&times, 99)),
            );
        }
        let _ = writeln!(
            out,
            "longest tenant window: {}",
            self.longest_tenant_window.map_or_else(
                || "none seen".to_owned(),
                |w| format!("{} ms", w.as_millis())
            )
        );
        let (confirmed, run) = self
            .casts
            .values()
            .fold((0, 0), |(c, r), (confirmed, run)| (c + confirmed, r + run));
        let _ = writeln!(
            out,
            "casts: {confirmed} confirmed by the broker, {run} run by the agent"
        );
        for violation in &self.violations {
            let _ = writeln!(
                out,
                "VIOLATION at {}: {}: {}",
                violation.at, violation.invariant, violation.detail
            );
        }
        let _ = write!(
            out,
            "soak: {} faults, {} recovered, {} invariant violations",
            self.faults(),
            self.recoveries(),
            self.violations.len()
        );
        if !self.violations.is_empty() {
            let _ = write!(out, " (replay with --seed {seed})");
        }
        out.push('\n');
        out
    }
}

/// The nearest-rank percentile of sorted `times`.
pub fn percentile(sorted: &[Duration], percent: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn show(time: Option<Duration>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let times = secs(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&times, 50), Some(Duration::from_secs(5)));
        assert_eq!(percentile(&times, 99), Some(Duration::from_secs(10)));
        assert_eq!(percentile(&secs(&[7]), 50), Some(Duration::from_secs(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_summary_counts_faults_recoveries_and_violations() {
        let mut tally = Tally::default();
        tally.injected(FaultKind::AgentKill);
        tally.recovered(FaultKind::AgentKill, Duration::from_secs(2));
        tally.injected(FaultKind::BrokerStall);
        tally.violation(Violation {
            at: "docker-isolated#3".into(),
            invariant: "database-reachable",
            detail: "no greeting in 120 s".into(),
        });
        tally.tenant_window(Duration::from_millis(12));
        tally.tenant_window(Duration::from_millis(4));
        tally.set_casts(Segment::DockerIsolated, 4, 4);
        tally.set_casts(Segment::DockerIsolated, 10, 10);
        tally.set_casts(Segment::DockerBridged, 3, 3);
        let report = tally.render(77);
        assert!(
            report.ends_with(
                "soak: 2 faults, 1 recovered, 1 invariant violations (replay with --seed 77)\n"
            ),
            "{report}"
        );
        assert!(report.contains("agent-kill"), "{report}");
        assert!(report.contains("longest tenant window: 12 ms"), "{report}");
        assert!(
            report.contains("casts: 13 confirmed by the broker, 13 run by the agent"),
            "{report}"
        );
        assert!(
            report.contains("VIOLATION at docker-isolated#3: database-reachable"),
            "{report}"
        );
        assert_eq!(
            tally.kinds_injected(),
            vec![FaultKind::AgentKill, FaultKind::BrokerStall]
        );
    }

    #[test]
    fn a_clean_run_names_no_seed() {
        let mut tally = Tally::default();
        tally.injected(FaultKind::TenantDhcp);
        tally.recovered(FaultKind::TenantDhcp, Duration::from_millis(300));
        let report = tally.render(5);
        assert!(
            report.ends_with("soak: 1 faults, 1 recovered, 0 invariant violations\n"),
            "{report}"
        );
    }
}
