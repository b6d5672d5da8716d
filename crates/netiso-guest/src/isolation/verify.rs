//! The isolation invariants, each checked and reported on its own.

use std::fmt;

use netiso_netlink::{Rtnetlink, TABLE_LOCAL};

use super::{
    IsolationError, IsolationTarget, ManagementBaseline,
    plan::{find_tenant, netlink_error},
};

/// One isolation invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// The tenant NIC is gone from the namespace (handed to a container) or down.
    TenantDownOrAbsent,
    /// The tenant NIC has no address.
    TenantHasNoAddress,
    /// No route leaves through the tenant NIC.
    NoRouteThroughTenant,
    /// The tenant NIC does not accept router advertisements.
    TenantIgnoresRouterAdvertisements,
    /// Management links and their addresses are as they were: none gone or changed. Addresses
    /// the OS added meanwhile (an IPv6 link-local, a DHCP renewal) are reported, not failed.
    ManagementLinksUnchanged,
    /// Every route not through the tenant NIC is still there; routes added meanwhile by others
    /// are reported, not failed.
    ManagementRoutesUnchanged,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TenantDownOrAbsent => "tenant NIC absent or down",
            Self::TenantHasNoAddress => "tenant NIC has no address",
            Self::NoRouteThroughTenant => "no route leaves through the tenant NIC",
            Self::TenantIgnoresRouterAdvertisements => "tenant NIC ignores router advertisements",
            Self::ManagementLinksUnchanged => "management interfaces unchanged",
            Self::ManagementRoutesUnchanged => "management routes unchanged",
        })
    }
}

/// The outcome of one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which invariant.
    pub invariant: Invariant,
    /// Whether it holds.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// Every invariant with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per invariant.
    pub checks: Vec<Check>,
}

impl VerifyReport {
    /// True when every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The outcome of one invariant.
    pub fn check(&self, invariant: Invariant) -> Option<&Check> {
        self.checks.iter().find(|c| c.invariant == invariant)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(
                f,
                "[{}] {}: {}",
                if check.passed { " ok " } else { "FAIL" },
                check.invariant,
                check.detail
            )?;
        }
        Ok(())
    }
}

fn check(invariant: Invariant, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        invariant,
        passed,
        detail: detail.into(),
    }
}

/// Checks the isolation invariants for `target` against the management `baseline` recorded
/// by the plan.
pub fn verify(
    rtnl: &dyn Rtnetlink,
    target: &IsolationTarget,
    baseline: &ManagementBaseline,
) -> Result<VerifyReport, IsolationError> {
    let links = rtnl.links().map_err(netlink_error(target, "list links"))?;
    let addresses = rtnl
        .addresses(None)
        .map_err(netlink_error(target, "list addresses"))?;
    let routes = rtnl
        .routes()
        .map_err(netlink_error(target, "list routes"))?;
    let tenant = find_tenant(&links, target);
    let tenant_index = tenant.map(|l| l.index);
    let mut checks = Vec::new();

    match tenant {
        None => {
            checks.push(check(
                Invariant::TenantDownOrAbsent,
                true,
                "not in this namespace (handed to a container)",
            ));
            checks.push(check(
                Invariant::TenantHasNoAddress,
                true,
                "not in this namespace",
            ));
        }
        Some(link) => {
            checks.push(check(
                Invariant::TenantDownOrAbsent,
                !link.up,
                format!(
                    "{} (index {}) is {}",
                    link.name,
                    link.index,
                    if link.up { "UP" } else { "down" }
                ),
            ));
            let own: Vec<String> = addresses
                .iter()
                .filter(|a| a.link_index == link.index)
                .map(|a| a.address.to_string())
                .collect();
            checks.push(check(
                Invariant::TenantHasNoAddress,
                own.is_empty(),
                if own.is_empty() {
                    "none".to_owned()
                } else {
                    own.join(", ")
                },
            ));
        }
    }

    let through: Vec<String> = tenant_index
        .map(|i| {
            routes
                .iter()
                .filter(|r| r.leaves_through(i) && r.table != TABLE_LOCAL)
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    checks.push(check(
        Invariant::NoRouteThroughTenant,
        through.is_empty(),
        if through.is_empty() {
            "none".to_owned()
        } else {
            through.join("; ")
        },
    ));

    let accept_ra = match tenant {
        Some(link) => rtnl.accept_ra(&link.name).map_err(netlink_error(
            target,
            format!("read accept_ra of {}", link.name),
        ))?,
        None => None,
    };
    checks.push(check(
        Invariant::TenantIgnoresRouterAdvertisements,
        accept_ra.is_none_or(|v| v == 0),
        accept_ra.map_or("no IPv6 configuration".to_owned(), |v| {
            format!("accept_ra = {v}")
        }),
    ));

    let mut link_losses = Vec::new();
    let mut link_additions = Vec::new();
    for (index, before) in &baseline.links {
        match links.iter().find(|l| l.index == *index) {
            None => link_losses.push(format!("{} (index {index}) is gone", before.name)),
            Some(now)
                if (now.name.as_str(), now.up, now.mtu, now.mac)
                    != (before.name.as_str(), before.up, before.mtu, before.mac) =>
            {
                link_losses.push(format!("{} (index {index}) changed", before.name));
            }
            Some(_) => {}
        }
    }
    let management_addresses: Vec<_> = addresses
        .iter()
        .filter(|a| baseline.links.contains_key(&a.link_index))
        .collect();
    for before in &baseline.addresses {
        if !management_addresses.contains(&before) {
            link_losses.push(format!("address {} lost", before.address));
        }
    }
    for now in &management_addresses {
        if !baseline.addresses.contains(now) {
            link_additions.push(format!("address {} added by the system", now.address));
        }
    }
    checks.push(outcome(
        Invariant::ManagementLinksUnchanged,
        link_losses,
        link_additions,
        format!("{} interface(s) as before", baseline.links.len()),
    ));

    let management_routes: Vec<_> = routes
        .iter()
        .filter(|r| tenant_index.is_none_or(|i| !r.leaves_through(i)))
        .collect();
    let route_losses = baseline
        .routes
        .iter()
        .filter(|before| !management_routes.contains(before))
        .map(|before| format!("route {before} lost"))
        .collect();
    let route_additions = management_routes
        .iter()
        .filter(|now| !baseline.routes.contains(now))
        .map(|now| format!("route {now} added by the system"))
        .collect();
    checks.push(outcome(
        Invariant::ManagementRoutesUnchanged,
        route_losses,
        route_additions,
        format!("{} route(s) as before", baseline.routes.len()),
    ));

    Ok(VerifyReport { checks })
}

/// Losses fail the invariant; additions (made by the OS, not by us) are only reported.
fn outcome(
    invariant: Invariant,
    losses: Vec<String>,
    additions: Vec<String>,
    fine: String,
) -> Check {
    let passed = losses.is_empty();
    let mut detail: Vec<String> = losses;
    detail.extend(additions);
    check(
        invariant,
        passed,
        if detail.is_empty() {
            fine
        } else if passed {
            format!("{fine}; {}", detail.join("; "))
        } else {
            detail.join("; ")
        },
    )
}
