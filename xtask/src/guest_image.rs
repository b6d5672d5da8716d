//! `cargo xtask guest-image`: a bootable Debian 12 Trove guest image, built with
//! diskimage-builder and the project's own element (`contrib/dib/elements/trove-netiso-guest`,
//! the one operators add to their Trove image build), from the Debian mirror.
//!
//! diskimage-builder's default output needs device-mapper and partition-table parsers, which
//! this kind of machine's kernel lacks; its `tar` output needs neither. The root is then made
//! into an ext4 filesystem image by `mkfs.ext4 -d` (no loop device, no mount) and booted with
//! the kernel and initrd taken from its `/boot`.
//!
//! Cached under `/var/lib/trove-netiso/guest-image/<key>/`, where the key hashes every input
//! (the packages, the elements, diskimage-builder's version and options); `current` points at
//! the newest build and older ones are removed. Rebuilt only when an input changes.
//!
//! A variant of the image, `Variant::TroveReference`, adds the test element
//! `trove-reference-agent`: Trove's own guest agent from PyPI in place of ours, measured
//! beside it (cached apart, under `guest-image-trove-reference/`).

use crate::layout::{LOG_DIR, STATE_DIR};
use crate::sh::{output, run, say};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// diskimage-builder, pinned: its elements are part of the image's inputs.
const DIB_VERSION: &str = "3.43.0";
/// The elements: Debian's minimal base, cloud-init (NoCloud is what the harness seeds; a
/// cloud sets its own datasources), the project's guest element, and the test element that
/// adds the QEMU guest agent the harness looks through.
const ELEMENTS: [&str; 5] = [
    "debian-minimal",
    "cloud-init",
    "cloud-init-datasources",
    "trove-netiso-guest",
    "trove-netiso-vmtest",
];
/// The test element that puts Trove's own guest agent into the reference variant.
const REFERENCE_ELEMENT: &str = "trove-reference-agent";
/// The Trove release the reference variant runs (the one the bench measures too).
const TROVE_REFERENCE_VERSION: &str = "26.0.0";

/// Which image to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The guest image with trove-netiso's element, as operators build it.
    Netiso,
    /// The same image with Trove's own guest agent in place of ours (`trove-reference-agent`).
    TroveReference,
}

impl Variant {
    fn elements(self) -> Vec<&'static str> {
        let mut elements = ELEMENTS.to_vec();
        if self == Self::TroveReference {
            elements.push(REFERENCE_ELEMENT);
        }
        elements
    }

    /// The cache folder under the state directory: each variant keeps its own newest build.
    fn folder(self) -> &'static str {
        match self {
            Self::Netiso => "guest-image",
            Self::TroveReference => "guest-image-trove-reference",
        }
    }
}

/// Extra packages: the kernel (booted directly by QEMU) and ifupdown, which cloud-init's
/// network configuration renders to on Debian.
const EXTRA_PACKAGES: &str = "linux-image-amd64,ifupdown";
/// The filesystem's size (sparse: only what is written takes space).
const ROOT_SIZE: &str = "8G";
/// Where the elements live.
const ELEMENTS_DIR: &str = "contrib/dib/elements";

/// The folder of the variant's current guest image.
pub fn current_dir(variant: Variant) -> PathBuf {
    Path::new(STATE_DIR).join(variant.folder()).join("current")
}

/// The two packages in `dir`: exactly one of each, or an error naming what is there.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for prefix in ["trove-guest-agent_", "docker-hostnic_"] {
        let found: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(".deb")
                })
            })
            .collect();
        match found.as_slice() {
            [one] => debs.push(one.clone()),
            _ => bail!(
                "{}: expected one {prefix}*.deb, found {}",
                dir.display(),
                found.len()
            ),
        }
    }
    Ok(debs)
}

/// Builds the image unless the cached one was made from the same inputs; returns its folder.
pub fn ensure(debs: &[PathBuf], variant: Variant) -> Result<PathBuf> {
    let dib = ensure_diskimage_builder()?;
    if variant == Variant::TroveReference {
        ensure_reference_wheels(&dib)?;
    }
    let key = inputs_key(debs, variant)?;
    let images = Path::new(STATE_DIR).join(variant.folder());
    let keyed = images.join(&key);
    if keyed.join("root.ext4").exists() {
        say(&format!("  guest image {key} is current"));
        point_current_at(&images, &key)?;
        return Ok(current_dir(variant));
    }
    say(&format!(
        "== guest image ({variant:?}): building {key} with diskimage-builder {DIB_VERSION}"
    ));
    let started = Instant::now();
    let build = images.join(format!("build-{key}"));
    if build.exists() {
        std::fs::remove_dir_all(&build)
            .with_context(|| format!("removing the unfinished {}", build.display()))?;
    }
    std::fs::create_dir_all(build.join("debs"))
        .with_context(|| format!("creating {}", build.display()))?;
    for deb in debs {
        let name = deb.file_name().context("a package without a file name")?;
        std::fs::copy(deb, build.join("debs").join(name))
            .with_context(|| format!("copying {}", deb.display()))?;
    }
    disk_image_create(&dib, &build, variant)?;
    let rootfs = build.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    run(
        "tar",
        &[
            "-xpf",
            &path_str(&build.join("root.tar"))?,
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-C",
            &path_str(&rootfs)?,
        ],
    )?;
    copy_boot_file(&rootfs, "vmlinuz-", &build.join("vmlinuz"))?;
    copy_boot_file(&rootfs, "initrd.img-", &build.join("initrd.img"))?;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "root",
            "-d",
            &path_str(&rootfs)?,
            &path_str(&build.join("root.ext4"))?,
            ROOT_SIZE,
        ],
    )?;
    std::fs::remove_dir_all(&rootfs)?;
    for leftover in ["root.tar", "debs"] {
        let path = build.join(leftover);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::write(build.join("inputs"), format!("{key}\n"))?;
    std::fs::rename(&build, &keyed)
        .with_context(|| format!("moving the image to {}", keyed.display()))?;
    point_current_at(&images, &key)?;
    say(&format!(
        "  guest image built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(current_dir(variant))
}

/// diskimage-builder in a venv of its own, and the Debian tools it calls.
fn ensure_diskimage_builder() -> Result<PathBuf> {
    let venv = Path::new(STATE_DIR).join("dib-venv");
    let dib = venv.join("bin").join("disk-image-create");
    let pip = venv.join("bin").join("pip");
    let installed = output(&path_str(&pip)?, &["show", "diskimage-builder"]).is_ok_and(|shown| {
        shown
            .lines()
            .any(|l| l == format!("Version: {DIB_VERSION}"))
    });
    if !installed {
        if !venv.join("bin").join("python3").exists() {
            run("python3", &["-m", "venv", &path_str(&venv)?])?;
        }
        run(
            &path_str(&pip)?,
            &[
                "install",
                "-q",
                &format!("diskimage-builder=={DIB_VERSION}"),
            ],
        )?;
    }
    Ok(dib)
}

/// Where the wheels of Trove's release and its requirements are kept.
fn reference_wheels_dir() -> PathBuf {
    Path::new(STATE_DIR)
        .join("trove-reference-wheels")
        .join(TROVE_REFERENCE_VERSION)
}

/// Wheels of Trove's release and of everything it requires, built on this machine by pip
/// (whose certificate settings reach PyPI, which the image's chroot cannot), once per release.
fn ensure_reference_wheels(dib: &Path) -> Result<()> {
    let dir = reference_wheels_dir();
    let complete = dir.join(".complete");
    if complete.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the unfinished {}", dir.display()))?;
    }
    say(&format!(
        "  wheels of trove=={TROVE_REFERENCE_VERSION} and its requirements"
    ));
    let pip = dib.with_file_name("pip");
    run(
        &path_str(&pip)?,
        &[
            "wheel",
            "--quiet",
            "--wheel-dir",
            &path_str(&dir)?,
            &format!("trove=={TROVE_REFERENCE_VERSION}"),
        ],
    )?;
    std::fs::write(&complete, "").with_context(|| format!("writing {}", complete.display()))
}

fn disk_image_create(dib: &Path, build: &Path, variant: Variant) -> Result<()> {
    let log = format!("{LOG_DIR}/{}.log", variant.folder());
    let venv_bin = dib.parent().context("diskimage-builder's folder")?;
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let elements = std::env::current_dir()?.join(ELEMENTS_DIR);
    let env = [
        ("PATH", path),
        ("ELEMENTS_PATH", path_str(&elements)?),
        ("DIB_RELEASE", "bookworm".to_owned()),
        (
            "DIB_DISTRIBUTION_MIRROR",
            "http://deb.debian.org/debian".to_owned(),
        ),
        (
            "DIB_DEBIAN_SECURITY_MIRROR",
            "http://deb.debian.org/debian-security".to_owned(),
        ),
        ("DIB_APT_MINIMAL_CREATE_INTERFACES", "0".to_owned()),
        ("DIB_CLOUD_INIT_DATASOURCES", "NoCloud".to_owned()),
        ("DIB_TROVE_NETISO_DEBS", path_str(&build.join("debs"))?),
        (
            "DIB_TROVE_REFERENCE_VERSION",
            TROVE_REFERENCE_VERSION.to_owned(),
        ),
        (
            "DIB_TROVE_REFERENCE_WHEELS",
            path_str(&reference_wheels_dir())?,
        ),
    ];
    let mut args = vec![
        "-t".to_owned(),
        "tar".to_owned(),
        "-o".to_owned(),
        path_str(&build.join("root"))?,
        "-p".to_owned(),
        EXTRA_PACKAGES.to_owned(),
    ];
    args.extend(variant.elements().iter().map(|e| (*e).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logged = std::fs::File::create(&log).with_context(|| format!("creating {log}"))?;
    let status = std::process::Command::new(dib)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(logged.try_clone()?)
        .stderr(logged)
        .status()
        .context("running disk-image-create")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "disk-image-create {status} (whole log: {log}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// A hash of everything the image is made from: the variant's elements (the files of those
/// in `contrib/dib/elements`), the packages, diskimage-builder's version and options.
fn inputs_key(debs: &[PathBuf], variant: Variant) -> Result<String> {
    let mut hash = Sha256::new();
    let elements = variant.elements();
    hash.update(format!(
        "dib {DIB_VERSION}\nelements {elements:?}\npackages {EXTRA_PACKAGES}\nsize {ROOT_SIZE}\n"
    ));
    if variant == Variant::TroveReference {
        hash.update(format!("trove {TROVE_REFERENCE_VERSION}\n"));
    }
    let mut debs = debs.to_vec();
    debs.sort();
    for deb in &debs {
        hash.update(
            deb.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        hash.update(std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?);
    }
    let mut files = Vec::new();
    for element in elements {
        let dir = Path::new(ELEMENTS_DIR).join(element);
        if dir.is_dir() {
            collect_files(&dir, &mut files)?;
        }
    }
    files.sort();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    let digest = hash.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn copy_boot_file(rootfs: &Path, prefix: &str, to: &Path) -> Result<()> {
    let boot = rootfs.join("boot");
    let found = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .with_context(|| format!("no {prefix}* in the image's /boot"))?;
    std::fs::copy(&found, to).with_context(|| format!("copying {}", found.display()))?;
    Ok(())
}

/// `current` -> `<key>`, and older builds removed (each is gigabytes).
fn point_current_at(images: &Path, key: &str) -> Result<()> {
    let current = images.join("current");
    let staged = images.join("current.new");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(key, &staged)?;
    std::fs::rename(&staged, &current)?;
    for entry in std::fs::read_dir(images)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() && !path.is_symlink() && name != key {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the old image {}", path.display()))?;
        }
    }
    Ok(())
}

/// A path as the UTF-8 string a command line takes.
pub fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
