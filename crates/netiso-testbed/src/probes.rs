//! What the checks look at: the guest namespace's view of the tenant network, the database
//! container's namespace, the test image's size in the registry.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::IpNet;
use netiso_netlink::{
    Address, Link, MacAddress, Namespace, NetlinkHandle, Route, Rtnetlink, TABLE_LOCAL,
};
use netiso_runtime::ContainerRuntime;

use crate::net::{CLIENT_ADDR, HOST_ROUTE, TENANT_CIDR, TENANT_CIDR6};

/// The tenant networks: the subnets and the host route's destination.
pub fn tenant_nets() -> Vec<IpNet> {
    [TENANT_CIDR, TENANT_CIDR6, HOST_ROUTE]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn in_tenant(address: IpAddr) -> bool {
    tenant_nets().iter().any(|n| n.contains(&address))
}

fn overlaps_tenant(net: &IpNet) -> bool {
    tenant_nets()
        .iter()
        .any(|t| t.contains(&net.network()) || net.contains(&t.network()))
}

/// The guest namespace as the kernel shows it.
#[derive(Debug)]
pub struct GuestView {
    /// Every link.
    pub links: Vec<Link>,
    /// Every address.
    pub addresses: Vec<Address>,
    /// Every route outside the local table.
    pub routes: Vec<Route>,
    /// How the kernel would route to the client, or why it cannot.
    pub route_to_client: std::result::Result<Route, String>,
}

impl GuestView {
    /// Reads the guest namespace.
    pub fn read(guest_netns: &str) -> Result<Self> {
        let handle = NetlinkHandle::in_named(guest_netns)
            .with_context(|| format!("opening {guest_netns}: run `cargo xtask provision`"))?;
        Ok(Self {
            links: handle.links()?,
            addresses: handle.addresses(None)?,
            routes: handle
                .routes()?
                .into_iter()
                .filter(|r| r.table != TABLE_LOCAL)
                .collect(),
            route_to_client: handle
                .route_to(IpAddr::V4(CLIENT_ADDR))
                .map_err(|e| e.to_string()),
        })
    }

    /// The link with `mac`, whatever its name.
    pub fn link_with_mac(&self, mac: MacAddress) -> Option<&Link> {
        self.links.iter().find(|l| l.mac == Some(mac))
    }

    /// Link names, for details.
    pub fn link_names(&self) -> String {
        self.links
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn link_name(&self, index: Option<u32>) -> String {
        index
            .and_then(|i| self.links.iter().find(|l| l.index == i))
            .map_or_else(|| "?".to_owned(), |l| l.name.clone())
    }

    /// Addresses inside the tenant networks.
    pub fn tenant_addresses(&self) -> Vec<IpNet> {
        self.addresses
            .iter()
            .filter(|a| in_tenant(a.address.addr()))
            .map(|a| a.address)
            .collect()
    }

    /// Non-default routes towards the tenant networks, or through a tenant gateway, or
    /// through `tenant_link`.
    pub fn tenant_routes(&self, tenant_link: Option<u32>) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| !r.is_default())
            .filter(|r| {
                overlaps_tenant(&r.destination)
                    || r.gateway.is_some_and(in_tenant)
                    || tenant_link.is_some_and(|i| r.leaves_through(i))
            })
            .map(|r| format!("{r} dev {}", self.link_name(r.oif)))
            .collect()
    }

    /// Default routes through a tenant gateway or `tenant_link`.
    pub fn tenant_default_routes(&self, tenant_link: Option<u32>) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.is_default())
            .filter(|r| {
                r.gateway.is_some_and(in_tenant) || tenant_link.is_some_and(|i| r.leaves_through(i))
            })
            .map(|r| format!("{r} dev {}", self.link_name(r.oif)))
            .collect()
    }

    /// Every default route, for details.
    pub fn default_routes(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.is_default())
            .map(|r| format!("{r} dev {}", self.link_name(r.oif)))
            .collect()
    }
}

/// The network namespace of container `name`, where its runtime says it is.
pub async fn container_netns(runtime: &dyn ContainerRuntime, name: &str) -> Result<Namespace> {
    let Some(namespace) = runtime.network_namespace(name).await? else {
        return Err(no_namespace(runtime, name).await);
    };
    let path = namespace.path();
    Namespace::open_path(&path).with_context(|| format!("opening {}", path.display()))
}

/// The links of container `name`.
pub async fn container_links(runtime: &dyn ContainerRuntime, name: &str) -> Result<Vec<Link>> {
    match runtime.network_interfaces(name).await? {
        Some(links) => Ok(links),
        None => Err(no_namespace(runtime, name).await),
    }
}

/// Why container `name` has no network namespace: it does not exist, or its state.
async fn no_namespace(runtime: &dyn ContainerRuntime, name: &str) -> anyhow::Error {
    match runtime.inspect(name).await {
        Ok(None) => anyhow!("no container named `{name}`"),
        Ok(Some(info)) => anyhow!(
            "container `{name}` has no network namespace ({})",
            info.describe_state()
        ),
        Err(e) => anyhow!("container `{name}` has no network namespace (inspect: {e})"),
    }
}

/// Bytes of the image's layers and config in the registry (what a pull must download).
pub fn image_bytes(registry: &str, repository: &str, tag: &str) -> Result<u64> {
    let addr: SocketAddr = registry
        .parse()
        .with_context(|| format!("registry address {registry}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("registry at {registry}: run `cargo xtask provision`"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /v2/{repository}/manifests/{tag} HTTP/1.0\r\nHost: {registry}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the registry's answer has no body"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the registry answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let manifest: serde_json::Value = serde_json::from_str(body).context("manifest JSON")?;
    let size = |v: &serde_json::Value| v.get("size").and_then(serde_json::Value::as_u64);
    let layers: u64 = manifest
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| anyhow!("the manifest lists no layers"))?
        .iter()
        .filter_map(size)
        .sum();
    Ok(layers + manifest.get("config").and_then(size).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_membership_covers_subnets_and_host_route() {
        assert!(in_tenant("10.252.0.77".parse().unwrap()));
        assert!(in_tenant("fd00:252::10".parse().unwrap()));
        assert!(in_tenant("10.253.0.5".parse().unwrap()));
        assert!(!in_tenant("10.251.0.1".parse().unwrap()));
        assert!(overlaps_tenant(&"10.252.0.0/16".parse().unwrap()));
        assert!(!overlaps_tenant(&"10.251.0.0/24".parse().unwrap()));
    }
}
