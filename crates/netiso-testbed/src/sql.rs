//! The tenant's application: Debian's `mariadb` command-line client, run in the tenant client
//! namespace with `ip netns exec`, logging in over the tenant network as the user that
//! `prepare` created. The password reaches the client through an option file readable by
//! root only, never through its command line.

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use netiso_config::Secret;
use serde_json::{Value, json};

/// The database `prepare` creates for the tenant.
pub const TENANT_DATABASE: &str = "harness";
/// The user `prepare` creates, allowed from any host as Trove's users usually are.
pub const TENANT_USER: &str = "tenant";
/// Bound of one client run (connect, statements, exit).
const CLIENT_LIMIT: &str = "30";

/// The tenant's credentials and the client's option file.
#[derive(Debug)]
pub struct TenantLogin {
    password: Secret,
    option_file: PathBuf,
}

impl TenantLogin {
    /// A fresh password, written to `<dir>/tenant-client.cnf` (mode 0600).
    pub fn create(dir: &Path) -> Result<Self> {
        let password = Secret::new(uuid::Uuid::new_v4().simple().to_string());
        let option_file = dir.join("tenant-client.cnf");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&option_file)
            .with_context(|| format!("creating {}", option_file.display()))?;
        std::io::Write::write_all(
            &mut file,
            format!("[client]\npassword={}\n", password.expose()).as_bytes(),
        )
        .with_context(|| format!("writing {}", option_file.display()))?;
        Ok(Self {
            password,
            option_file,
        })
    }

    /// The tenant's password, for the checks that no log holds it.
    pub fn password(&self) -> &str {
        self.password.expose()
    }

    /// `prepare`'s `databases`, as Trove serializes its `MySQLSchema`.
    pub fn prepare_databases(&self) -> Value {
        json!([{
            "_name": TENANT_DATABASE, "_character_set": "utf8mb4",
            "_collate": "utf8mb4_general_ci",
        }])
    }

    /// `prepare`'s `users`, as Trove serializes its `MySQLUser`.
    pub fn prepare_users(&self) -> Value {
        json!([{
            "_name": TENANT_USER, "_host": "%", "_password": self.password.expose(),
            "_databases": [{"_name": TENANT_DATABASE, "_character_set": null, "_collate": null}],
            "_is_root": false,
        }])
    }

    /// Runs `statements` as the tenant against `server` from `client_netns`; returns the
    /// client's output (tab-separated rows, no column names).
    pub fn run(&self, client_netns: &str, server: SocketAddr, statements: &str) -> Result<String> {
        let output = self
            .client(client_netns, server, CLIENT_LIMIT, &["--batch", "--skip-column-names"])
            .arg(format!("--execute={statements}"))
            .output()
            .context("running `ip netns exec … mariadb` (Debian's mariadb-client: run `cargo xtask provision`)")?;
        if !output.status.success() {
            bail!(
                "mariadb as {TENANT_USER} on {server} ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    }

    /// Runs `query` as the tenant with its rows streamed to the client (`--quick`) and
    /// counted, not kept; `limit` bounds the whole run. Returns the bytes the client printed.
    pub fn stream(
        &self,
        client_netns: &str,
        server: SocketAddr,
        query: &str,
        limit: Duration,
    ) -> Result<u64> {
        let limit = limit.as_secs().max(1).to_string();
        let mut child = self
            .client(
                client_netns,
                server,
                &limit,
                &["--batch", "--skip-column-names", "--quick"],
            )
            .arg(format!("--execute={query}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running `ip netns exec … mariadb` (Debian's mariadb-client: run `cargo xtask provision`)")?;
        let mut rows = child.stdout.take().context("the client's output")?;
        let bytes = std::io::copy(&mut rows, &mut std::io::sink())
            .context("reading the client's output")?;
        let output = child.wait_with_output().context("waiting for the client")?;
        if !output.status.success() {
            bail!(
                "mariadb as {TENANT_USER} on {server} ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(bytes)
    }

    /// Debian's `mariadb` client in `client_netns`, logged in as the tenant on `server`, bound
    /// by `timeout` to `limit_seconds`, with `options` added.
    fn client(
        &self,
        client_netns: &str,
        server: SocketAddr,
        limit_seconds: &str,
        options: &[&str],
    ) -> std::process::Command {
        let mut command = std::process::Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                client_netns,
                "timeout",
                limit_seconds,
                "mariadb",
            ])
            .arg(format!(
                "--defaults-extra-file={}",
                self.option_file.display()
            ))
            .arg(format!("--host={}", server.ip()))
            .arg(format!("--port={}", server.port()))
            .arg(format!("--user={TENANT_USER}"))
            .arg(format!("--database={TENANT_DATABASE}"))
            .arg("--connect-timeout=3")
            .args(options);
        command
    }

    /// Polls a login until one succeeds or `limit` passes; returns the time it took and the
    /// account the server matched (`CURRENT_USER()`).
    pub fn first_login(
        &self,
        client_netns: &str,
        server: SocketAddr,
        limit: Duration,
    ) -> Result<(Duration, String)> {
        let started = Instant::now();
        loop {
            match self.run(client_netns, server, "SELECT CURRENT_USER()") {
                Ok(user) => return Ok((started.elapsed(), user)),
                Err(e) if started.elapsed() > limit => {
                    return Err(e.context(format!("no login within {} s", limit.as_secs())));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}

/// `my.cnf` as Trove's taskmanager renders the MariaDB config template for a 512 MB flavor,
/// with `max_connections` set by the caller (so that a change is visible to the client).
pub fn mariadb_config(server_id: u32, max_connections: u32) -> String {
    format!(
        "[client]\nport = 3306\nsocket = /var/run/mysqld/mysqld.sock\n\n\
         [mysqld_safe]\nnice = 0\n\n\
         [mysqld]\nuser = mysql\nport = 3306\nbasedir = /usr\ndatadir = /var/lib/mysql/data\n\
         tmpdir = /var/tmp\npid_file = /var/run/mysqld/mysqld.pid\n\
         socket = /var/run/mysqld/mysqld.sock\nskip-external-locking = 1\n\
         key_buffer_size = 50M\nmax_allowed_packet = 1024K\nthread_stack = 192K\n\
         thread_cache_size = 4\nmyisam-recover-options = BACKUP,FORCE\nquery_cache_type = 1\n\
         query_cache_limit = 1M\nquery_cache_size = 8M\n\
         innodb_data_file_path = ibdata1:10M:autoextend\ninnodb_buffer_pool_size = 150M\n\
         innodb_file_per_table = 1\ninnodb_log_file_size = 50M\ninnodb_log_buffer_size = 25M\n\
         connect_timeout = 15\nwait_timeout = 120\njoin_buffer_size = 1M\n\
         read_buffer_size = 512K\nread_rnd_buffer_size = 512K\nsort_buffer_size = 1M\n\
         tmp_table_size = 16M\nmax_heap_table_size = 16M\ntable_open_cache = 256\n\
         table_definition_cache = 256\nopen_files_limit = 512\nmax_user_connections = 100\n\
         max_connections = {max_connections}\ndefault_storage_engine = innodb\nlocal-infile = 0\n\
         server_id = {server_id}\n\n\
         [mysqldump]\nquick = 1\nquote-names = 1\nmax_allowed_packet = 16M\n\n\
         [isamchk]\nkey_buffer = 16M\n\n\
         !includedir /etc/mysql/conf.d/\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_file_is_private_and_the_users_carry_the_password() {
        let dir = tempfile::tempdir().expect("dir");
        let login = TenantLogin::create(dir.path()).expect("login");
        let meta = std::fs::metadata(dir.path().join("tenant-client.cnf")).expect("file");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let users = login.prepare_users();
        assert_eq!(users[0]["_name"], TENANT_USER);
        assert_eq!(users[0]["_password"], login.password.expose());
        assert_eq!(users[0]["_databases"][0]["_name"], TENANT_DATABASE);
        assert!(!format!("{login:?}").contains(login.password.expose()));
    }

    #[test]
    fn the_config_ends_in_the_include_and_sets_max_connections() {
        let config = mariadb_config(7, 123);
        assert!(config.contains("\nmax_connections = 123\n"));
        assert!(config.contains("\nserver_id = 7\n"));
        assert!(config.ends_with("!includedir /etc/mysql/conf.d/\n"));
    }
}
