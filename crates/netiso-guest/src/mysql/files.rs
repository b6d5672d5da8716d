//! The MySQL container's files on the VM, laid out as Trove lays them out:
//!
//! | VM path | In the container | Holds |
//! |---|---|---|
//! | `<config_dir>/my.cnf` | `/etc/mysql/my.cnf` | `config_contents` (Trove's `reset_configuration`) |
//! | `<config_dir>/conf.d/20-user-001-common.cnf` | `/etc/mysql/conf.d/…` | `overrides` (Trove's user override) |
//! | `<config_dir>/conf.d/50-system-001-common.cnf` | `/etc/mysql/conf.d/…` | `datadir` and socket (Trove's system override) |
//! | `<socket_dir>/mysqld.sock` | `/var/run/mysqld/mysqld.sock` | the server's socket |
//! | `<mount_point>/data` | `/var/lib/mysql/data` | the data directory |
//! | `<mount_point>/conf.d/root.cnf`, `os_admin.cnf` | (root only, 0600) | passwords, `[client]` INI as Trove writes them |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use netiso_config::Secret;
use serde_json::Value;

use super::models::InvalidInput;

/// `/etc/mysql` in the container.
pub const CONTAINER_CONFIG_DIR: &str = "/etc/mysql";
/// `/var/run/mysqld` in the container.
pub const CONTAINER_SOCKET_DIR: &str = "/var/run/mysqld";
/// The data volume in the container (Trove's `/var/lib/mysql`).
pub const CONTAINER_VOLUME_DIR: &str = "/var/lib/mysql";
/// The data directory in the container (`<mount_point>/data`, as Trove's `do_prepare`).
pub const CONTAINER_DATA_DIR: &str = "/var/lib/mysql/data";
/// The socket's file name.
pub const SOCKET_FILE: &str = "mysqld.sock";
/// The include line every `my.cnf` must carry so that `conf.d` is read.
const INCLUDE_CONF_D: &str = "!includedir /etc/mysql/conf.d/";
/// Trove's user override file.
const USER_OVERRIDE_FILE: &str = "20-user-001-common.cnf";
/// Trove's system override file.
const SYSTEM_OVERRIDE_FILE: &str = "50-system-001-common.cnf";
/// The root password file, in `<mount_point>/conf.d`.
pub const ROOT_CNF: &str = "root.cnf";
/// The `os_admin` password file, in `<mount_point>/conf.d`.
pub const ADMIN_CNF: &str = "os_admin.cnf";

/// A file or directory of the layout that could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done (`write`, `create directory`, `chown`…).
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError {
        action,
        path,
        source,
    }
}

/// Where the container's files live on the VM and who owns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Bound on `/etc/mysql`.
    pub config_dir: PathBuf,
    /// Bound on `/var/run/mysqld`.
    pub socket_dir: PathBuf,
    /// The data volume, bound on `/var/lib/mysql`.
    pub mount_point: PathBuf,
    /// The container's uid.
    pub uid: u32,
    /// The container's gid.
    pub gid: u32,
}

impl Layout {
    /// The server's socket on the VM.
    pub fn socket(&self) -> PathBuf {
        self.socket_dir.join(SOCKET_FILE)
    }

    /// The data directory on the VM.
    pub fn data_dir(&self) -> PathBuf {
        self.mount_point.join("data")
    }

    /// Trove's `conf.d` on the data volume, where the password files are.
    pub fn secrets_dir(&self) -> PathBuf {
        self.mount_point.join("conf.d")
    }

    /// The directories the container needs, owned by its user (Trove's `ensure_directory`),
    /// and the password directory, root's only.
    pub fn ensure_directories(&self) -> Result<(), FileError> {
        let conf_d = self.config_dir.join("conf.d");
        for dir in [
            &self.config_dir,
            &conf_d,
            &self.socket_dir,
            &self.mount_point,
            &self.data_dir(),
        ] {
            std::fs::create_dir_all(dir).map_err(failed("create directory", dir))?;
            std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
                .map_err(failed("chown", dir))?;
        }
        let secrets = self.secrets_dir();
        std::fs::create_dir_all(&secrets).map_err(failed("create directory", &secrets))?;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
            .map_err(failed("chmod", &secrets))
    }

    /// Writes `my.cnf` from `config_contents` (Trove's `reset_configuration`), adding the
    /// `conf.d` include when the contents lack it. `None` keeps an existing `my.cnf` and
    /// writes a bare one otherwise.
    pub fn write_config(&self, config_contents: Option<&str>) -> Result<(), FileError> {
        let path = self.config_dir.join("my.cnf");
        let contents = match config_contents {
            Some(contents) => with_include(contents),
            None if path.exists() => return Ok(()),
            None => format!("{INCLUDE_CONF_D}\n"),
        };
        self.write_readable(&path, &contents)
    }

    /// Trove's system override: the data directory and the socket, for the server and for
    /// clients in the container.
    pub fn write_system_override(&self) -> Result<(), FileError> {
        let socket = format!("{CONTAINER_SOCKET_DIR}/{SOCKET_FILE}");
        let contents = format!(
            "[mysqld]\ndatadir = {CONTAINER_DATA_DIR}\nsocket = {socket}\n\n[client]\nsocket = {socket}\n"
        );
        self.write_readable(
            &self.config_dir.join("conf.d").join(SYSTEM_OVERRIDE_FILE),
            &contents,
        )
    }

    /// Trove's user override (`update_overrides`): `[mysqld]` with each option; an empty
    /// set removes the file.
    pub fn write_user_overrides(&self, overrides: &[(String, String)]) -> Result<(), FileError> {
        let path = self.config_dir.join("conf.d").join(USER_OVERRIDE_FILE);
        if overrides.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(failed("remove", &path)(e))
                }
                _ => Ok(()),
            };
        }
        let mut contents = "[mysqld]\n".to_owned();
        for (key, value) in overrides {
            contents.push_str(&format!("{key} = {value}\n"));
        }
        self.write_readable(&path, &contents)
    }

    /// The options of Trove's user override file, in order (none when absent).
    pub fn read_user_overrides(&self) -> Result<Vec<(String, String)>, FileError> {
        let path = self.config_dir.join("conf.d").join(USER_OVERRIDE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(failed("read", &path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect())
    }

    /// The password saved for `file` ([`ROOT_CNF`], [`ADMIN_CNF`]), `None` when absent.
    pub fn saved_password(&self, file: &str) -> Result<Option<Secret>, FileError> {
        let path = self.secrets_dir().join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(client_password(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &path)(e)),
        }
    }

    /// Saves `user`'s password as Trove does (`[client]` user, password, host), mode 0600.
    pub fn save_password(
        &self,
        file: &str,
        user: &str,
        password: &Secret,
    ) -> Result<(), FileError> {
        let path = self.secrets_dir().join(file);
        let contents = format!(
            "[client]\nuser = {user}\npassword = {}\nhost = localhost\n",
            password.expose()
        );
        netiso_config::atomic_file::replace(&path, contents.as_bytes(), 0o600)
            .map_err(failed("write", &path))
    }

    fn write_readable(&self, path: &Path, contents: &str) -> Result<(), FileError> {
        let owner = netiso_config::atomic_file::Owner {
            uid: self.uid,
            gid: self.gid,
        };
        netiso_config::atomic_file::replace_owned(path, contents.as_bytes(), 0o644, Some(owner))
            .map_err(failed("write", path))
    }
}

/// `contents` with the `conf.d` include appended when it has none.
fn with_include(contents: &str) -> String {
    let included = contents.lines().any(|line| {
        let line = line.trim();
        line.starts_with("!includedir") && line.trim_end_matches('/').ends_with("/etc/mysql/conf.d")
    });
    let mut text = contents.to_owned();
    if !included {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(INCLUDE_CONF_D);
        text.push('\n');
    }
    text
}

/// `password` of the `[client]` section of a Trove `.cnf` file.
fn client_password(text: &str) -> Option<Secret> {
    let mut in_client = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_client = line == "[client]";
        } else if in_client
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "password"
        {
            return Some(Secret::new(value.trim()));
        }
    }
    None
}

/// `prepare`'s `overrides` (a JSON object of option → value) as `my.cnf` lines; values
/// are written as MySQL reads them (`true`/`false` as `1`/`0`). Keys and values must not
/// break the file: newlines, `[` and `=` in keys are refused.
pub fn overrides_from_trove(value: Option<&Value>) -> Result<Vec<(String, String)>, InvalidInput> {
    let Some(object) = value.and_then(Value::as_object) else {
        return match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(InvalidInput::Malformed {
                what: "overrides".to_owned(),
                problem: "it is not an object".to_owned(),
            }),
        };
    };
    object
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => u8::from(*b).to_string(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(InvalidInput::Override {
                        name: key.clone(),
                        problem: format!("{other} is not a scalar"),
                    });
                }
            };
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok || text.contains(['\n', '\r']) {
                return Err(InvalidInput::Override {
                    name: key.clone(),
                    problem: "cannot be written to my.cnf".to_owned(),
                });
            }
            Ok((key.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::MetadataExt;

    fn layout(root: &Path) -> Layout {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        Layout {
            config_dir: root.join("etc-mysql"),
            socket_dir: root.join("mysqld"),
            mount_point: root.join("volume"),
            uid,
            gid,
        }
    }

    #[test]
    fn config_contents_become_my_cnf_with_the_conf_d_include() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        layout.ensure_directories().expect("directories");
        layout
            .write_config(Some("[mysqld]\nmax_connections = 200"))
            .expect("write");
        let my_cnf = layout.config_dir.join("my.cnf");
        assert_eq!(
            std::fs::read_to_string(&my_cnf).expect("read"),
            "[mysqld]\nmax_connections = 200\n!includedir /etc/mysql/conf.d/\n"
        );
        let trove_template = "[mysqld]\nport = 3306\n\n!includedir /etc/mysql/conf.d\n";
        layout.write_config(Some(trove_template)).expect("write");
        assert_eq!(
            std::fs::read_to_string(&my_cnf).expect("read"),
            trove_template
        );
        layout.write_config(None).expect("keep");
        assert_eq!(
            std::fs::read_to_string(&my_cnf).expect("read"),
            trove_template
        );
        assert_eq!(
            std::fs::metadata(&my_cnf).expect("stat").mode() & 0o777,
            0o644
        );

        layout.write_system_override().expect("system");
        let system =
            std::fs::read_to_string(layout.config_dir.join("conf.d/50-system-001-common.cnf"))
                .expect("read");
        assert!(
            system.contains("datadir = /var/lib/mysql/data\n"),
            "{system}"
        );
        assert!(
            system.contains("socket = /var/run/mysqld/mysqld.sock"),
            "{system}"
        );
    }

    #[test]
    fn overrides_are_written_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        layout.ensure_directories().expect("directories");
        let overrides = overrides_from_trove(Some(&json!({
            "max_connections": 150, "local_infile": false, "sql_mode": "STRICT_ALL_TABLES"
        })))
        .expect("valid");
        layout.write_user_overrides(&overrides).expect("write");
        assert_eq!(layout.read_user_overrides().expect("read"), overrides);
        let path = layout.config_dir.join("conf.d/20-user-001-common.cnf");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "[mysqld]\nmax_connections = 150\nlocal_infile = 0\nsql_mode = STRICT_ALL_TABLES\n",
            "in the request's order"
        );
        layout.write_user_overrides(&[]).expect("remove");
        assert!(!path.exists());
        layout.write_user_overrides(&[]).expect("already absent");
        assert!(overrides_from_trove(Some(&json!({"a\n[x]": 1}))).is_err());
        assert!(overrides_from_trove(Some(&json!({"a": "1\n[client]"}))).is_err());
        assert!(overrides_from_trove(Some(&json!([1]))).is_err());
        assert_eq!(overrides_from_trove(Some(&json!({}))), Ok(vec![]));
    }

    #[test]
    fn passwords_are_kept_as_trove_keeps_them_readable_by_root_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        layout.ensure_directories().expect("directories");
        assert_eq!(layout.saved_password(ROOT_CNF).expect("read"), None);
        layout
            .save_password(ROOT_CNF, "root", &Secret::new("p=w d"))
            .expect("save");
        let path = layout.secrets_dir().join(ROOT_CNF);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "[client]\nuser = root\npassword = p=w d\nhost = localhost\n"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(layout.secrets_dir())
                .expect("stat")
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            layout.saved_password(ROOT_CNF).expect("read"),
            Some(Secret::new("p=w d"))
        );
        assert_eq!(layout.socket(), dir.path().join("mysqld/mysqld.sock"));
    }
}
