//! `ControlPlaneConfig` from `trove.conf`-style files, including the seed's colon form.

use std::path::{Path, PathBuf};

use netiso_config::{ConfigError, ConfigSources, ControlPlaneConfig, OsloConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn from_text(text: &str) -> Result<ControlPlaneConfig, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trove.conf");
    std::fs::write(&path, text).expect("write");
    let oslo = OsloConfig::load_with_env(
        &ConfigSources {
            config_files: vec![path],
            config_dirs: Vec::new(),
        },
        Vec::new(),
    )?;
    ControlPlaneConfig::from_oslo(&oslo)
}

#[test]
fn seed_configuration_with_colon_separator() {
    let oslo = OsloConfig::load_with_env(
        &ConfigSources {
            config_files: vec![fixture("seed_trove.conf")],
            config_dirs: Vec::new(),
        },
        Vec::new(),
    )
    .expect("valid");
    let control = ControlPlaneConfig::from_oslo(&oslo).expect("valid");
    assert!(control.network_isolation);
    assert_eq!(
        control.management_networks,
        ["2d4c6b1e-9f3a-4c8e-b7d5-1a2b3c4d5e6f"]
    );
    assert_eq!(
        control.management_network(),
        Some("2d4c6b1e-9f3a-4c8e-b7d5-1a2b3c4d5e6f")
    );
    assert_eq!(control.management_networks_warning(), None);
}

#[test]
fn trove_defaults() {
    let control = from_text("[DEFAULT]\n").expect("valid");
    assert_eq!(control, ControlPlaneConfig::default());
    assert!(control.network_isolation, "default True since Trove 22.0.0");
    assert_eq!(
        control.guest_info_path(),
        Path::new("/etc/trove/conf.d/guest_info.conf")
    );
    assert_eq!(control.management_network(), None);
}

#[test]
fn isolation_can_be_disabled_in_any_boolean_spelling() {
    for word in ["False", "false", "no", "OFF", "0"] {
        let control = from_text(&format!("[network]\nnetwork_isolation: {word}\n")).expect("valid");
        assert!(!control.network_isolation, "{word}");
    }
    let error = from_text("[network]\nnetwork_isolation = sure\n").expect_err("not a boolean");
    assert!(
        error
            .to_string()
            .contains("trove.conf:2: [network] network_isolation: `sure`"),
        "{error}"
    );
}

#[test]
fn several_management_networks_use_the_last_and_warn() {
    let control = from_text("[DEFAULT]\nmanagement_networks = net-a, net-b\n").expect("valid");
    assert_eq!(control.management_network(), Some("net-b"));
    let warning = control.management_networks_warning().expect("warns");
    assert!(warning.contains("uses only the last, net-b"), "{warning}");
}

#[test]
fn deprecated_default_neutron_networks_is_honoured() {
    let control = from_text("[DEFAULT]\ndefault_neutron_networks = legacy-net\n").expect("valid");
    assert_eq!(control.management_networks, ["legacy-net"]);
    // Within one file the current name wins over the deprecated one.
    let control =
        from_text("[DEFAULT]\nmanagement_networks = new\ndefault_neutron_networks = old\n")
            .expect("valid");
    assert_eq!(control.management_networks, ["new"]);
}

#[test]
fn lists_and_docker_options() {
    let control = from_text(
        "[DEFAULT]\nmanagement_security_groups = sg1,sg2\ndocker_bridge_network_ip = 172.30.0.1/16\n\
         docker_insecure_registries = 192.168.10.5:4000, reg.example:5000\n\
         reserved_network_cidrs = 10.250.0.0/16,fd00:250::/64\n\
         injected_config_location = /etc/trove/conf.d/\nguest_info = /etc/guest_info\ncontroller_address = 192.168.10.5\n",
    )
    .expect("valid");
    assert_eq!(control.management_security_groups, ["sg1", "sg2"]);
    assert_eq!(
        control.docker_bridge_network_ip.as_deref(),
        Some("172.30.0.1/16")
    );
    assert_eq!(
        control.docker_insecure_registries,
        ["192.168.10.5:4000", "reg.example:5000"]
    );
    let reserved: Vec<String> = control
        .reserved_network_cidrs
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(reserved, ["10.250.0.0/16", "fd00:250::/64"]);
    assert_eq!(control.guest_info_path(), Path::new("/etc/guest_info"));
    assert_eq!(control.controller_address.as_deref(), Some("192.168.10.5"));

    let error = from_text("[DEFAULT]\nreserved_network_cidrs = 10.0.0.0/8, nonsense\n")
        .expect_err("bad CIDR");
    assert!(
        error
            .to_string()
            .contains("[DEFAULT] reserved_network_cidrs: `nonsense` is not a CIDR"),
        "{error}"
    );
    let error = from_text("[DEFAULT]\ndocker_bridge_network_ip = bridge\n").expect_err("bad bip");
    assert!(
        error
            .to_string()
            .contains("[DEFAULT] docker_bridge_network_ip"),
        "{error}"
    );
}
