//! The data volume, prepared as Trove's `VolumeDevice` prepares it: the device must exist
//! and be a block device; it is formatted (`mkfs --type <volume_fstype> <format_options>`)
//! only when `blkid` finds no filesystem on it; an ext filesystem is checked
//! (`e2fsck -p`); then it is mounted on the mount point with `mount_options`.
//!
//! Nothing is changed on a device that fails a check: a missing device, a device with a
//! filesystem of another type, or a device mounted elsewhere is refused as it is. After a
//! mount, the volume gets a line in the fstab (Trove's `write_to_fstab`), so that a reboot
//! mounts it before dockerd restarts the database: without it the container would start on
//! an empty folder of the root disk and initialise a new, empty database there.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netiso_config::VolumeSettings;
use nix::mount::{MsFlags, mount};
use tokio::process::Command;
use tracing::info;

/// How long `blkid` and `e2fsck` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the volume could not be prepared; each names the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// `device_path` does not exist or is not a block device.
    #[error("data volume {}: {problem}", device.display())]
    NotADevice {
        /// The device.
        device: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The device is mounted somewhere else.
    #[error("data volume {} is mounted on {}, not on {}", device.display(), mounted_on.display(), mount_point.display())]
    MountedElsewhere {
        /// The device.
        device: PathBuf,
        /// Where it is mounted.
        mounted_on: PathBuf,
        /// Where it should be.
        mount_point: PathBuf,
    },
    /// The device holds a filesystem of another type (or something that is not one).
    #[error("data volume {} holds `{found}`, not the configured volume_fstype `{wanted}`; it is left as it is", device.display())]
    OtherFilesystem {
        /// The device.
        device: PathBuf,
        /// What `blkid` found.
        found: String,
        /// `volume_fstype`.
        wanted: String,
    },
    /// A tool (`blkid`, `mkfs`, `e2fsck`) failed.
    #[error("data volume {}: Could not {action}: {message}", device.display())]
    Tool {
        /// The device.
        device: PathBuf,
        /// `check the filesystem`, `format`…
        action: &'static str,
        /// The tool's output or the error.
        message: String,
    },
    /// The fstab could not be updated.
    #[error("cannot record the data volume in {}: {message}", fstab.display())]
    Fstab {
        /// The fstab file.
        fstab: PathBuf,
        /// The error.
        message: String,
    },
    /// The mount itself failed.
    #[error("data volume {}: Could not mount on {}: {message}", device.display(), mount_point.display())]
    Mount {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mount_point: PathBuf,
        /// The error.
        message: String,
    },
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeOutcome {
    /// The device was already mounted on the mount point.
    AlreadyMounted,
    /// The device had a filesystem and was mounted.
    Mounted,
    /// The device was blank: formatted, then mounted.
    FormattedAndMounted,
}

/// Mounts `device` on `mount_point`, formatting it first only when it is blank, and
/// records the mount in `fstab` (Trove: `/etc/fstab`) unless a line for `mount_point` is
/// there already.
pub async fn prepare(
    device: &Path,
    mount_point: &Path,
    settings: &VolumeSettings,
    fstab: &Path,
) -> Result<VolumeOutcome, VolumeError> {
    let outcome = mount_volume(device, mount_point, settings).await?;
    record_in_fstab(fstab, device, mount_point, settings)?;
    Ok(outcome)
}

async fn mount_volume(
    device: &Path,
    mount_point: &Path,
    settings: &VolumeSettings,
) -> Result<VolumeOutcome, VolumeError> {
    let device = canonical_device(device)?;
    if let Some(mounted_on) = mounted_on(&device) {
        if same_path(&mounted_on, mount_point) {
            return Ok(VolumeOutcome::AlreadyMounted);
        }
        return Err(VolumeError::MountedElsewhere {
            device,
            mounted_on,
            mount_point: mount_point.to_owned(),
        });
    }
    let formatted = match filesystem_of(&device).await? {
        Some(found) if found == settings.fstype => false,
        Some(found) => {
            return Err(VolumeError::OtherFilesystem {
                device,
                found,
                wanted: settings.fstype.clone(),
            });
        }
        None => {
            format(&device, settings).await?;
            match filesystem_of(&device).await? {
                Some(found) if found == settings.fstype => true,
                found => {
                    return Err(VolumeError::Tool {
                        device,
                        action: "format",
                        message: format!(
                            "after mkfs, blkid reports {}",
                            found.as_deref().unwrap_or("no filesystem")
                        ),
                    });
                }
            }
        }
    };
    if settings.fstype.starts_with("ext") {
        check_ext(&device).await?;
    }
    mount_device(&device, mount_point, settings)?;
    info!(device = %device.display(), mount_point = %mount_point.display(), formatted, "data volume mounted");
    Ok(if formatted {
        VolumeOutcome::FormattedAndMounted
    } else {
        VolumeOutcome::Mounted
    })
}

/// Appends `device mount_point fstype options 0 0` (Trove's line) to `fstab`, through a
/// temporary file and a rename, unless a line already mounts something on `mount_point`.
fn record_in_fstab(
    fstab: &Path,
    device: &Path,
    mount_point: &Path,
    settings: &VolumeSettings,
) -> Result<(), VolumeError> {
    let failed = |message: String| VolumeError::Fstab {
        fstab: fstab.to_owned(),
        message,
    };
    let current = match std::fs::read_to_string(fstab) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(failed(e.to_string())),
    };
    let target = mount_point.to_string_lossy();
    let present = current.lines().any(|line| {
        let line = line.trim();
        !line.starts_with('#')
            && line
                .split_whitespace()
                .nth(1)
                .is_some_and(|t| unescape_mount_field(t) == target)
    });
    if present {
        return Ok(());
    }
    let escape = |p: &Path| {
        p.to_string_lossy()
            .replace('\\', "\\134")
            .replace(' ', "\\040")
            .replace('\t', "\\011")
    };
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{}\t{}\t{}\t{}\t0\t0\n",
        escape(device),
        escape(mount_point),
        settings.fstype,
        settings.mount_options
    ));
    netiso_config::atomic_file::replace(fstab, text.as_bytes(), 0o644)
        .map_err(|e| failed(e.to_string()))?;
    info!(fstab = %fstab.display(), mount_point = %target, "data volume recorded in fstab");
    Ok(())
}

fn canonical_device(device: &Path) -> Result<PathBuf, VolumeError> {
    let not_a_device = |problem: String| VolumeError::NotADevice {
        device: device.to_owned(),
        problem,
    };
    let metadata = std::fs::metadata(device).map_err(|e| not_a_device(e.to_string()))?;
    if !metadata.file_type().is_block_device() {
        return Err(not_a_device("not a block device".to_owned()));
    }
    std::fs::canonicalize(device).map_err(|e| not_a_device(e.to_string()))
}

fn same_path(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canonical(a) == canonical(b)
}

/// Where `device` is mounted, from `/proc/self/mounts` (octal escapes decoded).
fn mounted_on(device: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let source = unescape_mount_field(fields.next()?);
        let target = unescape_mount_field(fields.next()?);
        (Path::new(&source) == device).then(|| PathBuf::from(target))
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Run {
    code: Option<i32>,
    output: String,
}

async fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Run, String> {
    let mut command = Command::new(program);
    command.args(args).kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("cannot run {program}: {e}")),
        Err(_) => return Err(format!("{program} did not finish within {timeout:?}")),
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(Run {
        code: output.status.code(),
        output: text.trim().to_owned(),
    })
}

/// The filesystem type `blkid` finds, `None` when the device is blank (exit code 2).
async fn filesystem_of(device: &Path) -> Result<Option<String>, VolumeError> {
    let path = device.to_string_lossy();
    let failed = |message: String| VolumeError::Tool {
        device: device.to_owned(),
        action: "check the filesystem",
        message,
    };
    let result = run(
        "blkid",
        &["-p", "-o", "value", "-s", "TYPE", &path],
        CHECK_TIMEOUT,
    )
    .await
    .map_err(failed)?;
    match result.code {
        Some(0) if !result.output.is_empty() => Ok(Some(result.output)),
        // blkid -p says "ambivalent" or finds a non-filesystem signature (exit 0, no TYPE):
        // not blank, and not ours to format.
        Some(0) => Ok(Some("an unknown signature".to_owned())),
        Some(2) => Ok(None),
        _ => Err(failed(format!("blkid: {}", result.output))),
    }
}

async fn format(device: &Path, settings: &VolumeSettings) -> Result<(), VolumeError> {
    let path = device.to_string_lossy();
    let mut args: Vec<&str> = vec!["--type", &settings.fstype];
    args.extend(settings.format_options.iter().map(String::as_str));
    args.push(&path);
    info!(device = %path, fstype = %settings.fstype, "formatting the blank data volume");
    let failed = |message: String| VolumeError::Tool {
        device: device.to_owned(),
        action: "format",
        message,
    };
    let result = run("mkfs", &args, settings.format_timeout)
        .await
        .map_err(failed)?;
    if result.code == Some(0) {
        Ok(())
    } else {
        Err(failed(result.output))
    }
}

/// `e2fsck -p`: 0 clean, 1 and 2 repaired (not mounted yet, so a reboot is not needed), 3
/// both; anything else is an error.
async fn check_ext(device: &Path) -> Result<(), VolumeError> {
    let path = device.to_string_lossy();
    let failed = |message: String| VolumeError::Tool {
        device: device.to_owned(),
        action: "check the filesystem",
        message,
    };
    let result = run("e2fsck", &["-p", &path], CHECK_TIMEOUT)
        .await
        .map_err(failed)?;
    match result.code {
        Some(0..=3) => Ok(()),
        _ => Err(failed(format!("e2fsck: {}", result.output))),
    }
}

/// Flags and data of `mount_options` (`defaults`, `noatime`, `ro`… as flags; the rest
/// passed to the filesystem).
fn mount_flags(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option {
            "defaults" | "rw" | "atime" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

fn mount_device(
    device: &Path,
    mount_point: &Path,
    settings: &VolumeSettings,
) -> Result<(), VolumeError> {
    let failed = |message: String| VolumeError::Mount {
        device: device.to_owned(),
        mount_point: mount_point.to_owned(),
        message,
    };
    std::fs::create_dir_all(mount_point).map_err(|e| failed(e.to_string()))?;
    let (flags, data) = mount_flags(&settings.mount_options);
    mount(
        Some(device),
        mount_point,
        Some(settings.fstype.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_and_data() {
        assert_eq!(
            mount_flags("defaults,noatime"),
            (MsFlags::MS_NOATIME, String::new())
        );
        assert_eq!(
            mount_flags("ro, nodev,errors=remount-ro,"),
            (
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                "errors=remount-ro".to_owned()
            )
        );
    }

    #[test]
    fn proc_mounts_escapes_are_decoded() {
        assert_eq!(unescape_mount_field(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field(r"/x\134y\011"), "/x\\y\t");
        assert_eq!(unescape_mount_field(r"/plain\04"), r"/plain\04");
    }

    #[tokio::test]
    async fn a_missing_or_non_block_device_is_refused_untouched() {
        let settings = VolumeSettings {
            fstype: "ext4".into(),
            format_options: vec![],
            format_timeout: Duration::from_secs(5),
            mount_options: "defaults".into(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("vdb");
        let fstab = dir.path().join("fstab");
        let error = prepare(&missing, &dir.path().join("mnt"), &settings, &fstab)
            .await
            .expect_err("missing");
        assert!(error.to_string().contains("No such file"), "{error}");
        std::fs::write(&missing, b"not a disk").expect("write");
        let error = prepare(&missing, &dir.path().join("mnt"), &settings, &fstab)
            .await
            .expect_err("regular file");
        assert!(error.to_string().contains("not a block device"), "{error}");
        assert!(!dir.path().join("mnt").exists(), "nothing was created");
        assert!(!fstab.exists(), "nothing was recorded");
    }

    #[test]
    fn the_fstab_gets_trove_s_line_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fstab = dir.path().join("fstab");
        std::fs::write(&fstab, "# static\nUUID=1 / ext4 defaults 0 1").expect("write");
        let settings = VolumeSettings::default();
        let mount_point = Path::new("/var/lib/my sql");
        record_in_fstab(&fstab, Path::new("/dev/vdb"), mount_point, &settings).expect("add");
        record_in_fstab(&fstab, Path::new("/dev/vdc"), mount_point, &settings).expect("kept");
        assert_eq!(
            std::fs::read_to_string(&fstab).expect("read"),
            "# static\nUUID=1 / ext4 defaults 0 1\n\
             /dev/vdb\t/var/lib/my\\040sql\text4\tdefaults,noatime\t0\t0\n"
        );
    }
}
