//! The OCI runtime spec (`config.json`) of a database container, built with `oci-spec` from
//! our [`ContainerSpec`] and the image's defaults. Pure, so every field runc sees is
//! unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, RootBuilder,
    Spec, UserBuilder,
};
use serde_json::Value;

use super::pull::{ImageMetadataError, json_document};
use crate::error::RuntimeError;
use crate::spec::ContainerSpec;

/// The type URL containerd expects on a runtime spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the image says about running it (the `config` object of its configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
}

impl ImageDefaults {
    /// Reads the run defaults from an image configuration (Docker or OCI).
    pub fn from_config(config: &[u8]) -> Result<Self, ImageMetadataError> {
        let document = json_document(config, "image config")?;
        let section = document.get("config");
        let strings = |key: &str| -> Vec<String> {
            section
                .and_then(|c| c.get(key))
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |key: &str| {
            section
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: text("WorkingDir"),
            user: text("User"),
        })
    }
}

/// Where the container lives on the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The network namespace to join (the tenant NIC is in it).
    pub netns_path: &'a Path,
    /// `linux.cgroupsPath`.
    pub cgroups_path: &'a str,
}

/// The runtime spec for `spec` over an image with `defaults`.
pub fn runtime_spec(
    spec: &ContainerSpec,
    defaults: &ImageDefaults,
    placement: &Placement<'_>,
) -> Result<Spec, RuntimeError> {
    let invalid = |problem: String| RuntimeError::InvalidSpec {
        container: spec.name.clone(),
        problem,
    };
    let args = match &spec.command {
        Some(command) => [defaults.entrypoint.clone(), command.clone()].concat(),
        None => [defaults.entrypoint.clone(), defaults.cmd.clone()].concat(),
    };
    if args.is_empty() {
        return Err(invalid(
            "neither the spec nor the image gives a command".to_owned(),
        ));
    }
    let (uid, gid) =
        parse_user(spec.user.as_deref().or(defaults.user.as_deref())).map_err(invalid)?;

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH["PATH=".len()..].to_owned());
    for entry in &defaults.env {
        if let Some((key, value)) = entry.split_once('=') {
            env.insert(key.to_owned(), value.to_owned());
        }
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(invalid(format!(
                "environment variable name `{key}` is empty or has `=`"
            )));
        }
        env.insert(key.clone(), value.expose().to_owned());
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut oci = Spec::default();
    oci.set_hostname(Some(spec.name.chars().take(63).collect()));
    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(false)
        .build()
        .map_err(|e| invalid(format!("root: {e}")))?;
    oci.set_root(Some(root));

    let mut process = oci.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_terminal(Some(false));
    process.set_cwd(PathBuf::from(
        defaults.working_dir.as_deref().unwrap_or("/"),
    ));
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .build()
        .map_err(|e| invalid(format!("user: {e}")))?;
    process.set_user(user);
    oci.set_process(Some(process));

    let mut mounts: Vec<Mount> = oci.mounts().clone().unwrap_or_default();
    for bind in &spec.binds {
        for path in [&bind.host_path, &bind.container_path] {
            if !path.starts_with('/') {
                return Err(invalid(format!("bind path `{path}` must be absolute")));
            }
        }
        let mode = if bind.read_only { "ro" } else { "rw" };
        let mount = MountBuilder::default()
            .destination(&bind.container_path)
            .typ("bind")
            .source(&bind.host_path)
            .options(vec![
                "rbind".to_owned(),
                "rprivate".to_owned(),
                mode.to_owned(),
            ])
            .build()
            .map_err(|e| invalid(format!("bind mount: {e}")))?;
        mounts.push(mount);
    }
    oci.set_mounts(Some(mounts));

    let mut linux = oci.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    for namespace in linux.namespaces().clone().unwrap_or_default() {
        match namespace.typ() {
            LinuxNamespaceType::Network => {
                let joined = LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(placement.netns_path)
                    .build()
                    .map_err(|e| invalid(format!("network namespace: {e}")))?;
                namespaces.push(joined);
            }
            LinuxNamespaceType::Ipc if spec.ipc_host => {}
            _ => namespaces.push(namespace),
        }
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(placement.cgroups_path)));
    oci.set_linux(Some(linux));
    Ok(oci)
}

/// `uid[:gid]`, numeric; none means root. Names would need the image's `/etc/passwd`.
fn parse_user(user: Option<&str>) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let number = |text: &str| {
        text.parse::<u32>().map_err(|_| {
            format!("user `{user}`: only numeric uid[:gid] is supported with containerd")
        })
    };
    let uid = number(uid)?;
    let gid = match gid {
        Some(gid) => number(gid)?,
        None => uid,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Bind, NetworkAttachment};
    use netiso_config::secret::Secret;

    fn container() -> ContainerSpec {
        ContainerSpec::new(
            "database",
            "127.0.0.1:5000/netiso/testdb:t1".parse().expect("image"),
            NetworkAttachment::Hostnic {
                network: "database-network".into(),
                ipv4: None,
                ipv6: None,
            },
        )
    }

    fn placement() -> Placement<'static> {
        Placement {
            netns_path: Path::new("/run/netns/netiso-x"),
            cgroups_path: "/trove-netiso/ns/database",
        }
    }

    fn defaults() -> ImageDefaults {
        ImageDefaults::from_config(
            br#"{"config":{"Entrypoint":["/bin/busybox"],"Cmd":["nc","-lk"],"Env":["PATH=/bin","A=1"],"WorkingDir":"/data","User":"999:999"}}"#,
        )
        .expect("config")
    }

    #[test]
    fn image_defaults_are_read() {
        let d = defaults();
        assert_eq!(d.entrypoint, ["/bin/busybox"]);
        assert_eq!(d.cmd, ["nc", "-lk"]);
        assert_eq!(d.working_dir.as_deref(), Some("/data"));
        assert_eq!(d.user.as_deref(), Some("999:999"));
        assert_eq!(
            ImageDefaults::from_config(b"{}").expect("empty"),
            ImageDefaults::default()
        );
        let err = ImageDefaults::from_config(b"{\"config\"").expect_err("not JSON");
        assert!(
            matches!(
                err,
                ImageMetadataError::NotJson {
                    document: "image config",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn spec_joins_the_prepared_namespace() {
        let mut c = container();
        c.env.insert("A".into(), Secret::new("2"));
        c.binds.push(Bind {
            host_path: "/var/lib/mysql".into(),
            container_path: "/data".into(),
            read_only: true,
        });
        let oci = runtime_spec(&c, &defaults(), &placement()).expect("spec");
        let json = serde_json::to_value(&oci).expect("json");
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/bin/busybox", "nc", "-lk"])
        );
        assert_eq!(json["process"]["user"]["uid"], 999);
        assert_eq!(json["process"]["cwd"], "/data");
        let env: Vec<&str> = json["process"]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            env.contains(&"A=2") && env.contains(&"PATH=/bin"),
            "{env:?}"
        );
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["linux"]["cgroupsPath"], "/trove-netiso/ns/database");
        let namespaces = json["linux"]["namespaces"].as_array().expect("namespaces");
        let network = namespaces
            .iter()
            .find(|n| n["type"] == "network")
            .expect("network namespace");
        assert_eq!(network["path"], "/run/netns/netiso-x");
        assert!(namespaces.iter().all(|n| n["type"] != "ipc"), "host IPC");
        let bind = json["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/data")
            .expect("bind");
        assert_eq!(
            bind["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
    }

    #[test]
    fn command_override_keeps_the_entrypoint() {
        let mut c = container();
        c.command = Some(vec!["sh".into()]);
        c.ipc_host = false;
        let json = serde_json::to_value(runtime_spec(&c, &defaults(), &placement()).expect("spec"))
            .expect("json");
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/bin/busybox", "sh"])
        );
        assert!(
            json["linux"]["namespaces"]
                .as_array()
                .expect("ns")
                .iter()
                .any(|n| n["type"] == "ipc")
        );
    }

    #[test]
    fn bad_input_is_named() {
        let mut c = container();
        c.user = Some("mysql".into());
        let err = runtime_spec(&c, &defaults(), &placement()).expect_err("named user");
        assert!(err.to_string().contains("numeric"), "{err}");
        let err = runtime_spec(&container(), &ImageDefaults::default(), &placement())
            .expect_err("no command");
        assert!(err.to_string().contains("command"), "{err}");
        assert_eq!(parse_user(Some("5")), Ok((5, 5)));
        assert_eq!(parse_user(None), Ok((0, 0)));
    }
}
