//! What the driver does for each call, independent of HTTP.
//!
//! # Why `Join` never returns `GatewayIPv6`
//!
//! Docker installs `GatewayIPv6` with an exclusive route add (`NLM_F_CREATE|NLM_F_EXCL`) after it
//! has set the NIC up in the sandbox. If a Router Advertisement arrives first, the kernel has
//! already installed an IPv6 default route (same prefix, same metric 1024) and Docker's add fails
//! with EEXIST ("file exists"), aborting the container start (moby #50898, libnetwork #2455).
//! Returning the gateway as a `::/0` static route does not help: it is added the same exclusive
//! way. Disabling RAs beforehand is not possible from the plugin either:
//! - per-interface IPv6 settings (`accept_ra`, `accept_ra_defrtr`) are reset to the target
//!   namespace's defaults when a link changes namespace (measured on a veth: `accept_ra=0` set
//!   before the move reads `1` after it), so setting them on the NIC before Docker moves it is
//!   lost;
//! - the sandbox namespace usually does not exist yet at `Join` time (Docker creates container
//!   sandboxes with an external key: the namespace appears only in the prestart hook, after
//!   `Join`), so its `default` settings cannot be changed either.
//!
//! Trove records `ipv6_gateway` only for `dhcpv6-stateful` subnets, i.e. only when Neutron runs a
//! router advertisement daemon on the subnet (`ipv6_ra_mode` set). The IPv6 default route is
//! therefore always announced by RA, exactly as for SLAAC ports, and leaving it to the kernel
//! closes the race completely instead of narrowing it. `::/0` host routes are skipped for the
//! same reason. `DisableGatewayService` is always set, so Docker never falls back to
//! `docker_gwbridge` (Docker 20.10 counts only the IPv4 `Gateway` when deciding): a NAT path
//! through the VM would defeat the isolation this plugin exists for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ipnet::IpNet;
use netiso_config::tenant_nic::{Ipv6Gateway, MacAddress, TenantIpv6, TenantNic, TenantNicError};

use crate::locator::{LocateError, NicLocator};
use crate::protocol::{
    ActivateResponse, AllocateNetworkResponse, CapabilitiesResponse, CreateEndpoint, CreateNetwork,
    DockerId, EmptyResponse, EndpointOperInfoResponse, EndpointRef, GwAllocCheckResponse,
    InterfaceName, Join, JoinResponse, Request, Response, RouteType, StaticRoute,
};
use crate::state::{NetworkEntry, StateError, StateStore};

/// The prefix Docker gives the NIC inside the container (`eth0` with one network).
pub const DST_PREFIX: &str = "eth";

/// Failures of a driver call; each says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The network is not in the state file.
    #[error(
        "network {network_id} is not known to docker-hostnic (state file {state_file}){hint}; recreate it with `docker network rm` and `docker network create --driver docker-hostnic -o hostnic_mac=<MAC> ...`"
    )]
    UnknownNetwork {
        /// The network.
        network_id: DockerId,
        /// The state file.
        state_file: PathBuf,
        /// Mentions a corrupt state file moved aside at start-up.
        hint: String,
    },
    /// `CreateNetwork` repeated with another MAC.
    #[error(
        "network {network_id} already exists for NIC {existing}, not {requested}; delete the network first, or create a new one for the new NIC"
    )]
    MacConflict {
        /// The network.
        network_id: DockerId,
        /// Stored MAC.
        existing: MacAddress,
        /// Requested MAC.
        requested: MacAddress,
    },
    /// The container was started with `--mac-address`, which would overwrite the Neutron MAC.
    #[error(
        "the endpoint asks for MAC {requested}, but the tenant NIC's MAC {nic} must stay as Neutron assigned it; start the container without --mac-address"
    )]
    MacOverride {
        /// MAC requested by Docker.
        requested: MacAddress,
        /// The NIC's MAC.
        nic: MacAddress,
    },
    /// `eth1.json` describes another NIC than the network was created for.
    #[error(
        "network {network_id} was created for NIC {network_mac}, but the tenant NIC file {file} describes {file_mac}; the port changed: recreate the Docker network for the new NIC"
    )]
    TenantMacMismatch {
        /// The network.
        network_id: DockerId,
        /// MAC in the state file.
        network_mac: MacAddress,
        /// The tenant NIC file.
        file: PathBuf,
        /// MAC in that file.
        file_mac: MacAddress,
    },
    /// The NIC is inside another sandbox (a container still running, a stale namespace).
    #[error(
        "the tenant NIC {mac} is not in the plugin's network namespace: it is held by sandbox {sandbox}; stop the container using it, or release that namespace (stale process, bind mount or `ip netns exec` shell)"
    )]
    NicHeldBySandbox {
        /// The NIC.
        mac: MacAddress,
        /// The namespace file holding it.
        sandbox: PathBuf,
    },
    /// The NIC is nowhere to be found.
    #[error(
        "no link with MAC {mac} in the plugin's network namespace, nor in any sandbox under {sandbox_dir}; check that the Neutron port is attached to this VM (`ip -br link`)"
    )]
    NicNotFound {
        /// The NIC.
        mac: MacAddress,
        /// The sandbox directory searched.
        sandbox_dir: PathBuf,
    },
    /// The tenant NIC file is missing or invalid (netiso-config names the file and the key).
    #[error(
        "cannot use the tenant NIC file {}: {}; Trove injects it when the instance is created or rebuilt: fix or restore the file, or rebuild the instance",
        .0.file.display(),
        .0.problem
    )]
    TenantNic(#[from] TenantNicError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Link lookup failed.
    #[error("cannot look up the tenant NIC: {0}")]
    Locate(#[from] LocateError),
}

impl DriverError {
    /// The HTTP status Docker receives.
    pub fn http_status(&self) -> u16 {
        match self {
            DriverError::UnknownNetwork { .. } | DriverError::NicNotFound { .. } => 404,
            DriverError::MacOverride { .. } => 400,
            DriverError::MacConflict { .. }
            | DriverError::TenantMacMismatch { .. }
            | DriverError::NicHeldBySandbox { .. }
            | DriverError::Locate(LocateError::Ambiguous { .. }) => 409,
            DriverError::TenantNic(_) | DriverError::State(_) | DriverError::Locate(_) => 500,
        }
    }
}

/// The driver: state, tenant NIC file and NIC lookup. Calls block (file I/O, namespace scans);
/// run them off the async executor.
pub struct Driver {
    state: Mutex<StateStore>,
    tenant_nic_file: PathBuf,
    locator: Arc<dyn NicLocator>,
}

impl Driver {
    /// A driver over an opened state store.
    pub fn new(state: StateStore, tenant_nic_file: PathBuf, locator: Arc<dyn NicLocator>) -> Self {
        Self {
            state: Mutex::new(state),
            tenant_nic_file,
            locator,
        }
    }

    /// Answers one call.
    pub fn handle(&self, request: Request) -> Result<Response, DriverError> {
        match request {
            Request::Activate => Ok(Response::Activate(ActivateResponse {
                implements: vec!["NetworkDriver"],
            })),
            Request::GetCapabilities => Ok(Response::Capabilities(CapabilitiesResponse {
                scope: "local",
                connectivity_scope: "local",
                gw_alloc_checker: true,
            })),
            // The gateway is Neutron's router, never an address IPAM should hold back: reserving
            // one when the subnet has none could take the port's own fixed IP.
            Request::GwAllocCheck => Ok(Response::GwAllocCheck(GwAllocCheckResponse {
                skip_ipv4: true,
                skip_ipv6: true,
            })),
            Request::CreateNetwork(create) => self.create_network(create),
            Request::DeleteNetwork { network_id } => {
                if self.lock_state().remove(network_id.as_str())?.is_some() {
                    tracing::info!(%network_id, "network forgotten");
                }
                Ok(empty())
            }
            Request::CreateEndpoint(create) => self.create_endpoint(&create),
            Request::EndpointOperInfo(ids) => Ok(self.endpoint_oper_info(&ids)),
            Request::Join(join) => self.join(&join).map(Response::Join),
            Request::AllocateNetwork { .. } => {
                Ok(Response::AllocateNetwork(AllocateNetworkResponse::default()))
            }
            // Docker moves the NIC back to the host itself after Leave.
            Request::DeleteEndpoint(_)
            | Request::Leave(_)
            | Request::DiscoverNew
            | Request::DiscoverDelete
            | Request::ProgramExternalConnectivity { .. }
            | Request::RevokeExternalConnectivity { .. }
            | Request::FreeNetwork { .. } => Ok(empty()),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, StateStore> {
        // Writes go to disk before memory changes, so the store stays consistent after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_network(&self, create: CreateNetwork) -> Result<Response, DriverError> {
        let mut state = self.lock_state();
        if let Some(existing) = state.network(create.network_id.as_str()) {
            if existing.mac_address != create.hostnic_mac {
                return Err(DriverError::MacConflict {
                    network_id: create.network_id,
                    existing: existing.mac_address,
                    requested: create.hostnic_mac,
                });
            }
            tracing::info!(network_id = %create.network_id, mac = %create.hostnic_mac, "network already known; nothing to do");
            return Ok(empty());
        }
        if let Some((other, _)) = state
            .networks()
            .iter()
            .find(|(_, entry)| entry.mac_address == create.hostnic_mac)
        {
            tracing::warn!(network_id = %create.network_id, other_network = %other, mac = %create.hostnic_mac,
                "another network already uses this NIC; only one container can hold it at a time");
        }
        state.insert(
            create.network_id.as_str(),
            NetworkEntry::new(create.hostnic_mac, create.ipv4_gateway),
        )?;
        tracing::info!(network_id = %create.network_id, mac = %create.hostnic_mac, "network stored");
        Ok(empty())
    }

    fn network_mac(&self, network_id: &DockerId) -> Result<MacAddress, DriverError> {
        let mut state = self.lock_state();
        if let Some(entry) = state.network(network_id.as_str()) {
            return Ok(entry.mac_address);
        }
        let lost_now =
            state.set_aside().is_some() || state.rejected().get(network_id.as_str()).is_some();
        // The tenant file is read only when the state may have been lost.
        let tenant = (lost_now || state.earlier_set_aside().is_some())
            .then(|| TenantNic::read(&self.tenant_nic_file).ok())
            .flatten();
        let tenant_unserved = tenant.as_ref().is_some_and(|tenant| {
            !state
                .networks()
                .values()
                .any(|entry| entry.mac_address == tenant.mac_address)
        });
        // The state was lost: a corrupt file set aside at this start, or this network's
        // entry invalid, or a corrupt file set aside at an earlier start and the tenant NIC
        // in no network since (a restart in between found the emptied state valid). Docker
        // still has the network, and the only NIC a hostnic network ever carries is the
        // tenant NIC of the tenant file, so the network is taken back for it rather than
        // leaving the database unable to start until an operator recreates the network.
        let lost = lost_now || tenant_unserved;
        if lost && let Some(tenant) = tenant {
            let gateway = tenant
                .ipv4
                .as_ref()
                .and_then(|ipv4| ipv4.gateway)
                .map(IpAddr::V4);
            state.insert(
                network_id.as_str(),
                NetworkEntry::new(tenant.mac_address, gateway),
            )?;
            tracing::warn!(%network_id, mac = %tenant.mac_address, tenant_nic_file = %self.tenant_nic_file.display(),
                "a network unknown since the state was lost: taken back for the tenant NIC of the tenant file, and stored again");
            return Ok(tenant.mac_address);
        }
        Err(DriverError::UnknownNetwork {
            network_id: network_id.clone(),
            state_file: state.path().to_owned(),
            hint: match (state.rejected().get(network_id.as_str()), state.set_aside()) {
                (Some(rejected), _) => format!(
                    " (its entry, at position {} in the file counting from 0, is invalid: {})",
                    rejected.index, rejected.reason
                ),
                (None, Some(kept)) => format!(
                    " (a corrupt state file was moved aside to {} at start-up)",
                    kept.kept_as.display()
                ),
                (None, None) => state
                    .earlier_set_aside()
                    .map(|kept| {
                        format!(
                            " (a corrupt state file was moved aside to {} at an earlier start)",
                            kept.display()
                        )
                    })
                    .unwrap_or_default(),
            },
        })
    }

    fn create_endpoint(&self, create: &CreateEndpoint) -> Result<Response, DriverError> {
        let nic = self.network_mac(&create.ids.network_id)?;
        match create.interface_mac {
            Some(requested) if requested != nic => Err(DriverError::MacOverride { requested, nic }),
            // Docker already filled the interface from IPAM; answering with one would fail.
            _ => Ok(empty()),
        }
    }

    fn endpoint_oper_info(&self, ids: &EndpointRef) -> Response {
        let mut value = BTreeMap::new();
        if let Some(entry) = self.lock_state().network(ids.network_id.as_str()) {
            value.insert("hostnic_mac".to_owned(), entry.mac_address.to_string());
        }
        Response::EndpointOperInfo(EndpointOperInfoResponse { value })
    }

    fn join(&self, join: &Join) -> Result<JoinResponse, DriverError> {
        let network_id = &join.ids.network_id;
        let mac = self.network_mac(network_id)?;
        let tenant = TenantNic::read(&self.tenant_nic_file)?;
        if tenant.mac_address != mac {
            return Err(DriverError::TenantMacMismatch {
                network_id: network_id.clone(),
                network_mac: mac,
                file: self.tenant_nic_file.clone(),
                file_mac: tenant.mac_address,
            });
        }
        let src_name = self.locate(mac, &join.sandbox_key)?;
        if let Some(TenantIpv6 {
            gateway: Ipv6Gateway::Dhcpv6Stateful(Some(gateway)),
            ..
        }) = &tenant.ipv6
        {
            tracing::debug!(%network_id, %gateway, "IPv6 default route left to router advertisements");
        }
        let gateway = tenant.ipv4.as_ref().and_then(|ipv4| ipv4.gateway);
        let static_routes = static_routes(&tenant, network_id);
        tracing::info!(
            %network_id,
            endpoint_id = %join.ids.endpoint_id,
            nic = %src_name,
            %mac,
            sandbox = %join.sandbox_key.display(),
            gateway = ?gateway,
            static_routes = static_routes.len(),
            "handing the tenant NIC to the sandbox"
        );
        Ok(JoinResponse {
            interface_name: InterfaceName {
                src_name,
                dst_prefix: DST_PREFIX,
            },
            gateway,
            static_routes,
            disable_gateway_service: true,
        })
    }

    fn locate(&self, mac: MacAddress, sandbox_key: &Path) -> Result<String, DriverError> {
        if let Some(name) = self.locator.find_in_plugin_ns(mac)? {
            return Ok(name);
        }
        let sandbox_dir = sandbox_key.parent().unwrap_or(Path::new("/")).to_owned();
        match self.locator.find_in_sandboxes(&sandbox_dir, mac)? {
            Some(sandbox) => Err(DriverError::NicHeldBySandbox { mac, sandbox }),
            None => Err(DriverError::NicNotFound { mac, sandbox_dir }),
        }
    }
}

fn empty() -> Response {
    Response::Empty(EmptyResponse {})
}

/// Host routes of both families; default routes that Docker would collide with are skipped.
fn static_routes(tenant: &TenantNic, network_id: &DockerId) -> Vec<StaticRoute> {
    let has_ipv4_gateway = tenant
        .ipv4
        .as_ref()
        .is_some_and(|ipv4| ipv4.gateway.is_some());
    let ipv4 = tenant
        .ipv4
        .iter()
        .flat_map(|ipv4| &ipv4.host_routes)
        .map(|route| {
            let collides = route.destination.prefix_len() == 0 && has_ipv4_gateway;
            (
                IpNet::V4(route.destination.trunc()),
                IpAddr::V4(route.nexthop),
                collides,
            )
        });
    let ipv6 = tenant
        .ipv6
        .iter()
        .flat_map(|ipv6| &ipv6.host_routes)
        .map(|route| {
            let collides = route.destination.prefix_len() == 0;
            (
                IpNet::V6(route.destination.trunc()),
                IpAddr::V6(route.nexthop),
                collides,
            )
        });
    ipv4.chain(ipv6)
        .filter_map(|(destination, nexthop, collides)| {
            if collides {
                tracing::warn!(%network_id, %destination,
                    "skipping a default host route: the default route comes from the gateway or router advertisements");
                return None;
            }
            Some(to_static_route(destination, nexthop))
        })
        .collect()
}

/// Neutron requires a next hop on every host route; `0.0.0.0` or `::` there means on-link (as
/// for a DHCP option 121 router), answered as a connected route with no next hop.
fn to_static_route(destination: IpNet, nexthop: IpAddr) -> StaticRoute {
    let next_hop = Some(nexthop).filter(|hop| !hop.is_unspecified());
    StaticRoute {
        destination,
        route_type: if next_hop.is_some() {
            RouteType::NextHop
        } else {
            RouteType::Connected
        },
        next_hop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Endpoint, decode_request};
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    const NET: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
    const EP: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const MAC: &str = "fa:16:3e:12:34:56";

    /// A locator with fixed answers that records the sandbox directories it was asked about.
    #[derive(Default)]
    struct FakeLocator {
        plugin_ns: HashMap<MacAddress, String>,
        sandboxes: HashMap<MacAddress, PathBuf>,
        ambiguous: bool,
        asked_dirs: StdMutex<Vec<PathBuf>>,
    }

    impl NicLocator for FakeLocator {
        fn find_in_plugin_ns(&self, mac: MacAddress) -> Result<Option<String>, LocateError> {
            if self.ambiguous {
                return Err(LocateError::Ambiguous {
                    mac,
                    names: vec!["ens4".into(), "ens4.10".into()],
                });
            }
            Ok(self.plugin_ns.get(&mac).cloned())
        }

        fn find_in_sandboxes(
            &self,
            sandbox_dir: &Path,
            mac: MacAddress,
        ) -> Result<Option<PathBuf>, LocateError> {
            self.asked_dirs.lock().unwrap().push(sandbox_dir.to_owned());
            Ok(self.sandboxes.get(&mac).cloned())
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        driver: Driver,
        locator: Arc<FakeLocator>,
    }

    impl Fixture {
        fn new(locator: FakeLocator, eth1: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("eth1.json"), eth1).unwrap();
            let locator = Arc::new(locator);
            let state = StateStore::open(&dir.path().join("hostnic.json")).unwrap();
            let driver = Driver::new(state, dir.path().join("eth1.json"), locator.clone());
            Self {
                dir,
                driver,
                locator,
            }
        }

        fn call(&self, endpoint: Endpoint, body: Value) -> Result<Value, DriverError> {
            let body = if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            };
            let request = decode_request(endpoint.path(), &body).unwrap();
            self.driver
                .handle(request)
                .map(|response| serde_json::to_value(response).unwrap())
        }

        fn create(&self, mac: &str) -> Result<Value, DriverError> {
            self.call(
                Endpoint::CreateNetwork,
                json!({"NetworkID": NET, "Options": {"com.docker.network.generic": {"hostnic_mac": mac}},
                       "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}], "IPv6Data": []}),
            )
        }

        fn join(&self) -> Result<Value, DriverError> {
            self.call(
                Endpoint::Join,
                json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/srv/docker/netns/0123456789ab", "Options": {}}),
            )
        }
    }

    fn mac(text: &str) -> MacAddress {
        text.parse().unwrap()
    }

    fn nic_in_plugin_ns() -> FakeLocator {
        FakeLocator {
            plugin_ns: HashMap::from([(mac(MAC), "ens4".to_owned())]),
            ..FakeLocator::default()
        }
    }

    const ETH1_SLAAC: &str = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1", "ipv4_host_routes": [], "ipv6_address": "fd00::f816:3eff:fe12:3456", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": []}"#;

    #[test]
    fn activate_capabilities_and_gateway_check() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        assert_eq!(
            fixture.call(Endpoint::Activate, Value::Null).unwrap(),
            json!({"Implements": ["NetworkDriver"]})
        );
        assert_eq!(
            fixture
                .call(Endpoint::GetCapabilities, Value::Null)
                .unwrap(),
            json!({"Scope": "local", "ConnectivityScope": "local", "GwAllocChecker": true})
        );
        assert_eq!(
            fixture
                .call(Endpoint::GwAllocCheck, json!({"Options": {}}))
                .unwrap(),
            json!({"SkipIPv4": true, "SkipIPv6": true})
        );
    }

    #[test]
    fn no_op_endpoints_answer_empty_objects() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        let ids = json!({"NetworkID": NET, "EndpointID": EP});
        for endpoint in [
            Endpoint::DeleteEndpoint,
            Endpoint::Leave,
            Endpoint::ProgramExternalConnectivity,
            Endpoint::RevokeExternalConnectivity,
            Endpoint::FreeNetwork,
        ] {
            assert_eq!(
                fixture.call(endpoint, ids.clone()).unwrap(),
                json!({}),
                "{endpoint}"
            );
        }
        for endpoint in [Endpoint::DiscoverNew, Endpoint::DiscoverDelete] {
            assert_eq!(
                fixture
                    .call(endpoint, json!({"DiscoveryType": 1, "DiscoveryData": {}}))
                    .unwrap(),
                json!({})
            );
        }
        assert_eq!(
            fixture
                .call(Endpoint::AllocateNetwork, json!({"NetworkID": NET}))
                .unwrap(),
            json!({"Options": {}})
        );
    }

    #[test]
    fn create_network_is_persistent_and_idempotent() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        assert_eq!(fixture.create(MAC).unwrap(), json!({}));
        assert_eq!(
            fixture.create("FA:16:3E:12:34:56").unwrap(),
            json!({}),
            "same MAC in another spelling"
        );
        let state: Value = serde_json::from_slice(
            &std::fs::read(fixture.dir.path().join("hostnic.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state,
            json!({NET: {"mac_address": MAC, "gateway": "10.0.0.1"}})
        );

        let err = fixture.create("fa:16:3e:00:00:99").unwrap_err();
        assert_eq!(err.http_status(), 409);
        assert!(
            err.to_string()
                .contains("already exists for NIC fa:16:3e:12:34:56"),
            "{err}"
        );

        assert_eq!(
            fixture
                .call(Endpoint::DeleteNetwork, json!({"NetworkID": NET}))
                .unwrap(),
            json!({})
        );
        assert_eq!(
            fixture
                .call(Endpoint::DeleteNetwork, json!({"NetworkID": NET}))
                .unwrap(),
            json!({}),
            "idempotent"
        );
        let state: Value = serde_json::from_slice(
            &std::fs::read(fixture.dir.path().join("hostnic.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state, json!({}));
        assert_eq!(
            fixture.create("fa:16:3e:00:00:99").unwrap(),
            json!({}),
            "a deleted network can be recreated"
        );
    }

    #[test]
    fn create_endpoint_rejects_a_mac_override_and_unknown_networks() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        let body = |mac: &str| json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.0.0.15/24", "MacAddress": mac}});
        let err = fixture
            .call(Endpoint::CreateEndpoint, body(""))
            .unwrap_err();
        assert_eq!(err.http_status(), 404);
        assert!(
            err.to_string().contains("not known to docker-hostnic"),
            "{err}"
        );

        fixture.create(MAC).unwrap();
        assert_eq!(
            fixture.call(Endpoint::CreateEndpoint, body("")).unwrap(),
            json!({})
        );
        assert_eq!(
            fixture.call(Endpoint::CreateEndpoint, body(MAC)).unwrap(),
            json!({})
        );
        let err = fixture
            .call(Endpoint::CreateEndpoint, body("02:42:ac:11:00:02"))
            .unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(err.to_string().contains("without --mac-address"), "{err}");
    }

    #[test]
    fn endpoint_oper_info_shows_the_nic() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        let ids = json!({"NetworkID": NET, "EndpointID": EP});
        assert_eq!(
            fixture
                .call(Endpoint::EndpointOperInfo, ids.clone())
                .unwrap(),
            json!({"Value": {}})
        );
        fixture.create(MAC).unwrap();
        assert_eq!(
            fixture.call(Endpoint::EndpointOperInfo, ids).unwrap(),
            json!({"Value": {"hostnic_mac": MAC}})
        );
    }

    #[test]
    fn join_answers_the_nic_gateway_and_no_gwbridge() {
        let fixture = Fixture::new(nic_in_plugin_ns(), ETH1_SLAAC);
        fixture.create(MAC).unwrap();
        assert_eq!(
            fixture.join().unwrap(),
            json!({"InterfaceName": {"SrcName": "ens4", "DstPrefix": "eth"}, "Gateway": "10.0.0.1", "DisableGatewayService": true})
        );
        assert!(
            fixture.locator.asked_dirs.lock().unwrap().is_empty(),
            "no sandbox scan when the NIC is at hand"
        );
    }

    #[test]
    fn join_routes_both_families_with_route_types_and_never_an_ipv6_gateway() {
        let eth1 = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1",
            "ipv4_host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}, {"destination": "0.0.0.0/0", "nexthop": "10.0.0.2"}, {"destination": "172.16.0.0/12", "nexthop": "0.0.0.0"}],
            "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_gateway": "fd00::1",
            "ipv6_host_routes": [{"destination": "fd01::/64", "nexthop": "fd00::fe"}, {"destination": "::/0", "nexthop": "fd00::1"}, {"destination": "fd02::1/64", "nexthop": "::"}]}"#;
        let fixture = Fixture::new(nic_in_plugin_ns(), eth1);
        fixture.create(MAC).unwrap();
        assert_eq!(
            fixture.join().unwrap(),
            json!({
                "InterfaceName": {"SrcName": "ens4", "DstPrefix": "eth"},
                "Gateway": "10.0.0.1",
                "StaticRoutes": [
                    {"Destination": "192.168.0.0/16", "RouteType": 0, "NextHop": "10.0.0.254"},
                    {"Destination": "172.16.0.0/12", "RouteType": 1},
                    {"Destination": "fd01::/64", "RouteType": 0, "NextHop": "fd00::fe"},
                    {"Destination": "fd02::/64", "RouteType": 1}
                ],
                "DisableGatewayService": true
            })
        );
    }

    #[test]
    fn join_without_ipv4_gateway_keeps_a_default_host_route_and_disables_gwbridge() {
        let eth1 = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": null, "ipv4_host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.2"}]}"#;
        let fixture = Fixture::new(nic_in_plugin_ns(), eth1);
        fixture.create(MAC).unwrap();
        assert_eq!(
            fixture.join().unwrap(),
            json!({
                "InterfaceName": {"SrcName": "ens4", "DstPrefix": "eth"},
                "StaticRoutes": [{"Destination": "0.0.0.0/0", "RouteType": 0, "NextHop": "10.0.0.2"}],
                "DisableGatewayService": true
            })
        );
    }

    #[test]
    fn join_for_an_unknown_network_says_so() {
        let fixture = Fixture::new(nic_in_plugin_ns(), ETH1_SLAAC);
        let err = fixture.join().unwrap_err();
        assert_eq!(err.http_status(), 404);
        assert!(
            err.to_string().contains(NET) && err.to_string().contains("hostnic.json"),
            "{err}"
        );
    }

    #[test]
    fn unknown_network_errors_mention_a_state_file_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hostnic.json"), "{\"trunc").unwrap();
        let state = StateStore::open(&dir.path().join("hostnic.json")).unwrap();
        let driver = Driver::new(
            state,
            dir.path().join("eth1.json"),
            Arc::new(nic_in_plugin_ns()),
        );
        let request = decode_request(
            Endpoint::Join.path(),
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/a/b"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let err = driver.handle(request).unwrap_err();
        assert!(
            err.to_string().contains("moved aside to") && err.to_string().contains("corrupt-"),
            "{err}"
        );
    }

    #[test]
    fn a_network_lost_with_a_corrupt_state_file_is_taken_back_for_the_tenant_nic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hostnic.json"), "{\"trunc").unwrap();
        std::fs::write(dir.path().join("eth1.json"), ETH1_SLAAC).unwrap();
        let state = StateStore::open(&dir.path().join("hostnic.json")).unwrap();
        let driver = Driver::new(
            state,
            dir.path().join("eth1.json"),
            Arc::new(nic_in_plugin_ns()),
        );
        let request = decode_request(
            Endpoint::Join.path(),
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/srv/docker/netns/0123456789ab"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let answer = serde_json::to_value(driver.handle(request).unwrap()).unwrap();
        assert_eq!(answer["InterfaceName"]["SrcName"], "ens4", "{answer}");
        let stored = StateStore::open(&dir.path().join("hostnic.json")).unwrap();
        let entry = stored.network(NET).expect("stored again");
        assert_eq!(entry.mac_address, mac(MAC));
        assert_eq!(entry.gateway, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_loss_outlives_a_restart_until_the_tenant_nic_is_in_a_network_again() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("hostnic.json");
        std::fs::write(&state_file, "{\"trunc").unwrap();
        std::fs::write(dir.path().join("eth1.json"), ETH1_SLAAC).unwrap();
        drop(StateStore::open(&state_file).unwrap());
        // The next start finds the emptied state valid; the copy set aside remembers the loss.
        let state = StateStore::open(&state_file).unwrap();
        assert!(state.set_aside().is_none());
        assert!(state.earlier_set_aside().is_some());
        let driver = Driver::new(
            state,
            dir.path().join("eth1.json"),
            Arc::new(nic_in_plugin_ns()),
        );
        let join = |network: &str| {
            let request = decode_request(
                Endpoint::Join.path(),
                json!({"NetworkID": network, "EndpointID": EP, "SandboxKey": "/srv/docker/netns/0123456789ab"})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            driver.handle(request)
        };
        join(NET).expect("taken back after the restart");
        let other = "ab".repeat(32);
        let refused = join(&other).unwrap_err();
        assert_eq!(
            refused.http_status(),
            404,
            "the tenant NIC is served again: no other unknown network is taken"
        );
        assert!(
            refused.to_string().contains("at an earlier start"),
            "{refused}"
        );
    }

    #[test]
    fn an_unknown_network_is_not_taken_when_no_state_was_lost() {
        let fixture = Fixture::new(nic_in_plugin_ns(), ETH1_SLAAC);
        assert_eq!(fixture.join().unwrap_err().http_status(), 404);
        let stored = StateStore::open(&fixture.dir.path().join("hostnic.json")).unwrap();
        assert!(stored.network(NET).is_none());
    }

    #[test]
    fn join_reports_which_sandbox_holds_the_nic() {
        let locator = FakeLocator {
            sandboxes: HashMap::from([(mac(MAC), PathBuf::from("/srv/docker/netns/fedcba987654"))]),
            ..FakeLocator::default()
        };
        let fixture = Fixture::new(locator, ETH1_SLAAC);
        fixture.create(MAC).unwrap();
        let err = fixture.join().unwrap_err();
        assert_eq!(err.http_status(), 409);
        assert!(
            err.to_string()
                .contains("held by sandbox /srv/docker/netns/fedcba987654"),
            "{err}"
        );
        assert_eq!(
            *fixture.locator.asked_dirs.lock().unwrap(),
            vec![PathBuf::from("/srv/docker/netns")]
        );
    }

    #[test]
    fn join_reports_a_nic_that_is_nowhere() {
        let fixture = Fixture::new(FakeLocator::default(), ETH1_SLAAC);
        fixture.create(MAC).unwrap();
        let err = fixture.join().unwrap_err();
        assert_eq!(err.http_status(), 404);
        assert!(
            err.to_string()
                .contains("no link with MAC fa:16:3e:12:34:56")
                && err.to_string().contains("/srv/docker/netns"),
            "{err}"
        );
    }

    #[test]
    fn join_refuses_ambiguous_links() {
        let fixture = Fixture::new(
            FakeLocator {
                ambiguous: true,
                ..FakeLocator::default()
            },
            ETH1_SLAAC,
        );
        fixture.create(MAC).unwrap();
        let err = fixture.join().unwrap_err();
        assert_eq!(err.http_status(), 409);
        assert!(err.to_string().contains("ens4, ens4.10"), "{err}");
    }

    #[test]
    fn join_refuses_a_tenant_file_for_another_port() {
        let fixture = Fixture::new(
            nic_in_plugin_ns(),
            &ETH1_SLAAC.replace("fa:16:3e:12:34:56", "fa:16:3e:99:99:99"),
        );
        fixture.create(MAC).unwrap();
        let err = fixture.join().unwrap_err();
        assert_eq!(err.http_status(), 409);
        assert!(
            err.to_string().contains("describes fa:16:3e:99:99:99"),
            "{err}"
        );
    }

    #[test]
    fn join_fails_closed_without_a_usable_tenant_file() {
        let fixture = Fixture::new(nic_in_plugin_ns(), "{\"mac_address\": ");
        fixture.create(MAC).unwrap();
        let file = fixture.dir.path().join("eth1.json");
        let names_file_and_fix = |err: &DriverError, problem: &str| {
            let text = err.to_string();
            assert_eq!(err.http_status(), 500, "{text}");
            assert!(
                text.contains(&format!("tenant NIC file {}", file.display()))
                    && text.contains(problem)
                    && text.contains("fix or restore the file, or rebuild the instance"),
                "{text}"
            );
        };
        names_file_and_fix(&fixture.join().unwrap_err(), "invalid JSON at line 1");
        std::fs::write(
            &file,
            r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_host_routes": [{"destination": "172.16.0.0/12", "nexthop": null}]}"#,
        )
        .unwrap();
        names_file_and_fix(
            &fixture.join().unwrap_err(),
            "`ipv4_host_routes[0].nexthop`: expected a string",
        );
        std::fs::remove_file(&file).unwrap();
        names_file_and_fix(&fixture.join().unwrap_err(), "cannot read");
    }

    #[test]
    fn networks_survive_a_driver_restart() {
        let fixture = Fixture::new(nic_in_plugin_ns(), ETH1_SLAAC);
        fixture.create(MAC).unwrap();
        let state = StateStore::open(&fixture.dir.path().join("hostnic.json")).unwrap();
        let restarted = Driver::new(
            state,
            fixture.dir.path().join("eth1.json"),
            fixture.locator.clone(),
        );
        let request = decode_request(
            Endpoint::Join.path(),
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/0123456789ab"}).to_string().as_bytes(),
        )
        .unwrap();
        let Response::Join(answer) = restarted.handle(request).unwrap() else {
            panic!("not a join answer");
        };
        assert_eq!(answer.interface_name.src_name, "ens4");
    }
}
