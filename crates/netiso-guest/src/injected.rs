//! The injected configuration files, made private to root.
//!
//! Trove's taskmanager injects `guest_info.conf` (with the instance's RPC key) and
//! `trove-guestagent.conf` (with the broker's password in `transport_url`) through cloud-init
//! `write_files` without a `permissions` field, so cloud-init writes them 0644: any local
//! user of the VM could read the key and the password. The agent, as root, takes group and
//! other permissions away from every configuration file it reads before it reads them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Why a configuration file could not be made private.
#[derive(Debug, thiserror::Error)]
#[error("making {} readable by its owner only: {source}", path.display())]
pub struct RestrictError {
    /// The file.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// Removes group and other permissions from each of `files` that has any; returns the files
/// changed (each with its old mode), for the log. A missing file is skipped: the
/// configuration loader reports it.
pub fn restrict_to_owner(files: &[PathBuf]) -> Result<Vec<(PathBuf, u32)>, RestrictError> {
    let mut changed = Vec::new();
    for path in files {
        if let Some(old) = restrict_one(path)? {
            changed.push((path.clone(), old));
        }
    }
    Ok(changed)
}

fn restrict_one(path: &Path) -> Result<Option<u32>, RestrictError> {
    let failed = |source| RestrictError {
        path: path.to_owned(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(failed)?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_readable_files_become_private_and_private_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("guest_info.conf");
        let private = dir.path().join("trove-guestagent.conf");
        std::fs::write(&open, "[DEFAULT]\ninstance_rpc_encr_key=k\n").expect("write");
        std::fs::write(&private, "[DEFAULT]\n").expect("write");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let missing = dir.path().join("absent.conf");
        let changed =
            restrict_to_owner(&[open.clone(), private.clone(), missing]).expect("restricted");
        assert_eq!(changed, vec![(open.clone(), 0o644)]);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&open), 0o600);
        assert_eq!(mode(&private), 0o600);
    }
}
