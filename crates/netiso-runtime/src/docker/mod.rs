//! The Docker adapter: [`ContainerRuntime`] over the Engine API with `bollard`.
//!
//! Written for Debian's `docker.io` 20.10 (API 1.41). bollard sends unversioned paths, so
//! the daemon answers in its own version; every call used here is exercised against that
//! daemon by this crate's integration tests.

pub mod mapping;
mod stale_proxy;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, InspectNetworkOptions,
    ListContainersOptions, ListNetworksOptions, RemoveContainerOptions, RestartContainerOptions,
    StopContainerOptions,
};
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::error::RuntimeError;
use crate::image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSummary, NetworkNamespace, NetworkStatus,
};
use crate::spec::{ContainerSpec, HostnicNetworkSpec};

/// Extra time a stop or restart request may take beyond its kill timeout.
const STOP_REQUEST_MARGIN: Duration = Duration::from_secs(30);

/// A connection to one dockerd.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    client: Docker,
    endpoint: String,
    api_version: String,
}

impl DockerRuntime {
    /// Connects to `endpoint` (`unix:///path` or `tcp://host:port`) and checks that a Docker
    /// daemon answers there, so misconfiguration shows at start-up, not at the first pull.
    pub async fn connect(endpoint: &str) -> Result<Self, RuntimeError> {
        let unreachable = |source: DockerError| RuntimeError::Unreachable {
            endpoint: endpoint.to_owned(),
            source: Box::new(source),
        };
        let client = Docker::connect_with_host(endpoint).map_err(unreachable)?;
        let version = client.version().await.map_err(unreachable)?;
        let api_version = version.api_version.unwrap_or_default();
        info!(
            endpoint,
            api_version,
            engine = version.version.as_deref().unwrap_or(""),
            "connected to dockerd"
        );
        Ok(Self {
            client,
            endpoint: endpoint.to_owned(),
            api_version,
        })
    }

    /// The socket or URL this runtime talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The daemon's API version (`1.41` for Debian's 20.10).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The local id of an image reference, `None` when absent.
    pub async fn local_image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.client.inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.backend("inspect image", image, e)),
        }
    }

    /// dockerd's inspect answer for a container, `None` when there is no such container.
    async fn inspect_container(
        &self,
        name: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        match self
            .client
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => Ok(Some(inspect)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.backend("inspect container", name, e)),
        }
    }

    /// Networks whose name is exactly `name` (Docker's name filter matches substrings, and
    /// API 1.41 allows duplicates), inspected so their containers are known.
    async fn networks_named(
        &self,
        name: &str,
    ) -> Result<Vec<bollard::models::NetworkInspect>, RuntimeError> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let listed = self
            .client
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| self.backend("list networks", name, e))?;
        let mut found = Vec::new();
        for network in listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
        {
            let Some(id) = network.id else { continue };
            match self
                .client
                .inspect_network(&id, None::<InspectNetworkOptions>)
                .await
            {
                Ok(inspect) => found.push(inspect),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.backend("inspect network", name, e)),
            }
        }
        Ok(found)
    }

    /// Names of the containers attached to any of `networks`, running or not. A network's
    /// inspect lists only running endpoints, and dockerd 20.10 removes a network that a
    /// stopped container still names, leaving that container unable to start.
    async fn containers_using(
        &self,
        name: &str,
        networks: &[bollard::models::NetworkInspect],
    ) -> Result<Vec<String>, RuntimeError> {
        let mut users = std::collections::BTreeSet::new();
        for network in networks {
            users.extend(
                network
                    .containers
                    .iter()
                    .flatten()
                    .map(|(id, endpoint)| endpoint.name.clone().unwrap_or_else(|| id.clone())),
            );
            let Some(id) = network.id.as_deref() else {
                continue;
            };
            let options = ListContainersOptions {
                all: true,
                // A never-started container knows its network by name only (no id yet).
                filters: Some(HashMap::from([(
                    "network".to_owned(),
                    vec![id.to_owned(), name.to_owned()],
                )])),
                ..ListContainersOptions::default()
            };
            let attached = self
                .client
                .list_containers(Some(options))
                .await
                .map_err(|e| self.backend("list containers of network", name, e))?;
            users.extend(attached.into_iter().map(|c| {
                let summary = mapping::container_summary(c);
                summary.names.into_iter().next().unwrap_or(summary.id)
            }));
        }
        Ok(users.into_iter().collect())
    }

    async fn create_network(&self, network: &HostnicNetworkSpec) -> Result<String, RuntimeError> {
        let request = mapping::network_create_request(network);
        match self.client.create_network(request).await {
            Ok(created) => Ok(created.id),
            Err(DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.contains("plugin") => Err(RuntimeError::NetworkDriverUnavailable {
                network: network.name.clone(),
                driver: network.driver.clone(),
                message,
            }),
            Err(e) => Err(self.backend("create network", &network.name, e)),
        }
    }

    /// The same client with a request timeout long enough for a stop of `timeout`.
    fn client_for_stop(&self, timeout: Duration) -> Docker {
        self.client
            .clone()
            .with_timeout(timeout + STOP_REQUEST_MARGIN)
    }

    fn backend(&self, operation: &'static str, target: &str, error: DockerError) -> RuntimeError {
        match error {
            DockerError::SocketNotFoundError(_)
            | DockerError::HyperLegacyError { .. }
            | DockerError::IOError { .. } => RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                source: Box::new(error),
            },
            other => RuntimeError::Backend {
                operation,
                target: target.to_owned(),
                source: Box::new(other),
            },
        }
    }

    fn container_error(&self, operation: &'static str, name: &str, e: DockerError) -> RuntimeError {
        if status_of(&e) == Some(404) {
            RuntimeError::ContainerNotFound(name.to_owned())
        } else {
            self.backend(operation, name, e)
        }
    }
}

/// The HTTP status of a daemon answer, when the error is one.
fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's whole-seconds stop timeout, rounded up so a caller's wait is never shortened.
fn stop_seconds(timeout: Duration) -> i32 {
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// A failed pull as "not found" (the registry has no such repository or tag) or otherwise.
fn pull_error(image: &ImageReference, error: DockerError) -> RuntimeError {
    let (status, message) = match error {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(status_code), message),
        DockerError::DockerStreamError { error } => (None, error),
        other => (None, other.to_string()),
    };
    let lower = message.to_ascii_lowercase();
    let not_found = status == Some(404)
        || lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("repository does not exist");
    if not_found {
        RuntimeError::ImageNotFound {
            image: image.to_string(),
            registry: image.registry().to_owned(),
            message,
        }
    } else {
        RuntimeError::PullFailed {
            image: image.to_string(),
            registry: image.registry().to_owned(),
            message,
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ensure_image(
        &self,
        image: &ImageReference,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageStatus, RuntimeError> {
        let reference = image.to_string();
        if policy == PullPolicy::IfMissing
            && let Some(id) = self.local_image_id(&reference).await?
        {
            debug!(image = %reference, id, "image present, not pulling");
            return Ok(ImageStatus::Present { id });
        }
        let credentials = credentials
            .filter(|c| c.applies_to(image))
            .map(|c| DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.expose().to_owned()),
                serveraddress: Some(c.server.clone()),
                ..DockerCredentials::default()
            });
        info!(image = %reference, registry = image.registry(), "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.name().to_owned()),
            tag: Some(image.tag_or_digest().to_owned()),
            ..CreateImageOptions::default()
        };
        let mut events = self.client.create_image(Some(options), None, credentials);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => progress(mapping::pull_progress(&event)),
                Err(e) => return Err(pull_error(image, e)),
            }
        }
        let id =
            self.local_image_id(&reference)
                .await?
                .ok_or_else(|| RuntimeError::PullFailed {
                    image: reference.clone(),
                    registry: image.registry().to_owned(),
                    message: "the daemon reported success but has no such image".to_owned(),
                })?;
        info!(image = %reference, id, "image pulled");
        Ok(ImageStatus::Pulled { id })
    }

    async fn ensure_hostnic_network(
        &self,
        network: &HostnicNetworkSpec,
    ) -> Result<NetworkStatus, RuntimeError> {
        let existing = self.networks_named(&network.name).await?;
        if existing.is_empty() {
            let id = self.create_network(network).await?;
            info!(network = %network.name, id, driver = %network.driver, "network created");
            return Ok(NetworkStatus::Created { id });
        }
        let differences = match existing.as_slice() {
            [one] => mapping::network_differences(network, one),
            many => vec![format!("{} networks share the name", many.len())],
        };
        if differences.is_empty() {
            let id = existing
                .into_iter()
                .next()
                .and_then(|n| n.id)
                .unwrap_or_default();
            debug!(network = %network.name, id, "network matches, reusing it");
            return Ok(NetworkStatus::Reused { id });
        }
        let containers = self.containers_using(&network.name, &existing).await?;
        if !containers.is_empty() {
            return Err(RuntimeError::NetworkMismatchInUse {
                network: network.name.clone(),
                differences,
                containers,
            });
        }
        warn!(network = %network.name, ?differences, "stale network, recreating it");
        for stale in &existing {
            let id = stale.id.as_deref().unwrap_or(&network.name);
            match self.client.remove_network(id).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.backend("remove network", &network.name, e)),
            }
        }
        let id = self.create_network(network).await?;
        Ok(NetworkStatus::Recreated { id, differences })
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.client.remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.backend("remove network", name, e)),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let body = mapping::container_create_body(spec)?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..CreateContainerOptions::default()
        };
        match self.client.create_container(Some(options), body).await {
            Ok(created) => {
                for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
                    warn!(container = %spec.name, warning, "dockerd warning on create");
                }
                info!(container = %spec.name, id = created.id, image = %spec.image, "container created");
                Ok(created.id)
            }
            Err(e) if status_of(&e) == Some(409) => {
                Err(RuntimeError::ContainerExists(spec.name.clone()))
            }
            Err(e) => Err(self.backend("create container", &spec.name, e)),
        }
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        let first = match self.client.start_container(name, None).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // A published port held by a docker-proxy that a crashed dockerd left behind: stop
        // the orphan and start once more (see `stale_proxy`).
        let orphans = stale_proxy::port_already_allocated(&first.to_string())
            .map(|port| {
                (
                    port,
                    stale_proxy::orphaned_proxies(Path::new("/proc"), port),
                )
            })
            .filter(|(_, pids)| !pids.is_empty());
        let Some((port, pids)) = orphans else {
            return Err(self.container_error("start container", name, first));
        };
        let stopped = stale_proxy::stop(&pids).await;
        warn!(container = %name, port, ?stopped, "a docker-proxy left by a dockerd that died held the database's published port: stopped it, starting again");
        self.client
            .start_container(name, None)
            .await
            .map_err(|e| self.container_error("start container", name, e))
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(stop_seconds(timeout)),
            signal: None,
        };
        self.client_for_stop(timeout)
            .stop_container(name, Some(options))
            .await
            .map_err(|e| self.container_error("stop container", name, e))
    }

    async fn restart(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let options = RestartContainerOptions {
            t: Some(stop_seconds(timeout)),
            signal: None,
        };
        self.client_for_stop(timeout)
            .restart_container(name, Some(options))
            .await
            .map_err(|e| self.container_error("restart container", name, e))
    }

    async fn remove(&self, name: &str, force: bool) -> Result<bool, RuntimeError> {
        let options = RemoveContainerOptions {
            force,
            ..RemoveContainerOptions::default()
        };
        match self.client.remove_container(name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.backend("remove container", name, e)),
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self
            .inspect_container(name)
            .await?
            .map(mapping::container_info))
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            ..ListContainersOptions::default()
        };
        let listed = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| self.backend("list containers", "all", e))?;
        Ok(listed.into_iter().map(mapping::container_summary).collect())
    }

    /// The sandbox key dockerd reports while the container runs, else its process's
    /// namespace ([`mapping::network_namespace`]).
    async fn network_namespace(
        &self,
        name: &str,
    ) -> Result<Option<NetworkNamespace>, RuntimeError> {
        Ok(self
            .inspect_container(name)
            .await?
            .as_ref()
            .and_then(mapping::network_namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_timeout_rounds_up_to_whole_seconds() {
        assert_eq!(stop_seconds(Duration::from_secs(2)), 2);
        assert_eq!(stop_seconds(Duration::from_millis(2100)), 3);
        assert_eq!(stop_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn pull_errors_name_image_and_registry() {
        let image: ImageReference = "10.251.0.1:5000/netiso/x:nope".parse().expect("valid");
        let err = pull_error(
            &image,
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "manifest for x not found: manifest unknown".into(),
            },
        );
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("10.251.0.1:5000/netiso/x:nope")
                && text.contains("registry 10.251.0.1:5000"),
            "{text}"
        );

        let err = pull_error(
            &image,
            DockerError::DockerResponseServerError {
                status_code: 500,
                message: "Get \"http://10.251.0.1:5000/v2/\": connection refused".into(),
            },
        );
        assert!(matches!(err, RuntimeError::PullFailed { .. }), "{err:?}");
    }
}
