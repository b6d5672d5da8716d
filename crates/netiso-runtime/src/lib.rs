//! Container runtimes for the Trove guest: one async trait, [`ContainerRuntime`], and its
//! Docker adapter, [`DockerRuntime`].
//!
//! The guest drives the database container only through the trait:
//!
//! ```no_run
//! use std::time::Duration;
//! use netiso_runtime::{
//!     ContainerRuntime, ContainerSpec, DockerRuntime, ImageReference, NetworkAttachment,
//!     PullPolicy,
//! };
//!
//! # async fn demo() -> Result<(), netiso_runtime::RuntimeError> {
//! let docker = DockerRuntime::connect("unix:///var/run/docker.sock").await?;
//! let image: ImageReference = "10.0.0.5:5000/trove/mysql:8.0".parse()?;
//! docker.ensure_image(&image, PullPolicy::Always, None, &mut |event| {
//!     tracing::debug!(?event, "pull");
//! }).await?;
//! let spec = ContainerSpec::new(
//!     netiso_runtime::spec::DATABASE_CONTAINER_NAME,
//!     image,
//!     NetworkAttachment::Bridged { published_tcp_ports: vec![3306] },
//! );
//! docker.run(&spec).await?;
//! docker.wait_healthy("database", Duration::from_secs(180)).await?;
//! # Ok(()) }
//! ```
//!
//! Isolated mode first calls [`ContainerRuntime::ensure_hostnic_network`] with
//! [`HostnicNetworkSpec::for_tenant_nic`], then runs the container with
//! [`NetworkAttachment::hostnic_for`]. Unlike Trove, an existing `database-network` is
//! checked (driver, `hostnic_mac`, subnets, gateways, IPv6) and recreated or refused when
//! stale.

pub mod containerd;
pub mod docker;
pub mod error;
pub mod image;
pub mod runtime;
pub mod spec;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use containerd::{ContainerdConfig, ContainerdRuntime};
pub use docker::DockerRuntime;
pub use error::RuntimeError;
pub use image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
pub use runtime::{
    ContainerInfo, ContainerRuntime, ContainerStatus, ContainerSummary, EndpointInfo, HealthStatus,
    NetworkStatus,
};
pub use spec::{
    Bind, ContainerSpec, HealthCheck, HostnicNetworkSpec, IpamPool, NetworkAttachment,
    RestartPolicy,
};
