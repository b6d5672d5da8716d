//! Making the plan true, idempotently and fail-closed.

use std::fmt;

use netiso_netlink::{NetlinkError, Rtnetlink};

use super::{
    Action, IsolationError, IsolationPlan, IsolationTarget, ManagementBaseline, VerifyReport,
    WhenAbsent,
    plan::{netlink_error, plan, plan_link_state},
    verify::verify,
};

/// What [`apply`] did and the verification that followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The changes actually made (empty on a second run).
    pub changes: Vec<Action>,
    /// The invariants, all holding.
    pub verification: VerifyReport,
    /// The management side as found before the changes: what later verifications compare
    /// against (see [`super::baseline`]).
    pub baseline: ManagementBaseline,
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} change(s) made", self.changes.len())?;
        write!(f, "{}", self.verification)
    }
}

/// Runs one action; "already gone" counts as done, so a re-run or a race with the kernel's own
/// flush (a link set down loses its routes) is not an error.
fn run(rtnl: &dyn Rtnetlink, action: &Action) -> Result<bool, NetlinkError> {
    let outcome = match action {
        Action::DisableAcceptRa { ifname, .. } => rtnl.set_accept_ra(ifname, 0),
        Action::SetDown { index, .. } => rtnl.set_link_up(*index, false),
        Action::RemoveAddress(address) => rtnl.delete_address(address),
        Action::RemoveRoute(route) => rtnl.delete_route(route),
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::DisableAcceptRa { ifname, .. } => format!("set accept_ra of {ifname} to 0"),
        Action::SetDown { ifname, .. } => format!("set {ifname} down"),
        Action::RemoveAddress(a) => format!("remove address {}", a.address),
        Action::RemoveRoute(r) => format!("remove route {r}"),
    }
}

/// Applies `planned` against the namespace as it is now: the NIC is looked up again by MAC
/// (it may have been renamed since), every step is attempted even if one fails, later passes
/// remove whatever the first left, and the invariants are verified against the plan's
/// baseline. Any error means the NIC may not be isolated: do not start the database.
pub fn apply(rtnl: &dyn Rtnetlink, planned: &IsolationPlan) -> Result<ApplyReport, IsolationError> {
    let target = &planned.target;
    let when_absent = if planned.tenant.is_some() {
        WhenAbsent::Error
    } else {
        WhenAbsent::Isolated
    };
    let mut changes = Vec::new();
    let mut first_error = None;
    // Pass 1 turns off accept_ra and sets the link down, which makes the kernel flush the
    // link's routes itself (one operation instead of one per route). Later passes re-read
    // the namespace and remove whatever is left (addresses, routes the kernel kept, anything
    // re-added meanwhile); every step is attempted even if an earlier one failed.
    let mut attempt = |action: Action, changes: &mut Vec<Action>| match run(rtnl, &action) {
        Ok(true) => changes.push(action),
        Ok(false) => {}
        Err(error) => {
            tracing::error!(mac = %target.mac, step = %describe(&action), %error, "isolation step failed");
            first_error.get_or_insert_with(|| netlink_error(target, describe(&action))(error));
        }
    };
    for action in plan_link_state(rtnl, target)? {
        attempt(action, &mut changes);
    }
    for _ in 0..2 {
        let current = plan(rtnl, target, when_absent)?;
        if current.is_noop() {
            break;
        }
        for action in current.actions {
            attempt(action, &mut changes);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let verification = verify(rtnl, target, &planned.baseline)?;
    if !verification.is_ok() {
        return Err(IsolationError::NotIsolated {
            mac: target.mac,
            file: target.source.clone(),
            report: verification,
        });
    }
    tracing::info!(mac = %target.mac, changes = changes.len(), "tenant NIC isolated");
    Ok(ApplyReport {
        changes,
        verification,
        baseline: planned.baseline.clone(),
    })
}

/// Plans and applies in one call: the start-up step.
pub fn isolate(
    rtnl: &dyn Rtnetlink,
    target: &IsolationTarget,
    when_absent: WhenAbsent,
) -> Result<ApplyReport, IsolationError> {
    apply(rtnl, &plan(rtnl, target, when_absent)?)
}
