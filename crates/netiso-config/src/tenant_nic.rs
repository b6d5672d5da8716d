//! The tenant (user) NIC description Trove injects as `/etc/trove/eth1.json`.
//!
//! Despite the name it describes the VM's *first* NIC, the user's Neutron port; the guest
//! finds it by MAC only. Parsing validates everything the isolation code will act on: a
//! malformed file must stop isolation with a clear message instead of half-configuring a
//! NIC. Unknown keys are ignored so a newer Trove can add some.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

use crate::pyjson;

/// Where Trove writes the file on the guest.
pub const DEFAULT_TENANT_NIC_FILE: &str = "/etc/trove/eth1.json";

pub use crate::mac::MacAddress;

/// A Neutron subnet host route (`{"destination": cidr, "nexthop": ip}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoute<Net, Addr> {
    /// Destination network.
    pub destination: Net,
    /// Next hop.
    pub nexthop: Addr,
}

/// The port's IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIpv4 {
    /// Fixed IP (no prefix).
    pub address: Ipv4Addr,
    /// Subnet CIDR; contains `address`.
    pub cidr: Ipv4Net,
    /// Subnet gateway; `None` when the subnet has none (`null` in the file).
    pub gateway: Option<Ipv4Addr>,
    /// Subnet host routes.
    pub host_routes: Vec<HostRoute<Ipv4Net, Ipv4Addr>>,
}

/// How the container gets its IPv6 default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Gateway {
    /// SLAAC or DHCPv6-stateless subnet: from Router Advertisements (no `ipv6_gateway` key).
    RouterAdvertisement,
    /// DHCPv6-stateful subnet: this gateway (`null` when the subnet has none).
    Dhcpv6Stateful(Option<Ipv6Addr>),
}

/// The port's IPv6 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIpv6 {
    /// Fixed IP (no prefix).
    pub address: Ipv6Addr,
    /// Subnet CIDR; contains `address`.
    pub cidr: Ipv6Net,
    /// Subnet host routes (Trove's plugin ignores them; we do not).
    pub host_routes: Vec<HostRoute<Ipv6Net, Ipv6Addr>>,
    /// Default route source.
    pub gateway: Ipv6Gateway,
}

/// `eth1.json`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNic {
    /// The NIC's MAC: the only way the guest identifies it.
    pub mac_address: MacAddress,
    /// IPv4 settings, when the port has an IPv4 fixed IP.
    pub ipv4: Option<TenantIpv4>,
    /// IPv6 settings, when the port has an IPv6 fixed IP.
    pub ipv6: Option<TenantIpv6>,
}

/// A rejected `eth1.json`, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct TenantNicError {
    /// The file (or a label such as `<input>` when parsing from memory).
    pub file: PathBuf,
    /// What is wrong.
    pub problem: TenantNicProblem,
}

/// What is wrong with an `eth1.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantNicProblem {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// Not JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The top level is not an object.
    #[error("expected a JSON object at the top level")]
    NotAnObject,
    /// A required key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    /// A key of the wrong JSON type.
    #[error("`{key}`: expected {expected}")]
    WrongType {
        /// The key (with index for list items).
        key: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A malformed MAC address.
    #[error("`mac_address`: `{0}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    /// A malformed IP address.
    #[error("`{key}`: `{value}` is not an {family} address")]
    Address {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// A malformed CIDR.
    #[error("`{key}`: `{value}` is not an {family} CIDR")]
    Cidr {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// A subnet CIDR with host bits set.
    #[error("`{key}`: `{value}` has host bits set (the subnet is `{network}`)")]
    CidrNotNetwork {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// The network address form.
        network: String,
    },
    /// The address does not belong to its subnet.
    #[error("`{address_key}` {address} is outside `{cidr_key}` {cidr}")]
    AddressOutsideCidr {
        /// Address key.
        address_key: &'static str,
        /// Address.
        address: String,
        /// CIDR key.
        cidr_key: &'static str,
        /// CIDR.
        cidr: String,
    },
    /// A key present without the key it depends on.
    #[error("`{key}` is set but `{required}` is missing")]
    Incomplete {
        /// The key present.
        key: &'static str,
        /// The key missing.
        required: &'static str,
    },
}

/// One address family's keys and parsers, so IPv4 and IPv6 share the validation code.
trait Family: Sized {
    type Addr: FromStr + Copy + fmt::Display;
    type Net: FromStr + Copy + fmt::Display + PartialEq;
    const NAME: &'static str;
    const ADDRESS: &'static str;
    const CIDR: &'static str;
    const GATEWAY: &'static str;
    const ROUTES: &'static str;
    fn trunc(net: &Self::Net) -> Self::Net;
    fn contains(net: &Self::Net, addr: &Self::Addr) -> bool;
}

struct V4;
struct V6;

impl Family for V4 {
    type Addr = Ipv4Addr;
    type Net = Ipv4Net;
    const NAME: &'static str = "IPv4";
    const ADDRESS: &'static str = "ipv4_address";
    const CIDR: &'static str = "ipv4_cidr";
    const GATEWAY: &'static str = "ipv4_gateway";
    const ROUTES: &'static str = "ipv4_host_routes";
    fn trunc(net: &Ipv4Net) -> Ipv4Net {
        net.trunc()
    }
    fn contains(net: &Ipv4Net, addr: &Ipv4Addr) -> bool {
        net.contains(addr)
    }
}

impl Family for V6 {
    type Addr = Ipv6Addr;
    type Net = Ipv6Net;
    const NAME: &'static str = "IPv6";
    const ADDRESS: &'static str = "ipv6_address";
    const CIDR: &'static str = "ipv6_cidr";
    const GATEWAY: &'static str = "ipv6_gateway";
    const ROUTES: &'static str = "ipv6_host_routes";
    fn trunc(net: &Ipv6Net) -> Ipv6Net {
        net.trunc()
    }
    fn contains(net: &Ipv6Net, addr: &Ipv6Addr) -> bool {
        net.contains(addr)
    }
}

/// One family's host routes.
type Routes<F> = Vec<HostRoute<<F as Family>::Net, <F as Family>::Addr>>;

/// The validated keys of one family.
struct FamilyKeys<F: Family> {
    address: F::Addr,
    cidr: F::Net,
    host_routes: Vec<HostRoute<F::Net, F::Addr>>,
}

fn string_of<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, TenantNicProblem> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(TenantNicProblem::WrongType {
            key: key.to_owned(),
            expected: "a string",
        }),
    }
}

fn address<F: Family>(key: &str, text: &str) -> Result<F::Addr, TenantNicProblem> {
    text.parse().map_err(|_| TenantNicProblem::Address {
        key: key.to_owned(),
        value: text.to_owned(),
        family: F::NAME,
    })
}

fn cidr<F: Family>(key: &str, text: &str) -> Result<F::Net, TenantNicProblem> {
    text.parse().map_err(|_| TenantNicProblem::Cidr {
        key: key.to_owned(),
        value: text.to_owned(),
        family: F::NAME,
    })
}

/// A gateway key: absent → `None`, `null` → `Some(None)`, an address → `Some(Some(..))`.
fn gateway<F: Family>(
    object: &Map<String, Value>,
) -> Result<Option<Option<F::Addr>>, TenantNicProblem> {
    match object.get(F::GATEWAY) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text)) => Ok(Some(Some(address::<F>(F::GATEWAY, text)?))),
        Some(_) => Err(TenantNicProblem::WrongType {
            key: F::GATEWAY.to_owned(),
            expected: "a string or null",
        }),
    }
}

fn host_routes<F: Family>(object: &Map<String, Value>) -> Result<Routes<F>, TenantNicProblem> {
    let items = match object.get(F::ROUTES) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(TenantNicProblem::WrongType {
                key: F::ROUTES.to_owned(),
                expected: "a list",
            });
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(route) = item else {
                return Err(TenantNicProblem::WrongType {
                    key: format!("{}[{index}]", F::ROUTES),
                    expected: "an object with `destination` and `nexthop`",
                });
            };
            let field = |name: &str| -> Result<&str, TenantNicProblem> {
                match route.get(name) {
                    Some(Value::String(text)) => Ok(text),
                    _ => Err(TenantNicProblem::WrongType {
                        key: format!("{}[{index}].{name}", F::ROUTES),
                        expected: "a string",
                    }),
                }
            };
            Ok(HostRoute {
                destination: cidr::<F>(
                    &format!("{}[{index}].destination", F::ROUTES),
                    field("destination")?,
                )?,
                nexthop: address::<F>(
                    &format!("{}[{index}].nexthop", F::ROUTES),
                    field("nexthop")?,
                )?,
            })
        })
        .collect()
}

/// Reads one family's address, CIDR and routes; `None` when the port has no such address.
fn family<F: Family>(
    object: &Map<String, Value>,
) -> Result<Option<FamilyKeys<F>>, TenantNicProblem> {
    let Some(address_text) = string_of(object, F::ADDRESS)? else {
        for dependent in [F::CIDR, F::GATEWAY, F::ROUTES] {
            if object.contains_key(dependent) {
                return Err(TenantNicProblem::Incomplete {
                    key: dependent,
                    required: F::ADDRESS,
                });
            }
        }
        return Ok(None);
    };
    let address = address::<F>(F::ADDRESS, address_text)?;
    let cidr_text = string_of(object, F::CIDR)?.ok_or(TenantNicProblem::Incomplete {
        key: F::ADDRESS,
        required: F::CIDR,
    })?;
    let cidr = cidr::<F>(F::CIDR, cidr_text)?;
    if F::trunc(&cidr) != cidr {
        return Err(TenantNicProblem::CidrNotNetwork {
            key: F::CIDR,
            value: cidr_text.to_owned(),
            network: F::trunc(&cidr).to_string(),
        });
    }
    if !F::contains(&cidr, &address) {
        return Err(TenantNicProblem::AddressOutsideCidr {
            address_key: F::ADDRESS,
            address: address.to_string(),
            cidr_key: F::CIDR,
            cidr: cidr.to_string(),
        });
    }
    Ok(Some(FamilyKeys {
        address,
        cidr,
        host_routes: host_routes::<F>(object)?,
    }))
}

impl TenantNic {
    /// Reads and validates the file at `path`.
    pub fn read(path: &Path) -> Result<Self, TenantNicError> {
        let text = std::fs::read_to_string(path).map_err(|error| TenantNicError {
            file: path.to_owned(),
            problem: TenantNicProblem::Io(error.to_string()),
        })?;
        Self::parse(path, &text)
    }

    /// The MAC of a file [`TenantNic::read`] refused, when it still names one plainly (a JSON
    /// object whose `mac_address` is a MAC): failing closed, the guest still takes that NIC
    /// away from the VM even though it will not start the database. `None` when the file
    /// cannot be read or the MAC cannot be told.
    pub fn mac_of_refused_file(path: &Path) -> Option<MacAddress> {
        Self::mac_of_refused_text(&std::fs::read_to_string(path).ok()?)
    }

    /// [`TenantNic::mac_of_refused_file`] on file content.
    pub fn mac_of_refused_text(text: &str) -> Option<MacAddress> {
        let Value::Object(object) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        object.get("mac_address")?.as_str()?.parse().ok()
    }

    /// Validates file content; `file` only names the source in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, TenantNicError> {
        Self::parse_value(text).map_err(|problem| TenantNicError {
            file: file.to_owned(),
            problem,
        })
    }

    fn parse_value(text: &str) -> Result<Self, TenantNicProblem> {
        let value: Value = serde_json::from_str(text).map_err(|error| TenantNicProblem::Json {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        })?;
        let Value::Object(object) = value else {
            return Err(TenantNicProblem::NotAnObject);
        };
        let mac_text = string_of(&object, "mac_address")?
            .ok_or(TenantNicProblem::MissingKey("mac_address"))?;
        let mac_address = mac_text
            .parse()
            .map_err(|_: crate::MacParseError| TenantNicProblem::Mac(mac_text.to_owned()))?;

        let ipv4 = match family::<V4>(&object)? {
            Some(keys) => Some(TenantIpv4 {
                address: keys.address,
                cidr: keys.cidr,
                gateway: gateway::<V4>(&object)?.flatten(),
                host_routes: keys.host_routes,
            }),
            None => None,
        };
        let ipv6 = match family::<V6>(&object)? {
            Some(keys) => Some(TenantIpv6 {
                address: keys.address,
                cidr: keys.cidr,
                host_routes: keys.host_routes,
                gateway: match gateway::<V6>(&object)? {
                    None => Ipv6Gateway::RouterAdvertisement,
                    Some(gateway) => Ipv6Gateway::Dhcpv6Stateful(gateway),
                },
            }),
            None => None,
        };
        Ok(Self {
            mac_address,
            ipv4,
            ipv6,
        })
    }

    /// The address replication peers should use: IPv4, else IPv6 (as Trove does).
    pub fn primary_address(&self) -> Option<IpAddr> {
        self.ipv4
            .as_ref()
            .map(|v4| IpAddr::V4(v4.address))
            .or_else(|| self.ipv6.as_ref().map(|v6| IpAddr::V6(v6.address)))
    }

    /// The file as Trove writes it (`json.dumps`, keys in Trove's order, IPv4 first).
    pub fn to_json(&self) -> String {
        let mut members = Map::new();
        members.insert(
            "mac_address".to_owned(),
            Value::String(self.mac_address.to_string()),
        );
        if let Some(v4) = &self.ipv4 {
            insert_ipv4_members(&mut members, v4);
        }
        if let Some(v6) = &self.ipv6 {
            insert_ipv6_members(&mut members, v6);
        }
        pyjson::dumps(&Value::Object(members))
    }
}

/// A route list as Neutron and Trove write it: `[{"destination": ..., "nexthop": ...}]`.
pub(crate) fn routes_json<N: fmt::Display, A: fmt::Display>(routes: &[HostRoute<N, A>]) -> Value {
    routes
        .iter()
        .map(|route| {
            let mut entry = Map::new();
            entry.insert(
                "destination".to_owned(),
                Value::String(route.destination.to_string()),
            );
            entry.insert(
                "nexthop".to_owned(),
                Value::String(route.nexthop.to_string()),
            );
            Value::Object(entry)
        })
        .collect()
}

fn optional_address<A: fmt::Display>(address: Option<A>) -> Value {
    address.map_or(Value::Null, |a| Value::String(a.to_string()))
}

/// The IPv4 keys, in Trove's insertion order.
fn insert_ipv4_members(members: &mut Map<String, Value>, v4: &TenantIpv4) {
    members.insert(
        "ipv4_address".to_owned(),
        Value::String(v4.address.to_string()),
    );
    members.insert("ipv4_cidr".to_owned(), Value::String(v4.cidr.to_string()));
    members.insert("ipv4_gateway".to_owned(), optional_address(v4.gateway));
    members.insert("ipv4_host_routes".to_owned(), routes_json(&v4.host_routes));
}

/// The IPv6 keys, in Trove's insertion order (`ipv6_gateway` only for DHCPv6-stateful).
fn insert_ipv6_members(members: &mut Map<String, Value>, v6: &TenantIpv6) {
    members.insert(
        "ipv6_address".to_owned(),
        Value::String(v6.address.to_string()),
    );
    members.insert("ipv6_cidr".to_owned(), Value::String(v6.cidr.to_string()));
    members.insert("ipv6_host_routes".to_owned(), routes_json(&v6.host_routes));
    if let Ipv6Gateway::Dhcpv6Stateful(gateway) = v6.gateway {
        members.insert("ipv6_gateway".to_owned(), optional_address(gateway));
    }
}
