#![doc = include_str!("../README.md")]
//! Container runtimes for the Trove guest: one async trait, [`ContainerRuntime`], with a
//! Docker adapter, [`DockerRuntime`] (feature `docker`), and a containerd adapter,
//! `ContainerdRuntime` (feature `containerd`).
//!
//! The guest drives the database container only through the trait (the example above),
//! and finds the database's network namespace with [`ContainerRuntime::network_namespace`]
//! whichever runtime runs it.
//!
//! Isolated mode first calls [`ContainerRuntime::ensure_hostnic_network`] with
//! [`HostnicNetworkSpec::for_tenant_nic`], then runs the container with
//! [`NetworkAttachment::hostnic_for`]. Unlike Trove, an existing `database-network` is
//! checked (driver, `hostnic_mac`, subnets, gateways, IPv6) and recreated or refused when
//! stale.

#[cfg(feature = "containerd")]
pub mod containerd;
#[cfg(feature = "docker")]
pub mod docker;
pub mod error;
pub mod image;
pub mod on_demand;
pub mod runtime;
pub mod spec;
#[cfg(feature = "test-support")]
pub mod test_support;

#[cfg(feature = "containerd")]
pub use containerd::{ContainerdConfig, ContainerdRuntime};
#[cfg(feature = "docker")]
pub use docker::DockerRuntime;
pub use error::RuntimeError;
pub use image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
pub use on_demand::ConnectOnDemand;
pub use runtime::{
    ContainerInfo, ContainerRuntime, ContainerStatus, ContainerSummary, EndpointInfo, HealthStatus,
    NetworkNamespace, NetworkStatus,
};
pub use spec::{
    Bind, ContainerSpec, HealthCheck, HostnicNetworkSpec, IpamPool, NetworkAttachment,
    RestartPolicy,
};
