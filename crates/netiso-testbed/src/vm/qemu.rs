//! One guest VM under QEMU: a copy-on-write disk over the cached image, the kernel and initrd
//! taken from the image, two virtio NICs on the run's taps (management in PCI slot 3, tenant
//! in slot 4, so udev names them `ens3` and `ens4`), the NoCloud seed as a second disk, the
//! guest agent's virtio serial port, and the serial console in a log file. Software emulation
//! (TCG): the kernel's KVM does not run stock Debian kernels usefully on this kind of machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use netiso_netlink::MacAddress;

use crate::processes::GuestProcess;
use crate::vm::net::{MGMT_TAP, TENANT_TAP};
use crate::vm::qga::GuestAgent;

/// The files of a built guest image (`cargo xtask guest-image`).
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The image's folder.
    pub dir: PathBuf,
}

impl GuestImage {
    /// The image in `dir`; fails naming what is missing.
    pub fn open(dir: &Path) -> Result<Self> {
        let this = Self {
            dir: dir.to_owned(),
        };
        for file in [this.root(), this.kernel(), this.initrd()] {
            if !file.exists() {
                bail!(
                    "{} is missing: build the guest image with `cargo xtask guest-image`",
                    file.display()
                );
            }
        }
        Ok(this)
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }

    fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
}

/// How the VM is wired.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The namespace holding the taps (QEMU runs there).
    pub netns: String,
    /// The management NIC's MAC.
    pub mgmt_mac: MacAddress,
    /// The tenant NIC's MAC.
    pub tenant_mac: MacAddress,
    /// The NoCloud seed image.
    pub seed: PathBuf,
    /// A data volume, attached before the seed so that the guest sees it as `/dev/vdb`.
    pub volume: Option<PathBuf>,
    /// Memory in MiB.
    pub memory_mib: u32,
}

/// Creates an empty qcow2 data volume of `size` (`qemu-img` units) in `run_dir`.
pub fn blank_volume(run_dir: &Path, size: &str) -> Result<PathBuf> {
    let volume = run_dir.join("volume.qcow2");
    let volume_arg = volume.display().to_string();
    qemu_img_create(&[&volume_arg, size])?;
    Ok(volume)
}

/// `qemu-img create -q -f qcow2 <args>`, its error output in the error.
fn qemu_img_create(args: &[&str]) -> Result<()> {
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .args(args)
        .output()
        .context("running qemu-img (run `cargo xtask provision`)")?;
    if !output.status.success() {
        bail!(
            "qemu-img create {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A running VM; QEMU is stopped on drop.
#[derive(Debug)]
pub struct Vm {
    /// QEMU, stopped on drop.
    qemu: GuestProcess,
    /// The guest agent of this VM.
    pub agent: GuestAgent,
    /// When QEMU was started (power-on).
    pub powered_on: Instant,
    /// The serial console's log.
    pub console: PathBuf,
}

impl Vm {
    /// Creates the run's disk over the image and powers the VM on.
    pub fn start(image: &GuestImage, spec: &VmSpec, run_dir: &Path) -> Result<Self> {
        let disk = run_dir.join("disk.qcow2");
        let backing = image.root().display().to_string();
        let disk_arg = disk.display().to_string();
        qemu_img_create(&["-F", "raw", "-b", &backing, &disk_arg])?;
        let qga_socket = run_dir.join("qga.sock");
        let console = run_dir.join("console.log");
        let mut args = vec![
            "-name".to_owned(),
            "trove-netiso-guest".to_owned(),
            "-machine".to_owned(),
            "pc,accel=tcg".to_owned(),
            "-cpu".to_owned(),
            "max".to_owned(),
            "-smp".to_owned(),
            "2".to_owned(),
            "-m".to_owned(),
            spec.memory_mib.to_string(),
            "-nodefaults".to_owned(),
            "-no-user-config".to_owned(),
            "-display".to_owned(),
            "none".to_owned(),
            "-kernel".to_owned(),
            image.kernel().display().to_string(),
            "-initrd".to_owned(),
            image.initrd().display().to_string(),
            "-append".to_owned(),
            "root=/dev/vda rw console=ttyS0 net.ifnames=1 systemd.show_status=1".to_owned(),
            "-drive".to_owned(),
            format!("file={},if=virtio,format=qcow2", disk.display()),
        ];
        if let Some(volume) = &spec.volume {
            args.extend([
                "-drive".to_owned(),
                format!("file={},if=virtio,format=qcow2", volume.display()),
            ]);
        }
        args.extend([
            "-drive".to_owned(),
            format!(
                "file={},if=virtio,format=raw,readonly=on",
                spec.seed.display()
            ),
            "-netdev".to_owned(),
            format!("tap,id=mgmt,ifname={MGMT_TAP},script=no,downscript=no"),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=mgmt,mac={},addr=0x3", spec.mgmt_mac),
            "-netdev".to_owned(),
            format!("tap,id=tenant,ifname={TENANT_TAP},script=no,downscript=no"),
            "-device".to_owned(),
            format!(
                "virtio-net-pci,netdev=tenant,mac={},addr=0x4",
                spec.tenant_mac
            ),
            "-chardev".to_owned(),
            format!(
                "socket,id=qga0,path={},server=on,wait=off",
                qga_socket.display()
            ),
            "-device".to_owned(),
            "virtio-serial-pci,addr=0x6".to_owned(),
            "-device".to_owned(),
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0".to_owned(),
            "-serial".to_owned(),
            format!("file:{}", console.display()),
        ]);
        let powered_on = Instant::now();
        let qemu = GuestProcess::start(
            "qemu",
            &spec.netns,
            Path::new("/usr/bin/qemu-system-x86_64"),
            &args,
            &run_dir.join("qemu.log"),
        )?;
        Ok(Self {
            qemu,
            agent: GuestAgent::new(&qga_socket),
            powered_on,
            console,
        })
    }

    /// The CPU time QEMU has used so far, all its threads (the vCPUs' and virtio's): what the
    /// guest's work costs the host, which is what the data path's CPU per GB charges.
    pub fn cpu_time(&self) -> Result<Duration> {
        let pid = self.qemu.pid().context("QEMU is not running")?;
        crate::processes::cpu_time(pid)
    }

    /// The last lines of the serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        crate::processes::log_tail(&self.console, lines)
    }
}
