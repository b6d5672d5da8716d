//! Injected-file rendering, byte for byte as Trove's taskmanager writes them
//! (`trove/instance/models.py`, `get_injected_files` and `_get_user_nic_info`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netiso_config::render::{
    FixedIp, GuestInfo, InjectedFile, InstanceFacts, UserPort, render_daemon_json,
    render_injected_files,
};
use netiso_config::tenant_nic::{HostRoute, Ipv6Gateway, MacAddress, TenantIpv4, TenantIpv6};
use netiso_config::{ControlPlaneConfig, Secret, TenantNic};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).expect("fixture")
}

fn guest_info() -> GuestInfo {
    GuestInfo {
        guest_id: "5f1a0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
        datastore_manager: "mysql".to_owned(),
        datastore_version: "8.0.36".to_owned(),
        tenant_id: "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b".to_owned(),
        manager_class: "trove.guestagent.datastore.mysql.manager.Manager".to_owned(),
        replication_strategy:
            "trove.guestagent.strategies.replication.mysql_gtid.MysqlGTIDReplication".to_owned(),
        ssl_mode: None,
        instance_rpc_encr_key: Some(Secret::new("q7Zr2LmX9pKd4Tn8Vw1Bc6Hf3Js5Gy0A")),
    }
}

fn fixed(ip: &str, cidr: &str, gateway: Option<&str>, ra_mode: Option<&str>) -> FixedIp {
    FixedIp {
        ip_address: ip.parse().expect("literal"),
        cidr: cidr.parse().expect("literal"),
        gateway_ip: gateway.map(|g| g.parse().expect("literal")),
        host_routes: Vec::new(),
        ipv6_ra_mode: ra_mode.map(str::to_owned),
    }
}

fn mac(text: &str) -> MacAddress {
    text.parse().expect("literal")
}

#[test]
fn guest_info_conf_matches_the_real_file() {
    assert_eq!(guest_info().render(true), fixture("conf.d/guest_info.conf"));
}

#[test]
fn guest_info_conf_without_key_and_with_ssl_mode() {
    let mut info = guest_info();
    info.instance_rpc_encr_key = None;
    info.ssl_mode = Some("required".to_owned());
    let text = info.render(false);
    assert!(
        text.ends_with("ssl_mode=required\nnetwork_isolation=False\n"),
        "{text}"
    );
    assert!(!text.contains("instance_rpc_encr_key"));
}

#[test]
fn eth1_json_matches_trove_fixtures() {
    let dual = UserPort {
        mac_address: mac("fa:16:3e:12:34:56"),
        fixed_ips: vec![
            fixed("10.0.0.15", "10.0.0.0/24", Some("10.0.0.1"), None),
            fixed(
                "fd00::f816:3eff:fe12:3456",
                "fd00::/64",
                Some("fd00::1"),
                Some("slaac"),
            ),
        ],
    };
    assert_eq!(
        dual.render_eth1_json(),
        fixture("eth1/dual_stack_slaac.json")
    );

    let mut v4 = fixed("192.168.100.5", "192.168.100.0/24", None, None);
    v4.host_routes.push(HostRoute {
        destination: "10.10.0.0/16".parse().expect("literal"),
        nexthop: "192.168.100.254".parse().expect("literal"),
    });
    let no_gateway = UserPort {
        mac_address: mac("fa:16:3e:aa:bb:cc"),
        fixed_ips: vec![v4],
    };
    assert_eq!(
        no_gateway.render_eth1_json(),
        fixture("eth1/ipv4_no_gateway.json")
    );

    let mut v6 = fixed(
        "2001:db8:1::10",
        "2001:db8:1::/64",
        Some("2001:db8:1::1"),
        Some("dhcpv6-stateful"),
    );
    v6.host_routes.push(HostRoute {
        destination: "2001:db8:ff::/48".parse().expect("literal"),
        nexthop: "2001:db8:1::fe".parse().expect("literal"),
    });
    let stateful = UserPort {
        mac_address: mac("fa:16:3e:01:02:03"),
        fixed_ips: vec![v6],
    };
    assert_eq!(
        stateful.render_eth1_json(),
        fixture("eth1/ipv6_dhcpv6_stateful.json")
    );
}

#[test]
fn eth1_json_keeps_python_dict_insertion_order_and_last_ip_wins() {
    let mut last_v4 = fixed("10.1.0.7", "10.1.0.0/16", None, None);
    last_v4.host_routes.push(HostRoute {
        destination: "0.0.0.0/0".parse().expect("literal"),
        nexthop: "10.1.0.254".parse().expect("literal"),
    });
    let port = UserPort {
        mac_address: mac("fa:16:3e:00:00:01"),
        fixed_ips: vec![
            fixed("fd00::5", "fd00::/64", None, Some("slaac")),
            fixed("10.0.0.5", "10.0.0.0/24", Some("10.0.0.1"), None),
            last_v4,
        ],
    };
    // Produced by CPython's json.dumps on the dict Trove builds for these fixed IPs.
    assert_eq!(
        port.render_eth1_json(),
        r#"{"mac_address": "fa:16:3e:00:00:01", "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": [], "ipv4_address": "10.1.0.7", "ipv4_cidr": "10.1.0.0/16", "ipv4_gateway": null, "ipv4_host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.1.0.254"}]}"#
    );
}

#[test]
fn daemon_json_rules() {
    let mut control = ControlPlaneConfig::default();
    control.docker_insecure_registries = vec![
        "192.168.10.5:4000".to_owned(),
        "reg.example:5000".to_owned(),
    ];
    control.docker_bridge_network_ip = Some("172.30.0.1/16".to_owned());
    assert_eq!(
        render_daemon_json(&control, true).as_deref(),
        Some(
            r#"{"bridge": "none", "ip-forward": false, "iptables": false, "insecure-registries": ["192.168.10.5:4000", "reg.example:5000"]}"#
        )
    );
    // Isolation requested but no eth1.json: bip instead of bridge none.
    control.docker_insecure_registries.clear();
    assert_eq!(
        render_daemon_json(&control, false).as_deref(),
        Some(r#"{"bip": "172.30.0.1/16"}"#)
    );
    control.network_isolation = false;
    assert_eq!(
        render_daemon_json(&control, true).as_deref(),
        Some(r#"{"bip": "172.30.0.1/16"}"#)
    );
    control.docker_bridge_network_ip = None;
    assert_eq!(render_daemon_json(&control, false), None);
    control.network_isolation = true;
    assert_eq!(
        render_daemon_json(&control, true).as_deref(),
        Some(r#"{"bridge": "none", "ip-forward": false, "iptables": false}"#)
    );
}

#[test]
fn injected_file_set_follows_trove() {
    let port = UserPort {
        mac_address: mac("fa:16:3e:12:34:56"),
        fixed_ips: vec![fixed("10.0.0.15", "10.0.0.0/24", Some("10.0.0.1"), None)],
    };
    let instance = InstanceFacts {
        guest_info: guest_info(),
        user_port: Some(port.clone()),
        guest_agent_conf: Some("[DEFAULT]\ncontrol_exchange = trove\n".to_owned()),
    };
    let mut control = ControlPlaneConfig::default();
    control.controller_address = Some("192.168.10.5".to_owned());
    let files = render_injected_files(&control, &instance);
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("/etc/trove/conf.d/guest_info.conf"),
            Path::new("/etc/trove/conf.d/trove-guestagent.conf"),
            Path::new("/etc/trove/controller.conf"),
            Path::new("/etc/trove/eth1.json"),
            Path::new("/etc/docker/daemon.json"),
        ]
    );
    assert_eq!(files[2].content, "CONTROLLER=192.168.10.5");
    assert_eq!(files[3].content, port.render_eth1_json());

    // Isolation off: no eth1.json, no daemon.json, guest_info says False.
    let mut control = ControlPlaneConfig::default();
    control.network_isolation = false;
    let instance = InstanceFacts {
        guest_agent_conf: None,
        ..instance
    };
    let files = render_injected_files(&control, &instance);
    assert_eq!(
        files,
        [InjectedFile {
            path: PathBuf::from("/etc/trove/conf.d/guest_info.conf"),
            content: guest_info().render(false),
        }]
    );
    assert!(files[0].content.contains("network_isolation=False\n"));
}

fn ipv4_subnet() -> impl Strategy<Value = (Ipv4Net, Ipv4Addr)> {
    (any::<u32>(), 8u8..=30, any::<u32>()).prop_map(|(base, prefix, host)| {
        let net = Ipv4Net::new(Ipv4Addr::from(base), prefix)
            .expect("prefix in range")
            .trunc();
        let address = u32::from(net.network()) | (host & u32::from(net.hostmask()));
        (net, Ipv4Addr::from(address))
    })
}

fn ipv6_subnet() -> impl Strategy<Value = (Ipv6Net, Ipv6Addr)> {
    (any::<u128>(), 48u8..=126, any::<u128>()).prop_map(|(base, prefix, host)| {
        let net = Ipv6Net::new(Ipv6Addr::from(base), prefix)
            .expect("prefix in range")
            .trunc();
        let address = u128::from(net.network()) | (host & u128::from(net.hostmask()));
        (net, Ipv6Addr::from(address))
    })
}

fn fixed_ip() -> impl Strategy<Value = FixedIp> {
    let v4 = (
        ipv4_subnet(),
        proptest::option::of(any::<Ipv4Addr>()),
        proptest::collection::vec((ipv4_subnet(), any::<Ipv4Addr>()), 0..3),
    )
        .prop_map(|((cidr, address), gateway, routes)| FixedIp {
            ip_address: IpAddr::V4(address),
            cidr: IpNet::V4(cidr),
            gateway_ip: gateway.map(IpAddr::V4),
            host_routes: routes
                .into_iter()
                .map(|((destination, _), nexthop)| HostRoute {
                    destination: IpNet::V4(destination),
                    nexthop: IpAddr::V4(nexthop),
                })
                .collect(),
            ipv6_ra_mode: None,
        });
    let v6 = (
        ipv6_subnet(),
        proptest::option::of(any::<Ipv6Addr>()),
        proptest::collection::vec((ipv6_subnet(), any::<Ipv6Addr>()), 0..3),
        prop_oneof![
            Just(None),
            Just(Some("slaac")),
            Just(Some("dhcpv6-stateless")),
            Just(Some("dhcpv6-stateful"))
        ],
    )
        .prop_map(|((cidr, address), gateway, routes, ra_mode)| FixedIp {
            ip_address: IpAddr::V6(address),
            cidr: IpNet::V6(cidr),
            gateway_ip: gateway.map(IpAddr::V6),
            host_routes: routes
                .into_iter()
                .map(|((destination, _), nexthop)| HostRoute {
                    destination: IpNet::V6(destination),
                    nexthop: IpAddr::V6(nexthop),
                })
                .collect(),
            ipv6_ra_mode: ra_mode.map(str::to_owned),
        });
    prop_oneof![v4, v6]
}

/// What the guest must understand from a port: per family the last fixed IP, except that
/// `ipv6_gateway` is the one of the last DHCPv6-stateful subnet (a Python dict keeps it).
fn expected_nic(port: &UserPort) -> TenantNic {
    let mut nic = TenantNic {
        mac_address: port.mac_address,
        ipv4: None,
        ipv6: None,
    };
    let mut v6_gateway = Ipv6Gateway::RouterAdvertisement;
    for fixed in &port.fixed_ips {
        match (fixed.ip_address, fixed.cidr) {
            (IpAddr::V4(address), IpNet::V4(cidr)) => {
                nic.ipv4 = Some(TenantIpv4 {
                    address,
                    cidr,
                    gateway: fixed.gateway_ip.and_then(|g| match g {
                        IpAddr::V4(g) => Some(g),
                        IpAddr::V6(_) => None,
                    }),
                    host_routes: fixed
                        .host_routes
                        .iter()
                        .filter_map(|r| match (r.destination, r.nexthop) {
                            (IpNet::V4(destination), IpAddr::V4(nexthop)) => Some(HostRoute {
                                destination,
                                nexthop,
                            }),
                            _ => None,
                        })
                        .collect(),
                });
            }
            (IpAddr::V6(address), IpNet::V6(cidr)) => {
                if fixed.ipv6_ra_mode.as_deref() == Some("dhcpv6-stateful") {
                    v6_gateway =
                        Ipv6Gateway::Dhcpv6Stateful(fixed.gateway_ip.and_then(|g| match g {
                            IpAddr::V6(g) => Some(g),
                            IpAddr::V4(_) => None,
                        }));
                }
                nic.ipv6 = Some(TenantIpv6 {
                    address,
                    cidr,
                    host_routes: fixed
                        .host_routes
                        .iter()
                        .filter_map(|r| match (r.destination, r.nexthop) {
                            (IpNet::V6(destination), IpAddr::V6(nexthop)) => Some(HostRoute {
                                destination,
                                nexthop,
                            }),
                            _ => None,
                        })
                        .collect(),
                    gateway: v6_gateway,
                });
            }
            _ => unreachable!("generated fixed IPs are consistent"),
        }
    }
    nic
}

proptest! {
    #[test]
    fn rendered_eth1_json_parses_back_to_the_port(
        octets in any::<[u8; 6]>(),
        fixed_ips in proptest::collection::vec(fixed_ip(), 0..4),
    ) {
        let port = UserPort { mac_address: MacAddress::new(octets), fixed_ips };
        let text = port.render_eth1_json();
        let parsed = TenantNic::parse(Path::new("eth1.json"), &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &expected_nic(&port));
        // The model renders to JSON that parses to itself.
        let again = TenantNic::parse(Path::new("eth1.json"), &parsed.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, parsed);
    }

    #[test]
    fn rendered_guest_info_reads_back(
        guest_id in "[a-f0-9-]{36}",
        version in "[0-9a-z.]{1,10}",
        ssl in proptest::option::of("[a-z]{1,10}"),
        isolation in any::<bool>(),
        key in proptest::option::of("[A-Za-z0-9]{32}"),
    ) {
        let info = GuestInfo {
            guest_id: guest_id.clone(),
            datastore_version: version.clone(),
            ssl_mode: ssl,
            instance_rpc_encr_key: key.clone().map(Secret::new),
            ..guest_info()
        };
        let file = netiso_config::ini::IniFile::parse(Path::new("guest_info.conf"), &info.render(isolation))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut oslo = netiso_config::OsloConfig::default();
        oslo.add_file(&file);
        let config = netiso_config::GuestConfig::from_oslo(&oslo).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(config.guest_id, guest_id);
        prop_assert_eq!(config.datastore_version, Some(version));
        prop_assert_eq!(config.network_isolation, isolation);
        prop_assert_eq!(config.instance_rpc_encr_key.map(|k| k.expose().to_owned()), key);
    }
}
