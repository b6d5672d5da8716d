//! The MariaDB image that `cargo xtask provision` builds and pushes (`docs/mariadb-image.md`),
//! run on the guest dockerd the way Trove's guest runs it: uid 1001, `MYSQL_ROOT_PASSWORD`,
//! `MYSQL_INITDB_SKIP_TZINFO=1`, the data, socket and `/etc/mysql` folders bound from the VM.
//! Debian's `mariadb` client talks to it over the bound socket and over TCP. Needs root and
//! `cargo xtask provision` (which also installs the client).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netiso_config::secret::Secret;
use netiso_runtime::test_support::{
    ContainerGuard, PROVISION_HINT, connect_docker, docker_host, guest_netns, guest_registry,
    require_root, run_command, unique_name,
};
use netiso_runtime::{
    Bind, ContainerRuntime, ContainerSpec, ContainerStatus, DockerRuntime, ImageReference,
    NetworkAttachment, PullPolicy, RestartPolicy,
};

/// The image's repository and tag in the provisioned registry.
const MARIADB_IMAGE: &str = "trove-netiso/mariadb:10.11";
/// Trove's `database_service_uid` default.
const SERVICE_UID: u32 = 1001;
/// A password with the characters that break naive quoting (SQL, shell, option files).
const ROOT_PASSWORD: &str = r#"r00t'pa"ss\word $x"#;
/// How long a first start (system tables) or a restart may take on a loaded CI machine.
const START_LIMIT: Duration = Duration::from_secs(180);

/// The VM's side of a database container: data, socket and configuration folders owned by
/// the service uid, as Trove's guest prepares them, and the client's option file (0600).
struct HostFolders {
    root: tempfile::TempDir,
}

impl HostFolders {
    fn new(config: &str) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        for sub in ["data", "run", "etc", "etc/conf.d"] {
            let path = root.path().join(sub);
            std::fs::create_dir_all(&path).expect("host folder");
            std::os::unix::fs::chown(&path, Some(SERVICE_UID), Some(SERVICE_UID))
                .expect("chown host folder");
        }
        std::fs::write(root.path().join("etc/my.cnf"), config).expect("my.cnf");
        let escaped = ROOT_PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
        let client = root.path().join("client.cnf");
        std::fs::write(&client, format!("[client]\npassword=\"{escaped}\"\n")).expect("client.cnf");
        std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o600))
            .expect("chmod client.cnf");
        Self { root }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }

    fn bind(&self, sub: &str, container_path: &str) -> Bind {
        Bind {
            host_path: self.path(sub).display().to_string(),
            container_path: container_path.to_owned(),
            read_only: false,
        }
    }

    /// Debian's `mariadb` client as root with the password, over `how` (`--socket=…` or
    /// `--host=…`), optionally inside a network namespace; `Err` holds the client's complaint.
    fn sql(&self, netns: Option<&str>, how: &str, statements: &str) -> Result<String, String> {
        let defaults = format!(
            "--defaults-extra-file={}",
            self.path("client.cnf").display()
        );
        let client = [
            "mariadb",
            defaults.as_str(),
            "--user=root",
            how,
            "--connect-timeout=3",
            "--batch",
            "--skip-column-names",
            "--execute",
            statements,
        ];
        match netns {
            Some(netns) => {
                let net = format!("--net=/run/netns/{netns}");
                let mut args = vec![net.as_str()];
                args.extend(client);
                run_command("nsenter", &args)
            }
            None => run_command(client[0], &client[1..]),
        }
    }

    fn socket(&self) -> String {
        format!("--socket={}", self.path("run/mysqld.sock").display())
    }
}

/// Polls `probe` until it returns `Ok`, or fails naming the last error after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(e) if started.elapsed() > limit => {
                panic!("{what} within {} s: {e}", limit.as_secs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

async fn pull_image(docker: &DockerRuntime) -> ImageReference {
    let image: ImageReference = format!("{}/{MARIADB_IMAGE}", guest_registry())
        .parse()
        .expect("image reference");
    docker
        .ensure_image(&image, PullPolicy::Always, None, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("pulling {image} (built by provision): {e}: {PROVISION_HINT}"));
    image
}

fn container_logs(name: &str) -> String {
    let host = docker_host();
    // `docker logs` writes the container's stderr on its own stderr: ask for both.
    let output = std::process::Command::new("docker")
        .args(["-H", &host, "logs", name])
        .output()
        .expect("docker logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn main_process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .expect("the container's main process")
        .trim()
        .to_owned()
}

fn owner_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").uid()
}

#[tokio::test]
async fn first_start_initialises_as_uid_1001_serves_socket_and_tcp_and_a_restart_keeps_the_data() {
    require_root();
    let docker = connect_docker().await;
    // Trove's config template ends in this include; the setting proves the bound my.cnf rules.
    let folders = HostFolders::new(
        "[mysqld]\nmax_connections = 123\nuser = mysql\n\n!includedir /etc/mysql/conf.d/\n",
    );
    let guard = start(
        &docker,
        &folders,
        &[
            ("MYSQL_ROOT_PASSWORD", ROOT_PASSWORD),
            ("MYSQL_INITDB_SKIP_TZINFO", "1"),
        ],
    )
    .await;

    let answer = eventually("root logs in over the bound socket", START_LIMIT, || {
        folders.sql(
            None,
            &folders.socket(),
            "CREATE DATABASE kept; CREATE TABLE kept.t (v VARCHAR(16)); \
             INSERT INTO kept.t VALUES ('survives'); SELECT @@max_connections;",
        )
    });
    assert_eq!(answer.trim(), "123", "the bound my.cnf's setting");
    assert_eq!(owner_of(&folders.path("data/mysql")), SERVICE_UID);
    assert_eq!(owner_of(&folders.path("run/mysqld.sock")), SERVICE_UID);

    let info = docker
        .inspect(guard.name())
        .await
        .expect("inspect")
        .expect("the container exists");
    let pid = info.pid.expect("running container's pid");
    assert_eq!(main_process_name(pid), "mariadbd", "mariadbd is PID 1");
    let address = info
        .networks
        .values()
        .find_map(|endpoint| endpoint.ipv4)
        .expect("the container's bridge address");
    let host = format!("--host={address}");
    let remote = folders
        .sql(
            Some(&guest_netns()),
            &host,
            "SELECT CURRENT_USER(), COUNT(*) FROM kept.t",
        )
        .unwrap_or_else(|e| panic!("root@'%' over TCP from the guest: {e}"));
    assert_eq!(remote.trim(), "root@%\t1");

    docker
        .restart(guard.name(), Duration::from_secs(60))
        .await
        .expect("restart");
    let kept = eventually("the row after a restart", START_LIMIT, || {
        folders.sql(None, &folders.socket(), "SELECT v FROM kept.t")
    });
    assert_eq!(kept.trim(), "survives");

    let logs = container_logs(guard.name());
    assert_eq!(
        logs.matches("initialising the data directory").count(),
        1,
        "initialised once, kept on restart:\n{logs}"
    );
    assert!(!logs.contains(ROOT_PASSWORD), "the log shows the password");
}

/// A container of the image with the VM's folders bound, as uid 1001, started.
async fn start(
    docker: &DockerRuntime,
    folders: &HostFolders,
    env: &[(&str, &str)],
) -> ContainerGuard {
    let image = pull_image(docker).await;
    let guard = ContainerGuard::new(unique_name("netiso-mdbimg"));
    let mut spec = ContainerSpec::new(
        guard.name(),
        image,
        NetworkAttachment::Bridged {
            published_tcp_ports: vec![],
        },
    );
    spec.user = Some(format!("{SERVICE_UID}:{SERVICE_UID}"));
    spec.restart_policy = RestartPolicy::No;
    spec.ipc_host = true;
    for (name, value) in env {
        spec.env.insert((*name).to_owned(), Secret::new(*value));
    }
    spec.binds = vec![
        folders.bind("etc", "/etc/mysql"),
        folders.bind("run", "/var/run/mysqld"),
        folders.bind("data", "/var/lib/mysql"),
    ];
    docker
        .run(&spec)
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", guard.name()));
    guard
}

/// A VM folder for /etc/mysql with nothing in it.
fn empty_etc(folders: &HostFolders) {
    std::fs::remove_file(folders.path("etc/my.cnf")).expect("empty /etc/mysql");
    std::fs::remove_dir(folders.path("etc/conf.d")).expect("empty /etc/mysql");
}

#[tokio::test]
async fn an_empty_etc_mysql_from_the_vm_still_starts_on_the_image_defaults() {
    require_root();
    let docker = connect_docker().await;
    let folders = HostFolders::new("");
    empty_etc(&folders);
    let _guard = start(
        &docker,
        &folders,
        &[
            ("MARIADB_ROOT_PASSWORD", ROOT_PASSWORD),
            ("MYSQL_INITDB_SKIP_TZINFO", "1"),
        ],
    )
    .await;
    let answer = eventually("root logs in over the bound socket", START_LIMIT, || {
        folders.sql(
            None,
            &folders.socket(),
            "SELECT @@datadir, @@skip_name_resolve",
        )
    });
    assert_eq!(answer.trim(), "/var/lib/mysql/\t1");
}

#[tokio::test]
async fn an_empty_data_dir_without_a_root_password_stops_with_the_reason() {
    require_root();
    let docker = connect_docker().await;
    let folders = HostFolders::new("");
    empty_etc(&folders);
    let guard = start(&docker, &folders, &[("MYSQL_INITDB_SKIP_TZINFO", "1")]).await;
    let started = Instant::now();
    let exit_code = loop {
        let info = docker
            .inspect(guard.name())
            .await
            .expect("inspect")
            .expect("the container exists");
        if info.status == ContainerStatus::Exited {
            break info.exit_code;
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "still {} after {} s",
            info.describe_state(),
            START_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(exit_code, Some(1));
    let logs = container_logs(guard.name());
    assert!(
        logs.contains("no root password is set"),
        "the reason is logged:\n{logs}"
    );
    assert!(
        std::fs::read_dir(folders.path("data"))
            .expect("data folder")
            .next()
            .is_none(),
        "nothing was written to the data folder"
    );
}
