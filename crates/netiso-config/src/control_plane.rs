//! The controller's (`trove.conf`) options that shape a guest's networking.

use std::path::PathBuf;

use ipnet::IpNet;

use crate::error::ConfigError;
use crate::source::{ConfigSources, OptionName, OsloConfig};
use crate::value::{self, ValueError};

/// What the taskmanager knows when it builds a guest's injected files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlPlaneConfig {
    /// `[DEFAULT] management_networks` (deprecated name `default_neutron_networks`).
    /// Trove uses only the **last** entry.
    pub management_networks: Vec<String>,
    /// `[DEFAULT] management_security_groups`.
    pub management_security_groups: Vec<String>,
    /// `[network] network_isolation` (default true since Trove 22.0.0).
    pub network_isolation: bool,
    /// `[DEFAULT] docker_bridge_network_ip`: `daemon.json` `bip`.
    pub docker_bridge_network_ip: Option<String>,
    /// `[DEFAULT] docker_insecure_registries`.
    pub docker_insecure_registries: Vec<String>,
    /// `[DEFAULT] reserved_network_cidrs`.
    pub reserved_network_cidrs: Vec<IpNet>,
    /// `[DEFAULT] injected_config_location` (guest directory of `guest_info.conf`).
    pub injected_config_location: PathBuf,
    /// `[DEFAULT] guest_info` (file name, or a full path when it contains `/`).
    pub guest_info: String,
    /// `[DEFAULT] controller_address`: dev mode, injects `/etc/trove/controller.conf`.
    pub controller_address: Option<String>,
}

impl Default for ControlPlaneConfig {
    /// Trove's defaults.
    fn default() -> Self {
        Self {
            management_networks: Vec::new(),
            management_security_groups: Vec::new(),
            network_isolation: true,
            docker_bridge_network_ip: None,
            docker_insecure_registries: Vec::new(),
            reserved_network_cidrs: Vec::new(),
            injected_config_location: PathBuf::from("/etc/trove/conf.d"),
            guest_info: "guest_info.conf".to_owned(),
            controller_address: None,
        }
    }
}

impl ControlPlaneConfig {
    /// Loads `trove.conf`-style sources.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        Self::from_oslo(&OsloConfig::load(sources)?)
    }

    /// Builds the typed view; warns (through `tracing`) when several management networks
    /// are configured, since Trove silently uses only the last.
    pub fn from_oslo(config: &OsloConfig) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let list = |option: &str| -> Result<Vec<String>, ConfigError> {
            Ok(config.list("DEFAULT", option)?.unwrap_or_default())
        };
        let management_networks = config
            .lookup(&[
                OptionName::new("DEFAULT", "management_networks"),
                OptionName::new("DEFAULT", "default_neutron_networks"),
            ])?
            .map(|raw| value::parse_list(&raw.value))
            .unwrap_or_default();
        let docker_bridge_network_ip = match config.get("DEFAULT", "docker_bridge_network_ip")? {
            Some(raw) if !raw.value.is_empty() => raw
                .convert(|text| {
                    text.parse::<IpNet>()
                        .map(|_| text.to_owned())
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(|_| text.to_owned()))
                        .map_err(|_| ValueError::Cidr(text.to_owned()))
                })
                .map(Some)?,
            _ => None,
        };
        let reserved_network_cidrs = match config.get("DEFAULT", "reserved_network_cidrs")? {
            Some(raw) => raw.convert(|text| {
                value::parse_list(text)
                    .iter()
                    .map(|item| {
                        item.parse::<IpNet>()
                            .map_err(|_| ValueError::Cidr(item.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?,
            None => Vec::new(),
        };
        let control = Self {
            management_networks,
            management_security_groups: list("management_security_groups")?,
            network_isolation: config.bool("network", "network_isolation")?.unwrap_or(true),
            docker_bridge_network_ip,
            docker_insecure_registries: list("docker_insecure_registries")?,
            reserved_network_cidrs,
            injected_config_location: config
                .string("DEFAULT", "injected_config_location")?
                .map_or(defaults.injected_config_location, PathBuf::from),
            guest_info: config
                .string("DEFAULT", "guest_info")?
                .unwrap_or(defaults.guest_info),
            controller_address: config
                .string("DEFAULT", "controller_address")?
                .filter(|address| !address.is_empty()),
        };
        if let Some(warning) = control.management_networks_warning() {
            tracing::warn!("{warning}");
        }
        Ok(control)
    }

    /// The network the management port is created on: the last configured one.
    pub fn management_network(&self) -> Option<&str> {
        self.management_networks.last().map(String::as_str)
    }

    /// A warning when several management networks are configured (only the last is used).
    pub fn management_networks_warning(&self) -> Option<String> {
        (self.management_networks.len() > 1).then(|| {
            format!(
                "management_networks lists {} networks ({}); Trove supports one and uses only the last, {}",
                self.management_networks.len(),
                self.management_networks.join(", "),
                self.management_networks.last().map(String::as_str).unwrap_or_default()
            )
        })
    }

    /// Guest path of `guest_info.conf` (Trove: a `guest_info` with `/` is a full path).
    pub fn guest_info_path(&self) -> PathBuf {
        if self.guest_info.contains('/') {
            PathBuf::from(&self.guest_info)
        } else {
            self.injected_config_location.join(&self.guest_info)
        }
    }
}
