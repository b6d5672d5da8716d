//! What isolation must change, and what it leaves alone.

use std::{collections::BTreeMap, fmt};

use netiso_netlink::{Address, Link, Route, Rtnetlink};

use super::{IsolationError, IsolationTarget};

/// What to do when no link has the tenant MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAbsent {
    /// Fail: at start-up the NIC must be there (a typo in `eth1.json`, a wrong port).
    Error,
    /// Treat it as isolated: the NIC has been handed to a container.
    Isolated,
}

/// The tenant NIC as found in the VM's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNicState {
    /// The link, found by MAC.
    pub link: Link,
    /// Its addresses.
    pub addresses: Vec<Address>,
    /// Every route that leaves through it (any table, default routes included).
    pub routes: Vec<Route>,
    /// Its `accept_ra`; `None` when it has no IPv6 configuration.
    pub accept_ra: Option<u32>,
}

/// One change isolation makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the NIC from learning addresses and routes from router advertisements.
    DisableAcceptRa {
        /// Interface name.
        ifname: String,
        /// Current value.
        current: u32,
    },
    /// Set the NIC administratively down.
    SetDown {
        /// Interface index.
        index: u32,
        /// Interface name.
        ifname: String,
    },
    /// Remove an address from the NIC.
    RemoveAddress(Address),
    /// Remove a route that leaves through the NIC.
    RemoveRoute(Route),
}

/// The management side as it was before isolation: every other link, its addresses, and every
/// route that does not leave through the tenant NIC. Verification compares against it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ManagementBaseline {
    /// Links other than the tenant NIC, by index.
    pub links: BTreeMap<u32, Link>,
    /// Their addresses.
    pub addresses: Vec<Address>,
    /// Routes that do not leave through the tenant NIC.
    pub routes: Vec<Route>,
}

/// The result of [`plan`]: what must change and what is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationPlan {
    /// The NIC to isolate.
    pub target: IsolationTarget,
    /// The NIC's state; `None` when it is not in this namespace (handed to a container).
    pub tenant: Option<TenantNicState>,
    /// The changes, in the order they are made.
    pub actions: Vec<Action>,
    /// The management side, left alone.
    pub baseline: ManagementBaseline,
}

impl IsolationPlan {
    /// True when there is nothing to change.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }
}

pub(super) fn netlink_error(
    target: &IsolationTarget,
    step: impl Into<String>,
) -> impl FnOnce(netiso_netlink::NetlinkError) -> IsolationError {
    let mac = target.mac;
    let file = target.source.clone();
    let step = step.into();
    move |error| IsolationError::Netlink {
        mac,
        file,
        step,
        error,
    }
}

/// The tenant NIC among `links`, by MAC whatever its name. VLANs on top of the NIC share its
/// MAC: the NIC itself (a link without a kind, i.e. a physical one) wins, then the lowest index.
pub(super) fn find_tenant<'a>(links: &'a [Link], target: &IsolationTarget) -> Option<&'a Link> {
    links
        .iter()
        .filter(|l| l.mac == Some(target.mac))
        .min_by_key(|l| (l.kind.is_some(), l.index))
}

/// The link-level changes (accept_ra off, link down) for the tenant link.
fn link_state_actions(link: &Link, accept_ra: Option<u32>) -> Vec<Action> {
    let mut actions = Vec::new();
    if let Some(current) = accept_ra.filter(|v| *v != 0) {
        actions.push(Action::DisableAcceptRa {
            ifname: link.name.clone(),
            current,
        });
    }
    if link.up {
        actions.push(Action::SetDown {
            index: link.index,
            ifname: link.name.clone(),
        });
    }
    actions
}

/// Only the link-level changes, found without dumping addresses and routes (which may be
/// many): what `apply` does first, so that the kernel flushes the link's routes itself.
pub(super) fn plan_link_state(
    rtnl: &dyn Rtnetlink,
    target: &IsolationTarget,
) -> Result<Vec<Action>, IsolationError> {
    let links = rtnl.links().map_err(netlink_error(target, "list links"))?;
    let Some(link) = find_tenant(&links, target).cloned() else {
        return Ok(Vec::new());
    };
    let accept_ra = rtnl.accept_ra(&link.name).map_err(netlink_error(
        target,
        format!("read accept_ra of {}", link.name),
    ))?;
    Ok(link_state_actions(&link, accept_ra))
}

/// Reads the namespace and computes the plan for `target`.
pub fn plan(
    rtnl: &dyn Rtnetlink,
    target: &IsolationTarget,
    when_absent: WhenAbsent,
) -> Result<IsolationPlan, IsolationError> {
    let links = rtnl.links().map_err(netlink_error(target, "list links"))?;
    let addresses = rtnl
        .addresses(None)
        .map_err(netlink_error(target, "list addresses"))?;
    let routes = rtnl
        .routes()
        .map_err(netlink_error(target, "list routes"))?;
    let tenant_link = find_tenant(&links, target).cloned();
    let tenant_index = tenant_link.as_ref().map(|l| l.index);

    let baseline = ManagementBaseline {
        links: links
            .iter()
            .filter(|l| Some(l.index) != tenant_index)
            .map(|l| (l.index, l.clone()))
            .collect(),
        addresses: addresses
            .iter()
            .filter(|a| Some(a.link_index) != tenant_index)
            .cloned()
            .collect(),
        routes: routes
            .iter()
            .filter(|r| tenant_index.is_none_or(|i| !r.leaves_through(i)))
            .cloned()
            .collect(),
    };

    let Some(link) = tenant_link else {
        return match when_absent {
            WhenAbsent::Error => Err(IsolationError::NicNotFound {
                mac: target.mac,
                file: target.source.clone(),
            }),
            WhenAbsent::Isolated => Ok(IsolationPlan {
                target: target.clone(),
                tenant: None,
                actions: Vec::new(),
                baseline,
            }),
        };
    };
    let accept_ra = rtnl.accept_ra(&link.name).map_err(netlink_error(
        target,
        format!("read accept_ra of {}", link.name),
    ))?;
    let tenant = TenantNicState {
        addresses: addresses
            .into_iter()
            .filter(|a| a.link_index == link.index)
            .collect(),
        routes: routes
            .into_iter()
            // Local-table entries (the NIC's own addresses) go with the addresses.
            .filter(|r| r.leaves_through(link.index) && r.table != netiso_netlink::TABLE_LOCAL)
            .collect(),
        accept_ra,
        link,
    };

    let mut actions = link_state_actions(&tenant.link, tenant.accept_ra);
    // Default routes first: they are what must never survive, even if a later step fails.
    let mut routes: Vec<&Route> = tenant.routes.iter().collect();
    routes.sort_by_key(|r| !r.is_default());
    actions.extend(routes.into_iter().cloned().map(Action::RemoveRoute));
    actions.extend(tenant.addresses.iter().cloned().map(Action::RemoveAddress));

    Ok(IsolationPlan {
        target: target.clone(),
        tenant: Some(tenant),
        actions,
        baseline,
    })
}

struct Names<'a>(&'a BTreeMap<u32, Link>, Option<&'a Link>);

impl Names<'_> {
    fn of(&self, index: Option<u32>) -> String {
        match index {
            None => "-".into(),
            Some(i) => self
                .1
                .filter(|l| l.index == i)
                .or_else(|| self.0.get(&i))
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("#{i}")),
        }
    }

    fn route(&self, route: &Route) -> String {
        let mut text = if route.is_default() {
            "default".to_owned()
        } else {
            route.destination.to_string()
        };
        if let Some(gateway) = route.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        text.push_str(&format!(" dev {}", self.of(route.oif)));
        if let Some(metric) = route.metric {
            text.push_str(&format!(" metric {metric}"));
        }
        if route.table != netiso_netlink::TABLE_MAIN {
            text.push_str(&format!(" table {}", route.table));
        }
        text
    }
}

impl fmt::Display for IsolationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = Names(&self.baseline.links, self.tenant.as_ref().map(|t| &t.link));
        let mac = self.target.mac;
        let source = self.target.source.display();
        match &self.tenant {
            None => writeln!(
                f,
                "tenant NIC {mac} (from {source}): not in this namespace (handed to a container)"
            )?,
            Some(t) => writeln!(
                f,
                "tenant NIC {mac} (from {source}): {} (index {}), {}, {} address(es), {} route(s), accept_ra {}",
                t.link.name,
                t.link.index,
                if t.link.up { "up" } else { "down" },
                t.addresses.len(),
                t.routes.len(),
                t.accept_ra.map_or("n/a".to_owned(), |v| v.to_string()),
            )?,
        }
        if self.actions.is_empty() {
            writeln!(f, "will change: nothing (already isolated)")?;
        } else {
            writeln!(f, "will change:")?;
            for action in &self.actions {
                match action {
                    Action::DisableAcceptRa { ifname, current } => {
                        writeln!(f, "  - set accept_ra of {ifname} to 0 (now {current})")?
                    }
                    Action::SetDown { ifname, .. } => writeln!(f, "  - set {ifname} down")?,
                    Action::RemoveAddress(a) => writeln!(
                        f,
                        "  - remove address {} from {}",
                        a.address,
                        names.of(Some(a.link_index))
                    )?,
                    Action::RemoveRoute(r) => writeln!(f, "  - remove route {}", names.route(r))?,
                }
            }
        }
        writeln!(f, "left alone:")?;
        for link in self.baseline.links.values() {
            let addresses: Vec<String> = self
                .baseline
                .addresses
                .iter()
                .filter(|a| a.link_index == link.index)
                .map(|a| a.address.to_string())
                .collect();
            let routes = self
                .baseline
                .routes
                .iter()
                .filter(|r| r.leaves_through(link.index))
                .count();
            writeln!(
                f,
                "  - {} (index {}, {}): addresses [{}], {routes} route(s)",
                link.name,
                link.index,
                if link.up { "up" } else { "down" },
                addresses.join(", "),
            )?;
        }
        for route in self
            .baseline
            .routes
            .iter()
            .filter(|r| r.table == netiso_netlink::TABLE_MAIN && r.is_default())
        {
            writeln!(f, "  - route {}", names.route(route))?;
        }
        Ok(())
    }
}
