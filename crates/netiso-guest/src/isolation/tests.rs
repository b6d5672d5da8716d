//! Unit tests of the isolation logic against the recording fake (no root needed).

use std::{sync::Arc, time::Duration};

use netiso_netlink::{
    LinkEvent, MacAddress, NetlinkError, Rtnetlink,
    fake::{Call, CallKind, RecordingRtnetlink, route},
};

use super::*;

const TENANT_MAC: &str = "fa:16:3e:12:34:56";

fn target() -> IsolationTarget {
    IsolationTarget::new(TENANT_MAC.parse().unwrap(), "/etc/trove/eth1.json")
}

/// A VM: eth0 (management, default route metric 100), eth1 (tenant, default route metric 50,
/// a host route, IPv4 and IPv6 addresses and their connected routes).
fn vm() -> (RecordingRtnetlink, u32, u32) {
    let fake = RecordingRtnetlink::new();
    let mgmt = fake.add_link("eth0", Some("fa:16:3e:00:00:01".parse().unwrap()), true);
    let tenant = fake.add_link("eth1", Some(TENANT_MAC.parse().unwrap()), true);
    fake.seed_address(mgmt, "192.168.0.5/24".parse().unwrap());
    fake.seed_address(tenant, "10.0.0.15/24".parse().unwrap());
    fake.seed_address(tenant, "fd00::15/64".parse().unwrap());
    fake.seed_route(route("0.0.0.0/0", Some("192.168.0.1"), mgmt, Some(100)));
    fake.seed_route(route("192.168.0.0/24", None, mgmt, None));
    fake.seed_route(route("0.0.0.0/0", Some("10.0.0.1"), tenant, Some(50)));
    fake.seed_route(route("10.0.0.0/24", None, tenant, None));
    fake.seed_route(route("172.16.0.0/16", Some("10.0.0.254"), tenant, None));
    fake.seed_route(route("fd00::/64", None, tenant, Some(256)));
    (fake, mgmt, tenant)
}

#[test]
fn plan_lists_tenant_changes_and_leaves_management_alone() {
    let (fake, mgmt, tenant) = vm();
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    let state = planned.tenant.as_ref().unwrap();
    assert_eq!(state.link.index, tenant);
    assert_eq!(state.addresses.len(), 2);
    assert_eq!(state.routes.len(), 4);
    assert_eq!(
        planned.actions[0],
        Action::DisableAcceptRa {
            ifname: "eth1".into(),
            current: 1
        }
    );
    assert_eq!(
        planned.actions[1],
        Action::SetDown {
            index: tenant,
            ifname: "eth1".into()
        }
    );
    assert!(
        matches!(&planned.actions[2], Action::RemoveRoute(r) if r.is_default()),
        "default route goes first"
    );
    assert_eq!(planned.actions.len(), 2 + 4 + 2);
    assert!(planned.actions.iter().all(|a| match a {
        Action::RemoveRoute(r) => r.oif == Some(tenant),
        Action::RemoveAddress(a) => a.link_index == tenant,
        _ => true,
    }));
    assert!(planned.baseline.links.contains_key(&mgmt));
    assert!(!planned.baseline.links.contains_key(&tenant));
    assert_eq!(planned.baseline.routes.len(), 2);
    assert!(fake.calls().is_empty(), "planning changes nothing");

    let text = planned.to_string();
    for expected in [
        "tenant NIC fa:16:3e:12:34:56 (from /etc/trove/eth1.json): eth1",
        "set accept_ra of eth1 to 0 (now 1)",
        "set eth1 down",
        "remove route default via 10.0.0.1 dev eth1 metric 50",
        "remove address 10.0.0.15/24 from eth1",
        "eth0 (index 2, up): addresses [192.168.0.5/24], 2 route(s)",
        "route default via 192.168.0.1 dev eth0 metric 100",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_missing_mac_is_an_error_naming_the_mac_and_the_file() {
    let fake = RecordingRtnetlink::new();
    let err = plan(&fake, &target(), WhenAbsent::Error).unwrap_err();
    assert!(matches!(err, IsolationError::NicNotFound { .. }));
    let text = err.to_string();
    assert!(
        text.contains(TENANT_MAC) && text.contains("/etc/trove/eth1.json"),
        "{text}"
    );
    assert!(isolate(&fake, &target(), WhenAbsent::Error).is_err());
}

#[test]
fn an_absent_nic_handed_to_a_container_counts_as_isolated() {
    let (fake, _, tenant) = vm();
    fake.take_link_away(tenant);
    let planned = plan(&fake, &target(), WhenAbsent::Isolated).unwrap();
    assert!(planned.tenant.is_none() && planned.is_noop());
    assert!(planned.to_string().contains("handed to a container"));
    let report = apply(&fake, &planned).unwrap();
    assert!(report.changes.is_empty());
    assert!(report.verification.is_ok(), "{}", report.verification);
}

#[test]
fn apply_isolates_verifies_and_is_idempotent() {
    let (fake, mgmt, tenant) = vm();
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    let report = apply(&fake, &planned).unwrap();
    assert!(report.verification.is_ok(), "{}", report.verification);
    assert!(report.changes.contains(&Action::SetDown {
        index: tenant,
        ifname: "eth1".into()
    }));
    assert!(!fake.link_by_index(tenant).unwrap().up);
    assert!(fake.addresses(Some(tenant)).unwrap().is_empty());
    assert!(fake.routes().unwrap().iter().all(|r| r.oif != Some(tenant)));
    assert_eq!(fake.accept_ra("eth1").unwrap(), Some(0));
    assert!(fake.link_by_index(mgmt).unwrap().up);
    assert_eq!(fake.routes().unwrap().len(), 2, "management routes intact");
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::SetLinkUp { index, .. } if *index == mgmt))
    );

    fake.clear_calls();
    let again = isolate(&fake, &target(), WhenAbsent::Error).unwrap();
    assert!(again.changes.is_empty());
    assert!(
        fake.calls().is_empty(),
        "second apply must be a no-op: {:?}",
        fake.calls()
    );
}

#[test]
fn apply_fails_closed_but_still_does_every_other_step() {
    let (fake, _, tenant) = vm();
    fake.fail_next(CallKind::SetLinkUp, libc::EPERM);
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    let err = apply(&fake, &planned).unwrap_err();
    match &err {
        IsolationError::Netlink {
            step, error, file, ..
        } => {
            assert_eq!(step, "set eth1 down");
            assert!(matches!(error, NetlinkError::Permission { .. }));
            assert_eq!(file.to_str(), Some("/etc/trove/eth1.json"));
        }
        other => panic!("expected a netlink error, got {other:?}"),
    }
    // The default route and the addresses went anyway; the second pass set the link down.
    assert!(fake.routes().unwrap().iter().all(|r| r.oif != Some(tenant)));
    assert!(fake.addresses(Some(tenant)).unwrap().is_empty());
}

#[test]
fn verify_reports_each_broken_invariant() {
    let (fake, mgmt, _) = vm();
    fake.seed_route(route("10.99.0.0/16", Some("192.168.0.1"), mgmt, None));
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    let lost = route("10.99.0.0/16", Some("192.168.0.1"), mgmt, None);
    fake.delete_route(&lost).unwrap();
    let report = verify(&fake, &target(), &planned.baseline).unwrap();
    assert!(!report.is_ok());
    for (invariant, passed) in [
        (Invariant::TenantDownOrAbsent, false),
        (Invariant::TenantHasNoAddress, false),
        (Invariant::NoRouteThroughTenant, false),
        (Invariant::TenantIgnoresRouterAdvertisements, false),
        (Invariant::ManagementLinksUnchanged, true),
        (Invariant::ManagementRoutesUnchanged, false),
    ] {
        let check = report.check(invariant).unwrap();
        assert_eq!(check.passed, passed, "{invariant}: {}", check.detail);
    }
    let text = report.to_string();
    assert!(
        text.contains("[FAIL] tenant NIC absent or down: eth1 (index 3) is UP"),
        "{text}"
    );
    assert!(
        text.contains("route 10.99.0.0/16 via 192.168.0.1 oif 2 lost"),
        "{text}"
    );
}

#[test]
fn apply_refuses_to_report_success_when_the_invariants_do_not_hold() {
    let (fake, mgmt, _) = vm();
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    // The management side changed behind our back: verification must catch it.
    fake.set_link_up(mgmt, false).unwrap();
    let err = apply(&fake, &planned).unwrap_err();
    assert!(
        matches!(&err, IsolationError::NotIsolated { report, .. } if !report.is_ok()),
        "{err}"
    );
    assert!(
        err.to_string().contains("management interfaces unchanged"),
        "{err}"
    );
}

#[test]
fn additions_by_the_system_on_the_management_side_are_reported_not_failed() {
    let (fake, mgmt, _) = vm();
    let planned = plan(&fake, &target(), WhenAbsent::Error).unwrap();
    // The kernel adds an IPv6 link-local address and its route to eth0 meanwhile.
    fake.seed_address(mgmt, "fe80::1/64".parse().unwrap());
    fake.seed_route(route("fe80::/64", None, mgmt, Some(256)));
    let report = apply(&fake, &planned).unwrap();
    let links = report
        .verification
        .check(Invariant::ManagementLinksUnchanged)
        .unwrap();
    assert!(
        links.passed
            && links
                .detail
                .contains("address fe80::1/64 added by the system"),
        "{}",
        links.detail
    );
    let routes = report
        .verification
        .check(Invariant::ManagementRoutesUnchanged)
        .unwrap();
    assert!(
        routes.passed && routes.detail.contains("added by the system"),
        "{}",
        routes.detail
    );
}

#[test]
fn the_physical_nic_wins_over_a_vlan_sharing_its_mac() {
    let fake = RecordingRtnetlink::new();
    // A VLAN on the tenant NIC has the same MAC; list order must not matter.
    let tenant = fake.add_link("eth1", Some(TENANT_MAC.parse().unwrap()), true);
    let vlan = fake.add_link("eth1.100", Some(TENANT_MAC.parse().unwrap()), true);
    let links = fake.links().unwrap();
    let mut tagged = links.clone();
    tagged
        .iter_mut()
        .filter(|l| l.index == vlan)
        .for_each(|l| l.kind = Some("vlan".into()));
    tagged.reverse();
    assert_eq!(plan::find_tenant(&tagged, &target()).unwrap().index, tenant);
}

#[tokio::test]
async fn guard_reisolates_when_the_nic_comes_back_up() {
    let (fake, _, tenant) = vm();
    let fake = Arc::new(fake);
    isolate(&*fake, &target(), WhenAbsent::Error).unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let guard = Guard::with_events(Arc::clone(&fake), rx, target(), GuardOptions::default());
    let mut reports = guard.subscribe();
    // Let the guard's start-up pass (a no-op here) finish, so that only the event below can
    // trigger the re-isolation.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The OS brings the NIC back and DHCP gives it an address and a default route.
    fake.set_link_up(tenant, true).unwrap();
    fake.seed_address(tenant, "10.0.0.15/24".parse().unwrap());
    fake.seed_route(route("0.0.0.0/0", Some("10.0.0.1"), tenant, Some(50)));
    let link = fake.link_by_index(tenant).unwrap();
    // An unrelated event first, then the tenant's.
    let other: MacAddress = "fa:16:3e:00:00:01".parse().unwrap();
    let mut unrelated = link.clone();
    unrelated.mac = Some(other);
    tx.unbounded_send(Ok(LinkEvent::Changed(unrelated)))
        .unwrap();
    tx.unbounded_send(Ok(LinkEvent::Changed(link))).unwrap();

    let report = tokio::time::timeout(Duration::from_secs(1), reports.recv())
        .await
        .unwrap()
        .unwrap();
    let GuardReport::Reisolated(report) = report else {
        panic!("expected a re-isolation, got {report:?}")
    };
    assert!(report.verification.is_ok());
    assert!(!fake.link_by_index(tenant).unwrap().up);
    assert!(fake.routes().unwrap().iter().all(|r| r.oif != Some(tenant)));
    guard.stop();
}

#[tokio::test]
async fn guard_rechecks_after_an_event_overrun() {
    let (fake, _, tenant) = vm();
    let fake = Arc::new(fake);
    isolate(&*fake, &target(), WhenAbsent::Error).unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let guard = Guard::with_events(Arc::clone(&fake), rx, target(), GuardOptions::default());
    let mut reports = guard.subscribe();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The NIC came back while notifications were lost: only an overrun is seen.
    fake.seed_address(tenant, "10.0.0.15/24".parse().unwrap());
    tx.unbounded_send(Ok(LinkEvent::Overrun)).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(1), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(report, GuardReport::Reisolated(_)), "{report:?}");
    assert!(fake.addresses(Some(tenant)).unwrap().is_empty());
}

#[tokio::test]
async fn guard_reisolates_on_a_route_event_alone() {
    let (fake, _, tenant) = vm();
    let fake = Arc::new(fake);
    isolate(&*fake, &target(), WhenAbsent::Error).unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let guard = Guard::with_events(Arc::clone(&fake), rx, target(), GuardOptions::default());
    let mut reports = guard.subscribe();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A route through the tenant NIC, announced only by its route event.
    let added = route("172.22.0.0/16", Some("10.0.0.254"), tenant, None);
    fake.seed_route(added.clone());
    tx.unbounded_send(Ok(LinkEvent::RouteAdded(added))).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(1), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(report, GuardReport::Reisolated(_)), "{report:?}");
    assert!(fake.routes().unwrap().iter().all(|r| r.oif != Some(tenant)));
    guard.stop();
}
