//! A recording, in-memory [`Rtnetlink`] (feature `test-support`): it keeps links, addresses,
//! routes and `accept_ra` values, applies the kernel's main side effects (a link set down
//! loses its routes; a removed address loses its connected routes), records every mutating
//! call, and can be told to fail one, so logic built on top is unit-tested without root.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Mutex, MutexGuard},
};

use ipnet::IpNet;

use crate::{
    Address, Link, MacAddress, NamespaceTarget, NetlinkError, Result, Route, RouteSpec, RouteType,
    Rtnetlink, Scope, VethSpec, model::PROTOCOL_BOOT,
};

/// A mutating call, as recorded by [`RecordingRtnetlink`]; fields mirror the arguments of
/// the [`Rtnetlink`] method of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `set_link_up`.
    SetLinkUp { index: u32, up: bool },
    /// `rename_link`.
    RenameLink { index: u32, name: String },
    /// `set_mtu`.
    SetMtu { index: u32, mtu: u32 },
    /// `set_alias`.
    SetAlias { index: u32, alias: String },
    /// `delete_link`.
    DeleteLink { index: u32 },
    /// `create_veth`.
    CreateVeth { name: String, peer_name: String },
    /// `move_link`.
    MoveLink {
        index: u32,
        new_name: Option<String>,
    },
    /// `add_address`.
    AddAddress { index: u32, address: IpNet },
    /// `delete_address`.
    DeleteAddress(Address),
    /// `add_route`.
    AddRoute(RouteSpec),
    /// `replace_route`.
    ReplaceRoute(RouteSpec),
    /// `delete_route`.
    DeleteRoute(Route),
    /// `set_accept_ra`.
    SetAcceptRa { ifname: String, value: u32 },
}

/// Which kind of call to fail (see [`RecordingRtnetlink::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `set_link_up`.
    SetLinkUp,
    /// `delete_address`.
    DeleteAddress,
    /// `delete_route`.
    DeleteRoute,
    /// `set_accept_ra`.
    SetAcceptRa,
    /// `links` (and every lookup built on it).
    Links,
}

#[derive(Default)]
struct State {
    links: BTreeMap<u32, Link>,
    addresses: Vec<Address>,
    routes: Vec<Route>,
    accept_ra: BTreeMap<String, u32>,
    calls: Vec<Call>,
    failures: Vec<(CallKind, i32)>,
    next_index: u32,
}

/// The recording fake.
#[derive(Default)]
pub struct RecordingRtnetlink {
    state: Mutex<State>,
}

impl std::fmt::Debug for RecordingRtnetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordingRtnetlink")
    }
}

fn not_found(what: String) -> NetlinkError {
    NetlinkError::NotFound {
        operation: what,
        message: None,
    }
}

impl RecordingRtnetlink {
    /// An empty namespace with only `lo` (index 1, up, `accept_ra` absent).
    pub fn new() -> Self {
        let fake = Self::default();
        {
            let mut state = fake.lock();
            state.next_index = 1;
        }
        fake.add_link("lo", None, true);
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a link and returns its index; non-loopback links get `accept_ra = 1`.
    pub fn add_link(&self, name: &str, mac: Option<MacAddress>, up: bool) -> u32 {
        let mut state = self.lock();
        let index = state.next_index;
        state.next_index += 1;
        let loopback = name == "lo";
        state.links.insert(
            index,
            Link {
                index,
                name: name.into(),
                mac,
                up,
                running: up,
                mtu: 1500,
                alias: None,
                kind: None,
                loopback,
            },
        );
        if !loopback {
            state.accept_ra.insert(name.into(), 1);
        }
        index
    }

    /// Puts an address on a link without recording a call (initial state).
    pub fn seed_address(&self, link_index: u32, address: IpNet) {
        self.lock().addresses.push(Address {
            link_index,
            address,
            peer: None,
            scope: Scope::Universe,
        });
    }

    /// Puts a route in the table without recording a call (initial state).
    pub fn seed_route(&self, route: Route) {
        self.lock().routes.push(route);
    }

    /// Makes the next call of `kind` fail with `errno`.
    pub fn fail_next(&self, kind: CallKind, errno: i32) {
        self.lock().failures.push((kind, errno));
    }

    /// The mutating calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Removes a link as if it had been moved to another namespace (no call recorded).
    pub fn take_link_away(&self, index: u32) {
        let mut state = self.lock();
        state.links.remove(&index);
        state.addresses.retain(|a| a.link_index != index);
        state.routes.retain(|r| !r.leaves_through(index));
    }

    fn check_failure(state: &mut State, kind: CallKind, operation: &str) -> Result<()> {
        if let Some(position) = state.failures.iter().position(|(k, _)| *k == kind) {
            let (_, errno) = state.failures.remove(position);
            return Err(NetlinkError::from_errno(
                operation,
                errno,
                Some("injected by RecordingRtnetlink".into()),
            ));
        }
        Ok(())
    }

    fn route_from_spec(spec: &RouteSpec) -> Route {
        Route {
            destination: spec.destination,
            gateway: spec.gateway,
            oif: spec.oif,
            table: spec.table,
            metric: spec.metric,
            source: spec.source,
            protocol: PROTOCOL_BOOT,
            scope: if spec.gateway.is_none() {
                Scope::Link
            } else {
                Scope::Universe
            },
            kind: RouteType::Unicast,
            multipath_oifs: Vec::new(),
        }
    }
}

/// A route built for seeding the fake: `destination` via `gateway` on link `oif`.
pub fn route(destination: &str, gateway: Option<&str>, oif: u32, metric: Option<u32>) -> Route {
    RecordingRtnetlink::route_from_spec(&RouteSpec {
        destination: destination
            .parse()
            .unwrap_or_else(|e| panic!("bad destination {destination}: {e}")),
        gateway: gateway.map(|g| g.parse().unwrap_or_else(|e| panic!("bad gateway {g}: {e}"))),
        oif: Some(oif),
        metric,
        table: crate::TABLE_MAIN,
        source: None,
    })
}

impl Rtnetlink for RecordingRtnetlink {
    fn links(&self) -> Result<Vec<Link>> {
        let mut state = self.lock();
        Self::check_failure(&mut state, CallKind::Links, "list links")?;
        Ok(state.links.values().cloned().collect())
    }

    fn link_by_name(&self, name: &str) -> Result<Link> {
        self.links()?
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| not_found(format!("get link {name}")))
    }

    fn link_by_index(&self, index: u32) -> Result<Link> {
        self.lock()
            .links
            .get(&index)
            .cloned()
            .ok_or_else(|| not_found(format!("get link #{index}")))
    }

    fn set_link_up(&self, index: u32, up: bool) -> Result<()> {
        let mut state = self.lock();
        Self::check_failure(&mut state, CallKind::SetLinkUp, "set link")?;
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| not_found(format!("set link #{index}")))?;
        link.up = up;
        link.running = up;
        if !up {
            // The kernel drops every route through a link that goes down.
            state.routes.retain(|r| !r.leaves_through(index));
        }
        state.calls.push(Call::SetLinkUp { index, up });
        Ok(())
    }

    fn rename_link(&self, index: u32, name: &str) -> Result<()> {
        let mut state = self.lock();
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| not_found(format!("rename link #{index}")))?;
        link.name = name.into();
        state.calls.push(Call::RenameLink {
            index,
            name: name.into(),
        });
        Ok(())
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let mut state = self.lock();
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| not_found(format!("set MTU #{index}")))?;
        link.mtu = mtu;
        state.calls.push(Call::SetMtu { index, mtu });
        Ok(())
    }

    fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let mut state = self.lock();
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| not_found(format!("set alias #{index}")))?;
        link.alias = Some(alias.to_owned()).filter(|a| !a.is_empty());
        state.calls.push(Call::SetAlias {
            index,
            alias: alias.into(),
        });
        Ok(())
    }

    fn delete_link(&self, index: u32) -> Result<()> {
        self.lock().calls.push(Call::DeleteLink { index });
        self.take_link_away(index);
        Ok(())
    }

    fn create_veth(&self, spec: VethSpec<'_>) -> Result<()> {
        self.add_link(spec.name, None, false);
        if spec.peer_namespace.is_none() {
            self.add_link(spec.peer_name, None, false);
        }
        self.lock().calls.push(Call::CreateVeth {
            name: spec.name.into(),
            peer_name: spec.peer_name.into(),
        });
        Ok(())
    }

    fn move_link(
        &self,
        index: u32,
        _target: NamespaceTarget<'_>,
        new_name: Option<&str>,
    ) -> Result<()> {
        self.link_by_index(index)?;
        self.lock().calls.push(Call::MoveLink {
            index,
            new_name: new_name.map(str::to_owned),
        });
        self.take_link_away(index);
        Ok(())
    }

    fn addresses(&self, link_index: Option<u32>) -> Result<Vec<Address>> {
        Ok(self
            .lock()
            .addresses
            .iter()
            .filter(|a| link_index.is_none_or(|i| a.link_index == i))
            .cloned()
            .collect())
    }

    fn add_address(&self, link_index: u32, address: IpNet) -> Result<()> {
        let mut state = self.lock();
        if state
            .addresses
            .iter()
            .any(|a| a.link_index == link_index && a.address == address)
        {
            return Err(NetlinkError::AlreadyExists {
                operation: format!("add address {address}"),
                message: None,
            });
        }
        state.addresses.push(Address {
            link_index,
            address,
            peer: None,
            scope: Scope::Universe,
        });
        state.calls.push(Call::AddAddress {
            index: link_index,
            address,
        });
        Ok(())
    }

    fn delete_address(&self, address: &Address) -> Result<()> {
        let mut state = self.lock();
        Self::check_failure(&mut state, CallKind::DeleteAddress, "delete address")?;
        let before = state.addresses.len();
        state
            .addresses
            .retain(|a| !(a.link_index == address.link_index && a.address == address.address));
        if state.addresses.len() == before {
            return Err(not_found(format!("delete address {}", address.address)));
        }
        // The connected route of the prefix goes with the address.
        let network = address.address.trunc();
        state.routes.retain(|r| {
            !(r.oif == Some(address.link_index) && r.gateway.is_none() && r.destination == network)
        });
        state.calls.push(Call::DeleteAddress(address.clone()));
        Ok(())
    }

    fn routes(&self) -> Result<Vec<Route>> {
        Ok(self.lock().routes.clone())
    }

    fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        let route = Self::route_from_spec(spec);
        let mut state = self.lock();
        if state.routes.contains(&route) {
            return Err(NetlinkError::AlreadyExists {
                operation: format!("add route {route}"),
                message: None,
            });
        }
        state.routes.push(route);
        state.calls.push(Call::AddRoute(spec.clone()));
        Ok(())
    }

    fn replace_route(&self, spec: &RouteSpec) -> Result<()> {
        let route = Self::route_from_spec(spec);
        let mut state = self.lock();
        state.routes.retain(|r| {
            !(r.destination == route.destination
                && r.table == route.table
                && r.metric == route.metric)
        });
        state.routes.push(route);
        state.calls.push(Call::ReplaceRoute(spec.clone()));
        Ok(())
    }

    fn delete_route(&self, route: &Route) -> Result<()> {
        let mut state = self.lock();
        Self::check_failure(&mut state, CallKind::DeleteRoute, "delete route")?;
        let position = state
            .routes
            .iter()
            .position(|r| r == route)
            .ok_or_else(|| not_found(format!("delete route {route}")))?;
        state.routes.remove(position);
        state.calls.push(Call::DeleteRoute(route.clone()));
        Ok(())
    }

    fn route_to(&self, destination: IpAddr) -> Result<Route> {
        let state = self.lock();
        state
            .routes
            .iter()
            .filter(|r| r.destination.contains(&destination))
            .filter(|r| {
                r.oif
                    .is_some_and(|oif| state.links.get(&oif).is_some_and(|l| l.up))
            })
            .max_by(|a, b| {
                a.destination
                    .prefix_len()
                    .cmp(&b.destination.prefix_len())
                    .then(b.metric.unwrap_or(0).cmp(&a.metric.unwrap_or(0)))
            })
            .cloned()
            .ok_or_else(|| {
                NetlinkError::from_errno(
                    format!("look up route to {destination}"),
                    libc::ENETUNREACH,
                    None,
                )
            })
    }

    fn accept_ra(&self, ifname: &str) -> Result<Option<u32>> {
        Ok(self.lock().accept_ra.get(ifname).copied())
    }

    fn set_accept_ra(&self, ifname: &str, value: u32) -> Result<()> {
        let mut state = self.lock();
        Self::check_failure(&mut state, CallKind::SetAcceptRa, "set accept_ra")?;
        if !state.accept_ra.contains_key(ifname) {
            return Err(not_found(format!("set accept_ra of {ifname}")));
        }
        state.accept_ra.insert(ifname.into(), value);
        state.calls.push(Call::SetAcceptRa {
            ifname: ifname.into(),
            value,
        });
        Ok(())
    }
}
