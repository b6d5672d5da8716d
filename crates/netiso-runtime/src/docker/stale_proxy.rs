//! docker-proxy processes left behind by a dockerd that died. dockerd publishes a bridged
//! container's port through a `docker-proxy` child; Debian's `docker.service` has
//! `KillMode=process`, so when dockerd crashes its proxies live on, reparented, still bound to
//! the published port, and the restarted dockerd cannot start the container again ("port is
//! already allocated"). A proxy whose parent is not a dockerd belongs to no running daemon
//! and is stopped, so that the database can come back.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a stopped proxy may take to release its port.
const EXIT_LIMIT: Duration = Duration::from_secs(2);

/// The host port named by dockerd's answer to a start whose published port is held
/// (`... Bind for 0.0.0.0:3306 failed: port is already allocated`).
pub(super) fn port_already_allocated(message: &str) -> Option<u16> {
    let (before, _) = message.split_once(" failed: port is already allocated")?;
    let bind = &before[before.rfind("Bind for ")? + "Bind for ".len()..];
    bind.rsplit_once(':')?.1.parse().ok()
}

/// The `docker-proxy` processes under `proc_root` (`/proc`) that publish host port `port`
/// and whose parent is not a dockerd.
pub(super) fn orphaned_proxies(proc_root: &Path, port: u16) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let wanted = port.to_string();
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path();
            if read_trimmed(&dir.join("comm"))? != "docker-proxy" {
                return None;
            }
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let publishes = args
                .windows(2)
                .any(|pair| pair[0] == b"-host-port" && pair[1] == wanted.as_bytes());
            let parent = parent_of(&dir)?;
            let parent_is_dockerd = read_trimmed(&proc_root.join(parent.to_string()).join("comm"))
                .is_some_and(|comm| comm == "dockerd");
            (publishes && !parent_is_dockerd).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// SIGTERM to each of `pids`, then waits (bounded) until they are gone; the ones that went.
pub(super) async fn stop(pids: &[i32]) -> Vec<i32> {
    let signalled: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|pid| kill(Pid::from_raw(*pid), Signal::SIGTERM).is_ok())
        .collect();
    let deadline = Instant::now() + EXIT_LIMIT;
    while Instant::now() < deadline
        && signalled
            .iter()
            .any(|pid| kill(Pid::from_raw(*pid), None).is_ok())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signalled
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// The parent pid from `<dir>/stat` (the field after the parenthesised command name, which
/// may itself hold spaces and parentheses).
fn parent_of(dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(root: &Path, pid: i32, comm: &str, ppid: i32, args: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} ({comm}) S {ppid} {pid} {pid} 0"),
        )
        .unwrap();
        let mut cmdline = args.join("\0");
        cmdline.push('\0');
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    }

    fn proxy(root: &Path, pid: i32, ppid: i32, port: &str) {
        process(
            root,
            pid,
            "docker-proxy",
            ppid,
            &[
                "/usr/sbin/docker-proxy",
                "-proto",
                "tcp",
                "-host-ip",
                "0.0.0.0",
                "-host-port",
                port,
                "-container-ip",
                "172.17.0.2",
                "-container-port",
                port,
            ],
        );
    }

    #[test]
    fn the_port_is_read_from_dockerds_answer() {
        let message = "Docker responded with status code 500: driver failed programming external \
                       connectivity on endpoint database (eea8bc): Bind for 0.0.0.0:3306 failed: \
                       port is already allocated";
        assert_eq!(port_already_allocated(message), Some(3306));
        assert_eq!(
            port_already_allocated("Bind for [::]:5432 failed: port is already allocated"),
            Some(5432)
        );
        assert_eq!(port_already_allocated("no such container"), None);
        assert_eq!(
            port_already_allocated("Bind for x failed: port is already allocated"),
            None
        );
    }

    #[test]
    fn only_proxies_of_the_port_without_a_living_dockerd_parent_are_orphans() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        process(root, 1, "init", 0, &["/sbin/init"]);
        process(root, 100, "dockerd", 1, &["/usr/sbin/dockerd"]);
        proxy(root, 200, 100, "3306");
        proxy(root, 201, 1, "3306");
        proxy(root, 202, 1, "33060");
        proxy(root, 203, 999, "3306");
        process(root, 204, "mysqld", 1, &["mysqld", "-host-port", "3306"]);
        assert_eq!(orphaned_proxies(root, 3306), vec![201, 203]);
        assert_eq!(orphaned_proxies(root, 33060), vec![202]);
        assert!(orphaned_proxies(root, 5432).is_empty());
        assert!(orphaned_proxies(&root.join("absent"), 3306).is_empty());
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_keeps_the_parent_readable() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("7");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), "7 (a (b) c) S 42 7 7 0").unwrap();
        assert_eq!(parent_of(&dir), Some(42));
    }
}
