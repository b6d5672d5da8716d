//! The libnetwork remote-driver wire protocol: endpoint paths, request decoding and the JSON
//! answers.
//!
//! Decoding is a pure function of `(path, body)` so that the fuzz target and the unit tests need no
//! server. Unknown JSON fields are ignored (newer Docker versions add some); missing or malformed
//! fields that the driver needs are reported by name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, PathBuf};

use ipnet::IpNet;
use netiso_config::tenant_nic::MacAddress;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::mac::parse_nic_mac;

/// The option map key under which Docker passes the user's `-o key=value` network options.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// The network option naming the tenant NIC (Trove's spelling, kept for compatibility).
pub const HOSTNIC_MAC_OPTION: &str = "hostnic_mac";

/// Every path libnetwork may call on a network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Handshake: which plugin APIs this plugin implements.
    Activate,
    /// Driver scope.
    GetCapabilities,
    /// Docker >= 28 asks whether IPAM should reserve gateway addresses.
    GwAllocCheck,
    /// A network using this driver is created.
    CreateNetwork,
    /// A network using this driver is deleted.
    DeleteNetwork,
    /// A container endpoint is created on a network.
    CreateEndpoint,
    /// `docker inspect` details of an endpoint.
    EndpointOperInfo,
    /// A container endpoint is deleted.
    DeleteEndpoint,
    /// A container joins the network: the driver names the NIC to move.
    Join,
    /// A container leaves the network.
    Leave,
    /// Node discovery (swarm).
    DiscoverNew,
    /// Node discovery (swarm).
    DiscoverDelete,
    /// The endpoint became the container's gateway endpoint.
    ProgramExternalConnectivity,
    /// The endpoint stopped being the container's gateway endpoint.
    RevokeExternalConnectivity,
    /// Swarm manager allocation (global-scope drivers only).
    AllocateNetwork,
    /// Swarm manager de-allocation (global-scope drivers only).
    FreeNetwork,
}

impl Endpoint {
    /// All endpoints, in protocol-document order.
    pub const ALL: [Endpoint; 16] = [
        Endpoint::Activate,
        Endpoint::GetCapabilities,
        Endpoint::GwAllocCheck,
        Endpoint::CreateNetwork,
        Endpoint::DeleteNetwork,
        Endpoint::CreateEndpoint,
        Endpoint::EndpointOperInfo,
        Endpoint::DeleteEndpoint,
        Endpoint::Join,
        Endpoint::Leave,
        Endpoint::DiscoverNew,
        Endpoint::DiscoverDelete,
        Endpoint::ProgramExternalConnectivity,
        Endpoint::RevokeExternalConnectivity,
        Endpoint::AllocateNetwork,
        Endpoint::FreeNetwork,
    ];

    /// The HTTP path Docker posts to.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Activate => "/Plugin.Activate",
            Endpoint::GetCapabilities => "/NetworkDriver.GetCapabilities",
            Endpoint::GwAllocCheck => "/NetworkDriver.GwAllocCheck",
            Endpoint::CreateNetwork => "/NetworkDriver.CreateNetwork",
            Endpoint::DeleteNetwork => "/NetworkDriver.DeleteNetwork",
            Endpoint::CreateEndpoint => "/NetworkDriver.CreateEndpoint",
            Endpoint::EndpointOperInfo => "/NetworkDriver.EndpointOperInfo",
            Endpoint::DeleteEndpoint => "/NetworkDriver.DeleteEndpoint",
            Endpoint::Join => "/NetworkDriver.Join",
            Endpoint::Leave => "/NetworkDriver.Leave",
            Endpoint::DiscoverNew => "/NetworkDriver.DiscoverNew",
            Endpoint::DiscoverDelete => "/NetworkDriver.DiscoverDelete",
            Endpoint::ProgramExternalConnectivity => "/NetworkDriver.ProgramExternalConnectivity",
            Endpoint::RevokeExternalConnectivity => "/NetworkDriver.RevokeExternalConnectivity",
            Endpoint::AllocateNetwork => "/NetworkDriver.AllocateNetwork",
            Endpoint::FreeNetwork => "/NetworkDriver.FreeNetwork",
        }
    }

    /// The endpoint served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }

    /// The method name as Docker logs it (`NetworkDriver.Join`).
    pub fn name(self) -> &'static str {
        self.path().trim_start_matches('/')
    }

    /// Whether the driver needs a request body to act; the others accept an empty one.
    const fn needs_body(self) -> bool {
        matches!(
            self,
            Endpoint::CreateNetwork
                | Endpoint::DeleteNetwork
                | Endpoint::CreateEndpoint
                | Endpoint::EndpointOperInfo
                | Endpoint::DeleteEndpoint
                | Endpoint::Join
                | Endpoint::Leave
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Docker network or endpoint ID.
///
/// Validated because it becomes a key of the state file and appears in logs: Docker's local IDs
/// are 64 lowercase hex digits, swarm IDs 25 lowercase alphanumerics (Trove's schema accepts the
/// same two shapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DockerId(String);

impl DockerId {
    /// Validates `text` as a Docker ID; the error says what shape was expected.
    pub fn parse(text: &str) -> Result<Self, DockerIdError> {
        let local =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let swarm = text.len() == 25
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if local || swarm {
            Ok(Self(text.to_owned()))
        } else {
            Err(DockerIdError::Malformed {
                shown: text.chars().take(80).collect(),
            })
        }
    }

    /// The ID as Docker spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not a Docker ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DockerIdError {
    /// Neither a local ID nor a swarm ID.
    #[error(
        "{shown:?} is not a Docker ID (64 lowercase hex digits, or 25 lowercase letters and digits for swarm)"
    )]
    Malformed {
        /// The text received, cut to its first 80 characters (it comes from the request).
        shown: String,
    },
}

impl fmt::Display for DockerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two IDs most endpoint calls carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    /// `NetworkID`.
    pub network_id: DockerId,
    /// `EndpointID`.
    pub endpoint_id: DockerId,
}

/// `NetworkDriver.CreateNetwork`, reduced to what the driver stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNetwork {
    /// `NetworkID`.
    pub network_id: DockerId,
    /// The tenant NIC, from `-o hostnic_mac=...`.
    pub hostnic_mac: MacAddress,
    /// The first IPv4 pool gateway, prefix stripped (informational, as Trove stores it).
    pub ipv4_gateway: Option<IpAddr>,
}

/// `NetworkDriver.CreateEndpoint`, reduced to what the driver checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEndpoint {
    /// `NetworkID` and `EndpointID`.
    pub ids: EndpointRef,
    /// `Interface.MacAddress`, set only when the user ran the container with `--mac-address`.
    pub interface_mac: Option<MacAddress>,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `NetworkID` and `EndpointID`.
    pub ids: EndpointRef,
    /// The sandbox network namespace path; any absolute path (Docker's exec-root is configurable).
    pub sandbox_key: PathBuf,
}

/// A decoded, validated plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `/Plugin.Activate`.
    Activate,
    /// `/NetworkDriver.GetCapabilities`.
    GetCapabilities,
    /// `/NetworkDriver.GwAllocCheck`.
    GwAllocCheck,
    /// `/NetworkDriver.CreateNetwork`.
    CreateNetwork(CreateNetwork),
    /// `/NetworkDriver.DeleteNetwork`.
    DeleteNetwork {
        /// `NetworkID`.
        network_id: DockerId,
    },
    /// `/NetworkDriver.CreateEndpoint`.
    CreateEndpoint(CreateEndpoint),
    /// `/NetworkDriver.EndpointOperInfo`.
    EndpointOperInfo(EndpointRef),
    /// `/NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint(EndpointRef),
    /// `/NetworkDriver.Join`.
    Join(Join),
    /// `/NetworkDriver.Leave`.
    Leave(EndpointRef),
    /// `/NetworkDriver.DiscoverNew`.
    DiscoverNew,
    /// `/NetworkDriver.DiscoverDelete`.
    DiscoverDelete,
    /// `/NetworkDriver.ProgramExternalConnectivity`.
    ProgramExternalConnectivity {
        /// `NetworkID`, when sent (only logged).
        network_id: Option<DockerId>,
    },
    /// `/NetworkDriver.RevokeExternalConnectivity`.
    RevokeExternalConnectivity {
        /// `NetworkID`, when sent (only logged).
        network_id: Option<DockerId>,
    },
    /// `/NetworkDriver.AllocateNetwork`.
    AllocateNetwork {
        /// `NetworkID`, when sent (only logged).
        network_id: Option<DockerId>,
    },
    /// `/NetworkDriver.FreeNetwork`.
    FreeNetwork {
        /// `NetworkID`, when sent (only logged).
        network_id: Option<DockerId>,
    },
}

impl Request {
    /// The endpoint this request was sent to.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Request::Activate => Endpoint::Activate,
            Request::GetCapabilities => Endpoint::GetCapabilities,
            Request::GwAllocCheck => Endpoint::GwAllocCheck,
            Request::CreateNetwork(_) => Endpoint::CreateNetwork,
            Request::DeleteNetwork { .. } => Endpoint::DeleteNetwork,
            Request::CreateEndpoint(_) => Endpoint::CreateEndpoint,
            Request::EndpointOperInfo(_) => Endpoint::EndpointOperInfo,
            Request::DeleteEndpoint(_) => Endpoint::DeleteEndpoint,
            Request::Join(_) => Endpoint::Join,
            Request::Leave(_) => Endpoint::Leave,
            Request::DiscoverNew => Endpoint::DiscoverNew,
            Request::DiscoverDelete => Endpoint::DiscoverDelete,
            Request::ProgramExternalConnectivity { .. } => Endpoint::ProgramExternalConnectivity,
            Request::RevokeExternalConnectivity { .. } => Endpoint::RevokeExternalConnectivity,
            Request::AllocateNetwork { .. } => Endpoint::AllocateNetwork,
            Request::FreeNetwork { .. } => Endpoint::FreeNetwork,
        }
    }

    /// The network the request is about, for request logs.
    pub fn network_id(&self) -> Option<&DockerId> {
        match self {
            Request::CreateNetwork(create) => Some(&create.network_id),
            Request::DeleteNetwork { network_id } => Some(network_id),
            Request::CreateEndpoint(create) => Some(&create.ids.network_id),
            Request::EndpointOperInfo(ids) | Request::DeleteEndpoint(ids) | Request::Leave(ids) => {
                Some(&ids.network_id)
            }
            Request::Join(join) => Some(&join.ids.network_id),
            Request::ProgramExternalConnectivity { network_id }
            | Request::RevokeExternalConnectivity { network_id }
            | Request::AllocateNetwork { network_id }
            | Request::FreeNetwork { network_id } => network_id.as_ref(),
            Request::Activate
            | Request::GetCapabilities
            | Request::GwAllocCheck
            | Request::DiscoverNew
            | Request::DiscoverDelete => None,
        }
    }
}

/// Why a request could not be decoded.
///
/// Messages do not repeat the endpoint: dockerd prefixes plugin errors with the method name
/// itself (`NetworkDriver.Join: <Err>`), and request logs carry it as a field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Not a libnetwork network-driver path (answered with 404 so Docker treats it as optional).
    #[error("{path:?} is not a docker-hostnic endpoint; this plugin implements NetworkDriver only")]
    UnknownEndpoint {
        /// The path as received (shortened).
        path: String,
    },
    /// An endpoint that needs input got none.
    #[error("the request body is empty; send a JSON object")]
    EmptyBody {
        /// Where it was sent.
        endpoint: Endpoint,
    },
    /// The body is not JSON.
    #[error("the request body is not valid JSON: {source}")]
    InvalidJson {
        /// Where it was sent.
        endpoint: Endpoint,
        /// The parser's complaint, with line and column.
        source: serde_json::Error,
    },
    /// A required field is absent or null.
    #[error("missing field {field}; {hint}")]
    MissingField {
        /// Where it was sent.
        endpoint: Endpoint,
        /// JSON path of the field.
        field: String,
        /// What the caller should send.
        hint: &'static str,
    },
    /// A field is present but unusable.
    #[error("field {field} is invalid: {reason}")]
    InvalidField {
        /// Where it was sent.
        endpoint: Endpoint,
        /// JSON path of the field.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl ProtocolError {
    /// The HTTP status Docker receives.
    pub fn http_status(&self) -> u16 {
        match self {
            ProtocolError::UnknownEndpoint { .. } => 404,
            _ => 400,
        }
    }
}

/// Decodes and validates one plugin call.
///
/// Endpoints that need no input accept an empty body (Docker sends 0 bytes to `Plugin.Activate`
/// and `GetCapabilities`); a body that is present must still be a JSON object (or `null`).
pub fn decode_request(path: &str, body: &[u8]) -> Result<Request, ProtocolError> {
    let endpoint = Endpoint::from_path(path).ok_or_else(|| ProtocolError::UnknownEndpoint {
        path: path.chars().take(120).collect(),
    })?;
    let fields = Fields::parse(endpoint, body)?;
    let request = match endpoint {
        Endpoint::Activate => Request::Activate,
        Endpoint::GetCapabilities => Request::GetCapabilities,
        Endpoint::GwAllocCheck => {
            fields.optional_object("Options")?;
            Request::GwAllocCheck
        }
        Endpoint::CreateNetwork => Request::CreateNetwork(decode_create_network(&fields)?),
        Endpoint::DeleteNetwork => Request::DeleteNetwork {
            network_id: fields.required_id("NetworkID")?,
        },
        Endpoint::CreateEndpoint => Request::CreateEndpoint(CreateEndpoint {
            ids: fields.endpoint_ref()?,
            interface_mac: decode_interface_mac(&fields)?,
        }),
        Endpoint::EndpointOperInfo => Request::EndpointOperInfo(fields.endpoint_ref()?),
        Endpoint::DeleteEndpoint => Request::DeleteEndpoint(fields.endpoint_ref()?),
        Endpoint::Join => {
            let ids = fields.endpoint_ref()?;
            let sandbox_key = decode_sandbox_key(&fields)?;
            fields.optional_object("Options")?;
            Request::Join(Join { ids, sandbox_key })
        }
        Endpoint::Leave => Request::Leave(fields.endpoint_ref()?),
        Endpoint::DiscoverNew | Endpoint::DiscoverDelete => {
            fields.optional_object("DiscoveryData")?;
            if endpoint == Endpoint::DiscoverNew {
                Request::DiscoverNew
            } else {
                Request::DiscoverDelete
            }
        }
        Endpoint::ProgramExternalConnectivity => Request::ProgramExternalConnectivity {
            network_id: fields.optional_id("NetworkID")?,
        },
        Endpoint::RevokeExternalConnectivity => Request::RevokeExternalConnectivity {
            network_id: fields.optional_id("NetworkID")?,
        },
        Endpoint::AllocateNetwork => Request::AllocateNetwork {
            network_id: fields.optional_id("NetworkID")?,
        },
        Endpoint::FreeNetwork => Request::FreeNetwork {
            network_id: fields.optional_id("NetworkID")?,
        },
    };
    Ok(request)
}

fn decode_create_network(fields: &Fields) -> Result<CreateNetwork, ProtocolError> {
    let network_id = fields.required_id("NetworkID")?;
    let mac_field = format!("Options[{GENERIC_OPTIONS:?}][{HOSTNIC_MAC_OPTION:?}]");
    let missing_mac = || fields.missing(&mac_field, MAC_HINT);
    let options = fields.optional_object("Options")?.ok_or_else(missing_mac)?;
    let generic = match options.get(GENERIC_OPTIONS) {
        None | Some(Value::Null) => return Err(missing_mac()),
        Some(Value::Object(generic)) => generic,
        Some(other) => {
            return Err(fields.invalid(
                &format!("Options[{GENERIC_OPTIONS:?}]"),
                format!(
                    "expected an object of -o key=value options, found {}",
                    kind(other)
                ),
            ));
        }
    };
    let hostnic_mac = match generic.get(HOSTNIC_MAC_OPTION) {
        None | Some(Value::Null) => return Err(missing_mac()),
        Some(Value::String(text)) if text.is_empty() => return Err(missing_mac()),
        Some(Value::String(text)) => parse_nic_mac(text)
            .map_err(|err| fields.invalid(&mac_field, format!("{err}; {MAC_HINT}")))?,
        Some(other) => {
            return Err(fields.invalid(
                &mac_field,
                format!("expected a string, found {}", kind(other)),
            ));
        }
    };
    let ipv4_gateway = first_pool_gateway(fields, "IPv4Data", true)?;
    first_pool_gateway(fields, "IPv6Data", false)?;
    Ok(CreateNetwork {
        network_id,
        hostnic_mac,
        ipv4_gateway,
    })
}

const MAC_HINT: &str = "create the network with `docker network create --driver docker-hostnic -o hostnic_mac=<MAC of the tenant NIC> ...`";

/// Validates an IPAM data list and returns the first non-empty `Gateway` (prefix stripped).
///
/// The list may be absent, null or empty: Docker can create networks without an IPv4 pool, and
/// Trove's plugin crashed on that (it indexed `IPv4Data[0]`).
fn first_pool_gateway(
    fields: &Fields,
    key: &str,
    ipv4: bool,
) -> Result<Option<IpAddr>, ProtocolError> {
    let pools = match fields.object.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(pools)) => pools,
        Some(other) => {
            return Err(fields.invalid(
                key,
                format!("expected a list of IPAM pools, found {}", kind(other)),
            ));
        }
    };
    let mut first = None;
    for (index, pool) in pools.iter().enumerate() {
        let Value::Object(pool) = pool else {
            return Err(fields.invalid(
                &format!("{key}[{index}]"),
                format!("expected an object, found {}", kind(pool)),
            ));
        };
        let gateway = match pool.get("Gateway") {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) if text.is_empty() => continue,
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(fields.invalid(
                    &format!("{key}[{index}].Gateway"),
                    format!("expected a string, found {}", kind(other)),
                ));
            }
        };
        let field = format!("{key}[{index}].Gateway");
        let address = parse_gateway(gateway).ok_or_else(|| {
            fields.invalid(
                &field,
                format!("{gateway:?} is not an IP address in CIDR form like 10.0.0.1/24"),
            )
        })?;
        if address.is_ipv4() != ipv4 {
            let family = if ipv4 { "IPv4" } else { "IPv6" };
            return Err(fields.invalid(&field, format!("{gateway:?} is not an {family} address")));
        }
        first.get_or_insert(address);
    }
    Ok(first)
}

fn parse_gateway(text: &str) -> Option<IpAddr> {
    text.parse::<IpNet>()
        .map(|net| net.addr())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

fn decode_interface_mac(fields: &Fields) -> Result<Option<MacAddress>, ProtocolError> {
    let Some(interface) = fields.optional_object("Interface")? else {
        return Ok(None);
    };
    match interface.get("MacAddress") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => parse_nic_mac(text)
            .map(Some)
            .map_err(|err| fields.invalid("Interface.MacAddress", err.to_string())),
        Some(other) => Err(fields.invalid(
            "Interface.MacAddress",
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

fn decode_sandbox_key(fields: &Fields) -> Result<PathBuf, ProtocolError> {
    let text = fields.required_str("SandboxKey", "send the sandbox network namespace path")?;
    let path = PathBuf::from(text);
    let reason = if !path.is_absolute() {
        Some("must be an absolute path to the sandbox network namespace")
    } else if text.contains('\0') {
        Some("must not contain NUL characters")
    } else if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        Some("must name a namespace file, not a bare directory")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(fields.invalid(
            "SandboxKey",
            format!("{:?} {reason}", text.chars().take(200).collect::<String>()),
        )),
        None => Ok(path),
    }
}

/// The top-level JSON object of a request, with field accessors that produce precise errors.
struct Fields {
    endpoint: Endpoint,
    object: Map<String, Value>,
}

impl Fields {
    fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Self, ProtocolError> {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        let value = if blank {
            if endpoint.needs_body() {
                return Err(ProtocolError::EmptyBody { endpoint });
            }
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|source| ProtocolError::InvalidJson { endpoint, source })?
        };
        let object = match value {
            Value::Object(object) => object,
            Value::Null if !endpoint.needs_body() => Map::new(),
            Value::Null => return Err(ProtocolError::EmptyBody { endpoint }),
            other => {
                return Err(ProtocolError::InvalidField {
                    endpoint,
                    field: "(body)".to_owned(),
                    reason: format!("expected a JSON object, found {}", kind(&other)),
                });
            }
        };
        Ok(Self { endpoint, object })
    }

    fn missing(&self, field: &str, hint: &'static str) -> ProtocolError {
        ProtocolError::MissingField {
            endpoint: self.endpoint,
            field: field.to_owned(),
            hint,
        }
    }

    fn invalid(&self, field: &str, reason: String) -> ProtocolError {
        ProtocolError::InvalidField {
            endpoint: self.endpoint,
            field: field.to_owned(),
            reason,
        }
    }

    fn optional_str(&self, key: &str) -> Result<Option<&str>, ProtocolError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, found {}", kind(other))))
            }
        }
    }

    fn required_str(&self, key: &str, hint: &'static str) -> Result<&str, ProtocolError> {
        match self.optional_str(key)? {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(self.missing(key, hint)),
        }
    }

    fn optional_id(&self, key: &str) -> Result<Option<DockerId>, ProtocolError> {
        match self.optional_str(key)? {
            None | Some("") => Ok(None),
            Some(text) => DockerId::parse(text)
                .map(Some)
                .map_err(|reason| self.invalid(key, reason.to_string())),
        }
    }

    fn required_id(&self, key: &str) -> Result<DockerId, ProtocolError> {
        let text = self.required_str(key, "send the Docker ID (64 lowercase hex digits)")?;
        DockerId::parse(text).map_err(|reason| self.invalid(key, reason.to_string()))
    }

    fn endpoint_ref(&self) -> Result<EndpointRef, ProtocolError> {
        Ok(EndpointRef {
            network_id: self.required_id("NetworkID")?,
            endpoint_id: self.required_id("EndpointID")?,
        })
    }

    fn optional_object(&self, key: &str) -> Result<Option<&Map<String, Value>>, ProtocolError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(other) => {
                Err(self.invalid(key, format!("expected an object, found {}", kind(other))))
            }
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A successful answer; serialises to the JSON object Docker expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    /// `Plugin.Activate`.
    Activate(ActivateResponse),
    /// `GetCapabilities`.
    Capabilities(CapabilitiesResponse),
    /// `GwAllocCheck`.
    GwAllocCheck(GwAllocCheckResponse),
    /// `Join`.
    Join(JoinResponse),
    /// `EndpointOperInfo`.
    EndpointOperInfo(EndpointOperInfoResponse),
    /// `AllocateNetwork`.
    AllocateNetwork(AllocateNetworkResponse),
    /// `{}`: every other endpoint.
    Empty(EmptyResponse),
}

/// `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EmptyResponse {}

/// `{"Implements": ["NetworkDriver"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    /// Plugin APIs implemented.
    pub implements: Vec<&'static str>,
}

/// Driver scope: `local`, as a host NIC exists on one host only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    /// `local` or `global`.
    pub scope: &'static str,
    /// Defaults to `Scope` when absent; sent explicitly.
    pub connectivity_scope: &'static str,
    /// Asks Docker >= 28 to send `GwAllocCheck` before `CreateNetwork`.
    pub gw_alloc_checker: bool,
}

/// Whether IPAM should skip reserving a gateway address when the user gave none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GwAllocCheckResponse {
    /// Skip the IPv4 gateway reservation.
    #[serde(rename = "SkipIPv4")]
    pub skip_ipv4: bool,
    /// Skip the IPv6 gateway reservation.
    #[serde(rename = "SkipIPv6")]
    pub skip_ipv6: bool,
}

/// `EndpointOperInfo`: free-form details shown by `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointOperInfoResponse {
    /// Key/value details.
    pub value: std::collections::BTreeMap<String, String>,
}

/// `AllocateNetwork`: no options to add.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocateNetworkResponse {
    /// Driver options for the network (none).
    pub options: std::collections::BTreeMap<String, String>,
}

/// The `Join` answer.
///
/// It has no `GatewayIPv6` field on purpose; see [`crate::driver`] for why the IPv6 default
/// route is left to Router Advertisements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    /// The link Docker moves into the sandbox.
    pub interface_name: InterfaceName,
    /// IPv4 default gateway (bare address); absent when the subnet has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Neutron host routes of both families.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    /// Keeps Docker from attaching the container to `docker_gwbridge`.
    pub disable_gateway_service: bool,
}

/// Which link to move and how to name it in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The link's current name in the plugin's (= dockerd's) namespace.
    pub src_name: String,
    /// `eth`: Docker appends the lowest free index.
    pub dst_prefix: &'static str,
}

/// A route Docker installs in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    /// Destination prefix.
    pub destination: IpNet,
    /// Next-hop or connected.
    pub route_type: RouteType,
    /// Gateway for next-hop routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
}

/// libnetwork's route types (`types.NEXTHOP`, `types.CONNECTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteType {
    /// Via `NextHop` (0).
    NextHop,
    /// Directly on the interface, no next hop (1).
    Connected,
}

impl Serialize for RouteType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(match self {
            RouteType::NextHop => 0,
            RouteType::Connected => 1,
        })
    }
}

/// The body of every error answer: `{"Err": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorResponse {
    /// What went wrong and what to fix.
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NET: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
    const EP: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn decode(endpoint: Endpoint, body: Value) -> Result<Request, ProtocolError> {
        decode_request(endpoint.path(), body.to_string().as_bytes())
    }

    fn id(text: &str) -> DockerId {
        DockerId::parse(text).unwrap()
    }

    fn ids() -> EndpointRef {
        EndpointRef {
            network_id: id(NET),
            endpoint_id: id(EP),
        }
    }

    fn create_body(mac: Value) -> Value {
        json!({
            "NetworkID": NET,
            "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {"hostnic_mac": mac}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24", "AuxAddresses": null}],
            "IPv6Data": []
        })
    }

    #[test]
    fn every_endpoint_path_round_trips() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(endpoint.path()), Some(endpoint));
            assert!(endpoint.name().contains('.'));
        }
        assert_eq!(Endpoint::from_path("/NetworkDriver.Nope"), None);
    }

    #[test]
    fn unknown_path_is_404() {
        let err = decode_request("/IpamDriver.RequestPool", b"{}").unwrap_err();
        assert_eq!(err.http_status(), 404);
        assert!(err.to_string().contains("IpamDriver.RequestPool"));
    }

    #[test]
    fn endpoints_without_input_accept_empty_and_null_bodies() {
        let cases = [
            (Endpoint::Activate, Request::Activate),
            (Endpoint::GetCapabilities, Request::GetCapabilities),
            (Endpoint::GwAllocCheck, Request::GwAllocCheck),
            (Endpoint::DiscoverNew, Request::DiscoverNew),
            (Endpoint::DiscoverDelete, Request::DiscoverDelete),
            (
                Endpoint::ProgramExternalConnectivity,
                Request::ProgramExternalConnectivity { network_id: None },
            ),
            (
                Endpoint::RevokeExternalConnectivity,
                Request::RevokeExternalConnectivity { network_id: None },
            ),
            (
                Endpoint::AllocateNetwork,
                Request::AllocateNetwork { network_id: None },
            ),
            (
                Endpoint::FreeNetwork,
                Request::FreeNetwork { network_id: None },
            ),
        ];
        for (endpoint, expected) in cases {
            for body in [&b""[..], b"  \n", b"null", b"{}"] {
                assert_eq!(
                    decode_request(endpoint.path(), body).unwrap(),
                    expected,
                    "{endpoint}"
                );
            }
            let err = decode_request(endpoint.path(), b"{not json").unwrap_err();
            assert_eq!(err.http_status(), 400, "{endpoint}");
            let err = decode_request(endpoint.path(), b"[1]").unwrap_err();
            assert!(err.to_string().contains("expected a JSON object"), "{err}");
        }
    }

    #[test]
    fn endpoints_with_input_reject_empty_bodies() {
        for endpoint in Endpoint::ALL.into_iter().filter(|e| e.needs_body()) {
            for body in [&b""[..], b"null"] {
                let err = decode_request(endpoint.path(), body).unwrap_err();
                assert_eq!(err.http_status(), 400);
                assert!(err.to_string().contains("body is empty"), "{err}");
            }
            let err = decode_request(endpoint.path(), b"{}").unwrap_err();
            assert!(
                err.to_string().contains("missing field NetworkID"),
                "{endpoint}: {err}"
            );
        }
    }

    #[test]
    fn optional_calls_log_their_network_id() {
        let request = decode(
            Endpoint::ProgramExternalConnectivity,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {}}),
        )
        .unwrap();
        assert_eq!(request.network_id(), Some(&id(NET)));
        let request = decode(Endpoint::FreeNetwork, json!({"NetworkID": NET})).unwrap();
        assert_eq!(
            request,
            Request::FreeNetwork {
                network_id: Some(id(NET))
            }
        );
        let err = decode(Endpoint::AllocateNetwork, json!({"NetworkID": "x"})).unwrap_err();
        assert!(err.to_string().contains("not a Docker ID"), "{err}");
        let request = decode(
            Endpoint::DiscoverNew,
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.2", "self": true}}),
        )
        .unwrap();
        assert_eq!(request, Request::DiscoverNew);
    }

    #[test]
    fn create_network_takes_mac_and_first_ipv4_gateway() {
        let request = decode(
            Endpoint::CreateNetwork,
            create_body(json!("FA:16:3E:12:34:56")),
        )
        .unwrap();
        assert_eq!(
            request,
            Request::CreateNetwork(CreateNetwork {
                network_id: id(NET),
                hostnic_mac: "fa:16:3e:12:34:56".parse().unwrap(),
                ipv4_gateway: Some("10.0.0.1".parse().unwrap()),
            })
        );
        assert_eq!(request.network_id(), Some(&id(NET)));
    }

    #[test]
    fn create_network_without_ipv4_data_does_not_crash() {
        for ipv4 in [
            json!(null),
            json!([]),
            json!([{"AddressSpace": "x", "Pool": "10.0.0.0/24"}]),
        ] {
            let mut body = create_body(json!("fa:16:3e:12:34:56"));
            body["IPv4Data"] = ipv4;
            let Request::CreateNetwork(create) = decode(Endpoint::CreateNetwork, body).unwrap()
            else {
                panic!("wrong request");
            };
            assert_eq!(create.ipv4_gateway, None);
        }
        let mut body = create_body(json!("fa:16:3e:12:34:56"));
        body.as_object_mut().unwrap().remove("IPv4Data");
        body["IPv6Data"] =
            json!([{"AddressSpace": "x", "Pool": "fd00::/64", "Gateway": "fd00::1/64"}]);
        assert!(decode(Endpoint::CreateNetwork, body).is_ok());
    }

    #[test]
    fn create_network_reports_bad_input_by_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                create_body(json!("")),
                "missing field Options[\"com.docker.network.generic\"][\"hostnic_mac\"]",
            ),
            (
                create_body(json!(null)),
                "hostnic_mac=<MAC of the tenant NIC>",
            ),
            (create_body(json!("fa:16:3e")), "is not a unicast MAC"),
            (create_body(json!(42)), "expected a string, found a number"),
            (json!({"NetworkID": NET}), "missing field Options"),
            (
                json!({"NetworkID": NET, "Options": {"com.docker.network.generic": "x"}}),
                "expected an object of -o key=value options",
            ),
            (
                json!({"NetworkID": "ABC", "Options": {}}),
                "field NetworkID is invalid",
            ),
            (
                json!({"NetworkID": 7}),
                "field NetworkID is invalid: expected a string, found a number",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(Endpoint::CreateNetwork, body.clone()).unwrap_err();
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
        let mut body = create_body(json!("fa:16:3e:12:34:56"));
        body["IPv4Data"][0]["Gateway"] = json!("fd00::1/64");
        assert!(
            decode(Endpoint::CreateNetwork, body)
                .unwrap_err()
                .to_string()
                .contains("IPv4Data[0].Gateway")
        );
        let mut body = create_body(json!("fa:16:3e:12:34:56"));
        body["IPv4Data"] = json!(["10.0.0.0/24"]);
        assert!(
            decode(Endpoint::CreateNetwork, body)
                .unwrap_err()
                .to_string()
                .contains("IPv4Data[0] is invalid")
        );
        let mut body = create_body(json!("fa:16:3e:12:34:56"));
        body["IPv4Data"][0]["Gateway"] = json!("gateway");
        assert!(
            decode(Endpoint::CreateNetwork, body)
                .unwrap_err()
                .to_string()
                .contains("CIDR form")
        );
        let mut body = create_body(json!("fa:16:3e:12:34:56"));
        body["IPv6Data"] = json!({});
        assert!(
            decode(Endpoint::CreateNetwork, body)
                .unwrap_err()
                .to_string()
                .contains("field IPv6Data is invalid")
        );
    }

    #[test]
    fn ids_accept_docker_and_swarm_shapes_only() {
        assert!(DockerId::parse(NET).is_ok());
        assert!(DockerId::parse("0123456789abcdefghijklmno").is_ok());
        for bad in [
            "",
            "abc",
            &NET.to_uppercase(),
            &format!("{NET}0"),
            "0123456789abcdefghijklmn/",
        ] {
            assert!(DockerId::parse(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(200);
        let Err(err) = DockerId::parse(&long) else {
            panic!("not an ID");
        };
        assert_eq!(
            err,
            DockerIdError::Malformed {
                shown: "x".repeat(80)
            }
        );
        assert!(err.to_string().contains("is not a Docker ID"), "{err}");
    }

    #[test]
    fn delete_network_needs_its_id() {
        assert_eq!(
            decode(Endpoint::DeleteNetwork, json!({"NetworkID": NET})).unwrap(),
            Request::DeleteNetwork {
                network_id: id(NET)
            }
        );
        assert!(
            decode(Endpoint::DeleteNetwork, json!({"NetworkID": ""}))
                .unwrap_err()
                .to_string()
                .contains("missing field NetworkID")
        );
    }

    #[test]
    fn create_endpoint_reads_a_user_mac_only_when_set() {
        let base = json!({"NetworkID": NET, "EndpointID": EP, "Options": {}, "Interface": {"Address": "10.0.0.5/24", "MacAddress": ""}});
        assert_eq!(
            decode(Endpoint::CreateEndpoint, base.clone()).unwrap(),
            Request::CreateEndpoint(CreateEndpoint {
                ids: ids(),
                interface_mac: None
            })
        );
        let mut with_mac = base.clone();
        with_mac["Interface"]["MacAddress"] = json!("02:42:ac:11:00:02");
        let Request::CreateEndpoint(create) = decode(Endpoint::CreateEndpoint, with_mac).unwrap()
        else {
            panic!("wrong request");
        };
        assert_eq!(
            create.interface_mac,
            Some("02:42:ac:11:00:02".parse().unwrap())
        );
        let mut bad = base;
        bad["Interface"] = json!("eth0");
        assert!(
            decode(Endpoint::CreateEndpoint, bad)
                .unwrap_err()
                .to_string()
                .contains("field Interface is invalid")
        );
        let err = decode(Endpoint::CreateEndpoint, json!({"NetworkID": NET})).unwrap_err();
        assert!(
            err.to_string().contains("missing field EndpointID"),
            "{err}"
        );
    }

    #[test]
    fn endpoint_calls_need_both_ids() {
        let body = json!({"NetworkID": NET, "EndpointID": EP});
        assert_eq!(
            decode(Endpoint::EndpointOperInfo, body.clone()).unwrap(),
            Request::EndpointOperInfo(ids())
        );
        assert_eq!(
            decode(Endpoint::DeleteEndpoint, body.clone()).unwrap(),
            Request::DeleteEndpoint(ids())
        );
        assert_eq!(
            decode(Endpoint::Leave, body).unwrap(),
            Request::Leave(ids())
        );
        for endpoint in [
            Endpoint::EndpointOperInfo,
            Endpoint::DeleteEndpoint,
            Endpoint::Leave,
        ] {
            let err = decode(endpoint, json!({"NetworkID": NET, "EndpointID": ["x"]})).unwrap_err();
            assert!(
                err.to_string()
                    .contains("EndpointID is invalid: expected a string, found a list"),
                "{err}"
            );
        }
    }

    #[test]
    fn join_accepts_any_absolute_sandbox_path() {
        for key in [
            "/var/run/docker/netns/0123456789ab",
            "/run/user/1000/docker/netns/default",
            "/srv/exec/netns/x",
        ] {
            let body =
                json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": key, "Options": null});
            assert_eq!(
                decode(Endpoint::Join, body).unwrap(),
                Request::Join(Join {
                    ids: ids(),
                    sandbox_key: PathBuf::from(key)
                })
            );
        }
        for (key, expected) in [
            (json!("netns/abc"), "absolute path"),
            (json!("/"), "bare directory"),
            (json!("/a\u{0}b"), "NUL"),
            (json!(""), "missing field SandboxKey"),
            (json!(5), "expected a string"),
        ] {
            let body = json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": key});
            let err = decode(Endpoint::Join, body).unwrap_err();
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().contains(expected), "{err}");
        }
        let body = json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x/y", "Options": []});
        assert!(
            decode(Endpoint::Join, body)
                .unwrap_err()
                .to_string()
                .contains("field Options is invalid")
        );
    }

    #[test]
    fn responses_serialise_as_docker_expects() {
        let join = Response::Join(JoinResponse {
            interface_name: InterfaceName {
                src_name: "ens4".into(),
                dst_prefix: "eth",
            },
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            static_routes: vec![
                StaticRoute {
                    destination: "192.168.0.0/16".parse().unwrap(),
                    route_type: RouteType::NextHop,
                    next_hop: Some("10.0.0.254".parse().unwrap()),
                },
                StaticRoute {
                    destination: "fd01::/64".parse().unwrap(),
                    route_type: RouteType::Connected,
                    next_hop: None,
                },
            ],
            disable_gateway_service: true,
        });
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({
                "InterfaceName": {"SrcName": "ens4", "DstPrefix": "eth"},
                "Gateway": "10.0.0.1",
                "StaticRoutes": [
                    {"Destination": "192.168.0.0/16", "RouteType": 0, "NextHop": "10.0.0.254"},
                    {"Destination": "fd01::/64", "RouteType": 1}
                ],
                "DisableGatewayService": true
            })
        );
        assert_eq!(
            serde_json::to_string(&Response::Empty(EmptyResponse {})).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_value(Response::GwAllocCheck(GwAllocCheckResponse {
                skip_ipv4: true,
                skip_ipv6: true
            }))
            .unwrap(),
            json!({"SkipIPv4": true, "SkipIPv6": true})
        );
        assert_eq!(
            serde_json::to_value(ErrorResponse { err: "x".into() }).unwrap(),
            json!({"Err": "x"})
        );
    }
}
