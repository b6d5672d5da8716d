//! A throwaway "database" image, built with no network: a static busybox root filesystem
//! (Debian's `busybox-static`) whose command answers TCP connections by echoing, imported
//! into the guest dockerd, pushed to the local registry and removed locally, so that a
//! test's `ensure_image` really pulls it.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions, RemoveImageOptions};
use futures::StreamExt;

use super::{PROVISION_HINT, block_on_cleanup, docker_host, guest_registry, next_counter};
use crate::image::ImageReference;
use crate::spec::HealthCheck;

/// The static busybox of Debian's `busybox-static`.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// The repository of test images in the local registry.
pub const TEST_REPOSITORY: &str = "netiso/testdb";
/// Applets linked in the image.
const APPLETS: &[&str] = &[
    "sh", "nc", "cat", "echo", "grep", "sleep", "true", "timeout", "id",
];
/// A fixed time for every archive entry, so the layer is the same for every test.
const ENTRY_MTIME: u64 = 1_700_000_000;

/// The command of the test database: echo every line back on `port`, one process per
/// connection, until stopped. As PID 1 it ignores SIGTERM, so a stop always waits for
/// its timeout and then kills.
pub fn echo_server_command(port: u16) -> Vec<String> {
    [
        "/bin/busybox",
        "nc",
        "-ll",
        "-p",
        &port.to_string(),
        "-e",
        "/bin/cat",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A health check that connects to the echo server and expects its answer.
pub fn echo_health_check(port: u16) -> HealthCheck {
    HealthCheck {
        test: vec![
            "CMD-SHELL".to_owned(),
            format!("echo ping | timeout 2 nc 127.0.0.1 {port} | grep -q ping"),
        ],
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(3),
        retries: 3,
        start_period: Duration::ZERO,
    }
}

/// The root filesystem archive: `/bin/busybox`, applet links, `/tmp`.
pub fn busybox_rootfs_tar() -> std::io::Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX_PATH).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read {BUSYBOX_PATH} (install busybox-static: {PROVISION_HINT}): {e}"),
        )
    })?;
    let mut archive = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(ENTRY_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    for dir in ["bin", "tmp"] {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, mode, 0);
        archive.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    archive.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        archive.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    archive.into_inner()
}

/// A test image in the local registry, absent from the daemon until a test pulls it. Its
/// local copy (if pulled) is removed on drop; the registry keeps the tag (the registry has
/// no delete API enabled) but every tag shares the one busybox layer. Declare it before the
/// `ContainerGuard`s of containers made from it, so they are dropped (removed) first.
#[derive(Debug)]
pub struct PublishedImage {
    reference: ImageReference,
    port: u16,
}

impl PublishedImage {
    /// Builds, imports, pushes and removes locally an echo-server image listening on `port`,
    /// tagged uniquely (`<registry>/netiso/testdb:t<pid>-<n>`). Panics naming the fix when
    /// the daemon or registry is missing.
    pub async fn publish(port: u16) -> Self {
        let host = docker_host();
        let docker = Docker::connect_with_host(&host)
            .unwrap_or_else(|e| panic!("dockerd at {host}: {e}: {PROVISION_HINT}"));
        let name = format!("{}/{TEST_REPOSITORY}", guest_registry());
        let tag = format!("t{}-{}", std::process::id(), next_counter());
        let reference: ImageReference = format!("{name}:{tag}")
            .parse()
            .unwrap_or_else(|e| panic!("NETISO_GUEST_REGISTRY gives a bad image name: {e}"));
        let rootfs = busybox_rootfs_tar().unwrap_or_else(|e| panic!("{e}"));

        let cmd = serde_json::to_string(&echo_server_command(port))
            .unwrap_or_else(|e| panic!("command to JSON: {e}"));
        let import = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(name.clone()),
            tag: Some(tag.clone()),
            changes: vec![format!("CMD {cmd}"), format!("EXPOSE {port}/tcp")],
            ..CreateImageOptions::default()
        };
        let mut events =
            docker.create_image(Some(import), Some(bollard::body_full(rootfs.into())), None);
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                panic!("importing {reference} into {host}: {e}: {PROVISION_HINT}");
            }
        }

        let push = PushImageOptions {
            tag: Some(tag.clone()),
            platform: None,
        };
        let mut events = docker.push_image(&name, Some(push), None);
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                remove_local(&docker, &reference).await;
                panic!("pushing {reference} to the registry: {e}: {PROVISION_HINT}");
            }
        }
        remove_local(&docker, &reference).await;
        Self { reference, port }
    }

    /// The image as the guest dockerd pulls it.
    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }

    /// The port its echo server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Removes the local tag, and the image with it. Never forced: forcing an image that a
/// container still uses only untags it and leaves an anonymous image behind; unforced, the
/// image stays tagged (findable) and the test is told why.
async fn remove_local(docker: &Docker, reference: &ImageReference) {
    match docker
        .remove_image(&reference.to_string(), None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        }) => eprintln!(
            "cleanup: image {reference} left behind, a container still uses it \
             (drop its ContainerGuard before the PublishedImage): {message}"
        ),
        Err(e) => eprintln!("cleanup: removing image {reference}: {e}"),
    }
}

impl Drop for PublishedImage {
    fn drop(&mut self) {
        let reference = self.reference.clone();
        block_on_cleanup(move || async move {
            match Docker::connect_with_host(&docker_host()) {
                Ok(docker) => remove_local(&docker, &reference).await,
                Err(e) => eprintln!("cleanup: image {reference} left behind: {e}"),
            }
        });
    }
}
