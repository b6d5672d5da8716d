//! Retrying a failed start-up isolation (the tenant NIC not there yet, a netlink step that
//! failed) with capped exponential backoff, while the database stays down and RPC is served.
//!
//! The database gate stays pending meanwhile: `prepare` waits for the outcome, other
//! database operations are refused with the reason. Success isolates, records the baseline,
//! re-checks that the control plane is not routed through the tenant NIC, starts the guard
//! and opens the gate; when the attempts run out the gate refuses for good (`failed to
//! spawn`, as an isolation failure always did).

use std::sync::Arc;
use std::time::Duration;

use netiso_netlink::NetlinkHandle;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{
    AgentConfig, IsolationOutcome, isolate_at_startup, log_guard_reports, record_baseline,
    run_preflight,
};
use crate::gate::GateControl;
use crate::isolation::{Guard, GuardOptions, IsolationTarget};
use crate::preflight::PreflightFailure;

/// How a failed start-up isolation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Pause after the first failure; doubled after each further one.
    pub initial_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
    /// Attempts in all, the one at start-up included; then the database is refused.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s doubling to 60 s, 15 attempts: about 9 minutes of pauses, under Trove's wait for a new
    /// instance to become active (`usage_timeout`).
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 15,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts (at least one), pausing `initial_delay` after the
    /// first failure and doubling up to `max_delay`.
    pub fn new(initial_delay: Duration, max_delay: Duration, max_attempts: u32) -> Self {
        Self {
            initial_delay,
            max_delay,
            max_attempts: max_attempts.max(1),
        }
    }

    /// The pause after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// What the retry task needs.
pub(super) struct Retry {
    pub rtnl: Arc<NetlinkHandle>,
    pub target: IsolationTarget,
    pub config: AgentConfig,
    pub policy: RetryPolicy,
    pub preflight_timeout: Duration,
    pub control: GateControl,
    pub stop: watch::Receiver<bool>,
}

/// Retries after the start-up attempt failed with `first_error`; keeps the guard it starts
/// until `stop`.
pub(super) async fn run(retry: Retry, first_error: String) {
    let Retry {
        rtnl,
        target,
        config,
        policy,
        preflight_timeout,
        control,
        mut stop,
    } = retry;
    let mut last_error = first_error;
    let mut attempt = 1;
    loop {
        if attempt >= policy.max_attempts {
            error!(attempts = attempt, error = %last_error, "isolation failed: no database will be started on this VM");
            control.refuse(format!("isolation: {last_error} ({attempt} attempt(s))"));
            return;
        }
        let delay = policy.delay_after(attempt);
        warn!(attempt, of = policy.max_attempts, retry_in_ms = delay.as_millis() as u64, error = %last_error, "isolation failed; the database stays down until it succeeds");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        attempt += 1;
        match isolate_at_startup(Arc::clone(&rtnl), &target, &config).await {
            IsolationOutcome::Applied(report) => {
                info!(mac = %target.mac, attempt, changes = report.changes.len(), "tenant NIC isolated from the VM after retrying");
                record_baseline(&config, &target, &report);
                break;
            }
            IsolationOutcome::HeldByContainer(name) => {
                info!(mac = %target.mac, attempt, container = %name, "the tenant NIC is inside the database container");
                break;
            }
            IsolationOutcome::Failed(reason) => {
                control.still_pending(reason.clone());
                last_error = reason;
            }
        }
    }
    // The preflight at start-up ran with the NIC not isolated: check again.
    let report = run_preflight(&config, &*rtnl, Some(target.mac), preflight_timeout).await;
    let through_tenant: Vec<String> = report
        .failures()
        .filter(|f| matches!(f, PreflightFailure::ThroughTenantNic { .. }))
        .map(ToString::to_string)
        .collect();
    if !through_tenant.is_empty() {
        control.refuse(format!("preflight: {}", through_tenant.join("; ")));
        return;
    }
    let guard = match Guard::start(rtnl, target.clone(), GuardOptions::default()) {
        Ok(guard) => guard,
        Err(e) => {
            error!(error = %e, "cannot start the isolation guard: no database will be started");
            control.refuse(format!("isolation guard: {e}"));
            return;
        }
    };
    log_guard_reports(&guard);
    info!(mac = %target.mac, "isolation guard running; the database may start");
    control.open();
    let _ = stop.wait_for(|stop| *stop).await;
    guard.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=9).map(|a| policy.delay_after(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(60));
        let total: Duration = (1..policy.max_attempts)
            .map(|a| policy.delay_after(a))
            .sum();
        assert_eq!(total.as_secs(), 543, "about nine minutes in all");
    }
}
