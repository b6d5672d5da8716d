//! The figures a benchmark run produces and `docs/benchmarks.md`, rendered from them.
//!
//! Every figure says what was measured, our value, the reference's (when there is one), the
//! ratio, the target and whether it is met. A part that could not run is kept as a section
//! with its error, so the report never hides a gap.

use std::fmt::Write as _;

/// How a figure is compared with its target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target: the figure is informative.
    None,
    /// `ours / reference` must be at most this.
    RatioAtMost(f64),
    /// `reference / ours` must be at least this (speed-ups, throughput gains).
    GainAtLeast(f64),
    /// Our value itself must be at most this (in the figure's unit).
    ValueAtMost(f64),
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// The unit both values are in.
    pub unit: &'static str,
    /// Our value.
    pub ours: f64,
    /// The reference's value, if the reference was measured.
    pub reference: Option<f64>,
    /// The target.
    pub target: Target,
    /// Whether higher values are better (rates) for the gain ratio.
    pub higher_is_better: bool,
}

impl Figure {
    /// A cost (time, memory, CPU): lower is better.
    pub fn cost(what: impl Into<String>, unit: &'static str, ours: f64) -> Self {
        Self {
            what: what.into(),
            unit,
            ours,
            reference: None,
            target: Target::None,
            higher_is_better: false,
        }
    }

    /// A rate (requests/s, bytes/s): higher is better.
    pub fn rate(what: impl Into<String>, unit: &'static str, ours: f64) -> Self {
        Self {
            higher_is_better: true,
            ..Self::cost(what, unit, ours)
        }
    }

    /// Sets the reference value.
    pub fn against(mut self, reference: f64) -> Self {
        self.reference = Some(reference);
        self
    }

    /// Sets the target.
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// `ours / reference`.
    pub fn ratio(&self) -> Option<f64> {
        self.reference
            .filter(|r| *r > 0.0)
            .map(|reference| self.ours / reference)
    }

    /// "How many times better than the reference" (> 1 is better).
    pub fn gain(&self) -> Option<f64> {
        let ratio = self.ratio()?;
        if self.higher_is_better {
            Some(ratio)
        } else if ratio > 0.0 {
            Some(1.0 / ratio)
        } else {
            None
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target or nothing to compare.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtMost(limit) => self.ratio().map(|r| r <= limit),
            Target::GainAtLeast(limit) => self.gain().map(|g| g >= limit),
            Target::ValueAtMost(limit) => Some(self.ours <= limit),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtMost(limit) => format!("ours/ref ≤ {}", fmt_ratio(limit)),
            Target::GainAtLeast(limit) => format!("≥ {}× better", fmt_number(limit)),
            Target::ValueAtMost(limit) => format!("≤ {} {}", fmt_number(limit), self.unit),
        }
    }

    fn verdict(&self) -> String {
        match (self.met(), self.target) {
            (None, Target::None) => "—".into(),
            (None, _) => "not measured".into(),
            (Some(true), _) => "met".into(),
            (Some(false), Target::RatioAtMost(limit)) => match self.ratio() {
                Some(r) => format!("**missed** ({})", over(r / limit)),
                None => "**missed**".into(),
            },
            (Some(false), Target::GainAtLeast(limit)) => match self.gain() {
                Some(g) => format!("**missed** ({} of {}×)", fmt_number(g), fmt_number(limit)),
                None => "**missed**".into(),
            },
            (Some(false), Target::ValueAtMost(limit)) => {
                format!("**missed** ({})", over(self.ours / limit))
            }
            (Some(false), Target::None) => "—".into(),
        }
    }
}

/// A part of the benchmark (one numbered item of the issue).
#[derive(Debug, Default)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// How it was measured (a paragraph of Markdown).
    pub method: String,
    /// The figures, in display order.
    pub figures: Vec<Figure>,
    /// Extra lines shown under the table (raw tool output, observations).
    pub notes: Vec<String>,
    /// Why the part (or some of it) could not be measured.
    pub failure: Option<String>,
    /// Wall-clock seconds the part took.
    pub seconds: f64,
}

impl Section {
    /// An empty section with a heading and its method.
    pub fn new(title: &str, method: &str) -> Self {
        Self {
            title: title.into(),
            method: method.into(),
            ..Self::default()
        }
    }
}

/// The machine the run happened on.
#[derive(Debug)]
pub struct Machine {
    /// `date -u` at the start.
    pub date: String,
    /// CPU model and count.
    pub cpus: String,
    /// Total memory.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// Load average at the start (other jobs on a shared machine move the figures).
    pub load: String,
    /// Load average at the end.
    pub load_end: String,
    /// The commit measured.
    pub commit: String,
}

/// Renders the whole report.
pub fn render(machine: &Machine, sections: &[Section], total_seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmarks\n\n\
         Generated by `cargo xtask bench` (do not edit by hand: the next run rewrites this file).\n\
         Every figure was measured in the run described here, on this machine, beside the\n\
         reference it is compared with; nothing is copied from an earlier run.\n"
    );
    let _ = writeln!(out, "| Machine | |\n|---|---|");
    let _ = writeln!(out, "| Date (UTC) | {} |", machine.date);
    let _ = writeln!(out, "| CPUs | {} |", machine.cpus);
    let _ = writeln!(out, "| Memory | {} |", machine.memory);
    let _ = writeln!(out, "| Kernel | {} |", machine.kernel);
    let _ = writeln!(
        out,
        "| Load average (1, 5, 15 min) at start / end | {} / {} |",
        machine.load, machine.load_end
    );
    let _ = writeln!(out, "| Commit | {} |", machine.commit);
    let _ = writeln!(out, "| Run time | {:.0} s |\n", total_seconds);

    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "| Part | Figure | ours | reference | ratio ours/ref | target | verdict |\n|---|---|---|---|---|---|---|"
    );
    for section in sections {
        for figure in section
            .figures
            .iter()
            .filter(|f| !matches!(f.target, Target::None))
        {
            let _ = writeln!(out, "| {} | {} |", short_title(&section.title), row(figure));
        }
        if let Some(failure) = &section.failure {
            let _ = writeln!(
                out,
                "| {} | **not measured** | | | | | {} |",
                short_title(&section.title),
                one_line(failure)
            );
        }
    }
    out.push('\n');

    for section in sections {
        let _ = writeln!(out, "## {}\n", section.title);
        let _ = writeln!(out, "{}\n", section.method.trim());
        if !section.figures.is_empty() {
            let _ = writeln!(
                out,
                "| Figure | ours | reference | ratio ours/ref | target | verdict |\n|---|---|---|---|---|---|"
            );
            for figure in &section.figures {
                let _ = writeln!(out, "| {} |", row(figure));
            }
            out.push('\n');
        }
        if let Some(failure) = &section.failure {
            let _ = writeln!(out, "**Not measured:** {}\n", failure.trim());
        }
        for note in &section.notes {
            let _ = writeln!(out, "{}\n", note.trim_end());
        }
        let _ = writeln!(out, "_Part run time: {:.0} s._\n", section.seconds);
    }
    out
}

/// How far over a limit a value is: "12% over" below 2×, "3.4× the limit" above.
fn over(factor: f64) -> String {
    if factor < 2.0 {
        format!("{:.0}% over", (factor - 1.0) * 100.0)
    } else {
        format!("{factor:.1}× the limit")
    }
}

fn row(figure: &Figure) -> String {
    let reference = figure.reference.map_or_else(
        || "—".into(),
        |r| format!("{} {}", fmt_number(r), figure.unit),
    );
    let ratio = figure.ratio().map_or_else(|| "—".into(), fmt_ratio);
    format!(
        "{} | {} {} | {} | {} | {} | {}",
        figure.what,
        fmt_number(figure.ours),
        figure.unit,
        reference,
        ratio,
        figure.target_text(),
        figure.verdict()
    )
}

fn short_title(title: &str) -> &str {
    title.split(':').next().unwrap_or(title)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Three significant digits, without exponent for the ranges we print.
pub fn fmt_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude >= 0.01 {
        format!("{value:.3}")
    } else if magnitude == 0.0 {
        "0".into()
    } else {
        format!("{value:.5}")
    }
}

fn fmt_ratio(ratio: f64) -> String {
    if ratio >= 1.0 {
        fmt_number(ratio)
    } else {
        format!("{} (1/{})", fmt_number(ratio), fmt_number(1.0 / ratio))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_targets_are_judged_both_ways() {
        let fast = Figure::cost("Join p50", "ms", 0.2)
            .against(28.0)
            .target(Target::RatioAtMost(1.0 / 50.0));
        assert_eq!(fast.met(), Some(true));
        let slow = Figure::cost("Join p50", "ms", 1.0)
            .against(28.0)
            .target(Target::RatioAtMost(1.0 / 50.0));
        assert_eq!(slow.met(), Some(false));
        assert!(slow.verdict().contains("missed"));
    }

    #[test]
    fn rates_gain_when_higher() {
        let rate = Figure::rate("calls/s", "1/s", 3000.0)
            .against(500.0)
            .target(Target::GainAtLeast(3.0));
        assert_eq!(rate.gain(), Some(6.0));
        assert_eq!(rate.met(), Some(true));
    }

    #[test]
    fn a_target_without_reference_is_not_judged() {
        let figure = Figure::cost("x", "ms", 1.0).target(Target::RatioAtMost(0.5));
        assert_eq!(figure.met(), None);
        assert_eq!(figure.verdict(), "not measured");
    }

    #[test]
    fn failures_are_listed_in_the_summary() {
        let machine = Machine {
            date: "d".into(),
            cpus: "c".into(),
            memory: "m".into(),
            kernel: "k".into(),
            load: "l".into(),
            load_end: "l".into(),
            commit: "c".into(),
        };
        let mut section = Section::new("2. Container start: x", "how");
        section.failure = Some("dockerd is not running".into());
        let text = render(&machine, &[section], 1.0);
        assert!(text.contains("| 2. Container start | **not measured** |"));
        assert!(text.contains("**Not measured:** dockerd is not running"));
    }
}
