//! Pure translations between our specs and the Docker Engine API models (bollard's), kept
//! apart from I/O so every field the daemon sees is unit-tested.
//!
//! bollard's models follow API 1.53 while Debian's dockerd 20.10 speaks 1.41: only fields
//! that 1.41 knows are ever set here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary as DockerContainerSummary, ContainerSummaryStateEnum, CreateImageInfo,
    EndpointIpamConfig, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, Ipam,
    IpamConfig, NetworkCreateRequest, NetworkInspect, NetworkSettings, NetworkingConfig,
    PortBinding, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use ipnet::IpNet;
use netiso_config::tenant_nic::MacAddress;

use crate::error::RuntimeError;
use crate::image::PullProgress;
use crate::runtime::{
    ContainerInfo, ContainerStatus, ContainerSummary, EndpointInfo, HealthStatus, NetworkNamespace,
};
use crate::spec::{
    ContainerSpec, HOSTNIC_MAC_OPTION, HealthCheck, HostnicNetworkSpec, NetworkAttachment,
    RestartPolicy,
};

/// Docker's default bridge network, used in bridged mode.
pub const DEFAULT_BRIDGE_NETWORK: &str = "bridge";

/// The create-container request body for a spec, after checking what Docker would reject
/// late or misread (names, env keys, bind paths, ports, health check).
pub fn container_create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, RuntimeError> {
    validate(spec)?;
    let mut host_config = HostConfig {
        binds: (!spec.binds.is_empty()).then(|| {
            spec.binds
                .iter()
                .map(|bind| {
                    let mode = if bind.read_only { ":ro" } else { "" };
                    format!("{}:{}{mode}", bind.host_path, bind.container_path)
                })
                .collect()
        }),
        restart_policy: Some(DockerRestartPolicy {
            name: Some(match spec.restart_policy {
                RestartPolicy::No => RestartPolicyNameEnum::NO,
                RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            }),
            maximum_retry_count: None,
        }),
        privileged: spec.privileged.then_some(true),
        ipc_mode: spec.ipc_host.then(|| "host".to_owned()),
        ..HostConfig::default()
    };
    let mut exposed_ports = None;
    let mut networking_config = None;
    match &spec.network {
        NetworkAttachment::Bridged {
            published_tcp_ports,
        } => {
            host_config.network_mode = Some(DEFAULT_BRIDGE_NETWORK.to_owned());
            let keys: Vec<String> = published_tcp_ports
                .iter()
                .map(|p| format!("{p}/tcp"))
                .collect();
            host_config.port_bindings = Some(
                published_tcp_ports
                    .iter()
                    .zip(&keys)
                    .map(|(port, key)| {
                        let binding = PortBinding {
                            host_ip: None,
                            host_port: Some(port.to_string()),
                        };
                        (key.clone(), Some(vec![binding]))
                    })
                    .collect(),
            );
            exposed_ports = Some(keys);
        }
        NetworkAttachment::Hostnic {
            network,
            ipv4,
            ipv6,
        } => {
            host_config.network_mode = Some(network.clone());
            let ipam_config = (ipv4.is_some() || ipv6.is_some()).then(|| EndpointIpamConfig {
                ipv4_address: ipv4.map(|a| a.to_string()),
                ipv6_address: ipv6.map(|a| a.to_string()),
                link_local_ips: None,
            });
            let endpoint = EndpointSettings {
                ipam_config,
                ..EndpointSettings::default()
            };
            networking_config = Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network.clone(), endpoint)])),
            });
        }
    }
    Ok(ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: spec.command.clone(),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={}", value.expose()))
                .collect()
        }),
        user: spec.user.clone(),
        labels: (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        exposed_ports,
        host_config: Some(host_config),
        networking_config,
        ..ContainerCreateBody::default()
    })
}

fn health_config(check: &HealthCheck) -> HealthConfig {
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    HealthConfig {
        test: Some(check.test.clone()),
        interval: Some(nanos(check.interval)),
        timeout: Some(nanos(check.timeout)),
        retries: Some(i64::from(check.retries)),
        start_period: Some(nanos(check.start_period)),
        start_interval: None,
    }
}

fn validate(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let invalid = |problem: String| RuntimeError::InvalidSpec {
        container: spec.name.clone(),
        problem,
    };
    if !is_valid_container_name(&spec.name) {
        return Err(invalid(
            "the name must match [a-zA-Z0-9][a-zA-Z0-9_.-]+".to_owned(),
        ));
    }
    if let Some(key) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return Err(invalid(format!(
            "environment variable name `{key}` is empty or has `=`"
        )));
    }
    for bind in &spec.binds {
        for path in [&bind.host_path, &bind.container_path] {
            if !path.starts_with('/') || path.contains(':') {
                return Err(invalid(format!(
                    "bind path `{path}` must be absolute and must not contain `:`"
                )));
            }
        }
    }
    if spec.user.as_deref().is_some_and(str::is_empty) {
        return Err(invalid("the user is empty".to_owned()));
    }
    if spec.command.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid("the command is empty".to_owned()));
    }
    if let Some(check) = &spec.healthcheck {
        match check.test.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL") if check.test.len() > 1 => {}
            Some("NONE") if check.test.len() == 1 => {}
            _ => {
                return Err(invalid(
                    "the health check must be [\"CMD\", …], [\"CMD-SHELL\", script] or [\"NONE\"]"
                        .to_owned(),
                ));
            }
        }
    }
    match &spec.network {
        NetworkAttachment::Bridged {
            published_tcp_ports,
        } => {
            if published_tcp_ports.contains(&0) {
                return Err(invalid("published port 0".to_owned()));
            }
            let unique: BTreeSet<_> = published_tcp_ports.iter().collect();
            if unique.len() != published_tcp_ports.len() {
                return Err(invalid("a published port is listed twice".to_owned()));
            }
        }
        NetworkAttachment::Hostnic { network, .. } => {
            if network.is_empty() {
                return Err(invalid("the hostnic network name is empty".to_owned()));
            }
        }
    }
    Ok(())
}

/// Docker's container-name rule.
fn is_valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The create-network request for the hostnic network: Trove's fields exactly (driver,
/// default IPAM with one pool per family, `EnableIPv6`, the `hostnic_mac` option).
pub fn network_create_request(network: &HostnicNetworkSpec) -> NetworkCreateRequest {
    let pools = [network.ipv4, network.ipv6]
        .into_iter()
        .flatten()
        .map(|pool| IpamConfig {
            subnet: Some(pool.subnet.to_string()),
            gateway: pool.gateway.map(|g| g.to_string()),
            ..IpamConfig::default()
        })
        .collect();
    NetworkCreateRequest {
        name: network.name.clone(),
        driver: Some(network.driver.clone()),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            config: Some(pools),
            options: None,
        }),
        enable_ipv6: Some(network.enable_ipv6()),
        options: Some(HashMap::from([(
            HOSTNIC_MAC_OPTION.to_owned(),
            network.mac_address.to_string(),
        )])),
        ..NetworkCreateRequest::default()
    }
}

/// Every setting in which an existing network differs from the wanted one, as
/// `what: existing X, wanted Y`; empty when it can be reused.
pub fn network_differences(wanted: &HostnicNetworkSpec, existing: &NetworkInspect) -> Vec<String> {
    let mut differences = Vec::new();
    let driver = existing.driver.as_deref().unwrap_or("");
    if driver != wanted.driver {
        differences.push(format!(
            "driver: existing `{driver}`, wanted `{}`",
            wanted.driver
        ));
    }
    let mac_text = existing
        .options
        .as_ref()
        .and_then(|o| o.get(HOSTNIC_MAC_OPTION))
        .map(String::as_str);
    let mac = mac_text.and_then(|m| m.parse::<MacAddress>().ok());
    if mac != Some(wanted.mac_address) {
        differences.push(format!(
            "{HOSTNIC_MAC_OPTION}: existing `{}`, wanted `{}`",
            mac_text.unwrap_or("none"),
            wanted.mac_address
        ));
    }
    let enable_ipv6 = existing.enable_ipv6.unwrap_or(false);
    if enable_ipv6 != wanted.enable_ipv6() {
        differences.push(format!(
            "EnableIPv6: existing {enable_ipv6}, wanted {}",
            wanted.enable_ipv6()
        ));
    }
    let existing_pools = existing_pools(existing);
    let wanted_pools: BTreeSet<(String, String)> = [wanted.ipv4, wanted.ipv6]
        .into_iter()
        .flatten()
        .map(|p| (p.subnet.to_string(), gateway_text(p.gateway)))
        .collect();
    if existing_pools != wanted_pools {
        let show = |pools: &BTreeSet<(String, String)>| {
            pools
                .iter()
                .map(|(subnet, gateway)| format!("{subnet} gateway {gateway}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        differences.push(format!(
            "IPAM pools: existing [{}], wanted [{}]",
            show(&existing_pools),
            show(&wanted_pools)
        ));
    }
    differences
}

/// The pools as (subnet, gateway) in canonical text, so `fd00:0::/64` equals `fd00::/64`.
fn existing_pools(existing: &NetworkInspect) -> BTreeSet<(String, String)> {
    existing
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.config.as_ref())
        .into_iter()
        .flatten()
        .map(|pool| {
            let subnet = pool.subnet.as_deref().unwrap_or("");
            let subnet = subnet
                .parse::<IpNet>()
                .map_or_else(|_| subnet.to_owned(), |n| n.to_string());
            let gateway = pool.gateway.as_deref().filter(|g| !g.is_empty()).map(|g| {
                g.parse::<IpAddr>()
                    .map_or_else(|_| g.to_owned(), |a| a.to_string())
            });
            (subnet, gateway.unwrap_or_else(|| gateway_text(None)))
        })
        .collect()
}

fn gateway_text(gateway: Option<IpAddr>) -> String {
    gateway.map_or_else(|| "auto".to_owned(), |g| g.to_string())
}

/// Our view of an inspect answer.
pub fn container_info(inspect: ContainerInspectResponse) -> ContainerInfo {
    let pid = running_pid(inspect.state.as_ref());
    let sandbox_key = live_sandbox_key(inspect.network_settings.as_ref(), pid);
    let state = inspect.state.unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        _ => ContainerStatus::Unknown,
    };
    let health = state.health.and_then(|h| h.status).and_then(|s| match s {
        HealthStatusEnum::STARTING => Some(HealthStatus::Starting),
        HealthStatusEnum::HEALTHY => Some(HealthStatus::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(HealthStatus::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    });
    let settings = inspect.network_settings.unwrap_or_default();
    let networks = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, endpoint)| {
            let info = EndpointInfo {
                ipv4: endpoint.ip_address.as_deref().and_then(|a| a.parse().ok()),
                ipv6: endpoint
                    .global_ipv6_address
                    .as_deref()
                    .and_then(|a| a.parse().ok()),
                mac_address: endpoint.mac_address.filter(|m| !m.is_empty()),
            };
            (name, info)
        })
        .collect::<BTreeMap<_, _>>();
    ContainerInfo {
        id: inspect.id.unwrap_or_default(),
        name: strip_slash(inspect.name.unwrap_or_default()),
        image: inspect
            .config
            .and_then(|c| c.image)
            .or(inspect.image)
            .unwrap_or_default(),
        status,
        exit_code: state.exit_code,
        health,
        pid,
        sandbox_key,
        restart_count: inspect
            .restart_count
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        error: state.error.filter(|e| !e.is_empty()),
        networks,
    }
}

/// Where the container's network namespace is, from an inspect answer: its sandbox key
/// while it has a process, else that process's own namespace (a container that joins
/// another's network, `container:<id>`, has no sandbox key of its own); `None` without a
/// process, since dockerd tears the sandbox down when the container stops.
pub fn network_namespace(inspect: &ContainerInspectResponse) -> Option<NetworkNamespace> {
    let pid = running_pid(inspect.state.as_ref())?;
    Some(
        match live_sandbox_key(inspect.network_settings.as_ref(), Some(pid)) {
            Some(key) => NetworkNamespace::Mounted(key),
            None => NetworkNamespace::Process(pid),
        },
    )
}

/// The main process's pid while there is one (dockerd reports 0 for a stopped container).
fn running_pid(state: Option<&ContainerState>) -> Option<u32> {
    state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// The sandbox key of a container with a process: dockerd 20.10 keeps reporting the key of
/// a stopped container, whose namespace is gone.
fn live_sandbox_key(settings: Option<&NetworkSettings>, pid: Option<u32>) -> Option<PathBuf> {
    pid?;
    settings
        .and_then(|s| s.sandbox_key.as_deref())
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
}

/// Our view of one `list` entry.
pub fn container_summary(summary: DockerContainerSummary) -> ContainerSummary {
    ContainerSummary {
        id: summary.id.unwrap_or_default(),
        names: summary
            .names
            .unwrap_or_default()
            .into_iter()
            .map(strip_slash)
            .collect(),
        image: summary.image.unwrap_or_default(),
        status: match summary.state {
            Some(ContainerSummaryStateEnum::CREATED) => ContainerStatus::Created,
            Some(ContainerSummaryStateEnum::RUNNING) => ContainerStatus::Running,
            Some(ContainerSummaryStateEnum::PAUSED) => ContainerStatus::Paused,
            Some(ContainerSummaryStateEnum::RESTARTING) => ContainerStatus::Restarting,
            Some(ContainerSummaryStateEnum::REMOVING) => ContainerStatus::Removing,
            Some(ContainerSummaryStateEnum::EXITED) => ContainerStatus::Exited,
            Some(ContainerSummaryStateEnum::DEAD) => ContainerStatus::Dead,
            _ => ContainerStatus::Unknown,
        },
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
    }
}

fn strip_slash(name: String) -> String {
    name.strip_prefix('/').map(str::to_owned).unwrap_or(name)
}

/// One pull progress event.
pub fn pull_progress(info: &CreateImageInfo) -> PullProgress {
    let detail = info.progress_detail.as_ref();
    let bytes = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
    PullProgress {
        id: info.id.clone(),
        status: info.status.clone().unwrap_or_default(),
        current: bytes(detail.and_then(|d| d.current)),
        total: bytes(detail.and_then(|d| d.total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Bind, IpamPool};
    use bollard::models::Health;
    use netiso_config::secret::Secret;
    use std::time::Duration;

    fn spec(network: NetworkAttachment) -> ContainerSpec {
        let image = "10.251.0.1:5000/trove/mysql:8.0".parse().expect("image");
        ContainerSpec::new("database", image, network)
    }

    fn hostnic_network() -> HostnicNetworkSpec {
        HostnicNetworkSpec {
            name: "database-network".into(),
            driver: "docker-hostnic".into(),
            mac_address: "fa:16:3e:aa:bb:cc".parse().expect("mac"),
            ipv4: Some(IpamPool {
                subnet: "10.0.0.0/24".parse().expect("subnet"),
                gateway: Some("10.0.0.1".parse().expect("gw")),
            }),
            ipv6: Some(IpamPool {
                subnet: "fd00::/64".parse().expect("subnet"),
                gateway: None,
            }),
        }
    }

    fn as_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).expect("serializable")
    }

    #[test]
    fn bridged_publishes_each_port_on_the_same_number() {
        let body = container_create_body(&spec(NetworkAttachment::Bridged {
            published_tcp_ports: vec![3306, 33060],
        }))
        .expect("valid");
        let json = as_json(&body);
        assert_eq!(json["Image"], "10.251.0.1:5000/trove/mysql:8.0");
        assert_eq!(
            json["ExposedPorts"],
            serde_json::json!({"3306/tcp": {}, "33060/tcp": {}})
        );
        let host = &json["HostConfig"];
        assert_eq!(host["NetworkMode"], "bridge");
        assert_eq!(
            host["PortBindings"],
            serde_json::json!({
                "3306/tcp": [{"HostPort": "3306"}],
                "33060/tcp": [{"HostPort": "33060"}],
            })
        );
        assert_eq!(host["IpcMode"], "host");
        assert_eq!(
            host["RestartPolicy"],
            serde_json::json!({"Name": "unless-stopped"})
        );
        assert!(json.get("NetworkingConfig").is_none());
        assert!(host.get("Privileged").is_none());
    }

    #[test]
    fn hostnic_sets_static_endpoint_addresses_and_publishes_nothing() {
        let body = container_create_body(&spec(NetworkAttachment::Hostnic {
            network: "database-network".into(),
            ipv4: Some("10.0.0.5".parse().expect("ip")),
            ipv6: Some("fd00::5".parse().expect("ip")),
        }))
        .expect("valid");
        let json = as_json(&body);
        assert_eq!(json["HostConfig"]["NetworkMode"], "database-network");
        assert!(json.get("ExposedPorts").is_none());
        assert!(json["HostConfig"].get("PortBindings").is_none());
        assert_eq!(
            json["NetworkingConfig"],
            serde_json::json!({"EndpointsConfig": {"database-network": {
                "IPAMConfig": {"IPv4Address": "10.0.0.5", "IPv6Address": "fd00::5"}
            }}})
        );

        let v4_only = container_create_body(&spec(NetworkAttachment::Hostnic {
            network: "database-network".into(),
            ipv4: Some("10.0.0.5".parse().expect("ip")),
            ipv6: None,
        }))
        .expect("valid");
        assert_eq!(
            as_json(&v4_only)["NetworkingConfig"]["EndpointsConfig"]["database-network"]["IPAMConfig"],
            serde_json::json!({"IPv4Address": "10.0.0.5"})
        );
    }

    #[test]
    fn user_env_binds_health_and_restart_policy() {
        let mut spec = spec(NetworkAttachment::Bridged {
            published_tcp_ports: vec![],
        });
        spec.user = Some("1001:1001".into());
        spec.env
            .insert("MYSQL_ROOT_PASSWORD".into(), Secret::new("s3cret"));
        spec.env
            .insert("MYSQL_INITDB_SKIP_TZINFO".into(), Secret::new("1"));
        spec.binds = vec![
            Bind {
                host_path: "/var/lib/mysql".into(),
                container_path: "/var/lib/mysql".into(),
                read_only: false,
            },
            Bind {
                host_path: "/etc/mysql".into(),
                container_path: "/etc/mysql".into(),
                read_only: true,
            },
        ];
        spec.restart_policy = RestartPolicy::No;
        spec.privileged = true;
        spec.healthcheck = Some(HealthCheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(1500),
            retries: 3,
            start_period: Duration::ZERO,
        });
        let json = as_json(&container_create_body(&spec).expect("valid"));
        assert_eq!(json["User"], "1001:1001");
        assert_eq!(
            json["Env"],
            serde_json::json!(["MYSQL_INITDB_SKIP_TZINFO=1", "MYSQL_ROOT_PASSWORD=s3cret"])
        );
        assert_eq!(
            json["HostConfig"]["Binds"],
            serde_json::json!(["/var/lib/mysql:/var/lib/mysql", "/etc/mysql:/etc/mysql:ro"])
        );
        assert_eq!(json["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(json["HostConfig"]["Privileged"], true);
        assert_eq!(
            json["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000i64,
                "Timeout": 1_500_000_000i64, "Retries": 3, "StartPeriod": 0})
        );
        assert!(
            !format!("{spec:?}").contains("s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let bridged = |ports: Vec<u16>| NetworkAttachment::Bridged {
            published_tcp_ports: ports,
        };
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (
                ContainerSpec {
                    name: "-bad".into(),
                    ..spec(bridged(vec![]))
                },
                "name",
            ),
            (spec(bridged(vec![0])), "port 0"),
            (spec(bridged(vec![3306, 3306])), "twice"),
            (
                ContainerSpec {
                    user: Some(String::new()),
                    ..spec(bridged(vec![]))
                },
                "user",
            ),
            (
                ContainerSpec {
                    binds: vec![Bind {
                        host_path: "relative".into(),
                        container_path: "/x".into(),
                        read_only: false,
                    }],
                    ..spec(bridged(vec![]))
                },
                "bind path",
            ),
            (
                ContainerSpec {
                    env: [("A=B".to_owned(), Secret::new("x"))].into(),
                    ..spec(bridged(vec![]))
                },
                "environment",
            ),
            (
                ContainerSpec {
                    healthcheck: Some(HealthCheck {
                        test: vec!["true".into()],
                        interval: Duration::from_secs(1),
                        timeout: Duration::from_secs(1),
                        retries: 1,
                        start_period: Duration::ZERO,
                    }),
                    ..spec(bridged(vec![]))
                },
                "health check",
            ),
            (
                spec(NetworkAttachment::Hostnic {
                    network: String::new(),
                    ipv4: None,
                    ipv6: None,
                }),
                "network name",
            ),
        ];
        for (spec, expected) in cases {
            let err = container_create_body(&spec).expect_err(expected);
            let text = err.to_string();
            assert!(
                text.contains(expected) && text.contains(&spec.name),
                "{expected}: {text}"
            );
        }
    }

    #[test]
    fn network_request_matches_trove() {
        let json = as_json(&network_create_request(&hostnic_network()));
        assert_eq!(
            json,
            serde_json::json!({
                "Name": "database-network",
                "Driver": "docker-hostnic",
                "IPAM": {"Driver": "default", "Config": [
                    {"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"},
                    {"Subnet": "fd00::/64"},
                ]},
                "EnableIPv6": true,
                "Options": {"hostnic_mac": "fa:16:3e:aa:bb:cc"},
            })
        );
        let mut v4_only = hostnic_network();
        v4_only.ipv6 = None;
        let json = as_json(&network_create_request(&v4_only));
        assert_eq!(json["EnableIPv6"], false);
        assert_eq!(json["IPAM"]["Config"].as_array().map(Vec::len), Some(1));
    }

    fn inspect_of(spec: &HostnicNetworkSpec) -> NetworkInspect {
        let request = network_create_request(spec);
        NetworkInspect {
            name: Some(request.name),
            id: Some("abc".into()),
            driver: request.driver,
            enable_ipv6: request.enable_ipv6,
            ipam: request.ipam,
            options: request.options,
            ..NetworkInspect::default()
        }
    }

    #[test]
    fn an_identical_network_has_no_differences() {
        let wanted = hostnic_network();
        let mut existing = inspect_of(&wanted);
        assert!(network_differences(&wanted, &existing).is_empty());
        // Same values spelled differently still match.
        existing.options = Some(HashMap::from([(
            "hostnic_mac".into(),
            "FA:16:3E:AA:BB:CC".into(),
        )]));
        if let Some(config) = existing.ipam.as_mut().and_then(|i| i.config.as_mut()) {
            config[1].subnet = Some("fd00:0:0::/64".into());
        }
        assert_eq!(
            network_differences(&wanted, &existing),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_stale_setting_is_reported() {
        let wanted = hostnic_network();
        let mut old = wanted.clone();
        old.driver = "bridge".into();
        old.mac_address = "fa:16:3e:00:00:01".parse().expect("mac");
        old.ipv4 = Some(IpamPool {
            subnet: "10.9.0.0/24".parse().expect("subnet"),
            gateway: None,
        });
        old.ipv6 = None;
        let differences = network_differences(&wanted, &inspect_of(&old));
        assert_eq!(differences.len(), 4, "{differences:?}");
        let text = differences.join("\n");
        for expected in [
            "driver: existing `bridge`, wanted `docker-hostnic`",
            "hostnic_mac: existing `fa:16:3e:00:00:01`, wanted `fa:16:3e:aa:bb:cc`",
            "EnableIPv6: existing false, wanted true",
            "IPAM pools: existing [10.9.0.0/24 gateway auto], wanted [10.0.0.0/24 gateway 10.0.0.1, fd00::/64 gateway auto]",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in\n{text}");
        }
        let mut no_mac = inspect_of(&wanted);
        no_mac.options = None;
        assert_eq!(
            network_differences(&wanted, &no_mac),
            vec!["hostnic_mac: existing `none`, wanted `fa:16:3e:aa:bb:cc`".to_owned()]
        );
    }

    #[test]
    fn inspect_is_mapped_to_container_info() {
        let inspect = ContainerInspectResponse {
            id: Some("c0ffee".into()),
            name: Some("/database".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                pid: Some(4242),
                exit_code: Some(0),
                health: Some(Health {
                    status: Some(HealthStatusEnum::HEALTHY),
                    ..Health::default()
                }),
                error: Some(String::new()),
                ..ContainerState::default()
            }),
            restart_count: Some(2),
            network_settings: Some(NetworkSettings {
                sandbox_key: Some("/run/docker/netns/0123456789ab".into()),
                networks: Some(HashMap::from([(
                    "database-network".into(),
                    EndpointSettings {
                        ip_address: Some("10.0.0.5".into()),
                        global_ipv6_address: Some(String::new()),
                        mac_address: Some("fa:16:3e:aa:bb:cc".into()),
                        ..EndpointSettings::default()
                    },
                )])),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        };
        let info = container_info(inspect);
        assert_eq!(info.name, "database");
        assert_eq!(info.status, ContainerStatus::Running);
        assert_eq!(info.health, Some(HealthStatus::Healthy));
        assert_eq!(info.pid, Some(4242));
        assert_eq!(
            info.sandbox_key,
            Some(PathBuf::from("/run/docker/netns/0123456789ab"))
        );
        assert_eq!(info.restart_count, 2);
        assert_eq!(info.error, None);
        let endpoint = &info.networks["database-network"];
        assert_eq!(endpoint.ipv4, Some("10.0.0.5".parse().expect("ip")));
        assert_eq!(endpoint.ipv6, None);
        assert_eq!(info.describe_state(), "running (healthy)");

        let stopped = container_info(ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                pid: Some(0),
                exit_code: Some(137),
                ..ContainerState::default()
            }),
            network_settings: Some(NetworkSettings {
                sandbox_key: Some("/run/docker/netns/0123456789ab".into()),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        });
        assert_eq!((stopped.pid, stopped.sandbox_key.as_deref()), (None, None));
        assert_eq!(stopped.describe_state(), "exited (code 137)");
    }

    #[test]
    fn network_namespace_is_the_sandbox_key_while_the_container_runs() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "c0ffee",
            "Name": "/database",
            "State": {"Status": "running", "Running": true, "Pid": 4242},
            "NetworkSettings": {"SandboxKey": "/run/docker/netns/0123456789ab"}
        }))
        .expect("inspect JSON");
        assert_eq!(
            network_namespace(&inspect),
            Some(NetworkNamespace::Mounted(PathBuf::from(
                "/run/docker/netns/0123456789ab"
            )))
        );
    }

    #[test]
    fn network_namespace_without_sandbox_key_is_the_process_one() {
        // A container on another's network (`container:<id>`) reports an empty key.
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "State": {"Status": "running", "Running": true, "Pid": 4242},
            "NetworkSettings": {"SandboxKey": ""}
        }))
        .expect("inspect JSON");
        let namespace = network_namespace(&inspect).expect("a running container has one");
        assert_eq!(namespace, NetworkNamespace::Process(4242));
        assert_eq!(namespace.path(), PathBuf::from("/proc/4242/ns/net"));
    }

    #[test]
    fn a_stopped_container_has_no_network_namespace() {
        // dockerd 20.10 keeps the key of a stopped container; its namespace is gone.
        let stopped: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "State": {"Status": "exited", "Running": false, "Pid": 0, "ExitCode": 137},
            "NetworkSettings": {"SandboxKey": "/run/docker/netns/0123456789ab"}
        }))
        .expect("inspect JSON");
        assert_eq!(network_namespace(&stopped), None);
        assert_eq!(
            network_namespace(&ContainerInspectResponse::default()),
            None
        );
    }

    #[test]
    fn pull_events_carry_layer_and_bytes() {
        let event: CreateImageInfo = serde_json::from_value(serde_json::json!({
            "status": "Downloading", "id": "a1b2c3",
            "progressDetail": {"current": 1024, "total": 4096}
        }))
        .expect("event");
        assert_eq!(
            pull_progress(&event),
            PullProgress {
                id: Some("a1b2c3".into()),
                status: "Downloading".into(),
                current: Some(1024),
                total: Some(4096),
            }
        );
    }
}
