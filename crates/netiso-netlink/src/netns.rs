//! Network namespaces: create and delete named ones exactly as `ip netns add/del` does, open
//! them by name, path or pid, run code inside one on a dedicated thread, and list the
//! sandboxes of Docker and of our containerd adapter.
//!
//! Everything here goes through nix's safe wrappers (`setns`, `unshare`, `mount`), so this
//! module needs no `unsafe`. `setns` only ever runs on threads this module spawns and joins,
//! never on a caller's (tokio) thread.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader},
    os::{
        fd::{AsFd, BorrowedFd},
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{Mutex, mpsc},
    thread::JoinHandle,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statfs::{NSFS_MAGIC, fstatfs},
};

use crate::error::{NetlinkError, Result};

/// Where `ip netns` keeps named namespaces.
pub const NAMED_NETNS_DIR: &str = "/run/netns";
/// Docker's default exec-root; its sandboxes live in `<exec-root>/netns`.
pub const DOCKER_DEFAULT_EXEC_ROOT: &str = "/var/run/docker";
/// Where our containerd adapter keeps the network namespaces it prepares for containers.
pub const CONTAINERD_ADAPTER_NETNS_DIR: &str = "/run/trove-netiso/netns";

/// An open network namespace. Holding it keeps the namespace alive, even if its name is removed.
#[derive(Debug)]
pub struct Namespace {
    file: File,
    path: PathBuf,
}

/// A namespace found in a sandbox directory (Docker or containerd adapter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The file name: Docker's 12-hex sandbox id, or our adapter's container id.
    pub id: String,
    /// Full path of the bind-mounted namespace file.
    pub path: PathBuf,
}

/// Serialises the one-time "make /run/netns a shared mount point" step within this process.
static NAMED_DIR_SETUP: Mutex<()> = Mutex::new(());

fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(NetlinkError::InvalidArgument(format!(
            "{name:?} is not a valid namespace name"
        )))
    }
}

fn is_mount_point(dir: &Path) -> Result<bool> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let file = File::open(mountinfo).map_err(|e| NetlinkError::io("read", mountinfo, e))?;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| NetlinkError::io("read", mountinfo, e))?;
        // Field 5 is the mount point (octal-escaped); enough for paths without spaces.
        if line.split(' ').nth(4) == Some(dir.to_string_lossy().as_ref()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so that namespace bind mounts
/// made in it propagate to every mount namespace that sees it.
fn prepare_named_dir(dir: &Path) -> Result<()> {
    let _guard = NAMED_DIR_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(dir).map_err(|e| NetlinkError::io("create directory", dir, e))?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_ok() {
        return Ok(());
    }
    if !is_mount_point(dir)? {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| NetlinkError::io("bind-mount", dir, e.into()))?;
    }
    shared().map_err(|e| NetlinkError::io("make shared mount", dir, e.into()))
}

impl Namespace {
    /// Creates a named namespace under `/run/netns` (same result as `ip netns add NAME`).
    pub fn create(name: &str) -> Result<Self> {
        validate_name(name)?;
        let dir = Path::new(NAMED_NETNS_DIR);
        prepare_named_dir(dir)?;
        let path = dir.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| NetlinkError::io("create namespace file", &path, e))?;
        let bound = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                        NetlinkError::io("unshare network namespace for", &path, e.into())
                    })?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| NetlinkError::io("bind-mount namespace onto", &path, e.into()))
                })
                .join()
        });
        match bound {
            Ok(Ok(())) => Self::open_path(&path),
            Ok(Err(err)) => {
                let _ = fs::remove_file(&path);
                Err(err)
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                Err(NetlinkError::InvalidArgument(format!(
                    "namespace creation thread for {} panicked",
                    path.display()
                )))
            }
        }
    }

    /// Opens a named namespace (`/run/netns/NAME`).
    pub fn open(name: &str) -> Result<Self> {
        validate_name(name)?;
        Self::open_path(Path::new(NAMED_NETNS_DIR).join(name))
    }

    /// Opens the namespace file at `path` (a bind mount or `/proc/PID/ns/net`), checking that it
    /// really is a namespace. Anything but a regular file is refused without blocking, so a FIFO
    /// put where a namespace was expected cannot hang the caller.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = open_regular_nonblocking(path)
            .map_err(|e| NetlinkError::io("open namespace", path, e))?;
        Self::from_file(file, path)
    }

    /// Takes a namespace file the caller already opened (and checked, e.g. as a regular file),
    /// so nothing can be swapped in at its path between the check and the use. `path` is where
    /// it came from, for [`Namespace::path`] and error messages.
    pub fn from_file(file: File, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !is_namespace_file(&file)
            .map_err(|e| NetlinkError::io("statfs namespace", path, e.into()))?
        {
            return Err(NetlinkError::InvalidArgument(format!(
                "{} is not a network namespace (not mounted, or a stale file)",
                path.display()
            )));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Opens the network namespace of process `pid`.
    pub fn open_pid(pid: u32) -> Result<Self> {
        Self::open_path(format!("/proc/{pid}/ns/net"))
    }

    /// Opens the namespace of the calling thread.
    pub fn current() -> Result<Self> {
        let path = Path::new("/proc/thread-self/ns/net");
        let file = File::open(path).map_err(|e| NetlinkError::io("open namespace", path, e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Deletes a named namespace (same as `ip netns del NAME`). The namespace itself lives on
    /// while anything (a process, an open [`Namespace`]) still holds it.
    pub fn delete(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = Path::new(NAMED_NETNS_DIR).join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(nix::errno::Errno::ENOENT) => {
                return Err(NetlinkError::io(
                    "delete namespace",
                    &path,
                    io::Error::from_raw_os_error(libc::ENOENT),
                ));
            }
            Err(e) => return Err(NetlinkError::io("unmount namespace", &path, e.into())),
        }
        fs::remove_file(&path).map_err(|e| NetlinkError::io("remove namespace file", &path, e))
    }

    /// Names of the namespaces under `/run/netns`.
    pub fn list_named() -> Result<Vec<String>> {
        Ok(list_sandboxes(NAMED_NETNS_DIR)?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<Self> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| NetlinkError::io("duplicate namespace fd", &self.path, e))?;
        Ok(Self {
            file,
            path: self.path.clone(),
        })
    }

    /// The namespace's identity (device and inode of its nsfs file): equal ids, same namespace.
    pub fn id(&self) -> Result<(u64, u64)> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| NetlinkError::io("stat namespace", &self.path, e))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// True when the calling thread is already inside this namespace.
    pub fn is_current_thread_in(&self) -> Result<bool> {
        Ok(Self::current()?.id()? == self.id()?)
    }

    /// Runs `work` on a fresh thread that has entered this namespace, and waits for it.
    /// The caller's thread never changes namespace.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<T> {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetlinkError::io("enter namespace", &self.path, e.into()))?;
                    Ok(work())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(NetlinkError::InvalidArgument(format!(
                        "work inside namespace {} panicked",
                        self.path.display()
                    )))
                })
        })
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A long-lived thread inside a namespace that runs jobs there: per-namespace files such as
/// `/proc/sys/net` cost one channel round trip instead of a thread spawn and `setns` each.
/// Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct NamespaceWorker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl NamespaceWorker {
    /// Starts a worker thread inside `namespace`.
    pub fn spawn(namespace: &Namespace) -> Result<Self> {
        let file = namespace.try_clone()?;
        let path = namespace.path().to_owned();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("netns-worker".into())
            .spawn(move || {
                // Already there (a handle on the caller's own namespace): no setns, so that
                // unprivileged users can still read (`--dry-run`, diagnostics).
                let inside = Namespace::current()
                    .and_then(|current| Ok(current.id()? == file.id()?))
                    .unwrap_or(false);
                let entered = if inside {
                    Ok(())
                } else {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                };
                drop(file);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    for job in queue {
                        // A panicking job must not take the worker down with it; its caller
                        // sees the dropped reply channel.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                }
            })
            .map_err(|e| NetlinkError::io("start worker thread for", &path, e))?;
        let entered = ready_rx.recv().map_err(|_| {
            NetlinkError::InvalidArgument(format!("worker for {} died on start", path.display()))
        })?;
        entered.map_err(|e| NetlinkError::io("enter namespace", &path, e.into()))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            path,
        })
    }

    /// Runs `work` inside the namespace and waits for its result.
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let gone = || {
            NetlinkError::InvalidArgument(format!(
                "work inside namespace {} failed (worker gone or job panicked)",
                self.path.display()
            ))
        };
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())
    }
}

impl Drop for NamespaceWorker {
    fn drop(&mut self) {
        // Closing the queue ends the worker's loop.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl AsFd for Namespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens `path` read-only if it is a regular file (namespace files, bind mounts or
/// `/proc/PID/ns/net`, are). The open is non-blocking and the type is checked again on the open
/// descriptor, so a FIFO or device at `path`, even one swapped in after the first check, is
/// refused instead of hanging or being read.
fn open_regular_nonblocking(path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if !fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// True when `file` lives on nsfs, the kernel's namespace filesystem.
fn is_namespace_file(file: &File) -> nix::Result<bool> {
    Ok(fstatfs(file)?.filesystem_type() == NSFS_MAGIC)
}

/// Lists the live namespaces bind-mounted in `dir` (a sandbox directory). Stale files (no longer
/// a mounted namespace) and anything but regular files (FIFOs, devices, directories, sockets)
/// are skipped without blocking; a missing directory is an empty list.
pub fn list_sandboxes(dir: impl AsRef<Path>) -> Result<Vec<Sandbox>> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetlinkError::io("list", dir, e)),
    };
    let mut sandboxes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetlinkError::io("list", dir, e))?;
        let path = entry.path();
        let is_namespace = open_regular_nonblocking(&path)
            .ok()
            .is_some_and(|file| is_namespace_file(&file).unwrap_or(false));
        if is_namespace {
            sandboxes.push(Sandbox {
                id: entry.file_name().to_string_lossy().into_owned(),
                path,
            });
        }
    }
    sandboxes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(sandboxes)
}

/// Lists Docker's sandbox namespaces under `<exec_root>/netns` (`/var/run/docker` by default),
/// leaving out Docker's `default` entry (the host namespace).
pub fn list_docker_sandboxes(exec_root: impl AsRef<Path>) -> Result<Vec<Sandbox>> {
    let mut sandboxes = list_sandboxes(exec_root.as_ref().join("netns"))?;
    sandboxes.retain(|s| s.id != "default");
    Ok(sandboxes)
}

/// Lists the namespaces our containerd adapter prepared (in `dir`, normally
/// [`CONTAINERD_ADAPTER_NETNS_DIR`]).
pub fn list_containerd_sandboxes(dir: impl AsRef<Path>) -> Result<Vec<Sandbox>> {
    list_sandboxes(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../etc"] {
            assert!(
                matches!(validate_name(bad), Err(NetlinkError::InvalidArgument(_))),
                "{bad}"
            );
        }
        validate_name("nti-123-4").unwrap();
    }

    #[test]
    fn a_missing_sandbox_directory_is_an_empty_list() {
        let dir = std::env::temp_dir().join(format!("nti-absent-{}", std::process::id()));
        assert!(list_sandboxes(&dir).unwrap().is_empty());
    }

    #[test]
    fn plain_files_are_not_namespaces() {
        let dir = std::env::temp_dir().join(format!("nti-plain-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("0123456789ab"), b"").unwrap();
        let listed = list_sandboxes(&dir);
        let opened = Namespace::open_path(dir.join("0123456789ab"));
        fs::remove_dir_all(&dir).unwrap();
        assert!(listed.unwrap().is_empty());
        assert!(matches!(opened, Err(NetlinkError::InvalidArgument(_))));
    }

    /// Runs `work` on its own thread and fails the test if it has not returned in time (a
    /// blocking open of a FIFO never would).
    fn within_timeout<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(work());
        });
        result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the call blocked on a FIFO for 10 s")
    }

    fn dir_with_fifo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("0123456789ab");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        (dir, fifo)
    }

    #[test]
    fn a_fifo_in_a_sandbox_directory_is_skipped_without_blocking() {
        let (dir, _fifo) = dir_with_fifo();
        fs::write(dir.path().join("stale0123456"), b"").unwrap();
        fs::create_dir(dir.path().join("subdir")).unwrap();
        let path = dir.path().to_owned();
        let listed = within_timeout(move || list_sandboxes(path)).unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[test]
    fn opening_a_fifo_as_a_namespace_is_refused_without_blocking() {
        let (_dir, fifo) = dir_with_fifo();
        let opened = within_timeout(move || Namespace::open_path(fifo));
        match opened {
            Err(NetlinkError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput, "{source}");
            }
            other => panic!("a FIFO was not refused as a non-regular file: {other:?}"),
        }
    }

    #[test]
    fn from_file_refuses_a_file_that_is_not_a_namespace() {
        let file = tempfile::tempfile().unwrap();
        let taken = Namespace::from_file(file, "/tmp/plain");
        match taken {
            Err(NetlinkError::InvalidArgument(message)) => {
                assert!(message.contains("/tmp/plain"), "{message}");
            }
            other => panic!("a plain file was taken as a namespace: {other:?}"),
        }
    }
}
