//! The invariants the soak checks after every step, each read from the guest itself (the
//! kernel's view of the VM's namespace and the container's, the tenant's connection, the
//! files on disk, the agent's log), never from what the agent says of itself.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::guest::Guest;
use crate::guest_files::DATABASE_PORT;
use crate::net::{GUEST_TENANT_ADDR, connect_in, mariadb_greeting};
use crate::probes::{GuestView, container_links};
use crate::settings::{DATABASE_CONTAINER, Settings};

/// The agent's log line for a refused (unimplemented) method, one per delivery: the soak's
/// marker casts (`create_database`, which Trove casts and this agent refuses) are counted by it.
pub const REFUSED_LINE: &str = "refused a method this agent does not implement";
/// The method of the marker casts.
pub const MARKER_METHOD: &str = "create_database";

/// One invariant that failed: its name and what was seen.
pub type Failure = (&'static str, String);

/// The VM holds no tenant address or route, and the tenant NIC is in exactly one place:
/// isolated, in the database container (the database runs); bridged, in the VM.
pub async fn placement(settings: &Settings, guest: &Guest, isolated: bool) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mac = guest.tenant().mac;
    let view = match GuestView::read(&settings.guest_netns) {
        Ok(view) => view,
        Err(err) => return vec![("vm-readable", format!("{err:#}"))],
    };
    let in_vm = view.link_with_mac(mac).map(|l| l.index);
    let in_container = container_links(guest.runtime.as_ref(), DATABASE_CONTAINER)
        .await
        .is_ok_and(|links| links.iter().any(|l| l.mac == Some(mac)));
    if isolated {
        let addresses = view.tenant_addresses();
        let mut routes = view.tenant_routes(in_vm);
        routes.extend(view.tenant_default_routes(in_vm));
        if !addresses.is_empty() || !routes.is_empty() {
            failures.push((
                "vm-holds-no-tenant-address-or-route",
                format!("addresses {addresses:?}, routes {routes:?}"),
            ));
        }
        if in_vm.is_some() || !in_container {
            failures.push((
                "tenant-nic-in-one-place",
                format!(
                    "in the VM: {}, in the database container: {in_container} (wanted: the container only)",
                    in_vm.is_some()
                ),
            ));
        }
    } else if in_vm.is_none() || in_container {
        failures.push((
            "tenant-nic-in-one-place",
            format!(
                "in the VM: {}, in the database container: {in_container} (wanted: the VM only, bridged)",
                in_vm.is_some()
            ),
        ));
    }
    failures
}

/// Polls until the tenant's client gets MariaDB's greeting on the tenant address (the
/// container's own, or the VM's through DNAT), at most `limit`; how long it took.
pub async fn database_reachable(guest: &Guest, limit: Duration) -> Result<Duration> {
    let client = guest.tenant().client()?;
    let target = SocketAddr::new(IpAddr::V4(GUEST_TENANT_ADDR), DATABASE_PORT);
    let started = Instant::now();
    let mut last = String::from("no attempt");
    while started.elapsed() < limit {
        match connect_in(&client, target, Duration::from_secs(2)) {
            Ok(Ok(mut stream)) => match mariadb_greeting(&mut stream) {
                Ok(_) => return Ok(started.elapsed()),
                Err(err) => last = format!("{err:#}"),
            },
            Ok(Err(err)) => last = err.to_string(),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow!(
        "the tenant got no greeting from {target} within {limit:?}: {last}"
    ))
}

/// Every state file that exists parses: the plugin's JSON, and every `.json` file of the
/// agent's state directory (a torn file must have been set aside or rewritten).
pub fn state_files_parse(guest: &Guest) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut files = vec![guest.files.hostnic_state_file()];
    if let Ok(entries) = std::fs::read_dir(guest.files.state_dir()) {
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json")),
        );
    }
    for file in files {
        if let Some(problem) = json_problem(&file) {
            failures.push(("state-files-parse", problem));
        }
    }
    failures
}

fn json_problem(path: &Path) -> Option<String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => return Some(format!("{}: {err}", path.display())),
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .err()
        .map(|err| format!("{}: {err}", path.display()))
}

/// How many marker casts the agent's log shows it ran.
pub fn marker_casts_run(agent_log: &str) -> u64 {
    agent_log
        .lines()
        .filter(|line| line.contains(REFUSED_LINE) && line.contains(MARKER_METHOD))
        .count() as u64
}

/// Whether the log text written since the fault says what the agent (or the plugin) saw.
pub fn fault_logged(patterns: &[&str], new_log: &str) -> bool {
    patterns.iter().any(|p| new_log.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_casts_are_counted_by_their_refusal_line_only() {
        let log = "\
2026-12-06T10:00:00Z  WARN netiso_guest::rpc: refused a method this agent does not implement method=\"create_database\"
2026-12-06T10:00:01Z  WARN netiso_guest::rpc: refused a method this agent does not implement method=\"create_user\"
2026-12-06T10:00:02Z  INFO netiso_guest::rpc: create_database mentioned elsewhere
2026-12-06T10:00:03Z  WARN netiso_guest::rpc: refused a method this agent does not implement method=\"create_database\"
";
        assert_eq!(marker_casts_run(log), 2);
        assert_eq!(marker_casts_run(""), 0);
    }

    #[test]
    fn a_torn_json_file_is_a_problem_and_a_missing_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let torn = dir.path().join("torn.json");
        std::fs::write(&torn, b"{\"networks\": [").expect("write");
        assert!(json_problem(&torn).is_some_and(|p| p.contains("torn.json")));
        let whole = dir.path().join("whole.json");
        std::fs::write(&whole, b"{\"networks\": []}").expect("write");
        assert_eq!(json_problem(&whole), None);
        assert_eq!(json_problem(&dir.path().join("absent.json")), None);
    }

    #[test]
    fn a_fault_is_logged_when_any_pattern_appears() {
        assert!(fault_logged(
            &["reconnecting", "connected to broker"],
            "x connected to broker y"
        ));
        assert!(!fault_logged(&["reconnecting"], "nothing here"));
    }
}
