//! The scenario's database image: the MariaDB image `cargo xtask provision` builds
//! (`docs/mariadb-image.md`), plus one layer unique to the scenario, pushed under a tag of
//! its own. The extra layer is 1 MiB of random bytes: no other image anywhere holds it (nor
//! can compression shrink it), so `prepare` must download at least that much from the
//! registry, and the management NIC's counters can prove where it came from, even when the
//! runtime already holds the MariaDB layer below it.

use std::io::Read as _;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, CreateImageOptions, PushImageOptions,
    RemoveContainerOptions, RemoveImageOptions, UploadToContainerOptions,
};
use futures::StreamExt as _;
use netiso_runtime::ImageReference;
use netiso_runtime::test_support::block_on_cleanup;

/// The provisioned MariaDB image's repository (in the registry) and tag.
pub const MARIADB_REPOSITORY: &str = "trove-netiso/mariadb";
/// The provisioned MariaDB image's tag.
pub const MARIADB_TAG: &str = "10.11";
/// Size of the scenario's own layer.
const UNIQUE_LAYER_BYTES: usize = 1 << 20;
/// Where the unique bytes go in the image.
const UNIQUE_FILE: &str = "etc/netiso-harness";

/// A pushed image whose local copy (if any) is removed on drop.
#[derive(Debug)]
pub struct ScenarioImage {
    reference: ImageReference,
    docker_host: String,
    unique_layer_bytes: u64,
}

impl ScenarioImage {
    /// Commits the MariaDB image plus the scenario's layer as
    /// `<guest registry>/trove-netiso/mariadb:<tag>`, pushes it, and removes it locally so
    /// that the agent's pull is real.
    pub async fn publish(docker_host: &str, guest_registry: &str, tag: &str) -> Result<Self> {
        let docker = Docker::connect_with_host(docker_host)
            .with_context(|| format!("dockerd at {docker_host}: run `cargo xtask provision`"))?;
        let name = format!("{guest_registry}/{MARIADB_REPOSITORY}");
        let base = format!("{name}:{MARIADB_TAG}");
        pull_base(&docker, &name).await?;
        let reference: ImageReference = format!("{name}:{tag}")
            .parse()
            .map_err(|e| anyhow!("image name: {e}"))?;
        let this = Self {
            reference,
            docker_host: docker_host.to_owned(),
            unique_layer_bytes: UNIQUE_LAYER_BYTES as u64,
        };
        let builder = format!("netiso-harness-image-{}-{tag}", std::process::id());
        let committed = commit_with_unique_layer(&docker, &base, &builder, &name, tag).await;
        let removed = docker
            .remove_container(
                &builder,
                Some(RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
        committed?;
        removed.with_context(|| format!("removing the builder container {builder}"))?;
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

    /// Bytes of the layer no other image has (the least a real pull downloads).
    pub fn unique_layer_bytes(&self) -> u64 {
        self.unique_layer_bytes
    }
}

/// The provisioned image must be in the registry; dockerd needs it locally to commit on it.
async fn pull_base(docker: &Docker, name: &str) -> Result<()> {
    let options = CreateImageOptions {
        from_image: Some(name.to_owned()),
        tag: Some(MARIADB_TAG.to_owned()),
        ..CreateImageOptions::default()
    };
    let mut events = docker.create_image(Some(options), None, None);
    while let Some(event) = events.next().await {
        event.with_context(|| {
            format!("pulling {name}:{MARIADB_TAG} (built by `cargo xtask provision`)")
        })?;
    }
    Ok(())
}

async fn commit_with_unique_layer(
    docker: &Docker,
    base: &str,
    builder: &str,
    name: &str,
    tag: &str,
) -> Result<()> {
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(builder.to_owned()),
                ..CreateContainerOptions::default()
            }),
            ContainerCreateBody {
                image: Some(base.to_owned()),
                ..ContainerCreateBody::default()
            },
        )
        .await
        .with_context(|| format!("creating {builder} from {base}"))?;
    let archive = unique_layer(tag)?;
    docker
        .upload_to_container(
            builder,
            Some(UploadToContainerOptions {
                path: "/".to_owned(),
                ..UploadToContainerOptions::default()
            }),
            bollard::body_full(archive.into()),
        )
        .await
        .with_context(|| format!("adding {UNIQUE_FILE} to {builder}"))?;
    // Docker keeps the container's (the base image's) entrypoint, command and labels.
    docker
        .commit_container(
            CommitContainerOptions {
                container: Some(builder.to_owned()),
                repo: Some(name.to_owned()),
                tag: Some(tag.to_owned()),
                comment: Some("netiso-harness scenario layer".to_owned()),
                ..CommitContainerOptions::default()
            },
            ContainerConfig::default(),
        )
        .await
        .with_context(|| format!("committing {name}:{tag}"))?;
    Ok(())
}

/// A tar holding [`UNIQUE_FILE`]: the tag, then random bytes up to [`UNIQUE_LAYER_BYTES`].
fn unique_layer(tag: &str) -> Result<Vec<u8>> {
    let mut content = format!("netiso-harness {tag}\n").into_bytes();
    let random = UNIQUE_LAYER_BYTES.saturating_sub(content.len());
    std::fs::File::open("/dev/urandom")
        .context("opening /dev/urandom")?
        .take(random as u64)
        .read_to_end(&mut content)
        .context("reading /dev/urandom")?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    header.set_mtime(1_700_000_000);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, UNIQUE_FILE, content.as_slice())?;
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
    fn the_unique_layer_is_one_file_of_random_bytes_named_after_the_tag() {
        let layer = unique_layer("t1-0").expect("layer");
        let mut archive = tar::Archive::new(layer.as_slice());
        let mut entries = archive.entries().expect("entries");
        let mut entry = entries.next().expect("one entry").expect("entry");
        assert_eq!(entry.path().expect("path").to_str(), Some(UNIQUE_FILE));
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("content");
        assert_eq!(content.len(), UNIQUE_LAYER_BYTES);
        assert!(content.starts_with(b"netiso-harness t1-0\n"));
        drop(entry);
        assert!(entries.next().is_none());
        assert_ne!(layer, unique_layer("t1-0").expect("layer"));
    }
}
