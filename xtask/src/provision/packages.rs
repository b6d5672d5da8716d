//! Debian packages: installed with apt-get when missing, without starting their services.

use crate::sh::{output, run_with_env, say};
use anyhow::{Context, Result};
use std::path::Path;

/// Every Debian package the project's tests, demo and benchmarks use.
const PACKAGES: &[&str] = &[
    "protobuf-compiler",
    "docker.io",
    "containerd",
    "runc",
    "rabbitmq-server",
    "docker-registry",
    "busybox-static",
    "iproute2",
    "iptables",
    "iperf3",
    "socat",
    "curl",
    "util-linux",
    // systemd-socket-activate, for the plugin's socket-activation test.
    "systemd",
    "python3-venv",
    "python3-pip",
    // PyYAML for the first-boot reader of cloud-init's user data
    // (contrib/cloud-init/tenant-nic-from-user-data, xtask/tests/first_boot_user_data.rs).
    "python3-yaml",
    // `openssl x509 -checkend` and `openssl verify`: whether the test certificates are still
    // good (provision/tls.rs).
    "openssl",
    // Builds the MariaDB image's root from Debian packages (provision/images.rs).
    "mmdebstrap",
    // The tenant client of the SQL round trips (harness, demo, benchmarks).
    "mariadb-client",
    // The guest VM (`cargo xtask guest-image`, `cargo xtask vm`): diskimage-builder's
    // debootstrap and sudo, the NoCloud seed's ISO image, DHCP on the VM's networks.
    "debootstrap",
    "sudo",
    "genisoimage",
    "dnsmasq-base",
];

/// QEMU for the guest VM. Debian 12's `qemu-system-x86` wants `qemu-utils` of its own
/// version, while this kind of machine comes with a newer one from backports: both are
/// installed at the version of `qemu-system-x86` (a downgrade of `qemu-utils` when needed).
const QEMU: &str = "qemu-system-x86";

/// Installs whatever is missing. Services are kept from starting on their own (a dockerd in
/// this machine's namespace would create `docker0` and iptables rules here); provision starts
/// them itself, inside namespaces of its own.
pub fn ensure_installed() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        say(&format!("  all {} packages present", PACKAGES.len()));
        return Ok(());
    }
    say(&format!("  missing: {}", missing.join(" ")));
    let _guard = ServiceStartBlocker::install()?;
    let env = [("DEBIAN_FRONTEND", "noninteractive".to_string())];
    run_with_env("apt-get", &["update", "-qq"], &env)?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    run_with_env("apt-get", &args, &env)?;
    Ok(())
}

/// QEMU, at one version with its utilities.
pub fn ensure_qemu() -> Result<()> {
    if is_installed(QEMU) {
        say(&format!("  {QEMU} present"));
        return Ok(());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive".to_string())];
    run_with_env("apt-get", &["update", "-qq"], &env)?;
    let candidate = output("apt-cache", &["policy", QEMU])?;
    let version = candidate
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
        .with_context(|| format!("apt knows no {QEMU}: {candidate}"))?
        .to_owned();
    let _guard = ServiceStartBlocker::install()?;
    let utils = format!("qemu-utils={version}");
    run_with_env(
        "apt-get",
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "--allow-downgrades",
            QEMU,
            &utils,
        ],
        &env,
    )
}

fn is_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_ok_and(|status| status.trim() == "install ok installed")
}

/// Debian's `policy-rc.d` convention: while it exits 101, package scripts start no service.
/// Removed again on drop unless it was already there.
struct ServiceStartBlocker {
    created: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl ServiceStartBlocker {
    fn install() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self { created: false });
        }
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        crate::sh::run("chmod", &["0755", POLICY_RC_D])?;
        Ok(Self { created: true })
    }
}

impl Drop for ServiceStartBlocker {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}
