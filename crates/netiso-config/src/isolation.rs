//! The container network mode, decided exactly as Trove decides it at container start.

use std::fmt;
use std::path::{Path, PathBuf};

/// A port Docker publishes on the VM in bridge mode (`{"3306/tcp": 3306}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort(pub u16);

impl PublishedPort {
    /// Docker's port key, `"<port>/tcp"`.
    pub fn docker_key(self) -> String {
        format!("{}/tcp", self.0)
    }
}

/// Why the container is on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgedReason {
    /// `network_isolation` is false.
    IsolationDisabled,
    /// Isolation is requested but there is no tenant NIC file (a single-NIC instance).
    NoTenantNicFile(PathBuf),
}

/// How the database container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsolationMode {
    /// The tenant NIC is handed to the container; nothing is published on the VM.
    Isolated {
        /// The tenant NIC description.
        tenant_nic_file: PathBuf,
    },
    /// Docker's bridge, with the datastore's ports published through DNAT.
    Bridged {
        /// Ports published on the VM.
        published_ports: Vec<PublishedPort>,
        /// Why not isolated.
        reason: BridgedReason,
    },
}

impl IsolationMode {
    /// Trove's rule (docs/compatibility.md, "Which mode"): isolated exactly when
    /// `network_isolation` is true **and** the tenant NIC file exists; otherwise bridged with
    /// every `tcp_ports` port.
    pub fn decide(
        network_isolation: bool,
        tenant_nic_file: &Path,
        tenant_nic_file_exists: bool,
        tcp_ports: &[u16],
    ) -> Self {
        let published = || tcp_ports.iter().copied().map(PublishedPort).collect();
        match (network_isolation, tenant_nic_file_exists) {
            (true, true) => Self::Isolated {
                tenant_nic_file: tenant_nic_file.to_owned(),
            },
            (true, false) => Self::Bridged {
                published_ports: published(),
                reason: BridgedReason::NoTenantNicFile(tenant_nic_file.to_owned()),
            },
            (false, _) => Self::Bridged {
                published_ports: published(),
                reason: BridgedReason::IsolationDisabled,
            },
        }
    }

    /// Whether the tenant NIC goes to the container.
    pub fn is_isolated(&self) -> bool {
        matches!(self, Self::Isolated { .. })
    }

    /// A one-line explanation for logs (also the `Display` form).
    pub fn explanation(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Isolated { tenant_nic_file } => write!(
                f,
                "isolated: network_isolation is true and {} exists, so the tenant NIC is handed \
                 to the container and no port is published on the VM",
                tenant_nic_file.display()
            ),
            Self::Bridged {
                published_ports,
                reason,
            } => {
                match reason {
                    BridgedReason::IsolationDisabled => {
                        f.write_str("bridged: network_isolation is false")?
                    }
                    BridgedReason::NoTenantNicFile(path) => write!(
                        f,
                        "bridged: network_isolation is true but {} does not exist (no tenant NIC)",
                        path.display()
                    )?,
                }
                if published_ports.is_empty() {
                    f.write_str(", so the container runs on Docker's bridge with no published port")
                } else {
                    let keys: Vec<String> =
                        published_ports.iter().map(|p| p.docker_key()).collect();
                    write!(
                        f,
                        ", so the container runs on Docker's bridge publishing {}",
                        keys.join(", ")
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/trove/eth1.json";

    #[test]
    fn isolated_only_when_requested_and_the_file_exists() {
        let mode = IsolationMode::decide(true, Path::new(FILE), true, &[3306]);
        assert_eq!(
            mode,
            IsolationMode::Isolated {
                tenant_nic_file: PathBuf::from(FILE)
            }
        );
        assert!(mode.is_isolated());
        assert_eq!(
            mode.explanation(),
            "isolated: network_isolation is true and /etc/trove/eth1.json exists, so the tenant NIC \
             is handed to the container and no port is published on the VM"
        );
    }

    #[test]
    fn requested_without_file_falls_back_to_bridge_with_ports() {
        let mode = IsolationMode::decide(true, Path::new(FILE), false, &[3306, 4444]);
        assert_eq!(
            mode,
            IsolationMode::Bridged {
                published_ports: vec![PublishedPort(3306), PublishedPort(4444)],
                reason: BridgedReason::NoTenantNicFile(PathBuf::from(FILE)),
            }
        );
        assert_eq!(
            mode.explanation(),
            "bridged: network_isolation is true but /etc/trove/eth1.json does not exist (no tenant \
             NIC), so the container runs on Docker's bridge publishing 3306/tcp, 4444/tcp"
        );
    }

    #[test]
    fn disabled_isolation_is_bridged_whatever_the_file() {
        for exists in [true, false] {
            let mode = IsolationMode::decide(false, Path::new(FILE), exists, &[5432]);
            assert_eq!(
                mode,
                IsolationMode::Bridged {
                    published_ports: vec![PublishedPort(5432)],
                    reason: BridgedReason::IsolationDisabled,
                }
            );
            assert_eq!(
                mode.explanation(),
                "bridged: network_isolation is false, so the container runs on Docker's bridge publishing 5432/tcp"
            );
        }
        assert!(!IsolationMode::decide(false, Path::new(FILE), true, &[]).is_isolated());
    }

    #[test]
    fn docker_port_key() {
        assert_eq!(PublishedPort(3306).docker_key(), "3306/tcp");
    }
}
