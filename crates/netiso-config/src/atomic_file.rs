//! The one way trove-netiso replaces a file (the agent's state and the files it renders, the
//! plugin's state file).
//!
//! A temporary file is made beside the target with its final mode (and owner) before a byte
//! of content goes in, flushed to disk, renamed over the target, and the folder is flushed.
//! A crash leaves the old or the new file, never a torn one, and a secret is never readable by
//! others, not even in the temporary. The temporary, `.<name>.<pid>-<n>.tmp`, is opened
//! exclusively after any stale one is removed, so a link planted at its name is not followed;
//! `<n>` counts the writes of this process, so concurrent writers never share one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes made by this process so far: each temporary file gets its own number.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Who owns the file once it is replaced, when not the writing process's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
}

/// Replaces `path` by `contents` with `mode`, creating its folder if needed.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    replace_owned(path, contents, mode, None)
}

/// As [`replace`], the file owned by `owner` (the database's user for its configuration).
pub fn replace_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let temporary = temporary_beside(path)?;
    let written = write_then_rename(&temporary, path, dir, contents, mode, owner);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn temporary_beside(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(temporary))
}

fn write_then_rename(
    temporary: &Path,
    path: &Path,
    dir: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> std::io::Result<()> {
    match std::fs::remove_file(temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temporary)?;
    // The mode given at creation is reduced by the umask; the file gets exactly `mode`.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
    }
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atomic-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn replaces_the_content_with_the_exact_mode_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("nested/secret.cnf");
        replace(&path, b"first", 0o600).expect("first write");
        replace(&path, b"second", 0o600).expect("second write");
        assert_eq!(std::fs::read(&path).expect("read back"), b"second");
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!(meta.mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("folder"))
            .expect("list")
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("secret.cnf")]);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = scratch("planted");
        std::fs::create_dir_all(&dir).expect("folder");
        let path = dir.join("state.json");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"untouched").expect("victim");
        let temporary = temporary_beside(&path).expect("temporary name");
        std::os::unix::fs::symlink(&victim, &temporary).expect("plant a link");
        write_then_rename(&temporary, &path, &dir, b"{}", 0o644, None).expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
        assert_eq!(std::fs::read(&path).expect("target"), b"{}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_failed_rename_leaves_the_target_and_no_temporary() {
        let dir = scratch("failed");
        let busy = dir.join("busy");
        std::fs::create_dir_all(&busy).expect("folder");
        std::fs::write(busy.join("inside"), b"kept").expect("a file inside");
        let error = replace(&busy, b"new", 0o644);
        assert!(error.is_err(), "a non-empty folder was replaced: {error:?}");
        assert_eq!(std::fs::read(busy.join("inside")).expect("kept"), b"kept");
        let temporary = temporary_beside(&busy).expect("temporary name");
        assert!(
            !temporary.exists(),
            "{} was left behind",
            temporary.display()
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
