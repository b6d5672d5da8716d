#![doc = include_str!("../README.md")]
//! Configuration for trove-netiso, read and written exactly as OpenStack Trove does.
//!
//! # Reading a guest's configuration
//!
//! ```no_run
//! use netiso_config::{ConfigSources, GuestConfig};
//!
//! let config = GuestConfig::load(&ConfigSources::guest_default())?;
//! tracing::info!(mode = %config.isolation_mode(), "network mode");
//! # Ok::<(), netiso_config::ConfigError>(())
//! ```
//!
//! # Sources and precedence
//!
//! Files are oslo.config INI files ([`ini`]), loaded like oslo: every `--config-file` in
//! order, then every `*.conf` of each `--config-dir` in sorted order; a later value
//! overrides an earlier one. `[DEFAULT]` is **not** inherited by other sections.
//!
//! Environment variables override every file: `NETISO_<SECTION>__<OPTION>`, for example
//! `NETISO_DEFAULT__GUEST_ID=…` or `NETISO_NETISO__RUNTIME=containerd`. `DEFAULT` is matched
//! in any case, other section names and option names are lowercased. Variables without
//! `__` after the prefix are ignored.
//!
//! As in oslo.config, values may refer to other options: `$state_path/x`, `${name}`,
//! `${group.name}` (same section first, then `[DEFAULT]`); `$$` and `\$` are a literal `$`.
//! A reference to an option that no source sets is an error (oslo would fall back to the
//! referenced option's registered default, which a reader without the registry cannot know).
//!
//! Values stay strings, with the file and line (or variable) they came from, until a typed
//! model converts them with oslo's rules ([`value`]): an error names file, line, section and
//! option. Both [`ini::IniFile`] and [`OsloConfig`] are `figment::Provider`s for tooling that
//! composes configuration with figment.
//!
//! # Models
//!
//! - [`GuestConfig`]: the agent's options (`guest_id` is required), the
//!   `[oslo_messaging_rabbit]` options that shape queue declarations and its TLS options
//!   ([`RabbitTlsOptions`]), the datastore section,
//!   and our own `[netiso]` section:
//!
//!   | option | default |
//!   |---|---|
//!   | `runtime` | `docker` (or `containerd`) |
//!   | `docker_socket` | `/var/run/docker.sock` |
//!   | `containerd_socket` | `/run/containerd/containerd.sock` |
//!   | `containerd_namespace` | `trove` |
//!   | `plugin_socket` | `/run/docker/plugins/docker-hostnic.sock` |
//!   | `hostnic_state_file` | `/etc/docker/hostnic.json` |
//!   | `state_dir` | `/var/lib/trove-netiso` |
//!   | `tenant_nic_file` | `/etc/trove/eth1.json` |
//!   | `database_container` | `database` (Trove's name; a valid Docker container name) |
//!   | `docker_exec_root` | `/var/run/docker` (dockerd's `--exec-root`, for `netns list`) |
//!   | `insecure_registries` | unset: Docker's (`insecure-registries` of `docker_daemon_config`); registries containerd pulls from over plain HTTP, `host[:port]` |
//!   | `docker_daemon_config` | `/etc/docker/daemon.json` (injected by Trove) |
//!   | `rpc_max_message_bytes` | unset: 4 MiB (the messaging default); largest RPC body read, at least 1024 |
//!
//!   `insecure_registries` set but empty means none, whatever `daemon.json` says;
//!   [`NetisoSettings::containerd_insecure_registries`] resolves the list, and a malformed
//!   `daemon.json` is an error naming the file.
//!
//!   `network_isolation` comes from `[DEFAULT]` (as written to `guest_info.conf`), else
//!   `[network]` (as in `trove-guestagent.conf`), else `true`. Trove's own agent treats a
//!   missing `[DEFAULT]` value as false; we follow the controller default instead, so that
//!   a guest with a tenant NIC file is isolated unless isolation is explicitly off.
//! - [`ControlPlaneConfig`]: the controller options that decide what is injected.
//! - [`TenantNic`]: `eth1.json`, validated.
//! - [`IsolationMode`]: isolated exactly when `network_isolation` is true and the tenant
//!   NIC file exists, else bridged with the datastore's ports published.
//!
//! # Rendering
//!
//! [`render`] produces `guest_info.conf`, `eth1.json` and `daemon.json` byte for byte as
//! Trove's taskmanager does (Python string formatting and `json.dumps`).
//!
//! Secrets (broker passwords, the RPC key, the registry password) are [`Secret`]s: they
//! never appear in `Debug`, `Display` or error messages.

pub mod atomic_file;
pub mod control_plane;
pub mod error;
pub mod guest;
pub mod ini;
pub mod isolation;
pub mod mac;
pub mod pyjson;
pub mod rabbit_tls;
pub mod render;
pub mod secret;
pub mod source;
pub mod tenant_nic;
pub mod transport_url;
pub mod value;

pub use control_plane::ControlPlaneConfig;
pub use error::ConfigError;
pub use guest::{
    ContainerRuntime, DatastoreSettings, GuestConfig, NetisoSettings, RabbitQueueOptions,
    VolumeSettings,
};
pub use isolation::{IsolationMode, PublishedPort};
pub use mac::{MacAddress, MacParseError};
pub use rabbit_tls::{RabbitTlsOptions, SslVersion};
pub use secret::Secret;
pub use source::{ConfigSources, Origin, OsloConfig};
pub use tenant_nic::{TenantNic, TenantNicError};
pub use transport_url::{TransportHost, TransportUrl, TransportUrlError};
