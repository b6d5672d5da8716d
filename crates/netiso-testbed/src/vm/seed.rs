//! The NoCloud seed the harness gives the VM, as Nova and Trove's taskmanager would: user
//! data whose `write_files` carries the injected files exactly as the taskmanager writes them
//! (`encoding: b64`, `owner`, `path`, `content`, no permissions), meta data naming the
//! instance, and a network configuration bringing both NICs up by DHCP, as Nova's metadata
//! does for Neutron subnets with DHCP enabled.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use netiso_netlink::MacAddress;
use serde_json::{Value, json};

/// The owner Trove writes on injected files (`injected_config_owner` and
/// `injected_config_group`; the image has no `ubuntu` user, so the operator sets root).
pub const INJECTED_OWNER: &str = "root:root";

/// One file of the taskmanager's injected-file map.
#[derive(Debug, Clone)]
pub struct InjectedFile {
    /// The guest path.
    pub path: String,
    /// The content.
    pub content: String,
}

/// `#cloud-config` with the `write_files` list. JSON is YAML, so the document is rendered
/// with serde_json and read by cloud-init's YAML loader as it is.
pub fn user_data(files: &[InjectedFile]) -> String {
    let write_files: Vec<Value> = files
        .iter()
        .map(|file| {
            json!({
                "encoding": "b64",
                "owner": INJECTED_OWNER,
                "path": file.path,
                "content": base64::engine::general_purpose::STANDARD.encode(&file.content),
            })
        })
        .collect();
    format!("#cloud-config\n{}\n", json!({ "write_files": write_files }))
}

/// Both NICs by DHCP, named as the guest's udev names them (`ens3`, `ens4`: the PCI slots
/// QEMU is given), found by MAC.
pub fn network_config(nics: &[(&str, MacAddress)]) -> String {
    let config: Vec<Value> = nics
        .iter()
        .map(|(name, mac)| {
            json!({
                "type": "physical",
                "name": name,
                "mac_address": mac.to_string(),
                "subnets": [{"type": "dhcp4"}],
            })
        })
        .collect();
    format!("{}\n", json!({"version": 1, "config": config}))
}

/// Writes the three files and packs them into an ISO 9660 volume labelled `cidata` (what
/// NoCloud looks for); returns the image's path.
pub fn write_seed(
    dir: &Path,
    instance_id: &str,
    user_data: &str,
    network_config: &str,
) -> Result<PathBuf> {
    let files = dir.join("seed");
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    let meta_data = format!("instance-id: {instance_id}\nlocal-hostname: trove-{instance_id}\n");
    for (name, content) in [
        ("meta-data", meta_data.as_str()),
        ("user-data", user_data),
        ("network-config", network_config),
    ] {
        let path = files.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        set_private(&path)?;
    }
    let image = dir.join("seed.iso");
    let output = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(&image)
        .arg(files.join("meta-data"))
        .arg(files.join("user-data"))
        .arg(files.join("network-config"))
        .output()
        .context("running genisoimage (Debian's genisoimage: run `cargo xtask provision`)")?;
    if !output.status.success() {
        bail!(
            "genisoimage: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    set_private(&image)?;
    // The user data holds the instance key: only the ISO is needed from here on.
    std::fs::remove_dir_all(&files).with_context(|| format!("removing {}", files.display()))?;
    Ok(image)
}

fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_a_cloud_config_with_base64_files() {
        let text = user_data(&[InjectedFile {
            path: "/etc/trove/eth1.json".into(),
            content: "{\"mac_address\": \"fa:16:3e:00:00:01\"}".into(),
        }]);
        let (header, body) = text.split_once('\n').expect("two parts");
        assert_eq!(header, "#cloud-config");
        let parsed: Value = serde_json::from_str(body).expect("JSON body");
        let file = &parsed["write_files"][0];
        assert_eq!(file["path"], "/etc/trove/eth1.json");
        assert_eq!(file["encoding"], "b64");
        assert_eq!(file["owner"], INJECTED_OWNER);
        let content = base64::engine::general_purpose::STANDARD
            .decode(file["content"].as_str().expect("content"))
            .expect("base64");
        assert_eq!(content, b"{\"mac_address\": \"fa:16:3e:00:00:01\"}");
    }

    #[test]
    fn each_nic_is_found_by_mac_and_configured_by_dhcp() {
        let mac = MacAddress::new([0xfa, 0x16, 0x3e, 1, 2, 3]);
        let parsed: Value = serde_json::from_str(&network_config(&[("ens4", mac)])).expect("JSON");
        assert_eq!(parsed["version"], 1);
        assert_eq!(parsed["config"][0]["name"], "ens4");
        assert_eq!(parsed["config"][0]["mac_address"], "fa:16:3e:01:02:03");
        assert_eq!(parsed["config"][0]["subnets"][0]["type"], "dhcp4");
    }
}
