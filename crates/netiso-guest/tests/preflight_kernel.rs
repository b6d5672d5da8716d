//! Preflight against the real kernel: a throwaway guest namespace with a management link and
//! a tenant link, each to a peer namespace where the "broker" listens. The route lookup, not
//! connectivity, decides: through the tenant NIC fails naming host and interface even though
//! the broker would answer there; through the management link passes. Needs root.

use std::net::TcpListener;
use std::time::Duration;

use netiso_guest::preflight::{self, Endpoint, PreflightFailure, PreflightReport, Requirement};
use netiso_netlink::test_support::TestNamespace;
use netiso_netlink::{MacAddress, RouteSpec, Rtnetlink};

const BROKER: &str = "10.77.9.1";
const AMQP_PORT: u16 = 5672;
const REGISTRY_PORT: u16 = 5000;
const TIMEOUT: Duration = Duration::from_secs(3);

/// guest <-> mgmt (10.77.1.0/24) and guest <-> tenant (10.77.2.0/24); the broker address
/// answers in both peers.
struct Topology {
    guest: TestNamespace,
    /// Kept alive for the test's duration (dropping deletes the namespace).
    _mgmt: TestNamespace,
    /// Answers on the broker address too: only the route check can fail the tenant case.
    _tenant: TestNamespace,
    mgmt_if: String,
    tenant_if: String,
    tenant_mac: MacAddress,
    _listeners: Vec<TcpListener>,
}

fn up_with_address(ns: &TestNamespace, name: &str, cidr: &str) {
    let handle = ns.handle();
    let link = handle.link_by_name(name).expect("link");
    handle
        .add_address(link.index, cidr.parse().expect("cidr"))
        .expect("add address");
    handle.set_link_up(link.index, true).expect("link up");
}

fn listen(ns: &TestNamespace, port: u16) -> TcpListener {
    let lo = ns.handle().link_by_name("lo").expect("lo");
    // The address may be there already (one per namespace, several ports).
    let _ = ns
        .handle()
        .add_address(lo.index, format!("{BROKER}/32").parse().expect("cidr"));
    ns.namespace()
        .run(|| TcpListener::bind((BROKER, port)))
        .expect("enter namespace")
        .expect("bind listener")
}

impl Topology {
    fn new() -> Self {
        let guest = TestNamespace::new();
        let mgmt = TestNamespace::new();
        let tenant = TestNamespace::new();
        let (mgmt_if, mgmt_peer) = guest.veth("pfm", Some(&mgmt));
        let (tenant_if, tenant_peer) = guest.veth("pft", Some(&tenant));
        up_with_address(&guest, &mgmt_if, "10.77.1.2/24");
        up_with_address(&mgmt, &mgmt_peer, "10.77.1.1/24");
        up_with_address(&guest, &tenant_if, "10.77.2.2/24");
        up_with_address(&tenant, &tenant_peer, "10.77.2.1/24");
        let listeners = vec![
            listen(&mgmt, AMQP_PORT),
            listen(&mgmt, REGISTRY_PORT),
            listen(&tenant, AMQP_PORT),
        ];
        let tenant_mac = guest
            .handle()
            .link_by_name(&tenant_if)
            .expect("tenant link")
            .mac
            .expect("veth has a MAC");
        Self {
            guest,
            _mgmt: mgmt,
            _tenant: tenant,
            mgmt_if,
            tenant_if,
            tenant_mac,
            _listeners: listeners,
        }
    }

    /// Routes the broker's /24 from the guest through `gateway`.
    fn route_broker_via(&self, gateway: &str) {
        self.guest
            .handle()
            .replace_route(&RouteSpec::via(
                "10.77.9.0/24".parse().expect("net"),
                gateway.parse().expect("gateway"),
            ))
            .expect("route");
    }

    /// Runs the preflight from a thread inside the guest namespace, so that its connects
    /// leave from there, as the agent's do.
    fn preflight(&self, endpoints: &[Endpoint]) -> PreflightReport {
        let handle = self.guest.handle();
        let mac = self.tenant_mac;
        self.guest
            .namespace()
            .run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(preflight::run(handle, endpoints, Some(mac), TIMEOUT))
            })
            .expect("enter the guest namespace")
    }
}

fn endpoints(registry_port: u16) -> Vec<Endpoint> {
    vec![
        Endpoint {
            requirement: Requirement::Messaging,
            host: BROKER.into(),
            port: AMQP_PORT,
        },
        Endpoint {
            requirement: Requirement::Registry,
            host: BROKER.into(),
            port: registry_port,
        },
    ]
}

#[test]
fn broker_routed_through_the_tenant_nic_fails_naming_host_and_interface() {
    let topology = Topology::new();
    topology.route_broker_via("10.77.2.1");
    let report = topology.preflight(&endpoints(REGISTRY_PORT));
    assert!(!report.is_ok(), "{report}");
    for check in &report.checks {
        let failure = check.outcome.as_ref().expect_err("must fail");
        match failure {
            PreflightFailure::ThroughTenantNic {
                requirement,
                endpoint,
                interface,
                mac,
                ..
            } => {
                assert_eq!(*requirement, check.endpoint.requirement);
                assert_eq!(endpoint, &format!("{BROKER}:{}", check.endpoint.port));
                assert_eq!(interface, &topology.tenant_if);
                assert_eq!(*mac, topology.tenant_mac);
            }
            other => panic!("expected a tenant-route failure, got {other}"),
        }
        let text = failure.to_string();
        assert!(
            text.contains(BROKER) && text.contains(&topology.tenant_if),
            "the message names host and interface: {text}"
        );
        assert_eq!(
            check.interface.as_deref(),
            Some(topology.tenant_if.as_str())
        );
    }
    assert!(
        report
            .failure_summary()
            .starts_with("messaging (transport_url): the route to 10.77.9.1:5672"),
        "{}",
        report.failure_summary()
    );
}

#[test]
fn broker_and_registry_through_the_management_link_pass() {
    let topology = Topology::new();
    topology.route_broker_via("10.77.1.1");
    let report = topology.preflight(&endpoints(REGISTRY_PORT));
    assert!(report.is_ok(), "{report}");
    for check in &report.checks {
        assert_eq!(check.interface.as_deref(), Some(topology.mgmt_if.as_str()));
    }
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "ok    messaging (transport_url) {BROKER}:5672 via {}",
            topology.mgmt_if
        )),
        "{text}"
    );
}

#[test]
fn refused_connect_and_missing_route_name_the_requirement() {
    let topology = Topology::new();
    topology.route_broker_via("10.77.1.1");
    let mut checks = endpoints(5999);
    checks.push(Endpoint {
        requirement: Requirement::Registry,
        host: "10.78.0.1".into(),
        port: REGISTRY_PORT,
    });
    let report = topology.preflight(&checks);
    assert!(report.checks[0].outcome.is_ok(), "{report}");
    match report.checks[1].outcome.as_ref().expect_err("refused") {
        PreflightFailure::Connect {
            requirement,
            interface,
            ..
        } => {
            assert_eq!(*requirement, Requirement::Registry);
            assert_eq!(interface, &topology.mgmt_if);
        }
        other => panic!("expected a refused connect, got {other}"),
    }
    match report.checks[2].outcome.as_ref().expect_err("no route") {
        PreflightFailure::NoRoute { endpoint, .. } => assert_eq!(endpoint, "10.78.0.1:5000"),
        other => panic!("expected no route, got {other}"),
    }
}
