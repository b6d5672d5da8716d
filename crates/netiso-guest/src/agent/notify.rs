//! systemd's readiness protocol (`sd_notify`): one datagram to `$NOTIFY_SOCKET`. A few lines
//! of std instead of a crate; abstract sockets (`@name`) are supported. The watchdog's period
//! comes from `$WATCHDOG_USEC` as `sd_watchdog_enabled` reads it.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…`, newline separated) to the service
/// manager. Without `$NOTIFY_SOCKET` (not started by systemd) it does nothing: `Ok(false)`.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_socket(&socket.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name` for an abstract one).
pub fn notify_socket(socket: &str, state: &str) -> io::Result<()> {
    let address = match socket.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// How often to send `WATCHDOG=1`: half the `WatchdogSec=` systemd passes in
/// `$WATCHDOG_USEC`, so one late ping never trips it. `None` when the watchdog is off or meant
/// for another process (`$WATCHDOG_PID` names a different one).
pub fn watchdog_ping_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    ping_interval(&usec, pid.as_deref(), std::process::id())
}

fn ping_interval(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(usec) => Some(Duration::from_micros(usec / 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(receiver: &UnixDatagram) -> Vec<u8> {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buffer = [0u8; 128];
        let n = receiver.recv(&mut buffer).expect("a datagram");
        buffer[..n].to_vec()
    }

    #[test]
    fn path_socket_gets_one_datagram() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        notify_socket(&path.to_string_lossy(), "READY=1\nSTATUS=serving").expect("sent");
        assert_eq!(receive(&receiver), b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn abstract_socket_gets_one_datagram() {
        let name = format!("netiso-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        notify_socket(&format!("@{name}"), "STOPPING=1").expect("sent");
        assert_eq!(receive(&receiver), b"STOPPING=1");
    }

    #[test]
    fn watchdog_pings_at_half_the_period_for_this_process_only() {
        assert_eq!(
            ping_interval("20000000", None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            ping_interval("20000000", Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(ping_interval("20000000", Some("8"), 7), None);
        assert_eq!(ping_interval("0", None, 7), None);
        assert_eq!(ping_interval("soon", None, 7), None);
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent");
        assert!(notify_socket(&missing.to_string_lossy(), "READY=1").is_err());
    }
}
