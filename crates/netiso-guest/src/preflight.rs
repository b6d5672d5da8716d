//! Preflight: the seed's two requirements, checked before the agent serves anything.
//!
//! With the tenant NIC gone from the VM, the control plane must still work, and only through
//! a **management** interface: every `transport_url` broker (messaging) and the container
//! registry (image pulls). For each, the kernel is asked which route it would use (a route
//! lookup in the agent's namespace, exactly what a `connect` would do), the route must leave
//! through an interface that is not the tenant NIC, and a TCP connect must be answered within
//! the timeout. A failure names the requirement, the host and the interface the route would
//! use, so an operator knows what to fix without reading code.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netiso_config::GuestConfig;
use netiso_netlink::{MacAddress, RouteType, Rtnetlink};
use netiso_runtime::ImageReference;
use netiso_runtime::image::DEFAULT_REGISTRY;

/// AMQP's port, when `transport_url` names none (kombu's default).
pub const DEFAULT_AMQP_PORT: u16 = 5672;
/// A registry's port when none is written: Docker speaks HTTPS first.
pub const DEFAULT_REGISTRY_PORT: u16 = 443;
/// Where Docker Hub (`docker.io`) is really pulled from.
const DOCKER_HUB_REGISTRY_HOST: &str = "registry-1.docker.io";
/// How long a check may take by default (resolution, route lookup and connect).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of the seed's requirements an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// RabbitMQ, from `transport_url`: the RPC with the control plane.
    Messaging,
    /// The container registry: image pulls.
    Registry,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Messaging => "messaging (transport_url)",
            Self::Registry => "container registry",
        })
    }
}

/// One host the guest must reach over the management network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Why it must be reached.
    pub requirement: Requirement,
    /// Host name or address, as configured.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why one endpoint fails the preflight. Every message names the requirement and the host;
/// those that got as far as a route also name the interface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightFailure {
    /// The host name does not resolve.
    #[error("{requirement}: cannot resolve {endpoint}: {reason}")]
    Resolve {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolver's words.
        reason: String,
    },
    /// The kernel has no route to the host.
    #[error("{requirement}: no route to {endpoint} ({address}): {reason}")]
    NoRoute {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolved address.
        address: IpAddr,
        /// The kernel's words.
        reason: String,
    },
    /// The route leaves through the tenant NIC: the control plane would use the user's network.
    #[error(
        "{requirement}: the route to {endpoint} ({address}) goes through interface {interface}, \
         the tenant NIC (MAC {mac}); it must go through a management interface"
    )]
    ThroughTenantNic {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolved address.
        address: IpAddr,
        /// The tenant interface's name.
        interface: String,
        /// The tenant NIC's MAC.
        mac: MacAddress,
    },
    /// The route is a blackhole, unreachable or prohibit route, or names no interface.
    #[error("{requirement}: the route to {endpoint} ({address}) does not lead anywhere: {route}")]
    NoInterface {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolved address.
        address: IpAddr,
        /// The route found, as text.
        route: String,
    },
    /// The connect was refused or failed.
    #[error(
        "{requirement}: TCP connect to {endpoint} ({address}) through interface {interface} failed: {reason}"
    )]
    Connect {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolved address.
        address: IpAddr,
        /// The interface the route uses.
        interface: String,
        /// The socket error.
        reason: String,
    },
    /// Nobody answered in time.
    #[error(
        "{requirement}: TCP connect to {endpoint} ({address}) through interface {interface} not answered within {timeout:?}"
    )]
    Timeout {
        /// The requirement.
        requirement: Requirement,
        /// The endpoint.
        endpoint: String,
        /// The resolved address.
        address: IpAddr,
        /// The interface the route uses.
        interface: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// The verdict on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub endpoint: Endpoint,
    /// The interface the route uses, when the lookup got that far.
    pub interface: Option<String>,
    /// How long the connect took, or why the check failed.
    pub outcome: Result<Duration, PreflightFailure>,
}

/// Every endpoint's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreflightReport {
    /// One per endpoint, in the order given.
    pub checks: Vec<Check>,
}

impl PreflightReport {
    /// True when every endpoint passed.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }

    /// The failures, in order.
    pub fn failures(&self) -> impl Iterator<Item = &PreflightFailure> {
        self.checks.iter().filter_map(|c| c.outcome.as_ref().err())
    }

    /// Every failure on one line each (what the conductor and the logs are told).
    pub fn failure_summary(&self) -> String {
        self.failures()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.checks.is_empty() {
            return writeln!(f, "no endpoint to check");
        }
        for check in &self.checks {
            match &check.outcome {
                Ok(took) => writeln!(
                    f,
                    "ok    {} {} via {} ({} ms)",
                    check.endpoint.requirement,
                    check.endpoint,
                    check.interface.as_deref().unwrap_or("?"),
                    took.as_millis()
                )?,
                Err(failure) => writeln!(f, "FAIL  {failure}")?,
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 in brackets) with a default port.
fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_owned(), port.parse().ok()?)),
        // A bare IPv6 address.
        Some(_) => Some((text.to_owned(), default_port)),
        None if text.is_empty() => None,
        None => Some((text.to_owned(), default_port)),
    }
}

/// The registry host the guest really pulls from: the datastore image's registry (with
/// `[guest_agent] container_registry` prefixed as the pull does), else the configured registry.
/// `None` when neither is configured (nothing will be pulled).
pub fn registry_endpoint(config: &GuestConfig) -> Option<Endpoint> {
    let configured = config.container_registry.as_deref().map(|registry| {
        let registry = registry.trim();
        let (without_scheme, port) = if let Some(rest) = registry.strip_prefix("http://") {
            (rest, 80)
        } else if let Some(rest) = registry.strip_prefix("https://") {
            (rest, DEFAULT_REGISTRY_PORT)
        } else {
            (registry, DEFAULT_REGISTRY_PORT)
        };
        (
            without_scheme
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
            port,
        )
    });
    let host_port = match (&config.datastore, &configured) {
        (Some(datastore), _) => {
            let image = ImageReference::with_default_registry(
                &datastore.docker_image,
                configured.as_ref().map(|(host, _)| host.as_str()),
            )
            .ok()?;
            let default_port = configured.as_ref().map_or(DEFAULT_REGISTRY_PORT, |c| c.1);
            match image.registry() {
                DEFAULT_REGISTRY => (DOCKER_HUB_REGISTRY_HOST.to_owned(), DEFAULT_REGISTRY_PORT),
                registry => (registry.to_owned(), default_port),
            }
        }
        (None, Some(configured)) => configured.clone(),
        (None, None) => return None,
    };
    let (host, port) = split_host_port(&host_port.0, host_port.1)?;
    Some(Endpoint {
        requirement: Requirement::Registry,
        host,
        port,
    })
}

/// Every endpoint of the seed's requirements: each broker of `transport_url`, then the registry.
pub fn endpoints(config: &GuestConfig) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = config
        .transport_url
        .hosts
        .iter()
        .map(|host| Endpoint {
            requirement: Requirement::Messaging,
            host: host.hostname.clone(),
            port: host.port.unwrap_or(DEFAULT_AMQP_PORT),
        })
        .collect();
    endpoints.extend(registry_endpoint(config));
    endpoints
}

/// Where the route to an address leaves, or why it does not.
struct RouteVerdict {
    address: IpAddr,
    interface: Result<String, PreflightFailure>,
}

async fn resolve(endpoint: &Endpoint, timeout: Duration) -> Result<IpAddr, PreflightFailure> {
    if let Ok(address) = endpoint.host.parse::<IpAddr>() {
        return Ok(address);
    }
    let failure = |reason: String| PreflightFailure::Resolve {
        requirement: endpoint.requirement,
        endpoint: endpoint.to_string(),
        reason,
    };
    let lookup = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(mut addresses)) => addresses
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| failure("no address".to_owned())),
        Ok(Err(e)) => Err(failure(e.to_string())),
        Err(_) => Err(failure(format!("no answer within {timeout:?}"))),
    }
}

fn route_verdict(
    rtnl: &dyn Rtnetlink,
    endpoint: &Endpoint,
    address: IpAddr,
    tenant_mac: Option<MacAddress>,
) -> Result<String, PreflightFailure> {
    let route = rtnl
        .route_to(address)
        .map_err(|e| PreflightFailure::NoRoute {
            requirement: endpoint.requirement,
            endpoint: endpoint.to_string(),
            address,
            reason: e.to_string(),
        })?;
    let no_interface = || PreflightFailure::NoInterface {
        requirement: endpoint.requirement,
        endpoint: endpoint.to_string(),
        address,
        route: route.to_string(),
    };
    if !matches!(route.kind, RouteType::Unicast | RouteType::Local) {
        return Err(no_interface());
    }
    let oif = route.oif.ok_or_else(no_interface)?;
    let link = rtnl
        .link_by_index(oif)
        .map_err(|e| PreflightFailure::NoRoute {
            requirement: endpoint.requirement,
            endpoint: endpoint.to_string(),
            address,
            reason: format!("route {route} names interface index {oif}, which cannot be read: {e}"),
        })?;
    if let Some(mac) = tenant_mac
        && link.mac == Some(mac)
    {
        return Err(PreflightFailure::ThroughTenantNic {
            requirement: endpoint.requirement,
            endpoint: endpoint.to_string(),
            address,
            interface: link.name,
            mac,
        });
    }
    Ok(link.name)
}

async fn connect(
    endpoint: &Endpoint,
    address: IpAddr,
    interface: &str,
    timeout: Duration,
) -> Result<Duration, PreflightFailure> {
    let started = Instant::now();
    let target = SocketAddr::new(address, endpoint.port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_stream)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(PreflightFailure::Connect {
            requirement: endpoint.requirement,
            endpoint: endpoint.to_string(),
            address,
            interface: interface.to_owned(),
            reason: e.to_string(),
        }),
        Err(_) => Err(PreflightFailure::Timeout {
            requirement: endpoint.requirement,
            endpoint: endpoint.to_string(),
            address,
            interface: interface.to_owned(),
            timeout,
        }),
    }
}

/// Checks every endpoint from the namespace `rtnl` is bound to, which must be the namespace
/// of the calling thread's sockets (the agent's own, the VM's). `tenant_mac` is the tenant
/// NIC's MAC (from `eth1.json`), when there is one: a route through it fails. Connects run
/// concurrently, each bounded by `timeout`.
pub async fn run(
    rtnl: &dyn Rtnetlink,
    endpoints: &[Endpoint],
    tenant_mac: Option<MacAddress>,
    timeout: Duration,
) -> PreflightReport {
    let mut verdicts = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let verdict = match resolve(endpoint, timeout).await {
            Ok(address) => Ok(RouteVerdict {
                address,
                interface: route_verdict(rtnl, endpoint, address, tenant_mac),
            }),
            Err(failure) => Err(failure),
        };
        verdicts.push(verdict);
    }
    let checks = endpoints
        .iter()
        .zip(verdicts)
        .map(|(endpoint, verdict)| async move {
            let (interface, outcome) = match verdict {
                Err(failure) => (None, Err(failure)),
                Ok(RouteVerdict {
                    interface: Err(failure),
                    ..
                }) => {
                    let interface = match &failure {
                        PreflightFailure::ThroughTenantNic { interface, .. } => {
                            Some(interface.clone())
                        }
                        _ => None,
                    };
                    (interface, Err(failure))
                }
                Ok(RouteVerdict {
                    address,
                    interface: Ok(interface),
                }) => {
                    let outcome = connect(endpoint, address, &interface, timeout).await;
                    (Some(interface), outcome)
                }
            };
            Check {
                endpoint: endpoint.clone(),
                interface,
                outcome,
            }
        });
    PreflightReport {
        checks: futures::future::join_all(checks).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_forms() {
        assert_eq!(
            split_host_port("10.0.0.1:5000", 443),
            Some(("10.0.0.1".into(), 5000))
        );
        assert_eq!(
            split_host_port("reg.example", 443),
            Some(("reg.example".into(), 443))
        );
        assert_eq!(
            split_host_port("[fd00::1]:5000", 443),
            Some(("fd00::1".into(), 5000))
        );
        assert_eq!(
            split_host_port("fd00::1", 443),
            Some(("fd00::1".into(), 443))
        );
        assert_eq!(split_host_port("host:notaport", 443), None);
        assert_eq!(split_host_port("", 443), None);
    }

    #[test]
    fn endpoints_display_like_sockets() {
        let v6 = Endpoint {
            requirement: Requirement::Messaging,
            host: "fd00::1".into(),
            port: 5672,
        };
        assert_eq!(v6.to_string(), "[fd00::1]:5672");
    }
}
