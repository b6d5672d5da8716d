//! The MySQL/MariaDB datastore layer, as Trove's `mysql_common` manager does it: the
//! container (user, binds, root password, data directory), the configuration files it
//! reads, the readiness check through the server's socket, and the databases and users
//! `prepare` asks for.
//!
//! The agent uses it when `datastore_manager` is `mysql` or `mariadb`; any other datastore
//! runs as a plain container ([`crate::rpc`]).

pub mod client;
pub mod files;
pub mod models;
pub mod sql;

use std::collections::BTreeMap;

use netiso_config::Secret;
use netiso_runtime::{Bind, ContainerSpec, ImageReference, NetworkAttachment};

pub use client::{Provisioning, SqlError};
pub use files::{FileError, Layout};
pub use models::InvalidInput;

/// The datastore managers this layer serves.
pub const MANAGERS: &[&str] = &["mysql", "mariadb"];

/// Whether `manager` is a MySQL-family datastore.
pub fn is_mysql(manager: &str) -> bool {
    MANAGERS.contains(&manager)
}

/// The MySQL datastore's fixed settings (from the guest configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    /// `datastore_manager` (`mysql` or `mariadb`): reserved names differ.
    pub manager: String,
    /// Where the container's files are; `mount_point` is replaced by `prepare`'s.
    pub layout: Layout,
}

/// A random password of 32 letters and digits (Trove's `generate_random_password` makes
/// them of that alphabet too), from the OS's random source.
pub fn generate_password() -> Result<Secret, std::io::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    let mut bytes = [0u8; 64];
    while password.len() < 32 {
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        // 248 = 4 × 62: rejecting above it keeps every character equally likely.
        password.extend(
            bytes
                .iter()
                .filter(|b| **b < 248)
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .take(32 - password.len()),
        );
    }
    Ok(Secret::new(password))
}

/// The database container as Trove's `BaseMySqlApp.start_db` creates it: run as the
/// database service user, `/etc/mysql`, the socket directory and the data volume bound,
/// `MYSQL_ROOT_PASSWORD` and `MYSQL_INITDB_SKIP_TZINFO=1` in the environment, and
/// `--datadir=/var/lib/mysql/data` as the command (the image's entrypoint runs the server
/// with it). Restart `unless-stopped` and host IPC come with [`ContainerSpec::new`].
pub fn container_spec(
    name: &str,
    image: ImageReference,
    network: NetworkAttachment,
    layout: &Layout,
    root_password: &Secret,
) -> ContainerSpec {
    let mut spec = ContainerSpec::new(name, image, network);
    spec.user = Some(format!("{}:{}", layout.uid, layout.gid));
    let bind = |host: &std::path::Path, container: &str| Bind {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.to_owned(),
        read_only: false,
    };
    spec.binds = vec![
        bind(&layout.config_dir, files::CONTAINER_CONFIG_DIR),
        bind(&layout.socket_dir, files::CONTAINER_SOCKET_DIR),
        bind(&layout.mount_point, files::CONTAINER_VOLUME_DIR),
    ];
    spec.env = BTreeMap::from([
        ("MYSQL_ROOT_PASSWORD".to_owned(), root_password.clone()),
        ("MYSQL_INITDB_SKIP_TZINFO".to_owned(), Secret::new("1")),
    ]);
    spec.command = Some(vec![format!("--datadir={}", files::CONTAINER_DATA_DIR)]);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use netiso_runtime::RestartPolicy;
    use std::path::PathBuf;

    #[test]
    fn the_container_is_trove_s() {
        let layout = Layout {
            config_dir: PathBuf::from("/etc/mysql"),
            socket_dir: PathBuf::from("/var/lib/mysqld"),
            mount_point: PathBuf::from("/var/lib/mysql"),
            uid: 1001,
            gid: 1001,
        };
        let image: ImageReference = "10.0.0.5:5000/trove/mariadb:10.11".parse().expect("image");
        let spec = container_spec(
            "database",
            image,
            NetworkAttachment::Bridged {
                published_tcp_ports: vec![3306],
            },
            &layout,
            &Secret::new("rootpw"),
        );
        assert_eq!(spec.name, "database");
        assert_eq!(spec.user.as_deref(), Some("1001:1001"));
        assert_eq!(spec.restart_policy, RestartPolicy::UnlessStopped);
        assert!(spec.ipc_host && !spec.privileged);
        let binds: Vec<(&str, &str, bool)> = spec
            .binds
            .iter()
            .map(|b| (b.host_path.as_str(), b.container_path.as_str(), b.read_only))
            .collect();
        assert_eq!(
            binds,
            [
                ("/etc/mysql", "/etc/mysql", false),
                ("/var/lib/mysqld", "/var/run/mysqld", false),
                ("/var/lib/mysql", "/var/lib/mysql", false),
            ]
        );
        assert_eq!(spec.env["MYSQL_ROOT_PASSWORD"].expose(), "rootpw");
        assert_eq!(spec.env["MYSQL_INITDB_SKIP_TZINFO"].expose(), "1");
        assert_eq!(
            spec.command,
            Some(vec!["--datadir=/var/lib/mysql/data".to_owned()])
        );
        assert!(
            !format!("{spec:?}").contains("rootpw"),
            "Debug shows the password"
        );
    }

    #[test]
    fn generated_passwords_are_long_random_and_plain() {
        let a = generate_password().expect("random");
        let b = generate_password().expect("random");
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(is_mysql("mariadb") && is_mysql("mysql") && !is_mysql("testdb"));
    }
}
