//! `eth1.json` validation against files equal to what Trove writes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use netiso_config::TenantNic;
use netiso_config::tenant_nic::{HostRoute, Ipv6Gateway, MacAddress, TenantNicProblem};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eth1")
        .join(name)
}

fn problem(json: &str) -> TenantNicProblem {
    TenantNic::parse(Path::new("eth1.json"), json)
        .expect_err("must be rejected")
        .problem
}

#[test]
fn dual_stack_slaac_fixture() {
    let nic = TenantNic::read(&fixture("dual_stack_slaac.json")).expect("valid");
    assert_eq!(
        nic.mac_address,
        MacAddress::new([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56])
    );
    let v4 = nic.ipv4.as_ref().expect("IPv4");
    assert_eq!(v4.address, Ipv4Addr::new(10, 0, 0, 15));
    assert_eq!(v4.cidr.to_string(), "10.0.0.0/24");
    assert_eq!(v4.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert!(v4.host_routes.is_empty());
    let v6 = nic.ipv6.as_ref().expect("IPv6");
    assert_eq!(
        v6.address,
        "fd00::f816:3eff:fe12:3456"
            .parse::<Ipv6Addr>()
            .expect("literal")
    );
    assert_eq!(v6.gateway, Ipv6Gateway::RouterAdvertisement);
    assert_eq!(
        nic.primary_address().map(|a| a.to_string()).as_deref(),
        Some("10.0.0.15")
    );
}

#[test]
fn null_gateway_and_host_routes_fixture() {
    let nic = TenantNic::read(&fixture("ipv4_no_gateway.json")).expect("valid");
    let v4 = nic.ipv4.expect("IPv4");
    assert_eq!(v4.gateway, None);
    assert_eq!(
        v4.host_routes,
        [HostRoute {
            destination: "10.10.0.0/16".parse().expect("literal"),
            nexthop: Ipv4Addr::new(192, 168, 100, 254),
        }]
    );
    assert!(nic.ipv6.is_none());
}

#[test]
fn dhcpv6_stateful_fixture_has_a_gateway() {
    let nic = TenantNic::read(&fixture("ipv6_dhcpv6_stateful.json")).expect("valid");
    let v6 = nic.ipv6.as_ref().expect("IPv6");
    assert_eq!(
        v6.gateway,
        Ipv6Gateway::Dhcpv6Stateful(Some("2001:db8:1::1".parse().expect("literal")))
    );
    assert_eq!(v6.host_routes.len(), 1);
    assert!(nic.ipv4.is_none());
    assert_eq!(
        nic.primary_address().map(|a| a.to_string()).as_deref(),
        Some("2001:db8:1::10")
    );
}

#[test]
fn mac_only_port_has_no_addresses() {
    let nic = TenantNic::read(&fixture("mac_only.json")).expect("valid");
    assert_eq!((nic.ipv4, nic.ipv6), (None, None));
}

#[test]
fn every_fixture_renders_back_byte_for_byte() {
    for name in [
        "dual_stack_slaac.json",
        "ipv4_no_gateway.json",
        "ipv6_dhcpv6_stateful.json",
        "mac_only.json",
    ] {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture");
        let nic = TenantNic::parse(Path::new(name), &text).expect("valid");
        assert_eq!(nic.to_json(), text, "{name}");
    }
}

#[test]
fn mac_syntax_is_checked_and_normalised() {
    let nic = TenantNic::parse(Path::new("x"), r#"{"mac_address": "FA:16:3E:AA:BB:CC"}"#)
        .expect("upper case is a MAC");
    assert_eq!(nic.mac_address.to_string(), "fa:16:3e:aa:bb:cc");
    for bad in [
        "fa:16:3e:aa:bb",
        "fa:16:3e:aa:bb:cc:dd",
        "fa-16-3e-aa-bb-cc",
        "fa:16:3e:aa:bb:cg",
        "f:16:3e:aa:bb:cc",
        "",
    ] {
        assert_eq!(
            problem(&format!(r#"{{"mac_address": "{bad}"}}"#)),
            TenantNicProblem::Mac(bad.to_owned()),
            "{bad}"
        );
    }
    assert_eq!(problem("{}"), TenantNicProblem::MissingKey("mac_address"));
    assert!(matches!(
        problem(r#"{"mac_address": 5}"#),
        TenantNicProblem::WrongType { .. }
    ));
}

#[test]
fn addresses_must_be_inside_their_cidr() {
    let error = TenantNic::parse(
        Path::new("/etc/trove/eth1.json"),
        r#"{"mac_address": "fa:16:3e:00:00:01", "ipv4_address": "10.0.1.5", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": null, "ipv4_host_routes": []}"#,
    )
    .expect_err("outside");
    assert_eq!(
        error.to_string(),
        "/etc/trove/eth1.json: `ipv4_address` 10.0.1.5 is outside `ipv4_cidr` 10.0.0.0/24"
    );
    assert!(matches!(
        problem(
            r#"{"mac_address": "fa:16:3e:00:00:01", "ipv6_address": "fd01::1", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": []}"#
        ),
        TenantNicProblem::AddressOutsideCidr {
            address_key: "ipv6_address",
            ..
        }
    ));
}

#[test]
fn cidrs_and_addresses_are_well_formed_and_of_the_right_family() {
    let base = |extra: &str| format!(r#"{{"mac_address": "fa:16:3e:00:00:01", {extra}}}"#);
    assert!(matches!(
        problem(&base(r#""ipv4_address": "10.0.0.300", "ipv4_cidr": "10.0.0.0/24""#)),
        TenantNicProblem::Address { ref key, .. } if key == "ipv4_address"
    ));
    assert!(matches!(
        problem(&base(
            r#""ipv4_address": "fd00::1", "ipv4_cidr": "10.0.0.0/24""#
        )),
        TenantNicProblem::Address { family: "IPv4", .. }
    ));
    assert!(matches!(
        problem(&base(r#""ipv4_address": "10.0.0.5", "ipv4_cidr": "10.0.0.0/33""#)),
        TenantNicProblem::Cidr { ref key, .. } if key == "ipv4_cidr"
    ));
    assert_eq!(
        problem(&base(
            r#""ipv4_address": "10.0.0.5", "ipv4_cidr": "10.0.0.5/24""#
        )),
        TenantNicProblem::CidrNotNetwork {
            key: "ipv4_cidr",
            value: "10.0.0.5/24".to_owned(),
            network: "10.0.0.0/24".to_owned()
        }
    );
    assert_eq!(
        problem(&base(r#""ipv4_address": "10.0.0.5""#)),
        TenantNicProblem::Incomplete {
            key: "ipv4_address",
            required: "ipv4_cidr"
        }
    );
    assert_eq!(
        problem(&base(r#""ipv6_cidr": "fd00::/64""#)),
        TenantNicProblem::Incomplete {
            key: "ipv6_cidr",
            required: "ipv6_address"
        }
    );
}

#[test]
fn gateways_and_host_routes_are_well_formed() {
    let v4 = |extra: &str| {
        format!(
            r#"{{"mac_address": "fa:16:3e:00:00:01", "ipv4_address": "10.0.0.5", "ipv4_cidr": "10.0.0.0/24", {extra}}}"#
        )
    };
    assert!(matches!(
        problem(&v4(r#""ipv4_gateway": "10.0.0.x""#)),
        TenantNicProblem::Address { ref key, .. } if key == "ipv4_gateway"
    ));
    assert!(matches!(
        problem(&v4(r#""ipv4_gateway": 1"#)),
        TenantNicProblem::WrongType { ref key, expected: "a string or null" } if key == "ipv4_gateway"
    ));
    assert!(matches!(
        problem(&v4(r#""ipv4_host_routes": {}"#)),
        TenantNicProblem::WrongType { ref key, expected: "a list" } if key == "ipv4_host_routes"
    ));
    assert!(matches!(
        problem(&v4(r#""ipv4_host_routes": [{"destination": "10.9.0.0/16"}]"#)),
        TenantNicProblem::WrongType { ref key, .. } if key == "ipv4_host_routes[0].nexthop"
    ));
    assert!(matches!(
        problem(&v4(r#""ipv4_host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.1"}, {"destination": "fd00::/8", "nexthop": "10.0.0.1"}]"#)),
        TenantNicProblem::Cidr { ref key, .. } if key == "ipv4_host_routes[1].destination"
    ));
    assert!(matches!(
        problem(&v4(r#""ipv4_host_routes": ["10.9.0.0/16"]"#)),
        TenantNicProblem::WrongType { ref key, .. } if key == "ipv4_host_routes[0]"
    ));
    let v6 = TenantNic::parse(
        Path::new("x"),
        r#"{"mac_address": "fa:16:3e:00:00:01", "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": [], "ipv6_gateway": null}"#,
    )
    .expect("stateful subnet without gateway");
    assert_eq!(
        v6.ipv6.map(|v| v.gateway),
        Some(Ipv6Gateway::Dhcpv6Stateful(None))
    );
}

#[test]
fn json_errors_name_line_and_column() {
    let error = TenantNic::parse(
        Path::new("/etc/trove/eth1.json"),
        "{\"mac_address\": \n  oops}",
    )
    .expect_err("bad JSON");
    assert!(
        matches!(error.problem, TenantNicProblem::Json { line: 2, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("/etc/trove/eth1.json: invalid JSON at line 2"),
        "{error}"
    );
    assert_eq!(problem("[]"), TenantNicProblem::NotAnObject);
    let missing = TenantNic::read(Path::new("/nonexistent/eth1.json")).expect_err("no file");
    assert!(matches!(missing.problem, TenantNicProblem::Io(_)));
}

#[test]
fn unknown_keys_are_ignored() {
    let nic = TenantNic::parse(
        Path::new("x"),
        r#"{"mac_address": "fa:16:3e:00:00:01", "mtu": 1450}"#,
    )
    .expect("valid");
    assert_eq!(nic.mac_address.to_string(), "fa:16:3e:00:00:01");
}
