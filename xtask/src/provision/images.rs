//! The MariaDB image the simulated guests run: Debian 12's own `mariadb-server` packages in a
//! root made by mmdebstrap, with the entrypoint and configuration of `contrib/mariadb-image/`,
//! imported into the provisioned dockerd and pushed to the provisioned registry, from where
//! guests pull it over the management network as a real deployment does.
//!
//! Built only when its inputs change. The key is a hash of the recipe (mmdebstrap's options,
//! which name the packages and sources, and the image settings given to `docker import`) and of
//! every file in `contrib/mariadb-image/`. The image carries the key as a label: provision skips
//! everything when the registry already holds the tag with that label. The last root tarball
//! stays in `/var/lib/trove-netiso/images/` with its key beside it (the stamp), so an image
//! lost from the registry costs an import and a push, not a build.

use crate::layout::{
    DOCKER_SOCKET, MARIADB_REPOSITORY, MARIADB_TAG, MGMT_GATEWAY_ADDR, REGISTRY_PORT, STATE_DIR,
};
use crate::sh::{output, run, run_with_env, say};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The image's own files: entrypoint, configuration, mmdebstrap's customize hook.
const RECIPE_DIR: &str = "contrib/mariadb-image";
/// The one file of [`RECIPE_DIR`] that is not an input: editing it rebuilds nothing.
const RECIPE_README: &str = "README.md";
/// Label holding the inputs' key.
const INPUTS_LABEL: &str = "io.trove-netiso.image-inputs";
/// Debian 12.
const SUITE: &str = "bookworm";
/// The point release, its updates and its security fixes, from the Debian mirror.
const SOURCES: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// mmdebstrap's options, the customize hook apart. `essential` is the smallest base (no apt,
/// no priority-required extras); tzdata lets the entrypoint load time zones as the official
/// image does. Documentation, manuals and translations are never unpacked; `/run` is kept for
/// the socket folder the hook makes there.
const MMDEBSTRAP_OPTIONS: [&str; 10] = [
    "--mode=root",
    "--format=tar",
    "--variant=essential",
    "--include=mariadb-server,tzdata",
    "--skip=cleanup/run",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
];
/// Fixed file times in the root, so that the same packages give the same layer.
const SOURCE_DATE_EPOCH: &str = "1700000000";
/// The image's settings, as `docker import --change` takes them. No VOLUME: Trove binds every
/// folder the server writes, and anonymous volumes would pile up on a shared dockerd.
const IMAGE_SETTINGS: [&str; 4] = [
    r#"ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]"#,
    r#"CMD ["mariadbd"]"#,
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "EXPOSE 3306/tcp",
];

/// Makes sure the registry holds the image built from the current inputs.
pub fn ensure_mariadb() -> Result<()> {
    let key = cache_key(&recipe(), &recipe_files(Path::new(RECIPE_DIR))?);
    let local = format!("127.0.0.1:{REGISTRY_PORT}");
    let name = format!("{MARIADB_REPOSITORY}:{MARIADB_TAG}");
    if registry_label(&local)?.as_deref() == Some(key.as_str()) {
        say(&format!("  {local}/{name} is up to date ({})", short(&key)));
        return Ok(());
    }
    let started = Instant::now();
    let dir = PathBuf::from(STATE_DIR).join("images");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rootfs = dir.join(format!("mariadb-{MARIADB_TAG}.tar"));
    let stamp = dir.join(format!("mariadb-{MARIADB_TAG}.inputs"));
    let stamped = std::fs::read_to_string(&stamp).ok();
    if stamped.as_deref().map(str::trim) == Some(key.as_str()) && rootfs.exists() {
        say(&format!("  reusing {} ({})", rootfs.display(), short(&key)));
    } else {
        // The stamp goes first: a half-written tarball must not look current.
        let _ = std::fs::remove_file(&stamp);
        build_rootfs(&rootfs)?;
        std::fs::write(&stamp, format!("{key}\n"))
            .with_context(|| format!("cannot write {}", stamp.display()))?;
        say(&format!(
            "  root built in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    import_and_push(&rootfs, &key)?;
    say(&format!(
        "  {local}/{name} pushed ({}), {:.1} s in all",
        short(&key),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The key as people read it: `sha256:` and 12 hex digits.
fn short(key: &str) -> &str {
    key.get(..19).unwrap_or(key)
}

/// Everything that decides the image's content, but for the files of [`RECIPE_DIR`].
fn recipe() -> Vec<String> {
    let mut recipe = vec![format!("suite {SUITE}")];
    recipe.extend(SOURCES.iter().map(|s| format!("source {s}")));
    recipe.extend(MMDEBSTRAP_OPTIONS.iter().map(|o| format!("option {o}")));
    recipe.push(format!("SOURCE_DATE_EPOCH {SOURCE_DATE_EPOCH}"));
    recipe.extend(IMAGE_SETTINGS.iter().map(|s| format!("setting {s}")));
    recipe
}

/// The files of the recipe folder by name, sorted, its README apart.
fn recipe_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read {}: run xtask from the workspace",
            dir.display()
        )
    })? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 name", path.display()))?
            .to_owned();
        if name == RECIPE_README {
            continue;
        }
        let content =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push((name, content));
    }
    files.sort();
    Ok(files)
}

/// `sha256:<hex>` over the recipe lines and the named files, each part length-prefixed so
/// that no two different inputs hash the same bytes.
fn cache_key(recipe: &[String], files: &[(String, Vec<u8>)]) -> String {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    for line in recipe {
        part(line.as_bytes());
    }
    for (name, content) in files {
        part(name.as_bytes());
        part(content);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The inputs label of the tag in the registry at `registry`, if the tag is there.
fn registry_label(registry: &str) -> Result<Option<String>> {
    let base = format!("http://{registry}/v2/{MARIADB_REPOSITORY}");
    let Ok(manifest) = output(
        "curl",
        &[
            "-sf",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("{base}/manifests/{MARIADB_TAG}"),
        ],
    ) else {
        return Ok(None);
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).context("the registry's manifest is not JSON")?;
    let Some(config) = manifest.pointer("/config/digest").and_then(|d| d.as_str()) else {
        return Ok(None);
    };
    let config = output("curl", &["-sf", &format!("{base}/blobs/{config}")])
        .context("the registry lists a config blob it does not serve")?;
    let config: serde_json::Value =
        serde_json::from_str(&config).context("the image config is not JSON")?;
    Ok(config
        .pointer(&format!(
            "/config/Labels/{}",
            INPUTS_LABEL.replace('/', "~1")
        ))
        .and_then(|l| l.as_str())
        .map(str::to_owned))
}

fn build_rootfs(rootfs: &Path) -> Result<()> {
    let hook = std::fs::canonicalize(Path::new(RECIPE_DIR).join("customize-hook.sh"))
        .context("the image's customize hook is missing")?;
    let hook = format!("--customize-hook={}", hook.display());
    let partial = rootfs.with_extension("partial.tar");
    let partial_arg = partial.to_str().context("state path is not UTF-8")?;
    let mut args: Vec<&str> = MMDEBSTRAP_OPTIONS.to_vec();
    args.extend(["--quiet", &hook, SUITE, partial_arg]);
    args.extend(SOURCES);
    run_with_env(
        "mmdebstrap",
        &args,
        &[("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_owned())],
    )?;
    std::fs::rename(&partial, rootfs)
        .with_context(|| format!("cannot move the root to {}", rootfs.display()))
}

/// Imports the root into dockerd under the name guests use, pushes it, and drops the local
/// tag, so that the first `prepare` on the guest pulls it through the management network.
fn import_and_push(rootfs: &Path, key: &str) -> Result<()> {
    let host = format!("unix://{DOCKER_SOCKET}");
    let reference =
        format!("{MGMT_GATEWAY_ADDR}:{REGISTRY_PORT}/{MARIADB_REPOSITORY}:{MARIADB_TAG}");
    let label = format!("LABEL {INPUTS_LABEL}={key}");
    let rootfs = rootfs.to_str().context("state path is not UTF-8")?;
    let mut args = vec!["-H", &host, "import"];
    for setting in IMAGE_SETTINGS.iter().copied().chain([label.as_str()]) {
        args.extend(["--change", setting]);
    }
    args.extend([rootfs, &reference]);
    run("docker", &args)?;
    run("docker", &["-H", &host, "push", &reference])?;
    // Containers of other tests may still use an older build under this name: then the tag
    // stays until they are gone, and pulls still fetch the pushed image.
    if let Err(e) = output("docker", &["-H", &host, "image", "rm", &reference]) {
        say(&format!("  kept the local tag: {e}"));
    }
    if registry_label(&format!("127.0.0.1:{REGISTRY_PORT}"))?.as_deref() != Some(key) {
        bail!("the registry does not show the pushed image's inputs label");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("docker-entrypoint.sh".to_owned(), b"#!/bin/bash\n".to_vec()),
            ("my.cnf".to_owned(), b"[mysqld]\n".to_vec()),
        ]
    }

    #[test]
    fn the_key_is_stable_for_the_same_inputs() {
        assert_eq!(
            cache_key(&recipe(), &files()),
            cache_key(&recipe(), &files())
        );
        assert!(cache_key(&recipe(), &files()).starts_with("sha256:"));
    }

    #[test]
    fn the_key_changes_with_any_file_byte_name_or_recipe_line() {
        let base = cache_key(&recipe(), &files());
        let mut edited = files();
        edited[0].1.push(b'#');
        assert_ne!(base, cache_key(&recipe(), &edited));
        let mut renamed = files();
        renamed[1].0 = "my2.cnf".to_owned();
        assert_ne!(base, cache_key(&recipe(), &renamed));
        let mut more_packages = recipe();
        more_packages.push("option --include=vim".to_owned());
        assert_ne!(base, cache_key(&more_packages, &files()));
    }

    #[test]
    fn moving_bytes_between_parts_changes_the_key() {
        let joined = vec![("ab".to_owned(), b"c".to_vec())];
        let split = vec![("a".to_owned(), b"bc".to_vec())];
        assert_ne!(cache_key(&[], &joined), cache_key(&[], &split));
    }

    #[test]
    fn the_recipe_names_the_packages_and_every_image_file_is_hashed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(RECIPE_DIR);
        let names: Vec<String> = recipe_files(&dir)
            .expect("contrib/mariadb-image")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for expected in ["customize-hook.sh", "docker-entrypoint.sh", "my.cnf"] {
            assert!(names.contains(&expected.to_owned()), "{names:?}");
        }
        assert!(!names.contains(&RECIPE_README.to_owned()), "{names:?}");
        assert!(recipe().iter().any(|l| l.contains("mariadb-server")));
    }
}
