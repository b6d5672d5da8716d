//! `get_filesystem_stats`: the data volume's usage, computed exactly as Trove's
//! `guestagent_utils.get_filesystem_volume_stats` does, so the API shows the same numbers.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Why `get_filesystem_stats` has no answer. The messages are the reply's text: Trove's own
/// words, and never a path the caller sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesystemError {
    /// `statvfs` failed on the configured data volume.
    #[error("Filesystem not found ({})", path.display())]
    NotFound {
        /// The data volume's mount point.
        path: PathBuf,
        /// What `statvfs` said.
        #[source]
        source: nix::Error,
    },
    /// `statvfs` failed on the path the request named (not echoed back).
    #[error("Filesystem not found (the requested fs_path)")]
    RequestedPathNotFound,
    /// No datastore mount point is configured and the request named no path.
    #[error("Filesystem not found (no datastore mount_point configured)")]
    NoMountPoint,
    /// The blocking thread running `statvfs` failed.
    #[error("statvfs thread failed: {0}")]
    Thread(String),
}

/// Bytes to GiB rounded to two decimals, `0.0` for zero (Trove's `utils.to_gb`).
pub fn to_gb(bytes: u64) -> f64 {
    if bytes == 0 {
        return 0.0;
    }
    let gib = bytes as f64 / 1024f64.powi(3);
    (gib * 100.0).round() / 100.0
}

/// The statistics of the filesystem holding `path`: `block_size`, `total_blocks`,
/// `free_blocks`, `total` (GiB), `free` (**bytes**, as Trove returns it) and `used` (GiB).
pub fn filesystem_stats(path: &Path) -> Result<Value, FilesystemError> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(|source| FilesystemError::NotFound {
        path: path.to_owned(),
        source,
    })?;
    let block_size = stats.block_size();
    let total_blocks = stats.blocks();
    let free_blocks = stats.blocks_free();
    let total = total_blocks.saturating_mul(block_size);
    let free = free_blocks.saturating_mul(block_size);
    Ok(json!({
        "block_size": block_size,
        "total_blocks": total_blocks,
        "free_blocks": free_blocks,
        "total": to_gb(total),
        "free": free,
        "used": to_gb(total.saturating_sub(free)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gigabytes_like_trove() {
        assert_eq!(to_gb(0), 0.0);
        assert_eq!(to_gb(10 * 1024 * 1024 * 1024), 10.0);
        assert_eq!(to_gb(493_921_239), 0.46);
        assert_eq!(to_gb(1), 0.0);
    }

    #[test]
    fn stats_of_a_real_directory_and_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = filesystem_stats(dir.path()).expect("stats");
        let block_size = stats["block_size"].as_u64().expect("block_size");
        let total_blocks = stats["total_blocks"].as_u64().expect("total_blocks");
        let free_blocks = stats["free_blocks"].as_u64().expect("free_blocks");
        assert!(block_size > 0 && total_blocks >= free_blocks);
        assert_eq!(stats["free"].as_u64(), Some(free_blocks * block_size));
        assert_eq!(
            stats["total"].as_f64(),
            Some(to_gb(total_blocks * block_size))
        );
        let missing = dir.path().join("absent");
        assert_eq!(
            filesystem_stats(&missing)
                .expect_err("missing path")
                .to_string(),
            format!("Filesystem not found ({})", missing.display())
        );
    }
}
