//! Isolation that does not need a usable configuration: at boot, before the network comes up
//! (`trove-guest-agent isolate --boot`, run by `trove-netiso-isolate.service`), and before the
//! agent exits on a configuration error. Whatever else is wrong, a tenant NIC file that
//! still names a MAC gets that NIC taken away from the VM: the guest fails closed.

use std::fmt;
use std::path::{Path, PathBuf};

use netiso_config::tenant_nic::DEFAULT_TENANT_NIC_FILE;
use netiso_config::{ConfigSources, GuestConfig, IsolationMode, OsloConfig, TenantNic};
use netiso_netlink::NetlinkHandle;

use crate::isolation::{self, ApplyReport, IsolationError, IsolationTarget, WhenAbsent};

/// What the configuration-free isolation did.
#[derive(Debug)]
pub enum FailClosed {
    /// The configuration loads and asks for no isolation (bridged mode).
    NotRequested(IsolationMode),
    /// No tenant NIC file yet (first boot: cloud-init writes it later; or a single-NIC VM).
    NoTenantFile(PathBuf),
    /// The tenant NIC file names no MAC that can be read.
    Unidentified(PathBuf),
    /// The NIC the file names was isolated (or already was, or is not in the VM).
    Isolated {
        /// The tenant NIC file read.
        file: PathBuf,
        /// What was changed.
        report: Box<ApplyReport>,
    },
}

impl fmt::Display for FailClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRequested(mode) => write!(f, "nothing to isolate: {mode}"),
            Self::NoTenantFile(file) => write!(
                f,
                "nothing to isolate yet: {} does not exist (the agent isolates once it is written)",
                file.display()
            ),
            Self::Unidentified(file) => write!(
                f,
                "{} names no readable mac_address: nothing can be isolated",
                file.display()
            ),
            Self::Isolated { file, report } => write!(
                f,
                "tenant NIC from {} isolated ({} change(s))",
                file.display(),
                report.changes.len()
            ),
        }
    }
}

/// The tenant NIC file the configuration names, read as far as it can be: the full
/// configuration when it loads, else only `[netiso] tenant_nic_file` from files that parse,
/// else the default path. `Err` carries the mode when the configuration asks for no
/// isolation.
fn tenant_nic_file(sources: &ConfigSources) -> Result<PathBuf, IsolationMode> {
    match GuestConfig::load(sources) {
        Ok(config) => {
            let mode = config.isolation_mode();
            if mode.is_isolated() {
                Ok(config.netiso.tenant_nic_file)
            } else {
                Err(mode)
            }
        }
        Err(_) => Ok(OsloConfig::load(sources)
            .ok()
            .and_then(|oslo| oslo.string("netiso", "tenant_nic_file").ok().flatten())
            .map_or_else(|| PathBuf::from(DEFAULT_TENANT_NIC_FILE), PathBuf::from)),
    }
}

/// Isolates the NIC the tenant NIC file names, with whatever configuration there is. A NIC
/// not in the VM is not an error (the database container may hold it).
pub fn isolate_without_configuration(
    rtnl: &NetlinkHandle,
    sources: &ConfigSources,
) -> Result<FailClosed, IsolationError> {
    let file = match tenant_nic_file(sources) {
        Ok(file) => file,
        Err(mode) => return Ok(FailClosed::NotRequested(mode)),
    };
    isolate_named_nic(rtnl, &file)
}

fn isolate_named_nic(rtnl: &NetlinkHandle, file: &Path) -> Result<FailClosed, IsolationError> {
    if !file.exists() {
        return Ok(FailClosed::NoTenantFile(file.to_owned()));
    }
    let Some(mac) = TenantNic::mac_of_refused_file(file) else {
        return Ok(FailClosed::Unidentified(file.to_owned()));
    };
    let target = IsolationTarget::new(mac, file.to_owned());
    let report = isolation::isolate(rtnl, &target, WhenAbsent::Isolated)?;
    Ok(FailClosed::Isolated {
        file: file.to_owned(),
        report: Box::new(report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path, conf: &str) -> ConfigSources {
        let file = dir.join("guest.conf");
        std::fs::write(&file, conf).expect("write conf");
        ConfigSources {
            config_files: vec![file],
            config_dirs: Vec::new(),
        }
    }

    #[test]
    fn an_unusable_configuration_still_names_its_tenant_nic_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nic = dir.path().join("eth1.json");
        std::fs::write(&nic, "{}").expect("write eth1.json");
        let broken = sources(
            dir.path(),
            &format!(
                "[DEFAULT]\nguest_id = g1\ntransport_url = not a url\n[netiso]\ntenant_nic_file = {}\n",
                nic.display()
            ),
        );
        assert!(
            GuestConfig::load(&broken).is_err(),
            "the test needs a broken configuration"
        );
        assert_eq!(tenant_nic_file(&broken), Ok(nic));
    }

    #[test]
    fn without_readable_files_the_default_path_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unparsable = sources(dir.path(), "this is not ini [[[\n");
        assert_eq!(
            tenant_nic_file(&unparsable),
            Ok(PathBuf::from(DEFAULT_TENANT_NIC_FILE))
        );
    }

    #[test]
    fn bridged_mode_asks_for_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bridged = sources(
            dir.path(),
            "[DEFAULT]\nguest_id = g1\nnetwork_isolation = False\n",
        );
        assert!(tenant_nic_file(&bridged).is_err());
    }
}
