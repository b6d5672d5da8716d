//! The harness's command line, and the testbed settings it chooses.

use std::path::PathBuf;

use clap::Parser;
use netiso_testbed::settings::{ScenarioName, Settings};
use netiso_testbed::soak::Segment;

/// `netiso-harness`: builds a simulated Trove guest, drives the agent through real RPC and
/// checks the traffic split; prints a report and exits non-zero on any failure.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Scenarios to run (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<ScenarioName>,
    /// The guest agent binary (default: `trove-guest-agent` beside this program).
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// The docker-hostnic plugin binary (default: `docker-hostnic` beside this program).
    #[arg(long, value_name = "PATH")]
    pub plugin_bin: Option<PathBuf>,
    /// Where per-scenario config directories and logs go (removed afterwards unless
    /// `--keep-logs`).
    #[arg(long, value_name = "DIR", default_value = "/run/trove-netiso/harness")]
    pub work_dir: PathBuf,
    /// Keep the logs of the agent and the plugin (copied to `<work-dir>/logs-<pid>`).
    #[arg(long)]
    pub keep_logs: bool,
    /// Append one JSON line per database the tenant logged in to: `prepare` cast to `healthy`
    /// and to the first login, the agent's and the database's resident memory then (read by
    /// `cargo xtask bench --only prepare`).
    #[arg(long, value_name = "FILE")]
    pub measurements: Option<PathBuf>,
    /// A guest image folder (`cargo xtask guest-image`): runs the VM scenarios on it (all of
    /// them unless `--scenarios` names some).
    #[arg(long, value_name = "DIR")]
    pub vm_image: Option<PathBuf>,
    /// The reference variant of the guest image (`cargo xtask guest-image
    /// --trove-reference`), Trove's own agent in place of ours: `vm-trove-reference` boots it.
    #[arg(long, value_name = "DIR")]
    pub vm_reference_image: Option<PathBuf>,
    /// Runs the chaos soak instead of the scenarios, for about this many minutes (every
    /// fault kind at least once whatever the time), on the three-node RabbitMQ cluster.
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["scenarios", "vm_image"])]
    pub soak_minutes: Option<f64>,
    /// The soak's seed (default: drawn at random and printed, to replay the run).
    #[arg(long, value_name = "N", requires = "soak_minutes")]
    pub seed: Option<u64>,
    /// The soak's segments (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',', requires = "soak_minutes")]
    pub soak_segments: Vec<Segment>,
}

impl Args {
    /// The provisioned layout with this command line's choices.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::provisioned(&self.work_dir);
        if let Some(agent) = &self.agent_bin {
            settings.agent_bin.clone_from(agent);
        }
        if let Some(plugin) = &self.plugin_bin {
            settings.plugin_bin.clone_from(plugin);
        }
        settings.keep_logs = self.keep_logs;
        settings.measurements.clone_from(&self.measurements);
        settings.vm_image.clone_from(&self.vm_image);
        settings
            .vm_reference_image
            .clone_from(&self.vm_reference_image);
        settings
    }

    /// The scenarios to run: the named ones, else every VM scenario when an image is given,
    /// else every simulated one.
    pub fn scenarios(&self) -> Vec<ScenarioName> {
        if self.scenarios.is_empty() && self.vm_image.is_some() {
            ScenarioName::VM.to_vec()
        } else if self.scenarios.is_empty() {
            ScenarioName::ALL.to_vec()
        } else {
            self.scenarios.clone()
        }
    }
}
