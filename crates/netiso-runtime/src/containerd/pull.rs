//! Image pulls for containerd 1.6, which has no Transfer service: the registry is read with
//! `oci-client`, every blob is written to containerd's content store (digest checked while
//! streaming, and again by containerd at commit), the image record is created, and the
//! layers are unpacked into snapshots with the diff service.
//!
//! Everything is written under one lease, so nothing half-pulled survives a failure: the
//! lease is deleted (synchronously collected) on every path, and expires by itself if the
//! agent dies mid-pull. What is kept is referenced through containerd's GC labels: image →
//! manifest → config and layers, config → top snapshot.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest,
    ReadContentRequest, UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use futures::{SinkExt, Stream, StreamExt};
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tracing::{debug, info};

use super::client::{Connection, Lease, backend, is_already_exists, is_not_found};
use crate::error::RuntimeError;
use crate::image::{ImageReference, PullProgress};

/// How long a pull lease outlives a crashed agent.
const PULL_LEASE_TTL: Duration = Duration::from_secs(3600);
/// Size of one content-store write message.
const WRITE_CHUNK: usize = 1 << 20;

/// Docker's and OCI's manifest media types.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's multi-platform list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPTED_MANIFESTS: &[&str] = &[
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

/// One blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
}

impl Blob {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }

    fn oci(&self) -> oci_client::manifest::OciDescriptor {
        oci_client::manifest::OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            ..Default::default()
        }
    }
}

/// A single-platform manifest: its config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The config blob.
    pub config: Blob,
    /// The layers, bottom first.
    pub layers: Vec<Blob>,
}

/// Why a registry document (manifest, index or image configuration) cannot be used. The
/// messages name the document and the field; they come from the registry, never from secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageMetadataError {
    /// The document is not JSON.
    #[error("{document} is not JSON: {source}")]
    NotJson {
        /// `manifest`, `index` or `image config`.
        document: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A field the document must have is absent or of the wrong type.
    #[error("{document} has no {field}")]
    MissingField {
        /// `manifest`, `index` or `image config`.
        document: &'static str,
        /// The field, as the message shows it.
        field: &'static str,
    },
    /// A descriptor (`config`, `layer N`, `index entry`) lacks a text field.
    #[error("{descriptor}: missing `{field}`")]
    DescriptorFieldMissing {
        /// Which descriptor.
        descriptor: String,
        /// `digest` or `mediaType`.
        field: &'static str,
    },
    /// A descriptor's digest is not `sha256:` and 64 lowercase hex digits.
    #[error("{descriptor}: `{digest}` is not a sha256 digest")]
    NotSha256 {
        /// Which descriptor.
        descriptor: String,
        /// The digest as sent.
        digest: String,
    },
    /// A descriptor's `size` is absent, not an integer, or negative.
    #[error("{descriptor}: missing or negative `size`")]
    BadSize {
        /// Which descriptor.
        descriptor: String,
    },
    /// The index lists no manifest for this machine.
    #[error("the index has no manifest for linux/{architecture}")]
    NoManifestForPlatform {
        /// Our architecture, as OCI names it.
        architecture: &'static str,
    },
    /// An entry of `rootfs.diff_ids` is not a sha256 digest.
    #[error("a diff id is not a sha256 digest")]
    BadDiffId,
}

fn blob_of(value: &Value, what: &str) -> Result<Blob, ImageMetadataError> {
    let text = |key: &'static str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ImageMetadataError::DescriptorFieldMissing {
                descriptor: what.to_owned(),
                field: key,
            })
    };
    let digest = text("digest")?;
    if !is_sha256_digest(&digest) {
        return Err(ImageMetadataError::NotSha256 {
            descriptor: what.to_owned(),
            digest,
        });
    }
    let size = value
        .get("size")
        .and_then(Value::as_i64)
        .filter(|s| *s >= 0)
        .ok_or_else(|| ImageMetadataError::BadSize {
            descriptor: what.to_owned(),
        })?;
    Ok(Blob {
        media_type: text("mediaType")?,
        digest,
        size,
    })
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The media type a manifest declares (`mediaType`), or guessed from its shape.
pub fn media_type_of(document: &Value) -> &str {
    match document.get("mediaType").and_then(Value::as_str) {
        Some(media_type) => media_type,
        None if document.get("manifests").is_some() => OCI_INDEX,
        None => OCI_MANIFEST,
    }
}

/// Parses an image manifest (Docker schema 2 or OCI).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ImageMetadataError> {
    let document = json_document(bytes, "manifest")?;
    let missing = |field| ImageMetadataError::MissingField {
        document: "manifest",
        field,
    };
    let config = blob_of(
        document.get("config").ok_or_else(|| missing("`config`"))?,
        "config",
    )?;
    let layers = document
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("`layers` list"))?
        .iter()
        .enumerate()
        .map(|(i, layer)| blob_of(layer, &format!("layer {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest { config, layers })
}

/// The manifest of an index that suits this machine (`linux` and our architecture).
pub fn select_platform(index: &[u8]) -> Result<Blob, ImageMetadataError> {
    let document = json_document(index, "index")?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let manifests = document.get("manifests").and_then(Value::as_array).ok_or(
        ImageMetadataError::MissingField {
            document: "index",
            field: "`manifests` list",
        },
    )?;
    let chosen = manifests
        .iter()
        .find(|m| {
            let platform = m.get("platform");
            let field = |k: &str| platform.and_then(|p| p.get(k)).and_then(Value::as_str);
            field("os") == Some("linux") && field("architecture") == Some(arch)
        })
        .ok_or(ImageMetadataError::NoManifestForPlatform { architecture: arch })?;
    blob_of(chosen, "index entry")
}

/// The diff ids (uncompressed layer digests) an image config lists.
pub fn diff_ids(config: &[u8]) -> Result<Vec<String>, ImageMetadataError> {
    let document = json_document(config, "image config")?;
    document
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or(ImageMetadataError::MissingField {
            document: "image config",
            field: "rootfs.diff_ids",
        })?
        .iter()
        .map(|id| {
            id.as_str()
                .filter(|d| is_sha256_digest(d))
                .map(str::to_owned)
                .ok_or(ImageMetadataError::BadDiffId)
        })
        .collect()
}

/// Reads a registry document as JSON, naming it when it is not.
pub(crate) fn json_document(
    bytes: &[u8],
    document: &'static str,
) -> Result<Value, ImageMetadataError> {
    serde_json::from_slice(bytes).map_err(|source| ImageMetadataError::NotJson { document, source })
}

/// The snapshot chain ids of a stack of layers: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`, as containerd names committed snapshots.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chain.last() {
            None => diff.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

fn hex_digest(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(7 + bytes.len() * 2);
    text.push_str("sha256:");
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// Pulls `image` into containerd and returns the image's target digest.
pub struct Pull<'a> {
    /// The containerd connection.
    pub connection: &'a Connection,
    /// The registry client.
    pub registry: &'a oci_client::Client,
    /// Credentials (anonymous unless given for this registry).
    pub auth: RegistryAuth,
    /// The snapshotter to unpack into.
    pub snapshotter: &'a str,
}

impl Pull<'_> {
    /// Runs the pull, reporting progress; the lease is dropped whatever happens.
    pub async fn run(
        &self,
        image: &ImageReference,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<String, RuntimeError> {
        let lease = self.connection.lease("pull", PULL_LEASE_TTL).await?;
        let result = self.pull_under(&lease, image, progress).await;
        let dropped = self.connection.drop_lease(lease).await;
        let digest = result?;
        dropped?;
        Ok(digest)
    }

    async fn pull_under(
        &self,
        lease: &Lease,
        image: &ImageReference,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<String, RuntimeError> {
        let reference: Reference =
            image
                .to_string()
                .parse()
                .map_err(|e| RuntimeError::InvalidImageReference {
                    reference: image.to_string(),
                    problem: if matches!(e, oci_client::ParseError::DigestInvalidFormat) {
                        "invalid digest"
                    } else {
                        "not accepted by the registry client"
                    },
                })?;
        let failed = |message: String| pull_failed(image, message);
        progress(status(None, format!("Pulling from {}", image.name())));
        let (top_bytes, top_digest) = self
            .registry
            .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| registry_error(image, e))?;
        let top_document: Value = serde_json::from_slice(&top_bytes)
            .map_err(|e| failed(format!("manifest is not JSON: {e}")))?;
        let top_type = media_type_of(&top_document).to_owned();
        let top = Blob {
            media_type: top_type.clone(),
            digest: top_digest.clone(),
            size: i64::try_from(top_bytes.len()).unwrap_or(i64::MAX),
        };

        let (manifest_blob, manifest_bytes) =
            if top_type == OCI_INDEX || top_type == DOCKER_MANIFEST_LIST {
                let chosen = select_platform(&top_bytes).map_err(|e| failed(e.to_string()))?;
                let by_digest = Reference::with_digest(
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                    chosen.digest.clone(),
                );
                let (bytes, digest) = self
                    .registry
                    .pull_manifest_raw(&by_digest, &self.auth, ACCEPTED_MANIFESTS)
                    .await
                    .map_err(|e| registry_error(image, e))?;
                if digest != chosen.digest {
                    return Err(failed(format!(
                        "manifest digest mismatch: the index names {}, the registry sent {digest}",
                        chosen.digest
                    )));
                }
                (chosen, bytes.to_vec())
            } else {
                (top.clone(), top_bytes.to_vec())
            };
        let manifest = parse_manifest(&manifest_bytes).map_err(|e| failed(e.to_string()))?;

        let config_bytes = self
            .fetch_small(&reference, &manifest.config, image)
            .await?;
        let diffs = diff_ids(&config_bytes).map_err(|e| failed(e.to_string()))?;
        if diffs.len() != manifest.layers.len() {
            return Err(failed(format!(
                "the config lists {} diff ids for {} layers",
                diffs.len(),
                manifest.layers.len()
            )));
        }
        let chains = chain_ids(&diffs);

        for layer in &manifest.layers {
            self.fetch_layer(lease, &reference, layer, image, progress)
                .await?;
        }

        let mut config_labels = HashMap::new();
        if let Some(top_chain) = chains.last() {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                top_chain.clone(),
            );
        }
        self.store(lease, &manifest.config, &config_bytes, config_labels, image)
            .await?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.store(
            lease,
            &manifest_blob,
            &manifest_bytes,
            manifest_labels,
            image,
        )
        .await?;
        if top.digest != manifest_blob.digest {
            let index_labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                manifest_blob.digest.clone(),
            )]);
            self.store(lease, &top, &top_bytes, index_labels, image)
                .await?;
        }

        self.unpack(lease, &manifest.layers, &diffs, &chains, image, progress)
            .await?;
        self.record_image(lease, image, &top).await?;
        progress(status(None, format!("Digest: {}", top.digest)));
        progress(status(
            None,
            format!("Status: Downloaded image for {image}"),
        ));
        info!(image = %image, digest = %top.digest, layers = manifest.layers.len(), "image pulled into containerd");
        Ok(top.digest)
    }

    /// Fetches a small blob (the config) whole, verified by digest.
    async fn fetch_small(
        &self,
        reference: &Reference,
        blob: &Blob,
        image: &ImageReference,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut bytes = Vec::new();
        self.registry
            .pull_blob(reference, &blob.oci(), &mut bytes)
            .await
            .map_err(|e| registry_error(image, e))?;
        verify(blob, &bytes).map_err(|m| pull_failed(image, m))?;
        Ok(bytes)
    }

    async fn fetch_layer(
        &self,
        lease: &Lease,
        reference: &Reference,
        layer: &Blob,
        image: &ImageReference,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError> {
        let id = Some(short(&layer.digest));
        if self.content_exists(&layer.digest).await? {
            progress(status(id, "Already exists".to_owned()));
            return Ok(());
        }
        progress(status(id.clone(), "Pulling fs layer".to_owned()));
        let stream = self
            .registry
            .pull_blob_stream(reference, &layer.oci())
            .await
            .map_err(|e| registry_error(image, e))?;
        self.write(lease, layer, stream.stream, HashMap::new(), image, progress)
            .await?;
        progress(status(id, "Download complete".to_owned()));
        Ok(())
    }

    async fn content_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        let request = self.connection.request(InfoRequest {
            digest: digest.to_owned(),
        });
        match self.connection.content().info(request).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(backend("content info", digest, e)),
        }
    }

    async fn store(
        &self,
        lease: &Lease,
        blob: &Blob,
        bytes: &[u8],
        labels: HashMap<String, String>,
        image: &ImageReference,
    ) -> Result<(), RuntimeError> {
        verify(blob, bytes).map_err(|m| pull_failed(image, m))?;
        let one = futures::stream::iter([Ok::<_, std::io::Error>(bytes)]);
        self.write(lease, blob, one, labels, image, &mut |_| {})
            .await
    }

    /// Streams a blob into the content store: written in chunks, hashed on the way, committed
    /// with the expected digest only when our hash and size match (containerd checks again).
    async fn write<S, B, E>(
        &self,
        lease: &Lease,
        blob: &Blob,
        mut data: S,
        labels: HashMap<String, String>,
        image: &ImageReference,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let reference = format!("netiso-pull-{}", blob.digest);
        let content_error = |e: tonic::Status| backend("write content", &blob.digest, e);
        let (mut requests, queue) = futures::channel::mpsc::channel::<WriteContentRequest>(2);
        let message = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: reference.clone(),
            total: blob.size,
            expected: blob.digest.clone(),
            offset,
            data,
            labels: HashMap::new(),
        };
        let send_failed = |_| pull_failed(image, "containerd closed the content stream".to_owned());
        requests
            .send(message(WriteAction::Stat, 0, Vec::new()))
            .await
            .map_err(send_failed)?;
        let mut responses = match self
            .connection
            .content()
            .write(self.connection.leased(queue, lease))
            .await
        {
            Ok(responses) => responses.into_inner(),
            Err(e) if is_already_exists(&e) => return Ok(()),
            Err(e) => return Err(content_error(e)),
        };
        responses.message().await.map_err(content_error)?;

        let mut hasher = Sha256::new();
        let mut offset: i64 = 0;
        let outcome: Result<(), String> = async {
            while let Some(chunk) = data.next().await {
                let chunk =
                    chunk.map_err(|e| format!("reading {} from the registry: {e}", blob.digest))?;
                let chunk = chunk.as_ref();
                hasher.update(chunk);
                for piece in chunk.chunks(WRITE_CHUNK) {
                    requests
                        .send(message(WriteAction::Write, offset, piece.to_vec()))
                        .await
                        .map_err(|_| "containerd closed the content stream".to_owned())?;
                    responses
                        .message()
                        .await
                        .map_err(|e| format!("containerd refused a write: {}", e.message()))?;
                    offset += i64::try_from(piece.len()).unwrap_or(i64::MAX);
                    if blob.size > 0 {
                        progress(PullProgress {
                            id: Some(short(&blob.digest)),
                            status: "Downloading".to_owned(),
                            current: u64::try_from(offset).ok(),
                            total: u64::try_from(blob.size).ok(),
                        });
                    }
                }
                if offset > blob.size {
                    return Err(format!(
                        "{} is larger than the {} bytes its manifest says",
                        blob.digest, blob.size
                    ));
                }
            }
            Ok(())
        }
        .await;
        let actual = hex_digest(hasher.finalize().as_slice());
        let verdict = outcome.and_then(|()| {
            if offset != blob.size {
                Err(format!(
                    "{} has {offset} bytes, its manifest says {}",
                    blob.digest, blob.size
                ))
            } else if actual != blob.digest {
                Err(format!(
                    "digest mismatch for {}: the registry sent content hashing to {actual}",
                    blob.digest
                ))
            } else {
                Ok(())
            }
        });
        if let Err(problem) = verdict {
            drop(requests);
            self.abort(&reference).await;
            return Err(pull_failed(image, problem));
        }
        progress(status(
            Some(short(&blob.digest)),
            "Verifying Checksum".to_owned(),
        ));
        let mut commit = message(WriteAction::Commit, offset, Vec::new());
        commit.labels = labels;
        requests.send(commit).await.map_err(send_failed)?;
        match responses.message().await {
            Ok(_) => {}
            Err(e) if is_already_exists(&e) => {}
            Err(e) => {
                drop(requests);
                self.abort(&reference).await;
                return Err(content_error(e));
            }
        }
        drop(requests);
        debug!(digest = %blob.digest, size = blob.size, "blob committed");
        Ok(())
    }

    async fn abort(&self, reference: &str) {
        let request = self.connection.request(AbortRequest {
            r#ref: reference.to_owned(),
        });
        if let Err(e) = self.connection.content().abort(request).await
            && !is_not_found(&e)
        {
            debug!(reference, error = %e, "aborting the ingest failed");
        }
    }

    /// Applies each layer onto its parent snapshot, skipping those already unpacked.
    async fn unpack(
        &self,
        lease: &Lease,
        layers: &[Blob],
        diffs: &[String],
        chains: &[String],
        image: &ImageReference,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError> {
        let snapshots = self.connection.snapshots();
        let mut parent = String::new();
        for ((layer, diff), chain) in layers.iter().zip(diffs).zip(chains) {
            let id = Some(short(&layer.digest));
            let stat = self.connection.request(StatSnapshotRequest {
                snapshotter: self.snapshotter.to_owned(),
                key: chain.clone(),
            });
            match snapshots.clone().stat(stat).await {
                Ok(_) => {
                    parent.clone_from(chain);
                    progress(status(id, "Already exists".to_owned()));
                    continue;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend("stat snapshot", chain, e)),
            }
            progress(status(id.clone(), "Extracting".to_owned()));
            let key = format!("netiso-extract-{}-{chain}", std::process::id());
            let prepare = self.connection.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.to_owned(),
                    key: key.clone(),
                    parent: parent.clone(),
                    labels: HashMap::new(),
                },
                lease,
            );
            let mounts = snapshots
                .clone()
                .prepare(prepare)
                .await
                .map_err(|e| backend("prepare snapshot", &key, e))?
                .into_inner()
                .mounts;
            let applied = self
                .connection
                .diff()
                .apply(self.connection.leased(
                    ApplyRequest {
                        diff: Some(layer.descriptor()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await;
            let result = match applied {
                Ok(response) => {
                    let applied = response.into_inner().applied.map(|d| d.digest);
                    if applied.as_deref() == Some(diff.as_str()) {
                        Ok(())
                    } else {
                        Err(pull_failed(
                            image,
                            format!(
                                "layer {} unpacked to {}, the config says {diff}",
                                layer.digest,
                                applied.unwrap_or_default()
                            ),
                        ))
                    }
                }
                Err(e) => Err(backend("apply layer", &layer.digest, e)),
            };
            let committed = match result {
                Ok(()) => snapshots
                    .clone()
                    .commit(self.connection.leased(
                        CommitSnapshotRequest {
                            snapshotter: self.snapshotter.to_owned(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        if is_already_exists(&e) {
                            Ok(())
                        } else {
                            Err(backend("commit snapshot", chain, e))
                        }
                    }),
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let remove = self.connection.request(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.to_owned(),
                    key: key.clone(),
                });
                if let Err(undo) = snapshots.clone().remove(remove).await {
                    debug!(key, error = %undo, "removing the extraction snapshot failed");
                }
                return Err(e);
            }
            progress(status(id, "Pull complete".to_owned()));
            parent.clone_from(chain);
        }
        Ok(())
    }

    async fn record_image(
        &self,
        lease: &Lease,
        image: &ImageReference,
        target: &Blob,
    ) -> Result<(), RuntimeError> {
        let record = Image {
            name: image.to_string(),
            labels: HashMap::new(),
            target: Some(target.descriptor()),
            created_at: None,
            updated_at: None,
        };
        let mut images = self.connection.images();
        let created = images
            .create(self.connection.leased(
                CreateImageRequest {
                    image: Some(record.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if is_already_exists(&e) => images
                .update(self.connection.leased(
                    UpdateImageRequest {
                        image: Some(record),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    lease,
                ))
                .await
                .map(|_| ())
                .map_err(|e| backend("update image", &image.to_string(), e)),
            Err(e) => Err(backend("create image", &image.to_string(), e)),
        }
    }
}

/// The target of a local image record, `None` when there is none.
pub async fn local_image(
    connection: &Connection,
    image: &ImageReference,
) -> Result<Option<Descriptor>, RuntimeError> {
    let request = connection.request(GetImageRequest {
        name: image.to_string(),
    });
    match connection.images().get(request).await {
        Ok(response) => Ok(response.into_inner().image.and_then(|i| i.target)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(backend("get image", &image.to_string(), e)),
    }
}

/// Reads a whole blob from the content store.
pub async fn read_content(connection: &Connection, digest: &str) -> Result<Vec<u8>, RuntimeError> {
    let request = connection.request(ReadContentRequest {
        digest: digest.to_owned(),
        offset: 0,
        size: 0,
    });
    let mut stream = connection
        .content()
        .read(request)
        .await
        .map_err(|e| backend("read content", digest, e))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|e| backend("read content", digest, e))?
    {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

fn verify(blob: &Blob, bytes: &[u8]) -> Result<(), String> {
    let actual = sha256_digest(bytes);
    if actual != blob.digest {
        return Err(format!(
            "digest mismatch for {}: the content hashes to {actual}",
            blob.digest
        ));
    }
    Ok(())
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

fn status(id: Option<String>, status: String) -> PullProgress {
    PullProgress {
        id,
        status,
        current: None,
        total: None,
    }
}

fn pull_failed(image: &ImageReference, message: String) -> RuntimeError {
    RuntimeError::PullFailed {
        image: image.to_string(),
        registry: image.registry().to_owned(),
        message,
    }
}

/// A registry client error as "not found" or a failed pull naming the cause.
fn registry_error(image: &ImageReference, error: OciDistributionError) -> RuntimeError {
    let not_found = match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    };
    if not_found {
        return RuntimeError::ImageNotFound {
            image: image.to_string(),
            registry: image.registry().to_owned(),
            message: error.to_string(),
        };
    }
    let message = match &error {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            format!("registry unreachable: {}", error_chain(e))
        }
        OciDistributionError::DigestError(e) => format!("digest verification failed: {e}"),
        _ => error_chain(&error),
    };
    pull_failed(image, message)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn chain_ids_follow_containerd() {
        let ids = chain_ids(&[A.to_owned(), B.to_owned()]);
        assert_eq!(ids[0], A);
        assert_eq!(ids[1], sha256_digest(format!("{A} {B}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn docker_manifest_parses() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
              "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{A}"}},
              "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{B}"}}]}}"#
        );
        let parsed = parse_manifest(manifest.as_bytes()).expect("valid");
        assert_eq!(parsed.config.digest, A);
        assert_eq!(parsed.layers.len(), 1);
        assert_eq!(parsed.layers[0].size, 9);
    }

    #[test]
    fn bad_manifests_are_named() {
        let err = parse_manifest(
            br#"{"config":{"mediaType":"x","size":1,"digest":"md5:00"},"layers":[]}"#,
        )
        .expect_err("bad digest");
        assert!(
            matches!(&err, ImageMetadataError::NotSha256 { descriptor, digest }
                if descriptor == "config" && digest == "md5:00"),
            "{err}"
        );
        assert!(err.to_string().contains("not a sha256 digest"), "{err}");
        let err = parse_manifest(b"[").expect_err("not json");
        assert!(err.to_string().starts_with("manifest is not JSON"), "{err}");
        let err = parse_manifest(
            format!(r#"{{"config":{{"mediaType":"x","size":-1,"digest":"{A}"}},"layers":[]}}"#)
                .as_bytes(),
        )
        .expect_err("negative size");
        assert!(err.to_string().contains("`size`"), "{err}");
        let err = parse_manifest(br#"{"config":{}}"#).expect_err("no digest");
        assert_eq!(err.to_string(), "config: missing `digest`");
        let config = format!(r#"{{"mediaType":"x","size":1,"digest":"{A}"}}"#);
        let err =
            parse_manifest(format!(r#"{{"config":{config}}}"#).as_bytes()).expect_err("no layers");
        assert_eq!(err.to_string(), "manifest has no `layers` list");
    }

    #[test]
    fn index_selects_this_platform() {
        let arch = if std::env::consts::ARCH == "aarch64" {
            "arm64"
        } else {
            "amd64"
        };
        let index = format!(
            r#"{{"manifests":[
              {{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{A}","platform":{{"os":"linux","architecture":"s390x"}}}},
              {{"mediaType":"{OCI_MANIFEST}","size":2,"digest":"{B}","platform":{{"os":"linux","architecture":"{arch}"}}}}]}}"#
        );
        assert_eq!(select_platform(index.as_bytes()).expect("found").digest, B);
        let err = select_platform(br#"{"manifests":[]}"#).expect_err("no platform");
        assert!(
            matches!(err, ImageMetadataError::NoManifestForPlatform { architecture } if architecture == arch),
            "{err}"
        );
        let err = select_platform(b"{}").expect_err("no list");
        assert_eq!(err.to_string(), "index has no `manifests` list");
    }

    #[test]
    fn tampered_content_is_refused() {
        let blob = Blob {
            media_type: "application/octet-stream".into(),
            digest: sha256_digest(b"layer"),
            size: 5,
        };
        verify(&blob, b"layer").expect("intact");
        let err = verify(&blob, b"layeR").expect_err("tampered");
        assert!(err.contains("digest mismatch"), "{err}");
    }

    #[test]
    fn diff_ids_are_read_from_the_config() {
        let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{A}","{B}"]}}}}"#);
        assert_eq!(
            diff_ids(config.as_bytes()).expect("ids"),
            vec![A.to_owned(), B.to_owned()]
        );
        let err = diff_ids(br#"{"rootfs":{}}"#).expect_err("no diff ids");
        assert_eq!(err.to_string(), "image config has no rootfs.diff_ids");
        let err = diff_ids(br#"{"rootfs":{"diff_ids":["md5:00"]}}"#).expect_err("bad id");
        assert!(matches!(err, ImageMetadataError::BadDiffId), "{err}");
    }
}
