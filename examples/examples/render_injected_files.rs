//! Renders the files Trove injects into a new database guest, from the controller's
//! `trove.conf` (here the seed's example, with its `network_isolation: True` colon form)
//! and the facts of one instance: its user Neutron port and its `guest_info.conf` values.
//!
//! `cargo run -p netiso-examples --example render_injected_files [path/to/trove.conf]`

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

use netiso_config::ini::IniFile;
use netiso_config::render::{FixedIp, GuestInfo, InstanceFacts, UserPort, render_injected_files};
use netiso_config::tenant_nic::HostRoute;
use netiso_config::{ConfigSources, ControlPlaneConfig, OsloConfig, Secret, TenantNic};

/// The controller configuration of the seed's admin guide.
const SEED_TROVE_CONF: &str = "\
[DEFAULT]
management_networks = 2d4c6b1e-9f3a-4c8e-b7d5-1a2b3c4d5e6f
docker_insecure_registries = 192.168.10.5:4000

[network]
network_isolation: True
";

fn control_plane() -> Result<ControlPlaneConfig, Box<dyn Error>> {
    let oslo = match std::env::args_os().nth(1) {
        Some(path) => OsloConfig::load_with_env(
            &ConfigSources {
                config_files: vec![PathBuf::from(path)],
                config_dirs: Vec::new(),
            },
            Vec::new(),
        )?,
        None => {
            let mut oslo = OsloConfig::default();
            oslo.add_file(&IniFile::parse(
                Path::new("<seed trove.conf>"),
                SEED_TROVE_CONF,
            )?);
            oslo
        }
    };
    Ok(ControlPlaneConfig::from_oslo(&oslo)?)
}

fn instance() -> Result<InstanceFacts, Box<dyn Error>> {
    Ok(InstanceFacts {
        guest_info: GuestInfo {
            guest_id: "5f1a0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
            datastore_manager: "mysql".to_owned(),
            datastore_version: "8.0.36".to_owned(),
            tenant_id: "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b".to_owned(),
            manager_class: "trove.guestagent.datastore.mysql.manager.Manager".to_owned(),
            replication_strategy:
                "trove.guestagent.strategies.replication.mysql_gtid.MysqlGTIDReplication".to_owned(),
            ssl_mode: None,
            instance_rpc_encr_key: Some(Secret::new("q7Zr2LmX9pKd4Tn8Vw1Bc6Hf3Js5Gy0A")),
        },
        user_port: Some(UserPort {
            mac_address: "fa:16:3e:12:34:56".parse()?,
            fixed_ips: vec![
                FixedIp {
                    ip_address: "10.0.0.15".parse()?,
                    cidr: "10.0.0.0/24".parse()?,
                    gateway_ip: Some("10.0.0.1".parse()?),
                    host_routes: vec![HostRoute {
                        destination: "172.16.0.0/12".parse()?,
                        nexthop: "10.0.0.254".parse()?,
                    }],
                    ipv6_ra_mode: None,
                },
                FixedIp {
                    ip_address: "fd00::f816:3eff:fe12:3456".parse()?,
                    cidr: "fd00::/64".parse()?,
                    gateway_ip: Some("fd00::1".parse()?),
                    host_routes: Vec::new(),
                    ipv6_ra_mode: Some("slaac".to_owned()),
                },
            ],
        }),
        guest_agent_conf: None,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let control = control_plane()?;
    let files = render_injected_files(&control, &instance()?);
    let mut out = std::io::stdout().lock();
    for file in &files {
        writeln!(
            out,
            "==> {} ({} bytes)",
            file.path.display(),
            file.content.len()
        )?;
        writeln!(out, "{}", file.content.trim_end())?;
        if file.path == Path::new(netiso_config::tenant_nic::DEFAULT_TENANT_NIC_FILE) {
            // What the guest will make of it: the same parser the agent uses.
            let nic = TenantNic::parse(&file.path, &file.content)?;
            writeln!(
                out,
                "    (guest reads MAC {}, address {:?})",
                nic.mac_address,
                nic.primary_address()
            )?;
        }
    }
    Ok(())
}
