//! Finding the tenant NIC by MAC: in the plugin's own network namespace (where Docker expects
//! `SrcName`), or, when it is not there, in the sandbox namespaces that may still hold it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use netiso_config::tenant_nic::MacAddress;
use netiso_netlink::{Namespace, NetlinkError, NetlinkHandle, Rtnetlink};
use nix::fcntl::OFlag;

/// Finds links by MAC. The driver depends only on this trait, so it is tested with a fake.
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
#[non_exhaustive]
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
    /// The rtnetlink handle on the plugin's own namespace cannot be opened.
    #[error("cannot open an rtnetlink handle on the plugin's network namespace: {0}")]
    OpenPluginNamespace(#[source] NetlinkError),
    /// Listing links failed.
    #[error("cannot list network links: {0}")]
    ListLinks(#[source] NetlinkError),
    /// The sandbox directory cannot be read.
    #[error("cannot list sandbox namespaces in {dir}: {source}")]
    ReadSandboxDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The real locator, over `netiso-netlink` (rtnetlink link dumps), the project's one way to list
/// links.
///
/// The plugin's namespace is the one of the thread that built the locator: its handle's socket
/// is bound there for life, so a `Join` costs one link dump, no slower than `getifaddrs(3)`
/// (side by side on the busy 2-core test machine: 93-131 µs against 131-194 µs).
/// `/sys/class/net` is not used: it shows the namespace of whoever mounted sysfs (after
/// `nsenter --net`, it still lists the host's links).
///
/// Each sandbox gets a handle of its own, whose worker thread enters the namespace, so no
/// thread of the plugin calls `setns` itself. That is about three times slower than entering
/// each namespace from one scanning thread and calling `getifaddrs` (measured over 40
/// namespaces: 140 µs against 45 µs each; about 0.6 s at the [`DEFAULT_MAX_SANDBOXES`] cap),
/// accepted because the scan only runs when `Join` is already failing (the NIC is not at hand).
#[derive(Debug)]
pub struct NetnsNicLocator {
    plugin_ns: NetlinkHandle,
    max_sandboxes: usize,
}

/// How many entries of a sandbox directory are examined at most (a Docker host has one per
/// container).
pub const DEFAULT_MAX_SANDBOXES: usize = 4096;

impl NetnsNicLocator {
    /// A locator for the calling thread's network namespace.
    pub fn new() -> Result<Self, LocateError> {
        Self::with_max_sandboxes(DEFAULT_MAX_SANDBOXES)
    }

    /// Like [`new`](Self::new), examining at most `max_sandboxes` entries per sandbox scan.
    pub fn with_max_sandboxes(max_sandboxes: usize) -> Result<Self, LocateError> {
        Ok(Self {
            plugin_ns: NetlinkHandle::current().map_err(LocateError::OpenPluginNamespace)?,
            max_sandboxes,
        })
    }
}

impl NicLocator for NetnsNicLocator {
    fn find_in_plugin_ns(&self, mac: MacAddress) -> Result<Option<String>, LocateError> {
        let mut names = links_with_mac(&self.plugin_ns, mac).map_err(LocateError::ListLinks)?;
        match names.len() {
            0 => Ok(None),
            1 => Ok(names.pop()),
            _ => Err(LocateError::Ambiguous { mac, names }),
        }
    }

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
        Ok(candidates
            .into_iter()
            .find(|path| match sandbox_has_mac(path, mac) {
                Ok(found) => found,
                Err(reason) => {
                    tracing::debug!(path = %path.display(), %reason, "skipping sandbox entry");
                    false
                }
            }))
    }
}

/// Whether the namespace file at `path` holds a link with `mac`.
fn sandbox_has_mac(path: &Path, mac: MacAddress) -> Result<bool, String> {
    let file = open_regular_file(path)?;
    // Reopening through the descriptor reaches the very file checked above, never a FIFO
    // swapped in at `path` meanwhile; `open_path` then refuses anything but a namespace.
    let namespace = Namespace::open_path(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|err| format!("not a network namespace: {err}"))?;
    let handle = NetlinkHandle::in_namespace(&namespace)
        .map_err(|err| format!("cannot enter the namespace: {err}"))?;
    links_with_mac(&handle, mac)
        .map(|names| !names.is_empty())
        .map_err(|err| format!("cannot list its links: {err}"))
}

/// Opens `path` only if it is a regular file (namespace files, bind mounts or
/// `/proc/<pid>/ns/net`, are). The open does not block, so a FIFO or device in an odd sandbox
/// directory cannot hang the scan (dockerd has no timeout on plugin calls).
fn open_regular_file(path: &Path) -> Result<File, String> {
    let refuse = || "not a regular file".to_owned();
    if !std::fs::metadata(path)
        .map_err(|err| err.to_string())?
        .is_file()
    {
        return Err(refuse());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|err| err.to_string())?;
    if !file.metadata().map_err(|err| err.to_string())?.is_file() {
        return Err(refuse());
    }
    Ok(file)
}

/// Names of the links with `mac` in the handle's namespace, in kernel order.
fn links_with_mac(handle: &NetlinkHandle, mac: MacAddress) -> Result<Vec<String>, NetlinkError> {
    Ok(handle
        .links()?
        .into_iter()
        .filter(|link| link.mac == Some(mac))
        .map(|link| link.name)
        .collect())
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
            NetnsNicLocator::new()
                .unwrap()
                .find_in_plugin_ns(loopback_free_mac())
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_sandbox_directory_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let found = NetnsNicLocator::new()
            .unwrap()
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
        let found = NetnsNicLocator::new()
            .unwrap()
            .find_in_sandboxes(dir.path(), loopback_free_mac())
            .unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn an_unreadable_sandbox_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = NetnsNicLocator::new()
            .unwrap()
            .find_in_sandboxes(&file, loopback_free_mac())
            .unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
