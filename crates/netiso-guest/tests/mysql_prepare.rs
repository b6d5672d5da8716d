//! `prepare` as Trove's MySQL manager does it, against the real dockerd of the simulated
//! guest and the provisioned MariaDB image (`<registry>/trove-netiso/mariadb:10.11`), with a
//! data volume on a loop device of the test's own. Needs root and `cargo xtask provision`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use netiso_config::isolation::BridgedReason;
use netiso_config::{IsolationMode, PublishedPort, VolumeSettings};
use netiso_guest::mysql::{Layout, MysqlSettings};
use netiso_guest::rpc::{DatabaseSettings, GuestService, PrepareRequest};
use netiso_guest::volume::{self, VolumeOutcome};
use netiso_messaging::{Context, ServiceStatus};
use netiso_runtime::ContainerRuntime;
use netiso_runtime::test_support::{
    ContainerGuard, PROVISION_HINT, connect_docker, guest_registry, next_counter, require_root,
    run_command,
};
use serde_json::json;

mod common;

use common::{NoPortProbe, RecordingSink};

const IMAGE_TAG: &str = "10.11";
const PASSWORD: &str = "app-s3cr3t";

fn mariadb_image() -> String {
    format!("{}/trove-netiso/mariadb", guest_registry())
}

/// A file-backed disk attached to a loop device; detached (after unmounting whatever it
/// mounted) on drop.
struct LoopDisk {
    device: PathBuf,
    mounted_on: Mutex<Option<PathBuf>>,
    _file: tempfile::NamedTempFile,
}

impl LoopDisk {
    fn create(size_mib: u64, read_only: bool) -> Self {
        let file = tempfile::NamedTempFile::new().expect("backing file");
        file.as_file()
            .set_len(size_mib * 1024 * 1024)
            .expect("size the backing file");
        let path = file.path().to_string_lossy().into_owned();
        let mut args = vec!["--find", "--show"];
        if read_only {
            args.push("--read-only");
        }
        args.push(&path);
        let device = run_command("losetup", &args)
            .unwrap_or_else(|e| panic!("losetup failed ({e}): {PROVISION_HINT}"));
        Self {
            device: PathBuf::from(device.trim()),
            mounted_on: Mutex::new(None),
            _file: file,
        }
    }

    fn will_mount_on(&self, mount_point: &Path) {
        *self.mounted_on.lock().expect("lock") = Some(mount_point.to_owned());
    }

    fn filesystem(&self) -> Option<String> {
        run_command(
            "blkid",
            &[
                "-p",
                "-o",
                "value",
                "-s",
                "TYPE",
                &self.device.to_string_lossy(),
            ],
        )
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if let Some(mount_point) = self.mounted_on.lock().expect("lock").take()
            && is_mounted(&mount_point)
            && let Err(e) = run_command("umount", &[&mount_point.to_string_lossy()])
        {
            eprintln!("cleanup: umount {}: {e}", mount_point.display());
        }
        if let Err(e) = run_command("losetup", &["--detach", &self.device.to_string_lossy()]) {
            eprintln!("cleanup: losetup --detach {}: {e}", self.device.display());
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(&*path.to_string_lossy()))
}

/// One simulated guest's MySQL: its directories, settings and service.
struct Guest {
    /// Holds the configuration, socket and volume directories until the guest is dropped.
    _dir: tempfile::TempDir,
    container: ContainerGuard,
    sink: Arc<RecordingSink>,
    service: GuestService,
    port: u16,
}

impl Guest {
    async fn new(prefix: &str, image: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = next_counter();
        let container = ContainerGuard::new(format!("nti-{prefix}-{}-{n}", std::process::id()));
        let port = 41_000 + u16::try_from((std::process::id() * 7 + n) % 9_000).unwrap_or(0);
        let layout = Layout {
            config_dir: dir.path().join("etc-mysql"),
            socket_dir: dir.path().join("mysqld"),
            mount_point: dir.path().join("volume"),
            uid: 1001,
            gid: 1001,
        };
        let settings = DatabaseSettings {
            guest_id: format!("guest-{prefix}-{n}"),
            container_name: container.name().to_owned(),
            docker_image: Some(image.to_owned()),
            container_registry: None,
            default_version: Some(IMAGE_TAG.to_owned()),
            credentials: None,
            mode: IsolationMode::Bridged {
                published_ports: vec![PublishedPort(port)],
                reason: BridgedReason::IsolationDisabled,
            },
            tenant_nic: None,
            tcp_ports: vec![port],
            mount_point: Some(layout.mount_point.clone()),
            state_change_wait_time: Duration::from_secs(180),
            state_dir: dir.path().join("state"),
            volume: VolumeSettings::default(),
            fstab: dir.path().join("fstab"),
            mysql: Some(MysqlSettings {
                manager: "mariadb".into(),
                layout,
            }),
        };
        let sink = Arc::new(RecordingSink::default());
        let docker = Arc::new(connect_docker().await);
        let service =
            GuestService::new(settings, docker, sink.clone(), Arc::new(NoPortProbe), None);
        Self {
            _dir: dir,
            container,
            sink,
            service,
            port,
        }
    }

    fn layout(&self) -> Layout {
        self.service
            .settings()
            .mysql
            .as_ref()
            .expect("mysql")
            .layout
            .clone()
    }

    fn request(&self, device: Option<&Path>) -> PrepareRequest {
        PrepareRequest {
            ds_version: Some(IMAGE_TAG.into()),
            databases: Some(json!([
                {"_name": "app", "_character_set": "utf8mb4", "_collate": "utf8mb4_general_ci"}
            ])),
            users: Some(
                json!([{"_name": "appuser", "_host": "%", "_password": PASSWORD,
                "_databases": [{"_name": "app", "_collate": null, "_character_set": null}],
                "_is_root": false}]),
            ),
            config_contents: Some(format!(
                "[mysqld]\nport = {}\nmax_connections = 217\n",
                self.port
            )),
            root_password: None,
            overrides: Some(json!({})),
            device_path: device.map(Path::to_owned),
            mount_point: Some(self.layout().mount_point),
        }
    }

    async fn login(&self, user: &str, password: &str) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(self.layout().socket().to_string_lossy()))
            .user(Some(user))
            .pass(Some(password))
            .db_name(Some("app"));
        tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
            .await
            .expect("login within 10 s")
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
    }
}

/// A request context with a notification, so that a failure reaches the sink's
/// `notify_exc_info` with its message.
fn context() -> Context {
    let mut context = Context::fresh();
    context
        .0
        .insert("trove_notification".into(), json!({"request_id": "req-1"}));
    context
}

async fn query_one(conn: &mut mysql_async::Conn, query: &str) -> String {
    conn.query_first::<String, _>(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .unwrap_or_else(|| panic!("{query}: no row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_mounts_the_volume_creates_the_user_who_logs_in_and_restarts_keep_the_row() {
    require_root();
    let guest = Guest::new("mysql", &mariadb_image()).await;
    let disk = LoopDisk::create(512, false);
    assert_eq!(disk.filesystem(), None, "a fresh disk is blank");
    let layout = guest.layout();
    disk.will_mount_on(&layout.mount_point);

    let started = Instant::now();
    guest
        .service
        .prepare(&context(), guest.request(Some(&disk.device)))
        .await;
    let took = started.elapsed();
    let events = guest.sink.events();
    assert_eq!(
        events,
        ["heartbeat building", "heartbeat healthy", "notify_end"],
        "prepare succeeded"
    );
    eprintln!("prepare (pull, format, mount, init, users) took {took:?}");

    // The volume: formatted ext4 and mounted; the data directory owned by 1001.
    assert_eq!(disk.filesystem().as_deref(), Some("ext4"));
    assert!(is_mounted(&layout.mount_point));
    let data = std::fs::metadata(layout.data_dir()).expect("data directory");
    assert_eq!((data.uid(), data.gid()), (1001, 1001));
    assert!(
        layout.data_dir().join("mysql").is_dir(),
        "initialised there"
    );
    let root_cnf = std::fs::metadata(layout.secrets_dir().join("root.cnf")).expect("root.cnf");
    assert_eq!(root_cnf.mode() & 0o777, 0o600);

    // The user logs in through the socket, writes a row and reads it back.
    let mut conn = guest.login("appuser", PASSWORD).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("create table");
    conn.query_drop("INSERT INTO t VALUES (1, 'kept')")
        .await
        .expect("insert");
    assert_eq!(
        query_one(&mut conn, "SELECT v FROM t WHERE id = 1").await,
        "kept"
    );
    assert_eq!(
        query_one(&mut conn, "SELECT @@character_set_database").await,
        "utf8mb4"
    );
    assert_eq!(
        query_one(&mut conn, "SELECT @@global.max_connections").await,
        "217",
        "config_contents is in effect"
    );
    assert_eq!(
        query_one(&mut conn, "SELECT @@global.port").await,
        guest.port.to_string()
    );
    drop(conn);
    let root_password = std::fs::read_to_string(layout.secrets_dir().join("root.cnf"))
        .expect("root.cnf")
        .lines()
        .find_map(|l| l.strip_prefix("password = ").map(str::to_owned))
        .expect("password line");
    let mut root = guest.login("root", &root_password).await;
    assert_eq!(
        query_one(
            &mut root,
            "SELECT CAST(COUNT(*) AS CHAR) FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'"
        )
        .await,
        "0",
        "remote root is removed when prepare has no root_password"
    );
    assert_eq!(
        query_one(
            &mut root,
            "SELECT CAST(COUNT(*) AS CHAR) FROM mysql.user WHERE User = 'os_admin'"
        )
        .await,
        "1"
    );
    drop(root);
    assert!(guest.service.is_prepared());
    assert_eq!(guest.service.current_status().await, ServiceStatus::Healthy);

    // A restart keeps the row.
    let restarted = Instant::now();
    guest.service.restart().await.expect("restart");
    eprintln!("restart took {:?}", restarted.elapsed());
    let mut conn = guest.login("appuser", PASSWORD).await;
    assert_eq!(
        query_one(&mut conn, "SELECT v FROM t WHERE id = 1").await,
        "kept"
    );
    drop(conn);

    // New configuration takes effect through start_db_with_conf_changes.
    guest
        .service
        .start_db_with_conf_changes(
            Some(format!(
                "[mysqld]\nport = {}\nmax_connections = 321\n",
                guest.port
            )),
            None,
        )
        .await
        .expect("start with the new configuration");
    let mut conn = guest.login("appuser", PASSWORD).await;
    assert_eq!(
        query_one(&mut conn, "SELECT @@global.max_connections").await,
        "321"
    );
    assert_eq!(
        query_one(&mut conn, "SELECT v FROM t WHERE id = 1").await,
        "kept"
    );
    drop(conn);

    // Configuration groups: applied to the running server, and written for the next start.
    guest
        .service
        .apply_overrides(Some(json!({"max_connections": 333})))
        .await
        .expect("apply_overrides");
    let mut conn = guest.login("appuser", PASSWORD).await;
    assert_eq!(
        query_one(&mut conn, "SELECT @@global.max_connections").await,
        "333"
    );
    drop(conn);
    guest
        .service
        .update_overrides(Some(json!({"max_connections": 444})), false)
        .await
        .expect("update_overrides");
    guest.service.restart().await.expect("restart");
    let mut conn = guest.login("appuser", PASSWORD).await;
    assert_eq!(
        query_one(&mut conn, "SELECT @@global.max_connections").await,
        "444",
        "the user override wins over my.cnf after a restart"
    );
    drop(conn);

    // A second prepare (a retried cast) converges: same volume, same users.
    guest
        .service
        .prepare(&context(), guest.request(Some(&disk.device)))
        .await;
    assert_eq!(
        guest.sink.events().last().map(String::as_str),
        Some("notify_end")
    );
    let docker = connect_docker().await;
    docker
        .remove(guest.container.name(), true)
        .await
        .expect("remove the container before unmounting its volume");
    drop(disk);
    drop(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_to_spawn_and_leaves_the_volume_as_it_was() {
    require_root();
    let last_exc = |guest: &Guest| {
        guest
            .sink
            .events()
            .into_iter()
            .find_map(|e| e.strip_prefix("notify_exc_info ").map(str::to_owned))
            .expect("notify_exc_info")
    };
    let disk = LoopDisk::create(64, false);

    let guest = Guest::new("badin", &mariadb_image()).await;
    let mut request = guest.request(Some(&disk.device));
    request.users = Some(json!([{"_name": "nopass", "_host": "%"}]));
    guest.service.prepare(&context(), request).await;
    let message = last_exc(&guest);
    assert!(
        message.contains("'nopass'") && message.contains("no password"),
        "{message}"
    );
    assert!(
        guest
            .sink
            .events()
            .contains(&"heartbeat failed to spawn".to_owned())
    );

    let guest = Guest::new("badin", &mariadb_image()).await;
    let mut request = guest.request(Some(&disk.device));
    request.databases = Some(json!([{"_name": "bad;name"}]));
    guest.service.prepare(&context(), request).await;
    assert!(last_exc(&guest).contains("'bad;name' is not a valid schema name"));

    let guest = Guest::new("badin", &mariadb_image()).await;
    let mut request = guest.request(Some(&disk.device));
    request.ds_version = Some("no-such-tag".into());
    guest.service.prepare(&context(), request).await;
    let message = last_exc(&guest);
    assert!(message.contains("no-such-tag"), "{message}");

    assert_eq!(disk.filesystem(), None, "the disk is still blank");

    // A configuration the server refuses: it exits, the restart policy restarts it, and
    // prepare fails at once instead of waiting for state_change_wait_time.
    let guest = Guest::new("badcnf", &mariadb_image()).await;
    let mut request = guest.request(None);
    request.config_contents = Some("[mysqld]\nno_such_option_netiso = 1\n".into());
    let started = Instant::now();
    guest.service.prepare(&context(), request).await;
    let message = last_exc(&guest);
    assert!(
        message.contains("stopped while starting") && message.contains(guest.container.name()),
        "{message}"
    );
    eprintln!(
        "refused configuration reported after {:?}: {message}",
        started.elapsed()
    );

    // A blank device that cannot be written: mkfs fails, nothing is mounted or created.
    let read_only = LoopDisk::create(64, true);
    let guest = Guest::new("badin", &mariadb_image()).await;
    read_only.will_mount_on(&guest.layout().mount_point);
    guest
        .service
        .prepare(&context(), guest.request(Some(&read_only.device)))
        .await;
    let message = last_exc(&guest);
    assert!(
        message.contains("Could not format")
            && message.contains(&*read_only.device.to_string_lossy()),
        "{message}"
    );
    assert_eq!(read_only.filesystem(), None);
    assert!(!is_mounted(&guest.layout().mount_point));
    let docker = connect_docker().await;
    assert!(
        docker
            .inspect(guest.container.name())
            .await
            .expect("inspect")
            .is_none(),
        "no container after a refused volume"
    );
    assert!(!message.contains(PASSWORD));
}

#[tokio::test]
async fn a_blank_disk_is_formatted_once_and_a_foreign_filesystem_is_left_alone() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = VolumeSettings::default();
    let fstab = dir.path().join("fstab");
    let disk = LoopDisk::create(64, false);
    let mount_point = dir.path().join("mnt");
    disk.will_mount_on(&mount_point);
    assert_eq!(
        volume::prepare(&disk.device, &mount_point, &settings, &fstab).await,
        Ok(VolumeOutcome::FormattedAndMounted)
    );
    std::fs::write(mount_point.join("marker"), b"data").expect("write on the volume");
    let recorded = std::fs::read_to_string(&fstab).expect("fstab written");
    assert_eq!(
        recorded,
        format!(
            "{}\t{}\text4\tdefaults,noatime\t0\t0\n",
            disk.device.display(),
            mount_point.display()
        )
    );
    assert_eq!(
        volume::prepare(&disk.device, &mount_point, &settings, &fstab).await,
        Ok(VolumeOutcome::AlreadyMounted)
    );
    run_command("umount", &[&mount_point.to_string_lossy()]).expect("umount");
    assert_eq!(
        volume::prepare(&disk.device, &mount_point, &settings, &fstab).await,
        Ok(VolumeOutcome::Mounted),
        "an ext4 volume is mounted, not formatted again"
    );
    assert_eq!(
        std::fs::read(mount_point.join("marker")).expect("kept"),
        b"data"
    );
    let elsewhere = dir.path().join("other");
    let error = volume::prepare(&disk.device, &elsewhere, &settings, &fstab)
        .await
        .expect_err("mounted elsewhere");
    assert!(error.to_string().contains("is mounted on"), "{error}");
    run_command("umount", &[&mount_point.to_string_lossy()]).expect("umount");

    let swap = LoopDisk::create(64, false);
    run_command("mkswap", &[&swap.device.to_string_lossy()]).expect("mkswap");
    let error = volume::prepare(&swap.device, &dir.path().join("swap"), &settings, &fstab)
        .await
        .expect_err("swap");
    assert!(error.to_string().contains("`swap`"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&fstab).expect("fstab"),
        recorded,
        "refused volumes are not recorded"
    );
    assert_eq!(swap.filesystem().as_deref(), Some("swap"), "left as it was");
}
