//! Finding the tenant NIC by MAC: in the plugin's own network namespace (where Docker expects
//! `SrcName`), or, when it is not there, in the sandbox namespaces that may still hold it.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use netiso_config::tenant_nic::MacAddress;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns};

/// Finds links by MAC. The driver depends only on this trait, so the lookup can move to
/// `netiso-netlink` (rtnetlink link dumps) without touching the protocol code.
pub trait NicLocator: Send + Sync {
    /// The name of the link with `mac` in the plugin's network namespace (the one dockerd moves
    /// links from), or `None` when no link has it.
    fn find_in_plugin_ns(&self, mac: MacAddress) -> Result<Option<String>, LocateError>;

    /// The first network-namespace file directly under `sandbox_dir` whose namespace has a link
    /// with `mac`; files that are not network namespaces are skipped.
    fn find_in_sandboxes(
        &self,
        sandbox_dir: &Path,
        mac: MacAddress,
    ) -> Result<Option<PathBuf>, LocateError>;
}

/// Lookup failures.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// Several links carry the MAC (e.g. VLAN children); moving the wrong one would be worse than
    /// failing.
    #[error("several links carry MAC {mac}: {}; docker-hostnic needs exactly one", names.join(", "))]
    Ambiguous {
        /// The MAC searched for.
        mac: MacAddress,
        /// Every link name that carries it.
        names: Vec<String>,
    },
    /// Listing links failed.
    #[error("cannot list network links: {0}")]
    ListLinks(#[source] nix::Error),
    /// The sandbox directory cannot be read.
    #[error("cannot list sandbox namespaces in {dir}: {source}")]
    ReadSandboxDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The scanning thread could not be started or died.
    #[error("the sandbox scan thread failed: {0}")]
    ScanThread(String),
}

/// The real locator.
///
/// Both lookups list links with `getifaddrs(3)`, which asks the kernel over netlink and so
/// answers for the network namespace of the *calling thread*. `/sys/class/net` is not used: it
/// shows the namespace of whoever mounted sysfs, which differs from the plugin's namespace when
/// the plugin was started with `nsenter --net` or from a thread that called `setns` (measured:
/// after `nsenter --net=<empty ns>`, `/sys/class/net` still lists the host's links).
#[derive(Debug, Clone)]
pub struct NetnsNicLocator {
    max_sandboxes: usize,
}

/// How many entries of a sandbox directory are examined at most (a Docker host has one per
/// container).
pub const DEFAULT_MAX_SANDBOXES: usize = 4096;

impl Default for NetnsNicLocator {
    fn default() -> Self {
        Self {
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
        }
    }
}

impl NetnsNicLocator {
    /// A locator that examines at most `max_sandboxes` entries per sandbox scan.
    pub fn with_max_sandboxes(max_sandboxes: usize) -> Self {
        Self { max_sandboxes }
    }
}

impl NicLocator for NetnsNicLocator {
    fn find_in_plugin_ns(&self, mac: MacAddress) -> Result<Option<String>, LocateError> {
        let mut names = links_with_mac(mac).map_err(LocateError::ListLinks)?;
        match names.len() {
            0 => Ok(None),
            1 => Ok(names.pop()),
            _ => Err(LocateError::Ambiguous { mac, names }),
        }
    }

    /// Runs on a dedicated thread that enters each sandbox namespace in turn and then exits, so
    /// no other thread (in particular no tokio worker) ever changes namespace.
    fn find_in_sandboxes(
        &self,
        sandbox_dir: &Path,
        mac: MacAddress,
    ) -> Result<Option<PathBuf>, LocateError> {
        let entries = match std::fs::read_dir(sandbox_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LocateError::ReadSandboxDir {
                    dir: sandbox_dir.to_owned(),
                    source,
                });
            }
        };
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        candidates.sort();
        if candidates.len() > self.max_sandboxes {
            tracing::warn!(
                dir = %sandbox_dir.display(),
                found = candidates.len(),
                examined = self.max_sandboxes,
                "too many sandbox entries; examining only the first ones"
            );
            candidates.truncate(self.max_sandboxes);
        }
        std::thread::Builder::new()
            .name("hostnic-sandbox-scan".to_owned())
            .spawn(move || scan_namespaces(&candidates, mac))
            .map_err(|err| LocateError::ScanThread(err.to_string()))?
            .join()
            .map_err(|_| LocateError::ScanThread("it panicked".to_owned()))
    }
}

/// Must run on a thread of its own: it leaves the thread in the last namespace it entered.
fn scan_namespaces(candidates: &[PathBuf], mac: MacAddress) -> Option<PathBuf> {
    for path in candidates {
        if let Err(err) = enter_namespace(path) {
            tracing::debug!(path = %path.display(), %err, "skipping: not an enterable network namespace");
            continue;
        }
        match links_with_mac(mac) {
            Ok(names) if !names.is_empty() => return Some(path.clone()),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(path = %path.display(), %err, "skipping: cannot list its links")
            }
        }
    }
    None
}

/// Moves the calling thread into the network namespace of the file at `path`.
///
/// Namespace files (bind mounts, `/proc/<pid>/ns/net`) are regular files; anything else is
/// refused before opening, and the open does not block, so a FIFO or device in an odd sandbox
/// directory cannot hang the scan (dockerd has no timeout on plugin calls).
fn enter_namespace(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|err| err.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|err| err.to_string())?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|err| err.to_string())
}

/// Names of the links with `mac` in the calling thread's namespace, in kernel order.
fn links_with_mac(mac: MacAddress) -> Result<Vec<String>, nix::Error> {
    let wanted = mac.0;
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for address in nix::ifaddrs::getifaddrs()? {
        let matches = address
            .address
            .as_ref()
            .and_then(|storage| storage.as_link_addr())
            .and_then(|link| link.addr())
            == Some(wanted);
        if matches && seen.insert(address.interface_name.clone()) {
            names.push(address.interface_name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_free_mac() -> MacAddress {
        "02:00:5e:10:20:30".parse().unwrap()
    }

    #[test]
    fn an_absent_mac_is_not_found_in_the_plugin_namespace() {
        assert_eq!(
            NetnsNicLocator::default()
                .find_in_plugin_ns(loopback_free_mac())
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_sandbox_directory_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let found = NetnsNicLocator::default()
            .find_in_sandboxes(&dir.path().join("absent"), loopback_free_mac())
            .unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn files_that_are_not_namespaces_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0123456789ab"), "not a namespace").unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("dangling")).unwrap();
        let found = NetnsNicLocator::default()
            .find_in_sandboxes(dir.path(), loopback_free_mac())
            .unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn an_unreadable_sandbox_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = NetnsNicLocator::default()
            .find_in_sandboxes(&file, loopback_free_mac())
            .unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
