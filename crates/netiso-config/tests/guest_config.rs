//! `GuestConfig` loaded from fixtures equal to what Trove writes to `/etc/trove/conf.d`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netiso_config::error::OptionLocation;
use netiso_config::guest::IsolationSetting;
use netiso_config::ini::IniSyntaxErrorKind;
use netiso_config::value::ValueError;
use netiso_config::{
    ConfigError, ConfigSources, ContainerRuntime, GuestConfig, IsolationMode, Origin, OsloConfig,
    PublishedPort, TenantNic, VolumeSettings,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn files(names: &[&str]) -> ConfigSources {
    ConfigSources {
        config_files: names.iter().map(|n| fixture(n)).collect(),
        config_dirs: Vec::new(),
    }
}

fn load_without_env(sources: &ConfigSources) -> Result<GuestConfig, ConfigError> {
    GuestConfig::from_oslo(&OsloConfig::load_with_env(sources, Vec::new())?)
}

fn conf_d() -> ConfigSources {
    ConfigSources {
        config_files: Vec::new(),
        config_dirs: vec![fixture("conf.d")],
    }
}

#[test]
fn config_dir_reads_sorted_conf_files_and_later_files_override() {
    let sources = conf_d();
    let order: Vec<String> = sources
        .files_in_load_order()
        .expect("dir exists")
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        order,
        ["guest_info.conf", "trove-guestagent.conf", "zz-netiso.conf"]
    );

    let config = load_without_env(&sources).expect("fixtures are valid");
    assert_eq!(config.guest_id, "5f1a0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    // In guest_info.conf and trove-guestagent.conf: the later file wins, as in oslo.
    assert_eq!(config.datastore_version.as_deref(), Some("8.0.37"));
    // trove-guestagent.conf says 60, zz-netiso.conf (read last) says 10 with a colon.
    assert_eq!(config.report_interval, Duration::from_secs(10));
    // [MySQL] in zz-netiso.conf is [mysql]; ranges expand.
    let datastore = config.datastore.as_ref().expect("datastore_manager is set");
    assert_eq!(datastore.tcp_ports, [3306, 33060, 33061]);
    assert_eq!(
        datastore.docker_image,
        "192.168.10.5:4000/trove-datastores/mysql"
    );
    assert_eq!(datastore.mount_point, Path::new("/var/lib/mysql"));
    assert_eq!(datastore.device_path, Path::new("/dev/vdb"));
    assert_eq!(config.netiso.runtime, ContainerRuntime::Containerd);
    assert_eq!(
        config.netiso.tenant_nic_file,
        Path::new("/run/netiso-test/eth1.json")
    );
    assert_eq!(
        config.container_registry.as_deref(),
        Some("192.168.10.5:4000")
    );
}

#[test]
fn real_guest_info_conf_alone() {
    let config = load_without_env(&files(&["conf.d/guest_info.conf"])).expect("valid");
    assert_eq!(config.guest_id, "5f1a0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(config.datastore_manager.as_deref(), Some("mysql"));
    assert_eq!(config.datastore_version.as_deref(), Some("8.0.36"));
    assert_eq!(
        config.tenant_id.as_deref(),
        Some("9a8b7c6d5e4f40312a1b2c3d4e5f6a7b")
    );
    assert!(config.network_isolation);
    assert_eq!(
        config.instance_rpc_encr_key.as_ref().map(|k| k.expose()),
        Some("q7Zr2LmX9pKd4Tn8Vw1Bc6Hf3Js5Gy0A")
    );
    // Defaults of everything guest_info.conf does not carry.
    assert_eq!(config.transport_url.to_string(), "rabbit://");
    assert_eq!(config.control_exchange, "openstack");
    assert_eq!(config.conductor_queue, "trove-conductor");
    assert_eq!(config.report_interval, Duration::from_secs(30));
    assert_eq!(config.state_change_wait_time, Duration::from_secs(180));
    let datastore = config.datastore.as_ref().expect("mysql");
    assert_eq!(
        (
            datastore.docker_image.as_str(),
            datastore.tcp_ports.as_slice()
        ),
        ("mysql", &[3306][..])
    );
    assert_eq!(config.netiso.runtime, ContainerRuntime::Docker);
    assert_eq!(
        config.netiso.tenant_nic_file,
        Path::new("/etc/trove/eth1.json")
    );
    assert_eq!(
        config.netiso.docker_socket,
        Path::new("/var/run/docker.sock")
    );
    assert_eq!(config.netiso.database_container, "database");
    assert_eq!(config.netiso.docker_exec_root, Path::new("/var/run/docker"));
    assert_eq!(config.netiso.insecure_registries, None);
    assert_eq!(
        config.netiso.docker_daemon_config,
        Path::new("/etc/docker/daemon.json")
    );
    assert!(!config.rabbit.amqp_durable_queues);
    assert_eq!(config.rabbit.rabbit_transient_queues_ttl, 1800);
    assert!(config.rabbit.direct_mandatory_flag);
    assert_eq!(
        config.rabbit.heartbeat_timeout_threshold, 60,
        "oslo's default"
    );
    // Trove's MySQL layout and volume defaults.
    assert_eq!(
        (
            datastore.database_service_uid,
            datastore.database_service_gid
        ),
        (1001, 1001)
    );
    assert_eq!(config.netiso.mysql_config_dir, Path::new("/etc/mysql"));
    assert_eq!(config.netiso.mysql_socket_dir, Path::new("/var/lib/mysqld"));
    assert_eq!(config.netiso.fstab_file, Path::new("/etc/fstab"));
    assert_eq!(
        config.volume,
        VolumeSettings {
            fstype: "ext4".into(),
            format_options: vec!["-m".into(), "5".into()],
            format_timeout: Duration::from_secs(120),
            mount_options: "defaults,noatime".into(),
        }
    );
}

#[test]
fn database_service_ids_and_volume_options_as_trove_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("g.conf");
    let load = |text: &str| {
        std::fs::write(&path, text).expect("write");
        load_without_env(&ConfigSources {
            config_files: vec![path.clone()],
            config_dirs: Vec::new(),
        })
    };
    let config = load(
        "[DEFAULT]\nguest_id = g\ndatastore_manager = mariadb\ndatabase_service_uid = 2000\n\
         volume_fstype = xfs\nformat_options = -f  -K\nvolume_format_timeout = 30\n\
         mount_options = noatime\n[netiso]\nmysql_config_dir = /tmp/m\n",
    )
    .expect("valid");
    let datastore = config.datastore.as_ref().expect("mariadb");
    // The gid follows the uid when only the uid is set.
    assert_eq!(
        (
            datastore.database_service_uid,
            datastore.database_service_gid
        ),
        (2000, 2000)
    );
    assert_eq!(config.volume.fstype, "xfs");
    assert_eq!(config.volume.format_options, ["-f", "-K"]);
    assert_eq!(config.volume.format_timeout, Duration::from_secs(30));
    assert_eq!(config.volume.mount_options, "noatime");
    assert_eq!(config.netiso.mysql_config_dir, Path::new("/tmp/m"));

    let config = load(
        "[DEFAULT]\nguest_id = g\ndatastore_manager = mysql\ndatabase_service_uid = 2000\n\
         [mysql]\ndatabase_service_uid = 3000\ndatabase_service_gid = 3001\n",
    )
    .expect("valid");
    let datastore = config.datastore.as_ref().expect("mysql");
    assert_eq!(
        (
            datastore.database_service_uid,
            datastore.database_service_gid
        ),
        (3000, 3001)
    );

    let error = load("[DEFAULT]\nguest_id = g\nvolume_fstype = btrfs\n").expect_err("choice");
    assert!(error.to_string().contains("ext3, ext4, xfs"), "{error}");
}

#[test]
fn network_isolation_prefers_default_section_then_network_section_then_true() {
    // conf.d: [DEFAULT] True in guest_info.conf beats [network] false in trove-guestagent.conf.
    let config = load_without_env(&conf_d()).expect("valid");
    assert!(config.network_isolation);
    assert_eq!(
        config.network_isolation_setting,
        IsolationSetting::GuestInfo(Origin::File {
            path: fixture("conf.d/guest_info.conf"),
            line: 9
        })
    );

    let only_network = OsloConfig::load_with_env(
        &files(&["conf.d/trove-guestagent.conf"]),
        [("NETISO_DEFAULT__GUEST_ID".to_owned(), "g".to_owned())],
    )
    .expect("valid");
    let config = GuestConfig::from_oslo(&only_network).expect("valid");
    assert!(!config.network_isolation);
    assert!(matches!(
        config.network_isolation_setting,
        IsolationSetting::NetworkSection(_)
    ));

    let neither = OsloConfig::load_with_env(
        &ConfigSources::default(),
        [("NETISO_DEFAULT__GUEST_ID".to_owned(), "g".to_owned())],
    )
    .expect("valid");
    let config = GuestConfig::from_oslo(&neither).expect("valid");
    assert!(config.network_isolation);
    assert_eq!(config.network_isolation_setting, IsolationSetting::Default);
}

#[test]
fn missing_guest_id_names_the_option() {
    let error = load_without_env(&files(&["no_guest_id.conf"])).expect_err("guest_id is required");
    assert!(
        matches!(&error, ConfigError::MissingOption { section, option, .. } if section == "DEFAULT" && option == "guest_id"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("[DEFAULT] guest_id"), "{message}");
}

#[test]
fn malformed_file_names_file_and_line() {
    let error = load_without_env(&ConfigSources {
        config_files: Vec::new(),
        config_dirs: vec![fixture("malformed")],
    })
    .expect_err("line 4 has no separator");
    let ConfigError::Syntax(syntax) = &error else {
        panic!("expected a syntax error, got {error:?}");
    };
    assert_eq!(syntax.path, fixture("malformed/guest.conf"));
    assert_eq!(syntax.line, 4);
    assert_eq!(syntax.kind, IniSyntaxErrorKind::InvalidAssignment);
    let message = error.to_string();
    assert!(message.contains("malformed/guest.conf:4:"), "{message}");
}

#[test]
fn type_error_names_file_line_section_and_option() {
    let error = load_without_env(&files(&["bad_bool.conf"])).expect_err("maybe is not a boolean");
    let ConfigError::InvalidValue { location, reason } = &error else {
        panic!("expected an invalid value, got {error:?}");
    };
    assert_eq!(
        **location,
        OptionLocation {
            origin: Origin::File {
                path: fixture("bad_bool.conf"),
                line: 5
            },
            section: "oslo_messaging_rabbit".to_owned(),
            option: "amqp_durable_queues".to_owned(),
        }
    );
    assert_eq!(*reason, ValueError::Bool("maybe".to_owned()));
    let message = error.to_string();
    assert!(
        message.contains("bad_bool.conf:5: [oslo_messaging_rabbit] amqp_durable_queues:"),
        "{message}"
    );
}

#[test]
fn missing_config_file_or_dir_is_an_error() {
    let error = load_without_env(&files(&["does-not-exist.conf"])).expect_err("missing file");
    assert!(
        matches!(error, ConfigError::ConfigFileNotFound { .. }),
        "{error:?}"
    );
    let error = load_without_env(&ConfigSources {
        config_files: Vec::new(),
        config_dirs: vec![fixture("no-such-dir")],
    })
    .expect_err("missing dir");
    assert!(
        matches!(error, ConfigError::ConfigDirNotFound { .. }),
        "{error:?}"
    );
}

#[test]
fn transport_url_is_parsed_and_its_password_never_shown() {
    let config = load_without_env(&conf_d()).expect("valid");
    let url = &config.transport_url;
    assert_eq!(url.scheme, "rabbit");
    assert_eq!(url.hosts.len(), 1);
    assert_eq!(url.hosts[0].hostname, "192.168.10.5");
    assert_eq!(url.hosts[0].port, Some(5672));
    assert_eq!(url.hosts[0].username.as_deref(), Some("stackrabbit"));
    assert_eq!(
        url.hosts[0].password.as_ref().map(|p| p.expose()),
        Some("Secr3t/pass")
    );
    assert_eq!(url.virtual_host.as_deref(), Some(""));
    assert_eq!(config.control_exchange, "trove");

    let shown = format!("{config:?} {url}");
    for secret in ["Secr3t", "q7Zr2LmX9pKd4Tn8Vw1Bc6Hf3Js5Gy0A"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    let raw = OsloConfig::load_with_env(&conf_d(), Vec::new()).expect("valid");
    assert!(
        !format!("{raw:?}").contains("Secr3t"),
        "raw values leak secrets"
    );
}

#[test]
fn bad_transport_url_names_origin_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.conf");
    std::fs::write(
        &path,
        "[DEFAULT]\nguest_id = g\ntransport_url = rabbit://u:hunter2@h:notaport/\n",
    )
    .expect("write");
    let error = load_without_env(&ConfigSources {
        config_files: vec![path.clone()],
        config_dirs: Vec::new(),
    })
    .expect_err("bad port");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{}:3: [DEFAULT] transport_url:", path.display())),
        "{message}"
    );
    assert!(
        message.contains("notaport") && !message.contains("hunter2"),
        "{message}"
    );
}

#[test]
fn rabbit_options_from_section_and_transport_url_query() {
    let config = load_without_env(&conf_d()).expect("valid");
    assert!(config.rabbit.amqp_durable_queues);
    assert!(config.rabbit.durable_topic_queues());
    assert_eq!(config.rabbit.rabbit_transient_queues_ttl, 600);

    let oslo = OsloConfig::load_with_env(&conf_d(), [(
        "NETISO_DEFAULT__TRANSPORT_URL".to_owned(),
        "rabbit://u:p@h:5672/?amqp_durable_queues=false&rabbit_quorum_queue=true&rabbit_quorum_delivery_limit=5&heartbeat_timeout_threshold=7".to_owned(),
    )])
    .expect("valid");
    let config = GuestConfig::from_oslo(&oslo).expect("valid");
    assert!(
        !config.rabbit.amqp_durable_queues,
        "query overrides the section"
    );
    assert!(config.rabbit.rabbit_quorum_queue);
    assert!(
        config.rabbit.durable_topic_queues(),
        "quorum queues are durable"
    );
    assert_eq!(config.rabbit.rabbit_quorum_delivery_limit, 5);
    assert_eq!(config.rabbit.heartbeat_timeout_threshold, 7);

    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [(
            "NETISO_DEFAULT__TRANSPORT_URL".to_owned(),
            "rabbit://h/?rabbit_ha_queues=yes&rabbit_quorum_queue=on".to_owned(),
        )],
    )
    .expect("valid");
    let error = GuestConfig::from_oslo(&oslo).expect_err("ha and quorum conflict");
    assert!(matches!(error, ConfigError::Conflict(_)), "{error:?}");

    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [(
            "NETISO_DEFAULT__TRANSPORT_URL".to_owned(),
            "rabbit://h/?amqp_auto_delete=sometimes".to_owned(),
        )],
    )
    .expect("valid");
    let error = GuestConfig::from_oslo(&oslo).expect_err("bad query bool");
    assert!(
        error
            .to_string()
            .starts_with("transport_url query: [oslo_messaging_rabbit] amqp_auto_delete:"),
        "{error}"
    );
}

#[test]
fn environment_overrides_every_file() {
    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [
            ("NETISO_DEFAULT__GUEST_ID".to_owned(), "from-env".to_owned()),
            ("NETISO_default__REPORT_INTERVAL".to_owned(), "5".to_owned()),
            ("NETISO_NETISO__RUNTIME".to_owned(), "docker".to_owned()),
            (
                "NETISO_IGNORED".to_owned(),
                "no section separator".to_owned(),
            ),
            (
                "OTHER_DEFAULT__GUEST_ID".to_owned(),
                "other prefix".to_owned(),
            ),
        ],
    )
    .expect("valid");
    let config = GuestConfig::from_oslo(&oslo).expect("valid");
    assert_eq!(config.guest_id, "from-env");
    assert_eq!(config.report_interval, Duration::from_secs(5));
    assert_eq!(config.netiso.runtime, ContainerRuntime::Docker);

    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [(
            "NETISO_DEFAULT__STATE_CHANGE_WAIT_TIME".to_owned(),
            "soon".to_owned(),
        )],
    )
    .expect("valid");
    let error = GuestConfig::from_oslo(&oslo).expect_err("not an integer");
    assert!(
        error
            .to_string()
            .starts_with("environment variable NETISO_DEFAULT__STATE_CHANGE_WAIT_TIME: [DEFAULT] state_change_wait_time:"),
        "{error}"
    );
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure must return figment::Error"
)]
fn process_environment_is_read_through_figment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NETISO_DEFAULT__GUEST_ID", "jailed-guest");
        jail.set_env("NETISO_NETISO__TENANT_NIC_FILE", "/tmp/eth1.json");
        let config =
            GuestConfig::load(&files(&["conf.d/guest_info.conf"])).map_err(|e| e.to_string())?;
        assert_eq!(config.guest_id, "jailed-guest");
        assert_eq!(config.netiso.tenant_nic_file, Path::new("/tmp/eth1.json"));
        Ok(())
    });
}

#[test]
fn unknown_datastore_needs_its_image_and_takes_default_tcp_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("g.conf");
    std::fs::write(
        &path,
        "[DEFAULT]\nguest_id = g\ndatastore_manager = redis\ntcp_ports = 6379\n",
    )
    .expect("write");
    let sources = ConfigSources {
        config_files: vec![path.clone()],
        config_dirs: Vec::new(),
    };
    let error = load_without_env(&sources).expect_err("no image for redis");
    assert!(
        error.to_string().contains("[redis] docker_image"),
        "{error}"
    );

    std::fs::write(
        &path,
        "[DEFAULT]\nguest_id = g\ndatastore_manager = redis\ntcp_ports = 6379\n[redis]\ndocker_image = redis\nmount_point = /data\n",
    )
    .expect("write");
    let config = load_without_env(&sources).expect("valid");
    let datastore = config.datastore.expect("redis");
    assert_eq!(datastore.tcp_ports, [6379]);
    assert_eq!(datastore.mount_point, Path::new("/data"));
}

#[test]
fn builtin_datastore_defaults() {
    for (manager, image, ports, mount) in [
        ("mysql", "mysql", &[3306][..], "/var/lib/mysql"),
        (
            "mariadb",
            "mariadb",
            &[3306, 4444, 4567, 4568][..],
            "/var/lib/mysql",
        ),
        ("postgresql", "postgres", &[5432][..], "/var/lib/postgresql"),
    ] {
        let oslo = OsloConfig::load_with_env(
            &ConfigSources::default(),
            [
                ("NETISO_DEFAULT__GUEST_ID".to_owned(), "g".to_owned()),
                (
                    "NETISO_DEFAULT__DATASTORE_MANAGER".to_owned(),
                    manager.to_owned(),
                ),
                // [DEFAULT] tcp_ports must not replace a known datastore's own default.
                ("NETISO_DEFAULT__TCP_PORTS".to_owned(), "1".to_owned()),
            ],
        )
        .expect("valid");
        let datastore = GuestConfig::from_oslo(&oslo)
            .expect("valid")
            .datastore
            .expect("set");
        assert_eq!(datastore.docker_image, image);
        assert_eq!(datastore.tcp_ports, ports);
        assert_eq!(datastore.mount_point, Path::new(mount));
    }
}

#[test]
fn bad_tcp_ports_and_runtime_name_their_option() {
    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [("NETISO_MYSQL__TCP_PORTS".to_owned(), "3306,0-5".to_owned())],
    )
    .expect("valid");
    let error = GuestConfig::from_oslo(&oslo).expect_err("port 0");
    assert!(
        error.to_string().contains("[mysql] tcp_ports: `0-5`"),
        "{error}"
    );

    let oslo = OsloConfig::load_with_env(
        &conf_d(),
        [("NETISO_NETISO__RUNTIME".to_owned(), "podman".to_owned())],
    )
    .expect("valid");
    let error = GuestConfig::from_oslo(&oslo).expect_err("unknown runtime");
    assert!(
        error
            .to_string()
            .contains("[netiso] runtime: `podman` is not one of docker, containerd"),
        "{error}"
    );
}

#[test]
fn agent_options_of_the_netiso_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = dir.path().join("daemon.json");
    std::fs::write(&daemon, r#"{"insecure-registries": ["from-daemon:5000"]}"#).expect("write");
    let conf = dir.path().join("guest.conf");
    let load = |netiso: &str| {
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nguest_id = g1\n[netiso]\ndocker_daemon_config = {}\n{netiso}",
                daemon.display()
            ),
        )
        .expect("write conf");
        load_without_env(&ConfigSources {
            config_files: vec![conf.clone()],
            config_dirs: Vec::new(),
        })
    };

    // Unset: Docker's list, from the daemon.json Trove injects.
    let config = load("").expect("valid");
    assert_eq!(config.netiso.insecure_registries, None);
    assert_eq!(config.netiso.rpc_max_message_bytes, None);
    assert_eq!(
        config
            .netiso
            .containerd_insecure_registries()
            .expect("valid json"),
        ["from-daemon:5000"]
    );

    let config = load(
        "insecure_registries = a:5000, b.example\n\
         database_container = db1\n\
         docker_exec_root = /run/other-docker\n\
         rpc_max_message_bytes = 65536\n",
    )
    .expect("valid");
    assert_eq!(config.netiso.rpc_max_message_bytes, Some(65536));
    assert!(load("rpc_max_message_bytes = 10\n").is_err(), "below 1024");
    assert_eq!(
        config.netiso.containerd_insecure_registries().expect("set"),
        ["a:5000", "b.example"]
    );
    assert_eq!(config.netiso.database_container, "db1");
    assert_eq!(
        config.netiso.docker_exec_root,
        Path::new("/run/other-docker")
    );

    // Set but empty: no insecure registry, whatever daemon.json says.
    let config = load("insecure_registries =\n").expect("valid");
    assert_eq!(config.netiso.insecure_registries, Some(Vec::new()));
    assert!(
        config
            .netiso
            .containerd_insecure_registries()
            .expect("set")
            .is_empty()
    );

    // Bad values name file, line, section and option.
    let error = load("database_container = data base\n").expect_err("space");
    assert!(
        error.to_string().contains(&format!(
            "{}:5: [netiso] database_container: `data base` is not a container name",
            conf.display()
        )),
        "{error}"
    );
    let error = load("insecure_registries = http://reg:5000\n").expect_err("scheme");
    assert!(
        error
            .to_string()
            .contains("[netiso] insecure_registries: `http://reg:5000` is not a registry"),
        "{error}"
    );

    // A broken daemon.json is an error naming it, not an empty list.
    std::fs::write(&daemon, "{\"insecure-registries\": ").expect("write");
    let config = load("").expect("the file is read only when containerd needs it");
    let error = config
        .netiso
        .containerd_insecure_registries()
        .expect_err("truncated JSON");
    assert!(
        error.to_string().starts_with(&daemon.display().to_string()),
        "{error}"
    );
}

#[test]
fn isolation_mode_follows_the_tenant_nic_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nic = dir.path().join("eth1.json");
    let oslo = OsloConfig::load_with_env(
        &files(&["conf.d/guest_info.conf"]),
        [(
            "NETISO_NETISO__TENANT_NIC_FILE".to_owned(),
            nic.display().to_string(),
        )],
    )
    .expect("valid");
    let config = GuestConfig::from_oslo(&oslo).expect("valid");
    assert!(
        matches!(config.isolation_mode(), IsolationMode::Bridged { ref published_ports, .. } if published_ports == &[PublishedPort(3306)])
    );
    assert_eq!(config.tenant_nic().expect("absent is fine"), None);

    std::fs::copy(fixture("eth1/dual_stack_slaac.json"), &nic).expect("copy");
    assert_eq!(
        config.isolation_mode(),
        IsolationMode::Isolated {
            tenant_nic_file: nic.clone()
        }
    );
    let tenant = config.tenant_nic().expect("valid file").expect("present");
    assert_eq!(tenant.mac_address.to_string(), "fa:16:3e:12:34:56");
}

#[test]
fn a_tenant_nic_file_that_is_there_but_unusable_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nic = dir.path().join("eth1.json");
    let oslo = OsloConfig::load_with_env(
        &files(&["conf.d/guest_info.conf"]),
        [(
            "NETISO_NETISO__TENANT_NIC_FILE".to_owned(),
            nic.display().to_string(),
        )],
    )
    .expect("valid");
    let config = GuestConfig::from_oslo(&oslo).expect("valid");
    let isolated = IsolationMode::Isolated {
        tenant_nic_file: nic.clone(),
    };

    // A dangling symlink (`Path::exists` says false): there, but unreadable.
    std::os::unix::fs::symlink(dir.path().join("gone.json"), &nic).expect("symlink");
    assert_eq!(config.isolation_mode(), isolated, "never bridged");
    let error = config.tenant_nic().expect_err("unreadable");
    assert!(
        error.to_string().starts_with(&nic.display().to_string())
            && error.to_string().contains("cannot read"),
        "{error}"
    );
    assert_eq!(TenantNic::mac_of_refused_file(&nic), None);
    std::fs::remove_file(&nic).expect("remove");

    // A directory in its place.
    std::fs::create_dir(&nic).expect("mkdir");
    assert_eq!(config.isolation_mode(), isolated);
    assert!(config.tenant_nic().is_err());
    std::fs::remove_dir(&nic).expect("rmdir");

    // Torn JSON: the error names the line and column.
    std::fs::write(
        &nic,
        "{\"mac_address\": \"fa:16:3e:12:34:56\",\n \"ipv4_addr",
    )
    .expect("write");
    assert_eq!(config.isolation_mode(), isolated);
    let error = config.tenant_nic().expect_err("torn");
    assert!(
        error.to_string().contains("invalid JSON at line 2"),
        "{error}"
    );
    assert_eq!(
        TenantNic::mac_of_refused_file(&nic),
        None,
        "no MAC from torn JSON"
    );

    // Valid JSON with a bad field: the error names the key; the MAC is still known.
    std::fs::write(
        &nic,
        "{\"mac_address\": \"fa:16:3e:12:34:56\", \"ipv4_address\": \"10.0.0.15\", \"ipv4_cidr\": \"10.0.0.0/33\"}",
    )
    .expect("write");
    assert_eq!(config.isolation_mode(), isolated);
    let error = config.tenant_nic().expect_err("bad cidr");
    assert!(error.to_string().contains("`ipv4_cidr`"), "{error}");
    assert_eq!(
        TenantNic::mac_of_refused_file(&nic).map(|m| m.to_string()),
        Some("fa:16:3e:12:34:56".to_owned())
    );

    // Only a file that is certainly absent is Trove's single-NIC case.
    std::fs::remove_file(&nic).expect("remove");
    assert!(!config.isolation_mode().is_isolated());
    assert_eq!(config.tenant_nic().expect("absent"), None);
}

#[test]
fn multi_valued_options_and_deprecated_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("1.conf");
    let second = dir.path().join("2.conf");
    std::fs::write(
        &first,
        "[DEFAULT]\nserver = a\nserver = b\nnew_name = from-first\n",
    )
    .expect("write");
    std::fs::write(&second, "[DEFAULT]\nserver = c\nold_name = from-second\n").expect("write");
    let oslo = OsloConfig::load_with_env(
        &ConfigSources {
            config_files: vec![first, second],
            config_dirs: Vec::new(),
        },
        Vec::new(),
    )
    .expect("valid");
    let all: Vec<String> = oslo
        .get_all("DEFAULT", "server")
        .expect("no references")
        .into_iter()
        .map(|v| v.value)
        .collect();
    assert_eq!(all, ["a", "b", "c"]);
    assert_eq!(
        oslo.get("DEFAULT", "server").expect("ok").map(|v| v.value),
        Some("c".to_owned())
    );
    // oslo: the latest file that sets the option under any name wins.
    let names = [
        netiso_config::source::OptionName::new("DEFAULT", "new_name"),
        netiso_config::source::OptionName::new("DEFAULT", "old_name"),
    ];
    assert_eq!(
        oslo.lookup(&names).expect("ok").map(|v| v.value),
        Some("from-second".to_owned())
    );
}
