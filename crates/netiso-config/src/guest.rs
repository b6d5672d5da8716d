//! What the guest agent needs from `/etc/trove/conf.d`, typed and validated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, OptionLocation};
use crate::isolation::IsolationMode;
use crate::rabbit_tls::RabbitTlsOptions;
use crate::render::DAEMON_JSON_PATH;
use crate::secret::Secret;
use crate::source::{ConfigSources, Origin, OsloConfig};
use crate::tenant_nic::{DEFAULT_TENANT_NIC_FILE, TenantNic, TenantNicError};
use crate::transport_url::TransportUrl;
use crate::value::{self, ValueError};

/// Section of our own settings.
pub const NETISO_SECTION: &str = "netiso";
/// Trove's name for the database container (`[netiso] database_container` default).
pub const DEFAULT_DATABASE_CONTAINER: &str = "database";
/// dockerd's default `--exec-root` (`[netiso] docker_exec_root` default).
pub const DEFAULT_DOCKER_EXEC_ROOT: &str = "/var/run/docker";
/// oslo.messaging's RabbitMQ section.
pub const RABBIT_SECTION: &str = "oslo_messaging_rabbit";

/// Which container runtime runs the database (`[netiso] runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRuntime {
    /// dockerd, with the `docker-hostnic` plugin for isolation (Trove's way).
    Docker,
    /// containerd, with a network namespace we prepare.
    Containerd,
}

impl ContainerRuntime {
    fn parse(text: &str) -> Result<Self, ValueError> {
        match text.to_ascii_lowercase().as_str() {
            "docker" => Ok(Self::Docker),
            "containerd" => Ok(Self::Containerd),
            _ => Err(ValueError::Choice {
                value: text.to_owned(),
                choices: "docker, containerd",
            }),
        }
    }
}

/// Our own settings, in the `[netiso]` section (Trove ignores unknown sections).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetisoSettings {
    /// `runtime`: `docker` (default) or `containerd`.
    pub runtime: ContainerRuntime,
    /// `docker_socket`: dockerd's API socket.
    pub docker_socket: PathBuf,
    /// `containerd_socket`: containerd's gRPC socket.
    pub containerd_socket: PathBuf,
    /// `containerd_namespace`: containerd namespace for the database container.
    pub containerd_namespace: String,
    /// `plugin_socket`: where dockerd finds the `docker-hostnic` driver.
    pub plugin_socket: PathBuf,
    /// `hostnic_state_file`: the plugin's network table (Trove's path by default).
    pub hostnic_state_file: PathBuf,
    /// `state_dir`: our crash-safe state (journal of NIC moves).
    pub state_dir: PathBuf,
    /// `tenant_nic_file`: the injected `eth1.json`.
    pub tenant_nic_file: PathBuf,
    /// `database_container`: the database container's name (Trove's `database`); tests
    /// sharing one dockerd set unique names.
    pub database_container: String,
    /// `docker_exec_root`: dockerd's `--exec-root`, whose `netns/` holds the sandboxes
    /// that `netns list` shows.
    pub docker_exec_root: PathBuf,
    /// `insecure_registries`: registries the containerd runtime pulls from over plain
    /// HTTP. `None` (unset): Docker's own list, from `docker_daemon_config`
    /// ([`NetisoSettings::containerd_insecure_registries`]); set but empty: none.
    pub insecure_registries: Option<Vec<String>>,
    /// `docker_daemon_config`: Docker's `daemon.json`, which Trove injects with its
    /// `insecure-registries`.
    pub docker_daemon_config: PathBuf,
    /// `rpc_max_message_bytes`: largest RPC body the agent reads (at least 1024); unset:
    /// the messaging default (4 MiB).
    pub rpc_max_message_bytes: Option<u64>,
    /// `mysql_config_dir`: the VM directory bound on the MySQL container's `/etc/mysql`
    /// (Trove's fixed `/etc/mysql`; tests sharing one VM set their own).
    pub mysql_config_dir: PathBuf,
    /// `mysql_socket_dir`: the VM directory bound on the MySQL container's
    /// `/var/run/mysqld`, where the agent finds the server's socket (Trove's
    /// `/var/lib/mysqld`).
    pub mysql_socket_dir: PathBuf,
    /// `fstab_file`: where `prepare` records the data volume's mount (Trove writes
    /// `/etc/fstab`), so that a reboot mounts it before the database restarts.
    pub fstab_file: PathBuf,
}

/// Docker's container-name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), which containerd ids
/// also satisfy.
fn parse_container_name(text: &str) -> Result<String, ValueError> {
    let mut chars = text.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ValueError::ContainerName(text.to_owned()))
    }
}

/// A list of registries as Docker's `insecure-registries` names them: `host[:port]`, no
/// scheme or path; empty items are dropped (`a, , b`).
fn parse_registries(text: &str) -> Result<Vec<String>, ValueError> {
    value::parse_list(text)
        .into_iter()
        .filter(|item| !item.is_empty())
        .map(|item| {
            if item.contains("://") || item.contains('/') || item.contains(char::is_whitespace) {
                Err(ValueError::Registry(item))
            } else {
                Ok(item)
            }
        })
        .collect()
}

/// `insecure-registries` of a Docker `daemon.json` file: an absent file is no registry, an
/// unreadable or malformed one an error naming the file (Docker refuses it too).
fn daemon_insecure_registries(path: &Path) -> Result<Vec<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_daemon_insecure_registries(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ConfigError::Io {
            path: path.to_owned(),
            source: std::sync::Arc::new(e),
        }),
    }
}

/// `insecure-registries` of Docker's `daemon.json` text (`path` names it in errors): no
/// such member is no registry; a document that is not a JSON object, or a member that is
/// not a list of strings, is an error.
pub fn parse_daemon_insecure_registries(
    path: &Path,
    text: &str,
) -> Result<Vec<String>, ConfigError> {
    let invalid = |reason: String| ConfigError::DockerDaemonConfig {
        path: path.to_owned(),
        reason,
    };
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let members = document
        .as_object()
        .ok_or_else(|| invalid("not a JSON object".to_owned()))?;
    let Some(registries) = members.get("insecure-registries") else {
        return Ok(Vec::new());
    };
    registries
        .as_array()
        .ok_or_else(|| invalid("`insecure-registries` is not a list".to_owned()))?
        .iter()
        .map(|item| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                invalid(format!(
                    "`insecure-registries` has a non-string item: {item}"
                ))
            })
        })
        .collect()
}

impl NetisoSettings {
    fn from_oslo(config: &OsloConfig) -> Result<Self, ConfigError> {
        let path = |option: &str, default: &str| -> Result<PathBuf, ConfigError> {
            Ok(PathBuf::from(
                config
                    .string(NETISO_SECTION, option)?
                    .unwrap_or_else(|| default.to_owned()),
            ))
        };
        let runtime = match config.get(NETISO_SECTION, "runtime")? {
            Some(raw) => raw.convert(ContainerRuntime::parse)?,
            None => ContainerRuntime::Docker,
        };
        Ok(Self {
            runtime,
            docker_socket: path("docker_socket", "/var/run/docker.sock")?,
            containerd_socket: path("containerd_socket", "/run/containerd/containerd.sock")?,
            containerd_namespace: config
                .string(NETISO_SECTION, "containerd_namespace")?
                .unwrap_or_else(|| "trove".to_owned()),
            plugin_socket: path("plugin_socket", "/run/docker/plugins/docker-hostnic.sock")?,
            hostnic_state_file: path("hostnic_state_file", "/etc/docker/hostnic.json")?,
            state_dir: path("state_dir", "/var/lib/trove-netiso")?,
            tenant_nic_file: path("tenant_nic_file", DEFAULT_TENANT_NIC_FILE)?,
            database_container: match config.get(NETISO_SECTION, "database_container")? {
                Some(raw) => raw.convert(parse_container_name)?,
                None => DEFAULT_DATABASE_CONTAINER.to_owned(),
            },
            docker_exec_root: path("docker_exec_root", DEFAULT_DOCKER_EXEC_ROOT)?,
            insecure_registries: config
                .get(NETISO_SECTION, "insecure_registries")?
                .map(|raw| raw.convert(parse_registries))
                .transpose()?,
            docker_daemon_config: path("docker_daemon_config", DAEMON_JSON_PATH)?,
            rpc_max_message_bytes: config
                .int(NETISO_SECTION, "rpc_max_message_bytes", 1024, i64::MAX)?
                .map(i64::unsigned_abs),
            mysql_config_dir: path("mysql_config_dir", "/etc/mysql")?,
            mysql_socket_dir: path("mysql_socket_dir", "/var/lib/mysqld")?,
            fstab_file: path("fstab_file", "/etc/fstab")?,
        })
    }

    /// The registries containerd pulls from over plain HTTP: `insecure_registries` when
    /// set, else Docker's `insecure-registries` from `docker_daemon_config`, so that a
    /// guest Trove configured for Docker pulls the same way with containerd. Reads the
    /// file on each call (only the containerd runtime needs it).
    pub fn containerd_insecure_registries(&self) -> Result<Vec<String>, ConfigError> {
        match &self.insecure_registries {
            Some(registries) => Ok(registries.clone()),
            None => daemon_insecure_registries(&self.docker_daemon_config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_docker_s_rule() {
        for name in ["database", "db1", "nti-agent-1a2b", "a.b_c-d", "9"] {
            assert_eq!(parse_container_name(name), Ok(name.to_owned()));
        }
        for name in ["", "-db", "_db", "data base", "db/1", "dé"] {
            assert_eq!(
                parse_container_name(name),
                Err(ValueError::ContainerName(name.to_owned())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn registries_are_host_and_port_only() {
        assert_eq!(
            parse_registries("10.251.0.1:5000, , reg.example,"),
            Ok(vec!["10.251.0.1:5000".to_owned(), "reg.example".to_owned()])
        );
        assert_eq!(parse_registries(""), Ok(Vec::new()));
        assert_eq!(
            parse_registries("http://reg:5000"),
            Err(ValueError::Registry("http://reg:5000".to_owned()))
        );
        assert_eq!(
            parse_registries("reg:5000/v2"),
            Err(ValueError::Registry("reg:5000/v2".to_owned()))
        );
    }

    #[test]
    fn docker_s_daemon_json_gives_the_insecure_registries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.json");
        assert_eq!(
            daemon_insecure_registries(&path).ok(),
            Some(Vec::new()),
            "absent file"
        );
        std::fs::write(&path, r#"{"bridge": "none"}"#).expect("write");
        assert_eq!(
            daemon_insecure_registries(&path).ok(),
            Some(Vec::new()),
            "no list"
        );
        std::fs::write(
            &path,
            r#"{"bridge": "none", "insecure-registries": ["10.251.0.1:5000", "reg:80"]}"#,
        )
        .expect("write");
        assert_eq!(
            daemon_insecure_registries(&path).ok(),
            Some(vec!["10.251.0.1:5000".to_owned(), "reg:80".to_owned()])
        );
        for (text, expected) in [
            (
                "{not json",
                "not JSON: key must be a string at line 1 column 2",
            ),
            (r#"{"insecure-registries": "reg:80"}"#, "is not a list"),
            (
                r#"{"insecure-registries": [5000]}"#,
                "non-string item: 5000",
            ),
        ] {
            std::fs::write(&path, text).expect("write");
            let error = daemon_insecure_registries(&path)
                .expect_err(text)
                .to_string();
            assert!(
                error.starts_with(&path.display().to_string()) && error.contains(expected),
                "{text}: {error}"
            );
        }
    }
}

/// The `[oslo_messaging_rabbit]` options that change queue and exchange declarations
/// (docs/compatibility.md, "RPC"). A declaration that differs from the controller's is refused
/// by RabbitMQ, so these must be read exactly. `transport_url` query parameters override
/// them, as oslo.messaging's `ConfigOptsProxy` does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RabbitQueueOptions {
    /// Durable topic exchange and topic queues.
    pub amqp_durable_queues: bool,
    /// Auto-delete topic exchange and topic queues.
    pub amqp_auto_delete: bool,
    /// Topic queues are quorum queues (and durable).
    pub rabbit_quorum_queue: bool,
    /// Reply and fanout queues are quorum queues.
    pub rabbit_transient_quorum_queue: bool,
    /// `x-delivery-limit` of quorum queues when > 0.
    pub rabbit_quorum_delivery_limit: u64,
    /// `x-max-in-memory-length` of quorum queues when > 0.
    pub rabbit_quorum_max_memory_length: u64,
    /// `x-max-in-memory-bytes` of quorum queues when > 0.
    pub rabbit_quorum_max_memory_bytes: u64,
    /// `x-ha-policy: all` on every queue.
    pub rabbit_ha_queues: bool,
    /// `x-expires` (seconds) of reply and fanout queues.
    pub rabbit_transient_queues_ttl: u64,
    /// One stream queue per fanout.
    pub rabbit_stream_fanout: bool,
    /// `basic.qos` prefetch when > 0.
    pub rabbit_qos_prefetch_count: u64,
    /// Reply/fanout queue suffixes `<host>:<proc>:<n>` instead of a uuid4.
    pub use_queue_manager: bool,
    /// Consumer argument `x-cancel-on-ha-failover`.
    pub enable_cancel_on_failover: bool,
    /// Replies are published with `mandatory`.
    pub direct_mandatory_flag: bool,
    /// Body compression (`None`: off).
    pub kombu_compression: Option<String>,
    /// Seconds to retry a reply whose queue is missing.
    pub kombu_missing_consumer_retry_timeout: u64,
    /// `heartbeat_timeout_threshold`: seconds without a frame before the broker connection is
    /// taken for dead (the AMQP heartbeat negotiated; 0 turns it off).
    pub heartbeat_timeout_threshold: u64,
}

impl RabbitQueueOptions {
    /// Reads the options, the URL's query first (oslo's precedence).
    pub fn from_oslo(config: &OsloConfig, url: &TransportUrl) -> Result<Self, ConfigError> {
        let query_error = |option: &str, reason: ValueError| ConfigError::InvalidValue {
            location: OptionLocation::boxed(Origin::TransportUrlQuery, RABBIT_SECTION, option),
            reason,
        };
        let flag = |option: &str, default: bool| -> Result<bool, ConfigError> {
            match url.query_value(option) {
                Some(text) => value::parse_bool(text).map_err(|reason| query_error(option, reason)),
                None => Ok(config.bool(RABBIT_SECTION, option)?.unwrap_or(default)),
            }
        };
        let count = |option: &str, default: u64| -> Result<u64, ConfigError> {
            let parsed = match url.query_value(option) {
                Some(text) => value::parse_int_in(text, 0, i64::MAX)
                    .map_err(|reason| query_error(option, reason))?,
                None => config.int(RABBIT_SECTION, option, 0, i64::MAX)?,
            };
            Ok(parsed.map_or(default, |n| n.unsigned_abs()))
        };
        let options = Self {
            amqp_durable_queues: flag("amqp_durable_queues", false)?,
            amqp_auto_delete: flag("amqp_auto_delete", false)?,
            rabbit_quorum_queue: flag("rabbit_quorum_queue", false)?,
            rabbit_transient_quorum_queue: flag("rabbit_transient_quorum_queue", false)?,
            rabbit_quorum_delivery_limit: count("rabbit_quorum_delivery_limit", 0)?,
            rabbit_quorum_max_memory_length: count("rabbit_quorum_max_memory_length", 0)?,
            rabbit_quorum_max_memory_bytes: count("rabbit_quorum_max_memory_bytes", 0)?,
            rabbit_ha_queues: flag("rabbit_ha_queues", false)?,
            rabbit_transient_queues_ttl: count("rabbit_transient_queues_ttl", 1800)?,
            rabbit_stream_fanout: flag("rabbit_stream_fanout", false)?,
            rabbit_qos_prefetch_count: count("rabbit_qos_prefetch_count", 0)?,
            use_queue_manager: flag("use_queue_manager", false)?,
            enable_cancel_on_failover: flag("enable_cancel_on_failover", false)?,
            direct_mandatory_flag: flag("direct_mandatory_flag", true)?,
            kombu_compression: match url.query_value("kombu_compression") {
                Some(name) => Some(name.to_owned()),
                None => config.string(RABBIT_SECTION, "kombu_compression")?,
            }
            .filter(|name| !name.is_empty()),
            kombu_missing_consumer_retry_timeout: count(
                "kombu_missing_consumer_retry_timeout",
                60,
            )?,
            heartbeat_timeout_threshold: count("heartbeat_timeout_threshold", 60)?,
        };
        if options.rabbit_ha_queues && options.rabbit_quorum_queue {
            return Err(ConfigError::Conflict(
                "[oslo_messaging_rabbit] rabbit_quorum_queue and rabbit_ha_queues are both enabled; \
                 a queue is either quorum or HA (mirrored), not both"
                    .to_owned(),
            ));
        }
        if options.rabbit_stream_fanout && options.rabbit_qos_prefetch_count == 0 {
            return Err(ConfigError::Conflict(
                "[oslo_messaging_rabbit] rabbit_stream_fanout needs rabbit_qos_prefetch_count > 0"
                    .to_owned(),
            ));
        }
        Ok(options)
    }

    /// Whether topic queues and the topic exchange are durable.
    pub fn durable_topic_queues(&self) -> bool {
        self.amqp_durable_queues || self.rabbit_quorum_queue
    }
}

/// The running datastore's section (`[mysql]`, `[mariadb]`, `[postgresql]`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatastoreSettings {
    /// `datastore_manager`, which is also the section name.
    pub manager: String,
    /// `docker_image`, without tag (the tag is the datastore version).
    pub docker_image: String,
    /// `tcp_ports`, every range expanded: published in bridge mode.
    pub tcp_ports: Vec<u16>,
    /// `mount_point` of the data volume.
    pub mount_point: PathBuf,
    /// `device_path` of the data volume.
    pub device_path: PathBuf,
    /// `database_service_uid` (the section's, else `[DEFAULT]`'s, else 1001): the uid the
    /// database container runs as and owns its directories with.
    pub database_service_uid: u32,
    /// `database_service_gid` (the section's, else the uid, as Trove does).
    pub database_service_gid: u32,
}

/// Trove's built-in defaults per datastore: image, tcp_ports, mount point.
fn builtin_datastore(manager: &str) -> Option<(&'static str, &'static [u16], &'static str)> {
    match manager {
        "mysql" => Some(("mysql", &[3306], "/var/lib/mysql")),
        "mariadb" => Some(("mariadb", &[3306, 4444, 4567, 4568], "/var/lib/mysql")),
        "postgresql" => Some(("postgres", &[5432], "/var/lib/postgresql")),
        _ => None,
    }
}

impl DatastoreSettings {
    /// Reads `[<manager>]`; unknown datastores must set `docker_image` and `mount_point`,
    /// and take `tcp_ports` from `[DEFAULT]` when their section has none.
    pub fn from_oslo(config: &OsloConfig, manager: &str) -> Result<Self, ConfigError> {
        let builtin = builtin_datastore(manager);
        let id = |section: &str, option: &str| -> Result<Option<u32>, ConfigError> {
            Ok(config
                .int(section, option, 0, i64::from(u32::MAX))?
                .and_then(|n| u32::try_from(n).ok()))
        };
        let database_service_uid = match id(manager, "database_service_uid")? {
            Some(uid) => uid,
            None => id("DEFAULT", "database_service_uid")?.unwrap_or(1001),
        };
        let required = |option: &str, default: Option<&str>| match (
            config.string(manager, option)?,
            default,
        ) {
            (Some(text), _) => Ok(text),
            (None, Some(default)) => Ok(default.to_owned()),
            (None, None) => Err(ConfigError::MissingOption {
                section: manager.to_owned(),
                option: option.to_owned(),
                hint: "no built-in default for this datastore",
            }),
        };
        let port_source = match config.get(manager, "tcp_ports")? {
            Some(raw) => Some(raw),
            None if builtin.is_none() => config.get("DEFAULT", "tcp_ports")?,
            None => None,
        };
        let tcp_ports = match (port_source, builtin) {
            (Some(raw), _) => {
                raw.convert(|text| value::expand_port_ranges(&value::parse_list(text)))?
            }
            (None, Some((_, ports, _))) => ports.to_vec(),
            (None, None) => Vec::new(),
        };
        Ok(Self {
            manager: manager.to_owned(),
            docker_image: required("docker_image", builtin.map(|b| b.0))?,
            tcp_ports,
            mount_point: PathBuf::from(required("mount_point", builtin.map(|b| b.2))?),
            device_path: PathBuf::from(required("device_path", Some("/dev/vdb"))?),
            database_service_uid,
            database_service_gid: id(manager, "database_service_gid")?
                .unwrap_or(database_service_uid),
        })
    }
}

/// How the data volume is formatted and mounted (Trove's `[DEFAULT]` `volume_fstype`,
/// `format_options`, `volume_format_timeout` and `mount_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSettings {
    /// `volume_fstype`: `ext3`, `ext4` (default) or `xfs`.
    pub fstype: String,
    /// `format_options` (default `-m 5`), split on whitespace and passed to `mkfs`.
    pub format_options: Vec<String>,
    /// `volume_format_timeout` (default 120 s).
    pub format_timeout: Duration,
    /// `mount_options` (default `defaults,noatime`).
    pub mount_options: String,
}

impl Default for VolumeSettings {
    /// Trove's defaults: ext4, `-m 5`, 120 s, `defaults,noatime`.
    fn default() -> Self {
        Self {
            fstype: "ext4".to_owned(),
            format_options: vec!["-m".to_owned(), "5".to_owned()],
            format_timeout: Duration::from_secs(120),
            mount_options: "defaults,noatime".to_owned(),
        }
    }
}

impl VolumeSettings {
    fn from_oslo(config: &OsloConfig) -> Result<Self, ConfigError> {
        let fstype = match config.get("DEFAULT", "volume_fstype")? {
            Some(raw) => raw.convert(|text| match text {
                "ext3" | "ext4" | "xfs" => Ok(text.to_owned()),
                _ => Err(ValueError::Choice {
                    value: text.to_owned(),
                    choices: "ext3, ext4, xfs",
                }),
            })?,
            None => "ext4".to_owned(),
        };
        let timeout = config.int("DEFAULT", "volume_format_timeout", 1, i64::from(u32::MAX))?;
        Ok(Self {
            fstype,
            format_options: config
                .string("DEFAULT", "format_options")?
                .unwrap_or_else(|| "-m 5".to_owned())
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            format_timeout: Duration::from_secs(timeout.map_or(120, i64::unsigned_abs)),
            mount_options: config
                .string("DEFAULT", "mount_options")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "defaults,noatime".to_owned()),
        })
    }
}

/// Which setting decided `network_isolation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsolationSetting {
    /// `[DEFAULT] network_isolation`, as the taskmanager writes it to `guest_info.conf`.
    GuestInfo(Origin),
    /// `[network] network_isolation`, as in `trove-guestagent.conf`.
    NetworkSection(Origin),
    /// Neither is set: Trove's controller default, `True`.
    Default,
}

impl fmt::Display for IsolationSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsolationSetting::GuestInfo(origin) => {
                write!(f, "[DEFAULT] network_isolation at {origin}")
            }
            IsolationSetting::NetworkSection(origin) => {
                write!(f, "[network] network_isolation at {origin}")
            }
            IsolationSetting::Default => f.write_str("default (network_isolation not set)"),
        }
    }
}

/// The guest agent's configuration. `Debug` redacts the RPC key and broker passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuestConfig {
    /// `[DEFAULT] guest_id` (required): the instance UUID, part of every queue name.
    pub guest_id: String,
    /// `datastore_manager` (`mysql`, `mariadb`, `postgresql`, …).
    pub datastore_manager: Option<String>,
    /// `datastore_version`: the image tag.
    pub datastore_version: Option<String>,
    /// `tenant_id`: the owning project.
    pub tenant_id: Option<String>,
    /// Whether the tenant NIC must be taken from the VM.
    pub network_isolation: bool,
    /// Where `network_isolation` came from (for logs).
    pub network_isolation_setting: IsolationSetting,
    /// `transport_url`, parsed (default `rabbit://`).
    pub transport_url: TransportUrl,
    /// `control_exchange` (oslo default `openstack`; deployments set `trove`).
    pub control_exchange: String,
    /// `conductor_queue` (`trove-conductor`).
    pub conductor_queue: String,
    /// `instance_rpc_encr_key`: no key means secure RPC is off for this instance.
    pub instance_rpc_encr_key: Option<Secret>,
    /// `report_interval`: heartbeat period.
    pub report_interval: Duration,
    /// `state_change_wait_time`: wait for a healthy container, and docker stop timeout.
    pub state_change_wait_time: Duration,
    /// Options that change queue declarations.
    pub rabbit: RabbitQueueOptions,
    /// `ssl` and the `ssl_*` options of the broker connection.
    pub rabbit_tls: RabbitTlsOptions,
    /// The running datastore's settings, when `datastore_manager` is set.
    pub datastore: Option<DatastoreSettings>,
    /// How the data volume is formatted and mounted.
    pub volume: VolumeSettings,
    /// `[guest_agent] container_registry`: where images are pulled from.
    pub container_registry: Option<String>,
    /// `[guest_agent] container_registry_username`.
    pub container_registry_username: Option<String>,
    /// `[guest_agent] container_registry_password`.
    pub container_registry_password: Option<Secret>,
    /// Our own `[netiso]` settings.
    pub netiso: NetisoSettings,
}

impl GuestConfig {
    /// Loads files (oslo order) and `NETISO_` environment overrides, then validates.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        Self::from_oslo(&OsloConfig::load(sources)?)
    }

    /// Builds the typed configuration from already-loaded sources.
    pub fn from_oslo(config: &OsloConfig) -> Result<Self, ConfigError> {
        let guest_id = config.required_string(
            "DEFAULT",
            "guest_id",
            "the Trove taskmanager writes it to /etc/trove/conf.d/guest_info.conf",
        )?;
        let (network_isolation, network_isolation_setting) = match (
            config.get("DEFAULT", "network_isolation")?,
            config.get("network", "network_isolation")?,
        ) {
            (Some(raw), _) => (
                raw.convert(value::parse_bool)?,
                IsolationSetting::GuestInfo(raw.origin.clone()),
            ),
            (None, Some(raw)) => (
                raw.convert(value::parse_bool)?,
                IsolationSetting::NetworkSection(raw.origin.clone()),
            ),
            (None, None) => (true, IsolationSetting::Default),
        };
        let transport_url = match config.transport_url("DEFAULT", "transport_url")? {
            Some(url) => url,
            None => TransportUrl {
                scheme: "rabbit".to_owned(),
                hosts: Vec::new(),
                virtual_host: None,
                query: Vec::new(),
            },
        };
        let seconds = |option: &str, default: u64| -> Result<Duration, ConfigError> {
            let value = config.int("DEFAULT", option, 1, i64::from(u32::MAX))?;
            Ok(Duration::from_secs(
                value.map_or(default, |n| n.unsigned_abs()),
            ))
        };
        let non_empty = |section: &str, option: &str| -> Result<Option<String>, ConfigError> {
            Ok(config.string(section, option)?.filter(|s| !s.is_empty()))
        };
        let datastore_manager = non_empty("DEFAULT", "datastore_manager")?;
        let datastore = datastore_manager
            .as_deref()
            .map(|manager| DatastoreSettings::from_oslo(config, manager))
            .transpose()?;
        Ok(Self {
            guest_id,
            datastore_version: non_empty("DEFAULT", "datastore_version")?,
            tenant_id: non_empty("DEFAULT", "tenant_id")?,
            network_isolation,
            network_isolation_setting,
            rabbit: RabbitQueueOptions::from_oslo(config, &transport_url)?,
            rabbit_tls: RabbitTlsOptions::from_oslo(config, &transport_url)?,
            transport_url,
            control_exchange: non_empty("DEFAULT", "control_exchange")?
                .unwrap_or_else(|| "openstack".to_owned()),
            conductor_queue: non_empty("DEFAULT", "conductor_queue")?
                .unwrap_or_else(|| "trove-conductor".to_owned()),
            instance_rpc_encr_key: non_empty("DEFAULT", "instance_rpc_encr_key")?.map(Secret::new),
            report_interval: seconds("report_interval", 30)?,
            state_change_wait_time: seconds("state_change_wait_time", 180)?,
            datastore_manager,
            datastore,
            volume: VolumeSettings::from_oslo(config)?,
            container_registry: non_empty("guest_agent", "container_registry")?,
            container_registry_username: non_empty("guest_agent", "container_registry_username")?,
            container_registry_password: non_empty("guest_agent", "container_registry_password")?
                .map(Secret::new),
            netiso: NetisoSettings::from_oslo(config)?,
        })
    }

    /// Decides the container's network mode now (the tenant NIC file may appear later).
    ///
    /// Fail closed: only a file that is certainly absent means "no tenant NIC" (Trove's
    /// single-NIC case, bridged). Anything at the path, even a dangling symlink, a directory
    /// or a file that cannot be read, or a path that cannot be examined, counts as present:
    /// the mode is isolated, and [`GuestConfig::tenant_nic`] then reports why the file is
    /// unusable, so that the database is refused instead of being published on the VM.
    pub fn isolation_mode(&self) -> IsolationMode {
        let ports = self
            .datastore
            .as_ref()
            .map(|d| d.tcp_ports.as_slice())
            .unwrap_or_default();
        IsolationMode::decide(
            self.network_isolation,
            &self.netiso.tenant_nic_file,
            tenant_nic_file_present(&self.netiso.tenant_nic_file),
            ports,
        )
    }

    /// Reads the tenant NIC file unless it is certainly absent (see
    /// [`GuestConfig::isolation_mode`]); an unreadable or invalid file is an error naming it.
    pub fn tenant_nic(&self) -> Result<Option<TenantNic>, TenantNicError> {
        if tenant_nic_file_present(&self.netiso.tenant_nic_file) {
            TenantNic::read(&self.netiso.tenant_nic_file).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Whether something is at `path`, failing closed: only "not found" means absent.
/// (`Path::exists` says false for a dangling symlink or any error, which would select bridged
/// mode for a file that is there but broken.)
fn tenant_nic_file_present(path: &std::path::Path) -> bool {
    match path.symlink_metadata() {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}
