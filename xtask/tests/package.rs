//! `cargo xtask package` builds both Debian packages; what they hold, their control fields and
//! maintainer scripts, and their units (`systemd-analyze verify` in a root they are unpacked
//! into) are checked here. Offline: dpkg-deb and systemd-analyze of this Debian machine. The
//! packages are built by the test itself (a release build: minutes on a cold target/).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const AGENT: &str = "trove-guest-agent";
const PLUGIN: &str = "docker-hostnic";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (run `cargo xtask provision`)"))
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `cargo xtask package` once for every test; the `.deb` paths it printed, by package.
fn packages() -> &'static [(String, PathBuf)] {
    static BUILT: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let built = run(env!("CARGO_BIN_EXE_xtask"), &["package"]);
        assert!(
            built.status.success(),
            "`cargo xtask package` failed:\n{}\n{}",
            text(&built),
            String::from_utf8_lossy(&built.stderr)
        );
        let debs: Vec<(String, PathBuf)> = text(&built)
            .lines()
            .filter(|line| line.ends_with(".deb"))
            .map(|line| {
                let path = PathBuf::from(line.trim());
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('_').next())
                    .expect("cargo-deb's name_version_arch.deb")
                    .to_owned();
                (name, path)
            })
            .collect();
        let names: Vec<&str> = debs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [AGENT, PLUGIN],
            "the paths printed last, one per line"
        );
        debs
    })
}

fn deb(name: &str) -> &'static Path {
    packages()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, path)| path.as_path())
        .expect("built")
}

fn contents(name: &str) -> String {
    let listed = run("dpkg-deb", &["-c", &deb(name).display().to_string()]);
    assert!(listed.status.success(), "{listed:?}");
    text(&listed)
}

/// One control member (`control`, `postinst`, `conffiles`, ...) of a package.
fn control_member(name: &str, member: &str) -> String {
    let shown = run(
        "dpkg-deb",
        &["-I", &deb(name).display().to_string(), member],
    );
    assert!(shown.status.success(), "{member} of {name}: {shown:?}");
    text(&shown)
}

fn assert_holds(name: &str, paths: &[&str]) {
    let listing = contents(name);
    for path in paths {
        assert!(
            listing
                .lines()
                .any(|line| line.ends_with(&format!(".{path}"))),
            "{name} lacks {path}:\n{listing}"
        );
    }
}

#[test]
fn the_agent_package_holds_binary_units_docs_and_enables_its_units() {
    assert_holds(
        AGENT,
        &[
            "/usr/bin/trove-guest-agent",
            "/usr/lib/systemd/system/trove-guest-agent.service",
            "/usr/lib/systemd/system/trove-netiso-isolate.service",
            "/usr/lib/systemd/system/trove-netiso-first-boot.service",
            "/usr/lib/systemd/system/ifupdown-wait-online.service.d/trove-netiso.conf",
            "/usr/lib/trove-netiso/ifupdown-wait-online",
            "/usr/lib/trove-netiso/tenant-nic-from-user-data",
            "/etc/trove/conf.d/README",
            "/usr/share/man/man8/trove-guest-agent.8.gz",
            "/usr/share/bash-completion/completions/trove-guest-agent",
            "/usr/share/zsh/vendor-completions/_trove-guest-agent",
            "/usr/share/fish/vendor_completions.d/trove-guest-agent.fish",
        ],
    );
    let control = control_member(AGENT, "control");
    assert!(control.contains("Depends: libc6"), "{control}");
    assert!(
        control.contains("python3, python3-yaml"),
        "the dhclient hook and the first-boot reader run python3: {control}"
    );
    assert!(control.contains("Recommends: docker.io"), "{control}");
    assert!(
        !control
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains("docker")),
        "Docker is recommended, not required: {control}"
    );
    let conffiles = control_member(AGENT, "conffiles");
    assert!(
        conffiles.contains("/etc/trove/conf.d/README"),
        "{conffiles}"
    );
    let postinst = control_member(AGENT, "postinst");
    for unit in [
        "trove-guest-agent.service",
        "trove-netiso-isolate.service",
        "trove-netiso-first-boot.service",
    ] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable '{unit}'"))
                || postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "postinst enables {unit}:\n{postinst}"
        );
    }
}

#[test]
fn the_plugin_package_holds_binary_socket_drop_in_docs_and_enables_its_units() {
    assert_holds(
        PLUGIN,
        &[
            "/usr/bin/docker-hostnic",
            "/usr/lib/systemd/system/docker-hostnic.service",
            "/usr/lib/systemd/system/docker-hostnic.socket",
            "/usr/lib/systemd/system/docker.service.d/10-docker-hostnic.conf",
            "/usr/share/man/man8/docker-hostnic.8.gz",
            "/usr/share/bash-completion/completions/docker-hostnic",
        ],
    );
    let postinst = control_member(PLUGIN, "postinst");
    for unit in ["docker-hostnic.service", "docker-hostnic.socket"] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable '{unit}'"))
                || postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "postinst enables {unit}:\n{postinst}"
        );
    }
}

#[test]
fn the_installed_units_verify_cleanly() {
    let root = tempfile_root();
    for (_, path) in packages() {
        let unpacked = run(
            "dpkg-deb",
            &[
                "-x",
                &path.display().to_string(),
                &root.display().to_string(),
            ],
        );
        assert!(unpacked.status.success(), "{unpacked:?}");
    }
    // The packages' units name systemd's own (sysinit.target, network-pre.target, ...):
    // give the root this machine's unit folder underneath, without replacing ours.
    let system_units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&system_units).expect("create the root's unit folder");
    let copied = run(
        "cp",
        &[
            "-rn",
            "/lib/systemd/system/.",
            &system_units.display().to_string(),
        ],
    );
    assert!(copied.status.success(), "{copied:?}");
    let units = [
        "trove-guest-agent.service",
        "trove-netiso-isolate.path",
        "trove-netiso-isolate.service",
        "trove-netiso-first-boot.service",
        "docker-hostnic.service",
        "docker-hostnic.socket",
    ];
    // The man pages are checked in the listings above; `man` would look on this machine.
    let mut args = vec![
        format!("--root={}", root.display()),
        "--man=no".to_owned(),
        "verify".to_owned(),
    ];
    args.extend(
        units
            .iter()
            .map(|unit| format!("/usr/lib/systemd/system/{unit}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let verified = run("systemd-analyze", &args);
    let stderr = String::from_utf8_lossy(&verified.stderr);
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        verified.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// A fresh folder under target/tmp for the unpacked packages.
fn tempfile_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp")
        .join(format!("package-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the unpack root");
    root
}
