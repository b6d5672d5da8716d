//! `contrib/cloud-init/tenant-nic-from-user-data`, the first boot's reader of Trove's
//! `eth1.json` out of cloud-init's cached datasource (`obj.pkl`), run by
//! `trove-netiso-first-boot.service` before the network comes up. It must find the file in
//! the user data as cloud-init's `write_files` would write it (plain `#cloud-config` or a MIME
//! part, base64 or gzip, the last entry winning), write it private to root, and write nothing
//! for another instance's cache, bridged user data, or an entry it cannot read.
//!
//! The cache is made by pickling a datasource of a stand-in `cloudinit` package shaped like
//! cloud-init 22.4's (its pickle-versioning mixin, nested objects, enum keys), which the script
//! does not see: it must read the cache without importing cloud-init. Needs python3 with
//! PyYAML, as a guest has (cloud-init depends on it).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/cloud-init/tenant-nic-from-user-data"
);

/// The tenant NIC description Trove injects.
const ETH1: &str = r#"{"mac_address": "fa:16:3e:7c:11:22"}"#;
/// The instance the caches belong to.
const INSTANCE: &str = "iid-7f3a";

/// A stand-in `cloudinit` package: just enough of cloud-init 22.4's classes to pickle a
/// datasource the way cloud-init's local stage does.
const STAND_IN_PACKAGE: &[(&str, &str)] = &[
    ("cloudinit/__init__.py", ""),
    (
        "cloudinit/persistence.py",
        "class CloudInitPickleMixin:\n\
         \x20   _ci_pkl_version = 0\n\
         \x20   def __getstate__(self):\n\
         \x20       state = self.__dict__.copy()\n\
         \x20       state['_ci_pkl_version'] = type(self)._ci_pkl_version\n\
         \x20       return state\n",
    ),
    (
        "cloudinit/event.py",
        "import enum\n\
         class EventScope(enum.Enum):\n\
         \x20   NETWORK = 'network'\n\
         class EventType(enum.Enum):\n\
         \x20   BOOT = 'boot'\n\
         \x20   BOOT_NEW_INSTANCE = 'boot-new-instance'\n",
    ),
    (
        "cloudinit/helpers.py",
        "from cloudinit.persistence import CloudInitPickleMixin\n\
         class Paths(CloudInitPickleMixin):\n\
         \x20   def __init__(self):\n\
         \x20       self.cloud_dir = '/var/lib/cloud'\n\
         \x20       self.run_dir = '/run/cloud-init'\n",
    ),
    ("cloudinit/sources/__init__.py", ""),
    (
        "cloudinit/sources/DataSourceNoCloud.py",
        "import re\n\
         from cloudinit.event import EventScope, EventType\n\
         from cloudinit.helpers import Paths\n\
         from cloudinit.persistence import CloudInitPickleMixin\n\
         class DataSourceNoCloud(CloudInitPickleMixin):\n\
         \x20   _ci_pkl_version = 1\n\
         \x20   def __init__(self, instance_id, userdata_raw):\n\
         \x20       self.metadata = {'instance-id': instance_id, 'local-hostname': 'db-1'}\n\
         \x20       self.userdata_raw = userdata_raw\n\
         \x20       self.paths = Paths()\n\
         \x20       self.default_update_events = {EventScope.NETWORK: {EventType.BOOT_NEW_INSTANCE}}\n\
         \x20       self.seed_dir_pattern = re.compile('^/var/lib/cloud/seed/.*$')\n\
         \x20       self.sys_cfg = {'datasource_list': ['NoCloud', 'None']}\n",
    ),
];

/// Pickles a stand-in datasource (`instance_id`, the user data read from `user_data`) to
/// `cache`.
const MAKE_CACHE: &str = "import pickle, sys\n\
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud\n\
instance_id, user_data, cache = sys.argv[1:4]\n\
with open(user_data, 'rb') as f:\n\
\x20   raw = f.read()\n\
with open(cache, 'wb') as f:\n\
\x20   pickle.dump(DataSourceNoCloud(instance_id, raw), f)\n";

/// A scratch guest root: the stand-in package, this boot's instance id and the target
/// folder; removed on drop.
struct Guest {
    dir: PathBuf,
}

impl Guest {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("first-boot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in STAND_IN_PACKAGE {
            let path = dir.join("stand-in").join(path);
            fs::create_dir_all(path.parent().expect("a folder")).expect("stand-in folder");
            fs::write(&path, text).expect("stand-in module");
        }
        fs::create_dir_all(dir.join("run")).expect("run folder");
        fs::write(dir.join("run/instance-id"), format!("{INSTANCE}\n")).expect("instance id");
        Self { dir }
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("obj.pkl")
    }

    fn target(&self) -> PathBuf {
        self.dir.join("etc/trove/eth1.json")
    }

    /// cloud-init's local stage caching a datasource of `instance_id` with `user_data`.
    fn cache_user_data(&self, instance_id: &str, user_data: &[u8]) {
        let raw = self.dir.join("user-data");
        fs::write(&raw, user_data).expect("user data");
        let made = Command::new("python3")
            .args(["-c", MAKE_CACHE, instance_id])
            .arg(&raw)
            .arg(self.cache())
            .env("PYTHONPATH", self.dir.join("stand-in"))
            .output()
            .expect("run python3");
        assert!(made.status.success(), "pickling the cache: {made:?}");
        fs::set_permissions(self.cache(), fs::Permissions::from_mode(0o400)).expect("chmod");
    }

    /// Runs the script as the unit does, without the stand-in package on its path.
    fn run(&self) -> Output {
        let output = Command::new("python3")
            .arg(SCRIPT)
            .arg("--cache")
            .arg(self.cache())
            .arg("--instance-id-file")
            .arg(self.dir.join("run/instance-id"))
            .arg("--target")
            .arg(self.target())
            .env_remove("PYTHONPATH")
            .output()
            .expect("run the script");
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        output
    }

    fn written(&self) -> Option<(String, u32)> {
        let text = fs::read_to_string(self.target()).ok()?;
        let mode = fs::metadata(self.target()).ok()?.permissions().mode() & 0o777;
        Some((text, mode))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `bytes` through a Python expression of `data` (the guest's own encoders, no crate).
fn through_python(expression: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let program = format!(
        "import base64, gzip, sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write({expression})"
    );
    let mut child = Command::new("python3")
        .args(["-c", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feed python3");
    let output = child.wait_with_output().expect("python3 output");
    assert!(output.status.success(), "{expression}: {output:?}");
    output.stdout
}

fn base64(bytes: &[u8]) -> String {
    String::from_utf8(through_python("base64.b64encode(data)", bytes)).expect("base64 is ascii")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    through_python("gzip.compress(data)", bytes)
}

/// Trove's user data: the datastore's cloud-config with the injected files appended as
/// `write_files` (b64, owner and path, no permissions).
fn trove_user_data(eth1_entries: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "#cloud-config\n\
         runcmd:\n\
         \x20 - echo datastore\n\
         write_files:\n\
         - encoding: b64\n\
         \x20 owner: trove:trove\n\
         \x20 path: /etc/trove/conf.d/guest_info.conf\n\
         \x20 content: W0RFRkFVTFRdCg==\n",
    );
    for (path, content) in eth1_entries {
        text.push_str(&format!(
            "- encoding: b64\n  owner: trove:trove\n  path: {path}\n  content: {}\n",
            base64(content.as_bytes())
        ));
    }
    text
}

fn target_path_in(guest: &Guest) -> String {
    guest.target().display().to_string()
}

#[test]
fn the_eth1_json_of_trove_user_data_is_written_private_to_root() {
    let guest = Guest::new("plain");
    let target = target_path_in(&guest);
    guest.cache_user_data(INSTANCE, trove_user_data(&[(&target, ETH1)]).as_bytes());
    let output = guest.run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(guest.written(), Some((ETH1.to_owned(), 0o600)));
    assert!(stdout(&output).contains("wrote"), "{}", stdout(&output));
}

#[test]
fn the_last_entry_for_the_file_wins_as_with_write_files() {
    let guest = Guest::new("last");
    let target = target_path_in(&guest);
    let later = r#"{"mac_address": "fa:16:3e:00:00:99"}"#;
    guest.cache_user_data(
        INSTANCE,
        trove_user_data(&[(&target, ETH1), (&target, later)]).as_bytes(),
    );
    assert!(guest.run().status.success());
    assert_eq!(guest.written(), Some((later.to_owned(), 0o600)));
}

#[test]
fn a_gzipped_base64_entry_in_a_mime_part_of_gzipped_user_data_is_found() {
    let guest = Guest::new("mime");
    let target = target_path_in(&guest);
    let part = format!(
        "#cloud-config\nwrite_files:\n- encoding: gz+b64\n  path: {target}\n  content: {}\n",
        base64(&gzip(ETH1.as_bytes()))
    );
    let message = format!(
        "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n\
         --XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n\
         --XX\nContent-Type: text/cloud-config\n\n{part}\n--XX--\n"
    );
    guest.cache_user_data(INSTANCE, &gzip(message.as_bytes()));
    let output = guest.run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(guest.written(), Some((ETH1.to_owned(), 0o600)));
}

#[test]
fn bridged_user_data_writes_nothing() {
    let guest = Guest::new("bridged");
    guest.cache_user_data(INSTANCE, trove_user_data(&[]).as_bytes());
    let output = guest.run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(guest.written(), None);
    assert!(stdout(&output).contains("bridged"), "{}", stdout(&output));
}

#[test]
fn another_instances_cache_writes_nothing() {
    let guest = Guest::new("other");
    let target = target_path_in(&guest);
    guest.cache_user_data("iid-old", trove_user_data(&[(&target, ETH1)]).as_bytes());
    let output = guest.run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(guest.written(), None);
    assert!(
        stdout(&output).contains("not this boot's instance"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn without_a_cache_nothing_is_written_and_the_boot_goes_on() {
    let guest = Guest::new("nocache");
    let output = guest.run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(guest.written(), None);
}

#[test]
fn a_file_already_there_is_left_alone() {
    let guest = Guest::new("there");
    let target = target_path_in(&guest);
    guest.cache_user_data(
        INSTANCE,
        trove_user_data(&[(&target, r#"{"mac_address": "fa:16:3e:00:00:01"}"#)]).as_bytes(),
    );
    fs::create_dir_all(guest.target().parent().expect("folder")).expect("folder");
    fs::write(guest.target(), ETH1).expect("existing file");
    assert!(guest.run().status.success());
    assert_eq!(fs::read_to_string(guest.target()).expect("read"), ETH1);
}

#[test]
fn an_unreadable_entry_fails_naming_its_document_and_writes_nothing() {
    for (name, content) in [
        ("notjson", "mac=fa:16:3e:7c:11:22"),
        ("nomac", r#"{"network": "tenant"}"#),
    ] {
        let guest = Guest::new(name);
        let target = target_path_in(&guest);
        guest.cache_user_data(INSTANCE, trove_user_data(&[(&target, content)]).as_bytes());
        let output = guest.run();
        assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
        assert!(
            stdout(&output).contains("document 1") && stdout(&output).contains("nothing written"),
            "{name}: {}",
            stdout(&output)
        );
        assert_eq!(guest.written(), None, "{name}");
        let leftovers: Vec<_> = fs::read_dir(guest.target().parent().expect("folder"))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

/// The script is what the unit runs: executable, python3 by its own line.
#[test]
fn the_script_is_executable() {
    let mode = fs::metadata(Path::new(SCRIPT))
        .expect("the script")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "mode {mode:o}");
    let text = fs::read_to_string(SCRIPT).expect("read");
    assert!(text.starts_with("#!/usr/bin/python3\n"));
}
