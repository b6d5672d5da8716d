//! Keeps Debian's ifupdown off the tenant NIC at boot.
//!
//! Isolating the NIC before the network comes up is not enough on a Debian guest: cloud-init
//! renders an `auto <nic>` / `inet dhcp` stanza for every NIC the cloud describes, so
//! `networking.service` brings the tenant NIC up again and DHCP puts the tenant address back
//! on the VM until the agent's guard takes it away. `networking.service` reads
//! `EXCLUDE_INTERFACES` from its environment (`ifup -a --read-environment`); the package's
//! drop-in adds [`NETWORKING_ENV`] to that environment, and the boot-time isolation writes
//! the tenant NIC's name there. The VM then never asks for, nor holds, the tenant address on
//! a reboot.

use std::path::{Path, PathBuf};

/// The environment file the `networking.service` drop-in of the package reads.
pub const NETWORKING_ENV: &str = "/run/trove-netiso/networking.env";
/// ifupdown's own defaults, whose `EXCLUDE_INTERFACES` an operator may have set.
pub const NETWORKING_DEFAULTS: &str = "/etc/default/networking";

/// Why the exclusion could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IfupdownError {
    /// Reading the defaults or writing the environment file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The interface name cannot be written safely into an environment file.
    #[error("interface name {0:?} is not a plain kernel interface name")]
    UnsafeName(String),
}

/// Writes `EXCLUDE_INTERFACES` for `networking.service` to `env_file`: the operator's own
/// exclusions from `defaults` (if any), then `tenant_nic`. Atomic (a reader sees the old or
/// the new file, never half of one), mode 0644 (it holds no secret).
pub fn exclude_tenant_nic(
    env_file: &Path,
    defaults: &Path,
    tenant_nic: &str,
) -> Result<(), IfupdownError> {
    if tenant_nic.is_empty()
        || tenant_nic.len() > 15
        || !tenant_nic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(IfupdownError::UnsafeName(tenant_nic.to_owned()));
    }
    let operator = match std::fs::read_to_string(defaults) {
        Ok(text) => operator_exclusions(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(IfupdownError::Io {
                action: "reading",
                path: defaults.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = operator
        .into_iter()
        .filter(|name| name != tenant_nic)
        .collect();
    names.push(tenant_nic.to_owned());
    let content = format!(
        "# Written at boot by trove-guest-agent (isolate --boot): keep ifupdown off the Trove tenant NIC.\n\
         EXCLUDE_INTERFACES=\"{}\"\n",
        names.join(" ")
    );
    netiso_config::atomic_file::replace(env_file, content.as_bytes(), 0o644).map_err(|source| {
        IfupdownError::Io {
            action: "writing",
            path: env_file.to_owned(),
            source,
        }
    })
}

/// The names in `EXCLUDE_INTERFACES=...` of an ifupdown defaults file (last assignment wins,
/// quotes removed); names with characters a shell would treat specially are dropped.
fn operator_exclusions(text: &str) -> Vec<String> {
    let value = text
        .lines()
        .map(str::trim)
        .rev()
        .find_map(|line| line.strip_prefix("EXCLUDE_INTERFACES="))
        .unwrap_or_default();
    value
        .trim_matches(|c| c == '"' || c == '\'')
        .split_whitespace()
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_nic_is_added_to_the_operators_exclusions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let defaults = dir.path().join("networking");
        std::fs::write(
            &defaults,
            "# comment\nEXCLUDE_INTERFACES=\"eth9 ens4\"\nCONFIGURE_INTERFACES=yes\n",
        )
        .expect("write defaults");
        let env = dir.path().join("run").join("networking.env");
        exclude_tenant_nic(&env, &defaults, "ens4").expect("written");
        let written = std::fs::read_to_string(&env).expect("read");
        assert!(
            written.ends_with("EXCLUDE_INTERFACES=\"eth9 ens4\"\n"),
            "{written}"
        );
    }

    #[test]
    fn without_defaults_only_the_tenant_nic_is_excluded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = dir.path().join("networking.env");
        exclude_tenant_nic(&env, &dir.path().join("absent"), "ens4").expect("written");
        let written = std::fs::read_to_string(&env).expect("read");
        assert!(
            written.ends_with("EXCLUDE_INTERFACES=\"ens4\"\n"),
            "{written}"
        );
    }

    #[test]
    fn names_a_shell_would_interpret_are_refused_or_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = dir.path().join("networking.env");
        let refused = exclude_tenant_nic(&env, &dir.path().join("absent"), "a\"; rm -rf /");
        assert!(matches!(refused, Err(IfupdownError::UnsafeName(_))));
        assert_eq!(
            operator_exclusions("EXCLUDE_INTERFACES='ok $(evil) eth1'\n"),
            vec!["ok".to_owned(), "eth1".to_owned()]
        );
    }
}
