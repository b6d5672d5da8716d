//! The chaos soak (`netiso-harness --soak-minutes M --seed S`, `cargo xtask soak`): on the
//! simulated guest, isolated with Docker and with containerd and then bridged, a seeded
//! schedule of faults while the control plane sends requests and casts and the tenant keeps
//! connecting; after every step the invariants are checked. See docs/reliability.md.

// The progress lines on standard output are the soak's report, as the scenarios' report is.
#![allow(clippy::print_stdout)]

mod faults;
mod invariants;
mod schedule;
mod tally;

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::json;

use self::faults::Injected;
use self::invariants::{Failure, MARKER_METHOD};
pub use self::schedule::Segment;
use self::schedule::{FaultKind, Operation, Schedule, Step};
pub use self::tally::Tally;
use self::tally::Violation;
use crate::controller::Controller;
use crate::guest::{Guest, PREPARED_MAX_CONNECTIONS, SERVER_ID};
use crate::guest_files::RuntimeKind;
use crate::scenarios::{AGENT_START_LIMIT, PREPARE_LIMIT, TestImage, plan, prepare, publish_image};
use crate::settings::{Broker, Settings};
use crate::sql::mariadb_config;

/// How long the guest may take to be whole again after a fault: the agent answering and the
/// tenant reaching the database (a dockerd or node restart, a database restart included).
const RECOVERY_LIMIT: Duration = Duration::from_secs(180);
/// How long the VM may hold a tenant address or route that the OS put there before the
/// agent's guard takes it away.
const TENANT_WINDOW_LIMIT: Duration = Duration::from_secs(2);
/// How long a request sent to the recovered guest may take (a database restart included).
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// How long the agent's log may lag behind the casts the broker confirmed.
const CASTS_SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Marker casts sent while a fault holds, and after recovery.
const CASTS_DURING: usize = 2;
const CASTS_AFTER: usize = 1;
/// The agent's heartbeat interval in the soak: a database that stopped by itself is started
/// again at the next heartbeat, so this bounds that recovery (Trove's default is 60 s).
const HEARTBEAT_SECONDS: u64 = 15;
/// oslo's `heartbeat_timeout_threshold` default, for a broker that does not set one.
const OSLO_HEARTBEAT_THRESHOLD: u16 = 60;
/// `RestartSec` of the agent's systemd unit (contrib/systemd/trove-guest-agent.service).
const RESTART_SEC: Duration = Duration::from_secs(5);
/// The agent's state directory is a tmpfs this large, so the full-disk fault fills it.
const STATE_DIR_BYTES: u64 = 4 << 20;

/// What to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Wall time to spend, split evenly between the segments; each segment runs at least its
    /// first round (every fault once) whatever the time.
    pub duration: Duration,
    /// The schedule's seed.
    pub seed: u64,
    /// The segments, in order.
    pub segments: Vec<Segment>,
}

/// Runs the soak on the cluster broker and returns what it counted.
pub async fn run(settings: &Settings, options: &SoakOptions) -> Tally {
    let mut tally = Tally::default();
    if let Err(err) = netiso_messaging::test_support::cluster::check_reachable() {
        tally.violation(Violation {
            at: "start".to_owned(),
            invariant: "cluster-reachable",
            detail: err,
        });
        return tally;
    }
    let settings = Settings {
        broker: Broker::cluster(),
        ..settings.clone()
    };
    let per_segment = options.duration / u32::try_from(options.segments.len().max(1)).unwrap_or(1);
    for (serial, segment) in options.segments.iter().enumerate() {
        let serial = 100 + u32::try_from(serial).unwrap_or(0);
        println!(
            "soak: segment {} (seed {}, {} s)",
            segment.as_str(),
            options.seed,
            per_segment.as_secs()
        );
        if let Err(err) = run_segment(
            &settings,
            *segment,
            serial,
            options.seed,
            per_segment,
            &mut tally,
        )
        .await
        {
            tally.violation(Violation {
                at: segment.as_str().to_owned(),
                invariant: "segment-runs",
                detail: format!("{err:#}"),
            });
        }
    }
    tally
}

/// One segment's guest, from set-up to teardown.
struct SegmentRun<'a> {
    settings: &'a Settings,
    segment: Segment,
    guest: Guest,
    image: TestImage,
    casts: Casts,
}

/// The marker casts of a segment: sent, confirmed by the broker, and the serial of the last.
#[derive(Debug, Default)]
struct Casts {
    attempted: u64,
    confirmed: u64,
    serial: u64,
}

/// Casts `count` marker casts; counts those the broker confirmed.
async fn send_markers(controller: &Controller, casts: &mut Casts, count: usize) {
    for _ in 0..count {
        casts.serial += 1;
        casts.attempted += 1;
        let args = json!({"databases": [{"_name": format!("soak_{}", casts.serial)}]});
        if controller.cast(MARKER_METHOD, args).await.is_ok() {
            casts.confirmed += 1;
        }
    }
}

/// What the fault part of a step came to.
enum PhaseOutcome {
    /// The fault did not apply to the guest's state; nothing was done.
    NotApplicable(String),
    /// The fault could not be injected.
    NotInjected(anyhow::Error),
    /// Injected: what failed on the way, how long recovery took (`None`: it did not), and
    /// how long the VM held a tenant address (the DHCP fault).
    Injected {
        failures: Vec<Failure>,
        recovered: Option<Duration>,
        tenant_window: Option<Duration>,
    },
}

/// The fault part of a step: inject, cast while it holds, release, recover.
struct FaultPhase<'a> {
    settings: &'a Settings,
    guest: &'a mut Guest,
    controller: &'a Controller,
    casts: &'a mut Casts,
    tag: &'a str,
    step: &'a Step,
}

impl FaultPhase<'_> {
    async fn run(&mut self) -> PhaseOutcome {
        let started = Instant::now();
        let injected =
            match faults::inject(self.settings, self.guest, self.controller, self.step).await {
                Ok(Injected::NotApplicable(why)) => return PhaseOutcome::NotApplicable(why),
                Ok(injected) => injected,
                Err(err) => return PhaseOutcome::NotInjected(err),
            };
        let mut failures = Vec::new();
        let mut tenant_window = None;
        if let Injected::TenantWindow(window) = &injected {
            tenant_window = Some(*window);
            if *window > TENANT_WINDOW_LIMIT {
                failures.push((
                    "tenant-window-bounded",
                    format!(
                        "the VM held the tenant address or route for {} ms",
                        window.as_millis()
                    ),
                ));
            }
        }
        send_markers(self.controller, self.casts, CASTS_DURING).await;
        let threshold = Duration::from_secs(u64::from(
            self.settings
                .broker
                .heartbeat_timeout_threshold
                .unwrap_or(OSLO_HEARTBEAT_THRESHOLD),
        ));
        tokio::time::sleep(faults::hold(self.step, threshold)).await;
        if let Err(err) = injected.release() {
            failures.push(("fault-released", format!("{err:#}")));
        }
        if tenant_window.is_some()
            && let Err(err) =
                run_operation(self.controller, Operation::StartWithConfChanges, self.tag).await
        {
            failures.push((
                "request-served",
                format!("start_db_with_conf_changes after the DHCP: {err:#}"),
            ));
        }
        let recovered = match self.recover(database_wanted_at_recovery(self.step)).await {
            Ok(()) => Some(started.elapsed()),
            Err(err) => {
                failures.push(("recovered-within-bound", format!("{err:#}")));
                None
            }
        };
        PhaseOutcome::Injected {
            failures,
            recovered,
            tenant_window,
        }
    }

    /// The agent answers and, when `database_wanted`, the tenant reaches the database. Plays
    /// systemd meanwhile: an agent that exited is started again after the unit's `RestartSec`.
    async fn recover(&mut self, database_wanted: bool) -> Result<()> {
        let deadline = Instant::now() + RECOVERY_LIMIT;
        loop {
            if self.guest.agent_exited() {
                println!(
                    "soak: the agent exited; starting it again in {} s as systemd would (last lines: {})",
                    RESTART_SEC.as_secs(),
                    self.guest.agent_log_tail()
                );
                tokio::time::sleep(RESTART_SEC).await;
                self.guest.start_agent()?;
            }
            match self
                .controller
                .call("rpc_ping", json!({}), Duration::from_secs(3))
                .await
            {
                Ok(serde_json::Value::Bool(true)) => break,
                Ok(other) if Instant::now() >= deadline => {
                    return Err(anyhow!("rpc_ping answered {other}"));
                }
                Err(err) if Instant::now() >= deadline => {
                    return Err(err.context(format!(
                        "rpc_ping unanswered for {RECOVERY_LIMIT:?}; agent log: {}",
                        self.guest.agent_log_tail()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        if database_wanted {
            invariants::database_reachable(self.guest, RECOVERY_LIMIT).await?;
        }
        Ok(())
    }
}

async fn run_segment(
    settings: &Settings,
    segment: Segment,
    serial: u32,
    seed: u64,
    budget: Duration,
    tally: &mut Tally,
) -> Result<()> {
    let (image, _) = publish_image(settings, serial).await?;
    let runtime = match segment {
        Segment::ContainerdIsolated => RuntimeKind::Containerd,
        Segment::DockerIsolated | Segment::DockerBridged => RuntimeKind::Docker,
    };
    let plan = crate::guest::GuestPlan {
        image_repository: image.repository.clone(),
        image_tag: image.tag.clone(),
        state_dir_bytes: Some(STATE_DIR_BYTES),
        heartbeat_seconds: Some(HEARTBEAT_SECONDS),
        ..plan(
            &format!("soak-{}", segment.as_str()),
            serial,
            runtime,
            segment.isolated(),
        )
    };
    let (guest, _) = Guest::start(settings, &plan).await?;
    let mut run = SegmentRun {
        settings,
        segment,
        guest,
        image,
        casts: Casts::default(),
    };
    let outcome = run.steps(seed, budget, tally).await;
    let SegmentRun { guest, image, .. } = run;
    let removed = guest.teardown().await;
    drop(image);
    outcome?;
    removed.map(|_| ())
}

impl SegmentRun<'_> {
    async fn steps(&mut self, seed: u64, budget: Duration, tally: &mut Tally) -> Result<()> {
        self.guest
            .controller()
            .ping_until_answered(AGENT_START_LIMIT)
            .await
            .map_err(|e| e.context(format!("agent log: {}", self.guest.agent_log_tail())))?;
        prepare(&self.guest).await?;
        invariants::database_reachable(&self.guest, RECOVERY_LIMIT).await?;
        let started = Instant::now();
        let schedule = Schedule::new(seed, self.segment);
        let first_round = schedule.first_round_len();
        for (index, step) in schedule.enumerate() {
            if index >= first_round && started.elapsed() >= budget {
                break;
            }
            self.step(index, &step, tally).await;
        }
        Ok(())
    }

    fn at(&self, index: usize) -> String {
        format!("{}#{index}", self.segment.as_str())
    }

    async fn step(&mut self, index: usize, step: &Step, tally: &mut Tally) {
        let at = self.at(index);
        let agent_mark = log_len(&self.guest.files.log("agent"));
        let plugin_mark = log_len(&self.guest.files.log("plugin"));
        let Some(controller) = self.guest.controller.take() else {
            tally.violation(Violation {
                at,
                invariant: "controller-present",
                detail: "the controller is gone".to_owned(),
            });
            return;
        };
        let tag = self.image.tag.clone();
        let mut phase = FaultPhase {
            settings: self.settings,
            guest: &mut self.guest,
            controller: &controller,
            casts: &mut self.casts,
            tag: &tag,
            step,
        };
        // With `during`, the request is sent first and the fault lands while it is in
        // flight; recovery is timed from the fault, whatever the request does meanwhile.
        let (outcome, in_flight) = match step.during {
            None => (phase.run().await, None),
            Some(delay) => {
                let (request, outcome) =
                    tokio::join!(run_operation(&controller, step.operation, &tag), async {
                        tokio::time::sleep(delay).await;
                        phase.run().await
                    });
                (outcome, Some(request))
            }
        };
        self.guest.controller = Some(controller);
        let (mut failures, recovered) = match outcome {
            PhaseOutcome::NotApplicable(why) => {
                println!("soak {at}: {} not applicable: {why}", step.fault.as_str());
                return;
            }
            PhaseOutcome::NotInjected(err) => {
                println!(
                    "soak {at}: {} could not be injected: {err:#}",
                    step.fault.as_str()
                );
                tally.violation(Violation {
                    at,
                    invariant: "fault-injected",
                    detail: format!("{}: {err:#}", step.fault.as_str()),
                });
                return;
            }
            PhaseOutcome::Injected {
                failures,
                recovered,
                tenant_window,
            } => {
                tally.injected(step.fault);
                if let Some(window) = tenant_window {
                    tally.tenant_window(window);
                }
                if let Some(took) = recovered {
                    tally.recovered(step.fault, took);
                }
                (failures, recovered)
            }
        };
        let request = match in_flight {
            None => self.operation(step.operation).await,
            Some(Ok(())) => Ok(()),
            Some(Err(first)) => {
                println!(
                    "soak {at}: {} in flight failed ({first:#}); retrying",
                    step.operation.as_str()
                );
                self.operation(step.operation).await
            }
        };
        if let Err(err) = request {
            failures.push((
                "request-served",
                format!("{}: {err:#}", step.operation.as_str()),
            ));
        }
        if let Err(err) = invariants::database_reachable(&self.guest, RECOVERY_LIMIT).await {
            failures.push((
                "database-reachable",
                format!("after {}: {err:#}", step.operation.as_str()),
            ));
        }
        send_markers(self.guest.controller(), &mut self.casts, CASTS_AFTER).await;
        failures.extend(
            invariants::placement(self.settings, &self.guest, self.segment.isolated()).await,
        );
        failures.extend(invariants::state_files_parse(&self.guest));
        failures.extend(self.casts_settled(tally).await);
        let new_agent = log_since(&self.guest.files.log("agent"), agent_mark);
        let new_plugin = log_since(&self.guest.files.log("plugin"), plugin_mark);
        let (log_name, new_log) = if matches!(
            step.fault,
            FaultKind::PluginKill | FaultKind::PluginRestart | FaultKind::PluginStateCorrupt
        ) {
            ("plugin", &new_plugin)
        } else {
            ("agent", &new_agent)
        };
        if agent_can_see(step) && !invariants::fault_logged(expected_log(step.fault), new_log) {
            failures.push((
                "fault-logged",
                format!(
                    "the {log_name}'s log says nothing of {} (wanted one of {:?})",
                    step.fault.as_str(),
                    expected_log(step.fault)
                ),
            ));
        }
        println!(
            "soak {at}: {}{} with {}: {}{}",
            step.fault.as_str(),
            step.during
                .map_or_else(String::new, |d| format!(" (during, +{} ms)", d.as_millis())),
            step.operation.as_str(),
            recovered.map_or_else(
                || "not recovered".to_owned(),
                |t| format!("recovered in {} ms", t.as_millis())
            ),
            if failures.is_empty() {
                String::new()
            } else {
                format!(", {} violations", failures.len())
            }
        );
        for (invariant, detail) in failures {
            println!("soak {at}:   violation {invariant}: {detail}");
            tally.violation(Violation {
                at: at.clone(),
                invariant,
                detail,
            });
        }
    }

    async fn operation(&self, operation: Operation) -> Result<()> {
        run_operation(self.guest.controller(), operation, &self.image.tag).await
    }

    /// Waits until the agent's log shows as many marker casts run as the broker confirmed:
    /// more than were sent is a request run twice, fewer than confirmed once settled is a
    /// lost cast.
    async fn casts_settled(&self, tally: &mut Tally) -> Vec<Failure> {
        let log = self.guest.files.log("agent");
        let deadline = Instant::now() + CASTS_SETTLE_LIMIT;
        let mut run = 0;
        while Instant::now() < deadline {
            run = invariants::marker_casts_run(&std::fs::read_to_string(&log).unwrap_or_default());
            if run >= self.casts.confirmed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut failures = Vec::new();
        if run > self.casts.attempted {
            failures.push((
                "no-request-ran-twice",
                format!("{run} marker casts run, {} sent", self.casts.attempted),
            ));
        }
        if run < self.casts.confirmed {
            failures.push((
                "no-confirmed-cast-lost",
                format!(
                    "{run} marker casts run, {} confirmed by the broker",
                    self.casts.confirmed
                ),
            ));
        }
        tally.set_casts(self.segment, self.casts.confirmed, run);
        failures
    }
}

/// Sends `operation` as Trove's taskmanager does (each is a call).
async fn run_operation(controller: &Controller, operation: Operation, tag: &str) -> Result<()> {
    let start_args = || {
        json!({
            "config_contents": mariadb_config(SERVER_ID, PREPARED_MAX_CONNECTIONS),
            "ds_version": tag,
        })
    };
    match operation {
        Operation::RpcPing => {
            controller
                .call("rpc_ping", json!({}), Duration::from_secs(10))
                .await?;
        }
        Operation::Restart => {
            controller.call("restart", json!({}), REQUEST_LIMIT).await?;
        }
        Operation::StopThenStart => {
            controller.call("stop_db", json!({}), REQUEST_LIMIT).await?;
            controller
                .call("start_db_with_conf_changes", start_args(), PREPARE_LIMIT)
                .await?;
        }
        Operation::StartWithConfChanges => {
            controller
                .call("start_db_with_conf_changes", start_args(), PREPARE_LIMIT)
                .await?;
        }
    }
    Ok(())
}

/// Whether recovery from the fault includes the database: a `stop_db` cut short by the fault
/// leaves the database down, as asked, and it is required again only once the step retries
/// its request.
fn database_wanted_at_recovery(step: &Step) -> bool {
    !(step.during.is_some() && step.operation == Operation::StopThenStart)
}

/// Whether the fault is sure to leave the agent something to see. A runtime daemon killed
/// while the step's request needs no runtime (`rpc_ping`; the MySQL heartbeat asks the
/// server's socket) may not: containerd's shims keep the database running, a bridged
/// database comes back with dockerd by its restart policy, and the client reconnects unseen
/// on the next call. The agent does not watch the runtime's event stream (yet). Every other
/// fault reaches the agent or the plugin.
fn agent_can_see(step: &Step) -> bool {
    !(matches!(
        step.fault,
        FaultKind::ContainerdKill | FaultKind::DockerdKill
    ) && step.operation == Operation::RpcPing)
}

/// The log lines that show the agent (the plugin, for the plugin's faults) saw the fault
/// and what it did.
fn expected_log(kind: FaultKind) -> &'static [&'static str] {
    match kind {
        FaultKind::AgentKill
        | FaultKind::AgentRestart
        | FaultKind::AgentStateCorrupt
        | FaultKind::StateDirFull => &["RPC server consuming"],
        FaultKind::PluginKill | FaultKind::PluginRestart => &["docker-hostnic is serving"],
        FaultKind::PluginStateCorrupt => &["the state file was corrupt"],
        FaultKind::DockerdKill | FaultKind::ContainerdKill => &["runtime", "docker", "containerd"],
        FaultKind::BrokerNodeKill | FaultKind::BrokerStall => &[
            "connection to broker lost, reconnecting",
            "cannot connect to broker",
            "connected to broker",
            "broker closed the connection",
            "broker cancelled a consumer, re-subscribing",
            "consumer lost its channel or a consumer, re-subscribing",
            "consumer re-subscribed",
        ],
        FaultKind::TenantDhcp => &["the tenant NIC came back to the VM and was isolated again"],
    }
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text appended to `path` since it was `mark` bytes long.
fn log_since(path: &std::path::Path, mark: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(mark).unwrap_or(usize::MAX).min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

/// Runs the soak and prints its report; how many things failed (the violations, plus one
/// when a fault kind of the chosen segments was never injected).
pub async fn run_and_report(settings: &Settings, options: &SoakOptions) -> usize {
    let tally = run(settings, options).await;
    print!("{}", tally.render(options.seed));
    let wanted: std::collections::BTreeSet<FaultKind> = options
        .segments
        .iter()
        .flat_map(|s| s.faults().iter().copied())
        .collect();
    let injected = tally.kinds_injected();
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|kind| !injected.contains(kind))
        .map(FaultKind::as_str)
        .collect();
    if missing.is_empty() {
        tally.violations().len()
    } else {
        println!(
            "soak: FAILED: fault kinds never injected: {}",
            missing.join(", ")
        );
        tally.violations().len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(fault: FaultKind, operation: Operation, during: bool) -> Step {
        Step {
            fault,
            operation,
            during: during.then_some(Duration::from_millis(100)),
            hold_seconds: 0,
        }
    }

    #[test]
    fn only_a_stop_cut_short_excuses_the_database_from_recovery() {
        let cut_short = step(FaultKind::DockerdKill, Operation::StopThenStart, true);
        assert!(!database_wanted_at_recovery(&cut_short));
        for (operation, during) in [
            (Operation::StopThenStart, false),
            (Operation::Restart, true),
            (Operation::StartWithConfChanges, true),
            (Operation::RpcPing, false),
        ] {
            assert!(database_wanted_at_recovery(&step(
                FaultKind::DockerdKill,
                operation,
                during
            )));
        }
    }

    #[test]
    fn only_a_runtime_daemon_killed_under_a_ping_may_go_unseen() {
        assert!(!agent_can_see(&step(
            FaultKind::ContainerdKill,
            Operation::RpcPing,
            false
        )));
        assert!(agent_can_see(&step(
            FaultKind::ContainerdKill,
            Operation::Restart,
            false
        )));
        assert!(!agent_can_see(&step(
            FaultKind::DockerdKill,
            Operation::RpcPing,
            false
        )));
        assert!(agent_can_see(&step(
            FaultKind::PluginKill,
            Operation::RpcPing,
            false
        )));
    }
}
