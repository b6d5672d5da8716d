//! Docker-style health checks for containerd, which has none: the check is kept in a
//! container label, and probes run as exec processes in the container when `inspect` finds
//! one due (at most once per interval), so `wait_healthy` works as with Docker. The verdict
//! follows Docker's rules: `starting` until a probe passes, `healthy` after one does,
//! `unhealthy` after `retries` failures in a row outside the start period. It is kept in
//! memory per task (a restarted agent or task starts again from `starting`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::runtime::HealthStatus;
use crate::spec::HealthCheck;

/// The container label holding the health check.
pub const LABEL_HEALTHCHECK: &str = "org.openstack.trove.netiso/healthcheck";

/// The check as a label value.
pub fn encode(check: &HealthCheck) -> String {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    json!({
        "test": check.test,
        "interval_ms": millis(check.interval),
        "timeout_ms": millis(check.timeout),
        "retries": check.retries,
        "start_period_ms": millis(check.start_period),
    })
    .to_string()
}

/// The check from a label value; `None` when absent, malformed or `["NONE"]`.
pub fn decode(text: &str) -> Option<HealthCheck> {
    let value: Value = serde_json::from_str(text).ok()?;
    let millis = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
    };
    let test: Vec<String> = value
        .get("test")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let check = HealthCheck {
        test,
        interval: millis("interval_ms")?,
        timeout: millis("timeout_ms")?,
        retries: u32::try_from(value.get("retries")?.as_u64()?).ok()?,
        start_period: millis("start_period_ms")?,
    };
    probe_args(&check).map(|_| check)
}

/// The probe's command line: `CMD` runs its arguments, `CMD-SHELL` runs `/bin/sh -c`;
/// `None` for `NONE` or a malformed test.
pub fn probe_args(check: &HealthCheck) -> Option<Vec<String>> {
    match check.test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, [script])) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script.clone()])
        }
        _ => None,
    }
}

/// Whether a check is acceptable (`NONE` included).
pub fn is_valid(check: &HealthCheck) -> bool {
    probe_args(check).is_some() || check.test == ["NONE"]
}

#[derive(Debug, Clone)]
struct Track {
    pid: u32,
    since: Instant,
    failures: u32,
    last_probe: Option<Instant>,
    status: HealthStatus,
}

/// Per-container probe bookkeeping.
#[derive(Debug, Default)]
pub struct HealthTracker {
    tracks: Mutex<HashMap<String, Track>>,
}

impl HealthTracker {
    /// The cached verdict when no probe is due for this task yet, `None` when one is.
    pub fn cached(
        &self,
        name: &str,
        pid: u32,
        interval: Duration,
        now: Instant,
    ) -> Option<HealthStatus> {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let track = tracks
            .entry(name.to_owned())
            .or_insert_with(|| fresh(pid, now));
        if track.pid != pid {
            *track = fresh(pid, now);
        }
        match track.last_probe {
            Some(last) if now.duration_since(last) < interval => Some(track.status),
            _ => None,
        }
    }

    /// Records a probe's outcome and returns the new verdict.
    pub fn record(
        &self,
        name: &str,
        pid: u32,
        check: &HealthCheck,
        passed: bool,
        now: Instant,
    ) -> HealthStatus {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let track = tracks
            .entry(name.to_owned())
            .or_insert_with(|| fresh(pid, now));
        if track.pid != pid {
            *track = fresh(pid, now);
        }
        track.last_probe = Some(now);
        if passed {
            track.failures = 0;
            track.status = HealthStatus::Healthy;
        } else if now.duration_since(track.since) >= check.start_period {
            track.failures += 1;
            if track.failures >= check.retries.max(1) {
                track.status = HealthStatus::Unhealthy;
            }
        }
        track.status
    }

    /// Forgets a container (removed).
    pub fn forget(&self, name: &str) {
        self.tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

fn fresh(pid: u32, now: Instant) -> Track {
    Track {
        pid,
        since: now,
        failures: 0,
        last_probe: None,
        status: HealthStatus::Starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(test: &[&str]) -> HealthCheck {
        HealthCheck {
            test: test.iter().map(|s| (*s).to_owned()).collect(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            retries: 2,
            start_period: Duration::from_secs(10),
        }
    }

    #[test]
    fn label_round_trip_and_forms() {
        let shell = check(&["CMD-SHELL", "echo ok"]);
        assert_eq!(decode(&encode(&shell)), Some(shell.clone()));
        assert_eq!(
            probe_args(&shell),
            Some(vec!["/bin/sh".into(), "-c".into(), "echo ok".into()])
        );
        assert_eq!(
            probe_args(&check(&["CMD", "true"])),
            Some(vec!["true".into()])
        );
        assert_eq!(decode(&encode(&check(&["NONE"]))), None);
        assert!(is_valid(&check(&["NONE"])));
        assert!(!is_valid(&check(&["CMD"])));
        assert!(!is_valid(&check(&["CMD-SHELL", "a", "b"])));
        assert_eq!(decode("not json"), None);
    }

    #[test]
    fn verdicts_follow_docker() {
        let tracker = HealthTracker::default();
        let c = check(&["CMD", "true"]);
        let t0 = Instant::now();
        assert_eq!(
            tracker.cached("db", 7, c.interval, t0),
            None,
            "first probe is due"
        );
        // Failures within the start period do not count.
        assert_eq!(
            tracker.record("db", 7, &c, false, t0),
            HealthStatus::Starting
        );
        assert_eq!(
            tracker.cached("db", 7, c.interval, t0),
            Some(HealthStatus::Starting)
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            tracker.record("db", 7, &c, false, later),
            HealthStatus::Starting
        );
        assert_eq!(
            tracker.record("db", 7, &c, false, later),
            HealthStatus::Unhealthy
        );
        assert_eq!(
            tracker.record("db", 7, &c, true, later),
            HealthStatus::Healthy
        );
        // A new task starts over.
        assert_eq!(tracker.cached("db", 8, c.interval, later), None);
        assert_eq!(
            tracker.record("db", 8, &c, false, later),
            HealthStatus::Starting
        );
        tracker.forget("db");
        assert_eq!(tracker.cached("db", 8, c.interval, later), None);
    }
}
