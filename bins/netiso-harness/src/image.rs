//! The scenario's database image: netiso-runtime's test-support busybox echo server, plus one
//! file unique to the scenario so that its layer exists nowhere else. Other images built
//! from the same busybox layer (other tests on the shared dockerd) then cannot satisfy the
//! pull locally: `prepare` downloads the whole layer from the registry, and the management
//! NIC's counters can prove where it came from.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bollard::Docker;
use bollard::query_parameters::{CreateImageOptions, PushImageOptions, RemoveImageOptions};
use futures::StreamExt as _;
use netiso_runtime::ImageReference;
use netiso_runtime::test_support::block_on_cleanup;
use netiso_runtime::test_support::image::{
    TEST_REPOSITORY, busybox_rootfs_tar, echo_server_command,
};

/// A pushed image whose local copy (if any) is removed on drop.
#[derive(Debug)]
pub struct ScenarioImage {
    reference: ImageReference,
    docker_host: String,
}

impl ScenarioImage {
    /// Builds, imports, pushes the image `<guest registry>/netiso/testdb:<tag>` listening on
    /// `port`, then removes it locally so that the agent's pull is real.
    pub async fn publish(
        docker_host: &str,
        guest_registry: &str,
        tag: &str,
        port: u16,
    ) -> Result<Self> {
        let docker = Docker::connect_with_host(docker_host)
            .with_context(|| format!("dockerd at {docker_host}: run `cargo xtask provision`"))?;
        let name = format!("{guest_registry}/{TEST_REPOSITORY}");
        let reference: ImageReference = format!("{name}:{tag}")
            .parse()
            .map_err(|e| anyhow!("image name: {e}"))?;
        let this = Self {
            reference,
            docker_host: docker_host.to_owned(),
        };
        let rootfs = unique_rootfs(tag)?;
        let command = serde_json::to_string(&echo_server_command(port))?;
        let import = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(name.clone()),
            tag: Some(tag.to_owned()),
            changes: vec![format!("CMD {command}"), format!("EXPOSE {port}/tcp")],
            ..CreateImageOptions::default()
        };
        let mut events =
            docker.create_image(Some(import), Some(bollard::body_full(rootfs.into())), None);
        while let Some(event) = events.next().await {
            event.with_context(|| format!("importing {} into dockerd", this.reference))?;
        }
        let push = PushImageOptions {
            tag: Some(tag.to_owned()),
            platform: None,
        };
        let mut events = docker.push_image(&name, Some(push), None);
        while let Some(event) = events.next().await {
            let event = event.with_context(|| format!("pushing {}", this.reference))?;
            if let Some(error) = event.error_detail.and_then(|d| d.message) {
                return Err(anyhow!("pushing {}: {error}", this.reference));
            }
        }
        remove_local(&docker, &this.reference).await?;
        Ok(this)
    }

    /// The image as the guest pulls it.
    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }
}

/// The busybox root filesystem plus `/etc/netiso-harness` naming the scenario's tag.
fn unique_rootfs(tag: &str) -> Result<Vec<u8>> {
    let base = busybox_rootfs_tar().context("building the busybox root filesystem")?;
    let mut archive = tar::Archive::new(base.as_slice());
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        if header.entry_type().is_symlink() {
            let target = entry
                .link_name()?
                .ok_or_else(|| anyhow!("symlink {} without target", path.display()))?
                .into_owned();
            builder.append_link(&mut header, &path, &target)?;
        } else {
            builder.append_data(&mut header, &path, &mut entry)?;
        }
    }
    let marker = format!("netiso-harness {tag}\n");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(marker.len() as u64);
    header.set_mtime(1_700_000_000);
    builder.append_data(&mut header, "etc/netiso-harness", marker.as_bytes())?;
    Ok(builder.into_inner()?)
}

async fn remove_local(docker: &Docker, reference: &ImageReference) -> Result<()> {
    // Not forced: a forced removal under a container leaves an anonymous image behind; a
    // container still using it is a cleanup failure worth reporting.
    let options = RemoveImageOptions {
        force: false,
        ..RemoveImageOptions::default()
    };
    match docker
        .remove_image(&reference.to_string(), Some(options), None)
        .await
    {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(anyhow!("removing {reference} from dockerd: {e}")),
    }
}

impl Drop for ScenarioImage {
    fn drop(&mut self) {
        let reference = self.reference.clone();
        let host = self.docker_host.clone();
        block_on_cleanup(move || async move {
            let removed = match Docker::connect_with_host(&host) {
                Ok(docker) => {
                    tokio::time::timeout(Duration::from_secs(60), remove_local(&docker, &reference))
                        .await
                        .unwrap_or_else(|_| Err(anyhow!("removing {reference} timed out")))
                }
                Err(e) => Err(anyhow!("dockerd: {e}")),
            };
            if let Err(e) = removed {
                eprintln!("cleanup: {e:#}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystem_gets_a_unique_marker_and_keeps_busybox() {
        let rootfs = unique_rootfs("t1-0").expect("rootfs (needs busybox-static)");
        let mut archive = tar::Archive::new(rootfs.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert!(paths.contains(&"bin/busybox".to_owned()));
        assert!(paths.contains(&"bin/nc".to_owned()));
        assert!(paths.contains(&"etc/netiso-harness".to_owned()));
        assert_ne!(rootfs, unique_rootfs("t1-1").expect("rootfs"));
    }
}
