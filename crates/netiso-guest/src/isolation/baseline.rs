//! The management baseline recorded when the agent isolates, so that `isolate --verify` run
//! later on its own checks "management interfaces and routes as before" against the state
//! before isolation, not against the state it finds (which would always pass).
//!
//! One small JSON file in the agent's state directory: links, addresses and routes of the
//! management side (no secrets), written atomically (temporary file, fsync, rename), mode 0644.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use netiso_netlink::{MacAddress, Rtnetlink};
use serde::{Deserialize, Serialize};

use super::{
    Invariant, IsolationError, IsolationTarget, ManagementBaseline, VerifyReport, WhenAbsent, plan,
    verify,
};

/// The file's name in the state directory.
pub const BASELINE_FILE: &str = "isolation-baseline.json";
/// Its permissions: readable by all (no secrets), written by root.
const BASELINE_MODE: u32 = 0o644;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedBaseline {
    /// The tenant NIC the baseline was taken around.
    pub tenant_mac: MacAddress,
    /// When it was taken (seconds since the Unix epoch).
    pub recorded_at: u64,
    /// The management side before isolation.
    pub baseline: ManagementBaseline,
}

/// Why the recorded baseline cannot be written or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// Writing the file failed; the previous one (if any) is unchanged.
    #[error("cannot record the isolation baseline in {}: {source}", path.display())]
    Write {
        /// The baseline file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but cannot be read or parsed.
    #[error("the isolation baseline {} is unusable: {reason}", path.display())]
    Unreadable {
        /// The baseline file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading the namespace failed.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
}

/// The baseline file of `state_dir`.
pub fn baseline_path(state_dir: &Path) -> PathBuf {
    state_dir.join(BASELINE_FILE)
}

/// Records `baseline`, taken around `target`, in `state_dir` (created if needed).
pub fn record(
    state_dir: &Path,
    target: &IsolationTarget,
    baseline: &ManagementBaseline,
) -> Result<PathBuf, BaselineError> {
    let path = baseline_path(state_dir);
    let error = |source| BaselineError::Write {
        path: path.clone(),
        source,
    };
    let recorded = RecordedBaseline {
        tenant_mac: target.mac,
        recorded_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        baseline: baseline.clone(),
    };
    let mut contents = serde_json::to_vec_pretty(&recorded)
        .map_err(std::io::Error::other)
        .map_err(error)?;
    contents.push(b'\n');
    netiso_config::atomic_file::replace(&path, &contents, BASELINE_MODE).map_err(error)?;
    Ok(path)
}

/// The recorded baseline for `target`; `None` when none was recorded. A baseline taken around
/// another tenant MAC (the port changed since) is unusable, not silently used.
pub fn load(
    state_dir: &Path,
    target: &IsolationTarget,
) -> Result<Option<RecordedBaseline>, BaselineError> {
    let path = baseline_path(state_dir);
    let unreadable = |reason: String| BaselineError::Unreadable {
        path: path.clone(),
        reason,
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let recorded: RecordedBaseline =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if recorded.tenant_mac != target.mac {
        return Err(unreadable(format!(
            "it was taken around tenant NIC {}, not {} (from {})",
            recorded.tenant_mac,
            target.mac,
            target.source.display()
        )));
    }
    Ok(Some(recorded))
}

/// A recorded baseline that cannot be used (torn by a crash, or taken around another tenant
/// NIC) is renamed `<file>.corrupt-<unix time>`, so that no reader trusts it and nothing is
/// lost for a post-mortem; the new name and the reason, when it was moved.
pub fn set_aside_if_unusable(
    state_dir: &Path,
    target: &IsolationTarget,
) -> Option<Result<(PathBuf, String), BaselineError>> {
    let reason = match load(state_dir, target) {
        Ok(_) => return None,
        Err(BaselineError::Unreadable { reason, .. }) => reason,
        Err(other) => return Some(Err(other)),
    };
    let path = baseline_path(state_dir);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let kept_as = path.with_file_name(format!("{BASELINE_FILE}.corrupt-{seconds}"));
    Some(
        std::fs::rename(&path, &kept_as)
            .map(|()| (kept_as, reason))
            .map_err(|source| BaselineError::Write { path, source }),
    )
}

/// Checks every invariant for `target`, the management ones against the baseline recorded in
/// `state_dir`. Without a usable recorded baseline, the two management invariants fail with
/// the reason (the tenant NIC's own invariants are still checked).
pub fn verify_recorded(
    rtnl: &dyn Rtnetlink,
    target: &IsolationTarget,
    state_dir: &Path,
) -> Result<VerifyReport, IsolationError> {
    let missing = match load(state_dir, target) {
        Ok(Some(recorded)) => return verify(rtnl, target, &recorded.baseline),
        Ok(None) => format!(
            "no baseline recorded in {} (the agent records it when it isolates, as does \
             `isolate --apply`): cannot tell what changed",
            baseline_path(state_dir).display()
        ),
        Err(BaselineError::Isolation(e)) => return Err(e),
        Err(e) => e.to_string(),
    };
    let current = plan(rtnl, target, WhenAbsent::Isolated)?.baseline;
    let mut report = verify(rtnl, target, &current)?;
    for check in &mut report.checks {
        if matches!(
            check.invariant,
            Invariant::ManagementLinksUnchanged | Invariant::ManagementRoutesUnchanged
        ) {
            check.passed = false;
            check.detail.clone_from(&missing);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn target(mac: &str) -> IsolationTarget {
        IsolationTarget::new(mac.parse().unwrap(), "/etc/trove/eth1.json")
    }

    #[test]
    fn a_recorded_baseline_is_read_back_for_its_mac_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ours = target("fa:16:3e:12:34:56");
        assert!(
            load(&state, &ours).unwrap().is_none(),
            "nothing recorded yet"
        );
        let mut baseline = ManagementBaseline::default();
        baseline.routes.push(netiso_netlink::fake::route(
            "10.77.9.0/24",
            Some("10.77.1.1"),
            2,
            None,
        ));
        let path = record(&state, &ours, &baseline).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(load(&state, &ours).unwrap().unwrap().baseline, baseline);
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");

        let other = load(&state, &target("fa:16:3e:00:00:01")).unwrap_err();
        assert!(other.to_string().contains("fa:16:3e:12:34:56"), "{other}");
        std::fs::write(&path, "{\"tenant_mac\": ").unwrap();
        let corrupt = load(&state, &ours).unwrap_err();
        assert!(
            corrupt.to_string().contains("isolation-baseline.json"),
            "{corrupt}"
        );
    }

    #[test]
    fn a_torn_baseline_is_set_aside_and_a_good_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ours = target("fa:16:3e:12:34:56");
        assert!(
            set_aside_if_unusable(&state, &ours).is_none(),
            "nothing recorded"
        );
        let path = record(&state, &ours, &ManagementBaseline::default()).unwrap();
        assert!(
            set_aside_if_unusable(&state, &ours).is_none(),
            "a good one stays"
        );
        assert!(path.exists());

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let (kept_as, reason) = set_aside_if_unusable(&state, &ours).unwrap().unwrap();
        assert!(
            !path.exists(),
            "the torn file no longer has the baseline's name"
        );
        assert_eq!(
            std::fs::read_to_string(&kept_as).unwrap(),
            text[..text.len() / 2]
        );
        assert!(
            kept_as.to_string_lossy().contains(".corrupt-"),
            "{}",
            kept_as.display()
        );
        assert!(!reason.is_empty());
        assert!(load(&state, &ours).unwrap().is_none());
    }
}
