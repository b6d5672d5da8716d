//! What `netns list` and `netns show` print: the seed's manual debugging recipe
//! (`ln -s /var/run/docker/netns /var/run/netns; ip netns; ip netns exec <id> ip a`) done
//! natively, without symlinks or `ip netns exec` (whose bind mount can keep a sandbox, and
//! the tenant NIC in it, alive after the container is gone).
//!
//! Every container sandbox (Docker's `<exec-root>/netns`, our containerd adapter's
//! directory, and the sandbox of every container the runtime knows) is opened read-only
//! through rtnetlink, and reported with its interfaces, addresses and routes, and whether it
//! holds the tenant NIC. The VM's own namespace is reported too, so "where is the tenant NIC
//! now?" has one answer.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use netiso_netlink::{
    Address, Link, MacAddress, Namespace, NetlinkHandle, Route, Rtnetlink, Scope, TABLE_LOCAL,
    netns,
};
use netiso_runtime::{ContainerRuntime, RuntimeError};

/// One interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceReport {
    /// The link.
    pub link: Link,
    /// Its addresses.
    pub addresses: Vec<Address>,
    /// Whether it is the tenant NIC (its MAC is the one of `eth1.json`).
    pub is_tenant_nic: bool,
}

/// One network namespace, as `ip a` and `ip r` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceReport {
    /// Sandbox id (Docker's 12-hex id, our adapter's name) or `vm` for the agent's own.
    pub id: String,
    /// Namespace file.
    pub path: PathBuf,
    /// Containers whose sandbox this is.
    pub containers: Vec<String>,
    /// Interfaces, in index order.
    pub interfaces: Vec<InterfaceReport>,
    /// Routes of every table but `local`.
    pub routes: Vec<Route>,
    /// Why the namespace could not be read, when it could not.
    pub error: Option<String>,
}

impl NamespaceReport {
    /// Whether the tenant NIC is in this namespace.
    pub fn holds_tenant_nic(&self) -> bool {
        self.interfaces.iter().any(|i| i.is_tenant_nic)
    }
}

/// Reads one namespace through `rtnl`.
pub fn read_namespace(
    rtnl: &dyn Rtnetlink,
    id: &str,
    path: &Path,
    tenant_mac: Option<MacAddress>,
) -> NamespaceReport {
    let mut report = NamespaceReport {
        id: id.to_owned(),
        path: path.to_owned(),
        containers: Vec::new(),
        interfaces: Vec::new(),
        routes: Vec::new(),
        error: None,
    };
    let read = || -> netiso_netlink::Result<(Vec<Link>, Vec<Address>, Vec<Route>)> {
        Ok((rtnl.links()?, rtnl.addresses(None)?, rtnl.routes()?))
    };
    match read() {
        Ok((mut links, addresses, routes)) => {
            links.sort_by_key(|l| l.index);
            report.interfaces = links
                .into_iter()
                .map(|link| InterfaceReport {
                    addresses: addresses
                        .iter()
                        .filter(|a| a.link_index == link.index)
                        .cloned()
                        .collect(),
                    is_tenant_nic: tenant_mac.is_some() && link.mac == tenant_mac,
                    link,
                })
                .collect();
            report.routes = routes
                .into_iter()
                .filter(|r| r.table != TABLE_LOCAL)
                .collect();
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Opens the namespace file at `path` and reads it.
pub fn read_namespace_at(id: &str, path: &Path, tenant_mac: Option<MacAddress>) -> NamespaceReport {
    let opened = Namespace::open_path(path).and_then(|ns| NetlinkHandle::in_namespace(&ns));
    match opened {
        Ok(handle) => read_namespace(&handle, id, path, tenant_mac),
        Err(e) => NamespaceReport {
            id: id.to_owned(),
            path: path.to_owned(),
            containers: Vec::new(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// A running container's sandbox, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSandbox {
    /// Container name.
    pub name: String,
    /// Its namespace file, as the runtime's `network_namespace` gives it.
    pub path: PathBuf,
}

/// The sandbox of every running container the runtime knows.
pub async fn container_sandboxes(
    runtime: &dyn ContainerRuntime,
) -> Result<Vec<ContainerSandbox>, RuntimeError> {
    let mut sandboxes = Vec::new();
    for summary in runtime.list().await? {
        let Some(namespace) = runtime.network_namespace(&summary.id).await? else {
            continue;
        };
        if let Some(info) = runtime.inspect(&summary.id).await? {
            sandboxes.push(ContainerSandbox {
                name: info.name,
                path: namespace.path(),
            });
        }
    }
    Ok(sandboxes)
}

/// Every sandbox found in `dirs` (Docker's `<exec-root>/netns`, our adapter's directory) and
/// in `containers`, merged by namespace identity, each read, container names attached.
pub fn list(
    dirs: &[PathBuf],
    containers: &[ContainerSandbox],
    tenant_mac: Option<MacAddress>,
) -> Vec<NamespaceReport> {
    // Namespace identity (device, inode) -> (id, path, container names).
    let mut found: BTreeMap<(u64, u64), (String, PathBuf, Vec<String>)> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for dir in dirs {
        match netns::list_sandboxes(dir) {
            Ok(sandboxes) => {
                for sandbox in sandboxes.into_iter().filter(|s| s.id != "default") {
                    match Namespace::open_path(&sandbox.path).and_then(|ns| ns.id()) {
                        Ok(identity) => {
                            found
                                .entry(identity)
                                .or_insert((sandbox.id, sandbox.path, Vec::new()));
                        }
                        Err(e) => unreadable.push(unreadable_report(&sandbox.id, &sandbox.path, e)),
                    }
                }
            }
            Err(e) => unreadable.push(unreadable_report("?", dir, e)),
        }
    }
    for container in containers {
        match Namespace::open_path(&container.path).and_then(|ns| ns.id()) {
            Ok(identity) => {
                let id = container
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| container.name.clone());
                found
                    .entry(identity)
                    .or_insert((id, container.path.clone(), Vec::new()))
                    .2
                    .push(container.name.clone());
            }
            Err(e) => {
                let mut report = unreadable_report(&container.name, &container.path, e);
                report.containers.push(container.name.clone());
                unreadable.push(report);
            }
        }
    }
    let mut reports: Vec<NamespaceReport> = found
        .into_values()
        .map(|(id, path, names)| {
            let mut report = read_namespace_at(&id, &path, tenant_mac);
            report.containers = names;
            report
        })
        .collect();
    reports.extend(unreadable);
    reports.sort_by(|a, b| a.id.cmp(&b.id));
    reports
}

fn unreadable_report(id: &str, path: &Path, error: impl fmt::Display) -> NamespaceReport {
    NamespaceReport {
        id: id.to_owned(),
        path: path.to_owned(),
        containers: Vec::new(),
        interfaces: Vec::new(),
        routes: Vec::new(),
        error: Some(error.to_string()),
    }
}

/// Picks the report `wanted` names: a sandbox id (or a unique prefix of one), or a container
/// name.
pub fn find<'a>(reports: &'a [NamespaceReport], wanted: &str) -> Option<&'a NamespaceReport> {
    if let Some(exact) = reports
        .iter()
        .find(|r| r.id == wanted || r.containers.iter().any(|c| c == wanted))
    {
        return Some(exact);
    }
    let mut prefixed = reports.iter().filter(|r| r.id.starts_with(wanted));
    match (prefixed.next(), prefixed.next()) {
        (Some(only), None) if !wanted.is_empty() => Some(only),
        _ => None,
    }
}

/// One line per namespace: id, containers, interfaces, and the tenant NIC marker.
pub fn summary_line(report: &NamespaceReport) -> String {
    let containers = if report.containers.is_empty() {
        "-".to_owned()
    } else {
        report.containers.join(",")
    };
    let mut line = format!("{:<14} {:<24}", report.id, containers);
    match &report.error {
        Some(error) => line.push_str(&format!(" unreadable: {error}")),
        None => {
            let names: Vec<&str> = report
                .interfaces
                .iter()
                .filter(|i| !i.link.loopback)
                .map(|i| i.link.name.as_str())
                .collect();
            line.push_str(&format!(" {}", names.join(",")));
            if report.holds_tenant_nic() {
                line.push_str("  <- holds the tenant NIC");
            }
        }
    }
    line
}

/// `ip`'s names for scopes.
fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Universe => "global".to_owned(),
        Scope::Site => "site".to_owned(),
        Scope::Link => "link".to_owned(),
        Scope::Host => "host".to_owned(),
        Scope::Nowhere => "nowhere".to_owned(),
        Scope::Other(raw) => raw.to_string(),
    }
}

impl fmt::Display for NamespaceReport {
    /// `ip a` then `ip r`, with the tenant NIC marked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "namespace {} ({})", self.id, self.path.display())?;
        if !self.containers.is_empty() {
            writeln!(f, "containers: {}", self.containers.join(", "))?;
        }
        if let Some(error) = &self.error {
            return writeln!(f, "unreadable: {error}");
        }
        for interface in &self.interfaces {
            let link = &interface.link;
            let state = if link.up { "UP" } else { "DOWN" };
            write!(
                f,
                "{}: {} <{}{}> mtu {}",
                link.index,
                link.name,
                state,
                if link.running { ",LOWER_UP" } else { "" },
                link.mtu
            )?;
            if let Some(mac) = link.mac.filter(|_| !link.loopback) {
                write!(f, " link/ether {mac}")?;
            }
            if let Some(kind) = &link.kind {
                write!(f, " kind {kind}")?;
            }
            if let Some(alias) = &link.alias {
                write!(f, " alias {alias}")?;
            }
            if interface.is_tenant_nic {
                write!(f, "  <- tenant NIC")?;
            }
            writeln!(f)?;
            for address in &interface.addresses {
                let family = if address.address.addr().is_ipv4() {
                    "inet"
                } else {
                    "inet6"
                };
                writeln!(
                    f,
                    "    {family} {} scope {}",
                    address.address,
                    scope_name(address.scope)
                )?;
            }
        }
        writeln!(f, "routes:")?;
        if self.routes.is_empty() {
            writeln!(f, "    (none)")?;
        }
        for route in &self.routes {
            let via = route
                .oif
                .and_then(|oif| self.interfaces.iter().find(|i| i.link.index == oif))
                .map(|i| format!(" dev {}", i.link.name))
                .unwrap_or_default();
            writeln!(f, "    {route}{via}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, containers: &[&str]) -> NamespaceReport {
        NamespaceReport {
            id: id.to_owned(),
            path: PathBuf::from(format!("/run/x/{id}")),
            containers: containers.iter().map(|c| (*c).to_owned()).collect(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn find_by_id_prefix_or_container() {
        let reports = vec![
            report("0123456789ab", &["database"]),
            report("0199aa000000", &[]),
        ];
        assert_eq!(
            find(&reports, "database").map(|r| r.id.as_str()),
            Some("0123456789ab")
        );
        assert_eq!(
            find(&reports, "0123").map(|r| r.id.as_str()),
            Some("0123456789ab")
        );
        assert!(find(&reports, "01").is_none(), "ambiguous prefix");
        assert!(find(&reports, "").is_none());
        assert!(find(&reports, "nope").is_none());
    }
}
