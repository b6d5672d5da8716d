//! The tenant NIC description Trove writes to `/etc/trove/eth1.json`, reduced to what `Join`
//! needs (the MAC, gateways and host routes).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use netiso_config::tenant_nic::MacAddress;
use serde::Deserialize;

/// Where Trove's guest agent writes the tenant NIC description.
pub const DEFAULT_TENANT_NIC_FILE: &str = "/etc/trove/eth1.json";

/// The tenant NIC as `Join` uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNic {
    /// The Neutron port's MAC.
    pub mac_address: MacAddress,
    /// The IPv4 subnet gateway; `None` when the subnet has none (or the port has no IPv4).
    pub ipv4_gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway, written by Trove only for dhcpv6-stateful subnets.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Neutron host routes of the IPv4 subnet.
    pub ipv4_host_routes: Vec<HostRoute>,
    /// Neutron host routes of the IPv6 subnet.
    pub ipv6_host_routes: Vec<HostRoute>,
}

/// One Neutron host route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoute {
    /// Destination prefix.
    pub destination: IpNet,
    /// Next hop; `None` for an on-link (connected) route.
    pub nexthop: Option<IpAddr>,
}

/// Why the tenant NIC file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TenantNicError {
    /// The file cannot be read (missing, permissions).
    #[error(
        "cannot read the tenant NIC file {path}: {source}; the guest agent writes it from the Neutron port at start-up"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not the expected JSON.
    #[error("the tenant NIC file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
}

#[derive(Deserialize)]
struct RawTenantNic {
    mac_address: Option<String>,
    ipv4_gateway: Option<String>,
    ipv6_gateway: Option<String>,
    ipv4_host_routes: Option<Vec<RawHostRoute>>,
    ipv6_host_routes: Option<Vec<RawHostRoute>>,
}

#[derive(Deserialize)]
struct RawHostRoute {
    destination: Option<String>,
    nexthop: Option<String>,
}

impl TenantNic {
    /// Reads and validates the file; read on every `Join` because a rebuild can change the port.
    pub fn load(path: &Path) -> Result<Self, TenantNicError> {
        let bytes = std::fs::read(path).map_err(|source| TenantNicError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).map_err(|reason| TenantNicError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses the file's bytes; the error names the offending key.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawTenantNic = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
        let mac_address = match raw.mac_address.as_deref() {
            None | Some("") => return Err("mac_address is missing".to_owned()),
            Some(text) => {
                crate::mac::parse_nic_mac(text).map_err(|err| format!("mac_address: {err}"))?
            }
        };
        Ok(Self {
            mac_address,
            ipv4_gateway: parse_gateway(raw.ipv4_gateway, "ipv4_gateway")?,
            ipv6_gateway: parse_gateway(raw.ipv6_gateway, "ipv6_gateway")?,
            ipv4_host_routes: parse_routes(raw.ipv4_host_routes, "ipv4_host_routes", true)?,
            ipv6_host_routes: parse_routes(raw.ipv6_host_routes, "ipv6_host_routes", false)?,
        })
    }
}

/// Trove treats an empty string like null (Python truthiness), so do we.
fn parse_gateway<A: std::str::FromStr>(
    text: Option<String>,
    key: &str,
) -> Result<Option<A>, String> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}: {text:?} is not an address of the right family")),
    }
}

fn parse_routes(
    routes: Option<Vec<RawHostRoute>>,
    key: &str,
    ipv4: bool,
) -> Result<Vec<HostRoute>, String> {
    let family = if ipv4 { "IPv4" } else { "IPv6" };
    let mut parsed = Vec::new();
    for (index, route) in routes.unwrap_or_default().into_iter().enumerate() {
        let destination_text = route
            .destination
            .ok_or_else(|| format!("{key}[{index}].destination is missing"))?;
        let destination: IpNet = destination_text.parse().map_err(|_| {
            format!("{key}[{index}].destination: {destination_text:?} is not a CIDR prefix")
        })?;
        let nexthop =
            match route.nexthop.as_deref() {
                None | Some("") => None,
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                    format!("{key}[{index}].nexthop: {text:?} is not an IP address")
                })?),
            };
        let right_family =
            destination.addr().is_ipv4() == ipv4 && nexthop.is_none_or(|hop| hop.is_ipv4() == ipv4);
        if !right_family {
            return Err(format!(
                "{key}[{index}]: expected {family} addresses, found {destination_text:?}"
            ));
        }
        parsed.push(HostRoute {
            destination: destination.trunc(),
            nexthop,
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from Trove's own writer (dual stack, SLAAC), byte for byte.
    const TROVE_SLAAC: &str = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1", "ipv4_host_routes": [], "ipv6_address": "fd00::f816:3eff:fe12:3456", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": []}"#;

    #[test]
    fn reads_the_file_trove_writes() {
        let nic = TenantNic::parse(TROVE_SLAAC.as_bytes()).unwrap();
        assert_eq!(nic.mac_address.to_string(), "fa:16:3e:12:34:56");
        assert_eq!(nic.ipv4_gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(nic.ipv6_gateway, None);
        assert!(nic.ipv4_host_routes.is_empty() && nic.ipv6_host_routes.is_empty());
    }

    #[test]
    fn reads_routes_of_both_families_and_null_gateways() {
        let text = r#"{"mac_address": "FA:16:3E:00:00:01", "ipv4_gateway": null, "ipv4_host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}, {"destination": "172.16.0.0/12", "nexthop": null}], "ipv6_gateway": "fd00::1", "ipv6_host_routes": [{"destination": "fd01::/64", "nexthop": "fd00::fe"}, {"destination": "fd02::1/64"}]}"#;
        let nic = TenantNic::parse(text.as_bytes()).unwrap();
        assert_eq!(nic.ipv4_gateway, None);
        assert_eq!(nic.ipv6_gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(
            nic.ipv4_host_routes[0].nexthop,
            Some("10.0.0.254".parse().unwrap())
        );
        assert_eq!(nic.ipv4_host_routes[1].nexthop, None);
        assert_eq!(
            nic.ipv6_host_routes[1].destination,
            "fd02::/64".parse().unwrap()
        );
    }

    #[test]
    fn names_the_bad_key() {
        let cases = [
            ("{}", "mac_address is missing"),
            (r#"{"mac_address": "x"}"#, "mac_address:"),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_gateway": "fd00::1"}"#,
                "ipv4_gateway",
            ),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_host_routes": [{"nexthop": "10.0.0.1"}]}"#,
                "ipv4_host_routes[0].destination is missing",
            ),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_host_routes": [{"destination": "x"}]}"#,
                "not a CIDR",
            ),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv6_host_routes": [{"destination": "10.0.0.0/8"}]}"#,
                "expected IPv6",
            ),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_host_routes": [{"destination": "10.0.0.0/8", "nexthop": "fd00::1"}]}"#,
                "expected IPv4",
            ),
            (
                r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_host_routes": {}}"#,
                "invalid type",
            ),
            ("", "EOF"),
        ];
        for (text, expected) in cases {
            let err = TenantNic::parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("eth1.json");
        let err = TenantNic::load(&missing).unwrap_err();
        assert!(
            err.to_string().contains("eth1.json") && err.to_string().contains("guest agent"),
            "{err}"
        );
        std::fs::write(&missing, "{").unwrap();
        let err = TenantNic::load(&missing).unwrap_err();
        assert!(
            matches!(err, TenantNicError::Invalid { .. }) && err.to_string().contains("eth1.json"),
            "{err}"
        );
        std::fs::write(&missing, TROVE_SLAAC).unwrap();
        assert!(TenantNic::load(&missing).is_ok());
    }
}
