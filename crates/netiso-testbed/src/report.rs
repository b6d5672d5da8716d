//! The harness report: one line per check with its measured time, the traffic flows as
//! observed, and the `N passed, M failed` summary that decides the exit status.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// `<scenario>/<check>`.
    pub name: String,
    /// True when the check held.
    pub passed: bool,
    /// How long the check took.
    pub elapsed: Duration,
    /// What was measured, or why it failed.
    pub detail: String,
}

impl CheckResult {
    /// The report line: `PASS|FAIL  <scenario>/<check>  <ms> ms  <detail>`.
    pub fn line(&self) -> String {
        format!(
            "{}  {}  {} ms  {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.name,
            self.elapsed.as_millis(),
            self.detail.replace('\n', " | ")
        )
    }
}

/// Every check of a run, in order, and the flows seen on the way.
#[derive(Debug, Default)]
pub struct Report {
    checks: Vec<CheckResult>,
    flows: Vec<String>,
}

impl Report {
    /// Records a finished check and shows it at once on stderr (runs take minutes).
    pub fn record(&mut self, result: CheckResult) {
        eprintln!("{}", result.line());
        self.checks.push(result);
    }

    /// Records a traffic flow, once.
    pub fn flow(&mut self, flow: String) {
        if !self.flows.contains(&flow) {
            self.flows.push(flow);
        }
    }

    /// Number of failed checks.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }

    /// The whole report as printed at the end.
    pub fn render(&self) -> String {
        let mut text = String::from("== netiso-harness report\n");
        for check in &self.checks {
            let _ = writeln!(text, "{}", check.line());
        }
        text.push_str("== traffic flows as observed\n");
        if self.flows.is_empty() {
            text.push_str("(none observed)\n");
        }
        for flow in &self.flows {
            let _ = writeln!(text, "{flow}");
        }
        let failed = self.failed();
        let _ = writeln!(
            text,
            "{} passed, {failed} failed",
            self.checks.len() - failed
        );
        text
    }
}

/// Checks of one scenario, named `<scenario>/<check>`.
pub struct ScenarioReport<'a> {
    report: &'a mut Report,
    scenario: String,
}

impl<'a> ScenarioReport<'a> {
    /// Starts recording checks of `scenario`.
    pub fn new(report: &'a mut Report, scenario: &str) -> Self {
        Self {
            report,
            scenario: scenario.to_owned(),
        }
    }

    /// Runs one check, timing it; `Ok(detail)` passes, `Err` fails with its chain as detail.
    pub async fn check<T, F>(&mut self, name: &str, body: F) -> Option<T>
    where
        F: Future<Output = anyhow::Result<(T, String)>>,
    {
        let started = Instant::now();
        let outcome = body.await;
        let elapsed = started.elapsed();
        let (value, passed, detail) = match outcome {
            Ok((value, detail)) => (Some(value), true, detail),
            Err(e) => (None, false, format!("{e:#}")),
        };
        self.report.record(CheckResult {
            name: format!("{}/{name}", self.scenario),
            passed,
            elapsed,
            detail,
        });
        value
    }

    /// Records a check that could not run because an earlier step failed: a failure, never a
    /// skip.
    pub fn not_run(&mut self, name: &str, reason: &str) {
        self.report.record(CheckResult {
            name: format!("{}/{name}", self.scenario),
            passed: false,
            elapsed: Duration::ZERO,
            detail: format!("not run: {reason}"),
        });
    }

    /// Records an observed traffic flow, tagged with the scenario.
    pub fn flow(&mut self, flow: String) {
        self.report.flow(format!("{}: {flow}", self.scenario));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, passed: bool) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            passed,
            elapsed: Duration::from_millis(12),
            detail: "two\nlines".to_owned(),
        }
    }

    #[test]
    fn lines_have_the_documented_shape() {
        assert_eq!(
            result("docker-isolated/client-reaches-db", true).line(),
            "PASS  docker-isolated/client-reaches-db  12 ms  two | lines"
        );
        assert!(result("x/y", false).line().starts_with("FAIL  x/y  12 ms"));
    }

    #[test]
    fn the_summary_is_the_last_line_and_counts_failures() {
        let mut report = Report::default();
        report.record(result("a/b", true));
        report.record(result("a/c", false));
        report.flow("client -> db".to_owned());
        report.flow("client -> db".to_owned());
        let text = report.render();
        assert_eq!(text.lines().last(), Some("1 passed, 1 failed"));
        assert_eq!(text.matches("client -> db").count(), 1);
        assert_eq!(report.failed(), 1);
    }

    #[tokio::test]
    async fn a_failing_or_unrun_check_is_recorded_as_failed() {
        let mut report = Report::default();
        let mut scenario = ScenarioReport::new(&mut report, "s");
        let value = scenario
            .check("ok", async { Ok((7, "fine".to_owned())) })
            .await;
        assert_eq!(value, Some(7));
        let none: Option<()> = scenario
            .check("bad", async { Err(anyhow::anyhow!("boom")) })
            .await;
        assert!(none.is_none());
        scenario.not_run("later", "setup failed");
        assert_eq!(report.failed(), 2);
        assert_eq!(report.checks[1].detail, "boom");
        assert_eq!(report.checks[2].name, "s/later");
    }
}
